//! web-config: the on-box HTTP page and JSON API (issue 5). Not built yet: this binary says so
//! and exits non-zero, so nothing mistakes it for a working server.

fn main() -> std::process::ExitCode {
    eprintln!("web-config: not implemented yet (issue 5); configure netfw with its JSON file");
    std::process::ExitCode::from(2)
}
