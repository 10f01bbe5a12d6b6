//! The wire formats the apply worker speaks, as pure functions: the streaming
//! replication CopyData messages (`w` XLogData, `k` keepalive, `r` standby
//! status update) and the JSON documents of the `logical_ext` output plugin
//! (docs/FORMAT.md), read into a closed [`Doc`] enum (by `scan.rs`, with
//! serde_json for what it declines).
//!
//! The compact documents (plugin option `compact`, asked for by the worker
//! and refused by older publishers: see [`option_refused`]) are read into
//! the same [`Doc`]s: a relation document (`R`) is kept in [`CompactRels`]
//! for the session, and a row's positional values get their column names
//! from it (shared, not copied), so nothing after the reader — conflict
//! records included — knows which format arrived.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

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

/// One `{"name":…,"value":…}` entry of a document, or one value of a
/// compact row with its name from the relation document.
#[derive(Debug)]
pub(crate) struct Column<'a> {
    pub(crate) name: ColName<'a>,
    pub(crate) value: Value<'a>,
}

/// A column's name: read from the document, or shared with the compact
/// relation document (a reference count, no copy per row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ColName<'a> {
    Doc(Cow<'a, str>),
    Shared(Rc<str>),
}

impl std::ops::Deref for ColName<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            ColName::Doc(c) => c,
            ColName::Shared(r) => r,
        }
    }
}

impl std::fmt::Display for ColName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl<'a> From<Cow<'a, str>> for ColName<'a> {
    fn from(c: Cow<'a, str>) -> Self {
        ColName::Doc(c)
    }
}

/// A column's value, classified once when the document is read.
#[derive(Debug, Clone, PartialEq)]
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
        Ok(Column { name: self.name.into(), value: classify_value(self.value)? })
    }
}

fn classify_value(value: &RawValue) -> Result<Value<'_>, String> {
    let raw = value.get();
    Ok(match raw.as_bytes().first() {
        Some(b'"') if !raw.contains('\\') => Value::Text(Cow::Borrowed(&raw[1..raw.len() - 1])),
        Some(b'"') => Value::Text(Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?)),
        Some(b'n') if raw == "null" => Value::Null,
        Some(b'{') | Some(b'[') => Value::Structured(raw),
        Some(_) => Value::Literal(raw),
        None => return Err("empty value".into()),
    })
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
    #[serde(default)]
    relid: Option<u32>,
    #[serde(default, borrow)]
    names: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    identity_key: Option<Vec<u32>>,
    #[serde(default, borrow)]
    new: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    key: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    old: Option<Vec<&'a RawValue>>,
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
    /// Compact documents: the relation's id, and (`R`) its column names and
    /// identity key positions, or (rows) values by position.
    pub(crate) relid: Option<u32>,
    pub(crate) names: Option<Vec<Cow<'a, str>>>,
    pub(crate) identity_key: Option<Vec<u32>>,
    pub(crate) new: Option<Vec<Value<'a>>>,
    pub(crate) key: Option<Vec<Value<'a>>>,
    pub(crate) old: Option<Vec<Value<'a>>>,
}

fn classify_all<'a>(c: Option<Vec<SerdeColumn<'a>>>) -> Result<Option<Vec<Column<'a>>>, String> {
    c.map(|v| v.into_iter().map(SerdeColumn::classify).collect()).transpose()
}

fn classify_values<'a>(c: Option<Vec<&'a RawValue>>) -> Result<Option<Vec<Value<'a>>>, String> {
    c.map(|v| v.into_iter().map(classify_value).collect()).transpose()
}

/// Read a document with serde_json (what `scan.rs` declines).
pub(crate) fn serde_fields(text: &str) -> Result<Fields<'_>, String> {
    let malformed = |e: String| format!("malformed JSON document: {e}");
    let d: RawDoc<'_> = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    Ok(Fields {
        action: Some(d.action),
        timestamp: d.timestamp,
        lsn: d.lsn,
        nextlsn: d.nextlsn,
        schema: d.schema,
        table: d.table,
        columns: classify_all(d.columns).map_err(malformed)?,
        identity: classify_all(d.identity).map_err(malformed)?,
        unchanged_toast: d.unchanged_toast,
        restart_identity: d.restart_identity,
        xid: d.xid,
        relid: d.relid,
        names: d.names,
        identity_key: d.identity_key,
        new: classify_values(d.new).map_err(malformed)?,
        key: classify_values(d.key).map_err(malformed)?,
        old: classify_values(d.old).map_err(malformed)?,
    })
}

