//! The `netfw` command line: run the forwarder, check a config, ask a running forwarder for
//! status or a reload. Shared by the `netfw` binary and the appliance's multi-call binary.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use director_config::Config;
use director_messages::connections::ConnectionFilter;
use director_messages::framing::{call, NETFW_SOCKET};
use director_messages::netfw::{NetfwAnswer, NetfwRequest};

use crate::run::{run, RunOptions};

const USAGE: &str = "usage:
  netfw run --config FILE [--control SOCKET]     forward until SIGTERM; SIGHUP reloads FILE
  netfw check --config FILE                      validate a config and exit
  netfw status [--json] [--control SOCKET]       ipvsadm-style table of a running forwarder
  netfw status --connections [--vip A] [--server A] [--client A] [--limit N] [--json] [--control SOCKET]
                                                 live flows and persistence templates (like ipvsadm -L -n -c),
                                                 of netfw run or, in ipvs mode, of netfw ipvs watch (the kernel's)
  netfw reload [--control SOCKET]                make a running forwarder re-read its config
  netfw ipvs apply --config FILE [--fallback]    program the kernel's IPVS (mode \"ipvs\", or any mode with --fallback)
  netfw ipvs status [--json] [--config FILE]     the kernel's IPVS table with its counters (the status table)
  netfw ipvs clear --config FILE                 remove IPVS services and this mode's addresses
  netfw ipvs import FILE                         `ipvsadm -S -n` rules as the config's services (JSON)
  netfw ipvs export [--config FILE]              rules in `ipvsadm -S -n` format (config, or the kernel's table)
  netfw ipvs watch --config FILE [--control SOCKET]
                                                 health-check the config's real servers and apply the verdicts
                                                 to IPVS, until SIGTERM; SIGHUP reloads FILE
  netfw keepalived import FILE                   a keepalived.conf's virtual_servers as the config's services (JSON);
                                                 what does not map is listed on stderr
";

struct Args {
    config: Option<PathBuf>,
    control: PathBuf,
    json: bool,
    /// `--connections`, with its filter.
    connections: Option<ConnectionFilter>,
}

fn parse(rest: &[String]) -> Result<Args, String> {
    let mut a = Args { config: None, control: PathBuf::from(NETFW_SOCKET), json: false, connections: None };
    let mut it = rest.iter();
    let mut filter: Vec<(&str, &str)> = Vec::new();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--connections" => a.connections = Some(ConnectionFilter::default()),
            f @ ("--vip" | "--server" | "--client" | "--limit") => {
                filter.push((&f[2..], it.next().ok_or_else(|| format!("{f} needs a value"))?));
            }
            "--config" => a.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--control" => a.control = it.next().ok_or("--control needs a socket path")?.into(),
            "--json" => a.json = true,
            "--fallback" => {}
            other => return Err(format!("unknown argument \"{other}\"")),
        }
    }
    if !filter.is_empty() {
        if a.connections.is_none() {
            return Err("--vip, --server, --client and --limit filter --connections".into());
        }
        a.connections = Some(ConnectionFilter::parse(filter)?);
    }
    Ok(a)
}

fn ipvs_cmd(argv: &[String]) -> ExitCode {
    let sub = argv.get(2).map(String::as_str).unwrap_or_default();
    if sub == "import" {
        return match argv.get(3).map(|f| crate::ipvs_cli::import(std::path::Path::new(f))) {
            Some(Ok(out)) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Some(Err(e)) => {
                eprintln!("netfw ipvs import: {e}");
                ExitCode::FAILURE
            }
            None => {
                eprint!("{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse(argv.get(3..).unwrap_or_default()) {
        Ok(a) => a,
        Err(e) => {
            eprint!("netfw: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let r = match (sub, args.config) {
        ("apply", Some(c)) => crate::ipvs_cli::apply(&c, argv.iter().any(|a| a == "--fallback")),
        ("clear", Some(c)) => crate::ipvs_cli::clear(&c),
        ("status", c) => crate::ipvs_cli::status(c.as_deref(), json),
        ("export", c) => crate::ipvs_cli::export(c.as_deref()),
        ("watch", Some(config)) => {
            crate::watch::watch(&crate::watch::WatchOptions { config, control: args.control }).map(|()| String::new())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netfw ipvs {sub}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `netfw keepalived import FILE`: the services on stdout (JSON), what was not taken on stderr.
fn keepalived_cmd(argv: &[String]) -> ExitCode {
    let (Some("import"), Some(file)) = (argv.get(2).map(String::as_str), argv.get(3)) else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let imported = std::fs::read_to_string(file)
        .map_err(|e| format!("{file}: {e}"))
        .and_then(|t| director_config::keepalived::import(&t).map_err(|e| e.to_string()));
    match imported.and_then(|i| serde_json::to_string_pretty(&i.services).map(|j| (i, j)).map_err(|e| e.to_string())) {
        Ok((i, json)) => {
            println!("{json}");
            for n in &i.not_mapped {
                eprintln!("not imported as written: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netfw keepalived import: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the `netfw` command with `argv` (program name first).
pub fn main(argv: &[String]) -> ExitCode {
    let Some(cmd) = argv.get(1) else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "ipvs" {
        return ipvs_cmd(argv);
    }
    if cmd == "keepalived" {
        return keepalived_cmd(argv);
    }
    let args = match parse(&argv[2..]) {
        Ok(a) => a,
        Err(e) => {
            eprint!("netfw: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd.as_str() {
        "run" => {
            let Some(config) = args.config else {
                eprint!("netfw run: --config FILE is required\n{USAGE}");
                return ExitCode::from(2);
            };
            match run(&RunOptions { config, control: args.control }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("netfw: {e}");
                    if e.nics_unusable() {
                        ExitCode::from(crate::run::EXIT_NICS_UNUSABLE)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        "check" => {
            let Some(config) = args.config else {
                eprint!("netfw check: --config FILE is required\n{USAGE}");
                return ExitCode::from(2);
            };
            match Config::load(&config) {
                Ok((c, s)) => {
                    println!(
                        "{}: valid ({}, {} service(s), DIP {}/{})",
                        config.display(),
                        if c.one_arm() { "one-arm" } else { "two-arm" },
                        s.services.len(),
                        s.dip,
                        s.dip_prefix
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::FAILURE
                }
            }
        }
        "status" | "reload" => {
            let req = match (cmd.as_str(), args.connections) {
                ("status", Some(filter)) => NetfwRequest::Connections { filter },
                ("status", None) => NetfwRequest::Status,
                _ => NetfwRequest::Reload,
            };
            // A reload of a large config is built beside the running one: give it time.
            match call::<_, NetfwAnswer>(&args.control, &req, Duration::from_secs(60)) {
                Ok(NetfwAnswer::Status { status }) if args.json => {
                    println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(NetfwAnswer::Connections { list }) if args.json => {
                    println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(a @ (NetfwAnswer::Status { .. } | NetfwAnswer::Reloaded { .. } | NetfwAnswer::Connections { .. })) => {
                    print!("{}", with_newline(a.human()));
                    ExitCode::SUCCESS
                }
                Ok(a) => {
                    print!("{}", with_newline(a.human()));
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("netfw: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprint!("netfw: unknown command \"{other}\"\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
