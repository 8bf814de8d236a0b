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

use director_config::Io;
use netfw_kernel::rtnl::XdpMode;

use super::ring::{PacketRing, RingError};
use super::xsk::{XdpPort, XskError};

/// The opened NICs (VIP-facing first), all on one backend.
#[derive(Debug)]
pub enum Opened {
    /// AF_XDP on each.
    Xdp(Vec<XdpPort>),
    /// AF_PACKET rings on each; `why` says why not AF_XDP.
    Packet(Vec<PacketRing>, String),
}

impl Opened {
    /// How the start line describes the backend of NIC `i`.
    pub fn describe(&self, i: usize) -> String {
        match self {
            Opened::Xdp(p) => p.get(i).map(XdpPort::describe).unwrap_or_default(),
            Opened::Packet(_, why) => format!("AF_PACKET ({why})"),
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

/// Open `nics` (distinct names, VIP-facing first) the way `io` asks.
pub fn open(nics: &[&str], io: Io) -> Result<Opened, OpenError> {
    let virtual_nic = nics.iter().find(|n| !has_driver(n));
    let why = match (io, virtual_nic) {
        (Io::AfPacket, _) => "\"io\": \"af_packet\" in the config".to_string(),
        (Io::Auto, Some(v)) => format!("{v} is a virtual NIC: its peer's merged frames need AF_PACKET"),
        (Io::Auto | Io::AfXdp, _) => match open_xdp(nics, io) {
            Ok(ports) => return Ok(Opened::Xdp(ports)),
            Err(e) if io == Io::AfXdp => return Err(OpenError::Xsk(e)),
            Err(e) => format!("AF_XDP could not be set up: {e}"),
        },
    };
    let rings = nics.iter().map(|n| PacketRing::open(n)).collect::<Result<Vec<_>, _>>().map_err(OpenError::Ring)?;
    Ok(Opened::Packet(rings, why))
}

fn open_xdp(nics: &[&str], io: Io) -> Result<Vec<XdpPort>, XskError> {
    nics.iter()
        .map(|n| {
            let mode = if io == Io::AfXdp && !has_driver(n) { XdpMode::Generic } else { XdpMode::Driver };
            XdpPort::open(n, mode)
        })
        .collect()
}
