//! Supervised children (netfw now, web-config later): started with their output on the
//! console, line by line with a timestamp and the child's name; restarted with exponential
//! backoff when they exit; stopped in order at shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{log, sys};

/// First restart delay.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long without exiting starts over at the shortest delay.
const STABLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Child {
    name: String,
    argv: Vec<String>,
    pid: Option<i32>,
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
            pid: None,
            started: Instant::now(),
            next_start: Some(Instant::now()),
            backoff: BACKOFF_MIN,
            restarts: 0,
        });
        self.tick();
    }

    fn start(c: &mut Child) {
        let Some((prog, args)) = c.argv.split_first() else { return };
        match Command::new(prog).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
            Ok(mut child) => {
                let pid = i32::try_from(child.id()).unwrap_or(0);
                if let Some(o) = child.stdout.take() {
                    forward_lines(c.name.clone(), o);
                }
                if let Some(e) = child.stderr.take() {
                    forward_lines(c.name.clone(), e);
                }
                log::init(&format!("started {} (pid {pid})", c.name));
                c.pid = Some(pid);
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
            if c.pid.is_none() && c.next_start.is_some_and(|t| t <= now) {
                Self::start(c);
            }
        }
    }

    /// A process exited: if it is ours, schedule its restart. Returns its name if it was ours.
    pub fn exited(&mut self, pid: i32, status: i32) -> Option<String> {
        let c = self.children.iter_mut().find(|c| c.pid == Some(pid))?;
        c.pid = None;
        if c.started.elapsed() >= STABLE {
            c.backoff = BACKOFF_MIN;
        }
        let how = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        c.restarts += 1;
        log::init(&format!("{} {how}; restart {} in {:?}", c.name, c.restarts, c.backoff));
        c.next_start = Some(Instant::now() + c.backoff);
        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        Some(c.name.clone())
    }

    /// Kill a child by name with SIGKILL (fault injection from the console); it is restarted.
    pub fn kill(&mut self, name: &str) -> bool {
        match self.children.iter().find(|c| c.name == name).and_then(|c| c.pid) {
            Some(pid) => {
                sys::kill(pid, libc::SIGKILL);
                true
            }
            None => false,
        }
    }

    /// Stop and forget a child (leaving a mode). SIGTERM, up to 3 s, then SIGKILL.
    pub fn remove(&mut self, name: &str) {
        let Some(i) = self.children.iter().position(|c| c.name == name) else { return };
        let mut c = self.children.remove(i);
        c.next_start = None;
        if let Some(pid) = c.pid {
            sys::kill(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            // SAFETY: waiting for our own child; WNOHANG never blocks.
            while unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            sys::kill(pid, libc::SIGKILL);
            log::init(&format!("{name} stopped"));
        }
    }

    /// One line per child: name, pid, restarts.
    pub fn describe(&self) -> Vec<String> {
        self.children
            .iter()
            .map(|c| format!("{}: {} (restarts {})", c.name, c.pid.map_or("not running".to_string(), |p| format!("pid {p}")), c.restarts))
            .collect()
    }

    /// Stop every child: SIGTERM, up to 3 s, then SIGKILL. No restarts after this.
    pub fn stop_all(&mut self) {
        for c in &mut self.children {
            c.next_start = None;
            if let Some(pid) = c.pid {
                sys::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.children.iter().any(|c| c.pid.is_some()) && Instant::now() < deadline {
            while let Some((pid, _)) = sys::reap() {
                if let Some(c) = self.children.iter_mut().find(|c| c.pid == Some(pid)) {
                    log::init(&format!("{} stopped", c.name));
                    c.pid = None;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut self.children {
            if let Some(pid) = c.pid.take() {
                sys::kill(pid, libc::SIGKILL);
                log::init(&format!("{} did not stop in 3 s: killed", c.name));
            }
        }
    }
}
