//! The last minutes of every real server, for the page's charts: packets per second and
//! connections (established and not), sampled by the init from the data plane's reports.

use serde::{Deserialize, Serialize};

/// One moment of one real server.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When (Unix time, ms).
    pub at_unix_ms: u64,
    /// Frames forwarded to it per second since the previous point.
    pub pps: f64,
    /// Its flows then (active + inactive).
    pub conns: u64,
}

/// One real server of one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// "tcp 203.0.113.10:80".
    pub service: String,
    /// The real server's address.
    pub server: String,
    /// Oldest first.
    pub points: Vec<Point>,
}
