//! The one configuration model, read from native TOML (through figment, with `MINDER_…`
//! environment overrides) or from supervisord.conf.
//!
//! Reading is two steps. A front end (`toml` for `*.toml`, `ini` for supervisord.conf) turns
//! files into a [`raw::RawConfig`]: sections of options that remember their file and line. [`resolve`] then gives those options their
//! meaning — defaults, `%(name)s` expansions, numprocs, groups, validation — the same way for
//! every front end, collecting every problem before it reports any. [`convert`] goes the
//! other way: it writes a resolved configuration as native TOML.

pub mod convert;
pub mod diag;
pub mod expand;
pub mod file;
mod ini;
pub mod raw;
mod resolve;
mod toml;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use convert::to_toml;
pub use diag::{ConfigErrors, Diagnostic, Origin};
pub use values::{
    AutoRestart, Backoff, BackoffKind, CgroupSetting, Condition, Dependency, KillMode, Limits, Probe,
    ProbeCheck, Ready, INFINITE_RETRIES,
};

use crate::address::Address;
use crate::signal::Signal;

/// A whole configuration, resolved and valid. It serializes to JSON as the effective
/// configuration (`minderd --check-config --json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Config {
    /// The main configuration file, absolute.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// Every group, in start order: by priority, then name.
    pub groups: Vec<GroupConfig>,
    /// How the command line reaches this daemon (`[supervisorctl]`, `[ctl]`), if the file says.
    /// `None`: the command line connects to one of `daemon.listen`.
    pub client: Option<ClientConfig>,
    /// The `[rpcinterface:x]` sections, in file order. supervisord loads these Python
    /// factories; minder records them so a converted configuration keeps them.
    pub rpcinterfaces: Vec<RpcInterfaceConfig>,
    /// Things that are not errors but deserve a word (an unknown option, say).
    pub warnings: Vec<Diagnostic>,
    /// The files `[include]` named, in the order they were read.
    pub included: Vec<PathBuf>,
}

impl Config {
    /// Every process of every group, in start order.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessConfig> {
        self.groups.iter().flat_map(|g| g.processes.iter().map(|p| &**p))
    }
}

