//! Chunk digests (pure, unit-tested).
//!
//! A row's hash is the first 128 bits of SHA-256 over the canonical bytes of
//! its compared columns (`ffi::rowscan`: per column a NULL flag, a length
//! and the value — its binary form for the built-in types both nodes store
//! alike, else its output text; see [`Coding`]). SHA-256 runs in hardware
//! here (SHA-NI), is already a dependency, and is strong: no one can craft
//! rows whose hashes cancel.
//!
//! A chunk's digest combines its rows' hashes **order-independently**, since
//! the two nodes read the rows in whatever order their plans give:
//! `(count, sum of the hashes modulo 2^128)`. Unlike XOR, a sum does not
//! cancel duplicates (two equal rows add `2h`, and the count differs too),
//! and a difference in one row changes the sum unless another row's hash
//! changes by exactly the opposite amount — a 2^-128 chance for unrelated
//! rows, and not constructible without breaking SHA-256.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

/// How a compared column's values are hashed; both nodes use the same
/// coding per column (chosen by the subscriber, carried in the request and
/// the documents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Coding {
    /// The value's stored bytes (canonical form): fast, and only for
    /// built-in types whose stored form is their value, with the same type
    /// (and modifier) on both nodes.
    Binary,
    /// The type's output text (any type; what replication itself sends).
    Text,
}

impl Coding {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Coding::Binary => "binary",
            Coding::Text => "text",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Coding> {
        match s {
            "binary" => Some(Coding::Binary),
            "text" => Some(Coding::Text),
            _ => None,
        }
    }
}

/// A compared column's type on one node: OID and `format_type` (with its
/// modifier).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnType {
    pub(crate) oid: u32,
    pub(crate) name: String,
}

/// The coding of a column typed `here` on the subscriber and `there` on the
/// publisher: binary when both are the same type with the same modifier and
/// the type's stored form is canonical (`binary_ok`), else text. Pure;
/// unit-tested.
pub(crate) fn choose_coding(here: &ColumnType, there: &ColumnType, binary_ok: impl Fn(u32) -> bool) -> Coding {
    if here == there && binary_ok(here.oid) { Coding::Binary } else { Coding::Text }
}

/// The hash of one row's canonical text.
pub(crate) fn row_hash(text: &[u8]) -> u128 {
    let d = Sha256::digest(text);
    u128::from_be_bytes(d[..16].try_into().expect("32-byte digest"))
}

/// Order-independent digest of a set (with repetitions) of rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Digest {
    pub(crate) rows: u64,
    pub(crate) sum: u128,
}

impl Digest {
    pub(crate) fn add(&mut self, hash: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    /// The digest as the documents carry it: 32 hexadecimal digits.
    pub(crate) fn sum_hex(&self) -> String {
        format!("{:032x}", self.sum)
    }

    pub(crate) fn parse_hex(s: &str) -> Option<u128> {
        (s.len() == 32).then(|| u128::from_str_radix(s, 16).ok()).flatten()
    }
}

/// How a key differs between the publisher and the subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Difference {
    /// On the publisher, not on the subscriber.
    Missing,
    /// On the subscriber, not on the publisher.
    Extra,
    /// On both, with different replicated values.
    Different,
}

impl Difference {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Difference::Missing => "missing",
            Difference::Extra => "extra",
            Difference::Different => "different",
        }
    }
}

