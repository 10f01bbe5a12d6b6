//! Streaming of in-progress transactions (the `streaming` option): a
//! transaction larger than `logical_decoding_work_mem` arrives in blocks
//! before its commit, subtransaction and whole aborts, a small transaction
//! committing between blocks, and the exact content against the ordinary
//! (non-streamed) output of the same WAL.
//! Spec: docs/FORMAT.md, "Streamed transactions".

use logical_ext_pg_test::background::{Background, wait_with_load};
use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The smallest `logical_decoding_work_mem` PostgreSQL accepts: a few
/// thousand rows overflow it.
const CONF: &[&str] = &["logical_decoding_work_mem = 64kB"];

const STREAM: &[(&str, Option<&str>)] = &[("streaming", Some("on"))];

fn cluster(name: &str) -> (Cluster, Client) {
    let (cluster, mut c) = plugin_cluster_with(name, CONF);
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    (cluster, c)
}

fn insert(tx: &mut impl postgres::GenericClient, from: i32, to: i32) {
    tx.batch_execute(&format!("INSERT INTO t SELECT g, 'row ' || g FROM generate_series({from}, {to}) g")).unwrap();
}

/// A change document without the fields streaming adds (`xid`, `subxid`).
fn strip(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("xid");
        o.remove("subxid");
    }
    d
}

/// What a consumer makes of a stream: the committed transactions in commit
/// order, each as its change documents (stripped). Streamed blocks are
/// filed under their `xid`, a subtransaction abort drops that
/// subtransaction's documents, a whole abort drops the transaction, a
/// commit (`C` or `SC`) delivers it. Panics on a malformed structure.
fn consume(changes: &[Change]) -> Vec<Vec<Value>> {
    let mut open: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    let mut committed = Vec::new();
    let mut plain: Option<Vec<Value>> = None;
    let mut block: Option<i64> = None;
    for ch in changes {
        let d = &ch.doc;
        let xid = d["xid"].as_i64();
        match ch.action() {
            "S" => {
                assert!(block.is_none() && plain.is_none(), "S inside a block or transaction:\n{}", dump(changes));
                let x = xid.expect("S has xid");
                if d["first"] == Value::Bool(true) {
                    open.insert(x, Vec::new());
                }
                assert!(open.contains_key(&x), "a non-first block of an unknown transaction");
                block = Some(x);
            }
            "E" => {
                assert_eq!(block, xid, "E closes the open block");
                block = None;
            }
            "SC" => {
                assert!(block.is_none(), "SC inside a block");
                committed.push(open.remove(&xid.unwrap()).expect("SC of a streamed transaction"));
            }
            "SA" => {
                assert!(block.is_none(), "SA inside a block");
                let x = xid.unwrap();
                match d["subxid"].as_i64() {
                    None => assert!(open.remove(&x).is_some(), "SA of a streamed transaction"),
                    Some(sub) => open
                        .get_mut(&x)
                        .expect("SA of a streamed transaction")
                        .retain(|c| c["subxid"].as_i64() != Some(sub)),
                }
            }
            "B" => {
                assert!(block.is_none() && plain.is_none(), "B inside a block or transaction");
                plain = Some(Vec::new());
            }
            "C" => committed.push(plain.take().expect("C after B")),
            _ => match block {
                Some(x) => {
                    assert_eq!(xid, Some(x), "a change of a block carries its xid: {d}");
                    open.get_mut(&x).unwrap().push(d.clone());
                }
                None => plain.as_mut().expect("a change inside B..C").push(d.clone()),
            },
        }
    }
    committed.into_iter().map(|t| t.iter().map(strip).collect()).collect()
}

fn count(changes: &[Change], action: &str) -> usize {
    changes.iter().filter(|c| c.action() == action).count()
}

