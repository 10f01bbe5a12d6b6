//! Partitioned tables as apply targets (issue 15, item 1), as native
//! replication does: each row goes to its partition on the subscriber,
//! whatever the publisher's layout and `publish_via_partition_root`;
//! UPDATEs move rows across partitions; TRUNCATE of a partitioned table
//! reaches its partitions (and `ONLY` is kept); the initial copy and
//! `resync_table` fill and empty a partitioned target; conflicts are
//! detected in the partition and logged under the replicated table's name.

use logical_ext_pg_test::conflicts::*;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;

/// Rows per partition on the subscriber, `name:count` in name order.
fn spread(pair: &Pair, root: &str) -> String {
    pair.subscriber.psql(&format!(
        "SELECT string_agg(r, ' ' ORDER BY r) FROM (SELECT tableoid::regclass::text || ':' || count(*) AS r \
         FROM {root} GROUP BY tableoid) s"
    ))
}

/// Publisher: `m` by range into 2, sent as the root. Subscriber: `m` by
/// range into 3, with another column order and a dropped column in one
/// partition. Plain `pl` on the publisher is hash-partitioned on the
/// subscriber. Initial copy, changes, cross-partition updates, deletes,
/// resync, TRUNCATE and an insert_exists conflict, row-exact.
#[test]
fn via_root_into_another_layout() {
    let pair = Pair::start("part_via_root");
    pair.pub_exec(
        "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (MINVALUE) TO (1000);
         CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (1000) TO (MAXVALUE);
         CREATE TABLE pl (id int PRIMARY KEY, v text);
         INSERT INTO m SELECT g, g % 7, 'v' || g FROM generate_series(1, 1800, 3) g;
         INSERT INTO pl SELECT g, 'p' || g FROM generate_series(1, 300) g;
         CREATE PUBLICATION p FOR TABLE m, pl WITH (publish_via_partition_root = true);",
    );
    pair.sub_exec(
        "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE ms_a PARTITION OF m FOR VALUES FROM (MINVALUE) TO (500);
         CREATE TABLE ms_b (junk int, v text, k int, id int NOT NULL);
         ALTER TABLE ms_b DROP COLUMN junk;
         ALTER TABLE m ATTACH PARTITION ms_b FOR VALUES FROM (500) TO (1500);
         CREATE TABLE ms_c PARTITION OF m FOR VALUES FROM (1500) TO (MAXVALUE);
         CREATE TABLE pl (id int PRIMARY KEY, v text) PARTITION BY HASH (id);
         CREATE TABLE pl_0 PARTITION OF pl FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE pl_1 PARTITION OF pl FOR VALUES WITH (MODULUS 2, REMAINDER 1);",
    );
    subscribe_copy(&pair, "s", &["p"], "");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["m", "pl"]);
    assert_eq!(spread(&pair, "m"), "ms_a:167 ms_b:333 ms_c:100");

    // Inserts into every partition, updates inside one, updates that move
    // rows across partitions (both sides' boundaries differ), deletes.
    pair.pub_exec(
        "INSERT INTO m SELECT g, 1, 'new' FROM generate_series(2, 1900, 48) g;
         UPDATE m SET v = 'same' WHERE id % 10 = 1;
         UPDATE m SET id = id + 599, v = 'to ms_b' WHERE id BETWEEN 1 AND 100 AND id % 3 = 1;
         UPDATE m SET id = id + 302, v = 'to ms_c' WHERE id BETWEEN 1300 AND 1400 AND id % 3 = 1;
         UPDATE m SET id = id + 1100, v = 'to m_2' WHERE id BETWEEN 700 AND 760 AND id % 3 = 1;
         UPDATE m SET id = -id, v = 'to ms_a' WHERE id BETWEEN 1000 AND 1100 AND id % 3 = 1;
         UPDATE m SET k = -k WHERE id BETWEEN 400 AND 600;
         DELETE FROM m WHERE id % 9 = 0;
         INSERT INTO pl VALUES (1001, 'a'), (1002, 'b');
         UPDATE pl SET id = id + 5000 WHERE id <= 40;
         DELETE FROM pl WHERE id BETWEEN 100 AND 120;",
    );
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["m", "pl"]);
    // Rows moved within a publisher partition but across subscriber ones,
    // across both, and down: each is in the partition its new key selects.
    for (part, moved, bounds) in [
        ("ms_b", "to ms_b", "id >= 500 AND id < 1500"),
        ("ms_c", "to ms_c", "id >= 1500"),
        ("ms_c", "to m_2", "id >= 1500"),
        ("ms_a", "to ms_a", "id < 500"),
    ] {
        let want = pair.publisher.psql(&format!("SELECT count(*) FROM m WHERE v = '{moved}' AND {bounds}"));
        assert_ne!(want, "0", "{moved}");
        assert_eq!(pair.subscriber.psql(&format!("SELECT count(*) FROM {part} WHERE v = '{moved}'")), want, "{part}");
    }

    // resync_table empties the partitions and copies again.
    pair.sub_exec("INSERT INTO ms_c VALUES (99999, 0, 'stray')");
    pair.sub_exec("SELECT logical_ext.resync_table('s', 'm')");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["m"]);

    // insert_exists on a partitioned target, default rule (error): logged
    // under the replicated table's name, with the local row; the apply stops
    // until the transaction is skipped.
    pair.sub_exec("INSERT INTO m VALUES (1999, 5, 'local')");
    let bad = commit_traced(&pair.publisher, "INSERT INTO m VALUES (1999, 6, 'remote')");
    pair.wait_status("s", "state 'error'", |s| s.state == "error");
    let mut sub = pair.sub_client();
    let log = conflict_log(&mut sub, "subscription = 's'");
    let last = log.last().expect("insert_exists logged");
    assert_eq!(
        (last.relation.as_str(), last.conflict_type.as_str(), last.resolution.as_str()),
        ("public.m", "insert_exists", "error")
    );
    assert_eq!(last.remote_commit_lsn.as_deref(), Some(bad.commit_lsn.as_str()));
    let local = last.local_tuple.as_ref().expect("the local row");
    assert_eq!(local["v"], "local", "{local}");
    exec(&mut sub, &format!("SELECT logical_ext.skip_transaction('s', '{}')", bad.commit_lsn));
    pair.pub_exec("DELETE FROM m WHERE id = 1999; INSERT INTO m VALUES (1999, 5, 'local')");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["m"]);

    // TRUNCATE of the root reaches the partitions. A partition's ENABLE
    // ALWAYS row trigger fires for rows routed (or moved) into it.
    pair.sub_exec(
        "CREATE TABLE audit (id int);
         CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN INSERT INTO public.audit VALUES (NEW.id); RETURN NULL; END$$;
         CREATE TRIGGER audit_c AFTER INSERT ON ms_c FOR EACH ROW EXECUTE FUNCTION audit_row();
         ALTER TABLE ms_c ENABLE ALWAYS TRIGGER audit_c;",
    );
    pair.pub_exec("TRUNCATE m, pl");
    pair.pub_exec("INSERT INTO m VALUES (5, 0, 'after'), (6, 0, 'after'), (1600, 0, 'after')");
    pair.pub_exec("UPDATE m SET id = 1700 WHERE id = 5");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["m", "pl"]);
    assert_eq!(spread(&pair, "m"), "ms_a:1 ms_c:2");
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM pl"), "0");
    assert_eq!(pair.subscriber.psql("SELECT string_agg(id::text, ' ' ORDER BY id) FROM audit"), "1600 1700");
}

