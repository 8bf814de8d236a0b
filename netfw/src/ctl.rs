//! The control socket: a Unix stream socket where `netfw status` and `netfw reload` talk to a
//! running forwarder. One request line, one response, then the connection closes.
//!
//! Requests: `status`, `status-json`, `reload`. The socket is polled non-blocking from the
//! forwarder's loop; a client gets 100 ms to send its one-line request, so a client that
//! connects and says nothing stalls forwarding for at most that long.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Default socket path.
pub const DEFAULT_PATH: &str = "/run/netfw.sock";

/// A request read from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The text table.
    Status,
    /// The same as JSON.
    StatusJson,
    /// Re-read the config file.
    Reload,
}

/// The listening side.
#[derive(Debug)]
pub struct Control {
    listener: UnixListener,
}

impl Control {
    /// Listen at `path` (replacing a stale socket file).
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

    /// Serve every waiting client with `answer`.
    pub fn serve(&self, mut answer: impl FnMut(Request) -> String) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
            let mut line = String::new();
            let mut r = BufReader::new(&stream);
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let reply = match line.trim() {
                "status" => answer(Request::Status),
                "status-json" => answer(Request::StatusJson),
                "reload" => answer(Request::Reload),
                other => format!(
                    "error: unknown request \"{}\" (use status, status-json or reload)\n",
                    other.chars().take(40).collect::<String>()
                ),
            };
            let mut w = &stream;
            let _ = w.write_all(reply.as_bytes());
        }
    }
}

/// Client side: send one request, return the reply.
pub fn request(path: &Path, req: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot reach netfw at {}: {e} (is `netfw run` running?)", path.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out)?;
    Ok(out)
}