/// The daemon's own settings (`[supervisord]`, `[daemon]`, and the http server sections).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DaemonConfig {
    /// Where to serve the API; empty means the default socket ([`crate::address::default_socket`]).
    /// From `daemon.listen`, `[inet_http_server] port` and `[unix_http_server] file`, in that
    /// order.
    #[serde(serialize_with = "ser_addresses")]
    pub listen: Vec<Address>,
    /// The mode of a unix socket minderd creates (`[unix_http_server] chmod`, default 0700).
    pub socket_mode: u32,
    /// Who owns a unix socket minderd creates (`[unix_http_server] chown`); `None` leaves it
    /// to the daemon's user.
    pub socket_owner: Option<Owner>,
    /// The credentials a client must present on a listener (`username` and `password` of the
    /// server sections). A listener with no entry here asks for none.
    #[serde(serialize_with = "ser_credentials")]
    pub credentials: BTreeMap<Address, Credentials>,
    /// Where to write the daemon's pid, if anywhere.
    pub pidfile: Option<PathBuf>,
    /// The daemon's own log; `None` means standard output (or syslog, when `syslog` is set).
    pub logfile: Option<PathBuf>,
    /// The daemon logs to syslog (`logfile = syslog`).
    pub syslog: bool,
    /// Rotate the daemon log at this size; 0 never rotates.
    pub logfile_maxbytes: u64,
    /// How many rotated daemon logs to keep.
    pub logfile_backups: u32,
    pub loglevel: LogLevel,
    /// The daemon's umask, set at start.
    pub umask: u32,
    /// Stay in the foreground. supervisord's default is to daemonize (false); a TOML
    /// configuration's is to stay (true), as minderd always has.
    pub nodaemon: bool,
    /// With nodaemon, do not copy the daemon log to standard output.
    pub silent: bool,
    /// Raise the soft limit of open files to at least this many at start, or exit.
    pub minfds: u64,
    /// Raise the soft limit of processes to at least this many at start, or exit.
    pub minprocs: u64,
    /// Keep old AUTO child logs at start instead of deleting them.
    pub nocleanup: bool,
    /// Switch to this user (name or uid) after start; exit if that fails.
    pub user: Option<String>,
    /// chdir here when daemonizing.
    pub directory: Option<PathBuf>,
    /// Remove ANSI escape sequences from child logs.
    pub strip_ansi: bool,
    /// Names this daemon in AUTO log file names and in DaemonInfo.
    pub identifier: String,
    /// Where AUTO child log files go.
    pub childlogdir: PathBuf,
    /// TLS for TCP listeners (`tls_cert`, `tls_key`, `tls_client_ca`).
    pub tls: Option<TlsFiles>,
    /// The file the tokens were read from (`tokens_file`).
    pub tokens_file: Option<PathBuf>,
    /// Bearer tokens accepted on TCP listeners, read from `tokens_file`.
    pub tokens: Vec<Token>,
    /// Who may use a unix socket, beyond what its mode allows: user names and group names
    /// (`socket_users`, `socket_groups`); both empty lets in anyone the mode lets in.
    pub socket_users: Vec<String>,
    pub socket_groups: Vec<String>,
    /// `socket_users` and `socket_groups` as ids, resolved once when the configuration is read
    /// (a name or number that does not resolve is an error there): what the daemon checks.
    #[serde(skip)]
    pub socket_uids: Vec<u32>,
    #[serde(skip)]
    pub socket_gids: Vec<u32>,
    /// Listen on a TCP address that is not loopback without any authentication. Refused
    /// unless this is set (supervisord's CVE-2019-12105 was that default).
    pub insecure: bool,
    /// Serve Prometheus metrics over HTTP at this `host:port` (`metrics`).
    pub metrics: Option<String>,
    /// Where the programs' cgroups go (`cgroup`).
    pub cgroup: CgroupSetting,
    /// Whether minderd's death takes every supervised process with it (`kill_on_exit`, true
    /// by default): the parent-death signal and the sentinel. Off, children outlive a killed
    /// minderd, unsupervised, as under supervisord.
    pub kill_on_exit: bool,
    /// Added to every child's environment (under the program's own).
    pub environment: BTreeMap<String, String>,
}

/// TLS for the TCP listeners.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read state, logs and events; change nothing.
    ReadOnly,
    /// Everything.
    Admin,
}

/// A bearer token from the tokens file: `NAME ROLE SECRET` per line.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct Token {
    /// Who the token stands for, in the audit log.
    pub name: String,
    pub role: Role,
    /// Never printed (not in --check-config either).
    #[serde(skip)]
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// Reads a tokens file: one `NAME ROLE SECRET` per line (ROLE is `admin` or `read-only`),
/// blank lines and `#` comments ignored. Every bad line is an error naming its line.
pub fn read_tokens(path: &Path) -> Result<Vec<Token>, ConfigErrors> {
    let text = file::read_to_string(path).map_err(|e| {
        ConfigErrors::one(Diagnostic::new(Origin::file(path, None), "tokens_file", e.to_string()))
    })?;
    let mut tokens: Vec<Token> = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = Origin::file(path, Some(i as u32 + 1));
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, role, secret] = words[..] else {
            errors.push(Diagnostic::new(at, "", "expected NAME ROLE SECRET (ROLE: admin or read-only)"));
            continue;
        };
        let role = match role {
            "admin" => Role::Admin,
            "read-only" | "readonly" | "read" => Role::ReadOnly,
            other => {
                errors.push(Diagnostic::new(
                    at,
                    "",
                    format!("unknown role {other:?}; use admin or read-only"),
                ));
                continue;
            }
        };
        if secret.len() < 16 {
            errors.push(Diagnostic::new(
                at,
                "",
                format!("the token of {name} is too short: use at least 16 characters"),
            ));
            continue;
        }
        if tokens.iter().any(|t| t.secret == secret || t.name == name) {
            errors.push(Diagnostic::new(at, "", format!("{name}: a name or token is used twice")));
            continue;
        }
        tokens.push(Token { name: name.to_string(), role, secret: secret.to_string() });
    }
    if errors.is_empty() {
        Ok(tokens)
    } else {
        Err(ConfigErrors { errors })
    }
}