/// The large transaction is sent in blocks while it is still open; after
/// its commit the whole stream (S…E blocks then SC) gives exactly the
/// documents of the ordinary output. Without the option nothing of the open
/// transaction is sent.
#[test]
fn large_transaction_arrives_in_blocks_before_commit() {
    let (_cluster, mut c) = cluster("dec_stream_blocks");
    let mut other = _cluster.client();
    let mut tx = c.transaction().unwrap();
    let xid: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).unwrap().get(0);
    insert(&mut tx, 1, 5000);
    // Decoding reads flushed WAL only.
    flush_wal(&mut other);
    let open = peek_changes(&mut other, "s", STREAM);
    assert!(count(&open, "S") >= 2, "several blocks before the commit:\n{}", dump(&open[..open.len().min(5)]));
    assert_eq!(count(&open, "S"), count(&open, "E"));
    assert_eq!(count(&open, "SC") + count(&open, "C"), 0, "nothing committed yet");
    assert!(open.iter().all(|c| c.doc["xid"].as_i64() == Some(xid)), "every document carries the xid {xid}");
    assert_eq!(open[0].doc, serde_json::json!({"action": "S", "xid": xid, "first": true}));
    assert_eq!(open[1].doc["action"], "I");
    assert!(open.iter().filter(|c| c.action() == "S").skip(1).all(|c| c.doc["first"] == false));
    let streamed_rows = count(&open, "I");
    assert!(streamed_rows > 1000, "most rows streamed before the commit: {streamed_rows}");
    assert!(peek_changes(&mut other, "s", &[]).is_empty(), "without the option an open transaction sends nothing");
    tx.commit().unwrap();

    let plain = peek_changes(&mut c, "s", &[]);
    let streamed = peek_changes(&mut c, "s", STREAM);
    assert_eq!(actions(&plain[..2]), "B I");
    assert_eq!(count(&plain, "I"), 5000);
    assert_eq!(streamed.last().unwrap().action(), "SC", "{}", streamed.last().unwrap().data);
    assert_eq!(count(&streamed, "B"), 0, "no B/C for a streamed transaction");
    let (p, s) = (consume(&plain), consume(&streamed));
    assert_eq!(p.len(), 1);
    assert!(p == s, "streamed content differs from the ordinary output");

    // SC carries the commit's metadata as C does.
    let meta = [("include-lsn", Some("1")), ("include-timestamp", Some("1")), ("include-xids", Some("1"))];
    let c_doc = &peek_changes(&mut c, "s", &meta).last().unwrap().doc.clone();
    let mut with = meta.to_vec();
    with.push(("streaming", Some("on")));
    let all = peek_changes(&mut c, "s", &with);
    let sc = &all.last().unwrap().doc;
    for key in ["xid", "timestamp", "lsn", "nextlsn"] {
        assert_eq!(sc[key], c_doc[key], "{key} of SC {sc} vs C {c_doc}");
    }
    let i = all.iter().find(|c| c.action() == "I").unwrap();
    assert!(i.doc["timestamp"].is_null(), "the commit time of a streamed change is not known yet: {}", i.data);
}

/// A rolled-back subtransaction inside a streamed transaction: `SA` with
/// its `subxid`, and the consumer's result equals the ordinary output.
#[test]
fn subtransaction_abort_inside_a_streamed_transaction() {
    let (_cluster, mut c) = cluster("dec_stream_subxact");
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, 1, 3000);
    let top: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).unwrap().get(0);
    tx.batch_execute("SAVEPOINT a").unwrap();
    insert(&mut tx, 3001, 6000);
    tx.batch_execute("ROLLBACK TO SAVEPOINT a").unwrap();
    tx.batch_execute("SAVEPOINT b").unwrap();
    insert(&mut tx, 6001, 7000);
    tx.batch_execute("RELEASE SAVEPOINT b").unwrap();
    insert(&mut tx, 7001, 8000);
    tx.commit().unwrap();

    let plain = peek_changes(&mut c, "s", &[]);
    let streamed = peek_changes(&mut c, "s", STREAM);
    assert_eq!(count(&plain, "I"), 5000);
    let aborts: Vec<&Change> = streamed.iter().filter(|c| c.action() == "SA").collect();
    assert_eq!(
        aborts.len(),
        1,
        "one subtransaction abort:\n{}",
        aborts.iter().map(|c| &c.data).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(aborts[0].doc["xid"].as_i64(), Some(top), "{}", aborts[0].data);
    let sub = aborts[0].doc["subxid"].as_i64().expect("the subtransaction's xid");
    assert_ne!(sub, top);
    // Rows of the savepoint were streamed before its abort, tagged with it.
    let tagged: Vec<i64> = streamed
        .iter()
        .filter(|c| c.action() == "I" && c.doc["subxid"].as_i64() == Some(sub))
        .map(|c| c.doc["columns"][0]["value"].as_i64().unwrap())
        .collect();
    assert!(!tagged.is_empty() && tagged.iter().all(|id| (3001..=6000).contains(id)), "{tagged:?}");
    assert!(consume(&plain) == consume(&streamed), "streamed content differs from the ordinary output");
    assert_eq!(streamed.last().unwrap().action(), "SC");
}

