//! The capture's logical message (prefix [`PREFIX`]) and the `SEQ`
//! document the plugin makes of it (docs/FORMAT.md, "SEQ documents").
//!
//! The message's content is JSON written by the capture worker's SQL
//! (`capture.rs`): `{"sequences": [entry, ...]}`, one entry per sequence
//! that moved. The plugin prints one `SEQ` document per entry delivered to
//! the consumer; the apply worker reads those documents.

use serde::Deserialize;

/// Prefix of the capture's messages.
pub(crate) const PREFIX: &str = "logical_ext.sequence";

/// The content of one message.
#[derive(Debug, Deserialize)]
pub(crate) struct Captured {
    pub(crate) sequences: Vec<Entry>,
}

/// One sequence's state as captured.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The sequence's OID on the publisher (the `replicated_sequence` key).
    pub(crate) id: i64,
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) last_value: i64,
    pub(crate) is_called: bool,
    pub(crate) increment: i64,
    /// The publications whose tables it feeds.
    pub(crate) publications: Vec<String>,
    /// Added with `replicate_sequence()`: for every consumer.
    pub(crate) explicit: bool,
}

impl Captured {
    pub(crate) fn from_json(content: &[u8]) -> Option<Captured> {
        serde_json::from_slice(content).ok()
    }
}

impl Entry {
    /// Whether a consumer following `publications` (all changes when
    /// `None`) gets this sequence.
    pub(crate) fn delivered_to(&self, publications: Option<&[String]>) -> bool {
        match publications {
            None => true,
            Some(names) => self.explicit || self.publications.iter().any(|p| names.contains(p)),
        }
    }
}

/// A `SEQ` document as the apply worker reads it.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
pub(crate) struct SeqDoc {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) last_value: i64,
    pub(crate) is_called: bool,
    pub(crate) increment: i64,
}

impl SeqDoc {
    pub(crate) fn from_json(doc: &[u8]) -> Option<SeqDoc> {
        serde_json::from_slice(doc).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{Captured, SeqDoc};

    #[test]
    fn a_message_reads_and_filters() {
        let m = br#"{"sequences":[{"id":16390,"schema":"public","name":"t_id_seq","last_value":42,"is_called":true,"increment":1,"publications":["p"],"explicit":false},{"id":16400,"schema":"s","name":"x","last_value":-5,"is_called":false,"increment":-1,"publications":[],"explicit":true}]}"#;
        let c = Captured::from_json(m).unwrap();
        assert_eq!(c.sequences.len(), 2);
        let p = vec!["p".to_string()];
        let q = vec!["q".to_string()];
        assert!(c.sequences[0].delivered_to(None));
        assert!(c.sequences[0].delivered_to(Some(&p)));
        assert!(!c.sequences[0].delivered_to(Some(&q)), "fed tables of another publication");
        assert!(c.sequences[1].delivered_to(Some(&q)), "explicit: for everyone");
        assert!(Captured::from_json(b"{\"sequences\":[{\"id\":1}]}").is_none());
    }

    #[test]
    fn a_seq_document_reads() {
        let d = br#"{"action":"SEQ","xid":7,"lsn":"0/10","schema":"public","name":"t_id_seq","last_value":42,"is_called":true,"increment":1}"#;
        let s = SeqDoc::from_json(d).unwrap();
        assert_eq!(
            (s.schema.as_str(), s.name.as_str(), s.last_value, s.is_called, s.increment),
            ("public", "t_id_seq", 42, true, 1)
        );
    }
}