/// A socket's owner: `user[:group]`, resolved to ids when the configuration is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub uid: u32,
    /// `None` keeps the socket's group.
    pub gid: Option<u32>,
}

/// A username and password a client must present (HTTP basic auth in supervisord).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

/// A password as the configuration gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// Compared as written.
    Plain(String),
    /// `{SHA}` followed by the hex SHA-1 of the password, kept as written: the client's
    /// password matches when the lowercase hex of its SHA-1 is exactly that, as in Supervisor.
    Sha1(String),
}

impl Password {
    /// Reads a password as supervisord does: `{SHA}…` is a digest, anything else plain.
    /// Supervisor accepts any text after `{SHA}`; see [`Password::never_matches`].
    pub fn parse(text: &str) -> Result<Password, String> {
        Ok(match text.strip_prefix("{SHA}") {
            Some(hex) => Password::Sha1(hex.to_string()),
            None => Password::Plain(text.to_string()),
        })
    }

    /// Why no password can ever match this one, when that is so: a `{SHA}` value that is not
    /// 40 lowercase hex digits (Supervisor compares the digest's lowercase hex as text).
    pub fn never_matches(&self) -> Option<String> {
        match self {
            Password::Sha1(hex)
                if hex.len() != 40
                    || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                let hint = if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    " (write its hex digits in lowercase)"
                } else {
                    " (it must be the 40 lowercase hex digits of a SHA-1 digest, e.g. from `echo -n secret | sha1sum`)"
                };
                Some(format!(
                    "the {{SHA}} password can never match: no SHA-1 digest is written {hex:?}{hint}"
                ))
            }
            _ => None,
        }
    }

    /// The password as it would be written in a configuration file.
    pub fn as_written(&self) -> String {
        match self {
            Password::Plain(p) => p.clone(),
            Password::Sha1(hex) => format!("{{SHA}}{hex}"),
        }
    }
}

impl serde::Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_written())
    }
}

/// Where the command line connects (`[supervisorctl]` in supervisord.conf, `[ctl]` in TOML).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientConfig {
    /// `unix:///path` or `http://host:port` (as `tcp://`); supervisorctl's default is
    /// `http://localhost:9001`.
    #[serde(serialize_with = "ser_address")]
    pub serverurl: Address,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The interactive shell's prompt, without the "> " (default `supervisor` in a
    /// supervisord.conf, as supervisorctl's, and `minder` in a TOML configuration).
    pub prompt: String,
    /// Where the interactive shell keeps its history, if anywhere.
    pub history_file: Option<PathBuf>,
}

/// An `[rpcinterface:x]` section: a Python factory and the options passed to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RpcInterfaceConfig {
    pub name: String,
    /// `supervisor.rpcinterface_factory`, e.g. `supervisor.rpcinterface:make_main_rpcinterface`.
    pub factory: String,
    /// Every other option of the section, expanded.
    pub options: BTreeMap<String, String>,
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

    /// The name as a configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Critical => "critical",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
            LogLevel::Blather => "blather",
        }
    }
}

/// A set of processes addressed together (`group:*`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupConfig {
    pub name: String,
    /// Lower starts first; at shutdown, higher stops first.
    pub priority: i32,
    /// What kind of group this is, with what that kind needs (in JSON, its fields sit beside
    /// the group's: `"kind": "event-listener", "events": [...]`).
    #[serde(flatten)]
    pub kind: GroupKind,
    /// The processes, by priority then name; shared with the daemon's process tasks, so a
    /// running daemon holds each once.
    pub processes: Vec<std::sync::Arc<ProcessConfig>>,
}

/// What a group is: plain programs, an event listener pool, or a FastCGI program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GroupKind {
    /// A `[program:x]` (a group of its own) or a `[group:x]` of programs.
    Programs,
    /// An `[eventlistener:x]` pool: its processes speak the event listener protocol on
    /// stdin/stdout (their stdout is never a log).
    EventListener(EventListenerPool),
    /// An `[fcgi-program:x]`: the daemon binds the socket before the first process starts
    /// and gives it to every process as its file descriptor 0.
    FcgiProgram(FcgiSocket),
}

