//! Many publishers, one subscriber (issue 15, item 8): two publishers each
//! publish `u` (primary key) with disjoint keys and one key in common; the
//! second subscription's initial copy goes into the `u` the first one
//! filled. Under the default `insert_exists` rule (`error`) the copy fails
//! naming the key and copies nothing; with `keep_local` for `u` the retry
//! copies every other row and the overlap is one logged conflict (and with
//! `apply_remote` for `w` the copied row replaces the local one); both
//! subscriptions then stream.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;

const U: &str = "CREATE TABLE public.u (id int PRIMARY KEY, src text NOT NULL, v int);
                 CREATE TABLE public.w (id int PRIMARY KEY, src text NOT NULL)";

#[test]
fn second_copy_merges_into_a_filled_table() {
    let pair = Pair::start("many_pubs");
    let pub2 = Cluster::start("many_pubs_pub2", &[]);
    pair.both_exec(U);
    pub2.exec(U);
    pair.pub_exec(
        "INSERT INTO public.u SELECT g, 'a', g FROM generate_series(1, 1000) g;
         INSERT INTO public.w VALUES (1, 'a');
         CREATE PUBLICATION p FOR TABLE public.u, public.w",
    );
    pub2.exec(
        "INSERT INTO public.u SELECT g, 'b', g FROM generate_series(1001, 2000) g;
         INSERT INTO public.u VALUES (500, 'b', -500);
         INSERT INTO public.w VALUES (1, 'b'), (2, 'b');
         CREATE PUBLICATION p FOR TABLE public.u, public.w",
    );
    subscribe_copy(&pair, "s1", &["p"], "");
    wait_all_ready(&pair, "s1");
    assert_eq!(count(&mut pair.sub_client(), "public.u"), 1000);
    // `w` belongs to a plain role: the merge writes it as that role (its
    // trigger sees it as current_user), never as the subscription's
    // superuser.
    pair.sub_exec(
        "CREATE ROLE wowner; ALTER TABLE public.w OWNER TO wowner;
         CREATE TABLE public.w_who (who text); ALTER TABLE public.w_who OWNER TO wowner;
         CREATE FUNCTION public.w_who() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN INSERT INTO public.w_who VALUES (current_user); RETURN NEW; END $$;
         ALTER FUNCTION public.w_who() OWNER TO wowner;
         CREATE TRIGGER w_who BEFORE INSERT OR UPDATE ON public.w FOR EACH ROW EXECUTE FUNCTION public.w_who();
         ALTER TABLE public.w ENABLE ALWAYS TRIGGER w_who",
    );

    let conninfo2 = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pub2.port());
    let mut sub = pair.sub_client();
    let create = format!(
        "SELECT logical_ext.create_subscription(name => 's2', conninfo => $1::text, publications => ARRAY['p'], \
         copy_data => true, options => '{FAST_RETRY}')"
    );
    sub.execute(&create, &[&conninfo2]).expect("create s2");
    // Default rule: the overlap fails the copy, which copies nothing.
    let states = wait_tables(&pair, "s2", "u in error", |t| t.len() == 2 && table(t, "u").state == "error");
    let err = table(&states, "u").last_error.clone().unwrap_or_default();
    assert!(err.contains("insert_exists") && err.contains("id = 500") && err.contains("SQLSTATE 23505"), "{err}");
    assert!(err.contains("HINT") && err.contains("set_conflict_resolution"), "{err}");
    assert_eq!(count(&mut sub, "public.u"), 1000);

    // The subscriber keeps its row for the common key; the retry copies.
    // w: the copied row replaces the subscriber's.
    exec(
        &mut sub,
        "SELECT logical_ext.set_conflict_resolution('s2', 'keep_local', 'insert_exists', 'public.u');
         SELECT logical_ext.set_conflict_resolution('s2', 'apply_remote', 'insert_exists', 'public.w')",
    );
    wait_all_ready(&pair, "s2");
    let w: Vec<(i32, String)> = sub
        .query("SELECT id, src FROM public.w ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(w, vec![(1, "b".to_string()), (2, "b".to_string())], "apply_remote took the copied row");
    assert_eq!(count(&mut sub, "public.u"), 2000);
    let row: (String, Option<i32>) = {
        let r = sub.query_one("SELECT src, v FROM public.u WHERE id = 500", &[]).expect("row 500");
        (r.get(0), r.get(1))
    };
    assert_eq!(row, ("a".to_string(), Some(500)), "keep_local kept the subscriber's row");
    let logged = sub
        .query(
            "SELECT conflict_type, resolution, relation, remote_tuple->>'src', local_tuple->>'src', \
             remote_tuple->>'id' FROM logical_ext.conflict_log WHERE subscription = 's2' ORDER BY relation",
            &[],
        )
        .expect("conflict_log");
    let logged: Vec<(String, String, String, String, String, String)> =
        logged.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    assert_eq!(
        logged,
        vec![
            ("insert_exists".into(), "keep_local".into(), "public.u".into(), "b".into(), "a".into(), "500".into()),
            ("insert_exists".into(), "apply_remote".into(), "public.w".into(), "b".into(), "a".into(), "1".into()),
        ],
        "one logged conflict per common key"
    );
    assert_eq!(conflicts::conflict_counters(&pair.subscriber, "s2")[0], 2, "counted as insert_exists");

    // Both stream afterwards, into the same table.
    pair.pub_exec("INSERT INTO public.u VALUES (3001, 'a', 1)");
    pub2.exec("INSERT INTO public.u VALUES (3002, 'b', 2); UPDATE public.u SET v = 0 WHERE id = 1001");
    pair.wait_caught_up("s1");
    pair.wait_status("s2", "streaming", |s| s.state == "streaming");
    wait_until(CATCH_UP, "s2 streams pub2's changes", || {
        count(&mut pair.sub_client(), "public.u") == 2002
            && pair
                .sub_client()
                .query_one("SELECT v FROM public.u WHERE id = 1001", &[])
                .unwrap()
                .get::<_, Option<i32>>(0)
                == Some(0)
    });
    // Row-exact: the subscriber holds pub1's rows plus pub2's rows but 500.
    let expected = "SELECT id, src, v FROM public.u WHERE NOT (src = 'b' AND id = 500)";
    let mut all = Vec::new();
    for c in [&mut pair.pub_client(), &mut pub2.client()] {
        all.extend(
            c.query(expected, &[])
                .expect("publisher rows")
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1), r.get::<_, Option<i32>>(2))),
        );
    }
    all.sort();
    let got: Vec<(i32, String, Option<i32>)> = sub
        .query("SELECT id, src, v FROM public.u ORDER BY id", &[])
        .expect("subscriber rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, all);
    let st = pair.status("s2");
    assert!(st.state == "streaming", "{st:#?}");
    let who: Vec<String> = pair
        .sub_client()
        .query("SELECT DISTINCT who FROM public.w_who ORDER BY 1", &[])
        .expect("read w_who")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(who, vec!["wowner".to_string()], "the merge wrote w as its owner");
}
