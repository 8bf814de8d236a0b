//! What `GET /metrics` adds to the status document, read from `/proc`: when the box booted,
//! its memory, and the serving process's start time, resident memory and CPU time. A file
//! that cannot be read or parsed leaves its figure at 0; nothing here fails a scrape.

use director_messages::metrics::Facts;

/// Clock ticks per second for /proc's CPU times (USER_HZ: 100 on every Linux ABI we run on).
const TICKS: f64 = 100.0;
/// Page size for /proc/self/stat's RSS.
const PAGE: u64 = 4096;

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// Read them now.
pub fn read() -> Facts {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let boot = field(&stat, "btime ").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |k: &str| field(&mem, k).and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024;
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (in parentheses, which may hold spaces): fields 3 onwards.
    let rest: Vec<&str> = me.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime, stime, starttime, rss are fields 14, 15, 22, 24 (1-based): 11, 12, 19, 21 here.
    let cpu = (num(11) + num(12)) as f64 / TICKS;
    let start = boot + num(19) as f64 / TICKS;
    Facts {
        // The image's version (an update changes it), else the binary's.
        version: std::fs::read_to_string("/etc/director-version")
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        boot_time_s: boot,
        memory_total: kib("MemTotal:"),
        memory_available: kib("MemAvailable:"),
        process: (!rest.is_empty()).then_some((start, num(21) * PAGE, cpu)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_and_this_box_are_read() {
        let f = super::read();
        assert!(f.boot_time_s > 1.0e9, "{f:?}");
        assert!(f.memory_total >= f.memory_available && f.memory_available > 0, "{f:?}");
        let (start, rss, _) = f.process.expect("/proc/self/stat");
        assert!(start >= f.boot_time_s && rss > 0, "{f:?}");
    }
}