/// A relation as the publisher names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RemoteRel {
    pub(crate) schema: String,
    pub(crate) table: String,
}

/// The relation of a row document: named by the document itself, or
/// shared with the compact relation document it refers to (no copy of the
/// names per row).
#[derive(Debug)]
pub(crate) enum RowRel {
    Own(RemoteRel),
    Shared(Rc<CompactRel>),
}

impl std::ops::Deref for RowRel {
    type Target = RemoteRel;
    fn deref(&self) -> &RemoteRel {
        match self {
            RowRel::Own(r) => r,
            RowRel::Shared(c) => &c.rel,
        }
    }
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
        rel: RowRel,
        new: Vec<Column<'a>>,
    },
    /// Columns whose TOASTed value did not change are absent from `new`
    /// (listed in the document's `unchanged_toast`): the local value stays.
    /// `complete`: nothing was left out, so the row could be inserted if it
    /// is missing.
    Update {
        rel: RowRel,
        new: Vec<Column<'a>>,
        identity: Option<Vec<Column<'a>>>,
        complete: bool,
    },
    Delete {
        rel: RowRel,
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
    /// `V`: a reconcile document (reconcile/document.rs).
    Reconcile(Box<crate::reconcile::ReconcileDoc>),
    /// A sequence's state (`SEQ`, src/sequences/), applied forward only.
    Sequence(Box<crate::sequences::message::SeqDoc>),
    /// `R` (compact documents): a relation's description for the rows that
    /// follow, kept with [`CompactRels::insert`].
    Relation(u32, Rc<CompactRel>),
}

/// A relation as its compact relation document (`R`) describes it.
#[derive(Debug, PartialEq)]
pub(crate) struct CompactRel {
    pub(crate) rel: RemoteRel,
    /// The columns a row's positions stand for.
    pub(crate) names: Vec<Rc<str>>,
    /// Positions (into `names`) of the replica-identity key, in order.
    pub(crate) key: Vec<usize>,
}

/// The relation documents of one streaming session, by id: each walsender
/// session describes a relation before its first compact row, and again
/// after a change of it, so a new session starts empty.
#[derive(Default)]
pub(crate) struct CompactRels(HashMap<u32, Rc<CompactRel>>);

impl CompactRels {
    pub(crate) fn insert(&mut self, id: u32, rel: Rc<CompactRel>) {
        self.0.insert(id, rel);
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// First byte of a message that carries several documents (plugin option
/// `batch`, written by `decoder/compact.rs`): each document then follows
/// as its length (8 hexadecimal digits) and its bytes. A single document
/// always starts with `{`.
pub(crate) const BATCH_MARK: u8 = 0x1E;

/// The documents of a batched message, in order; `None` when `payload` is
/// a single document.
pub(crate) fn batched(payload: &[u8]) -> Option<Batch<'_>> {
    match payload.split_first() {
        Some((&BATCH_MARK, rest)) => Some(Batch { rest }),
        _ => None,
    }
}

/// Iterator over a batched message's documents ([`batched`]).
pub(crate) struct Batch<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Batch<'a> {
    type Item = Result<&'a [u8], String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some((digits, body)) = rest.split_first_chunk::<8>() else {
            return Some(Err(format!("a batch ends inside a length ({} bytes left)", rest.len())));
        };
        let Some(len) = digits.iter().try_fold(0usize, |n, &d| Some(n << 4 | char::from(d).to_digit(16)? as usize))
        else {
            return Some(Err("a batched document's length is not hexadecimal".into()));
        };
        if body.len() < len {
            return Some(Err(format!("a batched document of {len} bytes has only {} left", body.len())));
        }
        let (doc, tail) = body.split_at(len);
        self.rest = tail;
        Some(Ok(doc))
    }
}

/// Whether a refused START_REPLICATION asking for `compact` or `batch`
/// means the publisher's plugin does not know the option (an older
/// logical_ext: every option error is SQLSTATE 22023), so the worker asks
/// for less (`worker.rs` `Wire`). Decided on the SQLSTATE only (`sqlstate` as
/// PostgreSQL packs it, MAKE_SQLSTATE); anything else is a real error.
pub(crate) fn option_refused(sqlstate: i32) -> bool {
    sqlstate == pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32
}

