//! director-messages: what the appliance's processes say to each other, as types.
//!
//! - `framing`: one JSON document per line over a Unix stream socket, bounded in size, with
//!   errors that say which socket and what went wrong; the socket paths.
//! - `events`: the event log's entries (what, when, how much it matters).
//! - `history`: the last minutes of each real server (the page's charts).
//! - `netfw`: requests to a running forwarder and its answers.
//! - `init`: requests to the init (from the web page) and its answers, including why a
//!   config change was refused and at which step.
//! - `status`: the status document both modes report, and its ipvsadm-style text table.
//! - `metrics`: the same document in Prometheus' text format (`GET /metrics`).
//! - `connections`: the connection list (flows and persistence templates, like
//!   `ipvsadm -L -n -c`), its filter and its text table.
//!
//! Nothing is parsed back from prose: the console's human lines are rendered from these
//! types, and every error travels as `{field, message}` data.

pub mod connections;
pub mod events;
pub mod framing;
pub mod history;
pub mod init;
pub mod metrics;
pub mod netfw;
pub mod status;

pub use framing::{MessageError, INIT_SOCKET, NETFW_SOCKET};

use serde::{Deserialize, Serialize};

/// One problem, naming the config field at fault when there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path of the field, e.g. `services[0].real_servers[1].address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, in an operator's words.
    pub message: String,
}

impl Problem {
    /// A problem with no particular field.
    pub fn general(message: impl Into<String>) -> Problem {
        Problem { field: None, message: message.into() }
    }
    /// A problem with a field.
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { field: Some(field.into()), message: message.into() }
    }
}

impl From<director_config::FieldError> for Problem {
    fn from(e: director_config::FieldError) -> Self {
        Problem { field: Some(e.field), message: e.message }
    }
}

/// Why a config was not accepted, as problems (a syntax error names no field).
pub fn problems(e: director_config::ConfigError) -> Vec<Problem> {
    match e {
        director_config::ConfigError::Invalid(errs) => errs.into_iter().map(Problem::from).collect(),
        other => vec![Problem::general(other.to_string())],
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Problems as one human line ("a; b; c").
pub fn one_line(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
