//! The data plane's view of a configuration: validated, typed, ready to build tables from.
//!
//! The config crate parses and validates the operator's JSON into this; the core never sees
//! JSON.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => crate::wire::frame::PROTO_TCP,
            Protocol::Udp => crate::wire::frame::PROTO_UDP,
        }
    }
    /// Lower-case name as in the config and status output.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Scheduler of a virtual service (the IPVS names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SchedKind {
    /// round robin
    Rr,
    /// weighted round robin
    Wrr,
    /// least connections
    Lc,
    /// weighted least connections
    Wlc,
    /// source hashing
    Sh,
    /// Maglev hashing
    Mh,
}

impl SchedKind {
    /// All schedulers with their config names.
    pub const ALL: [(&'static str, SchedKind); 6] = [
        ("rr", SchedKind::Rr),
        ("wrr", SchedKind::Wrr),
        ("lc", SchedKind::Lc),
        ("wlc", SchedKind::Wlc),
        ("sh", SchedKind::Sh),
        ("mh", SchedKind::Mh),
    ];
    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("?", |(n, _)| n)
    }
}

/// How the director reaches a service's real servers (the IPVS forwarding methods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum Forwarding {
    /// Direct routing: only the destination MAC is rewritten; replies bypass the director.
    #[default]
    Dr,
    /// IP-in-IP tunnel to the real server (IPVS mode only).
    Tun,
    /// NAT: the destination address is rewritten; replies return through the director (IPVS
    /// mode only).
    Nat,
}

impl Forwarding {
    /// The config's (and ipvsadm's long) name.
    pub const fn name(self) -> &'static str {
        match self {
            Forwarding::Dr => "dr",
            Forwarding::Tun => "tun",
            Forwarding::Nat => "nat",
        }
    }
}

/// One real server of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealServerSpec {
    /// Real server IP (RIP), on the DIP's segment.
    pub addr: Ipv4Addr,
    /// Weight 0..=65535; 0 drains.
    pub weight: u16,
}

/// One virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Virtual IP.
    pub vip: Ipv4Addr,
    /// Protocol.
    pub proto: Protocol,
    /// Port, or the first port of a range; 0 with `port_last` 65535 is every port.
    pub port: u16,
    /// The last port it covers: `port` itself for a service of one port.
    pub port_last: u16,
    /// Scheduler.
    pub sched: SchedKind,
    /// Client-IP affinity in seconds (0 = none).
    pub persistence_s: u32,
    /// Services of one group share their affinity: a client kept on a real server by one is
    /// sent to it by the others (seed 001's FTP: the control port and the passive range).
    pub persistence_group: Option<String>,
    /// How real servers are reached.
    pub forwarding: Forwarding,
    /// Real servers.
    pub real_servers: Vec<RealServerSpec>,
    /// How its real servers are checked (`None`: not checked, every server counts as up).
    pub health: Option<HealthCheck>,
    /// Gets the new flows while no real server is up (`health` takes them down).
    pub sorry_server: Option<Ipv4Addr>,
}

impl ServiceSpec {
    /// The ports it covers.
    pub const fn ports(&self) -> Ports {
        Ports { first: self.port, last: self.port_last }
    }
}

/// The ports a service covers: one, a range, or every port (first 0, last 65535).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ports {
    /// The first (0: every port).
    pub first: u16,
    /// The last (equal to `first` for one port).
    pub last: u16,
}

impl Ports {
    /// Every port of a VIP (IPVS's port-0 service).
    pub const ALL: Ports = Ports { first: 0, last: u16::MAX };

    /// One port.
    pub const fn one(port: u16) -> Ports {
        Ports { first: port, last: port }
    }

    /// Whether `port` is one of them.
    pub const fn covers(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Every port of the VIP.
    pub const fn all(self) -> bool {
        self.first == 0
    }

    /// More than one port (a range, or every port).
    pub const fn several(self) -> bool {
        self.first != self.last
    }

    /// Whether the two share a port.
    pub const fn overlaps(self, other: Ports) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// `80`, `10000-20000`, or `0` for every port (as ipvsadm shows a port-0 service).
impl core::fmt::Display for Ports {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.all() || !self.several() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// What a health check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connection is opened (and reset at once).
    Tcp,
    /// An HTTP GET whose status must be in a range (over TLS: `https`).
    Http {
        /// Over TLS (the handshake must complete; the certificate is not verified).
        tls: bool,
        /// Request path.
        path: String,
        /// Host header (default: the address probed).
        host: Option<String>,
        /// Lowest status that passes.
        status_min: u16,
        /// Highest status that passes.
        status_max: u16,
    },
    /// A UDP datagram whose reply must match (`expect` empty: any reply).
    Udp {
        /// Payload sent.
        send: Vec<u8>,
        /// Expected reply (prefix); empty = any.
        expect: Vec<u8>,
    },
}

/// Where a probe goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum Via {
    /// To VIP:port, sent to the real server's MAC from the DIP: the path clients' packets take.
    #[default]
    Vip,
    /// To the real server's own address.
    Rip,
}

/// A service's health check, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: CheckKind,
    /// Port probed.
    pub port: u16,
    /// Through the DR path or to the RIP.
    pub via: Via,
    /// Time between the starts of two probes of one server.
    pub interval_ms: u32,
    /// A probe without an answer within this fails.
    pub timeout_ms: u32,
    /// Consecutive successes that bring a down server up.
    pub rise: u8,
    /// Consecutive failures that take an up server down.
    pub fall: u8,
}

