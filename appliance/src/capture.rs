//! Packet captures the operator asks for from the page: one at a time, on a thread of its
//! own (the init goes on serving), answered when done with the pcap file left at
//! `CAPTURE_FILE` for the web page to hand over. A NIC the kernel owns (management; every NIC
//! in ipvs mode) is captured by netfw's kernel engine (`netfw::capture`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use director_messages::init::{CaptureNic, CaptureSpec, InitAnswer, CAPTURE_FILE};
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
    if spec.nic != CaptureNic::Management && running == Running::Forwarder {
        return answer(error(format!(
            "capturing {nic} ({}) in forwarder mode is not available yet: netfw owns that NIC and the kernel does not see its frames; capture it in ipvs mode, or capture the management NIC",
            role_name(spec.nic)
        )));
    }
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
    std::thread::spawn(move || {
        let a = match capture_kernel_nic(&nic, filter, limits) {
            Ok(pcap) => {
                let packets = pcap.packets();
                match std::fs::write(CAPTURE_FILE, pcap.into_bytes()) {
                    Ok(()) => {
                        log::init(&format!("capture on {nic} done: {packets} frame(s)"));
                        InitAnswer::Captured { file: CAPTURE_FILE.into(), nic, packets }
                    }
                    Err(e) => InitAnswer::Error { message: format!("{CAPTURE_FILE}: {e}") },
                }
            }
            Err(e) => InitAnswer::Error { message: e.to_string() },
        };
        BUSY.store(false, Ordering::Release);
        if let Some(r) = &reply {
            let _ = r.send(a);
        }
    });
}