/// What an event listener pool subscribes to and how it buffers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventListenerPool {
    /// Event type names, upper case, sorted, each once (`PROCESS_STATE`, `TICK_60`, ...).
    pub events: Vec<String>,
    /// How many events wait for a free listener before the oldest is dropped.
    pub buffer_size: u32,
    /// supervisord's Python result handler, `module:function`.
    pub result_handler: String,
}

/// The socket of a FastCGI program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FcgiSocket {
    /// `unix:///abs/path` or `tcp://host:port`.
    #[serde(serialize_with = "ser_address")]
    pub address: Address,
    /// listen(2)'s backlog; `None` lets the daemon choose.
    pub backlog: Option<u32>,
    /// A unix socket's owner (`socket_owner`, or the program's user when that differs from
    /// the daemon's).
    pub owner: Option<Owner>,
    /// A unix socket's mode (`socket_mode`, default 0700); `None` for TCP.
    pub mode: Option<u32>,
}

/// `*_logfile_compress`: how rotated log backups are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogCompress {
    Gzip,
    Zstd,
}

impl LogCompress {
    pub const ALL: [LogCompress; 2] = [LogCompress::Gzip, LogCompress::Zstd];

    /// The suffix of a compressed backup's name.
    pub fn ext(self) -> &'static str {
        match self {
            LogCompress::Gzip => ".gz",
            LogCompress::Zstd => ".zst",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogCompress::Gzip => "gzip",
            LogCompress::Zstd => "zstd",
        }
    }
}

