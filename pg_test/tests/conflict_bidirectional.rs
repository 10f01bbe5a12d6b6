//! Bidirectional replication with last_update_wins (issue 4), on three
//! clusters: A and B subscribe to each other on table `t` with
//! `origin => 'none'`, and C subscribes to both (so on C a row last written
//! through one subscription and then changed through the other is an
//! update_origin_differs conflict with another subscription as the local
//! origin). Two client threads, one on A and one on B, update the same few
//! rows several hundred times concurrently. Afterwards, once every
//! subscription has caught up:
//!
//! * all three tables are identical row by row, including each row's commit
//!   timestamp;
//! * each row holds the write with the latest commit timestamp among all
//!   writes made to it (ties: the larger system identifier), computed from
//!   the writers' own records, so last_update_wins really picked the last
//!   update;
//! * nothing looped: every subscription applied exactly as many transactions
//!   as its publisher's client committed;
//! * conflicts were detected and logged (type, resolution, local origin).

use logical_ext_pg_test::conflicts::*;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::collections::BTreeMap;
use std::sync::Barrier;

const ROWS: i32 = 5;
const ROUNDS: i32 = 60;

const SETUP: &str = "
    CREATE EXTENSION logical_ext;
    CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, who text NOT NULL, seq int NOT NULL);";

/// One client write: row, sequence number, xid.
type Write = (i32, i32, String);

/// `ROUNDS` rounds of single-row updates of every row on `node`, each its
/// own transaction. Both writers start each round together (`round`), A
/// going up the ids and B down, so every round's writes cross in flight,
/// the last round's included: the final state depends on the resolution.
fn writer(node: &Cluster, who: &str, round: &Barrier) -> Vec<Write> {
    let mut c = node.client();
    let mut out = Vec::new();
    for r in 0..ROUNDS {
        round.wait();
        for i in 0..ROWS {
            let id = if who == "A" { i + 1 } else { ROWS - i };
            let seq = r * ROWS + i;
            let row = c
                .query_one(
                    "UPDATE t SET v = v + 1, who = $1, seq = $2 WHERE id = $3 RETURNING pg_current_xact_id()::xid::text",
                    &[&who, &seq, &id],
                )
                .unwrap_or_else(|e| panic!("update on {who}: {}", describe_error(&e)));
            out.push((id, seq, row.get(0)));
        }
    }
    out
}

/// Commit timestamps (µs since the Unix epoch) of `writes`' xids on `node`.
fn commit_times(node: &Cluster, writes: &[Write]) -> Vec<i64> {
    let xids: Vec<String> = writes.iter().map(|w| w.2.clone()).collect();
    let mut c = node.client();
    let rows = c
        .query(
            "SELECT (extract(epoch FROM pg_xact_commit_timestamp(x::xid)) * 1000000)::bigint \
             FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n",
            &[&xids],
        )
        .expect("commit timestamps");
    rows.iter().map(|r| r.get(0)).collect()
}

fn system_id(node: &Cluster) -> u64 {
    let s: String =
        node.client().query_one("SELECT system_identifier::text FROM pg_control_system()", &[]).unwrap().get(0);
    s.parse().expect("system identifier")
}

/// `t` with each row's commit time, as text rows.
fn table_state(node: &Cluster) -> Vec<String> {
    rows_text(
        &mut node.client(),
        "SELECT id, v, who, seq, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint AS ts \
         FROM t ORDER BY id",
    )
}

fn applied(node: &Cluster, sub: &str) -> i64 {
    state_of(node, sub).map(|s| s.2).unwrap_or(-1)
}

