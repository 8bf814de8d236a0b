//! Kernel network configuration over rtnetlink (netlink-packet-route): links up, addresses and
//! the default route (the appliance's management NIC; the director's DIP and VIPs in IPVS
//! mode; the lab's real-server guest); netfw's XDP and tc programs on its NICs. A refusal
//! comes back as the kernel's errno, with what was asked.

use std::fmt;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, MacVlanMode};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Why an rtnetlink request failed.
#[derive(Debug)]
pub enum RtnlError {
    /// The NIC does not exist.
    NoNic(String),
    /// The netlink socket could not be used.
    Socket {
        /// What was asked.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The kernel refused.
    Refused {
        /// What was asked.
        what: String,
        /// The kernel's errno.
        error: std::io::Error,
    },
    /// The kernel's answer could not be read.
    BadReply {
        /// What was asked.
        what: String,
        /// The parser's complaint.
        message: String,
    },
}

impl fmt::Display for RtnlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtnlError::NoNic(n) => write!(f, "no NIC {n}"),
            RtnlError::Socket { what, error } => write!(f, "{what}: netlink socket: {error}"),
            RtnlError::Refused { what, error } => write!(f, "{what}: the kernel said \"{error}\""),
            RtnlError::BadReply { what, message } => write!(f, "{what}: unreadable netlink reply: {message}"),
        }
    }
}

impl std::error::Error for RtnlError {}

/// Interface index of a NIC.
pub fn ifindex(name: &str) -> Result<u32, RtnlError> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| RtnlError::NoNic(name.to_string()))
}

fn request(what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<(), RtnlError> {
    let sock_err = |error| RtnlError::Socket { what: what.to_string(), error };
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(sock_err)?;
    sock.bind_auto().map_err(sock_err)?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(sock_err)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send(&buf, 0).map_err(sock_err)?;
    let mut rx = vec![0u8; 8192];
    let n = sock.recv(&mut &mut rx[..], 0).map_err(sock_err)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rx.get(..n).unwrap_or_default())
        .map_err(|e| RtnlError::BadReply { what: what.to_string(), message: e.to_string() })?;
    match reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(RtnlError::Refused { what: what.to_string(), error: std::io::Error::from_raw_os_error(-code.get()) }),
        },
        _ => Ok(()),
    }
}

/// Bring `nic` up (administratively).
pub fn set_link_up(nic: &str) -> Result<(), RtnlError> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex(nic)?;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    request(&format!("link {nic} up"), RouteNetlinkMessage::SetLink(m), 0)
}

/// Take `nic` down (administratively).
pub fn set_link_down(nic: &str) -> Result<(), RtnlError> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex(nic)?;
    m.header.flags = LinkFlags::empty();
    m.header.change_mask = LinkFlags::Up;
    request(&format!("link {nic} down"), RouteNetlinkMessage::SetLink(m), 0)
}

/// A macvlan `name` (bridge mode) on `lower` with MAC `mac`, left down; an existing link of
/// that name is replaced.
pub fn add_macvlan(name: &str, lower: &str, mac: [u8; 6]) -> Result<(), RtnlError> {
    if ifindex(name).is_ok() {
        del_link(name)?;
    }
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::Link(ifindex(lower)?));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(MacVlanMode::Bridge)])),
    ]));
    request(&format!("macvlan {name} on {lower}"), RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
}

/// Delete the link `name`.
pub fn del_link(name: &str) -> Result<(), RtnlError> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex(name)?;
    request(&format!("delete link {name}"), RouteNetlinkMessage::DelLink(m), 0)
}

/// Put `addr/prefix` on `nic` (replacing the same address if present).
pub fn add_address(nic: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), RtnlError> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix;
    m.header.index = ifindex(nic)?;
    m.attributes.push(AddressAttribute::Local(addr.into()));
    m.attributes.push(AddressAttribute::Address(addr.into()));
    let bcast = u32::from(addr) | (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0));
    m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(bcast)));
    request(&format!("address {addr}/{prefix} on {nic}"), RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Remove `addr/prefix` from `nic`.
pub fn del_address(nic: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), RtnlError> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix;
    m.header.index = ifindex(nic)?;
    m.attributes.push(AddressAttribute::Local(addr.into()));
    request(&format!("remove {addr}/{prefix} from {nic}"), RouteNetlinkMessage::DelAddress(m), 0)
}

/// A default route via `gw` in the main table.
fn default_route(gw: Ipv4Addr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: AddressFamily::Inet,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Static,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    m
}