/// `log_format`: how a process's captured output is written to its log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    /// Its number among the program's processes: numprocs_start, numprocs_start + 1, ...
    /// (`%(process_num)d`); 0 for a program of one process.
    pub process_num: u32,
    /// The command as written, after expansions.
    pub command: String,
    /// The command split into words, as `shlex.split` does; never empty.
    pub argv: Vec<String>,
    pub priority: i32,
    pub autostart: bool,
    pub autorestart: AutoRestart,
    #[serde(serialize_with = "ser_secs")]
    pub startsecs: Duration,
    /// Failed starts allowed before FATAL; [`INFINITE_RETRIES`] for `infinite`.
    #[serde(serialize_with = "ser_retries")]
    pub startretries: u32,
    /// The waits between failed starts (`backoff`, `backoff_initial`, `backoff_max`,
    /// `backoff_jitter`, `backoff_reset`).
    pub backoff: Backoff,
    pub exitcodes: Vec<i32>,
    /// A one-shot program (`oneshot`): expected to exit. An exit with a code in exitcodes,
    /// even before startsecs, is its success ("completed"): EXITED, never restarted.
    pub oneshot: bool,
    /// What must be started, ready or completed before this process starts (`depends_on`);
    /// every entry names at least one process, and there is no cycle.
    pub depends_on: Vec<Dependency>,
    /// What makes it RUNNING (`ready`): startsecs, READY=1 on its notify socket, or its
    /// readiness probe.
    pub ready: Ready,
    /// With `ready = "notify"`: a start not ready within this long is a failed start
    /// (`ready_timeout`; `None`, the default, waits as long as it takes).
    #[serde(serialize_with = "ser_opt_secs")]
    pub ready_timeout: Option<Duration>,
    /// With `ready = "notify"`: once RUNNING, it must send WATCHDOG=1 at least this often or
    /// be restarted (`watchdog_sec`; the child gets WATCHDOG_USEC).
    #[serde(serialize_with = "ser_opt_secs")]
    pub watchdog_sec: Option<Duration>,
    /// `readiness_probe`: with `ready = "probe"` it gates RUNNING; otherwise it only reports
    /// (status, health service, metrics).
    pub readiness_probe: Option<Probe>,
    /// `liveness_probe`: while RUNNING, `failure_threshold` failures in a row restart it.
    pub liveness_probe: Option<Probe>,
    #[serde(serialize_with = "ser_signal")]
    pub stopsignal: Signal,
    #[serde(serialize_with = "ser_secs")]
    pub stopwaitsecs: Duration,
    pub stopasgroup: bool,
    pub killasgroup: bool,
    /// What a stop ends (`kill_mode`); without it, stopasgroup and killasgroup decide.
    pub kill_mode: Option<KillMode>,
    /// Its cgroup's resource limits (`memory_max`, `cpu_max`, ...).
    pub limits: Limits,
    /// Run as this user (name or numeric uid), with its groups, HOME, USER and LOGNAME.
    pub user: Option<String>,
    /// chdir here before exec.
    pub directory: Option<PathBuf>,
    pub umask: Option<u32>,
    /// The program's environment merged over the daemon's `environment`; minderd adds the
    /// SUPERVISOR_* and MINDER_* variables when it spawns.
    pub environment: BTreeMap<String, String>,
    pub redirect_stderr: bool,
    /// Prefix every captured line with the time minderd read it, `YYYY-MM-DD HH:MM:SS,mmm `
    /// (minder's extension; supervisor #553).
    pub log_timestamps: bool,
    /// How captured output is written: as it came (`text`), or one JSON object per line
    /// (`json`: time, process, channel, line).
    pub log_format: LogFormat,
    pub stdout_logfile: LogTarget,
    /// Rotate the stdout log at this size (default 50MB); 0 never rotates.
    pub stdout_logfile_maxbytes: u64,
    /// How many rotated stdout logs to keep (default 10).
    pub stdout_logfile_backups: u32,
    /// Compress rotated stdout backups (`stdout_logfile_compress`, Supervisor #322).
    pub stdout_logfile_compress: Option<LogCompress>,
    /// Capture mode's buffer: text between `<!--XSUPERVISOR:BEGIN-->` and
    /// `<!--XSUPERVISOR:END-->` on stdout becomes a PROCESS_COMMUNICATION event; 0 is off.
    pub stdout_capture_maxbytes: u64,
    /// Emit a PROCESS_LOG_STDOUT event for every stdout write.
    pub stdout_events_enabled: bool,
    /// Also send stdout to syslog, tagged with the process name.
    pub stdout_syslog: bool,
    pub stderr_logfile: LogTarget,
    pub stderr_logfile_maxbytes: u64,
    pub stderr_logfile_backups: u32,
    pub stderr_logfile_compress: Option<LogCompress>,
    pub stderr_capture_maxbytes: u64,
    pub stderr_events_enabled: bool,
    pub stderr_syslog: bool,
    /// SUPERVISOR_SERVER_URL for this process; `None` (`AUTO`) means the daemon's own
    /// address (a unix listener first, else a TCP one).
    pub serverurl: Option<String>,
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

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn ser_retries<S: serde::Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
    if *n == INFINITE_RETRIES {
        s.serialize_str("infinite")
    } else {
        s.serialize_u32(*n)
    }
}

fn ser_signal<S: serde::Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(sig.as_str().trim_start_matches("SIG"))
}

fn ser_address<S: serde::Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(a)
}

fn ser_addresses<S: serde::Serializer>(list: &[Address], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(ToString::to_string))
}

fn ser_credentials<S: serde::Serializer>(
    map: &BTreeMap<Address, Credentials>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(a, c)| (a.to_string(), c)))
}

/// What the machine supplies to a configuration: the environment (`%(ENV_X)s`, `~`, the
/// temporary directory), the host name (`%(host_node_name)s`) and the current directory
/// (relative paths). [`load`] takes them from this process; tests pin them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub env: BTreeMap<String, String>,
    pub host_node_name: String,
    pub cwd: PathBuf,
    /// Check what must exist on the machine that runs the configuration: users, groups, the
    /// directories of log files, `directory`, TLS and token files. On by default; off for
    /// `minderd --check-config --no-host-checks`, which validates a configuration on another
    /// machine (a CI pipeline) than the one it is for. Everything else is checked either way.
    pub host_checks: bool,
}

impl Context {
    /// This process's environment, host name and current directory.
    pub fn from_process() -> Context {
        Context::with_env(std::env::vars().collect())
    }

    /// `env`, with this machine's host name and this process's current directory.
    pub fn with_env(env: BTreeMap<String, String>) -> Context {
        Context {
            env,
            host_node_name: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            host_checks: true,
        }
    }
}