/// Publisher: `m` by range into 2, its partitions sent as themselves
/// (`publish_via_partition_root = false`). Subscriber: `m_1` is itself
/// partitioned (by list on another column), `m_2` a plain table.
/// A cross-partition UPDATE on the publisher arrives as DELETE + INSERT.
/// The initial copy merges into a partitioned target whose partitions have
/// rows (it has a key).
/// `TRUNCATE ONLY m_1` reaches the partitions of the subscriber's
/// partitioned `m_1`; a plain parent's inheritance child keeps its rows
/// when the publisher truncates ONLY the parent.
#[test]
fn partitions_into_another_layout() {
    let pair = Pair::start("part_leaves");
    pair.pub_exec(
        "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (id);
         CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (MINVALUE) TO (1000);
         CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (1000) TO (MAXVALUE);
         CREATE TABLE h (id int PRIMARY KEY, v text);
         CREATE TABLE h_c (id int PRIMARY KEY, v text) INHERITS (h);
         INSERT INTO m SELECT g, g % 3, 'v' || g FROM generate_series(1, 1500, 7) g;
         INSERT INTO h SELECT g, 'h' FROM generate_series(1, 10) g;
         INSERT INTO h_c SELECT g, 'c' FROM generate_series(11, 20) g;
         CREATE PUBLICATION p FOR TABLE m, h, h_c WITH (publish_via_partition_root = false);",
    );
    pair.sub_exec(
        "CREATE TABLE m_1 (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
         CREATE TABLE m_1_0 PARTITION OF m_1 FOR VALUES IN (0);
         CREATE TABLE m_1_x PARTITION OF m_1 DEFAULT;
         CREATE TABLE m_2 (id int, k int, v text, PRIMARY KEY (id, k));
         CREATE TABLE h (id int PRIMARY KEY, v text);
         CREATE TABLE h_c (id int PRIMARY KEY, v text) INHERITS (h);
         INSERT INTO m_1 VALUES (-1, 5, 'already here');",
    );
    subscribe_copy(&pair, "s", &["p"], "");
    // A partitioned target whose partitions hold rows, with a key: the copy
    // is merged into it through its partitions (issue 15, item 8), and the
    // subscriber's own row stays.
    wait_all_ready(&pair, "s");
    assert_eq!(count(&mut pair.sub_client(), "m_1 WHERE id = -1 AND v = 'already here'"), 1, "the local row stays");
    pair.sub_exec("DELETE FROM m_1 WHERE id = -1");
    pair.wait_caught_up("s");
    let same = |pair: &Pair| {
        pair.assert_same("SELECT * FROM m_1", "id, k");
        pair.assert_same("SELECT * FROM m_2", "id, k");
        pair.assert_same("SELECT * FROM ONLY h", "id");
        pair.assert_same("SELECT * FROM h_c", "id");
    };
    same(&pair);
    pair.pub_exec(
        "INSERT INTO m VALUES (2, 0, 'a'), (3, 1, 'b'), (1001, 2, 'c');
         UPDATE m SET k = k + 1, v = 'k moved' WHERE id < 100;
         UPDATE m SET id = id + 1000, v = 'id moved' WHERE id BETWEEN 100 AND 300;
         UPDATE m SET id = id - 1000, v = 'back' WHERE id BETWEEN 1300 AND 1400;
         DELETE FROM m WHERE id % 5 = 0;",
    );
    pair.wait_caught_up("s");
    same(&pair);
    assert!(spread(&pair, "m_1").starts_with("m_1_0:"), "{}", spread(&pair, "m_1"));

    pair.pub_exec("TRUNCATE ONLY m_1; TRUNCATE ONLY h");
    pair.wait_caught_up("s");
    same(&pair);
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM m_1"), "0");
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM h_c"), "10");
    pair.pub_exec("INSERT INTO m VALUES (7, 0, 'again'), (8, 1, 'again')");
    pair.wait_caught_up("s");
    same(&pair);
}

