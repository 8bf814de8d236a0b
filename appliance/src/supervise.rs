//! Supervised children (netfw, web-config): started with their output on the console, line by
//! line with a timestamp and the child's name; restarted with exponential backoff when they
//! exit; stopped in order at shutdown.
//!
//! A child is signalled only through a pidfd opened when it starts (`pidfd_send_signal`), never
//! by PID: once a child has been reaped its PID may belong to any new process, but its pidfd
//! still means that child, and signalling it fails harmlessly.

use director_messages::events::{EventKind, Severity};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{log, sys};

/// First restart delay.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long without exiting starts over at the shortest delay.
const STABLE: Duration = Duration::from_secs(60);

/// A running child process, held by its pidfd.
#[derive(Debug)]
pub struct Proc {
    pid: i32,
    pidfd: OwnedFd,
}

impl Proc {
    /// Hold process `pid` (our child, not yet reaped) by a pidfd.
    pub fn hold(pid: i32) -> std::io::Result<Proc> {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor the kernel just gave us.
        Ok(Proc { pid, pidfd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Its PID (for the console; never used to signal it).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Send `sig` to this very process. An error (ESRCH) if it has exited, even if another
    /// process now has its PID.
    pub fn signal(&self, sig: libc::c_int) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal(2) with our pidfd, a signal number, no siginfo, no flags.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Has it exited (and been reaped by anyone, or is a zombie)? Does not reap it.
    pub fn exited(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; a pidfd polls readable once the process has exited.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
    }
}

#[derive(Debug)]
struct Child {
    name: String,
    argv: Vec<String>,
    proc: Option<Proc>,
    started: Instant,
    next_start: Option<Instant>,
    backoff: Duration,
    restarts: u32,
}

/// The supervisor.
#[derive(Debug, Default)]
pub struct Supervisor {
    children: Vec<Child>,
}

fn forward_lines(name: String, r: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => log::line(&name, &l),
                Err(_) => break,
            }
        }
    });
}

impl Supervisor {
    /// Supervise `argv` under `name`, starting it now.
    pub fn add(&mut self, name: &str, argv: Vec<String>) {
        self.children.push(Child {
            name: name.into(),
            argv,
            proc: None,
            started: Instant::now(),
            next_start: Some(Instant::now()),
            backoff: BACKOFF_MIN,
            restarts: 0,
        });
        self.tick();
    }

