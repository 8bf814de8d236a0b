//! image: the appliance's image builder (our buildroot, in Rust).
//!
//! From a pinned, checksum-verified Debian kernel package and our own static binaries it
//! assembles `target/image/`: `vmlinuz`, `initramfs.cpio.xz` (userland + module closure) and
//! `director.img` (GPT disk: EFI system partition bootable by UEFI and legacy BIOS, plus the
//! config partition), the image's detached signature `director.img.sig`, the public key the
//! image trusts `director-update.pub`, and with `bundle` the update bundle `director.bundle`
//! (`director_config::bundle`). Reproducible: the same commit and key give byte-identical
//! files (Ed25519 signatures are deterministic).
//!
//! usage: image build [--config FILE] [--out DIR] [--key FILE] [--version V]
//!        image bundle [--out DIR] [--key FILE] [--version V] [--kernel FILE --initramfs FILE]
//!        image verify --file F [--key FILE | --pub FILE]
//!        image config-get --disk IMG
//!        image config-set --disk IMG --config FILE
//!        image config-clean --disk IMG
//!        image lab-guest [--out DIR]

mod disk;
mod initramfs;
mod kernel;
mod modules;
mod partition;
mod signing;
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

/// A bundle may be at most this large (faster to upload, and a slot holds it).
pub const BUNDLE_LIMIT: u64 = 12 << 20;
/// The disk image may be at most this large (faster to flash).
pub const IMAGE_LIMIT: u64 = 48 << 20;

/// What a build is asked for beyond its output directory.
struct Request<'a> {
    baked: Option<&'a Path>,
    key: Option<&'a Path>,
    version: String,
    bundle: bool,
}

/// `size` against `limit`, as the build prints it.
fn against(size: u64, limit: u64) -> String {
    let mib = |b: u64| b as f64 / 1_048_576.0;
    if size <= limit {
        format!("{:.2} MiB, within the {:.0} MiB limit", mib(size), mib(limit))
    } else {
        format!("{:.2} MiB, OVER the {:.0} MiB limit by {:.2} MiB", mib(size), mib(limit), mib(size - limit))
    }
}

fn build(out: &Path, req: &Request) -> Result<Vec<PathBuf>, BuildError> {
    let ws = workspace();
    let key = signing::load(&ws, req.key, signing::Missing::Make, &progress)?;
    let trusted = key.trusted();
    progress(&format!("signing with {} (key id {})", key.path.display(), trusted.id()));
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
    entries.push(("lib/modules/index".into(), Node::File(0o644, ix.plan(modules::WANTED)?.into_bytes())));
    entries.push(("bin/netfw".into(), Node::Symlink("/init".into())));
    entries.push(("bin/web-config".into(), Node::Symlink("/init".into())));
    entries.push((
        "etc/director-release".into(),
        Node::File(0o644, format!("director {} (kernel {})\n", req.version, kernel::RELEASE).into_bytes()),
    ));
    entries.push(("etc/director-version".into(), Node::File(0o644, format!("{}\n", req.version).into_bytes())));
    entries.push((
        director_config::bundle::TRUSTED_KEY_FILE.trim_start_matches('/').into(),
        Node::File(0o644, trusted.to_file().into_bytes()),
    ));
    progress("writing the initramfs (newc cpio, xz)");
    let initramfs = initramfs::build(entries, source_date_epoch(), initramfs::Packing::Xz)?;

    std::fs::create_dir_all(out).map_err(|e| BuildError::io(out, e))?;
    let vmlinuz = out.join("vmlinuz");
    std::fs::copy(k.vmlinuz(), &vmlinuz).map_err(|e| BuildError::io(&vmlinuz, e))?;
    let ird = out.join("initramfs.cpio.xz");
    std::fs::write(&ird, &initramfs).map_err(|e| BuildError::io(&ird, e))?;
    let config = match req.baked {
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
    let img = disk::build(out, &kernel_bytes, &initramfs, &req.version, config.as_deref(), source_date_epoch())?;
    let image_bytes = std::fs::read(&img).map_err(|e| BuildError::io(&img, e))?;
    let sig = out.join("director.img.sig");
    std::fs::write(&sig, director_config::bundle::sign_image(&image_bytes, &key.signing)).map_err(|e| BuildError::io(&sig, e))?;
    let public = out.join("director-update.pub");
    std::fs::write(&public, trusted.to_file()).map_err(|e| BuildError::io(&public, e))?;
    progress(&format!("director.img: {}", against(image_bytes.len() as u64, IMAGE_LIMIT)));
    let mut files = vec![vmlinuz, ird, img, sig, public];
    if req.bundle {
        files.push(write_bundle(out, &req.version, &kernel_bytes, &initramfs, &key.signing)?);
    }
    Ok(files)
}

/// Sign `kernel` and `initramfs` into `out/director.bundle` and print its size against the limit.
fn write_bundle(
    out: &Path,
    version: &str,
    kernel: &[u8],
    initramfs: &[u8],
    key: &ed25519_dalek::SigningKey,
) -> Result<PathBuf, BuildError> {
    let bundle = director_config::bundle::write(version, kernel, initramfs, key);
    let path = out.join("director.bundle");
    std::fs::write(&path, &bundle).map_err(|e| BuildError::io(&path, e))?;
    progress(&format!("director.bundle (version {version}): {}", against(bundle.len() as u64, BUNDLE_LIMIT)));
    Ok(path)
}

/// `image bundle --kernel K --initramfs I`: sign parts built elsewhere into `out/director.bundle`.
fn bundle_parts(out: &Path, kernel: &Path, initramfs: &Path, req: &Request) -> Result<Vec<PathBuf>, BuildError> {
    let key = signing::load(&workspace(), req.key, signing::Missing::Refuse, &progress)?;
    let k = std::fs::read(kernel).map_err(|e| BuildError::io(kernel, e))?;
    let i = std::fs::read(initramfs).map_err(|e| BuildError::io(initramfs, e))?;
    std::fs::create_dir_all(out).map_err(|e| BuildError::io(out, e))?;
    Ok(vec![write_bundle(out, &req.version, &k, &i, &key.signing)?])
}

/// `image verify`: a bundle, or an image with its `.sig` beside it, against the key given
/// (a signing key's public half, or a public key file), else the build's own.
fn verify(args: &[String]) -> Result<(), BuildError> {
    use director_config::bundle::{self, TrustedKey};
    let file = PathBuf::from(opt(args, "--file").ok_or_else(|| BuildError::Tool(format!("--file F is required\n{USAGE}")))?);
    let trusted = match opt(args, "--pub") {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| BuildError::io(Path::new(p), e))?;
            TrustedKey::parse(&text).map_err(|e| BuildError::Tool(format!("{p}: {e}")))?
        }
        None => signing::load(&workspace(), opt(args, "--key").map(Path::new), signing::Missing::Refuse, &progress)?.trusted(),
    };
    let bytes = std::fs::read(&file).map_err(|e| BuildError::io(&file, e))?;
    let name = file.display();
    if bytes.starts_with(bundle::MAGIC) {
        let m = bundle::verify(&bytes, &trusted).map_err(|e| BuildError::Tool(format!("{name}: {e}")))?;
        println!("{name}: a good bundle of director {} for {}, signed by key {}", m.version, m.machine, trusted.id());
    } else {
        let sig_path = PathBuf::from(format!("{}.sig", file.display()));
        let sig = std::fs::read_to_string(&sig_path).map_err(|e| BuildError::io(&sig_path, e))?;
        bundle::verify_image(&bytes, &sig, &trusted).map_err(|e| BuildError::Tool(format!("{name}: {e}")))?;
        println!("{name}: a good image, signed by key {}", trusted.id());
    }
    Ok(())
}

