//! The wire formats the apply worker speaks, as pure functions: the streaming
//! replication CopyData messages (`w` XLogData, `k` keepalive, `r` standby
//! status update) and the JSON documents of the `logical_ext` output plugin
//! (docs/FORMAT.md), read into a closed [`Doc`] enum (by `scan.rs`, with
//! serde_json for what it declines).

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A message received inside the COPY BOTH stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Inbound<'a> {
    /// `w`: one document of the plugin; `wal_end` is the server's WAL end.
    XLogData { start: u64, wal_end: u64, send_time: i64, payload: &'a [u8] },
    /// `k`: the server's position, and whether it wants a reply now.
    Keepalive { wal_end: u64, send_time: i64, reply_requested: bool },
}

#[derive(Debug, PartialEq)]
pub(crate) struct WireError(pub(crate) String);

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn parse_inbound(buf: &[u8]) -> Result<Inbound<'_>, WireError> {
    match buf.first() {
        Some(b'w') if buf.len() >= 25 => Ok(Inbound::XLogData {
            start: be_u64(buf, 1),
            wal_end: be_u64(buf, 9),
            send_time: be_u64(buf, 17) as i64,
            payload: &buf[25..],
        }),
        Some(b'k') if buf.len() >= 18 => Ok(Inbound::Keepalive {
            wal_end: be_u64(buf, 1),
            send_time: be_u64(buf, 9) as i64,
            reply_requested: buf[17] != 0,
        }),
        Some(t) => {
            Err(WireError(format!("unexpected replication message type \"{}\" of {} bytes", *t as char, buf.len())))
        }
        None => Err(WireError("empty replication message".into())),
    }
}

/// The 34-byte standby status update (`r`): positions written, flushed and
/// applied, the client's clock (PostgreSQL epoch, µs), and whether the server
/// should reply at once.
pub(crate) fn status_update(write: u64, flush: u64, apply: u64, now: i64, reply: bool) -> [u8; 34] {
    let mut m = [0u8; 34];
    m[0] = b'r';
    m[1..9].copy_from_slice(&write.to_be_bytes());
    m[9..17].copy_from_slice(&flush.to_be_bytes());
    m[17..25].copy_from_slice(&apply.to_be_bytes());
    m[25..33].copy_from_slice(&now.to_be_bytes());
    m[33] = reply as u8;
    m
}

/// Parse PostgreSQL's `X/X` LSN text.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// One `{"name":…,"value":…}` entry of a document.
#[derive(Debug)]
pub(crate) struct Column<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) value: Value<'a>,
}

/// A column's value, classified once when the document is read.
#[derive(Debug)]
pub(crate) enum Value<'a> {
    /// JSON `null`: SQL NULL.
    Null,
    /// A JSON string, unescaped.
    Text(Cow<'a, str>),
    /// A number or boolean, as its JSON text: it reaches the type's input
    /// function without a float round trip.
    Literal(&'a str),
    /// An object or array (never sent for a column): its JSON text.
    Structured(&'a str),
}

/// Columns as a JSON object of name → value (for the conflict log).
pub(crate) fn columns_json(cols: &[Column<'_>]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for c in cols {
        let v = match &c.value {
            Value::Null => serde_json::Value::Null,
            Value::Text(t) => serde_json::Value::String(t.to_string()),
            Value::Literal(raw) | Value::Structured(raw) => {
                serde_json::from_str(raw).unwrap_or(serde_json::Value::Null)
            }
        };
        m.insert(c.name.to_string(), v);
    }
    serde_json::Value::Object(m)
}

impl Column<'_> {
    /// The value as text for an input function, or `None` for SQL NULL.
    pub(crate) fn text(&self) -> Result<Option<Cow<'_, str>>, String> {
        match &self.value {
            Value::Null => Ok(None),
            Value::Text(t) => Ok(Some(Cow::Borrowed(t))),
            Value::Literal(raw) => Ok(Some(Cow::Borrowed(raw))),
            Value::Structured(raw) => Err(format!("unexpected structured value {raw}")),
        }
    }
}

/// A column as serde_json reads it (the fallback path of [`parse_doc`]).
#[derive(Deserialize)]
struct SerdeColumn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    value: &'a RawValue,
}