/// Reads and resolves the configuration at `path`, with `MINDER_…` environment overrides.
///
/// A file whose name ends in `.toml` is minder's native format; anything else is read as
/// supervisord.conf, exactly as supervisord 4.3 reads it.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_in(path, &Context::from_process())
}

/// [`load`], with the environment given explicitly (for `%(ENV_X)s` and `MINDER_…`).
pub fn load_with_env(path: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
    load_in(path, &Context::with_env(env.clone()))
}

/// [`load`], with everything the machine supplies given explicitly.
pub fn load_in(path: &Path, ctx: &Context) -> Result<Config, ConfigErrors> {
    let path = absolute(path, &ctx.cwd)
        .map_err(|e| ConfigErrors::one(Diagnostic::new(Origin::file(path, None), "", e)))?;
    let raw = if is_toml(&path) { toml::read(&path, ctx)? } else { ini::read(&path, ctx)? };
    resolve::resolve(&raw, ctx)
}

/// Whether `path` names a native TOML configuration (by its extension).
pub fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// The configuration file's absolute path, normalized as Python's `os.path.abspath` does
/// (supervisord derives `%(here)s` from it).
fn absolute(path: &Path, cwd: &Path) -> Result<PathBuf, String> {
    let full = values::normpath(&cwd.join(path));
    let meta = std::fs::metadata(&full).map_err(|e| format!("cannot read the configuration file: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a configuration file".into());
    }
    Ok(full)
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
    // supervisord's own search path, in its order (options.py `Options.__init__`): next to
    // the binary first, then the current directory, then /etc.
    let here = std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf));
    if let Some(here) = here {
        paths.push(here.join("etc/supervisord.conf"));
        paths.push(here.join("supervisord.conf"));
    }
    for p in [
        "supervisord.conf",
        "etc/supervisord.conf",
        "/etc/supervisord.conf",
        "/etc/supervisor/supervisord.conf",
    ] {
        paths.push(PathBuf::from(p));
    }
    paths
}

