//! Spool files of streamed transactions (subscription option `streaming`):
//! the documents of an in-progress remote transaction are appended, block
//! by block, to a file of their own, cut back on a subtransaction abort,
//! and read back in order at the stream commit, as PostgreSQL 15's apply
//! worker spools them (worker.c, `stream_write_change`,
//! `subxact_info_*`, `apply_spooled_messages`).
//!
//! Design notes
//! - Where: `base/pgsql_tmp/pgsql_tmp_logical_ext.<pid>.<xid>` under the
//!   data directory (the backend's working directory). The `pgsql_tmp`
//!   prefix makes PostgreSQL itself remove a file left by a crash at the
//!   next server start (RemovePgTempFiles), and keeps it out of base
//!   backups. A file lives as long as its transaction is open in this
//!   session: [`Spool`]'s Drop removes every file it still has, so an
//!   error that ends the session (and the publisher then resends the whole
//!   transaction) leaves nothing behind. The pid keeps two workers apart.
//! - Memory stays bounded whatever the transaction's size: a buffered
//!   writer per open block, one record at a time when reading back, and
//!   per transaction only the list of its subtransactions' first offsets.
//! - A record is `u32 length, u64 LSN, document` (little-endian: the file
//!   never leaves this server and process).
//! - A subtransaction's changes start at the offset of its first record;
//!   everything after that offset belongs to it or to its own
//!   subtransactions (changes arrive in LSN order and the abort comes before
//!   any later change), so its abort truncates the file there.
//! - The stream's control documents (`S`, `E`, `SC`, `SA`) and the `xid` /
//!   `subxid` of a block's documents are read here without parsing the
//!   whole document: docs/FORMAT.md fixes their order after `action`.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

/// A control document of the stream of in-progress transactions.
#[derive(Debug, PartialEq)]
pub(crate) enum Control<'a> {
    Start {
        xid: u32,
        first: bool,
    },
    Stop {
        xid: u32,
    },
    Commit {
        xid: u32,
        commit_lsn: Option<Cow<'a, str>>,
        end_lsn: Option<Cow<'a, str>>,
        timestamp: Option<Cow<'a, str>>,
    },
    Abort {
        xid: u32,
        subxid: Option<u32>,
    },
}

#[derive(Deserialize)]
struct RawControl<'a> {
    action: &'a str,
    xid: u32,
    #[serde(default)]
    subxid: Option<u32>,
    #[serde(default)]
    first: Option<bool>,
    #[serde(default, borrow)]
    lsn: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    nextlsn: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    timestamp: Option<Cow<'a, str>>,
}

const ACTION: &[u8] = b"{\"action\":\"";

/// The action of a document, read from its first bytes.
fn action_of(payload: &[u8]) -> Option<&[u8]> {
    let rest = payload.strip_prefix(ACTION)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// Whether `payload` is a stream commit (its replay is applied work: the
/// flush position is held until its local commit).
pub(crate) fn is_stream_commit(payload: &[u8]) -> bool {
    action_of(payload) == Some(b"SC")
}

/// `Some` for `S`, `E`, `SC`, `SA`; `None` for every other document.
pub(crate) fn control(payload: &[u8]) -> Option<Result<Control<'_>, String>> {
    match action_of(payload)? {
        b"S" | b"E" | b"SC" | b"SA" => {}
        _ => return None,
    }
    let parsed = std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<RawControl<'_>>(t).map_err(|e| e.to_string()));
    Some(parsed.map_err(|e| format!("malformed stream document: {e}")).map(|d| match d.action {
        "S" => Control::Start { xid: d.xid, first: d.first.unwrap_or(false) },
        "E" => Control::Stop { xid: d.xid },
        "SC" => Control::Commit { xid: d.xid, commit_lsn: d.lsn, end_lsn: d.nextlsn, timestamp: d.timestamp },
        _ => Control::Abort { xid: d.xid, subxid: d.subxid },
    }))
}

