//! Executor state kept for a whole remote transaction (issue 14): the apply
//! worker opens a plain table without triggers once per remote transaction
//! and reuses its executor state, slots and prepared defaults for every
//! change. These tests mix, inside single remote transactions, everything
//! that must still see or force a fresh state: a TRUNCATE and a replayed
//! ALTER TABLE of a table the transaction already wrote (both refuse a table
//! held open), a table with an ENABLE ALWAYS trigger (kept per change)
//! between changes of cached ones, volatile subscriber-side defaults
//! (evaluated per row, as the table owner), conflicts resolved on a cached
//! table, and a subscriber-side ALTER TABLE between transactions (the
//! relation map is invalidated per relation).

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

const PRELOAD: &str = "shared_preload_libraries = 'logical_ext'";

#[test]
fn one_remote_transaction_mixes_cached_and_fresh_targets() {
    let pair = Pair::start_with("apply_txn_state", &[PRELOAD], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec(
        "CREATE SCHEMA app;
         CREATE TABLE app.t (id int PRIMARY KEY, v text);
         CREATE TABLE app.gone (id int PRIMARY KEY, v text);
         CREATE TABLE app.trg (id int PRIMARY KEY, v text);",
    );
    // Subscriber only: a per-row volatile default, and an ALWAYS trigger
    // that counts the rows it sees and the values it saw.
    pair.sub_exec(
        "CREATE SEQUENCE app.s;
         ALTER TABLE app.t ADD COLUMN seq bigint DEFAULT nextval('app.s');
         CREATE TABLE app.seen (id int, v text);
         CREATE FUNCTION app.note() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO app.seen VALUES (NEW.id, NEW.v); RETURN NEW; END $$;
         CREATE TRIGGER note AFTER INSERT OR UPDATE ON app.trg FOR EACH ROW EXECUTE FUNCTION app.note();
         ALTER TABLE app.trg ENABLE ALWAYS TRIGGER note;
         CREATE ROLE tabowner;
         GRANT USAGE ON SCHEMA app TO tabowner;
         ALTER TABLE app.gone OWNER TO tabowner;
         ALTER TABLE app.gone ADD COLUMN who text DEFAULT current_user;",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA app");
    // insert_exists on app.t is resolved (every insert there probes its
    // unique index through the cached target's slots).
    pair.subscribe("s", &["p"], ", enabled => false");
    pair.sub_exec(
        "SELECT logical_ext.set_conflict_resolution('s', 'apply_remote', 'insert_exists', 'app.t'::regclass);
         SELECT logical_ext.enable_subscription('s');",
    );
    pair.wait_streaming("s");

    // One remote transaction: cached and per-change targets interleaved,
    // updates and deletes of rows inserted earlier in it, a TRUNCATE of a
    // table it wrote, then DDL on a table it wrote and rows using the new
    // column.
    pair.pub_exec(
        "BEGIN;
         INSERT INTO app.t SELECT g, 'v' || g FROM generate_series(1, 3000) g;
         INSERT INTO app.gone SELECT g, 'g' || g FROM generate_series(1, 50) g;
         INSERT INTO app.trg SELECT g, 'trg' || g FROM generate_series(1, 20) g;
         UPDATE app.t SET v = v || '+' WHERE id % 3 = 0;
         UPDATE app.trg SET v = v || '!' WHERE id % 2 = 0;
         DELETE FROM app.t WHERE id % 5 = 0;
         TRUNCATE app.gone;
         INSERT INTO app.gone VALUES (1, 'after truncate');
         ALTER TABLE app.t ADD COLUMN w int;
         INSERT INTO app.t (id, v, w) SELECT g, 'w' || g, g FROM generate_series(3001, 3100) g;
         UPDATE app.t SET w = -id WHERE id <= 10;
         COMMIT;",
    );
    pair.wait_caught_up("s");
    let published = "SELECT id, v, w FROM app.t";
    pair.assert_same(published, "id");
    pair.assert_same("SELECT id, v FROM app.gone", "id");
    pair.assert_same("SELECT * FROM app.trg", "id");
    let mut sub = pair.sub_client();
    // 3000 - 600 deleted + 100 inserted after the DDL.
    assert_eq!(count(&mut sub, "app.t"), 2500);
    assert_eq!(
        query_string(&mut sub, "SELECT count(DISTINCT seq) || ' ' || count(*) FROM app.t"),
        "2500 2500",
        "every row applied to a cached target gets its own default"
    );
    // A cached target's defaults run as the table's owner, as before.
    assert_eq!(query_string(&mut sub, "SELECT string_agg(DISTINCT who, ',') FROM app.gone"), "tabowner");
    // 20 inserts and 10 updates, each seen by the trigger with its values.
    assert_eq!(count(&mut sub, "app.seen"), 30);
    assert_eq!(count(&mut sub, "app.seen WHERE v LIKE '%!'"), 10);

    // A subscriber-side ALTER TABLE between transactions invalidates that
    // table's entry (new column filled by its default); the others keep
    // applying.
    pair.sub_exec("ALTER TABLE app.gone ADD COLUMN extra int; ALTER TABLE app.gone ALTER COLUMN extra SET DEFAULT 7; ANALYZE app.trg;");
    pair.pub_exec(
        "BEGIN;
         INSERT INTO app.gone VALUES (2, 'two'), (3, 'three');
         INSERT INTO app.t (id, v) VALUES (5000, 'x');
         INSERT INTO app.trg VALUES (100, 'hundred');
         COMMIT;",
    );
    pair.wait_caught_up("s");
    assert_eq!(
        query_string(&mut sub, "SELECT string_agg(coalesce(extra, 0)::text, ',' ORDER BY id) FROM app.gone"),
        "0,7,7"
    );
    pair.assert_same("SELECT * FROM app.trg", "id");
    assert_eq!(count(&mut sub, "app.seen"), 31);

    // Conflicts on a cached table inside one transaction: rows that exist
    // on the subscriber only, resolved by apply_remote, then changed again.
    pair.sub_exec("INSERT INTO app.t (id, v) SELECT g, 'local' FROM generate_series(6001, 6010) g");
    pair.pub_exec(
        "BEGIN;
         INSERT INTO app.t (id, v) SELECT g, 'remote' FROM generate_series(6001, 6020) g;
         UPDATE app.t SET v = v || ' again' WHERE id BETWEEN 6001 AND 6020;
         COMMIT;",
    );
    pair.wait_caught_up("s");
    pair.assert_same(published, "id");
    let st = pair.status("s");
    assert_eq!(st.last_error, None, "{st:#?}");
    assert_eq!(
        query_string(&mut sub, "SELECT conflicts_insert_exists::text FROM logical_ext.subscription_status"),
        "10"
    );
}
