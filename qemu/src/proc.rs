//! Running commands for the lab: inside a namespace, with errors that say what failed.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::lab::LabError;

/// Run a command to completion; an error carries its stderr.
pub fn run(args: &[&str]) -> Result<String, LabError> {
    let out = output(args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError(format!(
            "`{}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}

/// Run a command and return its output whatever its status.
pub fn output(args: &[&str]) -> Result<Output, LabError> {
    let (cmd, rest) = args.split_first().ok_or_else(|| LabError("empty command".into()))?;
    Command::new(cmd)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError(format!("cannot run `{cmd}`: {e} (is iproute2 installed?)")))
}

/// Where the workspace's binaries are: `$DIRECTOR_BIN_DIR`, else beside the running
/// executable (stepping out of `deps/` for test binaries).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DIRECTOR_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// Path of a workspace binary, or an error telling how to build it.
pub fn bin(name: &str) -> Result<PathBuf, LabError> {
    let p = bin_dir().join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(LabError(format!("{} not found: build it first with `cargo build --workspace --bins`", p.display())))
    }
}
