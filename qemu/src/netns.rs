//! Reaching into the lab's namespaces from this process: run a closure on a thread that has
//! entered a namespace (its sockets stay there, usable from any thread), and forward a TCP
//! port of the host (e.g. 127.0.0.1:8443) to an address inside a namespace, so the operator's
//! own browser can open the appliance's page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lab::LabError;

/// Run `f` on a new thread inside network namespace `ns` (`ip netns` name) and return its
/// result. Sockets it opens belong to `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, LabError> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| LabError(format!("{path}: {e}")))?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) with a namespace file we hold open; it changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError(format!("setns into {path}: {}", std::io::Error::last_os_error())));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| LabError("the namespace thread panicked".into()))?
}

/// A forwarded port; forwarding stops when it is dropped.
#[derive(Debug)]
pub struct Forward {
    /// Where it listens (on the host).
    pub listen: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.listen, Duration::from_millis(200));
        // wake the accept
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Listen on `listen` in this process's namespace and relay each connection to `to` inside
/// namespace `ns`.
pub fn forward_port(listen: SocketAddr, ns: &str, to: SocketAddr) -> Result<Forward, LabError> {
    let listener = TcpListener::bind(listen).map_err(|e| LabError(format!("listen on {listen}: {e}")))?;
    let listen = listener.local_addr().map_err(|e| LabError(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ns, halt) = (ns.to_string(), stop.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if halt.load(Ordering::Relaxed) {
                break;
            }
            let ns = ns.clone();
            std::thread::spawn(move || {
                let Ok(Ok(server)) = in_netns(&ns, move || TcpStream::connect_timeout(&to, Duration::from_secs(5))) else { return };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
                std::thread::spawn(move || pipe(c2, server));
                pipe(s2, client);
            });
        }
    });
    Ok(Forward { listen, stop })
}
