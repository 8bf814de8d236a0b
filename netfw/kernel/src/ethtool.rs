//! The kernel's ethtool interface (SIOCETHTOOL, the "features" API): turning off every
//! receive offload that merges frames on a NIC the forwarder owns, and saying what it found.
//!
//! A merged frame is larger than the MTU: GRO (`rx-gro`, in software, on every Linux NIC),
//! LRO (`rx-lro`, e.g. ixgbe's RSC), hardware GRO (`rx-gro-hw`; virtio_net's guest TSO),
//! fraglist GRO (`rx-gro-list`) and UDP GRO forwarding (`rx-udp-gro-forwarding`). Features
//! are found by name (their bit numbers differ between kernels), turned off where the driver
//! lets them change, and read back.

use std::fmt;

/// The features that merge received frames.
pub const RECEIVE_MERGING: [&str; 5] = ["rx-gro", "rx-lro", "rx-gro-hw", "rx-gro-list", "rx-udp-gro-forwarding"];

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// What became of one feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureState {
    /// It was on; it is off now.
    TurnedOff,
    /// It was off already.
    Off,
    /// The driver does not let it change, and it is off.
    FixedOff,
    /// The driver does not let it change, and it is on: merged frames will arrive.
    FixedOn,
    /// It was asked off, but the driver kept it on.
    Refused,
    /// This kernel has no such feature.
    Unknown,
}

impl FeatureState {
    /// Off, one way or another.
    pub fn is_off(self) -> bool {
        matches!(self, FeatureState::TurnedOff | FeatureState::Off | FeatureState::FixedOff | FeatureState::Unknown)
    }
}

/// Each receive-merging feature of a NIC, and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The NIC.
    pub nic: String,
    /// (feature, state), in `RECEIVE_MERGING` order.
    pub features: Vec<(&'static str, FeatureState)>,
}

impl Report {
    /// Every merging feature is off.
    pub fn all_off(&self) -> bool {
        self.features.iter().all(|(_, s)| s.is_off())
    }
}

impl fmt::Display for Report {
    /// e.g. "eth1: receive merging off (rx-gro turned off; rx-lro, rx-gro-hw fixed off)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |want: FeatureState| self.features.iter().filter(|(_, s)| *s == want).map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        for (state, words) in [
            (FeatureState::TurnedOff, "turned off"),
            (FeatureState::Refused, "REFUSED to turn off"),
            (FeatureState::FixedOn, "fixed ON by the driver"),
        ] {
            let n = names(state);
            if !n.is_empty() {
                parts.push(format!("{n} {words}"));
            }
        }
        if parts.is_empty() {
            parts.push("already off".into());
        }
        let verdict = if self.all_off() { "receive merging off" } else { "RECEIVE MERGING STILL ON" };
        write!(f, "{}: {verdict} ({})", self.nic, parts.join("; "))
    }
}

/// Why the offloads could not be read or changed.
#[derive(Debug)]
pub enum EthtoolError {
    /// The NIC name is not one the kernel could hold.
    BadName(String),
    /// The socket for the ioctl could not be made.
    Socket(std::io::Error),
    /// The kernel refused a request.
    Ioctl {
        /// Which request.
        what: &'static str,
        /// The NIC.
        nic: String,
        /// errno.
        error: std::io::Error,
    },
}

impl fmt::Display for EthtoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EthtoolError::BadName(n) => write!(f, "\"{}\" is not a NIC name", n.escape_debug()),
            EthtoolError::Socket(e) => write!(f, "ethtool: cannot open a socket: {e}"),
            EthtoolError::Ioctl { what, nic, error } => write!(f, "ethtool {what} on {nic}: {error}"),
        }
    }
}

impl std::error::Error for EthtoolError {}

struct Sock(std::os::fd::OwnedFd);

impl Sock {
    fn open() -> Result<Sock, EthtoolError> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(EthtoolError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Sock(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    /// SIOCETHTOOL on `nic` with the command buffer `buf` (its first u32 is the command).
    fn ioctl(&self, nic: &str, what: &'static str, buf: &mut [u32]) -> Result<i32, EthtoolError> {
        let name = nic.as_bytes();
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
            return Err(EthtoolError::BadName(nic.into()));
        }
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
            *d = libc::c_char::from_ne_bytes([*s]);
        }
        ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
        // SAFETY: `ifr` names the NIC and points at `buf`, which is as large as the command
        // it holds needs (each caller sizes it from the kernel's counts) and outlives the call.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::SIOCETHTOOL, &mut ifr) };
        if r < 0 {
            Err(EthtoolError::Ioctl { what, nic: nic.into(), error: std::io::Error::last_os_error() })
        } else {
            Ok(r)
        }
    }