/// Whether START_REPLICATION failed because another process holds the slot
/// (`ReplicationSlotAcquire`: "replication slot ... is active for PID ...").
pub(crate) fn slot_in_use(sqlstate: i32) -> bool {
    sqlstate == pgrx::PgSqlErrorCode::ERRCODE_OBJECT_IN_USE as i32
}

/// A compact row's values by position: `{}` (no value) is left out, and
/// `absent` says whether one was.
fn positional<'a>(rel: &CompactRel, values: Vec<Value<'a>>, what: &str) -> Result<(Vec<Column<'a>>, bool), String> {
    if values.len() != rel.names.len() {
        return Err(format!(
            "compact {what} of {}.{} has {} values for {} columns",
            rel.rel.schema,
            rel.rel.table,
            values.len(),
            rel.names.len()
        ));
    }
    let mut absent = false;
    let mut out = Vec::with_capacity(values.len());
    for (name, value) in rel.names.iter().zip(values) {
        if is_absent(&value) {
            absent = true;
            continue;
        }
        out.push(Column { name: ColName::Shared(name.clone()), value });
    }
    Ok((out, absent))
}

/// `{}`: a position without a value (values are never objects).
fn is_absent(v: &Value<'_>) -> bool {
    matches!(v, Value::Structured(raw) if *raw == "{}")
}

/// A compact identity: `key` (the key columns' values, in order) or `old`
/// (by position); `None` when the document carries neither.
fn compact_identity<'a>(rel: &CompactRel, d: &mut Fields<'a>) -> Result<Option<Vec<Column<'a>>>, String> {
    if let Some(key) = d.key.take() {
        if key.len() != rel.key.len() {
            return Err(format!(
                "compact key of {}.{} has {} values for {} key columns",
                rel.rel.schema,
                rel.rel.table,
                key.len(),
                rel.key.len()
            ));
        }
        return Ok(Some(
            rel.key
                .iter()
                .zip(key)
                .filter(|(_, v)| !is_absent(v))
                .map(|(&pos, value)| Column { name: ColName::Shared(rel.names[pos].clone()), value })
                .collect(),
        ));
    }
    d.old.take().map(|old| positional(rel, old, "old row").map(|(c, _)| c)).transpose()
}

/// An `R` document.
fn compact_relation(d: &mut Fields<'_>) -> Result<Doc<'static>, String> {
    let id = d.relid.ok_or("relation document has no \"relid\"")?;
    let rel = RemoteRel {
        schema: d.schema.as_deref().ok_or("relation document has no \"schema\"")?.to_string(),
        table: d.table.as_deref().ok_or("relation document has no \"table\"")?.to_string(),
    };
    let names: Vec<Rc<str>> =
        d.names.take().ok_or("relation document has no \"names\"")?.iter().map(|n| Rc::from(&**n)).collect();
    let key = d
        .identity_key
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|k| ((k as usize) < names.len()).then_some(k as usize))
        .collect::<Option<Vec<usize>>>()
        .ok_or("relation document has an \"identity_key\" position past its columns")?;
    Ok(Doc::Relation(id, Rc::new(CompactRel { rel, names, key })))
}

/// A compact I/U/D document (its relation was described before).
fn compact_row<'a>(action: &str, id: u32, mut d: Fields<'a>, rels: &CompactRels) -> Result<Doc<'a>, String> {
    let rel = rels.0.get(&id).ok_or_else(|| {
        format!("compact {action} document of relation id {id}, which no relation document of this session described")
    })?;
    let remote = RowRel::Shared(rel.clone());
    Ok(match action {
        "I" => {
            let (new, _) = positional(rel, d.new.take().ok_or("compact INSERT document has no \"new\"")?, "row")?;
            Doc::Insert { rel: remote, new }
        }
        "U" => {
            let (new, absent) = positional(rel, d.new.take().ok_or("compact UPDATE document has no \"new\"")?, "row")?;
            Doc::Update { rel: remote, new, identity: compact_identity(rel, &mut d)?, complete: !absent }
        }
        _ => Doc::Delete { rel: remote, identity: compact_identity(rel, &mut d)? },
    })
}

