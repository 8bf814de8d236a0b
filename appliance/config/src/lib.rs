//! director-config: the one configuration document of the director, and everything about
//! keeping it.
//!
//! - `document`: the JSON schema (version 1) as serde types.
//! - `validate`: every rule, in the seeds' words, naming the field; the result is the data
//!   plane's model (`netfw_core::model::DataPlaneSpec`).
//! - `ha`: the `ha` section (one box of an HA pair) and its rules.
//! - `health`: a service's `health_check` and its rules.
//! - `observe`: the `metrics` token and the `syslog` target, and their rules.
//! - `net`: IPv4 subnets and addresses as the document writes them.
//! - `nic`: NIC references (an interface name or a MAC): one validator, one resolver.
//! - `error`: why a document was not accepted.
//! - `store`: the power-loss-safe two-slot store on the config partition.
//! - `paths`: the one list of partition, directory and file names.
//! - `ipvsadm`: `ipvsadm -S -n` rules in and out.
//! - `keepalived`: a keepalived.conf's `virtual_server` blocks in, with what does not map listed.
//! - `bundle`: the signed update bundle and the image's detached signature.
//! - `boot`: the two system slots on the EFI partition and the boot state (default, trial).
//!
//! Used by the init, netfw, the web page and the image builder; none of them parses the
//! document its own way.

pub mod boot;
pub mod bundle;
pub mod document;
pub mod error;
pub mod ha;
pub mod health;
pub mod ipvsadm;
pub mod keepalived;
pub mod net;
pub mod nic;
pub mod observe;
pub mod paths;
pub mod store;
pub mod validate;

pub use document::{Config, Io, Management, Mode, Nics, RealServerDoc, ServiceDoc, TimeoutsDoc};
pub use error::{ConfigError, FieldError};
pub use net::{parse_cidr, Subnet};
pub use netfw_core::model::Forwarding;
