//! Console lines: `[   12.345] who: message`, seconds since boot, one line at a time.

use std::io::Write;

/// Seconds since boot (CLOCK_BOOTTIME), as the kernel's own log shows them.
pub fn uptime() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Write one line to the console.
pub fn line(who: &str, msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{:>9.3}] {who}: {msg}", uptime());
    let _ = out.flush();
}

/// The init's own line.
pub fn init(msg: &str) {
    line("init", msg);
}