#[test]
fn bidirectional_last_update_wins_converges() {
    let starts: Vec<_> = ["conflict_bidi_a", "conflict_bidi_b", "conflict_bidi_c"]
        .into_iter()
        .map(|n| std::thread::spawn(move || Cluster::start(n, SUBSCRIBER_CONF)))
        .collect();
    let mut nodes: Vec<Cluster> = starts.into_iter().map(|h| h.join().expect("cluster start")).collect();
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    for n in [&a, &b, &c] {
        n.exec(SETUP);
        n.exec(&format!("INSERT INTO t SELECT g, 0, 'init', 0 FROM generate_series(1, {ROWS}) g"));
    }
    a.exec("CREATE PUBLICATION p FOR TABLE t");
    b.exec("CREATE PUBLICATION p FOR TABLE t");
    let subs: [(&Cluster, &str, &Cluster); 4] =
        [(&a, "a_from_b", &b), (&b, "b_from_a", &a), (&c, "c_from_a", &a), (&c, "c_from_b", &b)];
    for (on, name, from) in subs {
        create_subscription(on, name, from, &["p"], "none", FAST_RETRY);
        on.exec(&format!("SELECT logical_ext.set_conflict_resolution('{name}', 'last_update_wins')"));
    }
    for (on, name, _) in subs {
        wait_streaming_on(on, name);
    }

    // Concurrent conflicting updates, one client per side.
    let barrier = Barrier::new(2);
    let (wa, wb) = std::thread::scope(|s| {
        let ha = s.spawn(|| writer(&a, "A", &barrier));
        let hb = s.spawn(|| writer(&b, "B", &barrier));
        (ha.join().expect("writer A"), hb.join().expect("writer B"))
    });

    // Quiescence: every subscription confirms its publisher's position.
    for (on, name, from) in subs {
        wait_caught_up_between(from, on, name);
    }
    // Applied counts prove there is no loop: each subscription applied
    // exactly its publisher's client transactions, and after catching up
    // again nothing more arrived.
    let want_applied = [(&a, "a_from_b"), (&b, "b_from_a"), (&c, "c_from_a"), (&c, "c_from_b")];
    let counts: Vec<i64> = want_applied.iter().map(|(n, s)| applied(n, s)).collect();
    let names: Vec<&str> = want_applied.iter().map(|w| w.1).collect();
    assert_eq!(counts, vec![i64::from(ROUNDS * ROWS); 4], "applied_transactions of {names:?}");
    for (on, name, from) in subs {
        wait_caught_up_between(from, on, name);
    }
    let again: Vec<i64> = want_applied.iter().map(|(n, s)| applied(n, s)).collect();
    assert_eq!(again, counts, "applied counts still grow: changes loop");

    // Identical tables, commit times included.
    let sa = table_state(&a);
    let sb = table_state(&b);
    let sc = table_state(&c);
    assert_eq!(sa, sb, "A (left) and B (right) diverged");
    assert_eq!(sa, sc, "A (left) and C (right) diverged");

    // Each row holds the last write made to it.
    let (ta, tb) = (commit_times(&a, &wa), commit_times(&b, &wb));
    let (ida, idb) = (system_id(&a), system_id(&b));
    let mut winner: BTreeMap<i32, ((i64, u64), String)> = BTreeMap::new();
    for (writes, times, node, who) in [(&wa, &ta, ida, "A"), (&wb, &tb, idb, "B")] {
        for ((id, seq, _), ts) in writes.iter().zip(times) {
            let key = (*ts, node);
            let e = winner.entry(*id).or_insert((key, String::new()));
            if key >= e.0 {
                *e = (key, format!("{who},{seq},{ts}"));
            }
        }
    }
    let got: BTreeMap<i32, String> = rows_text(
        &mut a.client(),
        "SELECT id, who, seq, \
         (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint FROM t ORDER BY id",
    )
    .into_iter()
    .map(|r| {
        let inner = r.trim_start_matches('(').trim_end_matches(')');
        let (id, rest) = inner.split_once(',').expect("row text");
        (id.parse().expect("id"), rest.to_string())
    })
    .collect();
    let want: BTreeMap<i32, String> =
        (1..=ROWS).map(|id| (id, winner.get(&id).map_or_else(|| "init,0,?".to_string(), |w| w.1.clone()))).collect();
    assert_eq!(got, want, "rows (left) do not hold the last write (right) as who,seq,commit_us");

    // Conflicts happened and were resolved by last_update_wins; on A and B
    // the local rows were written locally, on C by the other subscription
    // (or by the initial local insert).
    let mut total = 0;
    for (on, name, _) in subs {
        let counters = conflict_counters(on, name);
        assert_eq!(counters, log_counts(on, name), "{name}: counters vs log");
        assert_eq!(counters[..4], [0, 0, 0, 0], "{name}: only origin differences expected: {counters:?}");
        assert_eq!(counters[5], 0, "{name}: no deletes were made");
        let log = conflict_log(&mut on.client(), &format!("subscription = '{name}'"));
        let other_origin = match name {
            "c_from_a" => Some(origin_id(on, "c_from_b")),
            "c_from_b" => Some(origin_id(on, "c_from_a")),
            _ => None,
        };
        for row in &log {
            assert_eq!(
                (row.conflict_type.as_str(), row.resolution.as_str()),
                ("update_origin_differs", "last_update_wins")
            );
            let lo = row.local_origin.clone().unwrap_or_default();
            assert!(lo == "local" || Some(&lo) == other_origin.as_ref(), "{name}: local_origin {lo:?}: {row:#?}");
        }
        if let Some(other) = &other_origin {
            assert!(
                log.iter().any(|r| r.local_origin.as_ref() == Some(other)),
                "{name}: no conflict against the other subscription's origin {other}"
            );
        }
        total += counters[4];
    }
    assert!(total > 0, "no conflict was detected at all");
}

/// roident of a subscription's replication origin on `node`.
fn origin_id(node: &Cluster, sub: &str) -> String {
    let id = subscription_id(node, sub);
    node.client()
        .query_one("SELECT roident::text FROM pg_replication_origin WHERE roname = $1", &[&format!("logical_ext_{id}")])
        .unwrap()
        .get(0)
}
