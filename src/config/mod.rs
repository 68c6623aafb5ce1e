//! The one configuration model, read from native TOML (through figment, with `MINDER_…`
//! environment overrides) or from supervisord.conf.
//!
//! Reading is two steps. A front end ([`toml`]) turns files into a [`raw::RawConfig`]: sections
//! of options that remember their file and line. [`resolve`] then gives those options their
//! meaning — defaults, `%(name)s` expansions, numprocs, groups, validation — the same way for
//! every front end, collecting every problem before it reports any.

pub mod diag;
pub mod expand;
pub mod raw;
mod resolve;
mod toml;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::{ConfigErrors, Diagnostic, Origin};
pub use values::AutoRestart;

use crate::address::Address;
use crate::signal::Signal;

/// A whole configuration, resolved and valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main configuration file, absolute.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// Every group, in start order: by priority, then name.
    pub groups: Vec<GroupConfig>,
    /// Things that are not errors but deserve a word (an unknown option, say).
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// Every process of every group, in start order.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessConfig> {
        self.groups.iter().flat_map(|g| g.processes.iter())
    }
}

/// The daemon's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Where to serve the API; empty means the default socket ([`crate::address::default_socket`]).
    pub listen: Vec<Address>,
    /// The mode of a unix socket minderd creates.
    pub socket_mode: u32,
    /// Where to write the daemon's pid, if anywhere.
    pub pidfile: Option<PathBuf>,
    /// The daemon's own log; `None` means standard output.
    pub logfile: Option<PathBuf>,
    pub loglevel: LogLevel,
    /// Names this daemon in AUTO log file names and in DaemonInfo.
    pub identifier: String,
    /// Where AUTO child log files go.
    pub childlogdir: PathBuf,
    /// Added to every child's environment (under the program's own).
    pub environment: BTreeMap<String, String>,
}

/// supervisord's log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Critical,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Blather,
}

impl LogLevel {
    pub const NAMES: &'static str = "critical, error, warn, info, debug, trace, blather";

    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "critical" => LogLevel::Critical,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            "blather" => LogLevel::Blather,
            _ => return None,
        })
    }
}

/// A set of processes addressed together (`group:*`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    /// Lower starts first; at shutdown, higher stops first.
    pub priority: i32,
    /// The processes, by priority then name.
    pub processes: Vec<ProcessConfig>,
}

/// Where one of a process's output channels goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum LogTarget {
    /// Discarded (`NONE`).
    None,
    /// A file in childlogdir whose name minderd chooses when it first runs the process:
    /// `<process>-<channel>---<identifier>-XXXXXX.log`, as supervisord names it.
    Auto,
    /// Appended to this file.
    File(PathBuf),
}

/// Everything needed to run and supervise one process, fully resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessConfig {
    pub name: String,
    pub group: String,
    /// The program (section) this process comes from.
    pub program: String,
    /// The command as written, after expansions.
    pub command: String,
    /// The command split into words, as `shlex.split` does; never empty.
    pub argv: Vec<String>,
    pub priority: i32,
    pub autostart: bool,
    pub autorestart: AutoRestart,
    #[serde(serialize_with = "ser_secs")]
    pub startsecs: Duration,
    pub startretries: u32,
    pub exitcodes: Vec<i32>,
    #[serde(serialize_with = "ser_signal")]
    pub stopsignal: Signal,
    #[serde(serialize_with = "ser_secs")]
    pub stopwaitsecs: Duration,
    pub stopasgroup: bool,
    pub killasgroup: bool,
    /// Run as this user (name or numeric uid), with its groups, HOME, USER and LOGNAME.
    pub user: Option<String>,
    /// chdir here before exec.
    pub directory: Option<PathBuf>,
    pub umask: Option<u32>,
    /// The program's environment merged over the daemon's `environment`; minderd adds the
    /// SUPERVISOR_* and MINDER_* variables when it spawns.
    pub environment: BTreeMap<String, String>,
    pub redirect_stderr: bool,
    pub stdout_logfile: LogTarget,
    pub stderr_logfile: LogTarget,
}

impl ProcessConfig {
    /// `name` when the process is alone in a group of the same name, else `group:name`.
    pub fn full_name(&self) -> String {
        full_name(&self.group, &self.name)
    }
}

/// supervisord's `make_namespec`.
pub fn full_name(group: &str, name: &str) -> String {
    if group == name {
        name.to_string()
    } else {
        format!("{group}:{name}")
    }
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_signal<S: serde::Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(sig.as_str().trim_start_matches("SIG"))
}

/// Reads and resolves the configuration at `path`, with `MINDER_…` environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    load_with_env(path, &env)
}

/// [`load`], with the environment given explicitly (for `%(ENV_X)s` and `MINDER_…`).
pub fn load_with_env(path: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
    let path =
        absolute(path).map_err(|e| ConfigErrors::one(Diagnostic::new(Origin::file(path, None), "", e)))?;
    let raw = toml::read(&path, env)?;
    resolve::resolve(&raw, env)
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the configuration file: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a configuration file".into());
    }
    std::path::absolute(path).map_err(|e| e.to_string())
}

/// Where minderd and minder look for a configuration when not given one, in order: minder's
/// own TOML files, then supervisord's search path.
pub fn search_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("minder.toml")];
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(dir).join("minder/minder.toml"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(home).join(".config/minder/minder.toml"));
    }
    paths.push(PathBuf::from("/etc/minder/minder.toml"));
    paths
}

/// The first configuration file in [`search_paths`] that exists.
pub fn find() -> Option<PathBuf> {
    search_paths().into_iter().find(|p| p.is_file())
}
