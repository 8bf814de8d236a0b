//! The box's event log as data: one entry per thing an operator would want to know happened
//! (a config applied or refused, a mode switch, a real server going down or up, an HA
//! transition, a VIP conflict, a child restarted, a login or a failed one, an update). The
//! init keeps them; the console, the page, syslog and metrics read the same entries.

use serde::{Deserialize, Serialize};

use crate::status::utc;

/// What an event is about (the page's filter; syslog's MSGID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The box itself: boot, reboot, power off.
    Box,
    /// A config applied, refused, confirmed or rolled back.
    Config,
    /// The forwarding mode changed (or fell back).
    Mode,
    /// A real server went down or came back.
    Health,
    /// The HA pair: a transition, a split brain.
    Ha,
    /// Another host claimed a VIP.
    Conflict,
    /// A supervised process ended and is restarted.
    Restart,
    /// A login, a failed login, a password change.
    Login,
    /// A software update.
    Update,
}

impl EventKind {
    /// Every kind, for the page's filter.
    pub const ALL: &'static [EventKind] = &[
        EventKind::Box,
        EventKind::Config,
        EventKind::Mode,
        EventKind::Health,
        EventKind::Ha,
        EventKind::Conflict,
        EventKind::Restart,
        EventKind::Login,
        EventKind::Update,
    ];

    /// Its name as the document, the filter and syslog write it.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Box => "box",
            EventKind::Config => "config",
            EventKind::Mode => "mode",
            EventKind::Health => "health",
            EventKind::Ha => "ha",
            EventKind::Conflict => "conflict",
            EventKind::Restart => "restart",
            EventKind::Login => "login",
            EventKind::Update => "update",
        }
    }
}

/// How much it matters (syslog's severities that the box uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something is wrong: a refused config, a server down, a failed login, a conflict.
    Warning,
    /// Normal but significant: a mode switch, an HA transition, a reboot.
    Notice,
    /// Routine: a config applied, a login.
    Info,
}

impl Severity {
    /// RFC 5424's number.
    pub fn code(self) -> u8 {
        match self {
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
        }
    }
}

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// Its number since boot (gaps: older entries were dropped from the bounded log).
    pub seq: u64,
    /// When (Unix time, ms).
    pub at_unix_ms: u64,
    /// What about.
    pub kind: EventKind,
    /// How much it matters.
    pub severity: Severity,
    /// What happened, in a sentence.
    pub message: String,
}

impl LogEvent {
    /// The download's line: "2026-11-22 10:00:01 UTC warning health: tcp … down: connection refused".
    pub fn line(&self) -> String {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
        };
        format!("{} {sev} {}: {}", utc(self.at_unix_ms), self.kind.name(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_one_line_and_keeps_its_wire_form() {
        let e = LogEvent {
            seq: 3,
            at_unix_ms: 0,
            kind: EventKind::Login,
            severity: Severity::Warning,
            message: "failed login from 198.19.0.1".into(),
        };
        assert_eq!(e.line(), "1970-01-01 00:00:00 UTC warning login: failed login from 198.19.0.1");
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""kind":"login","severity":"warning""#), "{text}");
        assert_eq!(serde_json::from_str::<LogEvent>(&text).unwrap(), e);
    }
}
