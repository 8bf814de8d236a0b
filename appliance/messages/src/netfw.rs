//! Requests to a running forwarder (`netfw run`) on its control socket, and its answers.

use serde::{Deserialize, Serialize};

use crate::status::Status;
use crate::{one_line, Problem};

/// What the init, the CLI or a test asks netfw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum NetfwRequest {
    /// The status document.
    Status,
    /// Re-read the config file and apply it (or refuse it, changing nothing).
    Reload,
    /// Start capturing on a dedicated NIC (one capture at a time).
    Capture {
        /// What to capture.
        spec: crate::init::CaptureSpec,
    },
    /// The capture's file once it is done.
    CaptureResult,
    /// Live flows and persistence templates.
    Connections {
        /// Which.
        filter: crate::connections::ConnectionFilter,
    },
}

/// netfw's answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum NetfwAnswer {
    /// The status document.
    Status {
        /// It.
        status: Box<Status>,
    },
    /// The new config is in force.
    Reloaded {
        /// Services now configured.
        services: usize,
        /// Flows that kept their real server.
        flows_kept: usize,
        /// How long forwarding paused while the new tables were installed, in microseconds
        /// (they are built beside the running ones first).
        paused_us: u64,
    },
    /// The new config was refused; the running one stays in force.
    Refused {
        /// Why.
        problems: Vec<Problem>,
    },
    /// A capture started.
    CaptureStarted,
    /// The capture still runs.
    Capturing,
    /// The capture is done.
    Captured {
        /// Where its pcap file is.
        file: String,
        /// Frames in it.
        packets: u32,
    },
    /// The connection list.
    Connections {
        /// It.
        list: crate::connections::Connections,
    },
    /// The request itself was not understood.
    Error {
        /// Why.
        message: String,
    },
}

impl NetfwAnswer {
    /// The answer as the console and `netfw reload` print it.
    pub fn human(&self) -> String {
        match self {
            NetfwAnswer::Status { status } => status.render(),
            NetfwAnswer::Reloaded { services, flows_kept, paused_us } => {
                format!("reloaded: {services} service(s), {flows_kept} flow(s) kept; forwarding paused {paused_us} us")
            }
            NetfwAnswer::Refused { problems } => {
                format!("reload refused, the running config stays in force: {}", one_line(problems))
            }
            NetfwAnswer::CaptureStarted => "capture started".into(),
            NetfwAnswer::Capturing => "capturing".into(),
            NetfwAnswer::Captured { file, packets } => format!("{packets} frame(s) captured: {file}"),
            NetfwAnswer::Connections { list } => list.render(),
            NetfwAnswer::Error { message } => format!("error: {message}"),
        }
    }
}
