//! The event log the init keeps: every event of the box, in memory (the newest `KEEP`), each
//! also written to the console and, when the config names a log server, sent to it
//! (`syslog`). The init records its own events (configs, modes, restarts, the box); the web
//! page sends its logins as typed requests; a watcher thread turns the data plane's reports
//! (health transitions, HA transitions, VIP conflicts) into events, in both modes.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use director_config::observe::SyslogTarget;
use director_messages::events::{EventKind, LogEvent, Severity};
use director_messages::status::Status;

use crate::{log, syslog};

/// Entries kept at most (the oldest go first).
pub const KEEP: usize = 2000;

#[derive(Debug, Default)]
struct Journal {
    entries: VecDeque<LogEvent>,
    next_seq: u64,
    syslog: Option<syslog::Sender>,
    /// Events the log server's queue had no room for since the last one it took.
    unsent: u64,
}

static JOURNAL: Mutex<Option<Journal>> = Mutex::new(None);

fn journal() -> MutexGuard<'static, Option<Journal>> {
    JOURNAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Record an event at `at_unix_ms` (the source's own time, if it has one): kept, on the
/// console, to syslog.
pub fn record_at(at_unix_ms: u64, kind: EventKind, severity: Severity, message: &str) {
    log::line(&format!("event {}", kind.name()), message);
    let mut g = journal();
    let j = g.get_or_insert_with(Journal::default);
    let e = LogEvent { seq: j.next_seq, at_unix_ms, kind, severity, message: message.to_string() };
    j.next_seq += 1;
    if let Some(s) = &j.syslog {
        if s.send(&e) {
            if j.unsent > 0 {
                let n = std::mem::take(&mut j.unsent);
                log::init(&format!("syslog: {n} event(s) were not sent (the log server was too slow); they are in the box's event log"));
            }
        } else {
            j.unsent += 1;
        }
    }
    if j.entries.len() == KEEP {
        j.entries.pop_front();
    }
    j.entries.push_back(e);
}

/// Record an event now.
pub fn record(kind: EventKind, severity: Severity, message: &str) {
    record_at(now_ms(), kind, severity, message);
}

/// The log, oldest first.
pub fn all() -> Vec<LogEvent> {
    journal().as_ref().map(|j| j.entries.iter().cloned().collect()).unwrap_or_default()
}

/// Send events to `target` from now on (none: stop), as `hostname`.
pub fn set_syslog(target: Option<SyslogTarget>, hostname: &str) {
    let mut g = journal();
    let j = g.get_or_insert_with(Journal::default);
    match target {
        Some(t) if j.syslog.as_ref().is_some_and(|s| s.same(&t, hostname)) => {}
        Some(t) => {
            j.syslog = Some(syslog::Sender::start(t, hostname));
            drop(g);
            log::init(&format!("syslog: events go to {}:{} over {:?} as well", t.server, t.port, t.protocol));
        }
        None => j.syslog = None,
    }
}

/// Send events where `cfg`'s `syslog` says (nowhere without one), as its host name.
pub fn configure(cfg: Option<&director_config::Config>) {
    let target = cfg.and_then(|c| c.syslog_target()?.ok());
    set_syslog(target, cfg.and_then(|c| c.hostname.as_deref()).unwrap_or("director"));
}

/// What the watcher has already turned into events.
#[derive(Debug, Default)]
struct Seen {
    health_ms: u64,
    ha: Option<(String, u64)>,
    split_brain_ms: Option<u64>,
    conflicts: Option<u64>,
}

impl Seen {
    /// The events in `s` not seen before, as (at, kind, severity, message).
    fn news(&mut self, s: &Status) -> Vec<(u64, EventKind, Severity, String)> {
        let mut out = Vec::new();
        let newest = s.health_events.iter().map(|e| e.at_unix_ms).max().unwrap_or(0);
        for e in s.health_events.iter().filter(|e| e.at_unix_ms > self.health_ms) {
            let sev = if e.to == "up" { Severity::Notice } else { Severity::Warning };
            let msg = format!("{} {}: {} -> {}: {}", e.service, e.server, e.from, e.to, e.reason);
            out.push((e.at_unix_ms, EventKind::Health, sev, msg));
        }
        self.health_ms = self.health_ms.max(newest);
        if let Some(h) = &s.ha {
            if let Some(t) = &h.last_transition {
                let key = (t.to.clone(), t.at_unix_ms);
                if self.ha.as_ref() != Some(&key) {
                    out.push((t.at_unix_ms, EventKind::Ha, Severity::Notice, format!("HA: this box is now {}: {}", t.to, t.why)));
                    self.ha = Some(key);
                }
            }
            if let Some(b) = &h.split_brain {
                if self.split_brain_ms != Some(b.resolved_unix_ms) {
                    let msg = format!("HA: split brain for {} ms (both boxes were master), resolved", b.duration_ms);
                    out.push((b.resolved_unix_ms, EventKind::Ha, Severity::Warning, msg));
                    self.split_brain_ms = Some(b.resolved_unix_ms);
                }
            }
        }
        let conflicts = s.events.get("vip_conflict").copied().unwrap_or(0);
        if let Some(before) = self.conflicts.filter(|b| conflicts > *b) {
            let said = s.warnings.iter().find(|w| w.contains("VIP") && w.contains("claim")).cloned();
            let msg = said.unwrap_or_else(|| "another host sent ARP claiming a VIP (fix its arp_ignore/arp_announce)".into());
            out.push((now_ms(), EventKind::Conflict, Severity::Warning, format!("{msg} ({} new claim(s))", conflicts - before)));
        }
        self.conflicts = Some(conflicts);
        out
    }
}

/// Watch the data plane's reports (whichever mode answers on netfw's socket) once a second;
/// the charts' history samples the same reports.
pub fn watch_data_plane(status: fn() -> Option<Status>) {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        // Events from before this boot's first report are in that report too: take them.
        loop {
            if let Some(s) = status() {
                for (at, kind, sev, msg) in seen.news(&s) {
                    record_at(at, kind, sev, &msg);
                }
                crate::history::sample(&s, now_ms());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use director_messages::status::HealthEvent;

    fn status() -> Status {
        serde_json::from_value(serde_json::json!({
            "mode": "forwarder", "layout": "two-arm", "vip_side": "eth1", "rs_side": "eth2", "dip": "198.18.0.2/24",
            "flows": 0, "flow_capacity": 1024, "bytes_per_flow": 48, "services": [], "drops": {},
            "events": {"vip_conflict": 0}, "warnings": []
        }))
        .unwrap()
    }

    #[test]
    fn each_report_yields_only_what_is_new() {
        let mut seen = Seen::default();
        let mut s = status();
        assert!(seen.news(&s).is_empty());
        s.health_events.push(HealthEvent {
            at_unix_ms: 10,
            service: "tcp 203.0.113.10:80".into(),
            server: "198.18.0.11".into(),
            from: "up".into(),
            to: "down".into(),
            reason: "connection refused".into(),
        });
        s.events.insert("vip_conflict".into(), 2);
        let news = seen.news(&s);
        assert_eq!(news.len(), 2, "{news:?}");
        assert_eq!((news[0].1, news[0].2), (EventKind::Health, Severity::Warning));
        assert!(news[0].3.ends_with("198.18.0.11: up -> down: connection refused"), "{news:?}");
        assert_eq!(news[1].1, EventKind::Conflict);
        assert!(seen.news(&s).is_empty(), "the same report again: nothing new");
    }

    #[test]
    fn the_log_is_bounded_and_numbered() {
        for i in 0..KEEP + 5 {
            record(EventKind::Config, Severity::Info, &format!("entry {i}"));
        }
        let all = all();
        assert_eq!(all.len(), KEEP);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(all.last().map(|e| e.message.as_str()), Some(format!("entry {}", KEEP + 4).as_str()));
    }
}
