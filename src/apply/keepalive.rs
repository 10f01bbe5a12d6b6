//! Receive timeout and pings of the replication connection (pure), as
//! PostgreSQL's walreceiver and apply worker do them.
//!
//! Design notes
//! - A connection can stay open while nothing arrives (a network freeze, a
//!   stuck proxy, a publisher host that vanished): the socket never becomes
//!   readable and no error is raised. With `wal_receiver_timeout` > 0 the
//!   worker asks the publisher for a reply (a status update with
//!   `replyRequested`) once half the timeout passed without a message, and
//!   gives the connection up (an ERROR: the session is retried, which
//!   reconnects) once the whole timeout passed. Any message received resets
//!   both. `wal_receiver_timeout = 0` disables this, as it does natively.
//! - Times are PostgreSQL timestamps (microseconds); the caller reads the
//!   clock and the setting, so this stays testable.
//! - The clock is not read per message (a visible share of the worker when
//!   messages are small): a message only marks the timer (`arrived`), and
//!   the receipt is stamped with the time of the next `check` or
//!   `next_check_ms` — which the stream loop calls only once the socket
//!   has nothing more to read. A silence therefore counts from the moment
//!   the last burst was read through rather than from its last message:
//!   later by at most the time spent applying that burst and what the loop
//!   does before looking at the timer (a group's commit, housekeeping;
//!   long local work restamps the timer anyway, `Session::idle`), never
//!   earlier.

/// What the stream loop must do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Nothing,
    /// Send a status update asking the publisher to reply.
    Ping,
    /// Nothing arrived for the whole timeout: drop the connection.
    Timeout,
}

#[derive(Debug)]
pub(crate) struct ReceiveTimer {
    last_receipt: i64,
    ping_sent: bool,
    /// A message arrived since the last stamp (see the module notes).
    unstamped: bool,
}

impl ReceiveTimer {
    pub(crate) fn new(now: i64) -> ReceiveTimer {
        ReceiveTimer { last_receipt: now, ping_sent: false, unstamped: false }
    }

    /// A message arrived at `now`.
    pub(crate) fn received(&mut self, now: i64) {
        self.last_receipt = now;
        self.ping_sent = false;
        self.unstamped = false;
    }

    /// A message arrived; the time is taken at the next check.
    pub(crate) fn arrived(&mut self) {
        self.unstamped = true;
    }

    fn stamp(&mut self, now: i64) {
        if self.unstamped {
            self.received(now);
        }
    }

    /// Nothing is buffered at `now`; `timeout_ms` is `wal_receiver_timeout`.
    pub(crate) fn check(&mut self, now: i64, timeout_ms: i32) -> Due {
        self.stamp(now);
        if timeout_ms <= 0 {
            return Due::Nothing;
        }
        let timeout_us = i64::from(timeout_ms) * 1000;
        let silent = now.saturating_sub(self.last_receipt);
        if silent >= timeout_us {
            Due::Timeout
        } else if !self.ping_sent && silent >= timeout_us / 2 {
            self.ping_sent = true;
            Due::Ping
        } else {
            Due::Nothing
        }
    }

    /// How long the loop may sleep at most before the next check is due
    /// (milliseconds), given `timeout_ms`.
    pub(crate) fn next_check_ms(&mut self, now: i64, timeout_ms: i32) -> Option<i64> {
        self.stamp(now);
        if timeout_ms <= 0 {
            return None;
        }
        let timeout_us = i64::from(timeout_ms) * 1000;
        let next = if self.ping_sent { timeout_us } else { timeout_us / 2 };
        Some(((self.last_receipt + next - now) / 1000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::{Due, ReceiveTimer};

    const MS: i64 = 1000;

    #[test]
    fn pings_at_half_then_times_out() {
        let mut t = ReceiveTimer::new(0);
        assert_eq!(t.check(100 * MS, 1000), Due::Nothing);
        assert_eq!(t.next_check_ms(100 * MS, 1000), Some(400));
        assert_eq!(t.check(500 * MS, 1000), Due::Ping);
        assert_eq!(t.check(600 * MS, 1000), Due::Nothing, "one ping per silence");
        assert_eq!(t.next_check_ms(600 * MS, 1000), Some(400));
        assert_eq!(t.check(1000 * MS, 1000), Due::Timeout);
    }

    #[test]
    fn receipt_resets() {
        let mut t = ReceiveTimer::new(0);
        assert_eq!(t.check(700 * MS, 1000), Due::Ping);
        t.received(900 * MS);
        assert_eq!(t.check(1300 * MS, 1000), Due::Nothing);
        assert_eq!(t.check(1400 * MS, 1000), Due::Ping);
        assert_eq!(t.check(1900 * MS, 1000), Due::Timeout);
    }

    #[test]
    fn arrival_is_stamped_at_the_next_check() {
        let mut t = ReceiveTimer::new(0);
        assert_eq!(t.check(600 * MS, 1000), Due::Ping);
        t.arrived();
        // Stamped at 800 ms (the next look at the clock), not at 0.
        assert_eq!(t.next_check_ms(800 * MS, 1000), Some(500));
        assert_eq!(t.check(1200 * MS, 1000), Due::Nothing, "the ping was reset");
        assert_eq!(t.check(1300 * MS, 1000), Due::Ping);
        t.arrived();
        assert_eq!(t.check(1400 * MS, 1000), Due::Nothing);
        assert_eq!(t.check(1800 * MS, 1000), Due::Nothing, "from 1400 ms");
        assert_eq!(t.check(2399 * MS, 1000), Due::Ping);
        assert_eq!(t.check(2400 * MS, 1000), Due::Timeout);
        // Stamped once: a later check does not move it.
        let mut t = ReceiveTimer::new(0);
        t.arrived();
        assert_eq!(t.check(100 * MS, 1000), Due::Nothing);
        assert_eq!(t.check(1100 * MS, 1000), Due::Timeout);
        // With the timeout disabled, still stamped (the setting may change).
        let mut t = ReceiveTimer::new(0);
        t.arrived();
        assert_eq!(t.check(900 * MS, 0), Due::Nothing);
        assert_eq!(t.check(1400 * MS, 1000), Due::Ping);
    }

    #[test]
    fn zero_disables() {
        let mut t = ReceiveTimer::new(0);
        assert_eq!(t.check(i64::MAX / 2, 0), Due::Nothing);
        assert_eq!(t.next_check_ms(5, 0), None);
    }
}
