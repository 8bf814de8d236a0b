//! image: the image builder (issue 3). Not built yet: this binary says so and exits non-zero.

fn main() -> std::process::ExitCode {
    eprintln!("image: not implemented yet (issue 3)");
    std::process::ExitCode::from(2)
}
