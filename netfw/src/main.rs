//! The `netfw` binary: see `netfw::cli`.

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    netfw::cli::main(&argv)
}