    /// The feature names, by bit.
    fn feature_names(&self, nic: &str) -> Result<Vec<String>, EthtoolError> {
        // struct ethtool_sset_info { cmd, reserved, u64 sset_mask, u32 data[] }: the mask (the
        // features set only) laid out as the kernel reads it.
        let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
        let word = |i: usize| u32::from_ne_bytes([mask[i], mask[i + 1], mask[i + 2], mask[i + 3]]);
        let mut info = [ETHTOOL_GSSET_INFO, 0, word(0), word(4), 0, 0];
        self.ioctl(nic, "GSSET_INFO", &mut info)?;
        let count = usize::try_from(info[4]).unwrap_or(0).min(1024);
        // struct ethtool_gstrings { cmd, string_set, len, u8 data[len * 32] }
        let mut buf = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        buf[0] = ETHTOOL_GSTRINGS;
        buf[1] = ETH_SS_FEATURES;
        buf[2] = u32::try_from(count).unwrap_or(0);
        self.ioctl(nic, "GSTRINGS", &mut buf)?;
        let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks(ETH_GSTRING_LEN)
            .take(usize::try_from(buf[2]).unwrap_or(0))
            .map(|c| String::from_utf8_lossy(c.split(|b| *b == 0).next().unwrap_or_default()).into_owned())
            .collect())
    }

    /// (available, active) bit words.
    fn features(&self, nic: &str, blocks: usize) -> Result<(Vec<u32>, Vec<u32>), EthtoolError> {
        // struct ethtool_gfeatures { cmd, size, { available, requested, active, never_changed }[size] }
        let mut buf = vec![0u32; 2 + 4 * blocks];
        buf[0] = ETHTOOL_GFEATURES;
        buf[1] = u32::try_from(blocks).unwrap_or(0);
        self.ioctl(nic, "GFEATURES", &mut buf)?;
        let block = |i: usize| buf.get(2 + 4 * i..6 + 4 * i).unwrap_or(&[0; 4]);
        let available = (0..blocks).map(|i| block(i)[0] & !block(i)[3]).collect();
        let active = (0..blocks).map(|i| block(i)[2]).collect();
        Ok((available, active))
    }
}

fn bit(words: &[u32], i: usize) -> bool {
    words.get(i / 32).is_some_and(|w| w & (1 << (i % 32)) != 0)
}

/// Turn off every receive-merging feature of `nic` that the driver lets change, and report
/// what each one is now (read back from the kernel).
pub fn receive_merging_off(nic: &str) -> Result<Report, EthtoolError> {
    let sock = Sock::open()?;
    let names = sock.feature_names(nic)?;
    let blocks = names.len().div_ceil(32);
    let (available, active) = sock.features(nic, blocks)?;
    let index = |f: &str| names.iter().position(|n| n == f);
    // struct ethtool_sfeatures { cmd, size, { valid, requested }[size] }
    let mut set = vec![0u32; 2 + 2 * blocks];
    set[0] = ETHTOOL_SFEATURES;
    set[1] = u32::try_from(blocks).unwrap_or(0);
    let mut any = false;
    for f in RECEIVE_MERGING {
        if let Some(i) = index(f).filter(|&i| bit(&available, i) && bit(&active, i)) {
            set[2 + 2 * (i / 32)] |= 1 << (i % 32);
            any = true;
        }
    }
    if any {
        // A positive answer means "not everything was applied": the read-back below says what.
        sock.ioctl(nic, "SFEATURES", &mut set)?;
    }
    let (_, now) = sock.features(nic, blocks)?;
    let features = RECEIVE_MERGING
        .iter()
        .map(|&f| {
            let state = match index(f) {
                None => FeatureState::Unknown,
                Some(i) => match (bit(&available, i), bit(&active, i), bit(&now, i)) {
                    (false, _, false) => FeatureState::FixedOff,
                    (false, _, true) => FeatureState::FixedOn,
                    (true, true, false) => FeatureState::TurnedOff,
                    (true, false, false) => FeatureState::Off,
                    (true, _, true) => FeatureState::Refused,
                },
            };
            (f, state)
        })
        .collect();
    Ok(Report { nic: nic.into(), features })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_was_done_and_what_could_not_be() {
        let r = Report {
            nic: "eth1".into(),
            features: vec![
                ("rx-gro", FeatureState::TurnedOff),
                ("rx-lro", FeatureState::FixedOff),
                ("rx-gro-hw", FeatureState::TurnedOff),
                ("rx-gro-list", FeatureState::Off),
                ("rx-udp-gro-forwarding", FeatureState::Off),
            ],
        };
        assert!(r.all_off());
        assert_eq!(r.to_string(), "eth1: receive merging off (rx-gro, rx-gro-hw turned off)");
        let mut bad = r.clone();
        bad.features[2].1 = FeatureState::FixedOn;
        assert!(!bad.all_off());
        assert_eq!(bad.to_string(), "eth1: RECEIVE MERGING STILL ON (rx-gro turned off; rx-gro-hw fixed ON by the driver)");
    }

    #[test]
    fn a_nic_that_does_not_exist_is_an_error_not_a_panic() {
        let e = receive_merging_off("no-such-nic0").unwrap_err();
        assert!(e.to_string().starts_with("ethtool GSSET_INFO on no-such-nic0: "), "{e}");
        assert!(matches!(receive_merging_off(""), Err(EthtoolError::BadName(_))));
    }
}
