//! The one list of names the parts agree on: the config partition (the image builder makes
//! it, the init mounts it), the files on it, and where the init hands netfw its config.

/// GPT partition name of the config partition.
pub const CONFIG_PARTNAME: &str = "director-config";
/// Where the init mounts the config partition.
pub const CONFIG_DIR: &str = "/mnt/config";
/// The operator's config file on the partition (`image config-set` writes it).
pub const OPERATOR_CONFIG: &str = "director.json";
/// The appliance's saved configs: two checksummed slots (`store`); the newest intact one wins
/// over `OPERATOR_CONFIG`.
pub const CONFIG_STORE: &str = "director.slots";
/// The web page's secrets (password hash, TLS key), in the same two-slot format.
pub const WEB_STORE: &str = "web.slots";
/// The files the image builder allocates at full size, so saves never change FAT metadata.
pub const PREALLOCATED: [&str; 2] = [CONFIG_STORE, WEB_STORE];
/// The effective config netfw runs with (NIC references resolved to names), on tmpfs.
pub const RUN_CONFIG: &str = "/run/netfw.json";

/// A file on the mounted config partition.
pub fn on_partition(file: &str) -> std::path::PathBuf {
    std::path::Path::new(CONFIG_DIR).join(file)
}
