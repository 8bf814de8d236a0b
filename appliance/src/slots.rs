//! The system slots at boot (see `director_config::boot` for the layout): which slot is
//! running, starting a pending trial, noticing a failed one, and confirming a trial that is
//! ready and forwarding.
//!
//! A trial never changes what the firmware boots until it confirms:
//! 1. The web page writes the new system into the inactive slot, verifies it, records a
//!    pending trial and reboots.
//! 2. The default slot's init, early at boot, marks the trial started, starts the hardware
//!    watchdog with its lock (nothing can stop it until a reset) and kexecs the new slot with
//!    `director.trial=1`.
//! 3. The trial system feeds the watchdog and, once ready and forwarding with the config for
//!    `CONFIRM_STEADY`, makes its slot the default: the update is done.
//! 4. If it hangs (the watchdog resets the box), crashes (`panic=10` reboots it) or is not
//!    ready within `TRIAL_LIMIT` (it records why and reboots itself), the firmware boots the old
//!    default slot, whose init finds the trial started but never confirmed and reports the
//!    update as failed and rolled back.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{log, mounts, sys};
use director_config::boot::{self, BootState, Contents, Outcome, Slot, Stage, ESP_DIR, ESP_PARTNAME};

/// The watchdog modules' parameters: the box resets 20 s after the last feed, and the timer
/// cannot be stopped once started.
pub const WATCHDOG_PARAMS: &str = "heartbeat=20 nowayout=1";
/// How long a trial system has to be ready and forwarding.
pub const TRIAL_LIMIT: Duration = Duration::from_secs(240);
/// How long it must have been ready and forwarding, without a break, before it confirms.
pub const CONFIRM_STEADY: Duration = Duration::from_secs(5);
/// How often a trial checks whether it is ready.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the watchdog is fed.
const FEED_EVERY: Duration = Duration::from_secs(2);
/// The init's main loop must have turned within this long for the watchdog to be fed.
const LOOP_STALL: Duration = Duration::from_secs(20);

/// A file on the EFI system partition.
pub fn on_esp(rel: &str) -> PathBuf {
    std::path::Path::new(ESP_DIR).join(rel)
}

/// The EFI system partition's block device, found by its GPT name.
fn find_esp() -> Option<String> {
    mounts::find_partition(ESP_PARTNAME)
}

/// Mount the EFI partition `dev` at `ESP_DIR`.
fn mount_esp(dev: &str) -> Result<(), String> {
    sys::mount(dev, ESP_DIR, "vfat", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "flush,iocharset=utf8")
}

/// The boot state.
fn load_state() -> Result<BootState, String> {
    boot::load(Path::new(ESP_DIR))
}

/// Save the boot state.
fn save_state(s: &BootState) -> Result<(), String> {
    boot::save(Path::new(ESP_DIR), s)
}

/// What the boot found out about the slots.
#[derive(Debug, Default)]
pub struct Slots {
    /// The running slot (None: not booted from a slot, or no EFI partition).
    pub running: Option<Slot>,
    /// This boot is a trial.
    pub trial: bool,
    /// When the trial's conditions first all held (for `CONFIRM_STEADY`).
    steady_since: Option<Instant>,
    /// The trial confirmed or gave up.
    pub settled: bool,
    started: Option<Instant>,
    last_check: Option<Instant>,
}

/// When the init's main loop last turned (ms since the trial's start), for the feeder.
static LOOP_BEAT: AtomicU64 = AtomicU64::new(0);

