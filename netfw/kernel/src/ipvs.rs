//! The IPVS generic netlink family (`include/uapi/linux/ip_vs.h`): services and
//! destinations, read and written, each refusal in words.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use crate::genl::{Attrs, Msg, Socket, F_ACK, F_DUMP, F_REQUEST};
use netfw_core::model::{Forwarding, Protocol};

// include/uapi/linux/ip_vs.h
const CMD_NEW_SERVICE: u8 = 1;
const CMD_SET_SERVICE: u8 = 2;
const CMD_DEL_SERVICE: u8 = 3;
const CMD_GET_SERVICE: u8 = 4;
const CMD_NEW_DEST: u8 = 5;
const CMD_SET_DEST: u8 = 6;
const CMD_DEL_DEST: u8 = 7;
const CMD_GET_DEST: u8 = 8;
const CMD_NEW_DAEMON: u8 = 9;
const CMD_DEL_DAEMON: u8 = 10;
const ATTR_DAEMON: u16 = 3;
const DAEMON_STATE: u16 = 1;
const DAEMON_MCAST_IFN: u16 = 2;
const DAEMON_SYNC_ID: u16 = 3;
const ATTR_SERVICE: u16 = 1;
const ATTR_DEST: u16 = 2;
const SVC_AF: u16 = 1;
const SVC_PROTOCOL: u16 = 2;
const SVC_ADDR: u16 = 3;
const SVC_PORT: u16 = 4;
const SVC_FWMARK: u16 = 5;
const SVC_SCHED_NAME: u16 = 6;
const SVC_FLAGS: u16 = 7;
const SVC_TIMEOUT: u16 = 8;
const SVC_NETMASK: u16 = 9;
const SVC_STATS: u16 = 10;
const DEST_ADDR: u16 = 1;
const DEST_PORT: u16 = 2;
const DEST_FWD_METHOD: u16 = 3;
const DEST_WEIGHT: u16 = 4;
const DEST_U_THRESH: u16 = 5;
const DEST_L_THRESH: u16 = 6;
const DEST_ACTIVE_CONNS: u16 = 7;
const DEST_INACT_CONNS: u16 = 8;
const DEST_STATS: u16 = 10;
const DEST_ADDR_FAMILY: u16 = 11;
const STATS_CONNS: u16 = 1;
const STATS_INPKTS: u16 = 2;
const STATS_INBYTES: u16 = 4;
const STATS_CPS: u16 = 6;
const STATS_INPPS: u16 = 7;
const STATS_INBPS: u16 = 9;
const AF_INET: u16 = 2;
/// IP_VS_SVC_F_PERSISTENT
const SVC_F_PERSISTENT: u32 = 0x1;

/// IPVS's code for a forwarding method (IP_VS_CONN_F_MASQ, _TUNNEL, _DROUTE).
fn fwd_code(f: Forwarding) -> u32 {
    match f {
        Forwarding::Nat => 0,
        Forwarding::Tun => 2,
        Forwarding::Dr => 3,
    }
}

fn fwd_from_code(c: u32) -> Forwarding {
    match c & 7 {
        0 => Forwarding::Nat,
        2 => Forwarding::Tun,
        _ => Forwarding::Dr,
    }
}

/// A virtual service's identity: protocol, VIP and port; or a firewall mark (`marks`), with
/// protocol TCP, VIP 0.0.0.0 and port 0 as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SvcKey {
    /// Protocol.
    pub proto: Protocol,
    /// VIP.
    pub vip: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Firewall mark (0: none, the service is VIP:port).
    pub fwmark: u32,
}

impl SvcKey {
    /// The service of `vip:port`.
    pub const fn port(proto: Protocol, vip: Ipv4Addr, port: u16) -> SvcKey {
        SvcKey { proto, vip, port, fwmark: 0 }
    }
    /// The service of firewall mark `mark`.
    pub const fn fwmark(mark: u32) -> SvcKey {
        SvcKey { proto: Protocol::Tcp, vip: Ipv4Addr::UNSPECIFIED, port: 0, fwmark: mark }
    }
}

impl fmt::Display for SvcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fwmark != 0 {
            write!(f, "fwmark {:#x}", self.fwmark)
        } else {
            write!(f, "{} {}:{}", self.proto.name(), self.vip, self.port)
        }
    }
}

/// Counters IPVS keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in.
    pub inpkts: u64,
    /// Bytes in.
    pub inbytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Packets per second in.
    pub inpps: u64,
    /// Bytes per second in.
    pub inbps: u64,
}

