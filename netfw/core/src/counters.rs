//! Counters: every dropped frame has a reason, and every reason a counter.

use crate::wire::WireError;

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($v:ident => $key:literal, $help:literal;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u8)]
        pub enum $name { $($v,)* }
        impl $name {
            /// Every variant, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Short name used in status output.
            pub const fn key(self) -> &'static str { match self { $($name::$v => $key,)* } }
            /// What it means, for an operator.
            pub const fn help(self) -> &'static str { match self { $($name::$v => $help,)* } }
        }
    };
}

reasons! {
    /// Why a frame was dropped.
    DropReason {
        TruncatedEthernet => "truncated_ethernet", "frame shorter than an Ethernet header";
        VlanTagged => "vlan_tagged", "802.1Q-tagged frame on a dedicated NIC (give netfw the VLAN subinterface instead)";
        Ipv6 => "ipv6", "IPv6 frame (netfw serves IPv4 VIPs)";
        UnknownEthertype => "unknown_ethertype", "neither ARP nor IPv4";
        BadArp => "bad_arp", "malformed or non-Ethernet/IPv4 ARP";
        BadIpv4Header => "bad_ipv4_header", "IPv4 header truncated, wrong version or bad length";
        BadIpv4Checksum => "bad_ipv4_checksum", "IPv4 header checksum mismatch on a packet that would start a flow (a live flow's packets go on unchecked, as the kernel's path sends them: the real server checks them)";
        TruncatedL4 => "truncated_l4", "TCP/UDP/ICMP header cut short";
        NotForUs => "not_for_us", "unicast frame for another MAC (flooded by a switch)";
        NotOurAddress => "not_our_address", "IPv4 for an address that is not a VIP on this NIC nor the DIP";
        SrcIsVip => "src_is_vip", "frame with source IP = VIP reached the director: a real server's reply took the wrong path (check its default route)";
        NoService => "no_service", "TCP/UDP to a VIP port with no virtual service";
        VipOnRsSide => "vip_on_rs_side", "VIP traffic arrived on the RS-facing NIC (two-arm: the router must send it to the VIP-facing NIC)";
        OtherProtocol => "other_protocol", "IP protocol other than TCP/UDP/ICMP to a VIP";
        TcpNoFlow => "tcp_no_flow", "TCP RST or SYN-ACK without a flow (nothing to forward it to)";
        NoUsableServer => "no_usable_server", "every real server of the service is down (health check), drained (weight 0) or unreachable (MAC unknown), and no sorry server could take the flow";
        ServerDown => "server_down", "a fragment or ICMP error for a flow whose real server is down (the flow itself moves to another server with its next TCP/UDP packet)";
        RsMacUnknown => "rs_mac_unknown", "flow's real server has no resolved MAC";
        FragmentNoFirst => "fragment_no_first", "later fragment whose first fragment never came (held, then timed out)";
        FragmentBufferFull => "fragment_buffer_full", "out-of-order fragment and no free hold slot";
        IcmpNoFlow => "icmp_no_flow", "ICMP error about a flow the director does not know";
        ControlQueueFull => "control_queue_full", "control stack queue full (ARP/ICMP flood)";
        TxRingFull => "tx_ring_full", "transmit ring full";
        TxError => "tx_error", "the kernel dropped a frame we sent (the NIC's transmit queue was full, or it refused the frame)";
        RxRingOverflow => "rx_ring_overflow", "the kernel found the receive ring full (netfw was not scheduled in time: CPU starved)";
        Standby => "standby", "a frame for a VIP reached this box while it is the HA pair's backup (the master serves the VIPs; a switch flooded it, or a neighbour still has this box's MAC)";
        Oversize => "oversize", "a frame larger than the MTU that cannot be split (not TCP, e.g. UDP GRO; or cut short by the ring): turn receive merging and segmentation offloads off towards the director";
    }
}