/// Mount the EFI partition, then act on the boot state: start a pending trial (does not return
/// when the kexec works), or record a trial that failed. Early at boot, before the NICs.
pub fn at_boot() -> Slots {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (running, trial) = boot::from_cmdline(&cmdline);
    let mut out = Slots { running, trial, ..Slots::default() };
    let Some(dev) = find_esp() else { return out };
    if let Err(e) = mount_esp(&dev) {
        log::init(&format!("EFI partition {dev}: {e}; updates are not possible"));
        return out;
    }
    let mut state = match load_state() {
        Ok(s) => s,
        Err(e) => {
            log::init(&format!("{e}; updates are not possible until it is rewritten"));
            return out;
        }
    };
    let Some(slot) = running else {
        log::init("not booted from a system slot (kernel started directly): updates are not possible");
        return out;
    };
    if trial {
        if state.trial.as_ref().is_some_and(|t| t.slot == slot && t.stage == Stage::Started) {
            log::init(&format!("TRIAL of slot {}: confirms when ready and forwarding, within {} s", slot.name(), TRIAL_LIMIT.as_secs()));
            out.started = Some(Instant::now());
            feed_watchdog_while_alive();
        } else {
            log::init("started as a trial, but no trial is recorded: running as a normal boot");
            out.trial = false;
        }
        return out;
    }
    match state.trial.clone() {
        Some(t) if t.stage == Stage::Pending && t.slot != slot && state.slot(t.slot).contents == Contents::Verified => {
            start_trial(&mut state, t.slot, &t.version, &cmdline);
        }
        Some(t) => {
            // Booted by the firmware with a trial started: it never confirmed.
            let why = t.failure.clone().unwrap_or_else(|| {
                if watchdog_fired() {
                    "it stopped responding and the hardware watchdog reset the box".into()
                } else {
                    "it crashed or was reset before it was ready".into()
                }
            });
            let message = format!("update to {} failed, rolled back to {}: {why}", t.version, t.from);
            log::init(&message);
            state.trial = None;
            state.last = Some(Outcome { version: t.version, ok: false, message, reported: false });
            if let Err(e) = save_state(&state) {
                log::init(&e);
            }
        }
        None => {}
    }
    out
}

/// Mark the trial started, start the watchdog, kexec the slot. Returns only on failure (which
/// is recorded as the update's outcome).
fn start_trial(state: &mut BootState, slot: Slot, version: &str, cmdline: &str) {
    let from = state.trial.as_ref().map(|t| t.from.clone()).unwrap_or_default();
    if let Some(t) = state.trial.as_mut() {
        t.stage = Stage::Started;
    }
    let fail = |state: &mut BootState, why: String| {
        let message = format!("update to {version} failed, staying on {from}: {why}");
        log::init(&message);
        state.trial = None;
        state.last = Some(Outcome { version: version.to_string(), ok: false, message, reported: false });
        if let Err(e) = save_state(state) {
            log::init(&e);
        }
    };
    if let Err(e) = save_state(state) {
        return fail(state, format!("cannot record the trial: {e}"));
    }
    let files = File::open(on_esp(&slot.kernel())).and_then(|k| File::open(on_esp(&slot.initrd())).map(|i| (k, i)));
    let (k, i) = match files {
        Ok(f) => f,
        Err(e) => return fail(state, format!("cannot open slot {}: {e}", slot.name())),
    };
    let trial_cmdline = boot::trial_cmdline(cmdline, slot);
    if let Err(e) = sys::kexec_file_load(&k, &i, &trial_cmdline) {
        return fail(state, format!("the kernel refused to load it (kexec_file_load: {e})"));
    }
    // Started here, it runs on through the kexec (the hardware lock): the trial must feed it.
    let watchdog = open_watchdog();
    log::init(&format!("starting {version} from slot {} for a trial (kexec)", slot.name()));
    sys::sync();
    let _ = sys::umount(ESP_DIR);
    sys::reboot(libc::LINUX_REBOOT_CMD_KEXEC);
    let e = std::io::Error::last_os_error();
    // Still here: this system goes on, and now it must feed the watchdog it started.
    if let Some(f) = watchdog {
        feed_while_alive(f);
    }
    let _ = mount_esp(&find_esp().unwrap_or_default());
    fail(state, format!("reboot into it failed: {e}"));
}

/// Whether the last reset was the watchdog's (the driver reports it as the card's reset).
fn watchdog_fired() -> bool {
    std::fs::read_to_string("/sys/class/watchdog/watchdog0/bootstatus")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(|b| b & 0x20 != 0) // WDIOF_CARDRESET
}

/// Open (and so start) the hardware watchdog; None, said on the console, if there is none.
fn open_watchdog() -> Option<File> {
    match File::options().write(true).open("/dev/watchdog") {
        Ok(f) => Some(f),
        Err(e) => {
            log::init(&format!("no hardware watchdog ({e}): a trial that hangs will not be reset"));
            None
        }
    }
}