impl<'a> SerdeColumn<'a> {
    fn classify(self) -> Result<Column<'a>, String> {
        let raw = self.value.get();
        let value = match raw.as_bytes().first() {
            Some(b'"') if !raw.contains('\\') => Value::Text(Cow::Borrowed(&raw[1..raw.len() - 1])),
            Some(b'"') => Value::Text(Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?)),
            Some(b'n') if raw == "null" => Value::Null,
            Some(b'{') | Some(b'[') => Value::Structured(raw),
            Some(_) => Value::Literal(raw),
            None => return Err("empty value".into()),
        };
        Ok(Column { name: self.name, value })
    }
}

#[derive(Deserialize)]
struct RawDoc<'a> {
    action: &'a str,
    #[serde(default, borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    lsn: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    nextlsn: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    schema: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    table: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    columns: Option<Vec<SerdeColumn<'a>>>,
    #[serde(default, borrow)]
    identity: Option<Vec<SerdeColumn<'a>>>,
    #[serde(default, borrow)]
    unchanged_toast: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    restart_identity: Option<bool>,
    /// `P`/`CP`/`RP`: the prepared transaction's xid on the publisher.
    #[serde(default)]
    xid: Option<u32>,
}

/// The fields of a document the worker uses (`scan.rs` reads them, or
/// serde_json when that declines).
#[derive(Default, Debug)]
pub(crate) struct Fields<'a> {
    pub(crate) action: Option<&'a str>,
    pub(crate) timestamp: Option<Cow<'a, str>>,
    pub(crate) lsn: Option<Cow<'a, str>>,
    pub(crate) nextlsn: Option<Cow<'a, str>>,
    pub(crate) schema: Option<Cow<'a, str>>,
    pub(crate) table: Option<Cow<'a, str>>,
    pub(crate) columns: Option<Vec<Column<'a>>>,
    pub(crate) identity: Option<Vec<Column<'a>>>,
    pub(crate) unchanged_toast: Option<Vec<Cow<'a, str>>>,
    pub(crate) restart_identity: Option<bool>,
    pub(crate) xid: Option<u32>,
}

fn classify_all<'a>(c: Option<Vec<SerdeColumn<'a>>>) -> Result<Option<Vec<Column<'a>>>, String> {
    c.map(|v| v.into_iter().map(SerdeColumn::classify).collect()).transpose()
}

/// Read a document with serde_json (what `scan.rs` declines).
pub(crate) fn serde_fields(text: &str) -> Result<Fields<'_>, String> {
    let d: RawDoc<'_> = serde_json::from_str(text).map_err(|e| format!("malformed JSON document: {e}"))?;
    Ok(Fields {
        action: Some(d.action),
        timestamp: d.timestamp,
        lsn: d.lsn,
        nextlsn: d.nextlsn,
        schema: d.schema,
        table: d.table,
        columns: classify_all(d.columns).map_err(|e| format!("malformed JSON document: {e}"))?,
        identity: classify_all(d.identity).map_err(|e| format!("malformed JSON document: {e}"))?,
        unchanged_toast: d.unchanged_toast,
        restart_identity: d.restart_identity,
        xid: d.xid,
    })
}

/// A relation as the publisher names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RemoteRel {
    pub(crate) schema: String,
    pub(crate) table: String,
}

/// A decoded document of the stream, as the worker needs it.
#[derive(Debug)]
pub(crate) enum Doc<'a> {
    /// `commit_lsn`: the transaction's commit LSN (what skip_transaction
    /// takes); `timestamp`: its commit time.
    Begin {
        commit_lsn: Option<u64>,
        timestamp: Option<Cow<'a, str>>,
    },
    Commit {
        end_lsn: u64,
        timestamp: Option<Cow<'a, str>>,
    },
    Insert {
        rel: RemoteRel,
        new: Vec<Column<'a>>,
    },
    /// Columns whose TOASTed value did not change are absent from `new`
    /// (listed in the document's `unchanged_toast`): the local value stays.
    /// `complete`: nothing was left out, so the row could be inserted if it
    /// is missing.
    Update {
        rel: RemoteRel,
        new: Vec<Column<'a>>,
        identity: Option<Vec<Column<'a>>>,
        complete: bool,
    },
    Delete {
        rel: RemoteRel,
        identity: Option<Vec<Column<'a>>>,
    },
    /// One per relation of a TRUNCATE statement (same `lsn`); the publisher's
    /// CASCADE already listed every relation, so no cascade flag is needed.
    Truncate {
        rel: RemoteRel,
        restart_identity: bool,
        lsn: Option<Cow<'a, str>>,
    },
    /// `P`: the transaction begun by the last `Begin` was prepared on the
    /// publisher (as transaction `xid` there); `end_lsn` ends its PREPARE
    /// record.
    Prepare {
        xid: u32,
        end_lsn: u64,
        timestamp: Option<Cow<'a, str>>,
    },
    /// `CP` (`commit`) or `RP`: the prepared transaction `xid` was
    /// committed or rolled back on the publisher, by the record ending at
    /// `end_lsn`.
    FinishPrepared {
        commit: bool,
        xid: u32,
        end_lsn: u64,
        timestamp: Option<Cow<'a, str>>,
    },
    /// A logical message (`pg_logical_emit_message`).
    Message,
    /// A DDL event (src/ddl/), replayed at its place in the transaction.
    Ddl(Box<crate::ddl::DdlEvent>),
}

