//! Wire formats: typed, bounds-checked views over frames (the smoltcp style).
//!
//! Parsing uses smoltcp's own views (`EthernetFrame`, `Ipv4Packet`, `ArpPacket`) and adds what
//! a DR forwarder needs on top: one `classify` pass that tells the fast path everything it
//! needs about a frame without copying it, builders for the ARP frames the director sends, and
//! the splitting of merged TCP frames back into MTU-sized segments (`segment`).

pub mod arp;
pub mod csum;
pub mod fast;
pub mod frame;
pub mod segment;

pub use frame::{classify, Frame, Ipv4Info, L4Info, WireError};

/// A MAC address as six bytes.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// Ethernet header length (no VLAN tag).
pub const ETH_HDR_LEN: usize = 14;
