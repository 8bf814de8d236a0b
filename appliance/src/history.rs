//! The real servers' last minutes for the page's charts: a point every `EVERY_MS` per real
//! server (packets per second since the previous point, connections now), the newest `KEEP`
//! of them, taken from the data plane's reports the event watcher reads anyway. A server that
//! leaves the config leaves the history; a counter that goes back (the data plane restarted)
//! restarts its rate.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use director_messages::history::{Point, Series};
use director_messages::status::Status;

/// Between two points of a series.
pub const EVERY_MS: u64 = 5_000;
/// Points kept per series: ten minutes.
pub const KEEP: usize = 120;

#[derive(Debug, Default)]
struct Track {
    points: Vec<Point>,
    /// The packet counter and its time at the last point.
    last: Option<(u64, u64)>,
}

static TRACKS: Mutex<BTreeMap<(String, String), Track>> = Mutex::new(BTreeMap::new());

/// Take what `s` says at `now_ms`.
pub fn sample(s: &Status, now_ms: u64) {
    let mut tracks = TRACKS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut present = Vec::new();
    for svc in &s.services {
        let name = svc.name();
        for r in &svc.real_servers {
            let key = (name.clone(), r.address.clone());
            let t = tracks.entry(key.clone()).or_default();
            present.push(key);
            match t.last {
                Some((_, at)) if now_ms.saturating_sub(at) < EVERY_MS => continue,
                Some((packets, at)) if r.packets >= packets => {
                    let secs = now_ms.saturating_sub(at) as f64 / 1000.0;
                    let pps = if secs > 0.0 { (r.packets - packets) as f64 / secs } else { 0.0 };
                    t.points.push(Point {
                        at_unix_ms: now_ms,
                        pps: (pps * 10.0).round() / 10.0,
                        conns: u64::from(r.active) + u64::from(r.inactive),
                    });
                }
                // The first report, or the counter went back: a rate needs two.
                _ => {}
            }
            if t.points.len() > KEEP {
                t.points.remove(0);
            }
            t.last = Some((r.packets, now_ms));
        }
    }
    tracks.retain(|k, _| present.contains(k));
}

/// Every series, oldest point first.
pub fn all() -> Vec<Series> {
    let tracks = TRACKS.lock().unwrap_or_else(PoisonError::into_inner);
    tracks
        .iter()
        .map(|((service, server), t)| Series { service: service.clone(), server: server.clone(), points: t.points.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(packets: u64, active: u32) -> Status {
        serde_json::from_value(serde_json::json!({
            "mode": "forwarder", "layout": "two-arm", "vip_side": "eth1", "rs_side": "eth2", "dip": "198.18.0.2/24",
            "flows": 0, "flow_capacity": 1024, "bytes_per_flow": 48, "drops": {}, "events": {}, "warnings": [],
            "services": [{"protocol": "tcp", "vip": "203.0.113.10", "port": 80, "scheduler": "rr", "forwarding": "dr",
              "persistence_s": 0, "conns": 0, "packets": packets, "bytes": 0,
              "real_servers": [{"address": "198.18.0.11", "mac": null, "reachable": true, "weight": 1, "active": active,
                "inactive": 0, "conns": 0, "packets": packets, "bytes": 0, "rates": null}]}]
        }))
        .unwrap()
    }

    #[test]
    fn rates_come_from_two_reports_every_five_seconds_and_servers_that_leave_go() {
        sample(&status(1000, 1), 0);
        sample(&status(1500, 2), 1_000); // too soon: no point
        sample(&status(6000, 3), 5_000);
        sample(&status(100, 3), 10_000); // the data plane restarted: no rate
        sample(&status(600, 4), 15_000);
        let s = all();
        let pts: Vec<(u64, f64, u64)> = s[0].points.iter().map(|p| (p.at_unix_ms, p.pps, p.conns)).collect();
        assert_eq!(pts, [(5_000, 1000.0, 3), (15_000, 100.0, 4)]);
        let mut gone = status(700, 0);
        gone.services.clear();
        sample(&gone, 20_000);
        assert!(all().is_empty());
    }
}
