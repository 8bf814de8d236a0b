//! Packet captures the operator asks for from the page: one at a time, on a thread of its
//! own (the init goes on serving), answered when done with the pcap file left at
//! `CAPTURE_FILE` for the web page to hand over. A NIC the kernel owns (management; every NIC
//! in ipvs mode) is captured by netfw's kernel engine (`netfw::capture`); a dedicated NIC in
//! forwarder mode by the forwarder's own taps, asked on its control socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use director_messages::framing::{call, NETFW_SOCKET};
use director_messages::init::{CaptureNic, CaptureSpec, InitAnswer, CAPTURE_FILE};
use director_messages::netfw::{NetfwAnswer, NetfwRequest};
use netfw::capture::{capture_kernel_nic, Filter, Limits};

use crate::apply::Running;
use crate::log;
use crate::nics::Roles;

static BUSY: AtomicBool = AtomicBool::new(false);

fn role_name(nic: CaptureNic) -> &'static str {
    match nic {
        CaptureNic::VipSide => "VIP-facing",
        CaptureNic::RsSide => "RS-facing",
        CaptureNic::Management => "management",
    }
}

/// Start `spec` (answering `reply` when it is done), or answer at once why not.
pub fn start(spec: &CaptureSpec, roles: &Roles, running: Running, reply: Option<Sender<InitAnswer>>) {
    let answer = |a: InitAnswer| {
        if let Some(r) = &reply {
            let _ = r.send(a);
        }
    };
    let error = |message: String| InitAnswer::Error { message };
    let nic = match spec.nic {
        CaptureNic::VipSide => roles.vip_side.clone(),
        CaptureNic::RsSide => roles.rs_side.clone(),
        CaptureNic::Management => roles.management.clone(),
    };
    let Some(nic) = nic else { return answer(error(format!("this box has no {} NIC", role_name(spec.nic)))) };
    let by_netfw = spec.nic != CaptureNic::Management && running == Running::Forwarder;
    let (filter, limits) =
        match Filter::parse(&spec.filter, spec.value.as_deref()).and_then(|f| Ok((f, Limits::new(spec.packets, spec.seconds)?))) {
            Ok(x) => x,
            Err(e) => return answer(error(e.to_string())),
        };
    if BUSY.swap(true, Ordering::AcqRel) {
        return answer(error("another capture is running: one at a time".into()));
    }
    log::init(&format!(
        "capture on {nic}: {} {}, up to {} frames or {} s",
        spec.filter,
        spec.value.as_deref().unwrap_or(""),
        limits.packets,
        limits.seconds
    ));
    let spec = spec.clone();
    std::thread::spawn(move || {
        let a = if by_netfw { through_netfw(&spec, nic) } else { kernel(&nic, filter, limits) };
        BUSY.store(false, Ordering::Release);
        if let Some(r) = &reply {
            let _ = r.send(a);
        }
    });
}

fn ask_netfw(r: &NetfwRequest) -> Result<NetfwAnswer, String> {
    call(std::path::Path::new(NETFW_SOCKET), r, Duration::from_secs(5)).map_err(|e| format!("netfw: {e}"))
}

/// A dedicated NIC in forwarder mode: netfw taps it; the file is ready once it says so.
fn through_netfw(spec: &CaptureSpec, nic: String) -> InitAnswer {
    let error = |message: String| InitAnswer::Error { message };
    match ask_netfw(&NetfwRequest::Capture { spec: spec.clone() }) {
        Ok(NetfwAnswer::CaptureStarted) => {}
        Ok(NetfwAnswer::Error { message }) => return error(message),
        Ok(other) => return error(other.human()),
        Err(e) => return error(e),
    }
    let give_up = Instant::now() + Duration::from_secs(u64::from(spec.seconds) + 10);
    while Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(250));
        match ask_netfw(&NetfwRequest::CaptureResult) {
            Ok(NetfwAnswer::Capturing) => {}
            Ok(NetfwAnswer::Captured { file, packets }) => {
                log::init(&format!("capture on {nic} done: {packets} frame(s)"));
                return InitAnswer::Captured { file, nic, packets };
            }
            Ok(NetfwAnswer::Error { message }) => return error(message),
            Ok(other) => return error(other.human()),
            Err(e) => return error(e),
        }
    }
    error("netfw did not finish the capture in time".into())
}

/// A NIC the kernel owns.
fn kernel(nic: &str, filter: Filter, limits: Limits) -> InitAnswer {
    let pcap = match capture_kernel_nic(nic, filter, limits) {
        Ok(p) => p,
        Err(e) => return InitAnswer::Error { message: e.to_string() },
    };
    let packets = pcap.packets();
    match std::fs::write(CAPTURE_FILE, pcap.into_bytes()) {
        Ok(()) => {
            log::init(&format!("capture on {nic} done: {packets} frame(s)"));
            InitAnswer::Captured { file: CAPTURE_FILE.into(), nic: nic.to_string(), packets }
        }
        Err(e) => InitAnswer::Error { message: format!("{CAPTURE_FILE}: {e}") },
    }
}
