//! The kernel's connection list in ipvs mode: `/proc/net/ip_vs_conn` read into the same list
//! the forwarder gives (`ipvsadm -L -n -c`'s rows, templates included: state `NONE`, or
//! `ASSURED` for a template a synced connection confirmed). Rows are
//! `Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires [PEName PEData]` with hex addresses
//! and ports; a firewall-mark template (`IP`) has the mark where the VIP would be, and is
//! listed under what the mark serves (`marks`): the group's name, or the range's VIP:ports.
//! A row that cannot be read (IPv6, a format this build does not know) is counted, not
//! guessed at.

use std::net::Ipv4Addr;

use director_messages::connections::{Connection, ConnectionFilter, Connections};
use netfw_core::model::ServiceSpec;

/// Where the kernel lists its connections.
pub const PROC_FILE: &str = "/proc/net/ip_vs_conn";

fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    (s.len() == 8).then(|| u32::from_str_radix(s, 16).ok().map(Ipv4Addr::from)).flatten()
}

fn hex_port(s: &str) -> Option<u16> {
    (s.len() == 4).then(|| u16::from_str_radix(s, 16).ok()).flatten()
}

/// One row, or `None` if it cannot be read; `names` says what each firewall mark serves.
fn row(line: &str, names: &[(u32, String)]) -> Option<(Connection, Option<Ipv4Addr>)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let [proto, caddr, cport, vaddr, vport, daddr, dport, state, expires, ..] = w.as_slice() else { return None };
    let (client, client_port) = (hex_addr(caddr)?, hex_port(cport)?);
    let (server, server_port) = (hex_addr(daddr)?, hex_port(dport)?);
    let vport = hex_port(vport)?;
    let (virtual_service, vip) = if *proto == "IP" {
        let mark = u32::from_str_radix(vaddr, 16).ok()?;
        (names.iter().find(|(m, _)| *m == mark).map_or_else(|| format!("fwmark {mark:#x}"), |(_, n)| n.clone()), None)
    } else {
        let vip = hex_addr(vaddr)?;
        (format!("{vip}:{vport}"), Some(vip))
    };
    let c = Connection {
        protocol: (*proto).to_string(),
        expires_s: expires.parse().ok()?,
        state: (*state).to_string(),
        client,
        client_port,
        virtual_service,
        server,
        server_port,
    };
    Some((c, vip))
}

/// The rows of `text` (the proc file's contents) that `filter` asks for; `services` (the
/// config in force) name the firewall marks.
pub fn parse(text: &str, filter: &ConnectionFilter, services: &[ServiceSpec]) -> Connections {
    let names = crate::marks::names(services);
    let limit = filter.limit();
    let mut out = Connections { mode: "ipvs".into(), ..Connections::default() };
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("Pro ")) {
        match row(line, &names) {
            Some((c, vip)) if filter.matches(c.client, vip, c.server) => out.push(c, limit),
            Some(_) => {}
            None => out.unreadable += 1,
        }
    }
    // Flows first, then templates, as the forwarder lists them.
    out.order();
    out
}

/// The kernel's connections that `filter` asks for.
pub fn read(filter: &ConnectionFilter, services: &[ServiceSpec]) -> Result<Connections, String> {
    let text = std::fs::read_to_string(PROC_FILE).map_err(|e| format!("{PROC_FILE}: {e} (is ip_vs loaded?)"))?;
    Ok(parse(&text, filter, services))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 001's FTP in IPVS: a flow on port 21, its passive data connection, and the two
    /// kinds of templates (a port-0 service's, a firewall mark's).
    const TABLE: &str = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP C6336402 9C40 CB00710A 0015 C612000B 0015 ESTABLISHED     899
TCP C6336402 9C41 CB00710A 2AF8 C612000B 2AF8 TIME_WAIT        59
TCP C6336402 0000 CB00710A 0000 C612000B 0000 NONE            299
IP  C6336403 0000 00000001 0000 C612000C 0000 NONE            120
TCP 2001:0db8:0000:0000:0000:0000:0000:0001 9C40 ...
UDP C6336404 1F90 CB00710A 0035 C612000D 0035 UDP             280 sip 1234
";

    #[test]
    fn the_kernels_rows_read_as_flows_and_templates() {
        let all = parse(TABLE, &ConnectionFilter::default(), &[]);
        assert_eq!(all.unreadable, 1, "the IPv6 row is counted, not guessed");
        let rows: Vec<(&str, &str, &str, String)> = all
            .entries
            .iter()
            .map(|c| (c.protocol.as_str(), c.state.as_str(), c.virtual_service.as_str(), format!("{}:{}", c.server, c.server_port)))
            .collect();
        assert_eq!(
            rows,
            [
                ("TCP", "ESTABLISHED", "203.0.113.10:21", "198.18.0.11:21".to_string()),
                ("UDP", "UDP", "203.0.113.10:53", "198.18.0.13:53".into()),
                ("TCP", "TIME_WAIT", "203.0.113.10:11000", "198.18.0.11:11000".into()),
                ("TCP", "NONE", "203.0.113.10:0", "198.18.0.11:0".into()),
                ("IP", "NONE", "fwmark 0x1", "198.18.0.12:0".into()),
            ]
        );
        assert_eq!((all.entries[0].client, all.entries[0].client_port), (Ipv4Addr::new(198, 51, 100, 2), 40000));
        let by_vip = parse(TABLE, &ConnectionFilter { vip: Some(Ipv4Addr::new(203, 0, 113, 10)), ..ConnectionFilter::default() }, &[]);
        assert_eq!(by_vip.entries.len(), 4, "the firewall mark's template has no VIP");
        let by_server = parse(
            TABLE,
            &ConnectionFilter { server: Some(Ipv4Addr::new(198, 18, 0, 11)), limit: Some(2), ..ConnectionFilter::default() },
            &[],
        );
        assert_eq!((by_server.entries.len(), by_server.more), (2, 1));
        // Under the config in force, a group's template is listed under the group's name.
        let group = crate::marks::tests::ftp_group(1);
        let named =
            parse(&TABLE.replace("00000001", &format!("{:08X}", crate::marks::plan(&group)[0].mark)), &ConnectionFilter::default(), &group);
        assert_eq!(named.entries.last().map(|c| c.virtual_service.as_str()), Some("ftp"));
        assert!(parse("garbage\n\u{0}\u{ffff} 1 2\n", &ConnectionFilter::default(), &[]).entries.is_empty());
    }
}
