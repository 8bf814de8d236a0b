//! Console lines: `[   12.345] who: message`, seconds since boot, one line at a time.

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

/// Write one line to the console (serial and VGA).
pub fn line(who: &str, msg: &str) {
    let text = format!("[{:>9.3}] {who}: {msg}\n", uptime());
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
