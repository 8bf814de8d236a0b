//! Booting the appliance under QEMU: software emulation (TCG) unless `DIRECTOR_ACCEL=kvm`
//! says KVM really works here; SeaBIOS or OVMF from the disk image, or kernel + initramfs
//! directly for speed. The serial console is a Unix socket (tests type console commands into
//! it) and is logged to a file; the monitor socket presses the ACPI power button. QEMU is
//! killed when the `Vm` drops, so no test leaves one behind.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::LabError;

/// How the VM starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS) from the disk image.
    SeaBios,
    /// UEFI (OVMF) from the disk image.
    Ovmf,
    /// `-kernel`/`-initrd` (the disk is still attached for its config partition).
    Direct,
}

/// CPU seconds of a VM's QEMU process, by kind of thread (`Vm::cpu_seconds`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuSeconds {
    /// The vCPU threads.
    pub vcpus: f64,
    /// Every other thread (the main loop: taps, virtqueues, timers).
    pub device: f64,
}

impl std::ops::Sub for CpuSeconds {
    type Output = CpuSeconds;
    fn sub(self, o: CpuSeconds) -> CpuSeconds {
        CpuSeconds { vcpus: self.vcpus - o.vcpus, device: self.device - o.device }
    }
}

/// One virtio NIC: the tap it is plugged into and its MAC.
#[derive(Clone, Debug)]
pub struct VmNic {
    /// Tap device name (in the namespace QEMU runs in).
    pub tap: String,
    /// Guest MAC.
    pub mac: String,
    /// MTU the device advertises to the guest (jumbo frames), if not the default.
    pub mtu: Option<u32>,
    /// Queue pairs (virtio multiqueue; the tap must be multi_queue when more than 1).
    pub queues: u16,
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    console: UnixStream,
    monitor: PathBuf,
    log: PathBuf,
    started: Instant,
}

/// Timeouts scale by `DIRECTOR_TIMEOUT_MULT` (e.g. 3 on a slow machine).
pub fn scaled(d: Duration) -> Duration {
    let m: f64 = std::env::var("DIRECTOR_TIMEOUT_MULT").ok().and_then(|v| v.parse().ok()).filter(|m: &f64| *m > 0.0).unwrap_or(1.0);
    d.mul_f64(m)
}

/// The built image directory (`target/image`).
pub fn image_dir() -> PathBuf {
    crate::proc::bin_dir().parent().map(|p| p.join("image")).unwrap_or_default()
}

