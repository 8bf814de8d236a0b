//! image: the appliance's image builder (our buildroot, in Rust).
//!
//! From a pinned, checksum-verified Debian kernel package and our own static binaries it
//! assembles `target/image/`: `vmlinuz`, `initramfs.cpio.gz` (userland + module closure) and
//! `director.img` (GPT disk: EFI system partition bootable by UEFI and legacy BIOS, plus the
//! config partition). Reproducible: the same commit gives byte-identical files.
//!
//! usage: image build [--config FILE] [--out DIR]
//!        image config-get --disk IMG
//!        image config-set --disk IMG --config FILE
//!        image config-clean --disk IMG
//!        image lab-guest [--out DIR]

mod disk;
mod initramfs;
mod kernel;
mod modules;
mod partition;
mod userland;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use initramfs::Node;

/// Why a build failed.
#[derive(Debug)]
pub enum BuildError {
    /// A file could not be read or written.
    Io(String, std::io::Error),
    /// An external tool (apt-get, dpkg-deb, depmod, cargo) failed.
    Tool(String),
    /// The kernel package is not the pinned one.
    Checksum {
        /// The file.
        file: String,
        /// Pinned.
        expected: String,
        /// Found.
        got: String,
    },
    /// A module could not be resolved.
    Module(String),
    /// The baked config is invalid.
    Config(String),
}

impl BuildError {
    fn io(p: &Path, e: std::io::Error) -> Self {
        BuildError::Io(p.display().to_string(), e)
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Io(p, e) => write!(f, "{p}: {e}"),
            BuildError::Tool(m) | BuildError::Module(m) => f.write_str(m),
            BuildError::Checksum { file, expected, got } => {
                write!(f, "checksum mismatch for {file}: expected sha256 {expected}, got {got}; the file was removed, refusing to build from an unverified kernel")
            }
            BuildError::Config(m) => write!(f, "the config to bake is invalid: {m}"),
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(1_700_000_000)
}

fn progress(msg: &str) {
    println!("[image] {msg}");
}

fn build(out: &Path, baked: Option<&Path>) -> Result<Vec<PathBuf>, BuildError> {
    let ws = workspace();
    // DIRECTOR_IMAGE_CACHE moves the kernel cache (tests use it to present a corrupted package).
    let cache = std::env::var_os("DIRECTOR_IMAGE_CACHE").map_or_else(|| ws.join("target/image/cache"), PathBuf::from);
    let k = kernel::prepare(&cache, &progress)?;
    let ix = modules::ModuleIndex::load(&k.modules_dir())?;
    let mods = ix.closure(modules::WANTED)?;
    progress(&format!(
        "module closure: {} modules for {} wanted ({})",
        mods.len(),
        modules::WANTED.len(),
        mods.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" ")
    ));
    let bin = userland::build(&ws, &progress)?;

    let mut entries = root_with_modules(&k, &mods, &bin)?;
    entries.push(("bin/netfw".into(), Node::Symlink("/init".into())));
    entries.push(("bin/web-config".into(), Node::Symlink("/init".into())));
    entries.push((
        "etc/director-release".into(),
        Node::File(0o644, format!("director {} (kernel {})\n", env!("CARGO_PKG_VERSION"), kernel::RELEASE).into_bytes()),
    ));
    progress("writing the initramfs (newc cpio, gzip)");
    let initramfs = initramfs::build(entries, source_date_epoch())?;

    std::fs::create_dir_all(out).map_err(|e| BuildError::io(out, e))?;
    let vmlinuz = out.join("vmlinuz");
    std::fs::copy(k.vmlinuz(), &vmlinuz).map_err(|e| BuildError::io(&vmlinuz, e))?;
    let ird = out.join("initramfs.cpio.gz");
    std::fs::write(&ird, &initramfs).map_err(|e| BuildError::io(&ird, e))?;
    let config = match baked {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| BuildError::io(p, e))?;
            director_config::Config::parse(&text).and_then(|c| c.validate().map(|_| ())).map_err(|e| BuildError::Config(e.to_string()))?;
            progress(&format!("baking {} into the config partition", p.display()));
            Some(text.into_bytes())
        }
        None => None,
    };
    progress("writing the disk image (GPT, EFI system partition for UEFI and BIOS, config partition)");
    let kernel_bytes = std::fs::read(&vmlinuz).map_err(|e| BuildError::io(&vmlinuz, e))?;
    let img = disk::build(out, &kernel_bytes, &initramfs, config.as_deref(), source_date_epoch())?;
    Ok(vec![vmlinuz, ird, img])
}

