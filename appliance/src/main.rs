//! appliance: the Rust init (PID 1) of the image (issue 3). Not built yet: this binary says so
//! and exits non-zero, so nothing mistakes it for a working init.

fn main() -> std::process::ExitCode {
    eprintln!("appliance: not implemented yet (issue 3); run `netfw run --config FILE` directly");
    std::process::ExitCode::from(2)
}
