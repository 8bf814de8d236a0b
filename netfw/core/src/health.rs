//! Real servers' health: the rise/fall state machine each checked server runs, fed with probe
//! results and the clock by the caller (the probes themselves live in the runtime).
//!
//! A server starts up and is probed at once; its first failure takes it down (a server that was
//! never seen working gets no benefit of the doubt), after that `fall` consecutive failures
//! take it down and `rise` consecutive successes bring it back, so a server that flaps faster
//! than that keeps its state.

use core::fmt;

use crate::time::Millis;

/// Probe replies go to DIP ports in this range (the runtime's probes use them as their local
/// ports); the forwarder hands such frames to the control path even when they come from a VIP.
pub const PROBE_PORTS: core::ops::Range<u16> = 61000..65000;

/// A server's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Health {
    /// Gets new flows.
    Up,
    /// Gets no new flows; its flows move to another server on their next packet.
    Down,
}

impl Health {
    /// "up" or "down".
    pub const fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Why a probe failed, in words an operator reads in the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Failure {
    /// TCP: the server answered the SYN with a reset (nothing listens on the port, on the
    /// address probed).
    Refused,
    /// Nothing came back within the timeout (ms).
    NoAnswer(u32),
    /// The connection was opened, then reset or closed before the check completed.
    Closed,
    /// HTTP: the status was outside the expected range.
    HttpStatus(u16),
    /// HTTP: the answer was not an HTTP response.
    NotHttp,
    /// UDP: a reply came, but not the expected one.
    WrongReply,
    /// UDP, through the DR path: the reply came from the server's own address, not the VIP
    /// (clients drop such replies: the service must answer from the address asked).
    ReplyFromRip,
    /// The server's MAC is not known (ARP from the DIP unanswered): no probe could be sent.
    NoMac,
    /// HTTPS: the TLS handshake failed (the server does not speak TLS on the port, or
    /// offers nothing this client accepts).
    Tls,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("connection refused"),
            Failure::NoAnswer(ms) => write!(f, "no answer within {ms} ms"),
            Failure::Closed => f.write_str("connection closed before the check completed"),
            Failure::HttpStatus(s) => write!(f, "HTTP {s}"),
            Failure::NotHttp => f.write_str("the answer is not HTTP"),
            Failure::WrongReply => f.write_str("the UDP reply is not the expected one"),
            Failure::ReplyFromRip => {
                f.write_str("the UDP reply came from its own address, not the VIP: clients drop it (bind the service to the VIP)")
            }
            Failure::NoMac => f.write_str("its MAC is unknown (no answer to ARP from the DIP)"),
            Failure::Tls => f.write_str("the TLS handshake failed"),
        }
    }
}

/// A probe's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// It failed, and why.
    Fail(Failure),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("check passed"),
            Outcome::Fail(why) => why.fmt(f),
        }
    }
}

/// A change of state, and the probe result that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: Health,
    /// After.
    pub to: Health,
    /// The result that decided it.
    pub reason: Outcome,
}

/// One checked server's state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckState {
    /// Its state.
    pub health: Health,
    /// When it entered that state.
    pub since: Millis,
    /// The last probe's result (`None` before the first).
    pub last: Option<Outcome>,
    /// Results in a row that argue for the other state.
    run: u8,
    /// When the next probe is due.
    next_due: Millis,
}

impl CheckState {
    /// A server just configured: up, probed at once.
    pub fn new(now: Millis) -> Self {
        CheckState { health: Health::Up, since: now, last: None, run: 0, next_due: now }
    }

    /// Is a probe due?
    pub fn due(&self, now: Millis) -> bool {
        self.next_due <= now
    }

    /// A probe starts now; the next one is due `interval_ms` later.
    pub fn started(&mut self, now: Millis, interval_ms: u32) {
        self.next_due = now.plus(u64::from(interval_ms));
    }

    /// Probe now rather than at the next interval (a passive sign of trouble).
    pub fn expedite(&mut self, now: Millis) {
        self.next_due = self.next_due.min(now);
    }

    /// Record a result; the transition it makes, if any.
    pub fn record(&mut self, outcome: Outcome, rise: u8, fall: u8, now: Millis) -> Option<Transition> {
        let first = self.last.is_none();
        self.last = Some(outcome);
        let against = match (self.health, outcome) {
            (Health::Up, Outcome::Fail(_)) | (Health::Down, Outcome::Pass) => true,
            (Health::Up, Outcome::Pass) | (Health::Down, Outcome::Fail(_)) => false,
        };
        if !against {
            self.run = 0;
            return None;
        }
        self.run = self.run.saturating_add(1);
        let needed = match self.health {
            Health::Up if first => 1,
            Health::Up => fall,
            Health::Down => rise,
        };
        if self.run < needed.max(1) {
            return None;
        }
        let from = self.health;
        self.health = if from == Health::Up { Health::Down } else { Health::Up };
        self.since = now;
        self.run = 0;
        Some(Transition { from, to: self.health, reason: outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Outcome = Outcome::Fail(Failure::Refused);

    #[test]
    fn fall_failures_take_it_down_and_rise_successes_bring_it_back() {
        let mut s = CheckState::new(Millis(0));
        assert!(s.due(Millis(0)));
        assert_eq!(s.record(Outcome::Pass, 2, 3, Millis(0)), None);
        assert_eq!(s.record(FAIL, 2, 3, Millis(500)), None);
        assert_eq!(s.record(FAIL, 2, 3, Millis(1000)), None);
        let t = s.record(FAIL, 2, 3, Millis(1500)).unwrap();
        assert_eq!((t.from, t.to, t.reason), (Health::Up, Health::Down, FAIL));
        assert_eq!((s.health, s.since), (Health::Down, Millis(1500)));
        assert_eq!(s.record(Outcome::Pass, 2, 3, Millis(2000)), None);
        let t = s.record(Outcome::Pass, 2, 3, Millis(2500)).unwrap();
        assert_eq!((t.from, t.to), (Health::Down, Health::Up));
        assert_eq!(format!("{}", Outcome::Fail(Failure::NoAnswer(500))), "no answer within 500 ms");
    }

    #[test]
    fn a_server_never_seen_working_goes_down_at_its_first_failure() {
        let mut s = CheckState::new(Millis(0));
        assert_eq!(s.record(Outcome::Fail(Failure::NoMac), 2, 2, Millis(0)).map(|t| t.to), Some(Health::Down));
    }

    #[test]
    fn a_server_flapping_faster_than_rise_and_fall_keeps_its_state() {
        let mut s = CheckState::new(Millis(0));
        s.record(Outcome::Pass, 2, 2, Millis(0));
        for i in 1..100 {
            let o = if i % 2 == 0 { Outcome::Pass } else { FAIL };
            assert_eq!(s.record(o, 2, 2, Millis(i * 500)), None, "probe {i}");
        }
        assert_eq!(s.health, Health::Up);
    }

    #[test]
    fn probes_are_due_every_interval_and_a_passive_sign_brings_the_next_forward() {
        let mut s = CheckState::new(Millis(0));
        s.started(Millis(0), 500);
        assert!(!s.due(Millis(499)) && s.due(Millis(500)));
        s.expedite(Millis(100));
        assert!(s.due(Millis(100)));
    }
}
