//! The init's control socket (`/run/director.sock`, root only): how web-config asks the init
//! to act, in typed messages (`director_messages::init`): the box's status, the config in
//! force, applying a config, confirming a management change, reboot and power off. One request
//! per connection, one answer.
//!
//! Requests go through the same queue as console commands, so the init's state has one owner.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use director_messages::framing::{read_message, write_message, INIT_SOCKET};
use director_messages::init::{InitAnswer, InitRequest};

use crate::console::Command;

/// A command and, for control requests, where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub cmd: Command,
    /// The requester's reply channel (console commands answer on the console).
    pub reply: Option<Sender<InitAnswer>>,
}

impl From<Command> for Request {
    fn from(cmd: Command) -> Self {
        Request { cmd, reply: None }
    }
}

impl Request {
    /// Answer the requester, if there is one.
    pub fn answer(&self, a: InitAnswer) {
        if let Some(r) = &self.reply {
            let _ = r.send(a);
        }
    }
}

/// The console command a control request stands for.
pub fn command(r: InitRequest) -> Command {
    match r {
        InitRequest::Status => Command::BoxStatus,
        InitRequest::Config => Command::GetConfig,
        InitRequest::ApplyConfig { document } => Command::ApplyConfig(document),
        InitRequest::Confirm => Command::Confirm,
        InitRequest::Reboot => Command::Reboot,
        InitRequest::Poweroff => Command::Poweroff,
        InitRequest::Event { kind, severity, message } => Command::Event(kind, severity, message),
        InitRequest::Events => Command::Events,
        InitRequest::History => Command::History,
        InitRequest::Capture { spec } => Command::Capture(spec),
        InitRequest::Connections { filter } => Command::Connections(filter),
    }
}

fn serve(stream: UnixStream, tx: &Sender<Request>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut s = stream;
    let answer = match read_message::<InitRequest>(&mut s) {
        Ok(req) => {
            let (rtx, rrx) = mpsc::channel();
            if tx.send(Request { cmd: command(req), reply: Some(rtx) }).is_err() {
                return;
            }
            // A mode switch or an IPVS apply can take a while under emulation.
            rrx.recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| InitAnswer::Error { message: "the init did not answer within 90 s".into() })
        }
        Err(e) => InitAnswer::Error { message: e.to_string() },
    };
    let _ = write_message(&mut s, &answer);
}

/// Listen in a thread.
pub fn listen(tx: Sender<Request>) {
    let _ = std::fs::remove_file(INIT_SOCKET);
    let listener = match UnixListener::bind(INIT_SOCKET) {
        Ok(l) => l,
        Err(e) => return crate::log::init(&format!("control socket {INIT_SOCKET}: {e}")),
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
    fn requests_become_commands() {
        assert_eq!(command(InitRequest::Status), Command::BoxStatus);
        assert_eq!(command(InitRequest::ApplyConfig { document: "{}".into() }), Command::ApplyConfig("{}".into()));
        assert_eq!(command(InitRequest::Confirm), Command::Confirm);
    }
}