    fn start(c: &mut Child) {
        let Some((prog, args)) = c.argv.split_first() else { return };
        let spawned = Command::new(prog).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        match spawned {
            Ok(mut child) => {
                let pid = i32::try_from(child.id()).unwrap_or(0);
                if let Some(o) = child.stdout.take() {
                    forward_lines(c.name.clone(), o);
                }
                if let Some(e) = child.stderr.take() {
                    forward_lines(c.name.clone(), e);
                }
                // Nothing reaps between spawn and here (the init reaps on this thread only), so
                // the pid is still this child's.
                match Proc::hold(pid) {
                    Ok(p) => c.proc = Some(p),
                    Err(e) => log::init(&format!("{}: cannot hold pid {pid} by a pidfd ({e}); it cannot be signalled", c.name)),
                }
                log::init(&format!("started {} (pid {pid})", c.name));
                c.started = Instant::now();
                c.next_start = None;
                // The std handle is dropped: PID 1 reaps every child with waitpid(-1).
            }
            Err(e) => {
                log::init(&format!("cannot start {}: {e}; retrying in {:?}", c.name, c.backoff));
                c.next_start = Some(Instant::now() + c.backoff);
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Start children whose time has come.
    pub fn tick(&mut self) {
        let now = Instant::now();
        for c in &mut self.children {
            if c.proc.is_none() && c.next_start.is_some_and(|t| t <= now) {
                Self::start(c);
            }
        }
    }

    /// A process was reaped: if it is ours, schedule its restart. Returns its name if it was.
    pub fn exited(&mut self, pid: i32, status: i32) -> Option<String> {
        let c = self.children.iter_mut().find(|c| c.proc.as_ref().is_some_and(|p| p.pid() == pid))?;
        c.proc = None;
        if c.started.elapsed() >= STABLE {
            c.backoff = BACKOFF_MIN;
        }
        let how = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        c.restarts += 1;
        crate::events::record(
            EventKind::Restart,
            Severity::Warning,
            &format!("{} {how}; restart {} in {:?}", c.name, c.restarts, c.backoff),
        );
        c.next_start = Some(Instant::now() + c.backoff);
        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        Some(c.name.clone())
    }

    /// Whether a child of this name is supervised (running, or due to restart).
    pub fn has(&self, name: &str) -> bool {
        self.children.iter().any(|c| c.name == name)
    }

    /// Kill a child by name with SIGKILL (fault injection from the console); it is restarted.
    pub fn kill(&mut self, name: &str) -> bool {
        self.children.iter().find(|c| c.name == name).and_then(|c| c.proc.as_ref()).is_some_and(|p| p.signal(libc::SIGKILL).is_ok())
    }

    /// Stop and forget a child (leaving a mode): SIGTERM, up to 3 s, then SIGKILL; reaped
    /// here. Other processes that exit meanwhile are reaped and passed to `other`.
    pub fn remove(&mut self, name: &str, mut other: impl FnMut(i32, i32)) {
        let Some(i) = self.children.iter().position(|c| c.name == name) else { return };
        let c = self.children.remove(i);
        let Some(p) = c.proc else { return };
        let _ = p.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            // Exited before this pass: the pass collects its zombie, unless someone already did.
            let gone = p.exited();
            let mut reaped = false;
            while let Some((pid, status)) = sys::reap() {
                if pid == p.pid() {
                    reaped = true;
                } else {
                    other(pid, status);
                }
            }
            if reaped || gone {
                break;
            }
            if Instant::now() >= deadline {
                // Still running: the pidfd still means this child, so SIGKILL cannot hit another.
                let _ = p.signal(libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::init(&format!("{name} stopped"));
    }

    /// One line per child: name, pid, restarts.
    pub fn describe(&self) -> Vec<String> {
        self.children
            .iter()
            .map(|c| {
                format!(
                    "{}: {} (restarts {})",
                    c.name,
                    c.proc.as_ref().map_or("not running".to_string(), |p| format!("pid {}", p.pid())),
                    c.restarts
                )
            })
            .collect()
    }

    /// Stop every child: SIGTERM, up to 3 s, then SIGKILL. No restarts after this.
    pub fn stop_all(&mut self) {
        for c in &mut self.children {
            c.next_start = None;
            if let Some(p) = &c.proc {
                let _ = p.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.children.iter().any(|c| c.proc.is_some()) && Instant::now() < deadline {
            while let Some((pid, _)) = sys::reap() {
                if let Some(c) = self.children.iter_mut().find(|c| c.proc.as_ref().is_some_and(|p| p.pid() == pid)) {
                    log::init(&format!("{} stopped", c.name));
                    c.proc = None;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut self.children {
            if let Some(p) = c.proc.take() {
                let _ = p.signal(libc::SIGKILL);
                log::init(&format!("{} did not stop in 3 s: killed", c.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario of a PID reused after a child was reaped: the supervisor holds child A;
    /// A exits and is reaped by someone else (the init reaps every child with waitpid(-1));
    /// the kernel gives A's PID to a new process B; then the supervisor is told to stop or kill
    /// A. B must live. (Signalling by PID killed B.) Run in a PID namespace of its own, where
    /// `ns_last_pid` makes the reuse certain.
    #[test]
    fn a_reaped_childs_pid_reused_by_another_process_is_never_signalled() {
        if std::env::var_os("PIDNS_INNER").is_none() {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: needs root for a PID namespace (CI runs as root)");
                return;
            }
            let exe = std::env::current_exe().unwrap();
            let out = Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc"])
                .arg(&exe)
                .args(["--exact", "supervise::tests::a_reaped_childs_pid_reused_by_another_process_is_never_signalled", "--nocapture"])
                .env("PIDNS_INNER", "1")
                .output()
                .expect("unshare (util-linux)");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        let mut sup = Supervisor::default();
        sup.add("a", vec!["/bin/sleep".into(), "1000".into()]);
        let a = sup.children[0].proc.as_ref().unwrap().pid();
        // A dies and is reaped outside the supervisor's knowledge.
        // SAFETY: plain kill(2) on our own child in this test.
        unsafe { libc::kill(a, libc::SIGKILL) };
        // SAFETY: waitpid(2) on our own child; no status wanted.
        unsafe { libc::waitpid(a, std::ptr::null_mut(), 0) };
        // The next process gets A's PID.
        std::fs::write("/proc/sys/kernel/ns_last_pid", (a - 1).to_string()).unwrap();
        let mut b = Command::new("/bin/sleep").arg("1000").spawn().unwrap();
        assert_eq!(i32::try_from(b.id()).unwrap(), a, "the kernel reused A's PID for B");
        assert!(!sup.kill("a"), "a child that is gone cannot be killed");
        sup.remove("a", |_, _| {});
        std::thread::sleep(Duration::from_millis(100));
        assert!(b.try_wait().unwrap().is_none(), "B, which now has A's old PID, was signalled");
        let _ = b.kill();
        let _ = b.wait();
    }
}
