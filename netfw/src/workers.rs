//! Worker threads: one per group of receive queues (RSS keeps a client's flow on one queue),
//! each with its own part of every NIC's sockets, its own forwarder (its share of the flow
//! table), its own control stacks and its own handle on the kernel's flow map. Nothing is
//! locked on the fast path; what the workers share goes through the core's `SharedLoad`
//! (connection counts for lc/wlc: one atomic operation per flow state change) and channels
//! polled once per turn:
//!
//! - ARP: every ARP frame a worker sees is passed to the others (a reply to the first
//!   worker's request may arrive on any queue). Only the first worker sends ARP requests and
//!   gratuitous ARP, and writes the kernel's backends array.
//! - Health: the first worker runs the health probes; the others pass it the probes' replies
//!   they receive, and follow its verdicts on the health board (read when it changes).
//! - HA: the first worker runs the pair's election; the others pass it the adverts they
//!   receive. Every worker follows the role (`pair::Serving`, read once per turn): a backup's
//!   forwarders and VIP-facing stacks serve no VIP. A worker that stops as master says so
//!   with an advert of priority 0, and so does one whose dedicated NIC loses its link (fault).
//! - Orders from the coordinator (`run`'s thread, which serves the control socket and
//!   signals): report status (the coordinator adds the workers' reports up), or install a
//!   prepared reload. A reload stops every worker between two turns (a barrier), so no worker
//!   forwards with old tables while another has the new ones, and the kernel's backends are
//!   rewritten only when all have installed.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use director_messages::connections::{ConnectionFilter, Connections};
use director_messages::status::{Status, WorkerStatus};
use netfw_core::counters::Event;
use netfw_core::forward::{ArpSeen, Forwarder, Installed, Plan, SharedLoad};
use netfw_core::model::DataPlaneSpec;
use netfw_core::time::Millis;

use crate::health::{HealthBoard, Probes};
use crate::io::kernel_flows::KernelFlows;
use crate::io::{Port, Transmit};
use crate::pair::{Pair, Serving};
use crate::pump::{self, Nic, Services};
use crate::status;

/// What the coordinator asks of a worker.
#[derive(Debug)]
pub enum Order {
    /// Report its status (its kernel counts taken first).
    Status(Sender<Status>),
    /// Install a prepared reload, with every other worker.
    Install(Arc<Install>),
    /// List its flows (and the first worker the box's persistence templates).
    Connections(ConnectionFilter, Sender<Connections>),
}

/// A reload for every worker at once.
#[derive(Debug)]
pub struct Install {
    /// Worker `w`'s tables at `w` (taken by it).
    plans: Mutex<Vec<Option<Plan>>>,
    /// The new config (for the control stacks).
    spec: DataPlaneSpec,
    /// The connection counts for the new backends.
    load: Arc<SharedLoad>,
    /// The health verdicts for the new backends.
    health: Arc<HealthBoard>,
    /// Every worker waits here between the steps.
    barrier: Barrier,
    /// Each worker's result.
    done: Mutex<Sender<Installed>>,
}

impl Install {
    /// A reload of `plans` (one per worker, in order) to `spec`; results go to `done`.
    pub fn new(plans: Vec<Plan>, spec: DataPlaneSpec, done: Sender<Installed>) -> Install {
        let backends = spec.backend_count();
        let n = plans.len();
        Install {
            plans: Mutex::new(plans.into_iter().map(Some).collect()),
            spec,
            load: Arc::new(SharedLoad::new(backends)),
            health: Arc::new(HealthBoard::new(backends)),
            barrier: Barrier::new(n),
            done: Mutex::new(done),
        }
    }
}

/// A worker: its NICs (its part of each), forwarder, kernel handle, and its channels.
#[derive(Debug)]
pub struct Worker<P> {
    /// 0 for the first worker (it announces, and writes the kernel's backends).
    pub index: usize,
    /// Its part of each NIC, VIP-facing first.
    pub nics: Vec<Nic<P>>,
    /// Its forwarder.
    pub fwd: Forwarder,
    /// Its handle on the kernel's flow map, when the kernel forwards established flows.
    pub kernel: Option<KernelFlows>,
    /// Orders from the coordinator.
    pub orders: Receiver<Order>,
    /// ARP frames the other workers saw.
    pub arp_in: Receiver<ArpSeen>,
    /// The other workers' `arp_in`.
    pub arp_out: Vec<Sender<ArpSeen>>,
    /// The NICs' names, for status.
    pub names: (String, String),
    /// The VIP-facing NIC's receive queues it serves, for status.
    pub queues: String,
    /// The health probes (the first worker), or where their replies go.
    pub probes: Probes,
    /// The health verdicts its forwarder follows.
    pub health: Arc<HealthBoard>,
    /// The board's version last copied into the forwarder.
    pub health_seen: u64,
    /// The pair's election (the first worker), or where its adverts go.
    pub pair: Pair,
    /// The role this worker follows.
    pub serving: Serving,
}