/// A service as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Identity.
    pub key: SvcKey,
    /// Scheduler name.
    pub sched: String,
    /// Persistence timeout in seconds (0 = none).
    pub persistence_s: u32,
    /// Counters.
    pub stats: Stats,
}

/// A destination as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    /// RIP.
    pub addr: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Method.
    pub fwd: Forwarding,
    /// Weight.
    pub weight: u32,
    /// Active connections.
    pub active: u32,
    /// Inactive connections.
    pub inactive: u32,
    /// Counters.
    pub stats: Stats,
}

/// An IPVS call that failed, in words.
#[derive(Debug)]
pub enum IpvsError {
    /// The kernel has no IPVS (module not loaded, or not built).
    Unavailable(String),
    /// The kernel refused a change.
    Refused {
        /// What was asked, e.g. "add service tcp 203.0.113.10:80".
        what: String,
        /// The kernel's answer.
        error: io::Error,
        /// What it most likely means.
        hint: &'static str,
    },
}

impl fmt::Display for IpvsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsError::Unavailable(m) => write!(f, "IPVS is not available in this kernel: {m} (the ip_vs module must be loaded)"),
            IpvsError::Refused { what, error, hint } => {
                write!(f, "{what}: the kernel said \"{error}\"{}{hint}", if hint.is_empty() { "" } else { ": " })
            }
        }
    }
}

impl std::error::Error for IpvsError {}

fn hint(errno: Option<i32>, what: &str) -> &'static str {
    match errno {
        Some(libc::ENOENT) if what.contains("service") => "the scheduler's module (ip_vs_<name>) is missing, or the service does not exist",
        Some(libc::ENOENT) => "no such service or real server",
        Some(libc::EEXIST) => "it exists already",
        Some(libc::EINVAL) => "a value is out of range (port, weight, scheduler name)",
        Some(libc::EPERM) => "netfw needs CAP_NET_ADMIN",
        _ => "",
    }
}

/// The error for a request the kernel refused: what was asked, its errno, the likely cause.
pub fn refusal(what: String, error: io::Error) -> IpvsError {
    let hint = hint(error.raw_os_error(), &what);
    IpvsError::Refused { what, error, hint }
}

fn stats(a: Attrs<'_>) -> Stats {
    let v = |k| a.get(k).and_then(|x| if x.data.len() >= 8 { x.u64() } else { x.u32().map(u64::from) }).unwrap_or(0);
    Stats {
        conns: v(STATS_CONNS),
        inpkts: v(STATS_INPKTS),
        inbytes: v(STATS_INBYTES),
        cps: v(STATS_CPS),
        inpps: v(STATS_INPPS),
        inbps: v(STATS_INBPS),
    }
}

fn ip(data: &[u8]) -> Ipv4Addr {
    let mut o = [0u8; 4];
    if let Some(b) = data.get(0..4) {
        o.copy_from_slice(b);
    }
    Ipv4Addr::from(o)
}