/// A row that no partition of the subscriber's table accepts is an error
/// (PostgreSQL's, SQLSTATE 23514), retried until a partition for it exists; nothing is
/// lost or applied twice meanwhile.
#[test]
fn a_row_without_partition_waits_for_one() {
    let pair = Pair::start("part_missing");
    pair.pub_exec("CREATE TABLE r (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE r");
    pair.sub_exec(
        "CREATE TABLE r (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE r_low PARTITION OF r FOR VALUES FROM (MINVALUE) TO (100);",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO r VALUES (1, 'a'), (50, 'b')");
    pair.pub_exec("INSERT INTO r VALUES (2, 'c'), (150, 'd')");
    pair.wait_status("s", "an error about the missing partition", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("no partition of relation \"r\" found for row"))
    });
    assert_eq!(pair.subscriber.psql("SELECT string_agg(id::text, ' ' ORDER BY id) FROM r"), "1 50");
    pair.sub_exec("CREATE TABLE r_rest PARTITION OF r DEFAULT");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["r"]);
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM r_rest"), "1");
}

/// Attack: a partition owned by an unprivileged role (`mallory`) under a
/// root owned by `keeper` (who may become mallory, not the reverse).
/// Mallory's row triggers (BEFORE and AFTER, on every operation, rows
/// moving in and out) and a CHECK constraint of hers try to use keeper's
/// rights (write `vault`, which only keeper may) and note who they run as.
/// Streamed changes into her partition run as mallory only; replication
/// stays exact. A partition whose owner (`eve`) and keeper cannot become
/// each other is refused (42501) until one can. The initial copy, which
/// cannot switch per row, is refused (42501) for such a tree.
#[test]
fn a_partition_owner_never_runs_as_the_root_owner() {
    let pair = Pair::start("part_owner");
    pair.pub_exec("CREATE TABLE pm (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE pm");
    pair.sub_exec(
        "CREATE ROLE keeper; CREATE ROLE mallory LOGIN; CREATE ROLE eve;
         GRANT mallory TO keeper;
         CREATE SCHEMA mallory AUTHORIZATION mallory;
         CREATE TABLE public.seen (what text, who text);
         GRANT INSERT ON public.seen TO PUBLIC;
         CREATE TABLE public.vault (who text);
         ALTER TABLE public.vault OWNER TO keeper;
         CREATE TABLE pm (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE pm_a PARTITION OF pm FOR VALUES FROM (MINVALUE) TO (100);
         CREATE TABLE pm_b PARTITION OF pm FOR VALUES FROM (100) TO (1000);
         CREATE TABLE pm_c PARTITION OF pm FOR VALUES FROM (1000) TO (MAXVALUE);
         ALTER TABLE pm OWNER TO keeper; ALTER TABLE pm_a OWNER TO keeper; ALTER TABLE pm_b OWNER TO mallory;
         ALTER TABLE pm_c OWNER TO eve;",
    );
    {
        let mut s = pair.sub_client();
        exec(
            &mut s,
            "SET ROLE mallory;
             CREATE FUNCTION mallory.grab() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.seen VALUES (TG_WHEN || ' ' || TG_OP, current_user);
                 IF current_user <> 'mallory' THEN
                     INSERT INTO public.vault VALUES (current_user);
                 END IF;
                 IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
                 RETURN NEW;
             END $$;
             CREATE FUNCTION mallory.chk(t text) RETURNS bool LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.seen VALUES ('CHECK', current_user);
                 IF current_user <> 'mallory' THEN
                     INSERT INTO public.vault VALUES (current_user);
                 END IF;
                 RETURN true;
             END $$;
             CREATE TRIGGER b BEFORE INSERT OR UPDATE OR DELETE ON public.pm_b
                 FOR EACH ROW EXECUTE FUNCTION mallory.grab();
             CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON public.pm_b
                 FOR EACH ROW EXECUTE FUNCTION mallory.grab();
             ALTER TABLE public.pm_b ENABLE ALWAYS TRIGGER b;
             ALTER TABLE public.pm_b ENABLE ALWAYS TRIGGER a;
             ALTER TABLE public.pm_b ADD CONSTRAINT c CHECK (mallory.chk(v));",
        );
    }
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec(
        "INSERT INTO pm VALUES (1, 'a'), (2, 'a'), (150, 'b'), (160, 'b');
         UPDATE pm SET v = 'b2' WHERE id = 150;
         UPDATE pm SET id = 170 WHERE id = 1;
         UPDATE pm SET id = 3 WHERE id = 160;
         DELETE FROM pm WHERE id = 150;",
    );
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["pm"]);
    assert_eq!(spread(&pair, "pm"), "pm_a:2 pm_b:1");
    let whats = pair.subscriber.psql("SELECT string_agg(DISTINCT what, ',' ORDER BY what) FROM seen");
    assert_eq!(
        whats, "AFTER DELETE,AFTER INSERT,AFTER UPDATE,BEFORE DELETE,BEFORE INSERT,BEFORE UPDATE,CHECK",
        "every trigger and the check ran"
    );
    assert_eq!(
        pair.subscriber.psql(
            "SELECT coalesce(string_agg(what || ' as ' || who, ', ' ORDER BY what), 'none') FROM seen WHERE who <> 'mallory'"
        ),
        "none",
        "the partition owner's code ran as another role"
    );
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM vault"), "0");

    // Neither keeper nor eve can become the other: refused, then applied
    // once keeper may become eve.
    pair.pub_exec("INSERT INTO pm VALUES (1500, 'c')");
    pair.wait_status("s", "the change into eve's partition refused", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("cannot apply a change to partition \"public.pm_c\""))
    });
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM pm_c"), "0");
    pair.sub_exec("GRANT eve TO keeper");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["pm"]);
    assert_eq!(spread(&pair, "pm"), "pm_a:2 pm_b:1 pm_c:1");

    // The copy goes through the root as one statement: refused, the rows stay.
    pair.sub_exec("SELECT logical_ext.resync_table('s', 'pm')");
    wait_tables(&pair, "s", "the copy refused", |ts| {
        ts.iter()
            .any(|t| t.last_error.as_deref().is_some_and(|e| e.contains("cannot copy into \"public.pm\" as its owner")))
    });
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM vault"), "0");
    assert_eq!(pair.subscriber.psql("SELECT count(*) FROM seen WHERE who <> 'mallory'"), "0");
}