/// The `xid` and `subxid` (0 when absent) of a document of a block: the
/// fields that follow `action` (docs/FORMAT.md, "Streamed transactions").
pub(crate) fn block_tag(payload: &[u8]) -> Option<(u32, u32)> {
    let a = action_of(payload)?;
    let mut rest = &payload[ACTION.len() + a.len() + 1..];
    let mut number = |key: &[u8]| -> Option<u32> {
        let r = rest.strip_prefix(b",\"")?.strip_prefix(key)?.strip_prefix(b"\":")?;
        // Read in place (once per document of a block): digits only, no
        // sign, at least one, within u32.
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let v = r[..n].iter().try_fold(0u32, |v, &d| v.checked_mul(10)?.checked_add(u32::from(d - b'0')))?;
        rest = &r[n..];
        Some(v)
    };
    let xid = number(b"xid")?;
    Some((xid, number(b"subxid").unwrap_or(0)))
}

/// One spooled transaction.
struct TxnFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    len: u64,
    /// (subxid, offset of its first record), in order of appearance.
    subxacts: Vec<(u32, u64)>,
}

/// The spool files of one session's open streamed transactions.
pub(crate) struct Spool {
    dir: PathBuf,
    tag: String,
    files: HashMap<u32, TxnFile>,
}

fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> String {
    format!("could not {what} spool file \"{}\": {e}", path.display())
}

impl Spool {
    /// Spool files in `dir`, named after `tag` (the process) and the xid.
    pub(crate) fn new(dir: PathBuf, tag: String) -> Spool {
        Spool { dir, tag, files: HashMap::new() }
    }

    /// Transactions spooled and not yet committed or aborted.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.files.len()
    }

    /// A block of `xid` starts; `first`: it is the transaction's first in
    /// this session (anything spooled for it before is dropped).
    pub(crate) fn start(&mut self, xid: u32, first: bool) -> Result<(), String> {
        if first {
            self.abort(xid);
        }
        if !self.files.contains_key(&xid) {
            if !first {
                return Err(format!("a block of the streamed transaction {xid} arrived without its first block"));
            }
            std::fs::create_dir_all(&self.dir).map_err(|e| io("create the directory of", &self.dir, e))?;
            let path = self.dir.join(format!("pgsql_tmp_{}.{xid}", self.tag));
            self.files.insert(xid, TxnFile { path, writer: None, len: 0, subxacts: Vec::new() });
        }
        let f = self.files.get_mut(&xid).expect("inserted above");
        let file = OpenOptions::new().create(true).append(true).open(&f.path).map_err(|e| io("open", &f.path, e))?;
        if first {
            file.set_len(0).map_err(|e| io("truncate", &f.path, e))?;
        }
        f.writer = Some(BufWriter::with_capacity(64 << 10, file));
        Ok(())
    }

    /// Append one document of a block of `xid`, made by `subxid` (0: the
    /// top-level transaction).
    pub(crate) fn append(&mut self, xid: u32, subxid: u32, lsn: u64, doc: &[u8]) -> Result<(), String> {
        let f = self.files.get_mut(&xid).ok_or_else(|| format!("a document of transaction {xid} outside its block"))?;
        if subxid != 0 && subxid != xid && !f.subxacts.iter().any(|s| s.0 == subxid) {
            f.subxacts.push((subxid, f.len));
        }
        let w = f.writer.as_mut().ok_or_else(|| format!("a document of transaction {xid} outside its block"))?;
        let len = u32::try_from(doc.len()).map_err(|_| "a document above 4 GB".to_string())?;
        w.write_all(&len.to_le_bytes())
            .and_then(|_| w.write_all(&lsn.to_le_bytes()))
            .and_then(|_| w.write_all(doc))
            .map_err(|e| io("write", &f.path, e))?;
        f.len += 12 + u64::from(len);
        Ok(())
    }

    /// The block of `xid` ends: its documents are written out.
    pub(crate) fn stop(&mut self, xid: u32) -> Result<(), String> {
        if let Some(f) = self.files.get_mut(&xid)
            && let Some(mut w) = f.writer.take()
        {
            w.flush().map_err(|e| io("write", &f.path, e))?;
        }
        Ok(())
    }

    /// Subtransaction `subxid` of `xid` aborted: drop its documents and
    /// those of every subtransaction that started after it.
    pub(crate) fn abort_subxact(&mut self, xid: u32, subxid: u32) -> Result<(), String> {
        self.stop(xid)?;
        let Some(f) = self.files.get_mut(&xid) else { return Ok(()) };
        let Some(i) = f.subxacts.iter().position(|s| s.0 == subxid) else { return Ok(()) };
        let offset = f.subxacts[i].1;
        f.subxacts.truncate(i);
        let file = OpenOptions::new().write(true).open(&f.path).map_err(|e| io("open", &f.path, e))?;
        file.set_len(offset).map_err(|e| io("truncate", &f.path, e))?;
        f.len = offset;
        Ok(())
    }

    /// `xid` aborted (or is to be forgotten): its file goes.
    pub(crate) fn abort(&mut self, xid: u32) {
        if let Some(f) = self.files.remove(&xid) {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.path);
        }
    }

    /// `xid` committed: its documents, in order; the file is removed when
    /// the reader is dropped. `None` when nothing of it was spooled.
    pub(crate) fn commit(&mut self, xid: u32) -> Result<Option<SpoolReader>, String> {
        self.stop(xid)?;
        let Some(f) = self.files.remove(&xid) else { return Ok(None) };
        let file = File::open(&f.path).map_err(|e| io("open", &f.path, e))?;
        Ok(Some(SpoolReader { path: f.path, reader: BufReader::with_capacity(64 << 10, file) }))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let xids: Vec<u32> = self.files.keys().copied().collect();
        for xid in xids {
            self.abort(xid);
        }
    }
}

