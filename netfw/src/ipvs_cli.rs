//! `netfw ipvs …`: program the kernel's IPVS from a config, show its table, clear it, and
//! move rules in and out in `ipvsadm -S -n` format. The same calls the init makes in-process
//! (`netfw_kernel::mode`), for an operator at a shell and for the lab.

use std::path::Path;

use director_config::{ipvsadm, Config, Mode, RealServerDoc, ServiceDoc};
use netfw_kernel::ipvs::Ipvs;
use netfw_kernel::{mode, reconcile};

fn lines(out: &mut String) -> impl FnMut(String) + '_ {
    |l| {
        out.push_str(&l);
        out.push('\n');
    }
}

/// `netfw ipvs apply --config FILE`: the director's network side, then reconcile.
/// With `fallback`, a forwarder-mode config is programmed too (the forwarder cannot run).
pub fn apply(path: &Path, fallback: bool) -> Result<String, String> {
    let (cfg, spec) = Config::load(path).map_err(|e| e.to_string())?;
    if cfg.mode != Mode::Ipvs && !fallback {
        return Err("the config's mode is \"forwarder\"; `netfw ipvs apply` programs IPVS only for mode \"ipvs\"".into());
    }
    let mut out = String::new();
    let r = mode::enter(&cfg, &spec, &mut lines(&mut out));
    r.map(|_| out.clone()).map_err(|e| format!("{out}{e}"))
}

/// `netfw ipvs status`: the kernel's table with its counters, as the same status report the
/// forwarder gives (text, or JSON with `json`). `config` names the NICs and the DIP.
pub fn status(config: Option<&Path>, json: bool) -> Result<String, String> {
    let cfg = match config {
        Some(p) => Some(Config::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let report = mode::status(cfg.as_ref().map(|(c, s)| (c, s))).map_err(|e| e.to_string())?;
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
    let mut out = String::new();
    let r = mode::leave(&cfg, &spec, &mut lines(&mut out));
    r.map(|()| out.clone()).map_err(|e| format!("{out}{e}"))
}

/// `netfw ipvs import FILE`: `ipvsadm -S -n` rules as the config's `services` array.
pub fn import(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let services = ipvsadm::import(&text).map_err(|e| e.to_string())?;
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
                .map(|(s, d)| ServiceDoc {
                    vip: s.key.vip.to_string(),
                    protocol: s.key.proto.name().into(),
                    port: Some(i64::from(s.key.port)),
                    ports: None,
                    persistence_group: None,
                    scheduler: s.sched,
                    persistence_s: s.persistence_s,
                    forwarding: d.first().map(|x| x.fwd).filter(|m| *m != director_config::Forwarding::Dr),
                    real_servers: d.iter().map(|x| RealServerDoc { address: x.addr.to_string(), weight: i64::from(x.weight) }).collect(),
                    health_check: None,
                    sorry_server: None,
                })
                .collect()
        }
    };
    Ok(ipvsadm::export(&services))
}
