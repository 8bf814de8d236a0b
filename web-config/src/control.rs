//! The init's control socket, from web-config's side: one request, one answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Where the init listens.
pub const DEFAULT: &str = "/run/director.sock";

/// Send `request` (one line) and return the answer.
pub fn request(sock: &Path, request: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("the init's control socket {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(90))).map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).and_then(|()| s.write_all(b"\n")).map_err(|e| format!("control socket: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("control socket: {e}"))?;
    Ok(out)
}

/// A request whose answer starts with `ok ` or `error `.
pub fn act(sock: &Path, req: &str) -> Result<String, String> {
    let a = request(sock, req)?;
    if let Some(m) = a.strip_prefix("ok ") {
        Ok(m.to_string())
    } else {
        Err(a.strip_prefix("error ").unwrap_or(&a).to_string())
    }
}
