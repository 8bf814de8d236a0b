//! The `ha` section as written in the document (one box of an HA pair) and its rules: each
//! problem names its field (`ha.priority`) and says what would be right.

use serde::{Deserialize, Serialize};

use netfw_core::model::HaSpec;

use crate::net::{parse_unicast, Subnet};

/// Default advert interval: a dead master is replaced within about 0.65 s.
pub const DEFAULT_ADVERT_MS: i64 = 200;
/// Shortest shared key accepted.
pub const MIN_KEY_LEN: usize = 12;
/// Longest shared key accepted.
const MAX_KEY_LEN: usize = 256;

/// `ha` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaDoc {
    /// The other box's DIP.
    pub peer: String,
    /// Virtual router ID, 1–255 (the VIPs live on MAC 00:00:5e:00:01:<vrid>).
    pub vrid: i64,
    /// 1–254; the higher is master.
    pub priority: i64,
    /// Advert interval in ms (default 200; a multiple of 10, 10 to 40950).
    #[serde(default = "default_advert_ms")]
    pub advert_ms: i64,
    /// A returning higher-priority box takes the master role back (default true).
    #[serde(default = "yes")]
    pub preempt: bool,
    /// The shared secret that signs adverts and flow sync (the same on both boxes).
    pub key: String,
}

fn default_advert_ms() -> i64 {
    DEFAULT_ADVERT_MS
}

fn yes() -> bool {
    true
}

impl HaDoc {
    /// Check every rule against the box's DIP subnet and layout; the problems as (field,
    /// message), or the data plane's view.
    pub fn validate(&self, dip: Option<Subnet>, one_arm: bool) -> Result<HaSpec, Vec<(&'static str, String)>> {
        let mut p: Vec<(&'static str, String)> = Vec::new();
        let peer = match parse_unicast(&self.peer) {
            Ok(ip) => {
                match dip {
                    Some(d) if d.addr() == ip => p.push(("peer", format!("{ip} is this box's own DIP; the peer is the other box's DIP"))),
                    Some(d) if !d.contains(ip) => {
                        p.push((
                            "peer",
                            format!(
                                "{ip} is outside the DIP's subnet; the two boxes sync flows from DIP to DIP on the real servers' segment"
                            ),
                        ));
                    }
                    _ => {}
                }
                Some(ip)
            }
            Err(m) => {
                p.push(("peer", m));
                None
            }
        };
        let vrid = u8::try_from(self.vrid).ok().filter(|v| *v >= 1);
        if vrid.is_none() {
            p.push(("vrid", format!("{} must be 1 to 255 (the last byte of the virtual MAC 00:00:5e:00:01:xx)", self.vrid)));
        }
        let priority = u8::try_from(self.priority).ok().filter(|v| (1..=254).contains(v));
        if priority.is_none() {
            p.push(("priority", format!("{} must be 1 to 254 (0 and 255 have special meanings in VRRP)", self.priority)));
        }
        let advert_ms = u32::try_from(self.advert_ms).ok().filter(|ms| (10..=40_950).contains(ms) && ms % 10 == 0);
        if advert_ms.is_none() {
            p.push(("advert_ms", format!("{} must be a multiple of 10 from 10 to 40950 (VRRP counts in centiseconds)", self.advert_ms)));
        }
        let key = self.key.as_bytes();
        if key.len() < MIN_KEY_LEN || key.len() > MAX_KEY_LEN {
            p.push((
                "key",
                format!("the shared key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes (it authenticates adverts and flow sync)"),
            ));
        } else if self.key.chars().any(char::is_control) {
            p.push(("key", "the shared key may not contain control characters".into()));
        }
        if one_arm {
            p.push((
                "ha",
                "an HA pair needs the two-arm layout for now (in one-arm the NIC's one address stack would announce the DIP on the virtual MAC)".into(),
            ));
        }
        match (peer, vrid, priority, advert_ms) {
            (Some(peer), Some(vrid), Some(priority), Some(advert_ms)) if p.is_empty() => {
                Ok(HaSpec { peer, vrid, priority, advert_ms, preempt: self.preempt, key: key.to_vec() })
            }
            _ => Err(p),
        }
    }
}
