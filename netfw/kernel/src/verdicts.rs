//! Health verdicts as changes to IPVS (ipvs mode): for each service with a health check or a
//! sorry server, the real servers IPVS should hold now. A server that is down is removed (with
//! `expire_nodest_conn=1` its connections end at their next packet, which is then scheduled
//! afresh to a server that is up: the client gets a quick reset); weight 0 stays weight 0
//! (drain). With no usable server the sorry server is added; once a real server is back, the
//! sorry server stays at weight 0 while it still has connections, and goes when it has none.
//!
//! A pure function of (the kernel's table, the config, the verdicts); it changes only real
//! servers of the services the config checks, and never a service itself (that is `mode`'s).
//! A server without a verdict yet (not probed since the checker started) stays as IPVS has
//! it: a checker that restarts does not put back a server it had taken out.

use crate::ipvs::{Dest, Service};
use crate::reconcile::{self, Change, Wanted};
use netfw_core::model::DataPlaneSpec;

/// Whether a service is the checker's to adjust.
pub fn adjusted(s: &netfw_core::model::ServiceSpec) -> bool {
    s.health.is_some() || s.sorry_server.is_some()
}

/// What the init's reconcile of a config leaves to the checker, in `want` (the config's
/// services): a checked service that IPVS already holds keeps its membership as it is — a
/// configured server absent from IPVS (the checker took it out, or it is new and not yet
/// checked) is not put in, and its sorry server, if IPVS holds it, stays with its weight. So a
/// config change never puts a down server back, even for the moment before the checker would
/// take it out again. Everything else (weights, new and removed services, servers no longer
/// configured) is the reconcile's as before.
pub fn leave_to_checker(have: &[(Service, Vec<Dest>)], spec: &DataPlaneSpec, want: &mut [Wanted]) {
    for w in want.iter_mut().filter(|w| checked(w, spec)) {
        let Some((_, dests)) = have.iter().find(|(k, _)| k.key == w.key) else { continue };
        w.dests.retain(|(a, _, _)| dests.iter().any(|d| d.addr == *a));
        if let Some(d) = sorry_server(w, spec).and_then(|sorry| dests.iter().find(|d| d.addr == sorry)) {
            if !w.dests.iter().any(|(a, _, _)| *a == d.addr) {
                w.dests.push((d.addr, d.fwd, d.weight));
            }
        }
    }
}

/// Whether IPVS's service `w` is the checker's: one of the config's services it carries is.
fn checked(w: &Wanted, spec: &DataPlaneSpec) -> bool {
    w.members.iter().any(|&i| spec.services.get(i).is_some_and(adjusted))
}

/// The sorry server of IPVS's service `w`: the first its services name.
fn sorry_server(w: &Wanted, spec: &DataPlaneSpec) -> Option<std::net::Ipv4Addr> {
    w.members.iter().find_map(|&i| spec.services.get(i)?.sorry_server)
}

