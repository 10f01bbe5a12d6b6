//! The reconcile document: what a publisher-side call (`publisher.rs`)
//! writes as a transactional logical message with prefix
//! `logical_ext.reconcile`, what the output plugin prints as a `"V"` document
//! when the message is authentic (`authentic.rs`), and what the apply worker
//! acts on in commit order (`apply.rs`). docs/FORMAT.md, "Reconcile".

use super::digest::Coding;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Prefix of the logical messages carrying reconcile documents.
pub(crate) const PREFIX: &str = "logical_ext.reconcile";

/// What the subscriber is asked to do at this point of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    /// Compare the digest (and, with `hashes`, each key) of a key range.
    Verify,
    /// Bring the listed keys to the publisher's versions in `repairs`.
    Repair,
}

/// A key range `(lower, upper]` of the key columns' values as text; `None`
/// is unbounded. A table without a key is one range with no key columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Range {
    pub(crate) lower: Option<Vec<String>>,
    pub(crate) upper: Option<Vec<String>>,
}

/// One key's publisher version: `row` holds the replicated columns' texts in
/// `columns` order, `None` when the publisher has no such (published) row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RepairRow {
    pub(crate) key: Vec<String>,
    pub(crate) row: Option<Vec<Option<String>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReconcileDoc {
    pub(crate) op: Op,
    /// The subscription (its name on the subscriber) that asked, and that
    /// subscriber's node (`<system identifier>/<database OID>`): another
    /// node with a subscription of the same name ignores the document.
    pub(crate) subscription: String,
    #[serde(default)]
    pub(crate) node: String,
    /// The subscriber's nonce of the request this document answers
    /// (`requests.rs`): 32 hex digits, passed through by the publisher.
    #[serde(default)]
    pub(crate) nonce: String,
    /// The run (subscriber's `verify_run_seq`) and chunk number.
    pub(crate) run: i64,
    pub(crate) chunk: i32,
    /// Whether this is a per-key re-check of a mismatching chunk.
    #[serde(default)]
    pub(crate) per_key: bool,
    /// The subscriber's relation (its OID there, passed through; the worker
    /// acts on its request's relation, never on this one alone).
    pub(crate) relation: u32,
    /// The publisher's table that was read (as resolved there).
    #[serde(default)]
    pub(crate) schema: String,
    #[serde(default)]
    pub(crate) table: String,
    /// The publications whose row filters and column lists were applied.
    #[serde(default)]
    pub(crate) publications: Vec<String>,
    /// Compared columns (in this order) and key columns, by name.
    pub(crate) columns: Vec<String>,
    pub(crate) keys: Vec<String>,
    /// Per compared column: how it was hashed, and its type on the
    /// publisher (`format_type`; a binary column must have the same here).
    #[serde(default)]
    pub(crate) codings: Vec<Coding>,
    #[serde(default)]
    pub(crate) types: Vec<String>,
    #[serde(default)]
    pub(crate) range: Range,
    /// Verify: the publisher's row count and hash sum (32 hex digits).
    #[serde(default)]
    pub(crate) rows: u64,
    #[serde(default)]
    pub(crate) digest: String,
    /// Verify with `per_key`: each key's row hash.
    #[serde(default)]
    pub(crate) hashes: Vec<(Vec<String>, String)>,
    /// Repair: the publisher's version of each key.
    #[serde(default)]
    pub(crate) repairs: Vec<RepairRow>,
    /// Verify: microseconds the publisher spent reading and hashing.
    #[serde(default)]
    pub(crate) elapsed_us: u64,
    /// The `logical_ext.reconcile_log` row vouching for this message.
    pub(crate) log_id: Option<i64>,
}

/// What a request binds besides its table, run and chunks: the
/// publications, compared columns, key and codings, as a 128-bit digest.
/// The subscriber records it when it opens the request and acts only on
/// documents of the same shape (`requests.rs`). Pure; unit-tested.
pub(crate) fn shape(publications: &[String], columns: &[String], keys: &[String], codings: &[Coding]) -> [u8; 16] {
    let text = serde_json::to_string(&(publications, columns, keys, codings)).expect("strings serialize");
    Sha256::digest(text.as_bytes())[..16].try_into().expect("32-byte digest")
}

impl ReconcileDoc {
    /// This document's [`shape`].
    pub(crate) fn shape(&self) -> [u8; 16] {
        shape(&self.publications, &self.columns, &self.keys, &self.codings)
    }
}

impl ReconcileDoc {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a reconcile document serializes")
    }

    /// Parse a message's content.
    pub(crate) fn from_json(s: &[u8]) -> Option<ReconcileDoc> {
        serde_json::from_slice(s).ok()
    }

    /// Parse a `"V"` document: the content under `reconcile` (the other
    /// fields, `action`, `lsn` and the transaction's, are ignored).
    pub(crate) fn from_v_document(s: &[u8]) -> Option<ReconcileDoc> {
        #[derive(Deserialize)]
        struct V {
            reconcile: ReconcileDoc,
        }
        serde_json::from_slice::<V>(s).ok().map(|v| v.reconcile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_v_document() {
        let d = ReconcileDoc {
            op: Op::Verify,
            subscription: "s".into(),
            node: "7/5".into(),
            nonce: "ab".repeat(16),
            run: 3,
            chunk: 2,
            per_key: true,
            relation: 16384,
            schema: "public".into(),
            table: "t".into(),
            publications: vec!["p".into()],
            columns: vec!["id".into(), "v".into()],
            keys: vec!["id".into()],
            codings: vec![Coding::Binary, Coding::Text],
            types: vec!["integer".into(), "numeric".into()],
            range: Range { lower: Some(vec!["10".into()]), upper: None },
            rows: 2,
            digest: "00".repeat(16),
            hashes: vec![(vec!["11".into()], "ab".into())],
            repairs: vec![],
            elapsed_us: 12,
            log_id: Some(7),
        };
        let j = d.to_json();
        assert_eq!(ReconcileDoc::from_json(j.as_bytes()), Some(d.clone()));
        // As the plugin prints it: action and lsn in front.
        let v = format!("{{\"action\":\"V\",\"lsn\":\"0/1\",\"reconcile\":{j}}}");
        assert_eq!(ReconcileDoc::from_v_document(v.as_bytes()), Some(d));
        assert_eq!(ReconcileDoc::from_json(b"{\"op\":\"drop\"}"), None);
    }

    #[test]
    fn the_shape_binds_publications_columns_keys_and_codings() {
        let s = |p: &[&str], c: &[&str], k: &[&str], x: &[Coding]| {
            let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            shape(&v(p), &v(c), &v(k), x)
        };
        let base = s(&["p"], &["id", "v"], &["id"], &[Coding::Binary, Coding::Text]);
        assert_eq!(base, s(&["p"], &["id", "v"], &["id"], &[Coding::Binary, Coding::Text]));
        assert_ne!(base, s(&["p", "q"], &["id", "v"], &["id"], &[Coding::Binary, Coding::Text]));
        assert_ne!(base, s(&["p"], &["id"], &["id"], &[Coding::Binary]));
        assert_ne!(base, s(&["p"], &["id", "v"], &["v"], &[Coding::Binary, Coding::Text]));
        assert_ne!(base, s(&["p"], &["id", "v"], &["id"], &[Coding::Text, Coding::Text]));
        // No ambiguity from joining names.
        assert_ne!(s(&["a,b"], &["id"], &["id"], &[]), s(&["a", "b"], &["id"], &["id"], &[]));
    }
}
