//! The documents of two-phase decoding (option `two-phase`, docs/FORMAT.md):
//! `P` ends a transaction that was prepared (its changes came before it,
//! after a `B`), `CP` and `RP` say, later, that it was committed or rolled
//! back. Pure: the decoder hands over the fields, this writes the JSON.
//!
//! Design notes
//! - These three documents always carry `xid` and `gid`, whatever
//!   `include-xids` says: they are about one prepared transaction, and a
//!   consumer must be able to pair a `CP`/`RP` with its `P` (the GID is the
//!   publisher's; the xid is unique while the transaction is prepared).
//! - They are written whatever `include-transaction` says: without them the
//!   changes of a prepared transaction would read as committed.
//! - `CP`/`RP` stand alone (no `B` before them) and may name a transaction
//!   whose `P` was never written: one whose changes were all filtered out
//!   (as for `B`/`C`, nothing is written for it), or one prepared before
//!   the slot decoded prepares. For the latter PostgreSQL replays the whole
//!   transaction (`B`, changes, `P`) right before its `CP`.

use super::json;

/// Which of the three documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Prepare,
    CommitPrepared,
    RollbackPrepared,
}

impl Kind {
    fn action(self) -> &'static [u8] {
        match self {
            Kind::Prepare => b"P",
            Kind::CommitPrepared => b"CP",
            Kind::RollbackPrepared => b"RP",
        }
    }
}

/// The fields of one document; the optional ones are present when their
/// `include-*` option is on.
pub(crate) struct Doc<'a> {
    pub(crate) kind: Kind,
    pub(crate) xid: u32,
    pub(crate) gid: &'a [u8],
    /// `include-timestamp`: when it was prepared / committed / rolled back.
    pub(crate) timestamp: Option<&'a str>,
    /// `include-origin`.
    pub(crate) origin: Option<u16>,
    /// `include-lsn`: the record's position and end (`lsn`, `nextlsn`).
    pub(crate) lsns: Option<(u64, u64)>,
}

/// Write `doc` as one JSON object into `b` (cleared first).
pub(crate) fn write(b: &mut Vec<u8>, doc: &Doc<'_>) {
    b.clear();
    b.extend_from_slice(b"{\"action\":\"");
    b.extend_from_slice(doc.kind.action());
    b.extend_from_slice(b"\",\"xid\":");
    json::push_int(b, doc.xid as i64);
    b.extend_from_slice(b",\"gid\":");
    json::push_str(b, doc.gid);
    if let Some(ts) = doc.timestamp {
        b.extend_from_slice(b",\"timestamp\":");
        json::push_str(b, ts.as_bytes());
    }
    if let Some(origin) = doc.origin {
        b.extend_from_slice(b",\"origin\":");
        json::push_int(b, origin as i64);
    }
    if let Some((lsn, next)) = doc.lsns {
        b.extend_from_slice(b",\"lsn\":");
        json::push_lsn(b, lsn);
        b.extend_from_slice(b",\"nextlsn\":");
        json::push_lsn(b, next);
    }
    b.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(doc: &Doc<'_>) -> String {
        let mut b = b"stale".to_vec();
        write(&mut b, doc);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn minimal_documents_carry_xid_and_gid() {
        let d = Doc { kind: Kind::Prepare, xid: 742, gid: b"g1", timestamp: None, origin: None, lsns: None };
        assert_eq!(text(&d), r#"{"action":"P","xid":742,"gid":"g1"}"#);
        let d = Doc { kind: Kind::CommitPrepared, ..d };
        assert_eq!(text(&d), r#"{"action":"CP","xid":742,"gid":"g1"}"#);
        let d = Doc { kind: Kind::RollbackPrepared, ..d };
        assert_eq!(text(&d), r#"{"action":"RP","xid":742,"gid":"g1"}"#);
    }

    #[test]
    fn optional_fields_and_escaping() {
        let d = Doc {
            kind: Kind::CommitPrepared,
            xid: 7,
            gid: "a\"b\\c é".as_bytes(),
            timestamp: Some("2026-11-30 08:00:00.1+00"),
            origin: Some(3),
            lsns: Some((0x1_0000_00AB, 0x1_0000_00F0)),
        };
        let t = text(&d);
        assert_eq!(
            t,
            r#"{"action":"CP","xid":7,"gid":"a\"b\\c é","timestamp":"2026-11-30 08:00:00.1+00","origin":3,"lsn":"1/AB","nextlsn":"1/F0"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["gid"], "a\"b\\c é");
    }
}
