//! The HA pair in ipvs mode, run by `netfw ipvs watch`: the same election as the forwarder's
//! (`pair::Driver`), its adverts on an AF_PACKET socket on the VIP-facing NIC that sees VRRP
//! only. The kernel does the rest: the VIPs live on the pair's macvlan (`vrrp<vrid>`, with the
//! virtual MAC; `netfw_kernel::director`), which this brings up only while the box is master
//! (the kernel answers ARP for the VIPs only then, and announces them as the link comes up),
//! and the kernel's connection sync daemon carries the connections to the backup.
//!
//! The link goes down when this starts (a box starts as backup), when it stops, and while a
//! dedicated NIC has no link (fault); a master that stops or faults says so with an advert of
//! priority 0 first.

use director_messages::status::Status;
use netfw_core::model::DataPlaneSpec;
use netfw_core::time::Millis;
use netfw_kernel::director::pair_link;
use netfw_kernel::rtnl;

use crate::io::watch_socket::WatchSocket;
use crate::pair::{is_advert, Driver, Serving};

/// The largest advert read (a VRRP message with its VIPs and authenticator is far smaller).
const RX: usize = 2048;

/// The pair's election and the link it brings up and down.
#[derive(Debug)]
pub struct IpvsPair {
    socket: WatchSocket,
    driver: Driver,
    serving: Serving,
    link: String,
    /// The dedicated NICs: one without link puts the box in fault.
    nics: [String; 2],
    /// The link's state as last set (`None`: not yet).
    up: Option<bool>,
    buf: Box<[u8]>,
}

impl IpvsPair {
    /// The pair of `spec` on `vip_side` (`None` without one), its link down.
    pub fn open(spec: &DataPlaneSpec, vip_side: &str, rs_side: &str, now: Millis) -> Result<Option<IpvsPair>, String> {
        let Some(link) = pair_link(spec) else { return Ok(None) };
        let serving = Serving::default();
        let Some(driver) = Driver::new(spec, serving.clone(), now) else { return Ok(None) };
        let socket = WatchSocket::open_vrrp(vip_side).map_err(|e| e.to_string())?;
        let mut p = IpvsPair {
            socket,
            driver: driver.without_flow_sync(),
            serving,
            link,
            nics: [vip_side.to_string(), rs_side.to_string()],
            up: None,
            buf: vec![0; RX].into_boxed_slice(),
        };
        p.apply();
        Ok(Some(p))
    }

    /// The socket, for poll(2).
    pub fn fd(&self) -> i32 {
        self.socket.fd()
    }

    /// Adverts received, the election's timers, the link as the role says.
    pub fn turn(&mut self, now: Millis) {
        while let Some(r) = self.socket.recv(&mut self.buf) {
            if let Some(f) = self.buf.get(..r.len).filter(|f| is_advert(f)) {
                let _ = self.driver.take(f, now);
            }
        }
        let socket = &self.socket;
        self.driver.watch_links(&[&self.nics[0], &self.nics[1]], now, |f| socket.send(f));
        self.driver.poll(now, |f| socket.send(f));
        self.apply();
    }

    /// A reload: the pair's new settings (its link is `director::setup`'s; a new vrid means a
    /// new link, set as the role says).
    pub fn configure(&mut self, spec: &DataPlaneSpec, now: Millis) {
        self.driver.configure(spec, now);
        if let Some(link) = pair_link(spec).filter(|l| *l != self.link) {
            self.link = link;
            self.up = None;
        }
        self.apply();
    }

    /// Bring the link up while master, down otherwise (a syscall only when that changes).
    fn apply(&mut self) {
        let want = self.serving.serving() && self.driver.is_master();
        if self.up == Some(want) {
            return;
        }
        let done = if want { rtnl::set_link_up(&self.link) } else { rtnl::set_link_down(&self.link) };
        match done {
            Ok(()) => {
                eprintln!("netfw: HA: the VIPs' link {} {}", self.link, if want { "up: this box serves them" } else { "down" });
                self.up = Some(want);
            }
            Err(e) => eprintln!("netfw: HA: {e}"),
        }
    }

    /// Stopping: a master says so (priority 0) and takes its link down.
    pub fn leave(&mut self) {
        let socket = &self.socket;
        self.driver.leave(|f| socket.send(f));
        self.apply();
    }

    /// The pair's part of the status.
    pub fn annotate(&self, s: &mut Status, now: Millis) {
        self.driver.annotate(s, now);
    }
}