/// pg_recvlogical on slot `s` with `streaming=on` (killed on drop; its
/// stderr kept, so that a receiver that died says why); its lines are
/// collected.
fn receive(cluster: &Cluster) -> (Background, Arc<Mutex<Vec<String>>>) {
    let mut cmd = cluster.recvlogical("", "s");
    cmd.args(["-o", "streaming=on"]);
    let (child, stdout) = Background::spawn_reading(cmd, "pg_recvlogical", cluster.dir());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

/// A streamed transaction that aborts after blocks of it were sent (over
/// the replication protocol, which decodes it while it is open): `SA`
/// without `subxid`. The ordinary output has nothing of it. (A decoding
/// session that only starts after the abort sends nothing of it either:
/// PostgreSQL notices the abort before the first block.)
#[test]
fn whole_abort_of_a_streamed_transaction() {
    let (cluster, mut c) = cluster("dec_stream_abort");
    // pg_recvlogical confirms what it read on `s`: compare on another slot.
    create_slot(&mut c, "plain", PLUGIN);
    let (mut receiver, lines) = receive(&cluster);
    let mut other = cluster.client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, 1, 5000);
    flush_wal(&mut other);
    wait_with_load(
        &mut receiver,
        Duration::from_secs(60),
        "blocks of the open transaction arrive",
        || lines.lock().unwrap().iter().any(|l| l.starts_with("{\"action\":\"S\"")),
        String::new,
    );
    tx.rollback().unwrap();
    exec(&mut other, "INSERT INTO t VALUES (0, 'after')");
    wait_with_load(
        &mut receiver,
        Duration::from_secs(60),
        "the next transaction arrives",
        || lines.lock().unwrap().iter().any(|l| l.contains("\"after\"")),
        String::new,
    );
    let got: Vec<Change> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| Change {
            lsn: String::new(),
            xid: String::new(),
            data: l.clone(),
            doc: serde_json::from_str(l).unwrap(),
        })
        .collect();
    let sa: Vec<&Change> = got.iter().filter(|c| c.action() == "SA").collect();
    assert_eq!(sa.len(), 1, "{}", dump(&got[got.len().saturating_sub(6)..]));
    assert!(sa[0].doc.get("subxid").is_none(), "{}", sa[0].data);
    assert_eq!(count(&got, "SC"), 0);
    let plain = peek_changes(&mut other, "plain", &[]);
    assert_eq!(actions(&plain), "B I C");
    assert!(consume(&plain) == consume(&got));
    // A session started after the abort sends nothing of it.
    assert!(consume(&peek_changes(&mut other, "plain", STREAM)) == consume(&plain));
}

/// A small transaction commits between two blocks of a large one: it
/// arrives as an ordinary B…C before the large one's SC, and the committed
/// transactions (in commit order) equal the ordinary output's.
#[test]
fn small_transaction_commits_between_blocks() {
    let (cluster, mut c) = cluster("dec_stream_interleave");
    let mut small = cluster.client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, 1, 3000);
    small.batch_execute("INSERT INTO t VALUES (100000, 'small')").unwrap();
    insert(&mut tx, 3001, 6000);
    tx.commit().unwrap();

    let plain = peek_changes(&mut c, "s", &[]);
    let streamed = peek_changes(&mut c, "s", STREAM);
    let b = streamed.iter().position(|c| c.action() == "B").expect("the small transaction");
    let sc = streamed.iter().position(|c| c.action() == "SC").expect("the large one commits");
    let first_s = streamed.iter().position(|c| c.action() == "S").unwrap();
    assert!(first_s < b && b < sc, "a block, then the small transaction, then SC:\n{}", actions(&streamed));
    assert_eq!(actions(&streamed[b..b + 3]), "B I C");
    let (p, s) = (consume(&plain), consume(&streamed));
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].len(), 1, "the small transaction committed first");
    assert!(p == s, "streamed content differs from the ordinary output");
}

/// `streaming` needs format-version 2 (a per-transaction document cannot
/// come in pieces): a clear option error.
#[test]
fn streaming_needs_format_version_2() {
    let (_cluster, mut c) = cluster("dec_stream_v1");
    let e = try_changes(&mut c, false, "s", None, &[("streaming", Some("on")), ("format-version", Some("1"))])
        .expect_err("refused");
    assert_eq!(e.code().map(|s| s.code()), Some("22023"), "{}", describe_error(&e));
    assert!(describe_error(&e).contains("streaming"));
}

/// A two-phase session does not stream (a streamed transaction that is
/// then prepared would need a stream-prepare callback): with both options a
/// large transaction arrives whole, exactly as without `streaming`.
#[test]
fn two_phase_session_does_not_stream() {
    let (_cluster, mut c) = cluster("dec_stream_2pc");
    create_slot(&mut c, "tp", PLUGIN);
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, 1, 5000);
    tx.commit().unwrap();
    let both = peek_changes(&mut c, "tp", &[("streaming", Some("on")), ("two-phase", Some("on"))]);
    assert_eq!(count(&both, "S"), 0, "no block in a two-phase session");
    assert_eq!(actions(&both[..2]), "B I");
    assert!(consume(&both) == consume(&peek_changes(&mut c, "s", &[])));
    // The slot is two-phase now: later sessions do not stream either.
    assert_eq!(count(&peek_changes(&mut c, "tp", STREAM), "S"), 0);
    assert!(count(&peek_changes(&mut c, "s", STREAM), "S") > 0, "an ordinary slot streams");
}
