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
    assert!(log.contains("director.img: ") && log.contains("48 MiB limit"), "the image's size against its limit: {log}");
    build(&b);
    for f in ["vmlinuz", "initramfs.cpio.xz", "director.img", "director.img.sig"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between two builds");
    }
    // The baked config is on the config partition.
    let got = Command::new(image()).args(["config-get", "--disk", a.join("director.img").to_str().unwrap()]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), include_str!("../../docs/example-config.json"));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// Issue 14: the bundle and the image's signature. A bundle (signed here from the built
/// kernel and initramfs, without another build) verifies with the key the build used (made
/// under target/ if none was given, or the operator's own PEM from openssl); a changed,
/// truncated or other-key bundle is refused with its reason; the built image verifies against
/// its .sig; the bundle's size is printed against its limit.
#[test]
fn bundles_and_images_are_signed_and_checked() {
    let out = tmp("bundle");
    let run = |args: &[&str]| {
        let o = Command::new(image()).args(args).output().unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let built = qemu::vm::image_dir();
    let (k, i) = (built.join("vmlinuz"), built.join("initramfs.cpio.xz"));
    let (ok, log) = run(&[
        "bundle",
        "--kernel",
        k.to_str().unwrap(),
        "--initramfs",
        i.to_str().unwrap(),
        "--version",
        "9.8.7-test",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    assert!(log.contains("director.bundle (version 9.8.7-test): ") && log.contains("12 MiB limit"), "the size against the limit: {log}");
    let bundle = out.join("director.bundle");
    let b = bundle.to_str().unwrap();
    let (ok, said) = run(&["verify", "--file", b]);
    assert!(ok && said.contains("a good bundle of director 9.8.7-test for x86_64"), "{said}");
    let public = built.join("director-update.pub");
    let (ok, said) = run(&["verify", "--file", b, "--pub", public.to_str().unwrap()]);
    assert!(ok, "{said}");
    let (ok, said) = run(&["verify", "--file", built.join("director.img").to_str().unwrap()]);
    assert!(ok && said.contains("a good image"), "{said}");

    // The operator's own key (openssl's PEM): the build's bundle is not signed by it.
    let pem = out.join("operator.pem");
    let st = Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&pem).status().unwrap();
    assert!(st.success());
    let (ok, said) = run(&["verify", "--file", b, "--key", pem.to_str().unwrap()]);
    assert!(!ok && said.contains("trusts only key"), "{said}");

    // Changed and truncated copies.
    let bytes = std::fs::read(&bundle).unwrap();
    let mut changed = bytes.clone();
    let at = changed.windows(10).position(|w| w == b"9.8.7-test").unwrap();
    changed[at] = b'8';
    let changed_path = out.join("changed.bundle");
    std::fs::write(&changed_path, &changed).unwrap();
    let (ok, said) = run(&["verify", "--file", changed_path.to_str().unwrap()]);
    assert!(!ok && said.contains("signature does not verify"), "{said}");
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 100] ^= 0xff;
    std::fs::write(&changed_path, &flipped).unwrap();
    let (ok, said) = run(&["verify", "--file", changed_path.to_str().unwrap()]);
    assert!(!ok && said.contains("initramfs does not match its signed digest"), "{said}");
    std::fs::write(&changed_path, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, said) = run(&["verify", "--file", changed_path.to_str().unwrap()]);
    assert!(!ok && said.contains("the bundle is truncated"), "{said}");
    let _ = std::fs::remove_dir_all(&out);
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