fn be16(data: &[u8]) -> u16 {
    data.get(0..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// A connection to the kernel's IPVS.
#[derive(Debug)]
pub struct Ipvs {
    sock: Socket,
    family: u16,
}

impl Ipvs {
    /// Open the IPVS family.
    pub fn open() -> Result<Ipvs, IpvsError> {
        let mut sock = Socket::open().map_err(|e| IpvsError::Unavailable(e.to_string()))?;
        let family = sock.family("IPVS").map_err(|e| IpvsError::Unavailable(e.to_string()))?;
        Ok(Ipvs { sock, family })
    }

    fn call(&mut self, what: String, m: &mut Msg) -> Result<Vec<crate::genl::Reply>, IpvsError> {
        self.sock.request(m).map_err(|error| refusal(what, error))
    }

    fn svc_attrs(m: &mut Msg, k: &SvcKey) {
        m.u16(SVC_AF, AF_INET);
        if k.fwmark != 0 {
            m.u32(SVC_FWMARK, k.fwmark);
        } else {
            m.u16(SVC_PROTOCOL, u16::from(k.proto.number())).put(SVC_ADDR, &k.vip.octets()).put(SVC_PORT, &k.port.to_be_bytes());
        }
    }

    /// Every IPv4 service: TCP and UDP ones, and firewall-mark ones.
    pub fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        let mut m = Msg::new(self.family, CMD_GET_SERVICE, F_REQUEST | F_DUMP);
        let replies = self.call("list services".into(), &mut m)?;
        let mut out = Vec::new();
        for r in replies {
            let Some(s) = Attrs(&r.attrs).get(ATTR_SERVICE) else { continue };
            let a = s.nested();
            if a.get(SVC_AF).and_then(|x| x.u16()) != Some(AF_INET) {
                continue;
            }
            let key = match (a.get(SVC_FWMARK).and_then(|x| x.u32()), a.get(SVC_PROTOCOL).and_then(|x| x.u16())) {
                (Some(mark), _) if mark != 0 => SvcKey::fwmark(mark),
                (_, Some(p @ (6 | 17))) => SvcKey::port(
                    if p == 6 { Protocol::Tcp } else { Protocol::Udp },
                    ip(a.get(SVC_ADDR).map_or(&[][..], |x| x.data)),
                    be16(a.get(SVC_PORT).map_or(&[][..], |x| x.data)),
                ),
                _ => continue, // SCTP services are not ours
            };
            let flags = a.get(SVC_FLAGS).and_then(|x| x.u32()).unwrap_or(0);
            out.push(Service {
                key,
                sched: a.get(SVC_SCHED_NAME).map(|x| x.string()).unwrap_or_default(),
                persistence_s: if flags & SVC_F_PERSISTENT != 0 { a.get(SVC_TIMEOUT).and_then(|x| x.u32()).unwrap_or(0) } else { 0 },
                stats: a.get(SVC_STATS).map(|x| stats(x.nested())).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The destinations of a service.
    pub fn dests(&mut self, k: &SvcKey) -> Result<Vec<Dest>, IpvsError> {
        let mut m = Msg::new(self.family, CMD_GET_DEST, F_REQUEST | F_DUMP);
        m.begin(ATTR_SERVICE);
        Self::svc_attrs(&mut m, k);
        m.end();
        let replies = self.call(format!("list real servers of {k}"), &mut m)?;
        let mut out = Vec::new();
        for r in replies {
            let Some(d) = Attrs(&r.attrs).get(ATTR_DEST) else { continue };
            let a = d.nested();
            out.push(Dest {
                addr: ip(a.get(DEST_ADDR).map_or(&[][..], |x| x.data)),
                port: be16(a.get(DEST_PORT).map_or(&[][..], |x| x.data)),
                fwd: fwd_from_code(a.get(DEST_FWD_METHOD).and_then(|x| x.u32()).unwrap_or(3)),
                weight: a.get(DEST_WEIGHT).and_then(|x| x.u32()).unwrap_or(0),
                active: a.get(DEST_ACTIVE_CONNS).and_then(|x| x.u32()).unwrap_or(0),
                inactive: a.get(DEST_INACT_CONNS).and_then(|x| x.u32()).unwrap_or(0),
                stats: a.get(DEST_STATS).map(|x| stats(x.nested())).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn service_cmd(&mut self, cmd: u8, verb: &str, k: &SvcKey, sched: &str, persistence_s: u32) -> Result<(), IpvsError> {
        let mut m = Msg::new(self.family, cmd, F_REQUEST | F_ACK);
        m.begin(ATTR_SERVICE);
        Self::svc_attrs(&mut m, k);
        if cmd != CMD_DEL_SERVICE {
            let flags = if persistence_s > 0 { SVC_F_PERSISTENT } else { 0 };
            let mut f = flags.to_ne_bytes().to_vec();
            f.extend_from_slice(&u32::MAX.to_ne_bytes());
            m.str(SVC_SCHED_NAME, sched).put(SVC_FLAGS, &f).u32(SVC_TIMEOUT, persistence_s).put(SVC_NETMASK, &[255, 255, 255, 255]);
        }
        m.end();
        self.call(format!("{verb} service {k}"), &mut m).map(|_| ())
    }

    /// Start the kernel's connection sync daemon as `master` (send this box's connections) or
    /// backup (take the peer's), on `nic` (multicast 224.0.0.81:8848) with `sync_id`. One
    /// already running in that role is left as it is.
    pub fn start_sync_daemon(&mut self, master: bool, nic: &str, sync_id: u8) -> Result<(), IpvsError> {
        let mut m = Msg::new(self.family, CMD_NEW_DAEMON, F_REQUEST | F_ACK);
        m.begin(ATTR_DAEMON)
            .u32(DAEMON_STATE, if master { 1 } else { 2 })
            .str(DAEMON_MCAST_IFN, nic)
            .u32(DAEMON_SYNC_ID, u32::from(sync_id))
            .end();
        let role = if master { "master" } else { "backup" };
        match self.call(format!("start the connection sync daemon ({role}, {nic}, syncid {sync_id})"), &mut m) {
            Err(IpvsError::Refused { error, .. }) if error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Stop the kernel's sync daemon in that role (none running: nothing to do).
    pub fn stop_sync_daemon(&mut self, master: bool) -> Result<(), IpvsError> {
        let mut m = Msg::new(self.family, CMD_DEL_DAEMON, F_REQUEST | F_ACK);
        m.begin(ATTR_DAEMON).u32(DAEMON_STATE, if master { 1 } else { 2 }).end();
        let role = if master { "master" } else { "backup" };
        match self.call(format!("stop the connection sync daemon ({role})"), &mut m) {
            Err(IpvsError::Refused { error, .. }) if matches!(error.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Add a service.
    pub fn add_service(&mut self, k: &SvcKey, sched: &str, persistence_s: u32) -> Result<(), IpvsError> {
        self.service_cmd(CMD_NEW_SERVICE, "add", k, sched, persistence_s)
    }
    /// Change a service's scheduler or persistence.
    pub fn set_service(&mut self, k: &SvcKey, sched: &str, persistence_s: u32) -> Result<(), IpvsError> {
        self.service_cmd(CMD_SET_SERVICE, "change", k, sched, persistence_s)
    }
    /// Delete a service (and its destinations).
    pub fn del_service(&mut self, k: &SvcKey) -> Result<(), IpvsError> {
        self.service_cmd(CMD_DEL_SERVICE, "delete", k, "", 0)
    }

    fn dest_cmd(&mut self, cmd: u8, verb: &str, k: &SvcKey, addr: Ipv4Addr, fwd: Forwarding, weight: u32) -> Result<(), IpvsError> {
        let mut m = Msg::new(self.family, cmd, F_REQUEST | F_ACK);
        m.begin(ATTR_SERVICE);
        Self::svc_attrs(&mut m, k);
        m.end();
        m.begin(ATTR_DEST);
        m.put(DEST_ADDR, &addr.octets()).put(DEST_PORT, &k.port.to_be_bytes());
        if cmd != CMD_DEL_DEST {
            m.u32(DEST_FWD_METHOD, fwd_code(fwd))
                .u32(DEST_WEIGHT, weight)
                .u32(DEST_U_THRESH, 0)
                .u32(DEST_L_THRESH, 0)
                .u16(DEST_ADDR_FAMILY, AF_INET);
        }
        m.end();
        self.call(format!("{verb} real server {addr} ({}) of {k}", fwd.name()), &mut m).map(|_| ())
    }

    /// Add a destination.
    pub fn add_dest(&mut self, k: &SvcKey, addr: Ipv4Addr, fwd: Forwarding, weight: u32) -> Result<(), IpvsError> {
        self.dest_cmd(CMD_NEW_DEST, "add", k, addr, fwd, weight)
    }
    /// Change a destination's weight or method.
    pub fn set_dest(&mut self, k: &SvcKey, addr: Ipv4Addr, fwd: Forwarding, weight: u32) -> Result<(), IpvsError> {
        self.dest_cmd(CMD_SET_DEST, "change", k, addr, fwd, weight)
    }
    /// Delete a destination.
    pub fn del_dest(&mut self, k: &SvcKey, addr: Ipv4Addr) -> Result<(), IpvsError> {
        self.dest_cmd(CMD_DEL_DEST, "delete", k, addr, Forwarding::Dr, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `Ipvs::call` gives when the kernel answers `errno` to `what`.
    fn refused(what: &str, errno: i32) -> String {
        refusal(what.to_string(), io::Error::from_raw_os_error(errno)).to_string()
    }

    #[test]
    fn kernel_refusals_say_what_was_asked_what_the_kernel_said_and_what_it_means() {
        let m = refused("add service tcp 203.0.113.10:80 scheduler mh", libc::ENOENT);
        assert!(m.starts_with("add service tcp 203.0.113.10:80 scheduler mh: the kernel said \"No such file or directory"), "{m}");
        assert!(m.ends_with("the scheduler's module (ip_vs_<name>) is missing, or the service does not exist"), "{m}");
        let m = refused("add real server 198.18.0.11 to tcp 203.0.113.10:80 (dr, weight 1)", libc::EEXIST);
        assert!(m.contains("198.18.0.11") && m.ends_with("it exists already"), "{m}");
        let m = refused("set real server 198.18.0.11 weight 70000", libc::EINVAL);
        assert!(m.ends_with("a value is out of range (port, weight, scheduler name)"), "{m}");
        assert!(refused("list services", libc::EPERM).ends_with("netfw needs CAP_NET_ADMIN"));
        // An errno with no known meaning still says what was asked and what the kernel said.
        assert_eq!(refused("list services", libc::EIO), "list services: the kernel said \"Input/output error (os error 5)\"");
        let u = IpvsError::Unavailable("generic netlink family \"IPVS\" not found".into()).to_string();
        assert!(u.contains("the ip_vs module must be loaded"), "{u}");
    }
}
