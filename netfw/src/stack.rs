//! The control stack: a smoltcp `Interface` per dedicated NIC that owns the director's own
//! addresses there.
//!
//! It answers ARP for the VIPs on the VIP-facing NIC only (the RS-facing interface does not
//! hold them) and for the DIP, and answers ICMP echo for both. Frames reach it through a small
//! queue filled by the forwarder's `Verdict::Control`; what it sends is queued back and written
//! to the NIC's transmit ring. The kernel holds no address on these NICs.
//!
//! In an HA pair the VIP-facing stack lives on the pair's virtual MAC and holds the VIPs only
//! while this box is the master (`set_serving`): a backup answers nothing for them.

use heapless::{Deque, Vec as HVec};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use netfw_core::model::DataPlaneSpec;
use netfw_core::time::Millis;
use netfw_core::wire::Mac;

/// Largest frame the control path handles.
pub const CONTROL_MTU: usize = 1514;
/// Frames queued each way.
pub const CONTROL_QUEUE: usize = 64;

type Buf = HVec<u8, CONTROL_MTU>;

/// A device made of two queues.
#[derive(Debug, Default)]
pub struct QueueDevice {
    rx: Deque<Buf, CONTROL_QUEUE>,
    tx: Deque<Buf, CONTROL_QUEUE>,
}

/// Receive token.
#[derive(Debug)]
pub struct QRx(Buf);
/// Transmit token.
#[derive(Debug)]
pub struct QTx<'a>(&'a mut Deque<Buf, CONTROL_QUEUE>);

impl RxToken for QRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for QTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = Buf::new();
        // Lengths beyond the MTU cannot happen (capabilities say 1514); resize clamps anyway.
        let _ = b.resize(len.min(CONTROL_MTU), 0);
        let r = f(&mut b);
        let _ = self.0.push_back(b);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QRx;
    type TxToken<'a> = QTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(QRx, QTx<'_>)> {
        if self.tx.is_full() {
            return None;
        }
        let f = self.rx.pop_front()?;
        Some((QRx(f), QTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<QTx<'_>> {
        (!self.tx.is_full()).then_some(QTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = CONTROL_MTU;
        c
    }
}

/// The addresses one NIC's stack owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Holds the VIPs (VIP-facing NIC, or the only NIC in one-arm).
    pub vips: bool,
    /// Holds the DIP (RS-facing NIC, or the only NIC in one-arm).
    pub dip: bool,
}

/// One NIC's control stack.
pub struct ControlStack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: QueueDevice,
    roles: Roles,
    /// The NIC's own MAC.
    mac: Mac,
    /// Whether it holds the VIPs now (false only for a backup of an HA pair).
    serving: bool,
    /// The config last applied (its addresses are re-applied when `serving` changes).
    spec: DataPlaneSpec,
}

impl core::fmt::Debug for ControlStack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlStack").field("roles", &self.roles).finish()
    }
}

/// smoltcp's instant for netfw's milliseconds.
pub(crate) fn ts(now: Millis) -> Instant {
    Instant::from_millis(i64::try_from(now.0).unwrap_or(i64::MAX))
}

impl ControlStack {
    /// A stack for a NIC with `mac` playing `roles`.
    pub fn new(mac: Mac, roles: Roles, spec: &DataPlaneSpec, seed: u64, now: Millis) -> ControlStack {
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        cfg.random_seed = seed;
        let mut dev = QueueDevice::default();
        let iface = Interface::new(cfg, &mut dev, ts(now));
        let serving = spec.ha.is_none();
        let mut s = ControlStack { iface, sockets: SocketSet::new(Vec::new()), dev, roles, mac, serving, spec: spec.clone() };
        s.configure(spec);
        s
    }

    /// HA: hold the VIPs (master) or nothing for them (backup).
    pub fn set_serving(&mut self, serving: bool) {
        if serving != self.serving {
            self.serving = serving;
            let spec = self.spec.clone();
            self.configure(&spec);
        }
    }

    /// (Re)apply addresses, the MAC and the default route from a config.
    pub fn configure(&mut self, spec: &DataPlaneSpec) {
        let roles = self.roles;
        // A pair's VIPs live on its virtual MAC (the VIP-facing stack holds nothing else: HA
        // needs the two-arm layout).
        let paired = roles.vips && !roles.dip && spec.ha.is_some();
        // Without a pair the VIPs are always held; joining one starts as backup.
        if spec.ha.is_none() {
            self.serving = true;
        } else if self.spec.ha.is_none() {
            self.serving = false;
        }
        let mac = spec.ha.as_ref().filter(|_| paired).map_or(self.mac, netfw_core::model::HaSpec::virtual_mac);
        self.iface.set_hardware_addr(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let mut nets: Vec<IpCidr> = Vec::new();
        if roles.dip {
            nets.push(IpCidr::new(IpAddress::Ipv4(spec.dip), spec.dip_prefix));
        }
        if roles.vips && self.serving {
            for v in spec.vips() {
                nets.push(IpCidr::new(IpAddress::Ipv4(v), spec.vip_prefix));
            }
        }
        self.iface.update_ip_addrs(|a| {
            a.clear();
            for n in &nets {
                // Capacity is checked by config validation (at most 7 VIPs + the DIP).
                let _ = a.push(*n);
            }
        });
        let routes = self.iface.routes_mut();
        let _ = routes.remove_default_ipv4_route();
        if let Some(gw) = spec.gateway {
            if nets.iter().any(|n| n.contains_addr(&IpAddress::Ipv4(gw))) {
                let _ = routes.add_default_ipv4_route(gw);
            }
        }
        self.spec = spec.clone();
    }

    /// Queue a received frame. False if the queue is full (the caller counts the drop).
    pub fn push_rx(&mut self, frame: &[u8]) -> bool {
        let Ok(b) = Buf::from_slice(frame.get(..frame.len().min(CONTROL_MTU)).unwrap_or_default()) else { return false };
        self.dev.rx.push_back(b).is_ok()
    }

    /// Let smoltcp process what is queued, then hand each frame it wants to send to `send`.
    pub fn poll(&mut self, now: Millis, mut send: impl FnMut(&[u8])) {
        let _ = self.iface.poll(ts(now), &mut self.dev, &mut self.sockets);
        while let Some(f) = self.dev.tx.pop_front() {
            send(&f);
        }
    }
}
