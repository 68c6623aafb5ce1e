//! The configuration as a front end read it, before any meaning is given to it.
//!
//! Both front ends (native TOML through figment, and supervisord's INI dialect) produce a
//! [`RawConfig`]: sections of named options, each value remembering where it came from.
//! [`super::resolve`] then gives them meaning once, the same way for both.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::diag::Origin;

/// A value as written. INI values are always strings; TOML's keep their type.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Raw>),
    Table(BTreeMap<String, Raw>),
}

impl Raw {
    /// What kind of value this is, for messages ("expected a number, got a table").
    pub fn kind(&self) -> &'static str {
        match self {
            Raw::Str(_) => "a string",
            Raw::Int(_) => "an integer",
            Raw::Float(_) => "a number",
            Raw::Bool(_) => "a boolean",
            Raw::List(_) => "a list",
            Raw::Table(_) => "a table",
        }
    }
}

/// One option's value and where it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct RawValue {
    pub value: Raw,
    pub origin: Origin,
}

/// The kinds of section minder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SectionKind {
    /// The daemon's own settings (`[daemon]`, `[supervisord]`).
    Daemon,
    /// Where the command line connects (`[supervisorctl]`).
    Ctl,
    /// A unix socket listener (`[unix_http_server]`).
    UnixServer,
    /// A TCP listener (`[inet_http_server]`).
    InetServer,
    Program,
    Group,
    EventListener,
    FcgiProgram,
    RpcInterface,
}

impl SectionKind {
    /// How the user would write the section's name, for messages.
    pub fn label(self, name: &str, toml: bool) -> String {
        let (toml_name, ini_name) = match self {
            SectionKind::Daemon => ("daemon", "supervisord"),
            SectionKind::Ctl => ("ctl", "supervisorctl"),
            SectionKind::UnixServer => ("unix_http_server", "unix_http_server"),
            SectionKind::InetServer => ("inet_http_server", "inet_http_server"),
            SectionKind::Program => ("program", "program"),
            SectionKind::Group => ("group", "group"),
            SectionKind::EventListener => ("eventlistener", "eventlistener"),
            SectionKind::FcgiProgram => ("fcgi-program", "fcgi-program"),
            SectionKind::RpcInterface => ("rpcinterface", "rpcinterface"),
        };
        match (toml, name.is_empty()) {
            (true, true) => toml_name.to_string(),
            (true, false) => format!("{toml_name}.{name}"),
            (false, true) => format!("[{ini_name}]"),
            (false, false) => format!("[{ini_name}:{name}]"),
        }
    }
}

/// One section: its kind, its name (empty for singletons such as the daemon's), its options.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSection {
    pub kind: SectionKind,
    pub name: String,
    pub options: BTreeMap<String, RawValue>,
    /// Where the section itself begins.
    pub origin: Origin,
}

/// A whole configuration as read, with the file it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct RawConfig {
    /// The main configuration file, absolute.
    pub path: PathBuf,
    /// Whether it was written in TOML (it changes how option names are shown).
    pub toml: bool,
    pub sections: Vec<RawSection>,
    /// Options every section inherits unless it sets them itself: supervisord.conf's
    /// `[DEFAULT]` section (Python's configparser gives it to every section). Empty for TOML.
    pub defaults: BTreeMap<String, RawValue>,
    /// What the front end noticed but could read past (an unknown section, say).
    pub warnings: Vec<super::diag::Diagnostic>,
    /// The files `[include]` named, in the order they were read (for supervisord's
    /// `Included extra file "PATH" during parsing`).
    pub included: Vec<PathBuf>,
}

impl RawConfig {
    pub fn section(&self, kind: SectionKind) -> Option<&RawSection> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    /// Every section of one kind, in the order they were first given.
    pub fn sections_of(&self, kind: SectionKind) -> impl Iterator<Item = &RawSection> {
        self.sections.iter().filter(move |s| s.kind == kind)
    }
}
