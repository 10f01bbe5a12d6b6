//! Slot ownership and the timeline check on the subscriber (pure; issue 16,
//! docs/FAILOVER.md "Slot ownership" and "Subscriber failover").
//!
//! Design notes
//! - The apply worker names itself to the publisher's plugin with the
//!   `owner` option: this node's system identifier and timeline, the
//!   database and the subscription id. The plugin records the first owner
//!   of a slot and refuses any other (src/decoder/owner.rs) until the
//!   worker sends `takeover` — once, after `logical_ext.takeover_slot()` or
//!   `logical_ext.adopt_subscription()` set `subscription.slot_takeover`.
//! - The timeline check keeps a copy of a subscriber from even trying:
//!   `subscription.node_identity` records `<system identifier>/<timeline>`
//!   of the node the subscription runs on (set at its first start, and by
//!   `adopt_subscription()`). A worker that finds another identity here —
//!   a promoted physical standby, a PITR restore, a pg_upgrade'd node —
//!   does not connect: it waits, `subscription_status.state = 'blocked'`
//!   with the reason in `last_error`, one WARNING per block, until
//!   `adopt_subscription()` records this node (and asks for the takeover).
//!   Disabling and enabling does not unblock it: the operator must say that
//!   this node is now the subscriber, which is what adopt means.
//! - A base backup started without recovery stays on its source's timeline
//!   and looks like the original: the slot's no-silent-gap fence
//!   (`slot_fence.rs`) is what stops it if the original went on applying.

/// A subscriber node: system identifier and timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeIdentity {
    pub(crate) system_identifier: u64,
    pub(crate) timeline: u32,
}

impl NodeIdentity {
    /// `<sysid>/<tli>` as stored in `subscription.node_identity`.
    pub(crate) fn parse(s: &str) -> Option<NodeIdentity> {
        let (sysid, tli) = s.split_once('/')?;
        Some(NodeIdentity { system_identifier: sysid.parse().ok()?, timeline: tli.parse().ok()? })
    }

    /// The plugin's `owner` option value for subscription `subid` in
    /// database `dboid` on this node.
    pub(crate) fn owner(self, dboid: u32, subid: i32) -> String {
        format!("{}/{}/{dboid}/{subid}", self.system_identifier, self.timeline)
    }
}

impl std::fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.system_identifier, self.timeline)
    }
}

/// What the worker does with the recorded identity before connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeCheck {
    /// None recorded (a new subscription, or one of 0.3.0): record this
    /// node's, then start.
    Record,
    /// Recorded here: start.
    Same,
    /// Recorded on another node or timeline: wait for an adopt.
    Blocked { recorded: NodeIdentity },
}

/// Decide on `subscription.node_identity` (`None`: NULL; a malformed value
/// blocks, as an unknown node would) and this node's identity.
pub(crate) fn check(recorded: Option<&str>, here: NodeIdentity) -> NodeCheck {
    let Some(text) = recorded else { return NodeCheck::Record };
    match NodeIdentity::parse(text) {
        Some(r) if r == here => NodeCheck::Same,
        Some(r) => NodeCheck::Blocked { recorded: r },
        None => NodeCheck::Blocked { recorded: NodeIdentity { system_identifier: 0, timeline: 0 } },
    }
}

/// `last_error` of a blocked subscription (fits the 480 bytes of
/// `subscription_status`): why, and the way out.
pub(crate) fn blocked_message(subscription: &str, recorded: NodeIdentity, here: NodeIdentity) -> String {
    let why = if recorded.system_identifier == here.system_identifier {
        "the timeline changed (a promoted standby or a PITR restore of the subscriber)"
    } else {
        "the system identifier changed (a copy of another node, or pg_upgrade)"
    };
    format!(
        "not started: the subscription last ran on node {recorded}, this is {here}: {why}. If this node now replaces \
         the original (stopped for good), run SELECT logical_ext.adopt_subscription('{subscription}')"
    )
}

/// The DETAIL of the blocked WARNING.
pub(crate) fn blocked_detail() -> &'static str {
    "A promoted standby or a restored copy of a subscriber would compete with the original for the publisher's slot. \
     logical_ext.adopt_subscription() records this node as the subscription's and takes the slot over; while the \
     original still streams, or applied more than this node has, the publisher or the no-silent-gap fence refuses."
}

#[cfg(test)]
mod tests {
    use super::{NodeCheck, NodeIdentity, blocked_message, check};

    const HERE: NodeIdentity = NodeIdentity { system_identifier: 7300000000000000001, timeline: 2 };

    #[test]
    fn a_new_subscription_records_the_node() {
        assert_eq!(check(None, HERE), NodeCheck::Record);
        assert_eq!(check(Some("7300000000000000001/2"), HERE), NodeCheck::Same);
    }

    #[test]
    fn another_timeline_or_system_blocks() {
        let old = NodeIdentity { timeline: 1, ..HERE };
        assert_eq!(check(Some("7300000000000000001/1"), HERE), NodeCheck::Blocked { recorded: old });
        let other = NodeIdentity { system_identifier: 42, timeline: 2 };
        assert_eq!(check(Some("42/2"), HERE), NodeCheck::Blocked { recorded: other });
        assert!(matches!(check(Some("garbage"), HERE), NodeCheck::Blocked { .. }), "fails closed");
    }

    #[test]
    fn the_identity_round_trips_and_names_the_owner() {
        assert_eq!(NodeIdentity::parse(&HERE.to_string()), Some(HERE));
        assert_eq!(HERE.owner(5, 3), "7300000000000000001/2/5/3");
    }

    #[test]
    fn the_block_says_why_and_fits_last_error() {
        let name = "a".repeat(63);
        let max = NodeIdentity { system_identifier: u64::MAX, timeline: u32::MAX };
        let m = blocked_message(&name, max, max);
        assert!(m.len() <= 480, "{} bytes", m.len());
        let m = blocked_message("s", NodeIdentity { timeline: 1, ..HERE }, HERE);
        assert!(m.contains("timeline changed") && m.contains("adopt_subscription('s')"), "{m}");
        assert!(blocked_message("s", NodeIdentity { system_identifier: 1, timeline: 2 }, HERE).contains("system"));
    }
}
