//! The init's control socket (`/run/director.sock`, root only): how web-config asks the init
//! to act. One request per connection, one line (a config document may be long), one answer:
//!
//! - `status-json`: mode, fallback, pending management change, and the status report.
//! - `config`: the config document in force.
//! - `apply-config {…}`: validate, apply live, save (the answer says what happened or why not).
//! - `confirm`: keep a pending management change (else it is rolled back after 60 s).
//! - `reboot`, `poweroff`.
//!
//! Requests go through the same queue as console commands, so the init's state has one owner.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use crate::console::Command;

/// Where the socket lives.
pub const SOCKET: &str = "/run/director.sock";
/// The largest request (a config document, with room to spare).
const MAX_REQUEST: u64 = 256 * 1024;

/// A command and, for control requests, where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub cmd: Command,
    /// The requester's reply channel (console commands answer on the console).
    pub reply: Option<Sender<String>>,
}

impl From<Command> for Request {
    fn from(cmd: Command) -> Self {
        Request { cmd, reply: None }
    }
}

impl Request {
    /// Answer the requester, if there is one.
    pub fn answer(&self, text: impl Into<String>) {
        if let Some(r) = &self.reply {
            let _ = r.send(text.into());
        }
    }
}

fn parse(line: &str) -> Command {
    if let Some(json) = line.strip_prefix("apply-config ") {
        return Command::ApplyConfig(json.to_string());
    }
    match line {
        "status-json" => Command::StatusJson,
        "config" => Command::GetConfig,
        "confirm" => Command::Confirm,
        "reboot" => Command::Reboot,
        "poweroff" => Command::Poweroff,
        other => Command::Unknown(other.chars().take(60).collect()),
    }
}

fn serve(stream: UnixStream, tx: &Sender<Request>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(std::io::Read::take(clone, MAX_REQUEST));
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let (rtx, rrx) = mpsc::channel();
    if tx.send(Request { cmd: parse(line.trim()), reply: Some(rtx) }).is_err() {
        return;
    }
    // A mode switch or an IPVS apply can take a while under emulation.
    let answer = rrx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| "error the init did not answer".into());
    let mut stream = stream;
    let _ = stream.write_all(answer.as_bytes());
}

/// Listen in a thread.
pub fn listen(tx: Sender<Request>) {
    let _ = std::fs::remove_file(SOCKET);
    let listener = match UnixListener::bind(SOCKET) {
        Ok(l) => l,
        Err(e) => return crate::log::init(&format!("control socket {SOCKET}: {e}")),
    };
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || serve(s, &tx));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse("status-json"), Command::StatusJson);
        assert_eq!(parse("apply-config {}"), Command::ApplyConfig("{}".into()));
        assert_eq!(parse("confirm"), Command::Confirm);
        assert_eq!(parse("restart netfw"), Command::Unknown("restart netfw".into()));
    }
}