/// The documents of a committed streamed transaction.
pub(crate) struct SpoolReader {
    path: PathBuf,
    reader: BufReader<File>,
}

impl SpoolReader {
    /// The next document into `buf`, with its LSN; `None` at the end.
    pub(crate) fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, String> {
        let mut head = [0u8; 12];
        match self.reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io("read", &self.path, e)),
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let lsn = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
        buf.clear();
        buf.resize(len, 0);
        self.reader.read_exact(buf).map_err(|e| io("read", &self.path, e))?;
        Ok(Some(lsn))
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_documents() {
        assert_eq!(
            control(br#"{"action":"S","xid":7,"first":true}"#),
            Some(Ok(Control::Start { xid: 7, first: true }))
        );
        assert_eq!(control(br#"{"action":"E","xid":7}"#), Some(Ok(Control::Stop { xid: 7 })));
        assert_eq!(
            control(br#"{"action":"SA","xid":7,"subxid":9}"#),
            Some(Ok(Control::Abort { xid: 7, subxid: Some(9) }))
        );
        match control(br#"{"action":"SC","xid":7,"timestamp":"t","lsn":"0/10","nextlsn":"0/20"}"#) {
            Some(Ok(Control::Commit { xid: 7, commit_lsn, end_lsn, timestamp })) => {
                assert_eq!(commit_lsn.as_deref(), Some("0/10"));
                assert_eq!(end_lsn.as_deref(), Some("0/20"));
                assert_eq!(timestamp.as_deref(), Some("t"));
            }
            other => panic!("{other:?}"),
        }
        assert!(is_stream_commit(br#"{"action":"SC","xid":1}"#));
        assert!(!is_stream_commit(br#"{"action":"S","xid":1}"#));
        assert_eq!(control(br#"{"action":"I","xid":7}"#), None);
        assert_eq!(control(br#"{"action":"SA"}"#).map(|r| r.is_err()), Some(true));
    }

    #[test]
    fn block_tags() {
        assert_eq!(block_tag(br#"{"action":"I","xid":12,"subxid":13,"schema":"s"}"#), Some((12, 13)));
        assert_eq!(block_tag(br#"{"action":"DDL","xid":12,"lsn":"0/1"}"#), Some((12, 0)));
        assert_eq!(block_tag(br#"{"action":"I","schema":"s"}"#), None);
        assert_eq!(block_tag(b"garbage"), None);
        assert_eq!(block_tag(br#"{"action":"I","xid":4294967295}"#), Some((u32::MAX, 0)));
        assert_eq!(block_tag(br#"{"action":"I","xid":4294967296}"#), None);
        assert_eq!(block_tag(br#"{"action":"I","xid":,"subxid":1}"#), None);
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("logical_ext_spool_test_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn read_all(r: &mut SpoolReader) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(lsn) = r.next(&mut buf).unwrap() {
            out.push((lsn, String::from_utf8(buf.clone()).unwrap()));
        }
        out
    }

    #[test]
    fn blocks_subxact_abort_and_commit() {
        let d = dir("blocks");
        let mut s = Spool::new(d.clone(), "t".into());
        s.start(5, true).unwrap();
        s.append(5, 0, 1, b"a").unwrap();
        s.append(5, 6, 2, b"b6").unwrap();
        s.stop(5).unwrap();
        s.start(5, false).unwrap();
        s.append(5, 6, 3, b"c6").unwrap();
        s.append(5, 7, 4, b"d7").unwrap();
        s.stop(5).unwrap();
        // 7 aborts: d7 goes.
        s.abort_subxact(5, 7).unwrap();
        s.start(5, false).unwrap();
        s.append(5, 0, 5, b"e").unwrap();
        s.stop(5).unwrap();
        // An unknown subtransaction: nothing to drop.
        s.abort_subxact(5, 99).unwrap();
        let mut r = s.commit(5).unwrap().unwrap();
        assert_eq!(read_all(&mut r), [(1, "a".into()), (2, "b6".into()), (3, "c6".into()), (5, "e".into())]);
        let path = r.path.clone();
        drop(r);
        assert!(!path.exists(), "the file is removed after the replay");
        assert_eq!(s.open_count(), 0);
    }

    #[test]
    fn subxact_abort_drops_later_subtransactions_and_first_restarts() {
        let d = dir("nested");
        let mut s = Spool::new(d.clone(), "t".into());
        s.start(5, true).unwrap();
        s.append(5, 0, 1, b"a").unwrap();
        s.append(5, 6, 2, b"b6").unwrap();
        s.append(5, 8, 3, b"c8").unwrap();
        s.stop(5).unwrap();
        s.abort_subxact(5, 6).unwrap();
        // A block arriving again as first (after a reconnect) starts over.
        s.start(9, true).unwrap();
        s.append(9, 0, 1, b"x").unwrap();
        s.stop(9).unwrap();
        s.start(9, true).unwrap();
        s.append(9, 0, 1, b"y").unwrap();
        s.stop(9).unwrap();
        assert_eq!(read_all(&mut s.commit(5).unwrap().unwrap()), [(1, "a".into())]);
        assert_eq!(read_all(&mut s.commit(9).unwrap().unwrap()), [(1, "y".into())]);
        assert!(s.commit(5).unwrap().is_none());
        assert!(s.start(3, false).is_err(), "a later block without the first");
    }

    #[test]
    fn abort_and_drop_remove_files() {
        let d = dir("drop");
        let mut s = Spool::new(d.clone(), "t".into());
        s.start(1, true).unwrap();
        s.append(1, 0, 1, b"a").unwrap();
        s.start(2, true).unwrap();
        s.append(2, 0, 1, b"b").unwrap();
        s.stop(2).unwrap();
        s.abort(2);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        drop(s);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "nothing left when the session ends");
    }
}