/// What routing costs, beside a native subscription applying the same
/// stream into the same layouts in a second subscriber database: 100k
/// inserts and 100k updates into a plain table and into a table the
/// subscriber partitions by range into 3. Figures and ratios are printed;
/// only row-exactness is asserted.
#[test]
fn routing_cost_beside_native() {
    let pair = Pair::start("part_cost");
    let parted = "CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (MINVALUE) TO (35000);
         CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (35000) TO (70000);
         CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (70000) TO (MAXVALUE);
         CREATE TABLE plain (id int PRIMARY KEY, v text);";
    pair.pub_exec("CREATE TABLE plain (id int PRIMARY KEY, v text); CREATE TABLE parted (id int PRIMARY KEY, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE plain, parted");
    pair.sub_exec(parted);
    pair.sub_exec("CREATE DATABASE native");
    exec(&mut pair.subscriber.client_db("native"), parted);
    pair.subscribe("s", &["p"], "");
    pair.subscribe_native("native", "ns", &["p"], "");
    pair.wait_streaming("s");
    pair.wait_slots_caught_up(&["s", "ns"], "s", std::time::Instant::now());
    let mut figures = Vec::new();
    for t in ["plain", "parted"] {
        for (what, sql) in [
            ("insert", format!("INSERT INTO {t} SELECT g, 'x' || g FROM generate_series(1, 100000) g")),
            ("update", format!("UPDATE {t} SET v = v || 'u'")),
        ] {
            let start = std::time::Instant::now();
            pair.pub_exec(&sql);
            let took = pair.wait_slots_caught_up(&["s", "ns"], "s", start);
            println!("FIGURE {what} 100k into {t}: logical_ext {:?}, native {:?}", took[0], took[1]);
            figures.push(took);
        }
        pair.assert_same(&format!("SELECT * FROM {t}"), "id");
        pair.assert_same_in("native", &format!("SELECT * FROM {t}"), "id");
    }
    let secs = |d: std::time::Duration| d.as_secs_f64().max(1e-3);
    for (i, what) in ["insert", "update"].iter().enumerate() {
        let (plain, parted) = (&figures[i], &figures[i + 2]);
        println!(
            "RATIO {what}: partitioned/plain logical_ext {:.2}, native {:.2}; logical_ext/native partitioned {:.2}",
            secs(parted[0]) / secs(plain[0]),
            secs(parted[1]) / secs(plain[1]),
            secs(parted[0]) / secs(parted[1])
        );
    }
}
