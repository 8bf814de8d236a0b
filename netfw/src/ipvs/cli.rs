//! `netfw ipvs …`: program the kernel's IPVS from the config, show its table, or clear it.

use std::path::Path;

use super::director;
use super::kernel::{Fwd, Ipvs};
use super::reconcile::{self, Wanted};
use crate::config::{Config, Mode};

fn fwd(s: Option<&str>) -> Fwd {
    match s {
        Some("tun") => Fwd::Tun,
        Some("nat") => Fwd::Nat,
        _ => Fwd::Dr,
    }
}

/// The services the config wants, with their methods.
pub fn wanted(cfg: &Config, spec: &crate::model::DataPlaneSpec) -> Vec<Wanted> {
    spec.services.iter().zip(&cfg.services).map(|(s, d)| Wanted::from_spec(s, fwd(d.forwarding.as_deref()))).collect()
}

/// `netfw ipvs apply --config FILE`: the director's network side, then reconcile.
/// With `fallback`, a forwarder-mode config is programmed too (the forwarder cannot run).
pub fn apply(path: &Path, fallback: bool) -> Result<String, String> {
    let (cfg, spec) = Config::load(path).map_err(|e| e.to_string())?;
    if cfg.mode != Mode::Ipvs && !fallback {
        return Err("the config's mode is \"forwarder\"; `netfw ipvs apply` programs IPVS only for mode \"ipvs\"".into());
    }
    let mut out = String::new();
    for line in director::setup(&cfg, &spec)? {
        out.push_str(&format!("{line}\n"));
    }
    let mut ipvs = Ipvs::open().map_err(|e| e.to_string())?;
    let have = reconcile::read(&mut ipvs).map_err(|e| e.to_string())?;
    let changes = reconcile::diff(&have, &wanted(&cfg, &spec));
    for c in &changes {
        out.push_str(&format!("{c}\n"));
    }
    reconcile::apply(&mut ipvs, &changes).map_err(|e| format!("{out}{e}"))?;
    out.push_str(&format!("IPVS matches the config ({} change{})\n", changes.len(), if changes.len() == 1 { "" } else { "s" }));
    Ok(out)
}

/// `netfw ipvs status`: the kernel's table with its counters, as the same status report the
/// forwarder gives (text, or JSON with `json`). `config` names the NICs and the DIP.
pub fn status(config: Option<&Path>, json: bool) -> Result<String, String> {
    let cfg = match config {
        Some(p) => Some(Config::load(p).map_err(|e| e.to_string())?.0),
        None => None,
    };
    let mut ipvs = Ipvs::open().map_err(|e| e.to_string())?;
    let table = reconcile::read(&mut ipvs).map_err(|e| e.to_string())?;
    let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    let report = super::report::collect(cfg.as_ref(), &table, &arp);
    if json {
        serde_json::to_string(&report).map(|s| s + "\n").map_err(|e| e.to_string())
    } else {
        Ok(report.render())
    }
}

/// `netfw ipvs clear --config FILE`: remove every service the kernel has and the director's
/// addresses of this mode (leaving IPVS mode).
pub fn clear(path: &Path) -> Result<String, String> {
    let (cfg, spec) = Config::load(path).map_err(|e| e.to_string())?;
    let mut ipvs = Ipvs::open().map_err(|e| e.to_string())?;
    let have = reconcile::read(&mut ipvs).map_err(|e| e.to_string())?;
    let changes = reconcile::diff(&have, &[]);
    reconcile::apply(&mut ipvs, &changes).map_err(|e| e.to_string())?;
    let mut out: Vec<String> = changes.iter().map(ToString::to_string).collect();
    out.extend(director::teardown(&cfg, &spec));
    Ok(out.join("\n") + "\n")
}

/// `netfw ipvs import FILE`: `ipvsadm -S -n` rules as the config's `services` array.
pub fn import(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let services = super::ipvsadm::import(&text).map_err(|e| e.to_string())?;
    serde_json::to_string_pretty(&services).map(|s| s + "\n").map_err(|e| e.to_string())
}

/// `netfw ipvs export [--config FILE]`: rules in `ipvsadm -S -n` format, from a config, or
/// from the running kernel's table.
pub fn export(path: Option<&Path>) -> Result<String, String> {
    let services = match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?.0.services,
        None => {
            let mut ipvs = Ipvs::open().map_err(|e| e.to_string())?;
            reconcile::read(&mut ipvs)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(s, d)| crate::config::ServiceDoc {
                    vip: s.key.vip.to_string(),
                    protocol: s.key.proto.name().into(),
                    port: i64::from(s.key.port),
                    scheduler: s.sched,
                    persistence_s: s.persistence_s,
                    forwarding: d.first().map(|x| x.fwd.name().to_string()).filter(|m| m != "dr"),
                    real_servers: d
                        .iter()
                        .map(|x| crate::config::RealServerDoc { address: x.addr.to_string(), weight: i64::from(x.weight) })
                        .collect(),
                })
                .collect()
        }
    };
    Ok(super::ipvsadm::export(&services))
}
