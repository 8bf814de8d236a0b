//! The userland: one static multi-call Rust binary (the appliance init, which is also `netfw`
//! when called by that name), built for the image with glibc linked statically.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BuildError;

/// The target the image's binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Build the appliance binary statically and return its path.
pub fn build(workspace: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf, BuildError> {
    progress("building the static userland (appliance init + netfw, one multi-call binary)");
    build_static(workspace, "appliance", "appliance")
}

/// Build binary `bin` of `package` with glibc linked statically; return its path.
pub fn build_static(workspace: &Path, package: &str, bin: &str) -> Result<PathBuf, BuildError> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The same environment whether the builder runs from `cargo run` (which sets CARGO_PKG_*,
    // CARGO_MANIFEST_DIR…) or on its own: otherwise each switch between the two rebuilds the
    // userland (minutes, with whole-program LTO).
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("CARGO_") && k != "CARGO_HOME") {
            cargo.env_remove(&k);
        }
    }
    let out = cargo
        .args(["build", "--release", "--locked", "--target", TARGET, "-p", package, "--bin", bin])
        // One codegen unit and whole-program LTO for the image only: a smaller binary (the
        // bundle's 12 MiB), the same code paths.
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("RUSTFLAGS", format!("-C target-feature=+crt-static -C strip=symbols --remap-path-prefix={}=/src", workspace.display()))
        .current_dir(workspace)
        .output()
        .map_err(|e| BuildError::Tool(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(BuildError::Tool(format!("building the userland failed:\n{}", String::from_utf8_lossy(&out.stderr))));
    }
    let bin = workspace.join(format!("target/{TARGET}/release/{bin}"));
    let bytes = std::fs::read(&bin).map_err(|e| BuildError::io(&bin, e))?;
    if bytes.windows(15).any(|w| w == b"/lib64/ld-linux") {
        return Err(BuildError::Tool(format!("{} is dynamically linked; the image has no C library", bin.display())));
    }
    Ok(bin)
}
