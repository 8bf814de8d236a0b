//! The image builder: reproducible, and refusing an unverified kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

fn image() -> PathBuf {
    qemu::proc::bin("image").unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("director-image-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(out: &Path) -> String {
    let o = Command::new(image())
        .args(["build", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/example-config.json"), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    text
}

#[test]
fn two_builds_from_one_commit_are_byte_identical() {
    let (a, b) = (tmp("a"), tmp("b"));
    let log = build(&a);
    assert!(log.contains("[image] module closure:") && log.contains("director.img"), "progress and artifacts are printed: {log}");
    build(&b);
    for f in ["vmlinuz", "initramfs.cpio.gz", "director.img"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between two builds");
    }
    // The baked config is on the config partition.
    let got = Command::new(image()).args(["config-get", "--disk", a.join("director.img").to_str().unwrap()]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), include_str!("../../docs/example-config.json"));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_kernel_package_with_the_wrong_checksum_stops_the_build() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/cache");
    let deb = std::fs::read_dir(&real)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("the kernel package is cached by `image build`");
    let cache = tmp("badcache");
    let mut bytes = std::fs::read(&deb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = cache.join(deb.file_name().unwrap());
    std::fs::write(&bad, bytes).unwrap();
    let out = tmp("badout");
    let o = Command::new(image()).args(["build", "--out", out.to_str().unwrap()]).env("DIRECTOR_IMAGE_CACHE", &cache).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("checksum mismatch") && err.contains("refusing to build from an unverified kernel"), "{err}");
    assert!(!bad.exists(), "the corrupted package is removed");
    assert!(!out.join("director.img").exists(), "nothing is built from it");
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&out);
}
