//! Console lines: `[   12.345] who: message`, seconds since boot, one line at a time.
//!
//! Whatever a line carries (a child's output, a name from a config, a network peer's
//! words), no control character reaches the terminal: each is shown as a visible escape, so
//! nothing written to the console can move its cursor, clear it or retitle it.

use std::io::Write;

/// Seconds since boot (CLOCK_BOOTTIME), as the kernel's own log shows them.
pub fn uptime() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The VGA console, where there is one: the kernel's /dev/console is the serial port (the
/// last `console=`), but an operator at a monitor must see the banner too.
fn vga() -> Option<&'static std::fs::File> {
    static TTY0: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    TTY0.get_or_init(|| std::fs::OpenOptions::new().write(true).open("/dev/tty0").ok()).as_ref()
}

/// `s` with every control character shown as an escape (`\u{1b}`), tabs as spaces.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// Write one line to the console (serial and VGA).
pub fn line(who: &str, msg: &str) {
    let text = format!("[{:>9.3}] {}: {}\n", uptime(), printable(who), printable(msg));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    if std::process::id() == 1 {
        if let Some(mut t) = vga() {
            let _ = t.write_all(text.as_bytes());
        }
    }
}

/// The init's own line.
pub fn init(msg: &str) {
    line("init", msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_control_character_reaches_the_console() {
        let shown = printable("eth\u{1b}[2J\u{7}\r\nnext\tcol");
        assert_eq!(shown, "eth\\u{1b}[2J\\u{7}\\u{d}\\u{a}next col");
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(printable("ordinary: 203.0.113.10 → ok"), "ordinary: 203.0.113.10 → ok");
    }
}
