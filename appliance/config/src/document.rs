//! The configuration document as serde types: one JSON object, schema version 1, described
//! field by field in `docs/config.md`. Parsing checks syntax and shape (unknown fields and
//! wrong types are errors with line and column); `validate` checks the rules.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::ha::HaDoc;
use crate::health::HealthCheckDoc;
use crate::observe::{MetricsDoc, SyslogDoc};
use netfw_core::model::{DataPlaneSpec, Forwarding, Timeouts};

/// The only schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Most virtual services.
pub const MAX_SERVICES: usize = 64;
/// Most real servers per service.
pub const MAX_REAL_SERVERS: usize = 1024;
/// Most distinct VIPs (the control stack holds each as an address, plus the DIP).
pub const MAX_VIPS: usize = 7;
/// Default flow table capacity.
pub const DEFAULT_FLOW_CAPACITY: u32 = 1 << 20;
/// Largest flow table capacity.
pub const MAX_FLOW_CAPACITY: u32 = 1 << 24;

/// Forwarding mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The userspace DR forwarder on dedicated NICs.
    #[default]
    Forwarder,
    /// The in-kernel IPVS, programmed over netlink.
    Ipvs,
}

/// How netfw moves frames on its NICs (forwarder mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Io {
    /// AF_XDP (native XDP) on NICs with a driver that runs it, AF_PACKET elsewhere or when
    /// AF_XDP cannot be set up; the start line says which and why.
    #[default]
    Auto,
    /// AF_XDP only (native XDP where the driver has it, generic elsewhere): netfw does not start
    /// without it.
    AfXdp,
    /// AF_PACKET rings only.
    AfPacket,
}

impl Io {
    /// As written in the document.
    pub fn name(self) -> &'static str {
        match self {
            Io::Auto => "auto",
            Io::AfXdp => "af_xdp",
            Io::AfPacket => "af_packet",
        }
    }
}

/// Which NIC plays which role. Equal names mean one-arm (seed 001's layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nics {
    /// Towards the router: carries the VIP. An interface name or a MAC (`nic::NicRef`).
    pub vip_side: String,
    /// Towards the real servers: carries the DIP. An interface name or a MAC.
    pub rs_side: String,
}

/// Flow timeouts in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsDoc {
    /// After SYN.
    pub tcp_syn_s: u32,
    /// After the handshake ACK, before a further client packet.
    pub tcp_unconfirmed_s: u32,
    /// Established.
    pub tcp_established_s: u32,
    /// After FIN.
    pub tcp_fin_s: u32,
    /// After RST.
    pub tcp_close_s: u32,
    /// UDP.
    pub udp_s: u32,
    /// UDP before a flow's second packet.
    pub udp_new_s: u32,
}

impl Default for TimeoutsDoc {
    fn default() -> Self {
        let t = Timeouts::default();
        TimeoutsDoc {
            tcp_syn_s: t.tcp_syn_s,
            tcp_unconfirmed_s: t.tcp_unconfirmed_s,
            tcp_established_s: t.tcp_established_s,
            tcp_fin_s: t.tcp_fin_s,
            tcp_close_s: t.tcp_close_s,
            udp_s: t.udp_s,
            udp_new_s: t.udp_new_s,
        }
    }
}

/// The management NIC: where the web page is served. Never one of the dedicated NICs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    /// Interface name or MAC (`nic::NicRef`).
    pub nic: String,
    /// Static address with prefix, e.g. "198.19.0.10/24"; absent means DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Default gateway for management traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A real server as written in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServerDoc {
    /// RIP.
    pub address: String,
    /// Weight 0–65535 (0 drains).
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

/// A virtual service as written in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDoc {
    /// VIP.
    pub vip: String,
    /// "tcp" or "udp".
    pub protocol: String,
    /// 1–65535, or 0 for every port of the VIP (IPVS's port-0 service). Absent with `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// A port range, "10000-20000" (seed 001's FTP passive ports), instead of `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// rr, wrr, lc, wlc, sh, mh.
    #[serde(default = "default_sched")]
    pub scheduler: String,
    /// Client-IP affinity, seconds (0 = off).
    #[serde(default)]
    pub persistence_s: u32,
    /// Services naming one group keep a client on one real server across them (FTP's control
    /// port and its passive range); each needs the same `persistence_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_group: Option<String>,
    /// How real servers are reached: dr (default), tun or nat (the last two in ipvs mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<Forwarding>,
    /// Real servers.
    pub real_servers: Vec<RealServerDoc>,
    /// How real servers are checked (absent: not checked, as if always up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckDoc>,
    /// Gets new flows while no real server is up (an address on the DIP's segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<String>,
}

impl ServiceDoc {
    /// Its ports as written: `80`, `0` (every port) or `10000-20000`.
    pub fn ports_label(&self) -> String {
        match (&self.ports, self.port) {
            (Some(r), _) => r.clone(),
            (None, Some(p)) => p.to_string(),
            (None, None) => "?".into(),
        }
    }
}

fn is_auto(io: &Io) -> bool {
    *io == Io::Auto
}

fn default_sched() -> String {
    "wlc".into()
}

/// The whole document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version (1).
    pub version: u32,
    /// forwarder or ipvs.
    #[serde(default)]
    pub mode: Mode,
    /// NIC roles.
    pub nics: Nics,
    /// netfw's I/O backend (default auto); a change restarts netfw.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub io: Io,
    /// DIP with prefix, e.g. "198.18.0.2/24".
    pub dip: String,
    /// Prefix length of the VIP-facing segment (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_prefix_len: Option<u8>,
    /// Upstream router for the director's own replies (ICMP) to off-link hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Flow table capacity (default 1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_capacity: Option<u32>,
    /// Flow timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsDoc>,
    /// Seconds between ARP refreshes of each real server (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_refresh_s: Option<u32>,
    /// Virtual services.
    pub services: Vec<ServiceDoc>,
    /// The management NIC (the appliance's init reads this; netfw ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<Management>,
    /// The appliance's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// This box's place in an HA pair (absent: a single box).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaDoc>,
    /// `GET /metrics` for Prometheus (absent: every scrape gets 401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsDoc>,
    /// Every event also goes to this log server (absent: kept on the box only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogDoc>,
}

impl Config {
    /// Parse a document (syntax and schema only).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<(Config, DataPlaneSpec), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.display().to_string(), error })?;
        let c = Config::parse(&text)?;
        let spec = c.validate()?;
        Ok((c, spec))
    }

    /// One-arm (one NIC carries VIP and DIP)?
    pub fn one_arm(&self) -> bool {
        self.nics.vip_side.eq_ignore_ascii_case(&self.nics.rs_side)
    }

    /// The document as one line of JSON.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