/// The first configuration file in [`search_paths`] that exists.
pub fn find() -> Option<PathBuf> {
    search_paths().into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_ends_with_supervisords_own() {
        let paths = search_paths();
        let tail: Vec<String> = paths[paths.len() - 4..].iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            tail,
            [
                "supervisord.conf",
                "etc/supervisord.conf",
                "/etc/supervisord.conf",
                "/etc/supervisor/supervisord.conf"
            ]
        );
        assert_eq!(paths[0], PathBuf::from("minder.toml"));
        assert!(paths.iter().any(|p| p.ends_with("etc/supervisord.conf") && p.is_absolute()));
    }

    fn ctx(dir: &Path) -> Context {
        Context {
            env: [("HOME".to_string(), "/home/t".to_string())].into(),
            host_node_name: "host".into(),
            cwd: dir.to_path_buf(),
            host_checks: true,
        }
    }

    #[test]
    fn toml_has_the_supervisord_sections_too() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("minder.toml");
        std::fs::write(
            &path,
            r#"
[daemon]
listen = ["unix:///run/m.sock"]
[daemon.credentials."unix:///run/m.sock"]
username = "u"
password = "p"

[inet_http_server]
port = ":9001"
username = "admin"
password = "{SHA}82ab876d1387bfafe46cc1c8a2ef074eae50cb1d"

[ctl]
serverurl = "http://127.0.0.1:9001"
prompt = "m"

[eventlistener.watch]
command = "/usr/bin/watch"
events = "PROCESS_STATE, tick_60"

[fcgi-program.php]
command = "/usr/bin/php-cgi"
socket = "unix:///run/%(program_name)s.sock"
socket_mode = "0660"

[rpcinterface.supervisor]
"supervisor.rpcinterface_factory" = "supervisor.rpcinterface:make_main_rpcinterface"

[typo]
x = 1
"#,
        )?;
        let c = load_in(&path, &ctx(dir.path())).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(
            c.daemon.listen,
            [Address::Unix("/run/m.sock".into()), Address::Tcp("0.0.0.0:9001".into())]
        );
        assert_eq!(c.daemon.credentials.len(), 2);
        assert!(c.daemon.nodaemon, "a TOML configuration stays in the foreground");
        assert_eq!(c.daemon.logfile, None);
        assert_eq!(c.daemon.identifier, "minder");
        assert_eq!(
            c.client.as_ref().map(|cl| cl.serverurl.clone()),
            Some(Address::Tcp("127.0.0.1:9001".into()))
        );
        let watch = c.groups.iter().find(|g| g.name == "watch").expect("pool");
        assert_eq!(
            watch.kind,
            GroupKind::EventListener(EventListenerPool {
                events: vec!["PROCESS_STATE".into(), "TICK_60".into()],
                buffer_size: 10,
                result_handler: "supervisor.dispatchers:default_handler".into(),
            })
        );
        assert_eq!(watch.priority, -1);
        let php = c.groups.iter().find(|g| g.name == "php").expect("fcgi");
        assert_eq!(
            php.kind,
            GroupKind::FcgiProgram(FcgiSocket {
                address: Address::Unix("/run/php.sock".into()),
                backlog: None,
                owner: None,
                mode: Some(0o660),
            })
        );
        assert_eq!(c.rpcinterfaces.len(), 1);
        let warned: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert!(warned.iter().any(|w| w.contains("typo") && w.contains("unknown section")), "{warned:?}");
        Ok(())
    }

    #[test]
    fn log_options_read_the_same_from_toml_and_supervisord_conf() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("a.conf"),
            "[supervisord]\n[program:x]\ncommand=/bin/cat\nlog_format=json\n\
             stdout_logfile_compress=gzip\nstderr_logfile_compress=zstd\n",
        )?;
        std::fs::write(
            dir.path().join("a.toml"),
            "[program.x]\ncommand = \"/bin/cat\"\nlog_format = \"json\"\n\
             stdout_logfile_compress = \"gzip\"\nstderr_logfile_compress = \"zstd\"\n",
        )?;
        for file in ["a.conf", "a.toml"] {
            let c = load_in(Path::new(file), &ctx(dir.path())).map_err(|e| anyhow::anyhow!("{e}"))?;
            let p = c.processes().next().expect("x");
            assert_eq!(p.log_format, LogFormat::Json, "{file}");
            assert_eq!(p.stdout_logfile_compress, Some(LogCompress::Gzip), "{file}");
            assert_eq!(p.stderr_logfile_compress, Some(LogCompress::Zstd), "{file}");
        }
        std::fs::write(
            dir.path().join("b.conf"),
            "[supervisord]\n[program:x]\ncommand=/bin/cat\nstdout_logfile_compress=lz4\nlog_format=xml\n",
        )?;
        let e = load_in(Path::new("b.conf"), &ctx(dir.path())).expect_err("refused").to_string();
        assert!(
            e.contains("b.conf:4")
                && e.contains("stdout_logfile_compress")
                && e.contains("expected gzip, zstd or none"),
            "{e}"
        );
        assert!(e.contains("b.conf:5") && e.contains("log_format") && e.contains("expected text"), "{e}");
        Ok(())
    }

    #[test]
    fn the_extension_chooses_the_front_end() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // The same text is INI in a .conf and a TOML error in a .toml.
        let text = "[supervisord]\n[program:x]\ncommand=/bin/cat\n";
        std::fs::write(dir.path().join("a.conf"), text)?;
        std::fs::write(dir.path().join("a.toml"), text)?;
        let c = load_in(Path::new("a.conf"), &ctx(dir.path())).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(c.processes().count(), 1);
        assert_eq!(c.daemon.identifier, "supervisor");
        assert_eq!(c.daemon.logfile, Some(dir.path().join("supervisord.log")));
        let err = load_in(Path::new("a.toml"), &ctx(dir.path())).expect_err("not TOML");
        assert!(err.to_string().contains("a.toml"), "{err}");
        Ok(())
    }

    #[test]
    fn the_default_prompt_follows_the_format() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("m.toml"), "[ctl]\nserverurl = \"unix:///run/m.sock\"\n")?;
        std::fs::write(dir.path().join("s.conf"), "[supervisord]\n[supervisorctl]\n")?;
        let prompt = |name: &str| -> anyhow::Result<Option<String>> {
            let c = load_in(Path::new(name), &ctx(dir.path())).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(c.client.map(|cl| cl.prompt))
        };
        assert_eq!(prompt("m.toml")?.as_deref(), Some("minder"));
        assert_eq!(prompt("s.conf")?.as_deref(), Some("supervisor"));
        Ok(())
    }

    #[test]
    fn a_section_repeated_across_toml_includes_is_warned_about() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("conf.d"))?;
        std::fs::write(
            dir.path().join("m.toml"),
            "[include]\nfiles = [\"conf.d/*.toml\"]\n\n[program.web]\ncommand = \"/bin/cat\"\n",
        )?;
        std::fs::write(dir.path().join("conf.d/a.toml"), "[program.api]\ncommand = \"/bin/cat\"\n")?;
        std::fs::write(dir.path().join("conf.d/b.toml"), "[program.web]\nautostart = false\n")?;
        let c = load_in(Path::new("m.toml"), &ctx(dir.path())).map_err(|e| anyhow::anyhow!("{e}"))?;
        let warned: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        let main = dir.path().join("m.toml").display().to_string();
        assert!(
            warned.iter().any(|w| w.contains("conf.d/b.toml:1: program.web")
                && w.contains(&format!("also given at {main}:4"))),
            "{warned:?}"
        );
        assert_eq!(warned.iter().filter(|w| w.contains("also given")).count(), 1, "{warned:?}");
        // Still merged, as before.
        let web = c.processes().find(|p| p.name == "web").expect("web");
        assert!(!web.autostart);
        Ok(())
    }

    #[test]
    fn a_fifo_or_device_is_refused_as_main_file_or_include() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        nix::unistd::mkfifo(&dir.path().join("fifo.conf"), nix::sys::stat::Mode::S_IRWXU)?;
        let err = load_in(Path::new("fifo.conf"), &ctx(dir.path())).expect_err("a FIFO is refused");
        assert!(err.to_string().contains("fifo.conf: is a named pipe (FIFO)"), "{err}");
        let err = load_in(Path::new("/dev/zero"), &ctx(dir.path())).expect_err("a device is refused");
        assert!(err.to_string().contains("/dev/zero: is a character device"), "{err}");
        for (main, include, text) in [
            ("s.conf", "inc.conf", "[supervisord]\n[include]\nfiles = inc.conf\n"),
            ("m.toml", "inc.toml", "[include]\nfiles = [\"inc.toml\"]\n"),
        ] {
            std::fs::write(dir.path().join(main), text)?;
            nix::unistd::mkfifo(&dir.path().join(include), nix::sys::stat::Mode::S_IRWXU)?;
            // Before, the INI reader blocked here for a writer, and the TOML one dropped the
            // include silently.
            let err = load_in(Path::new(main), &ctx(dir.path())).expect_err("a FIFO include is refused");
            assert!(
                err.to_string().contains(&format!("{include}: [include] files: is a named pipe"))
                    || err.to_string().contains(&format!("{include}: is a named pipe")),
                "{err}"
            );
        }
        Ok(())
    }

    #[test]
    fn passwords() {
        assert_eq!(Password::parse("s3cret"), Ok(Password::Plain("s3cret".into())));
        let sha = "{SHA}82ab876d1387bfafe46cc1c8a2ef074eae50cb1d";
        let parsed = Password::parse(sha).expect("a digest");
        assert_eq!(parsed, Password::Sha1("82ab876d1387bfafe46cc1c8a2ef074eae50cb1d".into()));
        assert_eq!(parsed.never_matches(), None);
        assert_eq!(parsed.as_written(), sha);
        // Supervisor accepts any {SHA} value; one no digest can equal gets a warning.
        for never in ["{SHA}abc", "{SHA}82AB876D1387BFAFE46CC1C8A2EF074EAE50CB1D", "{SHA}"] {
            let p = Password::parse(never).expect("accepted as Supervisor accepts it");
            assert_eq!(p.as_written(), never, "kept as written");
            assert!(p.never_matches().is_some_and(|w| w.contains("can never match")), "{never}");
        }
    }
}