/// Default route via `gw` (replacing any).
pub fn set_default_route(gw: Ipv4Addr) -> Result<(), RtnlError> {
    request(&format!("default route via {gw}"), RouteNetlinkMessage::NewRoute(default_route(gw)), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Default route via `gw` out of `nic`, taken as on that link even while `nic` holds no
/// address of its subnet (an HA backup in ipvs mode: its VIPs' link is down).
pub fn set_default_route_onlink(gw: Ipv4Addr, nic: &str) -> Result<(), RtnlError> {
    let mut m = default_route(gw);
    m.header.flags = netlink_packet_route::route::RouteFlags::Onlink;
    m.attributes.push(RouteAttribute::Oif(ifindex(nic)?));
    request(&format!("default route via {gw} dev {nic} onlink"), RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
}

/// How an XDP program runs on a NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before any socket buffer exists (XDP_FLAGS_DRV_MODE).
    Driver,
    /// In the generic receive path, on socket buffers (XDP_FLAGS_SKB_MODE).
    Generic,
}

impl XdpMode {
    fn flag(self) -> u32 {
        match self {
            XdpMode::Generic => 2,
            XdpMode::Driver => 4,
        }
    }
    /// As the start line says it.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Driver => "native",
            XdpMode::Generic => "generic",
        }
    }
}

fn set_xdp(nic: &str, fd: i32, mode: XdpMode, what: &str) -> Result<(), RtnlError> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex(nic)?;
    m.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Fd(fd), LinkXdp::Flags(mode.flag())]));
    request(what, RouteNetlinkMessage::SetLink(m), 0)
}

/// Attach the XDP program `prog_fd` to `nic` in `mode` (replacing one left by a previous run).
/// The attachment outlives the process: `detach_xdp` it when done.
pub fn attach_xdp(nic: &str, prog_fd: i32, mode: XdpMode) -> Result<(), RtnlError> {
    set_xdp(nic, prog_fd, mode, &format!("attach an XDP program to {nic} ({} mode)", mode.name()))
}

/// Remove the XDP program attached to `nic` in `mode`, if any.
pub fn detach_xdp(nic: &str, mode: XdpMode) -> Result<(), RtnlError> {
    set_xdp(nic, -1, mode, &format!("detach the XDP program of {nic}"))
}

/// `ETH_P_ALL`: a tc filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;

fn clsact(nic: &str) -> Result<TcMessage, RtnlError> {
    let mut m = TcMessage::with_index(i32::try_from(ifindex(nic)?).unwrap_or(0));
    m.header.handle = TcHandle { major: 0xffff, minor: 0 };
    m.header.parent = TcHandle::CLSACT;
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    Ok(m)
}

/// Run the tc classifier `prog_fd` (direct action) on every frame `nic` receives, after the
/// kernel has built its socket buffer: a `clsact` qdisc (replacing one a previous run left,
/// with its filters) and one `bpf` filter on its ingress. Outlives the process: `detach_tc`.
pub fn attach_tc_ingress(nic: &str, prog_fd: i32, name: &str) -> Result<(), RtnlError> {
    detach_tc(nic)?;
    request(&format!("add a clsact qdisc to {nic}"), RouteNetlinkMessage::NewQueueDiscipline(clsact(nic)?), NLM_F_CREATE | NLM_F_EXCL)?;
    request(
        &format!("attach a tc program to {nic}'s ingress"),
        RouteNetlinkMessage::NewTrafficFilter(bpf_filter(nic, prog_fd, name)?),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// As `attach_tc_ingress`, but in place of the program there (if any) in one step: no frame
/// passes between the old program and the new one without either.
pub fn replace_tc_ingress(nic: &str, prog_fd: i32, name: &str) -> Result<(), RtnlError> {
    match request(&format!("add a clsact qdisc to {nic}"), RouteNetlinkMessage::NewQueueDiscipline(clsact(nic)?), NLM_F_CREATE) {
        Err(RtnlError::Refused { error, .. }) if error.raw_os_error() == Some(libc::EEXIST) => {}
        other => other?,
    }
    request(
        &format!("put a tc program on {nic}'s ingress"),
        RouteNetlinkMessage::NewTrafficFilter(bpf_filter(nic, prog_fd, name)?),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// The one `bpf` filter (priority 1, handle 1, every protocol, direct action) on `nic`'s ingress.
fn bpf_filter(nic: &str, prog_fd: i32, name: &str) -> Result<TcMessage, RtnlError> {
    let mut f = TcMessage::with_index(i32::try_from(ifindex(nic)?).unwrap_or(0));
    f.header.parent = TcHandle { major: 0xffff, minor: TcHandle::MIN_INGRESS };
    f.header.handle = TcHandle { major: 0, minor: 1 };
    // Priority 1, every protocol.
    f.header.info = (1 << 16) | u32::from(ETH_P_ALL.to_be());
    f.attributes.push(TcAttribute::Kind("bpf".into()));
    f.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(u32::try_from(prog_fd).unwrap_or(u32::MAX))),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    Ok(f)
}

/// Remove `nic`'s `clsact` qdisc and every tc program on it, if there is one.
pub fn detach_tc(nic: &str) -> Result<(), RtnlError> {
    match request(&format!("remove the clsact qdisc of {nic}"), RouteNetlinkMessage::DelQueueDiscipline(clsact(nic)?), 0) {
        // None there (ENOENT; EINVAL from kernels that say so for a missing clsact).
        Err(RtnlError::Refused { error, .. }) if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        other => other,
    }
}