/// Flow idle timeouts in seconds, by state (IPVS's defaults for DR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after a SYN, before the client's first ACK.
    pub tcp_syn_s: u32,
    /// TCP established.
    pub tcp_established_s: u32,
    /// TCP after the handshake ACK, before any further client packet.
    pub tcp_unconfirmed_s: u32,
    /// TCP after a FIN from the client.
    pub tcp_fin_s: u32,
    /// TCP after a RST.
    pub tcp_close_s: u32,
    /// UDP.
    pub udp_s: u32,
    /// UDP before the flow's second packet.
    pub udp_new_s: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_s: 60,
            tcp_unconfirmed_s: 10,
            tcp_established_s: 900,
            tcp_fin_s: 120,
            tcp_close_s: 10,
            udp_s: 300,
            udp_new_s: 10,
        }
    }
}

/// Everything the forwarder core needs from a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlaneSpec {
    /// Director IP on the real-server segment.
    pub dip: Ipv4Addr,
    /// Prefix length of the DIP's subnet.
    pub dip_prefix: u8,
    /// Prefix length of the VIP-facing segment (for ARP and the control stack).
    pub vip_prefix: u8,
    /// Upstream router, if any (for the control stack's replies to off-link hosts).
    pub gateway: Option<Ipv4Addr>,
    /// Virtual services.
    pub services: Vec<ServiceSpec>,
    /// Flow table capacity (flows).
    pub flow_capacity: u32,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// How often each real server's MAC is re-resolved, in milliseconds.
    pub arp_refresh_ms: u64,
    /// The HA pair this box is one of, if any.
    pub ha: Option<HaSpec>,
}

/// One box of an HA pair (RFC 5798's virtual router, with the pair's key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaSpec {
    /// The other box's DIP.
    pub peer: Ipv4Addr,
    /// Virtual router ID (1–255): the VIPs live on MAC 00:00:5e:00:01:<vrid>.
    pub vrid: u8,
    /// 1–254; the higher is master.
    pub priority: u8,
    /// Advert interval, ms (a multiple of 10).
    pub advert_ms: u32,
    /// A returning higher-priority box takes the master role back.
    pub preempt: bool,
    /// The shared secret that signs adverts and flow sync.
    pub key: Vec<u8>,
}

impl HaSpec {
    /// The virtual MAC the VIPs live on (RFC 5798 section 7.3).
    pub fn virtual_mac(&self) -> [u8; 6] {
        [0x00, 0x00, 0x5e, 0x00, 0x01, self.vrid]
    }
}

impl DataPlaneSpec {
    /// How many (service, server) pairs the forwarder holds: every real server of every
    /// service, and each service's sorry server.
    pub fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.real_servers.len() + usize::from(s.sorry_server.is_some())).sum()
    }

    /// A digest of the services (addresses, ports, schedulers, persistence, forwarding, real
    /// servers and weights, sorry servers, whether checked): two boxes of a pair with the same
    /// digest serve the same. FNV-1a over their fields in order, stable across builds.
    pub fn services_digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for s in &self.services {
            eat(&s.vip.octets());
            eat(&[s.proto.number()]);
            eat(&s.port.to_be_bytes());
            if s.ports().several() {
                eat(&s.port_last.to_be_bytes());
            }
            eat(s.sched.name().as_bytes());
            eat(&s.persistence_s.to_be_bytes());
            if let Some(g) = &s.persistence_group {
                // After a release without ranges and groups, a single-port service without a
                // group digests as it did: a pair mid-update still agrees.
                eat(g.as_bytes());
                eat(&[0xfe]);
            }
            eat(s.forwarding.name().as_bytes());
            for r in &s.real_servers {
                eat(&r.addr.octets());
                eat(&r.weight.to_be_bytes());
            }
            eat(&s.sorry_server.map_or([0; 4], |a| a.octets()));
            eat(&[u8::from(s.health.is_some()), 0xff]);
        }
        h
    }

    /// Distinct VIPs, in config order.
    pub fn vips(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = Vec::new();
        for s in &self.services {
            if !v.contains(&s.vip) {
                v.push(s.vip);
            }
        }
        v
    }
}
