//! pgoutput as an oracle: reading a `pgoutput` slot through
//! `pg_logical_slot_get_binary_changes` (protocol version 1) and decoding its
//! binary messages (PostgreSQL 15 `proto.c`: Begin, Commit, Relation, Type,
//! Origin, Insert, Update, Delete, Truncate).
//!
//! Only what the differential test compares is kept: per transaction, the
//! row changes with their relation's names, column names and replica identity
//! flags, and values in text form (pgoutput sends the output function's text
//! unless `binary` is asked for, which is never done here).

use crate::{Client, describe_error};
use std::collections::HashMap;

/// One column value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// `u`: an unchanged TOAST value, not sent.
    Unchanged,
    Text(String),
}

/// A Relation message: names and columns (with the replica identity flag).
#[derive(Debug, Clone)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    /// `d`, `n`, `f` or `i`.
    pub replident: u8,
    /// (name, part of the replica identity)
    pub columns: Vec<(String, bool)>,
}

/// The old row of an UPDATE/DELETE: `K` (key only) or `O` (whole row, FULL).
#[derive(Debug, Clone)]
pub struct OldRow {
    pub full: bool,
    pub values: Vec<Value>,
}

/// A change, with the Relation message in force for it.
#[derive(Debug, Clone)]
pub enum Change {
    Insert { rel: Relation, new: Vec<Value> },
    Update { rel: Relation, old: Option<OldRow>, new: Vec<Value> },
    Delete { rel: Relation, old: Option<OldRow> },
    Truncate { rels: Vec<Relation>, cascade: bool, restart_identity: bool },
}

/// A decoded transaction.
#[derive(Debug, Clone)]
pub struct Txn {
    pub xid: u32,
    pub changes: Vec<Change>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.at + n > self.b.len() {
            return Err(format!("message truncated at byte {} (need {n} of {})", self.at, self.b.len()));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let rest = &self.b[self.at..];
        let end = rest.iter().position(|&c| c == 0).ok_or("unterminated string")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Value>, String> {
        let n = self.i16()?;
        (0..n)
            .map(|_| {
                Ok(match self.u8()? {
                    b'n' => Value::Null,
                    b'u' => Value::Unchanged,
                    b't' => {
                        let len = self.i32()? as usize;
                        Value::Text(String::from_utf8_lossy(self.take(len)?).into_owned())
                    }
                    k => return Err(format!("unknown tuple value kind {:?}", k as char)),
                })
            })
            .collect()
    }
    fn old(&mut self, kind: u8) -> Result<OldRow, String> {
        Ok(OldRow { full: kind == b'O', values: self.tuple()? })
    }
}

/// Decode the messages of one read (in order) into transactions. A change
/// carries the last Relation message sent for its relation.
pub fn decode(messages: &[Vec<u8>]) -> Result<Vec<Txn>, String> {
    let mut out = Vec::new();
    let mut rels: HashMap<u32, Relation> = HashMap::new();
    let mut cur: Option<Txn> = None;
    let rel_of = |rels: &HashMap<u32, Relation>, id: i32| {
        rels.get(&(id as u32)).cloned().ok_or_else(|| format!("change of relation {id} before its Relation message"))
    };
    for m in messages {
        let mut r = Reader { b: m, at: 0 };
        let tag = r.u8()?;
        let push = |cur: &mut Option<Txn>, c: Change| {
            cur.as_mut().ok_or("change outside a transaction")?.changes.push(c);
            Ok::<(), String>(())
        };
        match tag {
            b'B' => {
                r.i64()?; // final lsn
                r.i64()?; // commit time
                let xid = r.i32()? as u32;
                cur = Some(Txn { xid, changes: Vec::new() });
            }
            b'C' => out.push(cur.take().ok_or("commit without begin")?),
            b'O' | b'Y' | b'M' => {}
            b'R' => {
                let relid = r.i32()? as u32;
                let schema = r.cstr()?;
                let name = r.cstr()?;
                let replident = r.u8()?;
                let n = r.i16()?;
                let mut columns = Vec::new();
                for _ in 0..n {
                    let flags = r.u8()?;
                    let cname = r.cstr()?;
                    r.i32()?; // type
                    r.i32()?; // typmod
                    columns.push((cname, flags & 1 != 0));
                }
                rels.insert(relid, Relation { schema, name, replident, columns });
            }
            b'I' => {
                let rel = rel_of(&rels, r.i32()?)?;
                if r.u8()? != b'N' {
                    return Err("INSERT without N".into());
                }
                let new = r.tuple()?;
                push(&mut cur, Change::Insert { rel, new })?;
            }
            b'U' => {
                let rel = rel_of(&rels, r.i32()?)?;
                let mut kind = r.u8()?;
                let mut old = None;
                if kind == b'K' || kind == b'O' {
                    old = Some(r.old(kind)?);
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err("UPDATE without N".into());
                }
                let new = r.tuple()?;
                push(&mut cur, Change::Update { rel, old, new })?;
            }
            b'D' => {
                let rel = rel_of(&rels, r.i32()?)?;
                let kind = r.u8()?;
                let old = if kind == b'K' || kind == b'O' { Some(r.old(kind)?) } else { None };
                push(&mut cur, Change::Delete { rel, old })?;
            }
            b'T' => {
                let n = r.i32()?;
                let flags = r.u8()?;
                let rels_t = (0..n).map(|_| rel_of(&rels, r.i32()?)).collect::<Result<Vec<_>, _>>()?;
                push(
                    &mut cur,
                    Change::Truncate { rels: rels_t, cascade: flags & 1 != 0, restart_identity: flags & 2 != 0 },
                )?;
            }
            t => return Err(format!("unknown pgoutput message {:?}", t as char)),
        }
    }
    if cur.is_some() {
        return Err("stream ends inside a transaction".into());
    }
    Ok(out)
}

/// Consume a pgoutput slot (protocol 1) for `publications` (already in
/// identifier syntax, e.g. `p1,"P 2"`); the raw messages, or the server's error.
pub fn read_slot(client: &mut Client, slot: &str, publications: &str) -> Result<Vec<Vec<u8>>, String> {
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2)",
            &[&slot, &publications],
        )
        .map_err(|e| describe_error(&e))?;
    Ok(rows.into_iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
}
