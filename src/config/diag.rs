//! Where a configuration value came from, and the errors and warnings that point at it.
//!
//! Every problem a user sees names the file, the line (when the front end knows it), the
//! option, and what would have been allowed.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where one value was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A configuration file, at a 1-based line when known.
    File { path: PathBuf, line: Option<u32> },
    /// An environment variable that overrode the files (`MINDER_PROGRAM__WEB__COMMAND`).
    Env { var: String },
    /// Not given anywhere: a default, or a value minder derived.
    Default,
}

impl Origin {
    pub fn file(path: impl Into<PathBuf>, line: Option<u32>) -> Self {
        Origin::File { path: path.into(), line }
    }

    /// The file this value came from, if it came from one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Origin::File { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line: Some(line) } => write!(f, "{}:{line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Default => f.write_str("(default)"),
        }
    }
}

/// One problem in a configuration: where, which option, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    /// The option as the user wrote it: `program.web.startsecs` or `[program:web] startsecs`.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(origin: Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { origin, key: key.into(), message: message.into() }
    }
}

/// As `{"origin": "file:line", "key": ..., "message": ...}` in the effective configuration.
impl serde::Serialize for Diagnostic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Diagnostic", 3)?;
        st.serialize_field("origin", &self.origin.to_string())?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("message", &self.message)?;
        st.end()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every error found in a configuration, reported together so one run shows them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<Diagnostic>,
}

impl ConfigErrors {
    pub fn one(d: Diagnostic) -> Self {
        ConfigErrors { errors: vec![d] }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{n} error{} in the configuration:", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// The 1-based line of a byte offset in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    let newlines = text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}
