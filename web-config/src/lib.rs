//! web-config: the operator's web page and the JSON API behind it, served over HTTPS on the
//! management NIC only (the listening sockets are bound to that device), with plain HTTP only
//! redirecting. The init starts it; it asks the init (control socket) to apply configs, report
//! status, reboot and power off.
//!
//! - `secrets`: password hash and TLS key on the config partition (two checksummed slots).
//! - `tls`: the self-signed certificate made on first boot, and its fingerprint.
//! - `http`: bounded request reading and response writing over any stream.
//! - `auth`: password hashing (argon2id), sessions, CSRF tokens, login rate limit, setup code.
//! - `api`: the routes (documented in `docs/openapi.yaml`).
//! - `host_facts`: boot time, memory and this process, for `GET /metrics`.
//! - `rs_setup`: the commands each real server needs, from the seeds.
//! - `control`: the init's control socket.
//! - `slots`: how many connections a listener serves at once, and from one address.
//! - `server`: sockets bound to the management NIC, one thread per connection (bounded).
//! - `update`: a signed bundle streamed into the inactive system slot; the slots' report; a switch.

pub mod api;
pub mod auth;
pub mod control;
pub mod host_facts;
pub mod http;
pub mod rs_setup;
pub mod secrets;
pub mod server;
pub mod slots;
pub mod tls;
pub mod update;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  web-config prepare --state DIR         make the certificate (first boot) and, while no password is set, a setup code
  web-config serve --state DIR --nic NIC [--control SOCKET] [--https-port 443] [--http-port 80]";

fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Entry point (also from the appliance's multi-call binary).
pub fn main(argv: &[String]) -> ExitCode {
    let cmd = argv.get(1).map(String::as_str).unwrap_or_default();
    let rest = argv.get(2..).unwrap_or_default();
    let Some(state) = opt(rest, "--state").map(PathBuf::from) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let r = match cmd {
        "prepare" => server::prepare(&state).map(|lines| lines.iter().for_each(|l| println!("{l}"))),
        "serve" => match opt(rest, "--nic") {
            Some(nic) => server::serve(&server::Options {
                state,
                nic,
                control: opt(rest, "--control").map_or_else(|| PathBuf::from(control::DEFAULT), PathBuf::from),
                https_port: opt(rest, "--https-port").and_then(|p| p.parse().ok()).unwrap_or(443),
                http_port: opt(rest, "--http-port").and_then(|p| p.parse().ok()).unwrap_or(80),
            }),
            None => Err(format!("--nic is required\n{USAGE}")),
        },
        _ => Err(USAGE.to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web-config: {e}");
            ExitCode::FAILURE
        }
    }
}