impl<P: Port> Worker<P> {
    /// Forward until `stop` says so; `start` is netfw's time zero.
    pub fn run(mut self, start: Instant, stop: &std::sync::atomic::AtomicBool) {
        let now = || Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
        let mut pfds: Vec<libc::pollfd> =
            self.nics.iter().flat_map(|n| n.port.fds()).map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
        let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);
        let mut next_stats = now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: `pfds` is a live array of `nfds` pollfd structs.
            unsafe { libc::poll(pfds.as_mut_ptr(), nfds, 5) };
            let t = now();
            while let Ok(seen) = self.arp_in.try_recv() {
                self.fwd.learn_arp(seen, t);
            }
            self.health.sync(&mut self.fwd, &mut self.health_seen);
            let serving = self.serving.serving();
            if serving != self.fwd.serving() {
                self.fwd.set_serving(serving, t);
                for n in &mut self.nics {
                    n.stack.set_serving(serving);
                }
            }
            if let (Some(d), Some(n)) = (self.pair.driver(), self.nics.first_mut()) {
                let tx = n.port.halves().1;
                d.watch_links(&[&self.names.0, &self.names.1], t, |f| tx.send(f));
            }
            let svc = Services { probes: &mut self.probes, pair: &mut self.pair };
            pump::turn(&mut self.nics, &mut self.fwd, self.kernel.as_mut(), svc, t);
            let health = &self.health;
            self.fwd.take_suspects(|b| health.suspect(b));
            let out = &self.arp_out;
            self.fwd.take_arp_seen(|seen| {
                for o in out {
                    let _ = o.send(seen);
                }
            });
            if t >= next_stats {
                next_stats = t.plus(1_000);
                pump::kernel_drops(&mut self.nics, &mut self.fwd);
            }
            while let Ok(order) = self.orders.try_recv() {
                match order {
                    Order::Status(reply) => {
                        if let Some(k) = self.kernel.as_mut() {
                            k.take_counts(&mut self.fwd);
                        }
                        let mut s = status::collect(&self.fwd, &self.names.0, &self.names.1, now());
                        s.workers = vec![WorkerStatus {
                            worker: self.index,
                            queues: self.queues.clone(),
                            rx_frames: self.fwd.counters().events(Event::RxFrames),
                            flows: self.fwd.flows().len(),
                        }];
                        if let Some(p) = self.probes.prober() {
                            p.annotate(&mut s, &self.fwd);
                        }
                        if let Some(d) = self.pair.driver() {
                            d.annotate(&mut s, now());
                        }
                        let _ = reply.send(s);
                    }
                    Order::Install(install) => self.install(&install, now()),
                    Order::Connections(filter, reply) => {
                        let _ = reply.send(crate::connections::collect(&self.fwd, self.index == 0, &filter, now()));
                    }
                }
            }
        }
        self.leave_pair();
    }

    /// Stopping: a master's advert of priority 0, sent and flushed now.
    fn leave_pair(&mut self) {
        let (Some(d), Some(n)) = (self.pair.driver(), self.nics.first_mut()) else { return };
        let tx = n.port.halves().1;
        d.leave(|f| tx.send(f));
        let _ = tx.flush();
    }

    /// Install this worker's part of a reload, in step with the others.
    fn install(&mut self, r: &Install, now: Millis) {
        let first = self.index == 0;
        // 1. Every worker is between turns; the kernel leaves every frame to the workers.
        r.barrier.wait();
        if first {
            if let Some(k) = self.kernel.as_mut() {
                k.before_install(&mut self.fwd);
            }
        }
        r.barrier.wait();
        // 2. Each installs its tables.
        let plan = r.plans.lock().ok().and_then(|mut p| p.get_mut(self.index).and_then(Option::take));
        let done = plan.map(|plan| {
            let done = self.fwd.install(plan, now);
            self.fwd.share_load(Arc::clone(&r.load));
            for n in &mut self.nics {
                n.stack.configure(&r.spec);
            }
            self.health = Arc::clone(&r.health);
            self.health_seen = 0;
            if let Some(p) = self.probes.prober() {
                p.configure(&r.spec, Arc::clone(&r.health), now);
            }
            self.pair.configure(&r.spec, &self.serving, now);
            done
        });
        r.barrier.wait();
        // 3. The kernel's backends are rewritten for the new tables, then every worker goes on.
        if first {
            if let (Some(k), Some(d)) = (self.kernel.as_mut(), done.as_ref()) {
                if let Err(e) = k.after_install(&mut self.fwd, d) {
                    eprintln!("netfw: {e}: the kernel may forward flows of the old config to real servers that stay");
                }
            }
        }
        r.barrier.wait();
        if let (Some(d), Ok(tx)) = (done, r.done.lock()) {
            let _ = tx.send(d);
        }
    }
}
