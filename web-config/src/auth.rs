//! Who may do what: the password (argon2id, a memory-hard KDF), the one-time first-boot setup
//! code, sessions (128-bit random tokens with an idle and an absolute lifetime), CSRF tokens
//! bound to a session and compared in constant time, a per-address limit on login attempts
//! (counted before the slow check, so parallel guesses cannot all slip through), and a gate
//! that bounds how many password checks run at once (each takes 19 MiB).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// A session ends this long after login, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Password checks (argon2, 19 MiB each) running at once; more wait their turn.
pub const CONCURRENT_CHECKS: usize = 2;
/// Failed logins allowed per address within `WINDOW` before it must wait.
pub const MAX_FAILURES: u32 = 5;
/// The window (and the wait) of the login limit.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness from the kernel: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A setup code an operator can type from the console: 10 characters without look-alikes.
pub fn new_setup_code() -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 10];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness from the kernel: {e}"))?;
    let s: String = b.iter().map(|x| char::from(ALPHABET[usize::from(*x) % ALPHABET.len()])).collect();
    Ok(format!("{}-{}", &s[..5], &s[5..]))
}

/// Constant-time equality of two secrets.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Hash a password (argon2id, default parameters: 19 MiB, 2 passes).
pub fn hash_password(pw: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness from the kernel: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(pw.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Check a password against a stored hash.
pub fn verify_password(pw: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}

/// Why a new password is not acceptable.
pub fn check_new_password(pw: &str) -> Result<(), String> {
    if pw.chars().count() < MIN_PASSWORD {
        return Err(format!("the password must have at least {MIN_PASSWORD} characters"));
    }
    if pw.len() > 1024 {
        return Err("the password is longer than 1024 bytes".into());
    }
    Ok(())
}

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every state change must carry (header `X-CSRF-Token`).
    pub csrf: String,
    last: Instant,
    born: Instant,
}

/// Sessions by token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// Start a session at `now`: (token, csrf).
    pub fn create(&mut self, now: Instant) -> Result<(String, String), String> {
        self.expire(now);
        let token = random_hex(16)?;
        let csrf = random_hex(16)?;
        self.by_token.insert(token.clone(), Session { csrf: csrf.clone(), last: now, born: now });
        Ok((token, csrf))
    }

    /// The live session of a token at `now` (refreshing its idle timer).
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<Session> {
        self.expire(now);
        let s = self.by_token.get_mut(token)?;
        s.last = now;
        Some(s.clone())
    }

    /// End one session.
    pub fn remove(&mut self, token: &str) {
        self.by_token.remove(token);
    }

    /// End every session (password changed).
    pub fn clear(&mut self) {
        self.by_token.clear();
    }

    fn expire(&mut self, now: Instant) {
        self.by_token.retain(|_, s| now.saturating_duration_since(s.last) < IDLE && now.saturating_duration_since(s.born) < LIFETIME);
    }
}

/// Login attempts per client address that have not succeeded (yet).
#[derive(Debug, Default)]
pub struct LoginLimit {
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl LoginLimit {
    /// Start an attempt from `ip`: counted as a failure at once (the check that follows is
    /// slow, and parallel attempts must not all pass this gate); `succeeded` takes it back.
    /// If `ip` has used its attempts, how long it must wait.
    pub fn attempt(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        let e = self.failures.entry(ip).or_insert((0, now));
        if e.0 >= MAX_FAILURES {
            return Err(WINDOW.saturating_sub(now.duration_since(e.1)));
        }
        e.0 += 1;
        Ok(())
    }

    /// A success clears the address.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
    }
}

/// At most `CONCURRENT_CHECKS` password checks at once; `check` waits for its turn.
#[derive(Debug, Default)]
pub struct PasswordGate {
    running: Mutex<usize>,
    turn: Condvar,
}

impl PasswordGate {
    /// Run `f` (a hash or a verification) when fewer than `CONCURRENT_CHECKS` run.
    pub fn check<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut n = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while *n >= CONCURRENT_CHECKS {
                n = self.turn.wait(n).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            *n += 1;
        }
        let out = f();
        *self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        self.turn.notify_one();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(check_new_password("short").is_err());
    }

    #[test]
    fn the_login_limit_blocks_after_five_attempts_for_a_minute_and_a_success_clears_it() {
        let mut l = LoginLimit::default();
        let ip: IpAddr = "198.19.0.1".parse().unwrap();
        let other: IpAddr = "198.19.0.9".parse().unwrap();
        let t0 = Instant::now();
        // Five attempts still being checked: the sixth must wait, before any check ends.
        for _ in 0..MAX_FAILURES {
            l.attempt(ip, t0).unwrap();
        }
        assert!(l.attempt(ip, t0).is_err_and(|w| w <= WINDOW && w > Duration::from_secs(50)));
        l.attempt(other, t0).expect("another address is not blocked");
        l.attempt(ip, t0 + WINDOW).expect("the wait ends");
        l.succeeded(ip);
        for _ in 0..MAX_FAILURES {
            l.attempt(ip, t0 + WINDOW).expect("a success gives the attempts back");
        }
    }

    #[test]
    fn no_more_than_two_password_checks_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = PasswordGate::default();
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    gate.check(|| {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= CONCURRENT_CHECKS, "{} at once", most.load(Ordering::SeqCst));
    }

    #[test]
    fn sessions_and_codes() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (t, c) = s.create(t0).unwrap();
        assert_eq!(t.len(), 32);
        assert!(same(&s.touch(&t, t0).unwrap().csrf, &c));
        assert!(!same(&c, &c[..31]));
        s.remove(&t);
        assert!(s.touch(&t, t0).is_none());
        let code = new_setup_code().unwrap();
        assert_eq!(code.len(), 11);
    }

    #[test]
    fn a_session_ends_after_fifteen_idle_minutes_and_each_request_restarts_the_clock() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (t, _) = s.create(t0).unwrap();
        let almost = t0 + IDLE - Duration::from_secs(1);
        assert!(s.touch(&t, almost).is_some(), "used just before the idle limit");
        assert!(s.touch(&t, almost + IDLE - Duration::from_secs(1)).is_some(), "the use restarted the clock");
        assert!(s.touch(&t, almost + IDLE - Duration::from_secs(1) + IDLE).is_none(), "fifteen idle minutes end it");
    }

    #[test]
    fn a_busy_session_still_ends_twelve_hours_after_login() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (t, _) = s.create(t0).unwrap();
        let mut now = t0;
        while now + IDLE / 2 < t0 + LIFETIME {
            now += IDLE / 2;
            assert!(s.touch(&t, now).is_some(), "in use every 7.5 minutes");
        }
        assert!(s.touch(&t, t0 + LIFETIME).is_none(), "over at twelve hours, however busy");
    }
}
