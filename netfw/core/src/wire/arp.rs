//! ARP frames the director sends itself: requests for real servers' MACs (always with the DIP
//! as sender, seed 001 question 1) and gratuitous ARP for VIPs.

use core::net::Ipv4Addr;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr};

use super::{Mac, BROADCAST, ETH_HDR_LEN};

/// Length of an Ethernet ARP frame (without padding).
pub const ARP_FRAME_LEN: usize = ETH_HDR_LEN + 28;

/// Write a broadcast ARP request "who has `target` tell `sender_ip`" into `buf`.
/// Returns the frame length, or `None` when `buf` is too short.
pub fn request(buf: &mut [u8], sender_mac: Mac, sender_ip: Ipv4Addr, target: Ipv4Addr) -> Option<usize> {
    emit(buf, ArpOperation::Request, sender_mac, sender_ip, [0; 6], target, BROADCAST)
}

/// Write a gratuitous ARP (a request with sender = target = `ip`) into `buf`.
pub fn gratuitous(buf: &mut [u8], mac: Mac, ip: Ipv4Addr) -> Option<usize> {
    emit(buf, ArpOperation::Request, mac, ip, [0; 6], ip, BROADCAST)
}

fn emit(buf: &mut [u8], op: ArpOperation, smac: Mac, sip: Ipv4Addr, tmac: Mac, tip: Ipv4Addr, eth_dst: Mac) -> Option<usize> {
    let buf = buf.get_mut(..ARP_FRAME_LEN)?;
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    EthernetRepr { src_addr: EthernetAddress(smac), dst_addr: EthernetAddress(eth_dst), ethertype: EthernetProtocol::Arp }.emit(&mut eth);
    let mut pkt = ArpPacket::new_unchecked(eth.payload_mut());
    ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(smac),
        source_protocol_addr: sip,
        target_hardware_addr: EthernetAddress(tmac),
        target_protocol_addr: tip,
    }
    .emit(&mut pkt);
    Some(ARP_FRAME_LEN)
}
