//! Differential test of `publication_names` against pgoutput: random
//! schemas, publications and workloads from a seed (pg_test/src/generator.rs),
//! one pgoutput slot and one logical_ext slot, compared per transaction after
//! the one table of documented differences.
//!
//! CI runs a fixed seed range; `DIFF_SEEDS=1000-1999` (or `DIFF_SEEDS=42`)
//! runs others (pg_test/README.md).

use logical_ext_pg_test::generator::generate;
use logical_ext_pg_test::*;

/// The seeds CI runs.
const CI_SEEDS: std::ops::RangeInclusive<u64> = 1..=100;

fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("DIFF_SEEDS") else { return CI_SEEDS.collect() };
    let parse = |s: &str| s.trim().parse::<u64>().unwrap_or_else(|_| panic!("DIFF_SEEDS: {s:?} is not a number"));
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (parse(a)..=parse(b)).collect::<Vec<_>>(),
            None => vec![parse(part)],
        })
        .collect()
}

#[test]
fn pgoutput_differential() {
    let cluster = Cluster::start("differential", &[]);
    let mut failures = Vec::new();
    let seeds = seeds();
    let (mut compared, mut refused) = (0, 0);
    for &seed in &seeds {
        let case = generate(seed);
        let out = case.run(&cluster, &format!("diff_{seed}"));
        compared += out.compared_changes();
        refused += usize::from(out.pgoutput.is_err());
        if std::env::var("DIFF_VERBOSE").is_ok_and(|v| v == "script") {
            eprintln!("--- seed {seed}, publication_names {}:\n{}", case.publications, out.script);
        }
        if std::env::var_os("DIFF_VERBOSE").is_some() {
            let err = out.pgoutput.as_ref().err().map(|e| e.lines().next().unwrap_or("").to_string());
            eprintln!(
                "seed {seed}: {} changes{}",
                out.compared_changes(),
                err.map(|e| format!(", refused: {e}")).unwrap_or_default()
            );
        }
        if let Some(m) = out.mismatch() {
            eprintln!("seed {seed}: MISMATCH\n{m}\n--- script (seed {seed}):\n{}", out.script);
            let small = case.minimise(&cluster, &format!("diff_{seed}_min"), 80);
            let out = small.run(&cluster, &format!("diff_{seed}_min"));
            eprintln!(
                "--- minimised script (seed {seed}), publication_names {}:\n{}\n{}",
                small.publications,
                out.script,
                out.mismatch().unwrap_or_default()
            );
            failures.push(seed);
        }
    }
    eprintln!("{} seeds: {compared} changes compared, {refused} reads refused by both", seeds.len());
    // A generator that produced (almost) nothing would compare nothing.
    assert!(compared >= seeds.len() * 5, "too few changes compared: {compared}");
    assert!(
        failures.is_empty(),
        "{} of {} seeds differ from pgoutput: {:?} (rerun with DIFF_SEEDS=<seed>; the scripts are printed above)",
        failures.len(),
        seeds.len(),
        failures
    );
}
