//! Requests to the init on its control socket (the web page is the client) and its answers:
//! the box's status, the config in force, applying a new config (and, when refused, at which
//! step and why), confirming a management change, reboot and power off.

use serde::{Deserialize, Serialize};

use crate::events::{EventKind, LogEvent, Severity};
use crate::status::Status;
use crate::{one_line, Problem};

/// What the web page asks the init.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum InitRequest {
    /// The box's status.
    Status,
    /// The config document in force.
    Config,
    /// Validate, apply, verify and save a new document.
    ApplyConfig {
        /// The document, as the operator wrote it.
        document: String,
    },
    /// Keep a pending management change.
    Confirm,
    /// Reboot cleanly.
    Reboot,
    /// Power off cleanly.
    Poweroff,
    /// Record an event (the web page's logins).
    Event {
        /// What about.
        kind: EventKind,
        /// How much it matters.
        severity: Severity,
        /// What happened.
        message: String,
    },
    /// The event log.
    Events,
    /// The real servers' last minutes.
    History,
    /// Capture packets on a NIC.
    Capture {
        /// What to capture.
        spec: CaptureSpec,
    },
    /// Live flows and persistence templates, in the mode in force.
    Connections {
        /// Which.
        filter: crate::connections::ConnectionFilter,
    },
}

/// Which NIC a capture is on, by its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureNic {
    /// Towards the router.
    VipSide,
    /// Towards the real servers.
    RsSide,
    /// The management NIC.
    Management,
}

/// A capture as the operator asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// Where.
    pub nic: CaptureNic,
    /// `all`, `host`, `port` or `arp`.
    pub filter: String,
    /// The host's address or the port, for `host` and `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Stop after this many frames.
    pub packets: u32,
    /// Stop after this many seconds.
    pub seconds: u32,
}

/// Where a finished capture's file is left for the web page (tmpfs; one capture at a time).
pub const CAPTURE_FILE: &str = "/run/director-capture.pcap";

/// The steps of applying a config, in order. A failure at any step leaves the running and the
/// saved config as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// The document's rules (and whether a change may be made now).
    Validate,
    /// The data plane takes it: netfw reloads, IPVS is reconciled, or the mode switches.
    Apply,
    /// What the data plane reports equals what was asked.
    Verify,
    /// Written to the config partition, power-loss safe.
    Save,
}

impl Step {
    /// The step's name.
    pub fn name(self) -> &'static str {
        match self {
            Step::Validate => "validate",
            Step::Apply => "apply",
            Step::Verify => "verify",
            Step::Save => "save",
        }
    }
}

/// A config change that did not take effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyFailure {
    /// Where it stopped.
    pub step: Step,
    /// Why.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config NOT applied ({} failed): {}; the running config stays in force and the saved one is unchanged",
            self.step.name(),
            one_line(&self.problems)
        )
    }
}

/// A config change that took effect (or was saved for the next reboot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// What happened, in a sentence.
    pub message: String,
    /// The mode now in force ("forwarder" or "ipvs").
    pub mode: String,
    /// Seconds left to confirm a management change, if one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_within_s: Option<u64>,
    /// Saved but not applied: why a reboot is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_needed: Option<String>,
}

/// The box's status for the web page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxStatus {
    /// "forwarder", "ipvs" or "none".
    pub mode: String,
    /// IPVS because the forwarder could not use its NICs.
    pub fallback: bool,
    /// Seconds left to confirm a management change.
    pub confirm_within_s: Option<u64>,
    /// A valid config is in force.
    pub config_valid: bool,
    /// A saved config waits for a reboot: why.
    pub reboot_needed: Option<String>,
    /// The forwarding table with its counters (none while nothing forwards).
    pub status: Option<Status>,
}

/// The init's answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum InitAnswer {
    /// The box's status.
    Status {
        /// It.
        status: Box<BoxStatus>,
    },
    /// The config in force (none if there is no valid one).
    Config {
        /// The document as written.
        document: Option<String>,
    },
    /// A config change took effect.
    Applied {
        /// What happened.
        applied: Applied,
    },
    /// A config change was refused.
    Refused {
        /// Where and why.
        failure: ApplyFailure,
    },
    /// An action was accepted (confirm, reboot, power off).
    Done {
        /// What happens now.
        message: String,
    },
    /// The request could not be carried out.
    Error {
        /// Why.
        message: String,
    },
    /// The event log, oldest first.
    Events {
        /// Its entries.
        events: Vec<LogEvent>,
    },
    /// The real servers' last minutes.
    History {
        /// One series per real server.
        series: Vec<crate::history::Series>,
    },
    /// A capture is done: its file.
    Captured {
        /// Where the pcap file is.
        file: String,
        /// The NIC it was taken on.
        nic: String,
        /// Frames in it.
        packets: u32,
    },
    /// The connection list.
    Connections {
        /// It.
        list: crate::connections::Connections,
    },
}

impl InitAnswer {
    /// The answer as one console line.
    pub fn human(&self) -> String {
        match self {
            InitAnswer::Status { status } => format!("mode {}", status.mode),
            InitAnswer::Config { document } => document.clone().unwrap_or_else(|| "no valid config".into()),
            InitAnswer::Applied { applied } => applied.message.clone(),
            InitAnswer::Refused { failure } => failure.to_string(),
            InitAnswer::Done { message } => message.clone(),
            InitAnswer::Error { message } => format!("error: {message}"),
            InitAnswer::Events { events } => format!("{} events", events.len()),
            InitAnswer::History { series } => format!("{} series", series.len()),
            InitAnswer::Captured { nic, packets, .. } => format!("{packets} frames captured on {nic}"),
            InitAnswer::Connections { list } => format!("{} connection entries", list.entries.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_have_a_stable_wire_form() {
        let r = serde_json::to_string(&InitRequest::ApplyConfig { document: "{}".into() }).unwrap();
        assert_eq!(r, r#"{"request":"apply-config","document":"{}"}"#);
        let a =
            InitAnswer::Refused { failure: ApplyFailure { step: Step::Apply, problems: vec![Problem::at("flow_capacity", "too big")] } };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"answer":"refused","failure":{"step":"apply","problems":[{"field":"flow_capacity","message":"too big"}]}}"#);
        assert_eq!(serde_json::from_str::<InitAnswer>(&text).unwrap(), a);
        assert!(a.human().starts_with("config NOT applied (apply failed): flow_capacity: too big"), "{}", a.human());
    }
}
