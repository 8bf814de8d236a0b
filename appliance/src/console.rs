//! The serial console: the init's log goes out, and a few commands come in (one per line).
//! There is no shell on the appliance; this is the operator's (and the tests') last resort:
//! `status`, `restart netfw` (kills it; the supervisor restarts it), `reboot`, `poweroff`.

use std::io::BufRead;
use std::sync::mpsc::Sender;

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
    /// Anything else.
    Unknown(String),
}

/// Parse one line.
pub fn parse(line: &str) -> Option<Command> {
    let mut w = line.split_whitespace();
    Some(match (w.next()?, w.next()) {
        ("status", None) => Command::Status,
        ("restart", Some(name)) => Command::Restart(name.to_string()),
        ("reboot", None) => Command::Reboot,
        ("poweroff", None) => Command::Poweroff,
        _ => Command::Unknown(line.trim().chars().take(60).collect()),
    })
}

/// Read commands from the console in a thread.
pub fn listen(tx: Sender<Command>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if let Some(c) = parse(&line) {
                if tx.send(c).is_err() {
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
        assert_eq!(parse(" restart netfw "), Some(Command::Restart("netfw".into())));
        assert_eq!(parse("poweroff"), Some(Command::Poweroff));
        assert_eq!(parse("rm -rf /"), Some(Command::Unknown("rm -rf /".into())));
        assert_eq!(parse("   "), None);
    }
}