fn connect(path: &Path, deadline: Instant) -> Result<UnixStream, LabError> {
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(LabError(format!("cannot connect to {}: {e}", path.display()))),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Vm {
    /// Boot `disk` (the VM's own copy) with `nics`, running QEMU inside network namespace
    /// `netns` (where the taps are), if any. Files go to `dir`.
    pub fn boot(dir: &Path, disk: &Path, firmware: Firmware, nics: &[VmNic], netns: Option<&str>) -> Result<Vm, LabError> {
        Self::boot_smp(dir, disk, firmware, nics, netns, 1)
    }

    /// `boot` with `vcpus` virtual CPUs.
    pub fn boot_smp(dir: &Path, disk: &Path, firmware: Firmware, nics: &[VmNic], netns: Option<&str>, vcpus: u16) -> Result<Vm, LabError> {
        let mut boot: Vec<String> = vec!["-drive".into(), format!("file={},format=raw,if=virtio", disk.display())];
        match firmware {
            Firmware::SeaBios => {}
            Firmware::Ovmf => boot.extend(["-bios", "/usr/share/ovmf/OVMF.fd"].map(String::from)),
            Firmware::Direct => {
                let img = image_dir();
                boot.push("-kernel".into());
                boot.push(img.join("vmlinuz").display().to_string());
                boot.push("-initrd".into());
                boot.push(img.join("initramfs.cpio.xz").display().to_string());
                boot.push("-append".into());
                // DIRECTOR_KERNEL_ARGS adds to the command line (e.g. "loglevel=7" to debug).
                boot.push(format!("console=ttyS0,115200n8 panic=10 quiet {}", std::env::var("DIRECTOR_KERNEL_ARGS").unwrap_or_default()));
            }
        }
        Self::start(dir, &boot, nics, netns, vcpus)
    }

    /// Boot the image's kernel with another initramfs (`target/image/<initramfs>`) and
    /// command line, and no disk: the lab's helper guests (`image lab-guest`).
    pub fn boot_guest(dir: &Path, initramfs: &str, append: &str, nics: &[VmNic], netns: Option<&str>) -> Result<Vm, LabError> {
        let img = image_dir();
        let boot = vec![
            "-kernel".into(),
            img.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            img.join(initramfs).display().to_string(),
            "-append".into(),
            format!("console=ttyS0,115200n8 panic=10 quiet {append}"),
        ];
        Self::start(dir, &boot, nics, netns, 1)
    }

    fn start(dir: &Path, boot: &[String], nics: &[VmNic], netns: Option<&str>, vcpus: u16) -> Result<Vm, LabError> {
        let sock = dir.join("console.sock");
        let monitor = dir.join("monitor.sock");
        let log = dir.join("console.log");
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(&monitor);
        let mut args: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            args.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        args.push("qemu-system-x86_64".into());
        let accel = if std::env::var("DIRECTOR_ACCEL").as_deref() == Ok("kvm") && Path::new("/dev/kvm").exists() { "kvm" } else { "tcg" };
        args.extend(
            ["-machine", "q35", "-accel", accel, "-m", "512", "-display", "none", "-nodefaults", "-device", "virtio-rng-pci"]
                .map(String::from),
        );
        args.extend(["-smp".to_string(), vcpus.max(1).to_string()]);
        // The hardware watchdog a trial boot starts (issue 14): it resets the machine.
        args.extend(["-device", "i6300esb", "-action", "watchdog=reset"].map(String::from));
        // Named threads ("CPU 0/TCG"), so the guest's CPU time can be read (`cpu_seconds`).
        args.extend(["-name", "director,debug-threads=on"].map(String::from));
        args.push("-chardev".into());
        // The console log is written by our reader below, not by QEMU's logfile= option,
        // which was seen to duplicate bytes when a write to the socket had to be retried.
        args.push(format!("socket,id=con,path={},server=on,wait=on", sock.display()));
        args.extend(["-serial", "chardev:con"].map(String::from));
        args.push("-monitor".into());
        args.push(format!("unix:{},server=on,wait=off", monitor.display()));
        args.extend_from_slice(boot);
        for (i, n) in nics.iter().enumerate() {
            args.push("-netdev".into());
            let mq = n.queues > 1;
            args.push(format!(
                "tap,id=n{i},ifname={},script=no,downscript=no{}",
                n.tap,
                if mq { format!(",queues={},vhost=off", n.queues) } else { String::new() }
            ));
            args.push("-device".into());
            args.push(format!(
                "virtio-net-pci,netdev=n{i},mac={}{}{}",
                n.mac,
                n.mtu.map(|m| format!(",host_mtu={m}")).unwrap_or_default(),
                if mq { format!(",mq=on,vectors={}", 2 * n.queues + 2) } else { String::new() }
            ));
        }
        let qlog = std::fs::File::create(dir.join("qemu.log")).map_err(|e| LabError(e.to_string()))?;
        let (prog, rest) = args.split_first().ok_or_else(|| LabError("empty qemu command".into()))?;
        let mut child = Command::new(prog)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(qlog.try_clone().map_err(|e| LabError(e.to_string()))?)
            .stderr(qlog)
            .spawn()
            .map_err(|e| LabError(format!("cannot start QEMU: {e} (install qemu-system-x86 and ovmf)")))?;
        let console = match connect(&sock, Instant::now() + Duration::from_secs(20)) {
            Ok(c) => c,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError(format!("{e}\n{}", std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default())));
            }
        };
        // Drain the console socket so QEMU never blocks on it, keeping everything in the log.
        let mut reader = console.try_clone().map_err(|e| LabError(e.to_string()))?;
        let mut file = std::fs::File::create(&log).map_err(|e| LabError(format!("{}: {e}", log.display())))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || file.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        Ok(Vm { child, console, monitor, log, started: Instant::now() })
    }

    /// CPU time QEMU's threads have used so far, in seconds: its vCPU threads (the guest's
    /// own work, and the device emulation it traps into) and the rest (the main loop that
    /// moves frames between the taps and the virtqueues, and helpers); `None` if it cannot
    /// be read.
    pub fn cpu_seconds(&self) -> Option<CpuSeconds> {
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = f64::from(u32::try_from(hz).ok().filter(|h| *h > 0)?);
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()?;
        let mut t = CpuSeconds::default();
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            // A helper thread may have ended since the listing: it is skipped, not an error.
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            let s = ticks as f64 / hz;
            if comm.starts_with("CPU ") {
                t.vcpus += s;
            } else {
                t.device += s;
            }
        }
        Some(t)
    }

    /// Everything the console printed so far.
    pub fn console_log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Wait until `marker` has appeared `nth` times (1-based) on the console; returns the time
    /// since power-on.
    pub fn wait_for_nth(&mut self, marker: &str, nth: usize, timeout: Duration) -> Result<Duration, LabError> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if self.console_log().matches(marker).count() >= nth {
                return Ok(self.started.elapsed());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(LabError(format!("QEMU exited ({st}) before \"{marker}\":\n{}", self.console_log())));
            }
            if Instant::now() > deadline {
                return Err(LabError(format!(
                    "no \"{marker}\" (x{nth}) on the console after {:?}:\n{}",
                    scaled(timeout),
                    self.console_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Type a console command that prints a table (`status`, `ipvs`) and wait until the table
    /// is whole (its last line, `<command>: end of table`, is out: the console can lag far
    /// behind a busy guest); the console log then, the table last.
    pub fn table(&mut self, command: &str, timeout: Duration) -> Result<String, LabError> {
        let end = format!("{command}: end of table");
        let nth = self.console_log().matches(&end).count() + 1;
        self.send(command)?;
        self.wait_for_nth(&end, nth, timeout)?;
        Ok(self.console_log())
    }

    /// Wait for the first `marker`.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Duration, LabError> {
        self.wait_for_nth(marker, 1, timeout)
    }

    /// A second handle on the serial console, for typing into it from another thread.
    pub fn console_writer(&self) -> Result<UnixStream, LabError> {
        self.console.try_clone().map_err(|e| LabError(format!("console: {e}")))
    }

    /// The console log file.
    pub fn console_path(&self) -> &Path {
        &self.log
    }

    /// Type a line on the serial console.
    pub fn send(&mut self, line: &str) -> Result<(), LabError> {
        self.console.write_all(format!("{line}\n").as_bytes()).map_err(|e| LabError(format!("console: {e}")))
    }

    /// Press the ACPI power button (QEMU monitor `system_powerdown`).
    pub fn press_power_button(&self) -> Result<(), LabError> {
        let mut m = connect(&self.monitor, Instant::now() + Duration::from_secs(5))?;
        m.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| LabError(e.to_string()))?;
        // The monitor drops input typed before its prompt: wait for it, type, read the echo.
        let prompt = |m: &mut UnixStream| -> Result<(), LabError> {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(6).any(|w| w == b"(qemu)") {
                let n = m.read(&mut buf).map_err(|e| LabError(format!("monitor: {e}")))?;
                if n == 0 {
                    return Err(LabError("monitor closed".into()));
                }
                seen.extend_from_slice(&buf[..n]);
            }
            Ok(())
        };
        prompt(&mut m)?;
        m.write_all(b"system_powerdown\n").map_err(|e| LabError(format!("monitor: {e}")))?;
        prompt(&mut m)
    }

    /// Pull the plug: SIGKILL QEMU, so whatever the guest had not yet written to its virtual
    /// disk is lost, as in a power cut.
    pub fn pull_plug(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for QEMU to exit by itself (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, LabError> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(LabError(format!("QEMU still running {:?} after poweroff:\n{}", scaled(timeout), self.console_log())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
