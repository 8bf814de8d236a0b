//! Health checks in forwarder mode: probes from the DIP to each real server of a service with
//! a `health_check`, through the DR path (to VIP:port, sent to the server's MAC) or to its
//! RIP, their verdicts applied to forwarding.
//!
//! - `prober`: the probes themselves, on a smoltcp interface of their own; the first worker
//!   runs it off the fast path, once per turn.
//! - `board`: the verdicts, shared with every worker (read once per turn when they change).
//!
//! A probe's reply may arrive on any worker's receive queue: the others pass such frames on
//! (`Probes::Relay`).

mod board;
mod http_check;
mod kernel_probe;
mod prober;

use std::net::Ipv4Addr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

pub use board::HealthBoard;
pub use prober::{Prober, RipProbes};

use netfw_core::forward::Forwarder;
use netfw_core::health::PROBE_PORTS;
use netfw_core::time::Millis;

/// Probe replies queued from the other workers.
pub const RELAY_QUEUE: usize = 256;

/// What a worker does with probe replies.
#[derive(Debug)]
pub enum Probes {
    /// Nothing (tests, or a loop without probes).
    Off,
    /// This worker probes: replies received here, and those the other workers pass on.
    Run {
        /// The prober.
        prober: Box<Prober>,
        /// Replies other workers received.
        relayed: Receiver<Vec<u8>>,
    },
    /// Another worker probes: replies received here go to it.
    Relay(SyncSender<Vec<u8>>),
}

/// Is this Ethernet frame a reply to a probe (TCP or UDP to one of the probes' ports on the
/// DIP)?
pub fn is_probe_reply(frame: &[u8], dip: Ipv4Addr) -> bool {
    let Some(&vihl) = frame.get(14) else { return false };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let ports = frame.get(14 + ihl + 2..14 + ihl + 4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    frame.get(12..14) == Some(&[0x08, 0x00])
        && vihl >> 4 == 4
        && matches!(frame.get(23), Some(6 | 17))
        && frame.get(30..34) == Some(&dip.octets())
        && ports.is_some_and(|p| PROBE_PORTS.contains(&p))
}

impl Probes {
    /// Take a probe reply (`is_probe_reply`); false if it had to be dropped (a full queue).
    pub fn take(&mut self, frame: &[u8]) -> bool {
        match self {
            Probes::Off => false,
            Probes::Run { prober, .. } => prober.push_rx(frame),
            Probes::Relay(to) => match to.try_send(frame.to_vec()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
        }
    }

    /// Run the probes (if this worker does): replies relayed, results, new probes; frames to
    /// send go to `send` (the RS-facing NIC), which says whether each went out.
    pub fn poll(&mut self, now: Millis, fwd: &Forwarder, send: impl FnMut(&[u8]) -> bool) {
        if let Probes::Run { prober, relayed } = self {
            while let Ok(f) = relayed.try_recv() {
                let _ = prober.push_rx(&f);
            }
            prober.poll(now, fwd, send);
        }
    }

    /// The prober, if this worker runs it.
    pub fn prober(&mut self) -> Option<&mut Prober> {
        match self {
            Probes::Run { prober, .. } => Some(prober),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_and_udp_to_a_probe_port_on_the_dip_are_probe_replies() {
        let dip = Ipv4Addr::new(198, 18, 0, 2);
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[30..34].copy_from_slice(&dip.octets());
        f[36..38].copy_from_slice(&61_234u16.to_be_bytes());
        assert!(is_probe_reply(&f, dip));
        assert!(!is_probe_reply(&f, Ipv4Addr::new(198, 18, 0, 3)), "another address");
        f[36..38].copy_from_slice(&22u16.to_be_bytes());
        assert!(!is_probe_reply(&f, dip), "another port");
        f[36..38].copy_from_slice(&61_234u16.to_be_bytes());
        f[23] = 1;
        assert!(!is_probe_reply(&f, dip), "ICMP");
        assert!(!is_probe_reply(&f[..30], dip), "cut short");
        assert!(!is_probe_reply(&[], dip));
    }
}
