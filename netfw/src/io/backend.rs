//! Which I/O backend the forwarder's NICs get, and why: the box picks by itself and the start
//! line says what it picked.
//!
//! `auto` (the default): AF_XDP with native XDP when every dedicated NIC has a driver (a
//! `device` in sysfs: virtio_net, ixgbe, i40e, ice, mlx5, ...), AF_PACKET otherwise, and
//! AF_PACKET when AF_XDP cannot be set up (the reason is reported). Virtual NICs (veth, tap,
//! bridges) get AF_PACKET in `auto`: their peers hand over merged super-frames (GRO/TSO on the
//! far side) that an AF_XDP frame cannot hold and the kernel would drop, while AF_PACKET
//! delivers them whole and netfw splits them. `af_xdp` insists (generic XDP where there is no
//! driver); `af_packet` never tries AF_XDP.
//!
//! Every NIC of the box gets the same backend, so one loop serves them all.
//!
//! Either way the kernel forwards established flows itself where it can (`kernel_flows`): in
//! XDP with AF_XDP, in tc with AF_PACKET (`tc_path`).

use director_config::Io;
use netfw_kernel::rtnl::XdpMode;

use super::kernel_flows::KernelFlows;
use super::nic::ifindex;
use super::programs::{self, Hook};
use super::ring::{PacketRing, RingError};
use super::tc_path::TcPath;
use super::xsk::{XdpPort, XskError};

/// Whether the kernel forwards established flows itself, and why not.
#[derive(Debug)]
pub enum InKernel {
    /// It does, with these maps.
    Yes(KernelFlows),
    /// It does not: why.
    No(String),
}

impl InKernel {
    /// How the start line says it.
    pub fn describe(&self) -> String {
        match self {
            InKernel::Yes(k) => format!("established flows forwarded in {} (up to {} at once)", k.hook(), k.capacity()),
            InKernel::No(why) => format!("established flows forwarded by netfw ({why})"),
        }
    }
}

/// The opened NICs (VIP-facing first), all on one backend.
#[derive(Debug)]
pub enum Opened {
    /// AF_XDP on each, and the kernel's part in forwarding.
    Xdp(Vec<XdpPort>, InKernel),
    /// AF_PACKET rings on each; `why` says why not AF_XDP; and the kernel's part.
    Packet(Vec<PacketRing>, String, InKernel),
}

impl Opened {
    /// How the start line describes the backend of NIC `i`.
    pub fn describe(&self, i: usize) -> String {
        match self {
            Opened::Xdp(p, _) => p.get(i).map(XdpPort::describe).unwrap_or_default(),
            Opened::Packet(_, why, _) => format!("AF_PACKET ({why})"),
        }
    }

    /// The kernel's part in forwarding.
    pub fn in_kernel(&self) -> &InKernel {
        match self {
            Opened::Xdp(_, k) | Opened::Packet(_, _, k) => k,
        }
    }
}

/// Why the NICs could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// AF_PACKET failed.
    Ring(RingError),
    /// The config asks for AF_XDP and it failed.
    Xsk(XskError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Ring(e) => e.fmt(f),
            OpenError::Xsk(e) => write!(f, "{e} (the config asks for \"io\": \"af_xdp\"; \"auto\" would fall back to AF_PACKET)"),
        }
    }
}

/// Does `nic` have a driver (not a virtual NIC)?
pub fn has_driver(nic: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{nic}/device")).exists()
}

/// What the kernel-forwarding maps are made with.
#[derive(Clone, Copy, Debug)]
pub struct KernelSetup {
    /// Flows the kernel may hold (the flow table's capacity; capped).
    pub flows: u32,
    /// The VIP-facing NIC's MAC (the program forwards only frames sent to it).
    pub vip_mac: [u8; 6],
    /// CLOCK_MONOTONIC at netfw's time zero, in ns.
    pub zero_ns: u64,
}