/// The root of an initramfs: directories, the console node, `init` from `bin`, and the modules
/// `mods` with their load order.
fn root_with_modules(k: &kernel::Kernel, mods: &[(String, String)], bin: &Path) -> Result<Vec<(String, Node)>, BuildError> {
    let mut entries: Vec<(String, Node)> =
        ["bin", "boot", "dev", "etc", "lib", "lib/modules", "mnt", "mnt/config", "proc", "run", "sys", "tmp"]
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
    let initramfs = initramfs::build(root_with_modules(&k, &mods, &bin)?, source_date_epoch(), initramfs::Packing::Gzip)?;
    std::fs::create_dir_all(out).map_err(|e| BuildError::io(out, e))?;
    let vmlinuz = out.join("vmlinuz");
    std::fs::copy(k.vmlinuz(), &vmlinuz).map_err(|e| BuildError::io(&vmlinuz, e))?;
    let ird = out.join("lab-rs-guest.cpio.gz");
    std::fs::write(&ird, &initramfs).map_err(|e| BuildError::io(&ird, e))?;
    Ok(vec![ird])
}

const USAGE: &str = "usage:
  image build [--config FILE] [--out DIR] [--key FILE] [--version V]
                                               build target/image/{vmlinuz,initramfs.cpio.xz,director.img,director.img.sig}
  image bundle [--out DIR] [--key FILE] [--version V]
                                               the same, and target/image/director.bundle (the update)
  image bundle --kernel FILE --initramfs FILE [--out DIR] [--key FILE] [--version V]
                                               sign a bundle of a kernel and initramfs of your own (no build)
  image verify --file F [--key FILE | --pub FILE]
                                               check a bundle, or an image against F.sig
  (--key: an Ed25519 PKCS#8 PEM; default DIRECTOR_SIGNING_KEY, else target/signing/director-signing.pem, made if absent)
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
    if cmd == "verify" {
        return match verify(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("image: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !matches!(cmd, "build" | "bundle" | "lab-guest") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let out = opt(&args, "--out").map_or_else(|| workspace().join("target/image"), PathBuf::from);
    let baked = opt(&args, "--config").map(PathBuf::from);
    let version = opt(&args, "--version")
        .map(str::to_string)
        .or_else(|| std::env::var("DIRECTOR_VERSION").ok())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    if version.is_empty() || version.len() > 64 || !version.chars().all(|c| c.is_ascii_graphic()) {
        eprintln!("image: --version: 1 to 64 printable characters, no spaces");
        return ExitCode::from(2);
    }
    let req = Request { baked: baked.as_deref(), key: opt(&args, "--key").map(Path::new), version, bundle: cmd == "bundle" };
    let started = std::time::Instant::now();
    let own_parts = (opt(&args, "--kernel"), opt(&args, "--initramfs"));
    let built = match (cmd, own_parts) {
        ("lab-guest", _) => build_lab_guest(&out),
        ("bundle", (Some(k), Some(i))) => bundle_parts(&out, Path::new(k), Path::new(i), &req),
        ("bundle", (Some(_), None) | (None, Some(_))) => Err(BuildError::Tool(format!("--kernel and --initramfs go together\n{USAGE}"))),
        _ => build(&out, &req),
    };
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
