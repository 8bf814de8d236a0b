//! The connection list in forwarder mode: a worker's share of the flow table and, from the
//! first worker, the box's persistence templates (shared by every worker), filtered and
//! bounded, in `ipvsadm -L -n -c`'s terms. Asked on the control socket, never per packet.

use director_messages::connections::{Connection, ConnectionFilter, Connections};
use netfw_core::flow::table::ticks;
use netfw_core::flow::FlowState;
use netfw_core::forward::persist::Scope;
use netfw_core::forward::Forwarder;
use netfw_core::time::Millis;

/// IPVS's name for a flow's state (its `-c` column).
fn state_name(s: FlowState) -> &'static str {
    match s {
        FlowState::SynRecv | FlowState::SynAgain => "SYN_RECV",
        FlowState::Unconfirmed | FlowState::Established => "ESTABLISHED",
        FlowState::FinWait => "FIN_WAIT",
        FlowState::Close => "CLOSE",
        FlowState::UdpNew | FlowState::Udp => "UDP",
    }
}

fn proto_name(number: u8) -> &'static str {
    match number {
        6 => "TCP",
        17 => "UDP",
        _ => "IP",
    }
}

/// `fwd`'s flows that `filter` asks for, and the box's templates when `templates`.
pub fn collect(fwd: &Forwarder, templates: bool, filter: &ConnectionFilter, now: Millis) -> Connections {
    let limit = filter.limit();
    let mut out = Connections { mode: "forwarder".into(), ..Connections::default() };
    let t = ticks(now);
    for (k, v) in fwd.flows().iter() {
        let Some(b) = fwd.backends().get(usize::from(v.backend)) else { continue };
        // Expired but not swept yet: gone. (A flow the kernel forwards is live until the sweep
        // asks the kernel.)
        if (!v.kernel && v.expires <= t) || !filter.matches(k.client(), Some(k.vip()), b.rip) {
            continue;
        }
        let entry = Connection {
            protocol: proto_name(k.proto()).into(),
            expires_s: u64::from(v.expires.saturating_sub(t)) / 10,
            state: state_name(v.state).into(),
            client: k.client(),
            client_port: k.cport(),
            virtual_service: format!("{}:{}", k.vip(), k.vport()),
            server: b.rip,
            server_port: k.vport(),
        };
        out.push(entry, limit);
    }
    if templates {
        // Each scope's name: a service's VIP:ports, or a group's name (its templates hold for
        // every service of the group, whatever the protocol: "IP", as IPVS shows a
        // firewall-mark template).
        let scopes: Vec<(Scope, &'static str, String, Option<std::net::Ipv4Addr>)> = fwd
            .spec()
            .services
            .iter()
            .map(|s| match &s.persistence_group {
                // A group on one VIP (FTP's) is that VIP's to the filter.
                Some(g) => {
                    let mut vips = fwd.spec().services.iter().filter(|x| x.persistence_group.as_ref() == Some(g)).map(|x| x.vip);
                    let vip = vips.next().filter(|v| vips.all(|w| w == *v));
                    (Scope::of(s), "IP", g.clone(), vip)
                }
                None => (Scope::of(s), proto_name(s.proto.number()), format!("{}:{}", s.vip, s.ports()), Some(s.vip)),
            })
            .collect();
        fwd.templates().for_each(now, |e| {
            let Some((_, proto, name, vip)) = scopes.iter().find(|(s, ..)| *s == e.scope) else { return };
            if !filter.matches(e.client, *vip, e.template.rip) {
                return;
            }
            let entry = Connection {
                protocol: (*proto).into(),
                expires_s: e.template.expires.0.saturating_sub(now.0) / 1000,
                state: "NONE".into(),
                client: e.client,
                client_port: 0,
                virtual_service: name.clone(),
                server: e.template.rip,
                server_port: 0,
            };
            out.push(entry, limit);
        });
    }
    out
}
