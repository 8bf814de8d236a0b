//! The control socket of a running forwarder: `netfw status`, `netfw reload`, the init and
//! the tests ask it for the status document or a reload, in typed messages
//! (`director_messages::netfw`), one request per connection.
//!
//! The socket is polled non-blocking from the forwarder's loop; a client gets 100 ms to send
//! its request, so one that connects and says nothing stalls forwarding for at most that
//! long. A reload is answered later, once the new config is installed.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use director_messages::framing::{read_message, write_message};
use director_messages::netfw::{NetfwAnswer, NetfwRequest};
use director_messages::MessageError;

/// A connected client waiting for its answer.
#[derive(Debug)]
pub struct Client(UnixStream);

impl Client {
    /// Answer and close (a client that went away is not our problem).
    pub fn answer(mut self, a: &NetfwAnswer) {
        let _ = self.0.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = write_message(&mut self.0, a);
    }
}

/// The listening side.
#[derive(Debug)]
pub struct Control {
    listener: UnixListener,
}

impl Control {
    /// Listen at `path` (replacing a stale socket file, refusing if another netfw answers).
    pub fn bind(path: &Path) -> std::io::Result<Control> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another netfw is already listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Control { listener })
    }

    /// The listening descriptor, for poll(2).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    /// The next waiting client and its request (or why the request could not be read);
    /// `None` when nobody waits.
    pub fn accept(&self) -> Option<(Client, Result<NetfwRequest, MessageError>)> {
        let (stream, _) = self.listener.accept().ok()?;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut s = stream;
        let req = read_message(&mut s);
        Some((Client(s), req))
    }
}
