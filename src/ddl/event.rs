//! A DDL event: what capture writes into WAL as a transactional logical
//! message with prefix [`PREFIX`], what the output plugin prints as a `"DDL"`
//! document (docs/FORMAT.md), and what the apply worker replays. Pure data.
//!
//! The message content is this struct as a JSON object. The output plugin
//! parses it back rather than copying bytes, so a document it prints is
//! always well formed whatever was emitted under the prefix.

use serde::{Deserialize, Serialize};

/// Prefix of the logical messages that carry DDL events.
pub(crate) const PREFIX: &str = "logical_ext.ddl";

/// Who produced the event.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    /// The `ddl_command_end` event trigger.
    EventTrigger,
    /// `logical_ext.replicate_ddl(command)`.
    ReplicateDdl,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::EventTrigger => "event_trigger",
            Source::ReplicateDdl => "replicate_ddl",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct DdlEvent {
    pub(crate) source: Source,
    pub(crate) command_tag: String,
    pub(crate) object_type: Option<String>,
    pub(crate) object_identity: Option<String>,
    pub(crate) schema: Option<String>,
    /// The session's `search_path` when the command ran.
    pub(crate) search_path: String,
    /// The role that ran it (`current_user` at the time).
    pub(crate) role: String,
    /// Publications covering what the command touched; empty for commands
    /// that concern every consumer (`replicate_ddl`, `ddl_capture = all`).
    pub(crate) publications: Vec<String>,
    /// Exactly the one statement that ran, as the user wrote it.
    pub(crate) command: String,
    /// The `logical_ext.ddl_log` row that vouches for this event on the
    /// publisher (`authentic.rs`). The output plugin prints a DDL document
    /// only once it found that row, so a document carrying it comes from a
    /// decoder that checked; subscribers refuse DDL documents without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) log_id: Option<i64>,
}

impl DdlEvent {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a DdlEvent always serializes")
    }

    /// Parse a message's content; `None` when it is not a DDL event.
    pub(crate) fn from_json(content: &[u8]) -> Option<DdlEvent> {
        serde_json::from_slice(content).ok()
    }

    /// Whether a consumer following `publications` (all changes when `None`)
    /// gets this event: events with no publication concern everyone.
    pub(crate) fn delivered_to(&self, publications: Option<&[String]>) -> bool {
        match publications {
            None => true,
            Some(names) => self.publications.is_empty() || self.publications.iter().any(|p| names.contains(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pubs: &[&str]) -> DdlEvent {
        DdlEvent {
            source: Source::EventTrigger,
            command_tag: "ALTER TABLE".into(),
            object_type: Some("table".into()),
            object_identity: Some("public.t".into()),
            schema: Some("public".into()),
            search_path: "\"$user\", public".into(),
            role: "alice".into(),
            publications: pubs.iter().map(|s| s.to_string()).collect(),
            command: "ALTER TABLE \"a;b\" ADD c int".into(),
            log_id: Some(7),
        }
    }

    #[test]
    fn round_trip() {
        let e = event(&["p"]);
        let json = e.to_json();
        assert!(json.contains("\"source\":\"event_trigger\""), "{json}");
        assert!(json.ends_with(",\"log_id\":7}"), "{json}");
        let unnumbered = DdlEvent { log_id: None, ..e.clone() };
        assert!(!unnumbered.to_json().contains("log_id"));
        assert_eq!(DdlEvent::from_json(json.as_bytes()), Some(e));
        assert_eq!(DdlEvent::from_json(b"not json"), None);
        assert_eq!(DdlEvent::from_json(br#"{"command":"x"}"#), None);
    }

    #[test]
    fn delivery_follows_publications() {
        let e = event(&["p1", "p2"]);
        assert!(e.delivered_to(None));
        assert!(e.delivered_to(Some(&["p2".to_string()])));
        assert!(!e.delivered_to(Some(&["p3".to_string()])));
        assert!(event(&[]).delivered_to(Some(&["p3".to_string()])));
    }
}
