//! Why a configuration was not accepted: a file that cannot be read, JSON that is not the
//! schema (with line and column), or a document that breaks rules (each naming its field);
//! and why an imported file (ipvsadm rules, keepalived.conf) could not be read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One rule broken, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON path, e.g. `services[0].real_servers[1].address`.
    pub field: String,
    /// What is wrong, in an operator's words.
    pub message: String,
}

impl FieldError {
    /// A problem with a field.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A line of a foreign file (ipvsadm rules, keepalived.conf) that cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// Which kind of file ("ipvsadm rules", "keepalived.conf").
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.message)
    }
}

/// Why a configuration was not accepted.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// Path.
        path: String,
        /// OS error.
        error: std::io::Error,
    },
    /// Not valid JSON, or not the schema (unknown field, wrong type), at a line and column.
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde's description.
        message: String,
    },
    /// Valid JSON that breaks the rules.
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The problems as field errors (a syntax or read error has no field: `document`).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Invalid(errs) => errs.clone(),
            other => vec![FieldError::new("document", other.to_string())],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "cannot read config {path}: {error}"),
            ConfigError::Syntax { line, column, message } => write!(f, "config line {line}, column {column}: {message}"),
            ConfigError::Invalid(errs) => {
                write!(f, "config rejected ({} problem{}):", errs.len(), if errs.len() == 1 { "" } else { "s" })?;
                for e in errs {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}