/// The differing keys of one range, given each side's hash per key, sorted
/// by kind then key (a stable order for the results table and tests).
pub(crate) fn compare_keys(
    publisher: &HashMap<Vec<String>, u128>,
    subscriber: &HashMap<Vec<String>, u128>,
) -> Vec<(Vec<String>, Difference)> {
    let mut out = Vec::new();
    for (key, h) in publisher {
        match subscriber.get(key) {
            None => out.push((key.clone(), Difference::Missing)),
            Some(s) if s != h => out.push((key.clone(), Difference::Different)),
            Some(_) => {}
        }
    }
    for key in subscriber.keys() {
        if !publisher.contains_key(key) {
            out.push((key.clone(), Difference::Extra));
        }
    }
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of rows given as strings (stand-ins for canonical bytes).
    fn digest_of(rows: &[&str]) -> Digest {
        let mut d = Digest::default();
        for r in rows {
            d.add(row_hash(r.as_bytes()));
        }
        d
    }

    #[test]
    fn order_does_not_matter() {
        assert_eq!(digest_of(&["(1,a)", "(2,b)", "(3,c)"]), digest_of(&["(3,c)", "(1,a)", "(2,b)"]));
    }

    #[test]
    fn duplicates_do_not_cancel() {
        // XOR would make these two equal to the empty set and to each other.
        let empty = digest_of(&[]);
        let twice = digest_of(&["(1,a)", "(1,a)"]);
        assert_ne!(twice, empty);
        assert_ne!(twice.sum, 0);
        let four = digest_of(&["(1,a)", "(1,a)", "(2,b)", "(2,b)"]);
        let xor = [row_hash(b"(1,a)"), row_hash(b"(1,a)"), row_hash(b"(2,b)"), row_hash(b"(2,b)")]
            .iter()
            .fold(0u128, |a, h| a ^ h);
        assert_eq!(xor, 0, "the XOR combination cancels duplicates");
        assert_ne!(four.sum, 0);
        // Same count, one row swapped for a duplicate of another: differs.
        assert_ne!(digest_of(&["(1,a)", "(2,b)"]), digest_of(&["(1,a)", "(1,a)"]));
    }

    #[test]
    fn one_changed_value_changes_the_digest() {
        assert_ne!(digest_of(&["(1,a)", "(2,b)"]), digest_of(&["(1,a)", "(2,c)"]));
        // NULL and the empty string have different canonical bytes
        // (ffi::rowscan: a NULL is one 0 byte; a value is 1, its length, its
        // bytes).
        assert_ne!(row_hash(&[0]), row_hash(&[1, 0, 0, 0, 0]));
    }

    #[test]
    fn binary_only_for_the_same_supported_type() {
        let t = |oid: u32, name: &str| ColumnType { oid, name: name.into() };
        let ok = |oid: u32| oid != 1700;
        assert_eq!(choose_coding(&t(23, "integer"), &t(23, "integer"), ok), Coding::Binary);
        // int4 here, int8 there: the texts agree, the bytes would not.
        assert_eq!(choose_coding(&t(23, "integer"), &t(20, "bigint"), ok), Coding::Text);
        // Same type, other modifier: char(4) and char(8) pad differently.
        assert_eq!(choose_coding(&t(1042, "character(4)"), &t(1042, "character(8)"), ok), Coding::Text);
        // A type whose stored form is not canonical.
        assert_eq!(choose_coding(&t(1700, "numeric"), &t(1700, "numeric"), ok), Coding::Text);
        assert_eq!(Coding::parse(Coding::Binary.as_str()), Some(Coding::Binary));
        assert_eq!(Coding::parse("raw"), None);
    }

    #[test]
    fn hex_round_trip() {
        let d = digest_of(&["(1,a)"]);
        assert_eq!(Digest::parse_hex(&d.sum_hex()), Some(d.sum));
        assert_eq!(Digest::parse_hex("xyz"), None);
    }

    #[test]
    fn keys_compare_by_kind() {
        let k = |s: &str| vec![s.to_string()];
        let publisher: HashMap<_, _> = [(k("1"), 10u128), (k("2"), 20), (k("3"), 30)].into();
        let subscriber: HashMap<_, _> = [(k("1"), 10u128), (k("3"), 31), (k("4"), 40)].into();
        let diffs = compare_keys(&publisher, &subscriber);
        assert_eq!(
            diffs,
            vec![(k("2"), Difference::Missing), (k("4"), Difference::Extra), (k("3"), Difference::Different)]
        );
        assert!(compare_keys(&publisher, &publisher).is_empty());
    }
}
