//! NIC I/O for the forwarder: AF_PACKET sockets with PACKET_MMAP rings.
//!
//! Receive uses a TPACKET_V3 block ring (the kernel fills whole blocks, we walk them in place);
//! transmit uses a frame ring flushed with one `sendto` per batch, with PACKET_QDISC_BYPASS.
//! No syscall and no allocation per packet.

pub mod nic;
pub mod ring;

pub use nic::{nic_mac, NicError};
pub use ring::{PacketRing, RingError, RxFrame, TxRing};