/// The root of an initramfs: directories, the console node, `init` from `bin`, and the modules
/// `mods` with their load order.
fn root_with_modules(k: &kernel::Kernel, mods: &[(String, String)], bin: &Path) -> Result<Vec<(String, Node)>, BuildError> {
    let mut entries: Vec<(String, Node)> = ["bin", "dev", "etc", "lib", "lib/modules", "mnt", "mnt/config", "proc", "run", "sys", "tmp"]
        .iter()
        .map(|d| ((*d).to_string(), Node::Dir))
        .collect();
    entries.push(("dev/console".into(), Node::CharDev(5, 1)));
    entries.push(("init".into(), Node::File(0o755, std::fs::read(bin).map_err(|e| BuildError::io(bin, e))?)));
    let mut order = String::new();
    for (name, path) in mods {
        let src = k.modules_dir().join(path);
        entries.push((format!("lib/modules/{name}.ko"), Node::File(0o644, std::fs::read(&src).map_err(|e| BuildError::io(&src, e))?)));
        order.push_str(name);
        order.push('\n');
    }
    entries.push(("lib/modules/load-order".into(), Node::File(0o644, order.into_bytes())));
    Ok(entries)
}

/// The lab's TUN real-server guest (`qemu/src/bin/lab-rs-guest.rs`): the same pinned kernel,
/// an initramfs with the guest's static init and only virtio networking and IPIP. Not part
/// of the appliance; the QEMU lab boots it next to the appliance because the host has no IPIP.
fn build_lab_guest(out: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let ws = workspace();
    let cache = std::env::var_os("DIRECTOR_IMAGE_CACHE").map_or_else(|| ws.join("target/image/cache"), PathBuf::from);
    let k = kernel::prepare(&cache, &progress)?;
    let mods = modules::ModuleIndex::load(&k.modules_dir())?.closure(&["virtio_pci", "virtio_net", "ipip"])?;
    progress("building the lab real-server guest's init (static)");
    let bin = userland::build_static(&ws, "qemu", "lab-rs-guest")?;
    let initramfs = initramfs::build(root_with_modules(&k, &mods, &bin)?, source_date_epoch())?;
    std::fs::create_dir_all(out).map_err(|e| BuildError::io(out, e))?;
    let vmlinuz = out.join("vmlinuz");
    std::fs::copy(k.vmlinuz(), &vmlinuz).map_err(|e| BuildError::io(&vmlinuz, e))?;
    let ird = out.join("lab-rs-guest.cpio.gz");
    std::fs::write(&ird, &initramfs).map_err(|e| BuildError::io(&ird, e))?;
    Ok(vec![ird])
}

const USAGE: &str = "usage:
  image build [--config FILE] [--out DIR]      build target/image/{vmlinuz,initramfs.cpio.gz,director.img}
  image config-get --disk IMG                  print director.json from the image's config partition
  image config-set --disk IMG --config FILE    validate FILE and write it as the image's director.json
  image config-clean --disk IMG                exit 0 if the config filesystem was cleanly unmounted
  image lab-guest [--out DIR]                  build target/image/lab-rs-guest.cpio.gz (the QEMU lab's TUN real server)";

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn config_cmd(cmd: &str, args: &[String]) -> Result<(), BuildError> {
    let disk = PathBuf::from(opt(args, "--disk").ok_or_else(|| BuildError::Tool(format!("--disk IMG is required\n{USAGE}")))?);
    match cmd {
        "config-get" => match partition::get(&disk)? {
            Some(t) => {
                print!("{t}");
                Ok(())
            }
            None => Err(BuildError::Tool(format!("{}: the config partition holds no director.json", disk.display()))),
        },
        "config-set" => {
            let p = PathBuf::from(opt(args, "--config").ok_or_else(|| BuildError::Tool(format!("--config FILE is required\n{USAGE}")))?);
            let text = std::fs::read_to_string(&p).map_err(|e| BuildError::io(&p, e))?;
            director_config::Config::parse(&text).and_then(|c| c.validate().map(|_| ())).map_err(|e| BuildError::Config(e.to_string()))?;
            partition::set(&disk, &text)?;
            println!("{}: director.json replaced", disk.display());
            Ok(())
        }
        _ => {
            if partition::clean(&disk)? {
                println!("{}: config filesystem clean", disk.display());
                Ok(())
            } else {
                Err(BuildError::Tool(format!("{}: config filesystem NOT cleanly unmounted", disk.display())))
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or_default();
    if matches!(cmd, "config-get" | "config-set" | "config-clean") {
        return match config_cmd(cmd, &args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("image: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cmd != "build" && cmd != "lab-guest" {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let out = opt(&args, "--out").map_or_else(|| workspace().join("target/image"), PathBuf::from);
    let baked = opt(&args, "--config").map(PathBuf::from);
    let started = std::time::Instant::now();
    let built = if cmd == "build" { build(&out, baked.as_deref()) } else { build_lab_guest(&out) };
    match built {
        Ok(files) => {
            progress(&format!("done in {:.1} s:", started.elapsed().as_secs_f64()));
            for f in files {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                println!(
                    "  {:<50} {:>8.1} MiB  sha256 {}",
                    f.display(),
                    size as f64 / 1_048_576.0,
                    kernel::sha256_file(&f).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("image: {e}");
            ExitCode::FAILURE
        }
    }
}