/// Will `open` try AF_XDP on `nics` (distinct names, VIP-facing first) for `io`? If not,
/// why AF_PACKET.
pub fn plan(nics: &[&str], io: Io) -> Result<(), String> {
    match (io, nics.iter().find(|n| !has_driver(n))) {
        (Io::AfPacket, _) => Err("\"io\": \"af_packet\" in the config".to_string()),
        (Io::Auto, Some(v)) => Err(format!("{v} is a virtual NIC: its peer's merged frames need AF_PACKET")),
        (Io::Auto | Io::AfXdp, _) => Ok(()),
    }
}

/// Open `nics` (distinct names, VIP-facing first) the way `io` asks.
pub fn open(nics: &[&str], io: Io, kernel: KernelSetup) -> Result<Opened, OpenError> {
    let why = match plan(nics, io) {
        Err(why) => why,
        Ok(()) => match open_xdp(nics, io, kernel) {
            Ok((ports, k)) => return Ok(Opened::Xdp(ports, k)),
            Err(e) if io == Io::AfXdp => return Err(OpenError::Xsk(e)),
            Err(e) => format!("AF_XDP could not be set up: {e}"),
        },
    };
    let rings = nics.iter().map(|n| PacketRing::open(n)).collect::<Result<Vec<_>, _>>().map_err(OpenError::Ring)?;
    let in_kernel = match (nics.first(), rings.first()) {
        (Some(nic), Some(ring)) => open_tc(nics, nic, ring, kernel),
        _ => InKernel::No("no NIC".into()),
    };
    Ok(Opened::Packet(rings, why, in_kernel))
}

/// The tc path on the VIP-facing NIC `nic` (its socket `ring`).
fn open_tc(nics: &[&str], nic: &str, ring: &PacketRing, k: KernelSetup) -> InKernel {
    let out = match nics.last().map(|n| ifindex(n)).transpose() {
        Ok(out) => u32::try_from(out.unwrap_or(0)).unwrap_or(0),
        Err(e) => return InKernel::No(e.to_string()),
    };
    let mut kf = match KernelFlows::new(k.flows, out, k.zero_ns) {
        Ok(kf) => kf,
        Err(e) => return InKernel::No(e.to_string()),
    };
    match TcPath::attach(nic, ring, &kf, k.vip_mac) {
        Ok(path) => {
            kf.keep(path);
            InKernel::Yes(kf)
        }
        Err(e) => InKernel::No(format!("the tc path could not be set up: {e}")),
    }
}

fn open_xdp(nics: &[&str], io: Io, k: KernelSetup) -> Result<(Vec<XdpPort>, InKernel), XskError> {
    let out = nics.last().map(|n| ifindex(n)).transpose().map_err(|e| XskError::Nic(e.to_string()))?.unwrap_or(0);
    let out = u32::try_from(out).unwrap_or(0);
    let mut in_kernel = match KernelFlows::new(k.flows, out, k.zero_ns) {
        Ok(kf) => InKernel::Yes(kf),
        Err(e) => InKernel::No(e.to_string()),
    };
    let mut ports = Vec::new();
    for (i, n) in nics.iter().enumerate() {
        let mode = if io == Io::AfXdp && !has_driver(n) { XdpMode::Generic } else { XdpMode::Driver };
        // The VIP-facing NIC forwards established flows; the RS-facing one only steers.
        let opened = match &in_kernel {
            InKernel::Yes(kf) if i == 0 => {
                match XdpPort::open(n, mode, |xsks| programs::forward(kf.maps(k.vip_mac), Hook::Xdp { xsks })) {
                    Err(XskError::Bpf(e)) => {
                        // A kernel whose verifier refuses the program still gets AF_XDP.
                        in_kernel = InKernel::No(format!("the kernel refused the forwarding program: {e}"));
                        XdpPort::open(n, mode, programs::steer)
                    }
                    other => other,
                }
            }
            _ => XdpPort::open(n, mode, programs::steer),
        };
        ports.push(opened?);
    }
    Ok((ports, in_kernel))
}