/// Parse one document (`rels`: the compact relation documents of the
/// session so far). Errors say what is wrong; the caller adds the LSN.
pub(crate) fn parse_doc<'a>(payload: &'a [u8], rels: &CompactRels) -> Result<Doc<'a>, String> {
    // Validate UTF-8 once for the whole document: serde_json's str reader
    // then skips the per-string validation of its slice reader.
    let text = std::str::from_utf8(payload).map_err(|e| format!("document is not UTF-8: {e}"))?;
    let mut d = match super::scan::document(text) {
        Some(d) => d,
        None => serde_fields(text)?,
    };
    match (d.action, d.relid) {
        (Some("R"), _) => return compact_relation(&mut d),
        (Some(a @ ("I" | "U" | "D")), Some(id)) => return compact_row(a, id, d, rels),
        _ => {}
    }
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
        "I" => Doc::Insert { rel: RowRel::Own(rel(&d)?), new: d.columns.ok_or("INSERT document has no \"columns\"")? },
        "U" => Doc::Update {
            rel: RowRel::Own(rel(&d)?),
            new: d.columns.ok_or("UPDATE document has no \"columns\"")?,
            identity: d.identity,
            complete: d.unchanged_toast.as_ref().is_none_or(|u| u.is_empty()),
        },
        "D" => Doc::Delete { rel: RowRel::Own(rel(&d)?), identity: d.identity },
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
        "V" => Doc::Reconcile(Box::new(
            crate::reconcile::ReconcileDoc::from_v_document(payload)
                .ok_or("V document without a valid reconcile document")?,
        )),
        "SEQ" => Doc::Sequence(Box::new(
            crate::sequences::message::SeqDoc::from_json(payload)
                .ok_or("SEQ document without a valid sequence state")?,
        )),
        other => return Err(format!("unknown action \"{other}\"")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::compact::{self, Cell};

    /// Full documents need no relation documents.
    fn parse_doc(payload: &[u8]) -> Result<Doc<'_>, String> {
        super::parse_doc(payload, &CompactRels::default())
    }

    /// (name, text or None for NULL) of each column.
    fn pairs(cols: &[Column<'_>]) -> Vec<(String, Option<String>)> {
        cols.iter().map(|c| (c.name.to_string(), c.text().unwrap().map(|t| t.into_owned()))).collect()
    }

    /// A value as the plugin writes it: a JSON string, a number or a bool.
    fn push_json(b: &mut Vec<u8>, v: &str) {
        b.extend_from_slice(serde_json::to_string(v).unwrap().as_bytes());
    }

    /// Read the relation document `r` into `rels`.
    fn describe(rels: &mut CompactRels, r: &[u8]) {
        match super::parse_doc(r, rels).unwrap() {
            Doc::Relation(id, rel) => rels.insert(id, rel),
            other => panic!("{other:?}"),
        }
    }

    fn relation(id: u32, names: &[&str], key: &[usize]) -> Vec<u8> {
        let mut b = Vec::new();
        let cols: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, &b"\"text\""[..])).collect();
        compact::push_relation(&mut b, None, id, "sch\"ema", "t\\able", cols.into_iter(), key);
        b
    }

    fn row(action: u8, id: u32, arrays: &[(&str, Vec<Cell<&str>>)]) -> Vec<u8> {
        let mut b = Vec::new();
        compact::push_row_head(&mut b, None, action, id);
        for (field, cells) in arrays {
            let cells: Vec<Cell<&str>> = cells
                .iter()
                .map(|c| match c {
                    Cell::Absent => Cell::Absent,
                    Cell::Null => Cell::Null,
                    Cell::Value(v) => Cell::Value(*v),
                })
                .collect();
            compact::push_cells(&mut b, field, cells.into_iter(), push_json);
        }
        b.push(b'}');
        b
    }

    /// A streamed block's compact documents carry the block's tag (the
    /// spool files them under it) and read exactly as untagged ones.
    #[test]
    fn compact_block_documents() {
        let mut b = Vec::new();
        compact::push_relation(&mut b, Some((742, 0)), 7, "s", "t", [("id", &b"\"integer\""[..])].into_iter(), &[0]);
        assert_eq!(crate::apply::spool::block_tag(&b), Some((742, 0)));
        let mut rels = CompactRels::default();
        describe(&mut rels, &b);
        let mut r = Vec::new();
        compact::push_row_head(&mut r, Some((742, 743)), b'D', 7);
        compact::push_cells(&mut r, "key", std::iter::once(Cell::Value("5")), |b, v: &str| {
            b.extend_from_slice(v.as_bytes())
        });
        r.push(b'}');
        assert_eq!(crate::apply::spool::block_tag(&r), Some((742, 743)));
        match super::parse_doc(&r, &rels).unwrap() {
            Doc::Delete { rel, identity } => {
                assert_eq!(rel.table, "t");
                assert_eq!(pairs(&identity.unwrap()), vec![("id".into(), Some("5".into()))]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compact_round_trip() {
        let mut rels = CompactRels::default();
        // Column "b" was dropped on the publisher: the relation document
        // lists the live columns only, and positions follow it.
        describe(&mut rels, &relation(16385, &["id", "na\"me", "c"], &[0]));
        let want_rel = RemoteRel { schema: "sch\"ema".into(), table: "t\\able".into() };

        let ins = row(b'I', 16385, &[("new", vec![Cell::Value("1"), Cell::Value("x\"y\\z\n\u{1}é"), Cell::Null])]);
        match super::parse_doc(&ins, &rels).unwrap() {
            Doc::Insert { rel, new } => {
                assert_eq!(*rel, want_rel);
                assert_eq!(
                    pairs(&new),
                    vec![
                        ("id".into(), Some("1".into())),
                        ("na\"me".into(), Some("x\"y\\z\n\u{1}é".into())),
                        ("c".into(), None)
                    ]
                );
            }
            other => panic!("{other:?}"),
        }

        // Unchanged TOAST ({}) is left out and makes the row incomplete;
        // NULL stays a column whose value is NULL.
        let upd = row(
            b'U',
            16385,
            &[("new", vec![Cell::Value("1"), Cell::Absent, Cell::Null]), ("key", vec![Cell::Value("1")])],
        );
        match super::parse_doc(&upd, &rels).unwrap() {
            Doc::Update { new, identity, complete, .. } => {
                assert!(!complete);
                assert_eq!(pairs(&new), vec![("id".into(), Some("1".into())), ("c".into(), None)]);
                assert_eq!(pairs(&identity.unwrap()), vec![("id".into(), Some("1".into()))]);
            }
            other => panic!("{other:?}"),
        }
        let upd = row(b'U', 16385, &[("new", vec![Cell::Value("2"), Cell::Value("{}"), Cell::Null])]);
        match super::parse_doc(&upd, &rels).unwrap() {
            Doc::Update { new, identity, complete, .. } => {
                assert!(complete, "the text {{}} is a value");
                assert_eq!(new[1].text().unwrap().as_deref(), Some("{}"));
                assert!(identity.is_none());
            }
            other => panic!("{other:?}"),
        }

        // REPLICA IDENTITY FULL: the old row by position.
        let del = row(b'D', 16385, &[("old", vec![Cell::Value("1"), Cell::Absent, Cell::Null])]);
        match super::parse_doc(&del, &rels).unwrap() {
            Doc::Delete { identity, .. } => {
                assert_eq!(pairs(&identity.unwrap()), vec![("id".into(), Some("1".into())), ("c".into(), None)]);
            }
            other => panic!("{other:?}"),
        }

        // ALTER TABLE: the relation is described again; later rows use it.
        describe(&mut rels, &relation(16385, &["id", "c", "added"], &[0, 2]));
        let ins = row(b'I', 16385, &[("new", vec![Cell::Value("3"), Cell::Null, Cell::Value("7")])]);
        match super::parse_doc(&ins, &rels).unwrap() {
            Doc::Insert { new, .. } => assert_eq!(new[2].name.to_string(), "added"),
            other => panic!("{other:?}"),
        }
        let del = row(b'D', 16385, &[("key", vec![Cell::Value("3"), Cell::Value("7")])]);
        match super::parse_doc(&del, &rels).unwrap() {
            Doc::Delete { identity, .. } => assert_eq!(
                pairs(&identity.unwrap()),
                vec![("id".into(), Some("3".into())), ("added".into(), Some("7".into()))]
            ),
            other => panic!("{other:?}"),
        }

        // Errors: a relation never described, a row of the wrong width, a
        // key of the wrong width, a key position past the columns.
        assert!(super::parse_doc(&row(b'I', 9, &[("new", vec![])]), &rels).unwrap_err().contains("relation id 9"));
        assert!(super::parse_doc(&row(b'I', 16385, &[("new", vec![Cell::Null])]), &rels).is_err());
        assert!(super::parse_doc(&row(b'D', 16385, &[("key", vec![Cell::Null])]), &rels).is_err());
        assert!(super::parse_doc(&relation(1, &["a"], &[1]), &rels).is_err());
        assert!(super::parse_doc(&row(b'I', 16385, &[]), &rels).is_err());
    }

    /// The compact documents and the full ones give the same rows.
    #[test]
    fn compact_equals_full() {
        let mut rels = CompactRels::default();
        describe(&mut rels, &relation(5, &["a", "b"], &[0]));
        let full = br#"{"action":"U","schema":"sch\"ema","table":"t\\able","columns":[{"name":"a","value":1}],"identity":[{"name":"a","value":1}],"unchanged_toast":["b"]}"#;
        let small = row(b'U', 5, &[("new", vec![Cell::Value("1"), Cell::Absent]), ("key", vec![Cell::Value("1")])]);
        let (f, c) = (parse_doc(full).unwrap(), super::parse_doc(&small, &rels).unwrap());
        match (f, c) {
            (
                Doc::Update { rel: r1, new: n1, identity: i1, complete: c1 },
                Doc::Update { rel: r2, new: n2, identity: i2, complete: c2 },
            ) => {
                assert_eq!(*r1, *r2);
                assert_eq!(c1, c2);
                // The full document's value is the number 1, the compact
                // one's (from push_json) the string "1": the same text.
                assert_eq!(pairs(&n1), pairs(&n2));
                assert_eq!(pairs(&i1.unwrap()), pairs(&i2.unwrap()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fallback_only_on_an_option_error() {
        use pgrx::PgSqlErrorCode as E;
        assert!(option_refused(E::ERRCODE_INVALID_PARAMETER_VALUE as i32));
        for other in [
            E::ERRCODE_UNDEFINED_OBJECT,
            E::ERRCODE_OBJECT_IN_USE,
            E::ERRCODE_INSUFFICIENT_PRIVILEGE,
            E::ERRCODE_PROTOCOL_VIOLATION,
        ] {
            assert!(!option_refused(other as i32));
        }
        assert!(!option_refused(0), "no SQLSTATE (a lost connection)");
        assert!(slot_in_use(E::ERRCODE_OBJECT_IN_USE as i32));
        assert!(!slot_in_use(E::ERRCODE_INVALID_PARAMETER_VALUE as i32));
        assert!(!slot_in_use(0));
    }

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
                assert_eq!(*rel, RemoteRel { schema: "public".into(), table: "t".into() });
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
        // A reconcile document, nested so that its fields (columns, keys)
        // are not taken for a row's.
        let v = br#"{"action":"V","lsn":"0/1","reconcile":{"op":"verify","subscription":"s","run":1,"chunk":1,"relation":5,"columns":["id"],"keys":["id"],"range":{"lower":null,"upper":["9"]},"rows":1,"digest":"00000000000000000000000000000001","log_id":3}}"#;
        match parse_doc(v).unwrap() {
            Doc::Reconcile(d) => {
                assert_eq!((d.run, d.columns.len(), d.range.upper.clone()), (1, 1, Some(vec!["9".into()])))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_doc(br#"{"action":"V","reconcile":{"op":"x"}}"#).is_err());
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

    #[test]
    fn batches_written_by_the_decoder_read_back_in_order() {
        let docs: [&[u8]; 4] = [br#"{"action":"I","relid":1,"new":[1]}"#, b"{}", &[b'{'; 70_000], br#"{"a":"\n"}"#];
        let mut batch = Vec::new();
        for d in docs {
            compact::batch_push(&mut batch, d);
        }
        assert_eq!(compact::BATCH_MARK, super::BATCH_MARK);
        let read: Vec<&[u8]> = super::batched(&batch).expect("a batch").map(Result::unwrap).collect();
        assert_eq!(read, docs);
        assert!(super::batched(docs[0]).is_none(), "a single document is not a batch");
        // Truncated anywhere: the complete documents before the cut, then
        // an error unless the cut falls between two documents.
        let mut ends = vec![1usize];
        for d in docs {
            ends.push(ends[ends.len() - 1] + 8 + d.len());
        }
        assert!(batch.is_ascii(), "a batch of ASCII documents stays text");
        for cut in 1..batch.len() {
            let got: Vec<_> = super::batched(&batch[..cut]).expect("a batch").collect();
            let complete = ends.iter().filter(|&&e| e <= cut).count() - 1;
            let oks: Vec<&[u8]> = got.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
            assert_eq!(oks, docs[..complete], "cut at {cut}");
            assert_eq!(got.last().is_some_and(|r| r.is_err()), !ends.contains(&cut), "cut at {cut}");
        }
    }
}
