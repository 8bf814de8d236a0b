//! The serial console: the init's log goes out, and a few commands come in (one per line).
//! There is no shell on the appliance; this is the operator's (and the tests') last resort:
//! `status`, `restart netfw` (kills it; the supervisor restarts it), `reboot`, `poweroff`,
//! `ipvs` (the kernel's IPVS table), `events` (the event log's last lines), `apply-config {…}` (a whole config document on one line:
//! validated, saved to the config partition, applied without reboot), `status --connections
//! [vip=A] [server=A] [client=A] [limit=N]` (live flows and persistence templates, like
//! `ipvsadm -L -n -c`).

use std::io::BufRead;
use std::sync::mpsc::Sender;

use director_messages::events::{EventKind, Severity};

use crate::control::Request;

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print state.
    Status,
    /// Kill a supervised child (it restarts).
    Restart(String),
    /// Reboot cleanly.
    Reboot,
    /// Power off cleanly.
    Poweroff,
    /// Validate, save and apply a new config (the JSON document on one line).
    ApplyConfig(String),
    /// Show the kernel's IPVS table.
    Ipvs,
    /// The box's status document (control socket).
    BoxStatus,
    /// The config in force (control socket).
    GetConfig,
    /// Keep a pending management change (control socket).
    Confirm,
    /// The event log (printed on the console; answered on the control socket).
    Events,
    /// The real servers' last minutes (control socket).
    History,
    /// Capture packets (control socket).
    Capture(director_messages::init::CaptureSpec),
    /// The connection list (console and control socket).
    Connections(director_messages::connections::ConnectionFilter),
    /// Record an event (the web page's logins; control socket).
    Event(EventKind, Severity, String),
    /// Anything else.
    Unknown(String),
}

/// Parse one line.
pub fn parse(line: &str) -> Option<Command> {
    if let Some(json) = line.trim().strip_prefix("apply-config ") {
        return Some(Command::ApplyConfig(json.to_string()));
    }
    let mut w = line.split_whitespace();
    if let Some(rest) = line.trim().strip_prefix("status --connections") {
        let pairs = rest.split_whitespace().map(|p| p.split_once('=').unwrap_or((p, "")));
        return Some(match director_messages::connections::ConnectionFilter::parse(pairs) {
            Ok(f) => Command::Connections(f),
            Err(e) => Command::Unknown(format!("status --connections: {e}")),
        });
    }
    Some(match (w.next()?, w.next()) {
        ("ipvs", None) => Command::Ipvs,
        ("status", None) => Command::Status,
        ("restart", Some(name)) => Command::Restart(name.to_string()),
        ("reboot", None) => Command::Reboot,
        ("poweroff", None) => Command::Poweroff,
        ("events", None) => Command::Events,
        _ => Command::Unknown(line.trim().chars().take(60).collect()),
    })
}

/// Turn off the tty's echo: echoed keystrokes interleave with log lines being written and
/// garble both. Each command is logged back as one clean line instead.
fn no_echo() {
    // SAFETY: an all-zero termios is valid storage for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is the console; `t` is valid.
    if unsafe { libc::tcgetattr(0, &mut t) } == 0 {
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        // SAFETY: as above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
}

/// Read commands from the console in a thread.
pub fn listen(tx: Sender<Request>) {
    no_echo();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if !line.trim().is_empty() {
                let shown: String = line.trim().chars().take(100).collect();
                crate::log::line("console", &format!("> {shown}{}", if line.trim().len() > 100 { "…" } else { "" }));
            }
            if let Some(c) = parse(&line) {
                if tx.send(c.into()).is_err() {
                    break;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("status"), Some(Command::Status));
        let vip = director_messages::connections::ConnectionFilter { vip: Some([203, 0, 113, 10].into()), ..Default::default() };
        assert_eq!(parse("status --connections vip=203.0.113.10"), Some(Command::Connections(vip)));
        assert_eq!(parse("status --connections"), Some(Command::Connections(Default::default())));
        assert!(matches!(parse("status --connections port=21"), Some(Command::Unknown(m)) if m.contains("\"port\" is not a filter")));
        assert_eq!(parse(" restart netfw "), Some(Command::Restart("netfw".into())));
        assert_eq!(parse("poweroff"), Some(Command::Poweroff));
        assert_eq!(parse("apply-config {\"version\": 1}"), Some(Command::ApplyConfig("{\"version\": 1}".into())));
        assert_eq!(parse("ipvs"), Some(Command::Ipvs));
        assert_eq!(parse("rm -rf /"), Some(Command::Unknown("rm -rf /".into())));
        assert_eq!(parse("   "), None);
    }
}