/// Parse one document. Errors say what is wrong; the caller adds the LSN.
pub(crate) fn parse_doc(payload: &[u8]) -> Result<Doc<'_>, String> {
    // Validate UTF-8 once for the whole document: serde_json's str reader
    // then skips the per-string validation of its slice reader.
    let text = std::str::from_utf8(payload).map_err(|e| format!("document is not UTF-8: {e}"))?;
    let d = match super::scan::document(text) {
        Some(d) => d,
        None => serde_fields(text)?,
    };
    let rel = |d: &Fields<'_>| -> Result<RemoteRel, String> {
        Ok(RemoteRel {
            schema: d.schema.as_deref().ok_or("document has no \"schema\" (include-schemas must be on)")?.to_string(),
            table: d.table.as_deref().ok_or("document has no \"table\"")?.to_string(),
        })
    };
    let action = d.action.unwrap_or_default();
    Ok(match action {
        "B" => Doc::Begin { commit_lsn: d.lsn.as_deref().and_then(parse_lsn), timestamp: d.timestamp },
        "C" => Doc::Commit {
            end_lsn: d
                .nextlsn
                .as_deref()
                .and_then(parse_lsn)
                .ok_or("COMMIT document has no valid \"nextlsn\" (include-lsn must be on)")?,
            timestamp: d.timestamp,
        },
        "I" => Doc::Insert { rel: rel(&d)?, new: d.columns.ok_or("INSERT document has no \"columns\"")? },
        "U" => Doc::Update {
            rel: rel(&d)?,
            new: d.columns.ok_or("UPDATE document has no \"columns\"")?,
            identity: d.identity,
            complete: d.unchanged_toast.as_ref().is_none_or(|u| u.is_empty()),
        },
        "D" => Doc::Delete { rel: rel(&d)?, identity: d.identity },
        "T" => Doc::Truncate { rel: rel(&d)?, restart_identity: d.restart_identity.unwrap_or(false), lsn: d.lsn },
        "P" | "CP" | "RP" => {
            let xid = d.xid.ok_or_else(|| format!("{action} document has no \"xid\""))?;
            let end_lsn = d
                .nextlsn
                .as_deref()
                .and_then(parse_lsn)
                .ok_or_else(|| format!("{action} document has no valid \"nextlsn\" (include-lsn must be on)"))?;
            match action {
                "P" => Doc::Prepare { xid, end_lsn, timestamp: d.timestamp },
                _ => Doc::FinishPrepared { commit: action == "CP", xid, end_lsn, timestamp: d.timestamp },
            }
        }
        "M" => Doc::Message,
        "DDL" => Doc::Ddl(Box::new(
            crate::ddl::DdlEvent::from_json(payload).ok_or("DDL document without a valid DDL event")?,
        )),
        other => return Err(format!("unknown action \"{other}\"")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&1u64.to_be_bytes());
        w.extend_from_slice(&2u64.to_be_bytes());
        w.extend_from_slice(&3u64.to_be_bytes());
        w.extend_from_slice(b"{}");
        assert_eq!(
            parse_inbound(&w).unwrap(),
            Inbound::XLogData { start: 1, wal_end: 2, send_time: 3, payload: b"{}" }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&7u64.to_be_bytes());
        k.extend_from_slice(&8u64.to_be_bytes());
        k.push(1);
        assert_eq!(parse_inbound(&k).unwrap(), Inbound::Keepalive { wal_end: 7, send_time: 8, reply_requested: true });
        assert!(parse_inbound(b"w123").is_err());
        assert!(parse_inbound(b"x").is_err());
    }

    #[test]
    fn status_update_layout() {
        let m = status_update(0x10, 0x20, 0x30, 0x40, true);
        assert_eq!(m[0], b'r');
        assert_eq!(be_u64(&m, 1), 0x10);
        assert_eq!(be_u64(&m, 9), 0x20);
        assert_eq!(be_u64(&m, 17), 0x30);
        assert_eq!(be_u64(&m, 25), 0x40);
        assert_eq!(m[33], 1);
    }

    #[test]
    fn lsns() {
        assert_eq!(parse_lsn("1/AB"), Some(0x1_0000_00AB));
        assert_eq!(format_lsn(0x1_0000_00AB), "1/AB");
        assert_eq!(parse_lsn("zz"), None);
    }

    #[test]
    fn documents() {
        let d = br#"{"action":"U","schema":"public","table":"t","columns":[{"name":"a","value":1.5e300},{"name":"b","value":"x\"y"},{"name":"c","value":null}],"identity":[{"name":"a","value":1}],"unchanged_toast":["big"]}"#;
        match parse_doc(d).unwrap() {
            Doc::Update { rel, new, identity, complete } => {
                assert!(!complete);
                assert_eq!(rel, RemoteRel { schema: "public".into(), table: "t".into() });
                assert_eq!(new[0].text().unwrap().as_deref(), Some("1.5e300"));
                assert_eq!(new[1].text().unwrap().as_deref(), Some("x\"y"));
                assert_eq!(new[2].text().unwrap(), None);
                assert_eq!(identity.unwrap().len(), 1);
            }
            other => panic!("{other:?}"),
        }
        match parse_doc(br#"{"action":"C","lsn":"0/10","nextlsn":"0/20","timestamp":"2026-01-01 00:00:00+00"}"#)
            .unwrap()
        {
            Doc::Commit { end_lsn, timestamp } => {
                assert_eq!(end_lsn, 0x20);
                assert!(timestamp.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_doc(br#"{"action":"C"}"#).is_err());
        assert!(parse_doc(br#"{"action":"I","schema":"s","table":"t"}"#).is_err());
        assert!(parse_doc(b"{not json").is_err());
        assert!(parse_doc(br#"{"action":"Z"}"#).is_err());
        let ddl = br#"{"action":"DDL","lsn":"0/10","source":"event_trigger","command_tag":"ALTER TABLE","object_type":"table","object_identity":"public.t","schema":"public","search_path":"public","role":"r","publications":["p"],"command":"ALTER TABLE t ADD c int"}"#;
        match parse_doc(ddl).unwrap() {
            Doc::Ddl(e) => assert_eq!(e.command, "ALTER TABLE t ADD c int"),
            other => panic!("{other:?}"),
        }
        assert!(parse_doc(br#"{"action":"DDL","command":"x"}"#).is_err());
    }

    #[test]
    fn two_phase_documents() {
        match parse_doc(br#"{"action":"P","xid":742,"gid":"g","lsn":"0/10","nextlsn":"0/28"}"#).unwrap() {
            Doc::Prepare { xid, end_lsn, timestamp } => {
                assert_eq!((xid, end_lsn), (742, 0x28));
                assert!(timestamp.is_none());
            }
            other => panic!("{other:?}"),
        }
        for (action, want) in [("CP", true), ("RP", false)] {
            let d =
                format!(r#"{{"action":"{action}","xid":9,"gid":"g","timestamp":"t","lsn":"0/30","nextlsn":"0/40"}}"#);
            match parse_doc(d.as_bytes()).unwrap() {
                Doc::FinishPrepared { commit, xid, end_lsn, timestamp } => {
                    assert_eq!((commit, xid, end_lsn), (want, 9, 0x40));
                    assert_eq!(timestamp.as_deref(), Some("t"));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(parse_doc(br#"{"action":"P","gid":"g","nextlsn":"0/28"}"#).is_err(), "no xid");
        assert!(parse_doc(br#"{"action":"CP","xid":1,"gid":"g"}"#).is_err(), "no nextlsn");
    }
}
