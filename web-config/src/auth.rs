//! Who may do what: the password (argon2id, a memory-hard KDF), the one-time first-boot setup
//! code, sessions (128-bit random tokens with idle expiry), CSRF tokens bound to a session and
//! compared in constant time, and a per-address limit on failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
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
        self.by_token.insert(token.clone(), Session { csrf: csrf.clone(), last: now });
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
        self.by_token.retain(|_, s| now.saturating_duration_since(s.last) < IDLE);
    }
}

/// Failed logins per client address.
#[derive(Debug, Default)]
pub struct LoginLimit {
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl LoginLimit {
    /// If `ip` must wait, for how long.
    pub fn wait(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        let (n, since) = self.failures.get(&ip)?;
        (*n >= MAX_FAILURES).then(|| WINDOW.saturating_sub(now.duration_since(*since)))
    }

    /// Count a failure.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        let e = self.failures.entry(ip).or_insert((0, now));
        e.0 += 1;
    }

    /// A success clears the address.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
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
    fn the_login_limit_blocks_after_five_failures_for_a_minute() {
        let mut l = LoginLimit::default();
        let ip: IpAddr = "198.19.0.1".parse().unwrap();
        let other: IpAddr = "198.19.0.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.wait(ip, t0).is_none());
            l.failed(ip, t0);
        }
        assert!(l.wait(ip, t0).is_some_and(|w| w <= WINDOW && w > Duration::from_secs(50)));
        assert!(l.wait(other, t0).is_none(), "another address is not blocked");
        assert!(l.wait(ip, t0 + WINDOW).is_none(), "the wait ends");
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
}