/// The changes that make IPVS follow the verdicts; `up(service, server)` indexes `spec`
/// (`None`: no verdict yet). A firewall-mark service that carries several of the config's
/// services (a persistence group) holds a real server while every checked one of them finds
/// it up: a server whose FTP control port is down serves no passive data either.
pub fn changes(have: &[(Service, Vec<Dest>)], spec: &DataPlaneSpec, up: impl Fn(usize, usize) -> Option<bool>) -> Vec<Change> {
    let mut out = Vec::new();
    for mut want in Wanted::all(&spec.services).into_iter().filter(|w| checked(w, spec)) {
        let Some(h) = have.iter().find(|(k, _)| k.key == want.key) else { continue };
        let Some(first) = want.members.first().and_then(|&i| spec.services.get(i)) else { continue };
        // The service's own settings are the kernel's: only its real servers change here.
        (want.sched, want.persistence_s) = (h.0.sched.clone(), h.0.persistence_s);
        let is_up = |addr| {
            want.members.iter().filter_map(|&si| Some((si, spec.services.get(si).filter(|s| adjusted(s))?))).all(|(si, s)| {
                s.real_servers
                    .iter()
                    .position(|r| r.addr == addr)
                    .is_none_or(|ri| up(si, ri).unwrap_or_else(|| h.1.iter().any(|d| d.addr == addr)))
            })
        };
        want.dests = first.real_servers.iter().filter(|r| is_up(r.addr)).map(|r| (r.addr, first.forwarding, u32::from(r.weight))).collect();
        let usable = want.dests.iter().any(|d| d.2 > 0);
        if let Some(sorry) = sorry_server(&want, spec) {
            let busy = h.1.iter().any(|d| d.addr == sorry && d.active + d.inactive > 0);
            if !usable {
                want.dests.push((sorry, first.forwarding, 1));
            } else if busy {
                want.dests.push((sorry, first.forwarding, 0));
            }
        }
        out.extend(reconcile::diff(std::slice::from_ref(h), std::slice::from_ref(&want)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::{Stats, SvcKey};
    use netfw_core::model::{CheckKind, Forwarding, HealthCheck, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts, Via};
    use std::net::Ipv4Addr;

    fn rip(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + i)
    }
    const SORRY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

    fn spec(checked: bool, sorry: bool, weights: &[u16]) -> DataPlaneSpec {
        DataPlaneSpec {
            dip: Ipv4Addr::new(198, 18, 0, 2),
            dip_prefix: 24,
            vip_prefix: 24,
            gateway: None,
            services: vec![ServiceSpec {
                vip: Ipv4Addr::new(203, 0, 113, 10),
                proto: Protocol::Tcp,
                port: 80,
                port_last: 80,
                sched: SchedKind::Rr,
                persistence_s: 0,
                persistence_group: None,
                forwarding: Forwarding::Dr,
                real_servers: weights.iter().zip(1..).map(|(&weight, i)| RealServerSpec { addr: rip(i), weight }).collect(),
                health: checked.then_some(HealthCheck {
                    kind: CheckKind::Tcp,
                    port: 80,
                    via: Via::Vip,
                    interval_ms: 500,
                    timeout_ms: 500,
                    rise: 2,
                    fall: 2,
                }),
                sorry_server: sorry.then_some(SORRY),
            }],
            flow_capacity: 64,
            timeouts: Timeouts::default(),
            arp_refresh_ms: 60_000,
            ha: None,
        }
    }

    fn key() -> SvcKey {
        SvcKey::port(Protocol::Tcp, Ipv4Addr::new(203, 0, 113, 10), 80)
    }

    fn table(dests: &[(Ipv4Addr, u32, u32)]) -> Vec<(Service, Vec<Dest>)> {
        vec![(
            Service { key: key(), sched: "rr".into(), persistence_s: 0, stats: Stats::default() },
            dests
                .iter()
                .map(|&(addr, weight, conns)| Dest {
                    addr,
                    port: 80,
                    fwd: Forwarding::Dr,
                    weight,
                    active: conns,
                    inactive: 0,
                    stats: Stats::default(),
                })
                .collect(),
        )]
    }

    #[test]
    fn a_down_server_leaves_ipvs_and_comes_back_with_its_weight() {
        let s = spec(true, false, &[1, 3]);
        let full = table(&[(rip(1), 1, 0), (rip(2), 3, 0)]);
        assert!(changes(&full, &s, |_, _| Some(true)).is_empty(), "all up: nothing to do");
        assert_eq!(changes(&full, &s, |_, r| Some(r != 1)), vec![Change::DelDest(key(), rip(2))]);
        let without = table(&[(rip(1), 1, 0)]);
        assert_eq!(changes(&without, &s, |_, _| Some(true)), vec![Change::AddDest(key(), rip(2), Forwarding::Dr, 3)]);
    }

    #[test]
    fn the_sorry_server_takes_over_when_none_is_usable_and_leaves_once_its_connections_end() {
        let s = spec(true, true, &[1, 0]);
        // rs1 down, rs2 drained: nothing usable.
        let t = table(&[(rip(1), 1, 0), (rip(2), 0, 5)]);
        assert_eq!(
            changes(&t, &s, |_, r| Some(r == 1)),
            vec![Change::DelDest(key(), rip(1)), Change::AddDest(key(), SORRY, Forwarding::Dr, 1)]
        );
        // rs1 back: the sorry server keeps its connections at weight 0, then goes.
        let t = table(&[(rip(2), 0, 5), (SORRY, 1, 2)]);
        assert_eq!(
            changes(&t, &s, |_, _| Some(true)),
            vec![Change::AddDest(key(), rip(1), Forwarding::Dr, 1), Change::SetDest(key(), SORRY, Forwarding::Dr, 0)],
            "the real server first: never a moment with neither"
        );
        let t = table(&[(rip(1), 1, 0), (rip(2), 0, 5), (SORRY, 0, 0)]);
        assert_eq!(changes(&t, &s, |_, _| Some(true)), vec![Change::DelDest(key(), SORRY)]);
    }

    #[test]
    fn a_groups_one_firewall_mark_service_holds_a_server_while_every_checked_service_finds_it_up() {
        // Seed 001's FTP: port 21 (checked) and the passive range, one group: one IPVS service.
        let mut s = spec(true, false, &[1, 1]);
        let mut passive = s.services[0].clone();
        (passive.port, passive.port_last, passive.health) = (10000, 20000, None);
        passive.real_servers.reverse();
        s.services.push(passive);
        for svc in &mut s.services {
            (svc.persistence_s, svc.persistence_group) = (300, Some("ftp".into()));
        }
        let want = Wanted::all(&s.services);
        assert_eq!(want.len(), 1);
        assert_eq!(want[0].members, [0, 1]);
        let mut t = table(&[(rip(1), 1, 0), (rip(2), 1, 0)]);
        t[0].0.key = want[0].key;
        let mark = want[0].key;
        assert!(changes(&t, &s, |_, _| Some(true)).is_empty());
        // rs2 down on port 21 (the only check): out of the group, for the passive ports too.
        let down = |si: usize, ri: usize| Some(!(si == 0 && ri == 1));
        assert_eq!(changes(&t, &s, down), vec![Change::DelDest(mark, rip(2))]);
        // A check on the range too, which finds rs1 down (index 1 there, rs2 is index 1 on port
        // 21): both out.
        s.services[1].health = s.services[0].health.clone();
        let both = |_, ri: usize| Some(ri != 1);
        assert_eq!(changes(&t, &s, both), vec![Change::DelDest(mark, rip(1)), Change::DelDest(mark, rip(2))]);
    }

    #[test]
    fn a_server_without_a_verdict_yet_stays_as_ipvs_has_it() {
        let s = spec(true, false, &[1, 1]);
        let t = table(&[(rip(1), 1, 0)]);
        assert!(changes(&t, &s, |_, _| None).is_empty(), "rs2 stays out, rs1 stays in");
    }

    #[test]
    fn a_config_change_leaves_a_checked_services_membership_to_the_checker() {
        // rs2 is out (down), the sorry server is in; the new config reweights rs1 and adds rs3.
        let have = table(&[(rip(1), 1, 0), (SORRY, 0, 4)]);
        let next = spec(true, true, &[5, 1, 1]);
        let mut want: Vec<Wanted> = Wanted::all(&next.services);
        leave_to_checker(&have, &next, &mut want);
        assert_eq!(
            reconcile::diff(&have, &want),
            vec![Change::SetDest(key(), rip(1), Forwarding::Dr, 5)],
            "rs2 stays out, rs3 waits for its first check, the sorry server keeps its connections"
        );
        // Without checks the config's servers are all in, and the sorry server goes.
        let plain = spec(false, false, &[5, 1]);
        let mut want: Vec<Wanted> = Wanted::all(&plain.services);
        leave_to_checker(&have, &plain, &mut want);
        assert_eq!(
            reconcile::diff(&have, &want),
            vec![
                Change::DelDest(key(), SORRY),
                Change::SetDest(key(), rip(1), Forwarding::Dr, 5),
                Change::AddDest(key(), rip(2), Forwarding::Dr, 1)
            ]
        );
    }

    #[test]
    fn unchecked_services_and_services_the_kernel_lacks_are_left_alone() {
        let s = spec(false, false, &[1, 1]);
        assert!(changes(&table(&[(rip(1), 1, 0)]), &s, |_, _| Some(false)).is_empty());
        assert!(changes(&[], &spec(true, true, &[1]), |_, _| Some(false)).is_empty());
    }
}
