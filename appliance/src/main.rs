//! appliance: the multi-call binary of the image. As PID 1 it is the init; called as `netfw`
//! (the image's `/bin/netfw` links to it) it is the forwarder's command line; called as
//! `web-config` (`/bin/web-config`), the web page's server.

mod apply;
mod capture;
mod console;
mod control;
mod dhcp;
mod events;
mod history;
mod init;
mod log;
mod modules;
mod mounts;
mod nics;
mod power;
mod slots;
mod supervise;
mod sys;
mod syslog;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    if name == "netfw" {
        return netfw::cli::main(&argv);
    }
    if name == "web-config" {
        return web_config::main(&argv);
    }
    if argv.get(1).map(String::as_str) == Some("netfw") {
        return netfw::cli::main(&argv[1..]);
    }
    if std::process::id() == 1 {
        init::run();
    }
    eprintln!("appliance: this is the image's init; it runs as PID 1. `appliance netfw …` runs netfw.");
    ExitCode::from(2)
}
