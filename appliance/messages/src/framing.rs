//! How a message travels: one JSON document on one line, over a Unix stream socket; the
//! client writes its request line, the server answers with one line and closes. Reads are
//! bounded (a config document is the largest request) and every failure says which socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// netfw's control socket (status, reload).
pub const NETFW_SOCKET: &str = "/run/netfw.sock";
/// The init's control socket (the web page's requests).
pub const INIT_SOCKET: &str = "/run/director.sock";
/// The largest message: a config document with room to spare.
pub const MAX_MESSAGE: u64 = 512 * 1024;

/// Why a message did not get through.
#[derive(Debug)]
pub enum MessageError {
    /// Nothing listens at the socket (the process is not running).
    Connect {
        /// The socket.
        socket: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// Reading or writing failed, or timed out.
    Io(std::io::Error),
    /// The other side closed without a message.
    Closed,
    /// More than `MAX_MESSAGE` bytes without an end of line.
    TooLarge,
    /// A line that is not the expected message.
    Malformed(String),
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::Connect { socket, error } => write!(f, "cannot reach {socket}: {error} (is the process running?)"),
            MessageError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                write!(f, "no answer in time")
            }
            MessageError::Io(e) => write!(f, "control socket: {e}"),
            MessageError::Closed => write!(f, "the other side closed the connection without answering"),
            MessageError::TooLarge => write!(f, "message larger than {MAX_MESSAGE} bytes"),
            MessageError::Malformed(m) => write!(f, "malformed message: {m}"),
        }
    }
}

impl std::error::Error for MessageError {}

impl From<std::io::Error> for MessageError {
    fn from(e: std::io::Error) -> Self {
        MessageError::Io(e)
    }
}

/// Write one message as one line.
pub fn write_message<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), MessageError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| MessageError::Malformed(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()?;
    Ok(())
}

/// Read one message (one line, at most `MAX_MESSAGE` bytes).
pub fn read_message<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, MessageError> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(r.take(MAX_MESSAGE + 1));
    limited.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(MessageError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 > MAX_MESSAGE { MessageError::TooLarge } else { MessageError::Closed });
    }
    serde_json::from_slice(&line).map_err(|e| MessageError::Malformed(e.to_string()))
}

/// Send `request` to the socket at `path` and wait up to `timeout` for the answer.
pub fn call<Q: Serialize, A: DeserializeOwned>(path: &Path, request: &Q, timeout: Duration) -> Result<A, MessageError> {
    let mut s = UnixStream::connect(path).map_err(|error| MessageError::Connect { socket: path.display().to_string(), error })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write_message(&mut s, request)?;
    read_message(&mut s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lines_and_bad_lines_are_errors() {
        let mut buf = Vec::new();
        write_message(&mut buf, &serde_json::json!({"request": "status"})).unwrap();
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = read_message(&mut &buf[..]).unwrap();
        assert_eq!(v["request"], "status");
        assert!(matches!(read_message::<serde_json::Value>(&mut &b""[..]), Err(MessageError::Closed)));
        assert!(matches!(read_message::<serde_json::Value>(&mut &b"{\"a\""[..]), Err(MessageError::Closed)));
        assert!(matches!(read_message::<serde_json::Value>(&mut &b"nonsense\n"[..]), Err(MessageError::Malformed(_))));
        let huge = vec![b'x'; usize::try_from(MAX_MESSAGE).unwrap() + 10];
        assert!(matches!(read_message::<serde_json::Value>(&mut &huge[..]), Err(MessageError::TooLarge)));
    }
}
