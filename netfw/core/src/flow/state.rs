//! TCP state inferred from the client's packets only (the director never sees replies in DR),
//! following IPVS's "input only" transitions, and the idle timeout of each state.
//!
//! A flow is trusted with a long timeout only once the client has shown it is real: a TCP
//! flow after its handshake ACK is `Unconfirmed` until a further packet, a UDP flow is
//! `UdpNew` until its second packet. A spoofing sender (SYN then ACK, or one UDP packet, from
//! made-up addresses) so fills the table only with short-lived entries that new flows may
//! evict, instead of pinning it with 900 s "established" ones.

use crate::model::Timeouts;
use crate::wire::frame::tcp_flags::{ACK, FIN, RST, SYN};

/// State of a tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum FlowState {
    /// Client sent SYN, no ACK yet (IPVS: SYN_RECV).
    SynRecv,
    /// Client ACKed the handshake, nothing since: up, but not yet trusted (short timeout,
    /// evictable).
    Unconfirmed,
    /// Client ACKed and sent more: the connection is up (counts as an active connection).
    Established,
    /// Client sent FIN.
    FinWait,
    /// RST seen.
    Close,
    /// UDP "connection" after its first packet.
    UdpNew,
    /// UDP "connection" that has seen a second packet.
    Udp,
    /// Client sent its SYN again, still no ACK: no answer came (IPVS: SYN_RECV). A passive
    /// sign that the real server may be dead: the health checks probe it at once.
    SynAgain,
}

impl FlowState {
    /// How many states there are.
    pub const COUNT: usize = 8;
    /// Every state, in declaration order (`state as usize` indexes this).
    pub const ALL: [FlowState; FlowState::COUNT] = [
        FlowState::SynRecv,
        FlowState::Unconfirmed,
        FlowState::Established,
        FlowState::FinWait,
        FlowState::Close,
        FlowState::UdpNew,
        FlowState::Udp,
        FlowState::SynAgain,
    ];

    /// Active in the ipvsadm sense (lc/wlc weigh these most).
    pub fn is_active(self) -> bool {
        matches!(self, FlowState::Established | FlowState::Unconfirmed)
    }

    /// May this flow be evicted to make room for a new one when the table is full?
    /// Confirmed flows never are (a flood must not push out real connections).
    pub fn evictable(self) -> bool {
        !matches!(self, FlowState::Established | FlowState::Udp)
    }

    /// Idle timeout of this state, in seconds.
    pub fn timeout_s(self, t: &Timeouts) -> u32 {
        match self {
            FlowState::SynRecv | FlowState::SynAgain => t.tcp_syn_s,
            FlowState::Unconfirmed => t.tcp_unconfirmed_s,
            FlowState::Established => t.tcp_established_s,
            FlowState::FinWait => t.tcp_fin_s,
            FlowState::Close => t.tcp_close_s,
            FlowState::UdpNew => t.udp_new_s,
            FlowState::Udp => t.udp_s,
        }
    }

    /// Next state of a UDP flow after another packet.
    #[inline]
    pub fn next_udp(self) -> FlowState {
        FlowState::Udp
    }

    /// The state a new TCP flow starts in, if these flags may open one (a SYN without ACK).
    pub fn open_tcp(flags: u8) -> Option<FlowState> {
        (flags & SYN != 0 && flags & (ACK | RST | FIN) == 0).then_some(FlowState::SynRecv)
    }

    /// Next state after a client packet with these TCP flags.
    #[inline(always)]
    pub fn next_tcp(self, flags: u8) -> FlowState {
        // The common case first, inline: data or an ACK on an established connection.
        if flags & (RST | FIN | SYN) == 0 && self == FlowState::Established {
            return self;
        }
        self.next_tcp_other(flags)
    }

    #[inline(never)]
    fn next_tcp_other(self, flags: u8) -> FlowState {
        if flags & RST != 0 {
            return FlowState::Close;
        }
        if flags & FIN != 0 {
            return FlowState::FinWait;
        }
        match self {
            FlowState::SynRecv | FlowState::SynAgain if flags & SYN == 0 && flags & ACK != 0 => FlowState::Unconfirmed,
            FlowState::SynRecv | FlowState::SynAgain if flags & SYN != 0 => FlowState::SynAgain,
            FlowState::Unconfirmed if flags & SYN == 0 => FlowState::Established,
            FlowState::FinWait | FlowState::Close if flags & SYN != 0 && flags & ACK == 0 => FlowState::SynRecv,
            s => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_data_fin_and_rst() {
        let s = FlowState::open_tcp(SYN).unwrap();
        assert_eq!(s, FlowState::SynRecv);
        assert_eq!(FlowState::open_tcp(SYN | ACK), None, "SYN-ACK never opens a flow");
        assert_eq!(FlowState::open_tcp(ACK), None);
        let s = s.next_tcp(ACK);
        assert_eq!(s, FlowState::Unconfirmed, "the handshake ACK alone is not trusted yet");
        let s = s.next_tcp(ACK);
        assert_eq!(s, FlowState::Established, "a further packet confirms it");
        assert_eq!(s.next_tcp(ACK), FlowState::Established);
        assert_eq!(FlowState::Unconfirmed.next_tcp(FIN | ACK), FlowState::FinWait);
        assert_eq!(s.next_tcp(FIN | ACK), FlowState::FinWait);
        assert_eq!(s.next_tcp(RST), FlowState::Close);
        assert_eq!(FlowState::FinWait.next_tcp(ACK), FlowState::FinWait);
        assert_eq!(FlowState::Close.next_tcp(SYN), FlowState::SynRecv, "tuple reuse after close");
        assert_eq!(FlowState::SynRecv.next_tcp(SYN), FlowState::SynAgain, "retransmitted SYN");
        assert_eq!(FlowState::SynAgain.next_tcp(SYN), FlowState::SynAgain);
        assert_eq!(FlowState::SynAgain.next_tcp(ACK), FlowState::Unconfirmed);
    }

    #[test]
    fn default_timeouts_are_ipvs_dr_defaults() {
        let t = Timeouts::default();
        assert_eq!(FlowState::SynRecv.timeout_s(&t), 60);
        assert_eq!(FlowState::Established.timeout_s(&t), 900);
        assert_eq!(FlowState::FinWait.timeout_s(&t), 120);
        assert_eq!(FlowState::Close.timeout_s(&t), 10);
        assert_eq!(FlowState::Udp.timeout_s(&t), 300);
        assert_eq!(FlowState::Unconfirmed.timeout_s(&t), 10);
        assert_eq!(FlowState::UdpNew.timeout_s(&t), 10);
    }
}