/// Open the watchdog and feed it while the init is alive (`feed_while_alive`).
fn feed_watchdog_while_alive() {
    if let Some(f) = open_watchdog() {
        feed_while_alive(f);
    }
}

/// Feed the watchdog from a thread for as long as the init's main loop turns (and, before it
/// first turns, for the trial's time limit).
fn feed_while_alive(mut f: File) {
    let start = *BEAT_START.get_or_init(Instant::now);
    let stall = u64::try_from(LOOP_STALL.as_millis()).unwrap_or(u64::MAX);
    std::thread::spawn(move || loop {
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let beat = LOOP_BEAT.load(Ordering::Relaxed);
        let alive = if beat == 0 { start.elapsed() < TRIAL_LIMIT } else { now.saturating_sub(beat) < stall };
        if alive {
            let _ = f.write_all(b"\0");
        }
        std::thread::sleep(FEED_EVERY);
    });
}

/// When the watchdog feeder started (the origin of `LOOP_BEAT`).
static BEAT_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// What a trial checks each turn of the main loop.
#[derive(Debug)]
pub enum TrialCheck {
    /// Ready and forwarding (or nothing to forward).
    Ready,
    /// Not yet, and why.
    NotYet(String),
}

impl Slots {
    /// Called each turn of the init's main loop, with whether the box is ready and forwarding:
    /// feeds the watchdog's liveness, confirms the trial or gives up on it. Returns an event
    /// to record, and whether to reboot (the trial failed).
    pub fn tick(&mut self, check: impl FnOnce() -> TrialCheck) -> Option<(bool, String, bool)> {
        if let Some(s) = BEAT_START.get() {
            LOOP_BEAT.store(u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
        }
        if !self.trial || self.settled {
            return None;
        }
        let started = self.started?;
        // Checked once a second, not on every turn (each check asks the data plane).
        if self.last_check.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return None;
        }
        self.last_check = Some(Instant::now());
        let why = match check() {
            TrialCheck::Ready => {
                let since = *self.steady_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= CONFIRM_STEADY {
                    self.settled = true;
                    return Some(self.confirm());
                }
                return None;
            }
            TrialCheck::NotYet(why) => why,
        };
        self.steady_since = None;
        if started.elapsed() < TRIAL_LIMIT {
            return None;
        }
        self.settled = true;
        let why = format!("it was not ready and forwarding within {} s ({why})", TRIAL_LIMIT.as_secs());
        let mut state = load_state().ok()?;
        if let Some(t) = state.trial.as_mut() {
            t.failure = Some(why.clone());
        }
        if let Err(e) = save_state(&state) {
            log::init(&e);
        }
        Some((false, format!("TRIAL FAILED: {why}; rebooting into the previous system"), true))
    }

    /// The trial is ready: its slot becomes the default.
    fn confirm(&mut self) -> (bool, String, bool) {
        let Some(slot) = self.running else { return (false, "no slot".into(), false) };
        let mut state = match load_state() {
            Ok(s) => s,
            Err(e) => return (false, format!("cannot confirm the trial: {e}"), false),
        };
        let Some(t) = state.trial.take() else { return (false, "cannot confirm the trial: it is no longer recorded".into(), false) };
        if let Err(e) = boot::set_default(Path::new(ESP_DIR), slot) {
            return (false, format!("cannot confirm the trial: {e}"), false);
        }
        state.default = slot;
        let message = format!("updated from {} to {}: slot {} confirmed and is now the default", t.from, t.version, slot.name());
        state.last = Some(Outcome { version: t.version, ok: true, message: message.clone(), reported: true });
        if let Err(e) = save_state(&state) {
            return (false, format!("{message}, but the boot state was not saved: {e}"), false);
        }
        (true, message, false)
    }
}

/// The last update's outcome, once, for the event log (marked reported).
pub fn unreported_outcome() -> Option<Outcome> {
    let mut state = load_state().ok()?;
    let last = state.last.as_mut().filter(|o| !o.reported)?;
    last.reported = true;
    let out = last.clone();
    save_state(&state).ok()?;
    Some(out)
}