reasons! {
    /// Things that happened (not drops).
    Event {
        RxFrames => "rx_frames", "frames received on the dedicated NICs";
        Forwarded => "forwarded", "frames forwarded to a real server";
        ForwardedInKernel => "forwarded_in_kernel", "frames of established flows forwarded by netfw's XDP or tc program without leaving the kernel (a merged frame counts once; also counted in forwarded)";
        KernelFlowsRefused => "kernel_flows_refused", "established flows the kernel's flow map (XDP or tc) had no room for (netfw forwards them itself)";
        ToControl => "to_control", "frames handed to the control stack (ARP, ICMP, DIP)";
        FlowsCreated => "flows_created", "new flows scheduled";
        FlowsExpired => "flows_expired", "flows removed after their idle timeout";
        FlowsEvicted => "flows_evicted", "half-open or unconfirmed flows evicted from a full table";
        FlowsStateless => "flows_stateless", "new flows forwarded without a table entry (the table was full of confirmed flows), by consistent hashing as their later packets are";
        FlowsResumed => "flows_resumed", "packets of connections with no flow (expired, or not tracked while the table was full) forwarded by consistent hashing and tracked again";
        FlowsMoved => "flows_moved", "flows whose real server went down, moved to another server on their next packet (a TCP client gets a reset from the new server at once instead of hanging)";
        PersistenceFull => "persistence_full", "new flows of a persistent service served without affinity: the persistence table had no room for the client's template";
        SorryFlows => "sorry_flows", "new flows sent to the service's sorry server (no real server up)";
        FlowsDroppedOnReload => "flows_dropped_on_reload", "flows whose real server left the config";
        ArpRequestsSent => "arp_requests_sent", "ARP requests for real servers (sender IP = DIP)";
        GratuitousArpSent => "gratuitous_arp_sent", "gratuitous ARP announcements of VIPs";
        RsMacChanged => "rs_mac_changed", "a real server's MAC was learned or changed";
        VipConflict => "vip_conflict", "another host sent ARP claiming a VIP (it answers ARP for the VIP: fix its arp_ignore/arp_announce)";
        FragmentsHeld => "fragments_held", "out-of-order fragments held until their first fragment";
        Reloads => "reloads", "configurations applied";
        FramesSplit => "frames_split", "merged frames (GRO/LRO on a NIC, TSO on a veth peer) split back into MTU-sized TCP segments";
        TxFlushFailed => "tx_flush_failed", "a transmit flush failed for another reason than a full queue (the frames stay queued and are retried)";
        SyncDropped => "sync_dropped", "flow changes not sent to the HA peer (more than the sync queue holds in one turn): after a failover those flows go where consistent hashing puts them";
        FlowsAdopted => "flows_adopted", "flows the HA peer synced to this box (it keeps them on the same real server if it takes over)";
        RingStatsUnreadable => "ring_stats_unreadable", "the kernel's receive ring statistics could not be read: rx_ring_overflow may be undercounted";
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::TruncatedEthernet => DropReason::TruncatedEthernet,
            WireError::VlanTagged => DropReason::VlanTagged,
            WireError::Ipv6 => DropReason::Ipv6,
            WireError::UnknownEthertype => DropReason::UnknownEthertype,
            WireError::BadArp => DropReason::BadArp,
            WireError::BadIpv4Header => DropReason::BadIpv4Header,
            WireError::BadIpv4Checksum => DropReason::BadIpv4Checksum,
            WireError::TruncatedL4 => DropReason::TruncatedL4,
        }
    }
}

/// The forwarder's global counters.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    drops: [u64; DropReason::ALL.len()],
    events: [u64; Event::ALL.len()],
}

impl Counters {
    /// Count a drop.
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
    /// Count several drops of one reason.
    pub fn drop_n(&mut self, r: DropReason, n: u64) {
        self.drops[r as usize] += n;
    }
    /// Count an event.
    pub fn event(&mut self, e: Event) {
        self.add(e, 1);
    }
    /// Add to an event counter.
    pub fn add(&mut self, e: Event, n: u64) {
        self.events[e as usize] += n;
    }
    /// A drop counter.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    /// An event counter.
    pub fn events(&self, e: Event) -> u64 {
        self.events[e as usize]
    }
    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}
