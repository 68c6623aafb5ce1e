//! Parsers for option values, each accepting what supervisord's `datatypes.py` accepts (as
//! strings, for INI) and the natural TOML type as well. Each returns a message that says what
//! is allowed; the caller adds the file, line and option.

use std::collections::BTreeMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::Raw;
use crate::signal::{self, Signal};

pub type Parsed<T> = Result<T, String>;

fn got(raw: &Raw) -> String {
    match raw {
        Raw::Str(s) => format!("{s:?}"),
        Raw::Int(n) => n.to_string(),
        Raw::Float(x) => x.to_string(),
        Raw::Bool(b) => b.to_string(),
        other => other.kind().to_string(),
    }
}

/// `true/false/yes/no/on/off/1/0`, in any case.
pub fn boolean(raw: &Raw) -> Parsed<bool> {
    match raw {
        Raw::Bool(b) => Ok(*b),
        Raw::Int(1) => Ok(true),
        Raw::Int(0) => Ok(false),
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(true),
            "no" | "false" | "off" | "0" => Ok(false),
            _ => Err(format!("expected true or false (also yes/no, on/off, 1/0), got {}", got(raw))),
        },
        _ => Err(format!("expected true or false, got {}", got(raw))),
    }
}

/// A whole number, as Python's `int()` reads it (surrounding blanks allowed).
pub fn integer(raw: &Raw) -> Parsed<i64> {
    match raw {
        Raw::Int(n) => Ok(*n),
        Raw::Str(s) => s
            .trim()
            .replace('_', "")
            .parse::<i64>()
            .map_err(|_| format!("expected a whole number, got {}", got(raw))),
        _ => Err(format!("expected a whole number, got {}", got(raw))),
    }
}

/// A whole number within `lo..=hi`.
pub fn integer_in(raw: &Raw, lo: i64, hi: i64) -> Parsed<i64> {
    let n = integer(raw)?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else if hi == i64::MAX {
        Err(format!("must be at least {lo}, got {n}"))
    } else {
        Err(format!("must be between {lo} and {hi}, got {n}"))
    }
}

/// Seconds: a whole number as in supervisord, or (minder's extension) a fraction like `0.5`.
pub fn seconds(raw: &Raw) -> Parsed<Duration> {
    let value = match raw {
        Raw::Int(n) => *n as f64,
        Raw::Float(x) => *x,
        Raw::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("expected a number of seconds like 10 or 0.5, got {}", got(raw)))?,
        _ => return Err(format!("expected a number of seconds, got {}", got(raw))),
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("expected a number of seconds of 0 or more, got {}", got(raw)));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("{} seconds is too long", got(raw)))
}

/// A size in bytes: `1024`, `50MB`, `1GB`, `10kb` (KB, MB and GB are powers of 1024).
pub fn byte_size(raw: &Raw) -> Parsed<u64> {
    let bad = || format!("expected a size like 1024, 10KB, 50MB or 1GB, got {}", got(raw));
    match raw {
        Raw::Int(n) => u64::try_from(*n).map_err(|_| bad()),
        Raw::Str(s) => {
            let v = s.trim().to_ascii_lowercase();
            let (digits, mult) = [("kb", 1u64 << 10), ("mb", 1 << 20), ("gb", 1 << 30)]
                .iter()
                .find_map(|(suffix, m)| v.strip_suffix(suffix).map(|d| (d.trim(), *m)))
                .unwrap_or((v.as_str(), 1));
            let n: u64 = digits.parse().map_err(|_| bad())?;
            n.checked_mul(mult).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// A umask or file mode in octal: `"022"` (as supervisord reads it) or a TOML integer such as
/// `0o022`.
pub fn octal(raw: &Raw) -> Parsed<u32> {
    let bad = || format!("expected an octal mode like \"022\" or 0o022, got {}", got(raw));
    let n = match raw {
        Raw::Int(n) => u32::try_from(*n).map_err(|_| bad())?,
        Raw::Str(s) => {
            let t = s.trim();
            let t = t.strip_prefix("0o").unwrap_or(t);
            u32::from_str_radix(t, 8).map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    if n > 0o7777 {
        return Err(bad());
    }
    Ok(n)
}

/// A signal by name (`TERM`, `SIGTERM`) or number.
pub fn signal(raw: &Raw) -> Parsed<Signal> {
    match raw {
        Raw::Str(s) => signal::parse(s),
        Raw::Int(n) => signal::parse(&n.to_string()),
        _ => Err(format!("expected a signal name like TERM, got {}", got(raw))),
    }
}

/// Exit codes 0-255: a list (`[0, 2]`) or supervisord's comma list (`"0,2"`).
pub fn exitcodes(raw: &Raw) -> Parsed<Vec<i32>> {
    let bad = || format!("expected exit codes from 0 to 255 like \"0,2\" or [0, 2], got {}", got(raw));
    let items: Vec<Raw> = match raw {
        Raw::List(items) => items.clone(),
        Raw::Int(_) => vec![raw.clone()],
        // supervisord's list_of_ints: an empty value is an empty list (no exit is expected).
        Raw::Str(s) if s.is_empty() => Vec::new(),
        Raw::Str(s) => s.split(',').map(|x| Raw::Str(x.trim().to_string())).collect(),
        _ => return Err(bad()),
    };
    items
        .iter()
        .map(|item| {
            integer(item)
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| (0..=255).contains(n))
                .ok_or_else(bad)
        })
        .collect()
}

/// How a process that exits from RUNNING is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoRestart {
    /// Never restarted.
    False,
    /// Restarted only when its exit code is not in exitcodes.
    Unexpected,
    /// Always restarted.
    True,
}

pub fn autorestart(raw: &Raw) -> Parsed<AutoRestart> {
    let bad = || format!("expected true, false or unexpected, got {}", got(raw));
    match raw {
        Raw::Bool(true) => Ok(AutoRestart::True),
        Raw::Bool(false) => Ok(AutoRestart::False),
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(AutoRestart::True),
            "no" | "false" | "off" | "0" => Ok(AutoRestart::False),
            "unexpected" => Ok(AutoRestart::Unexpected),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `startretries = "infinite"`: retried for ever (kept as the largest count, which no
/// number of failures reaches).
pub const INFINITE_RETRIES: u32 = u32::MAX;

/// `startretries`: a count as in supervisord, or (minder's extension) `infinite`.
pub fn startretries(raw: &Raw) -> Parsed<u32> {
    let bad = || format!("expected a number of retries like 3, or \"infinite\", got {}", got(raw));
    match raw {
        Raw::Str(s) if s.trim().eq_ignore_ascii_case("infinite") => Ok(INFINITE_RETRIES),
        Raw::Int(_) | Raw::Str(_) => {
            let n = integer(raw).map_err(|_| bad())?;
            // u32::MAX itself would read as infinite: refuse it as a count.
            u32::try_from(n).ok().filter(|n| *n < INFINITE_RETRIES).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// A duration: a number of seconds (`10`, `0.5`) or a number with a unit, `ms`, `s`, `m` or
/// `h` (`"500ms"`, `"1s"`, `"2m"`), as the issue's TOML writes them.
pub fn duration(raw: &Raw) -> Parsed<Duration> {
    let bad =
        || format!("expected a duration like 10, 0.5, \"500ms\", \"1s\", \"2m\" or \"1h\", got {}", got(raw));
    match raw {
        Raw::Int(_) | Raw::Float(_) => seconds(raw),
        Raw::Str(s) => {
            let t = s.trim().to_ascii_lowercase();
            let (digits, unit) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
                .iter()
                .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|d| (d.trim().to_string(), *m)))
                .unwrap_or((t.clone(), 1.0));
            let n: f64 = digits.parse().map_err(|_| bad())?;
            let secs = n * unit;
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad());
            }
            Duration::try_from_secs_f64(secs).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// What a dependency must have reached before its dependent starts (`depends_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Spawned (STARTING with a child, or RUNNING), or completed.
    Started,
    /// RUNNING (past startsecs, or READY=1 with `ready = "notify"`), or a one-shot completed.
    Ready,
    /// EXITED with a code in its exitcodes (a one-shot program's success).
    Completed,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Completed => "completed",
        }
    }
}

/// One entry of `depends_on`: which processes, and what they must have reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Dependency {
    /// `NAME` (a program, a process's full name, or a group: all of its processes) or
    /// `GROUP:NAME` (a program or process of that group).
    pub target: String,
    pub condition: Condition,
}

impl Dependency {
    /// Reads `db`, `db:ready`, `site:web:started`. The last `:part`, when it names a condition,
    /// is the condition; without one it is `started` (systemd's After=, and what `db` alone
    /// reads as).
    pub fn parse(text: &str) -> Parsed<Dependency> {
        let text = text.trim();
        let (target, condition) = match text.rsplit_once(':') {
            Some((t, "started")) => (t, Condition::Started),
            Some((t, "ready")) => (t, Condition::Ready),
            Some((t, "completed")) => (t, Condition::Completed),
            _ => (text, Condition::Started),
        };
        let parts: Vec<&str> = target.split(':').collect();
        if target.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty() || p.contains(' ')) {
            return Err(format!(
                "{text:?} is not a dependency: write NAME or GROUP:NAME, optionally followed by :started, :ready or :completed"
            ));
        }
        Ok(Dependency { target: target.to_string(), condition })
    }

    /// Whether the process `group:name` of program `program` is one this names.
    pub fn matches(&self, group: &str, name: &str, program: &str) -> bool {
        match self.target.split_once(':') {
            Some((g, n)) => g == group && (n == name || n == program),
            None => {
                let t = self.target.as_str();
                t == program || t == group || super::full_name(group, name) == t
            }
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.target, self.condition.name())
    }
}

/// `depends_on`: a TOML list, or a comma list in supervisord.conf.
pub fn depends_on(raw: &Raw) -> Parsed<Vec<Dependency>> {
    let mut out: Vec<Dependency> = Vec::new();
    for item in comma_list(raw)? {
        let d = Dependency::parse(&item)?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// What makes a process RUNNING (`ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// Up for startsecs (supervisord).
    Startsecs,
    /// `READY=1` on the `NOTIFY_SOCKET` minderd gives it (systemd's protocol).
    Notify,
    /// Its `readiness_probe` has passed `success_threshold` times.
    Probe,
}

/// What a health probe checks (`readiness_probe`, `liveness_probe`): exactly one kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeCheck {
    /// A command, split like `command`, run as the program's user with its environment and
    /// directory: exit 0 passes.
    Exec { command: String, argv: Vec<String> },
    /// A GET of `http://host:port/path`; a status in `status` passes.
    Http { url: String, host: String, port: u16, path: String },
    /// A TCP connect to `host:port`.
    Tcp { address: String },
    /// grpc.health.v1's Check of `service` ("" is the whole server) at `host:port`: SERVING passes.
    Grpc { address: String, service: String },
}

impl ProbeCheck {
    /// The kind's option name: `exec`, `http`, `tcp`, `grpc`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeCheck::Exec { .. } => "exec",
            ProbeCheck::Http { .. } => "http",
            ProbeCheck::Tcp { .. } => "tcp",
            ProbeCheck::Grpc { .. } => "grpc",
        }
    }

    /// The kind's value as written (the command, URL or address).
    pub fn target(&self) -> &str {
        match self {
            ProbeCheck::Exec { command, .. } => command,
            ProbeCheck::Http { url, .. } => url,
            ProbeCheck::Tcp { address } | ProbeCheck::Grpc { address, .. } => address,
        }
    }
}

/// A health probe, with Kubernetes' knobs and defaults (a timeout of 1 s, 3 failures,
/// 1 success, no initial delay); the period is 10 s for a liveness probe as in Kubernetes,
/// and 1 s for a readiness probe, which a start waits on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    pub check: ProbeCheck,
    /// Time between the start of one check and the next.
    #[serde(serialize_with = "super::ser_secs")]
    pub period: Duration,
    /// A check that takes longer fails ("timed out after 1s").
    #[serde(serialize_with = "super::ser_secs")]
    pub timeout: Duration,
    /// Consecutive failures that make it unhealthy (liveness: restarted).
    pub failure_threshold: u32,
    /// Consecutive successes that make it healthy (readiness: RUNNING).
    pub success_threshold: u32,
    /// From the spawn to the first check.
    #[serde(serialize_with = "super::ser_secs")]
    pub initial_delay: Duration,
    /// The HTTP statuses that pass, inclusive (`status = "200-399"`).
    pub status: (u16, u16),
}

/// The options a probe table may hold, for messages.
const PROBE_KEYS: &str =
    "exec, http, tcp or grpc (exactly one), service, period, timeout, failure_threshold, success_threshold, initial_delay, status";

/// `readiness_probe` / `liveness_probe`: a TOML table, or in supervisord.conf the same words
/// as `KEY=VALUE` pairs separated by commas, read like `environment=`:
/// `http="http://127.0.0.1:8000/healthz", period=1s, failure_threshold=3`.
/// `default_period`: see [`Probe`].
pub fn probe(raw: &Raw, default_period: Duration) -> Parsed<Probe> {
    let table: BTreeMap<String, Raw> = match raw {
        Raw::Table(t) => t.clone(),
        Raw::Str(s) => key_value_pairs_as(s, true)?.into_iter().map(|(k, v)| (k, Raw::Str(v))).collect(),
        _ => {
            return Err(format!(
            "expected a table like {{ http = \"http://127.0.0.1:8000/healthz\", period = \"1s\" }}, got {}",
            got(raw)
        ))
        }
    };
    if let Some(k) = table.keys().find(|k| {
        ![
            "exec",
            "http",
            "tcp",
            "grpc",
            "service",
            "period",
            "timeout",
            "failure_threshold",
            "success_threshold",
            "initial_delay",
            "status",
        ]
        .contains(&k.as_str())
    }) {
        return Err(format!("{k:?} is not a probe option; a probe takes {PROBE_KEYS}"));
    }
    let kinds: Vec<&str> =
        ["exec", "http", "tcp", "grpc"].into_iter().filter(|k| table.contains_key(*k)).collect();
    if kinds.len() != 1 {
        return Err(format!(
            "needs exactly one kind of check, exec, http, tcp or grpc; {}",
            if kinds.is_empty() {
                "none is given".to_string()
            } else {
                format!("got {}", kinds.join(" and "))
            }
        ));
    }
    let kind = kinds[0];
    let text = |key: &str| -> Parsed<String> {
        match table.get(key) {
            Some(Raw::Str(s)) => Ok(s.trim().to_string()),
            Some(other) => Err(format!("{key}: expected a string, got {}", got(other))),
            None => Ok(String::new()),
        }
    };
    let value = text(kind)?;
    if table.contains_key("service") && kind != "grpc" {
        return Err("service: only a grpc probe names a service".into());
    }
    if table.contains_key("status") && kind != "http" {
        return Err("status: only an http probe checks a status".into());
    }
    let check = match kind {
        "exec" => {
            let argv =
                shlex_split(&value).map_err(|e| format!("exec: cannot split {value:?} into words: {e}"))?;
            if argv.is_empty() {
                return Err("exec: the command is empty".into());
            }
            ProbeCheck::Exec { command: value, argv }
        }
        "http" => {
            let lower = value.to_ascii_lowercase();
            if lower.starts_with("https://") {
                return Err(format!(
                    "http: {value:?}: https:// is not supported; probe the port with tcp = \"host:port\", or run a checker with exec"
                ));
            }
            let Some(rest) = value.get(7..).filter(|_| lower.starts_with("http://")) else {
                return Err(format!(
                    "http: expected a URL like \"http://127.0.0.1:8000/healthz\", got {value:?}"
                ));
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, "/".to_string()),
            };
            let (host, port) = host_port(authority, Some(80)).map_err(|e| format!("http: {value:?}: {e}"))?;
            ProbeCheck::Http { url: value.clone(), host, port, path }
        }
        _ => {
            host_port(&value, None).map_err(|e| format!("{kind}: {e}"))?;
            if kind == "tcp" {
                ProbeCheck::Tcp { address: value }
            } else {
                ProbeCheck::Grpc { address: value, service: text("service")? }
            }
        }
    };
    let dur = |key: &str, default: Duration| -> Parsed<Duration> {
        table.get(key).map_or(Ok(default), |r| duration(r).map_err(|e| format!("{key}: {e}")))
    };
    let count = |key: &str, default: u32| -> Parsed<u32> {
        table.get(key).map_or(Ok(default), |r| {
            integer_in(r, 1, 1_000_000).map(|n| n as u32).map_err(|e| format!("{key}: {e}"))
        })
    };
    let period = dur("period", default_period)?;
    let timeout = dur("timeout", Duration::from_secs(1))?;
    for (key, d) in [("period", period), ("timeout", timeout)] {
        if d.is_zero() {
            return Err(format!("{key}: must be more than 0"));
        }
    }
    let status = match table.get("status") {
        None => (200, 399),
        Some(r) => {
            let bad = || format!("status: expected a status or a range like \"200-399\", got {}", got(r));
            let t = match r {
                Raw::Int(n) => n.to_string(),
                Raw::Str(s) => s.trim().to_string(),
                _ => return Err(bad()),
            };
            let (lo, hi) = t.split_once('-').unwrap_or((&t, &t));
            let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
            let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
            if !(100..=599).contains(&lo) || !(lo..=599).contains(&hi) {
                return Err(bad());
            }
            (lo, hi)
        }
    };
    Ok(Probe {
        check,
        period,
        timeout,
        failure_threshold: count("failure_threshold", 3)?,
        success_threshold: count("success_threshold", 1)?,
        initial_delay: dur("initial_delay", Duration::ZERO)?,
        status,
    })
}

/// `host:port` (`[::1]:80` for IPv6); the port may be left out when there is a default.
fn host_port(s: &str, default_port: Option<u16>) -> Parsed<(String, u16)> {
    let bad = || format!("expected host:port like 127.0.0.1:8000, got {s:?}");
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6.split_once(']').ok_or_else(bad)?;
            (h, rest.strip_prefix(':'))
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        None => default_port.ok_or_else(bad)?,
    };
    Ok((host.to_string(), port))
}

pub fn ready(raw: &Raw) -> Parsed<Ready> {
    match raw {
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "startsecs" => Ok(Ready::Startsecs),
            "notify" => Ok(Ready::Notify),
            "probe" => Ok(Ready::Probe),
            _ => Err(format!("expected startsecs, notify or probe, got {}", got(raw))),
        },
        _ => Err(format!("expected startsecs, notify or probe, got {}", got(raw))),
    }
}

/// How the wait between failed starts grows (`backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// `backoff_initial` × the number of failures so far: 1 s, 2 s, 3 s… (supervisord's).
    Linear,
    /// `backoff_initial` × 2^(failures − 1): 1 s, 2 s, 4 s, 8 s…
    Exponential,
}

pub fn backoff_kind(raw: &Raw) -> Parsed<BackoffKind> {
    match raw {
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "linear" => Ok(BackoffKind::Linear),
            "exponential" => Ok(BackoffKind::Exponential),
            _ => Err(format!("expected linear or exponential, got {}", got(raw))),
        },
        _ => Err(format!("expected linear or exponential, got {}", got(raw))),
    }
}

/// The wait before retrying a failed start, and how it grows. The default is supervisord's
/// exactly: linear from 1 s, no cap, no jitter, the count reset as soon as it is RUNNING.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Backoff {
    pub kind: BackoffKind,
    /// The first wait (`backoff_initial`, default 1 s).
    #[serde(serialize_with = "super::ser_secs")]
    pub initial: Duration,
    /// No wait is longer (`backoff_max`); `None`: no cap (linear's default, as supervisord),
    /// 60 s being exponential's default.
    #[serde(serialize_with = "super::ser_opt_secs")]
    pub max: Option<Duration>,
    /// A fraction 0–1 (`backoff_jitter`): each wait is shortened by up to this part of it, at
    /// random, so programs failing together do not retry in step. 0 (the default) is exact.
    pub jitter: f64,
    /// `backoff_reset`: when set, an exit from RUNNING before it has been RUNNING this long
    /// counts as one more failed start (BACKOFF, then FATAL past startretries) instead of an
    /// immediate restart, and the count resets only after this long RUNNING. `None`: the
    /// count resets on reaching RUNNING (supervisord).
    #[serde(serialize_with = "super::ser_opt_secs")]
    pub reset: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            kind: BackoffKind::Linear,
            initial: Duration::from_secs(1),
            max: None,
            jitter: 0.0,
            reset: None,
        }
    }
}

impl Backoff {
    /// The wait after failed start number `failures` (1 for the first), before jitter;
    /// `sample` in [0, 1) picks how much jitter takes off. Pure: the caller supplies the
    /// randomness, so tests pin it.
    pub fn wait(&self, failures: u32, sample: f64) -> Duration {
        let n = failures.max(1);
        let base = match self.kind {
            BackoffKind::Linear => self.initial.saturating_mul(n),
            BackoffKind::Exponential => {
                // 2^(n-1), saturating well before Duration overflows.
                let factor = 1u32.checked_shl(n - 1).filter(|_| n <= 31).unwrap_or(u32::MAX);
                self.initial.saturating_mul(factor)
            }
        };
        let capped = match self.max {
            Some(max) => base.min(max),
            None => base,
        };
        let cut = (self.jitter * sample.clamp(0.0, 1.0)).clamp(0.0, 1.0);
        capped.mul_f64(1.0 - cut)
    }
}

/// What a stop ends (`kill_mode`), with systemd's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KillMode {
    /// Every process in the program's cgroup: the stop signal to each, then `cgroup.kill`;
    /// the process is stopped only when its cgroup is empty.
    Cgroup,
    /// The process group (stopasgroup and killasgroup).
    Group,
    /// The main process only.
    Process,
}

pub fn kill_mode(raw: &Raw) -> Parsed<Option<KillMode>> {
    let bad = || format!("expected cgroup, group or process, got {}", got(raw));
    match raw {
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "cgroup" | "control-group" => Ok(Some(KillMode::Cgroup)),
            "group" => Ok(Some(KillMode::Group)),
            "process" => Ok(Some(KillMode::Process)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `*_logfile_compress`: `gzip`, `zstd`, or `none` (also empty or false).
pub fn log_compress(raw: &Raw) -> Parsed<Option<super::LogCompress>> {
    let bad = || format!("expected gzip, zstd or none, got {}", got(raw));
    match raw {
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Some(super::LogCompress::Gzip)),
            "zstd" | "zst" => Ok(Some(super::LogCompress::Zstd)),
            "none" | "" | "false" | "off" => Ok(None),
            _ => Err(bad()),
        },
        Raw::Bool(false) => Ok(None),
        _ => Err(bad()),
    }
}

/// `log_format`: `text` or `json`.
pub fn log_format(raw: &Raw) -> Parsed<super::LogFormat> {
    let bad = || format!("expected text (output as written) or json (one object per line), got {}", got(raw));
    match raw {
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(super::LogFormat::Text),
            "json" => Ok(super::LogFormat::Json),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Resource limits of a program's cgroup (each process gets its own cgroup with them), with
/// systemd's names; `None` leaves the kernel's default. Enforced where the controller is
/// available to minderd's cgroups; elsewhere minderd warns, naming the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Limits {
    /// `memory.max`, bytes.
    pub memory_max: Option<u64>,
    /// `memory.high`, bytes.
    pub memory_high: Option<u64>,
    /// `cpu.weight`, 1–10000 (100 is the default share).
    pub cpu_weight: Option<u32>,
    /// `cpu.max` as a percentage of one CPU (`"50%"`, `"200%"`).
    pub cpu_max_percent: Option<u32>,
    /// `pids.max`.
    pub pids_max: Option<u32>,
    /// `io.weight`, 1–10000.
    pub io_weight: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Each limit that is set: (option, controller, interface file, value to write).
    pub fn files(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(v) = self.memory_max {
            out.push(("memory_max", "memory", "memory.max", v.to_string()));
        }
        if let Some(v) = self.memory_high {
            out.push(("memory_high", "memory", "memory.high", v.to_string()));
        }
        if let Some(v) = self.cpu_weight {
            out.push(("cpu_weight", "cpu", "cpu.weight", v.to_string()));
        }
        if let Some(p) = self.cpu_max_percent {
            // systemd's CPUQuota: the percentage of a 100 ms period.
            out.push(("cpu_max", "cpu", "cpu.max", format!("{} 100000", u64::from(p) * 1000)));
        }
        if let Some(v) = self.pids_max {
            out.push(("pids_max", "pids", "pids.max", v.to_string()));
        }
        if let Some(v) = self.io_weight {
            out.push(("io_weight", "io", "io.weight", format!("default {v}")));
        }
        out
    }
}

/// `cpu_max`: how many CPUs, `0.5` or `2`, or a percentage of one (`"50%%"` — a `%` is
/// written twice, as everywhere in these files); kept as a percentage.
pub fn cpu_percent(raw: &Raw) -> Parsed<u32> {
    let bad = || {
        format!("expected a number of CPUs like 0.5 or 2, or a percentage like \"50%%\", got {}", got(raw))
    };
    let percent = match raw {
        Raw::Int(n) => *n as f64 * 100.0,
        Raw::Float(f) => f * 100.0,
        Raw::Str(s) => match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map_err(|_| bad())?,
            None => s.trim().parse::<f64>().map_err(|_| bad())? * 100.0,
        },
        _ => return Err(bad()),
    };
    if percent.is_finite() && (1.0..=100_000.0).contains(&percent.round()) {
        Ok(percent.round() as u32)
    } else {
        Err(bad())
    }
}

/// Where minderd puts its programs' cgroups (`[daemon] cgroup`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupSetting {
    /// minderd's own cgroup when it may write there (delegated), else a cgroup of its own
    /// under the hierarchy's root; nothing when there is no cgroup v2 hierarchy.
    #[default]
    Auto,
    /// No cgroups: processes are tracked by process group only.
    Off,
    /// This cgroup (a path inside the cgroup v2 hierarchy, like `/minder`).
    Path(String),
}

pub fn cgroup_setting(raw: &Raw) -> Parsed<CgroupSetting> {
    let bad = || format!("expected auto, off or a cgroup path starting with /, got {}", got(raw));
    match raw {
        Raw::Bool(false) => Ok(CgroupSetting::Off),
        Raw::Str(s) => match s.trim() {
            "auto" => Ok(CgroupSetting::Auto),
            "off" | "none" | "false" => Ok(CgroupSetting::Off),
            p if p.starts_with('/') && !p.split('/').any(|c| c == ".." || c == ".") => {
                Ok(CgroupSetting::Path(p.trim_end_matches('/').to_string()))
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// A list of strings: a TOML list, or a string split on `sep` (commas for supervisord's
/// `programs=`, blanks for `[include] files=`).
pub fn string_list(raw: &Raw, sep: Option<char>) -> Parsed<Vec<String>> {
    match raw {
        Raw::List(items) => items
            .iter()
            .map(|i| match i {
                Raw::Str(s) => Ok(s.clone()),
                other => Err(format!("expected a list of strings, but one item is {}", other.kind())),
            })
            .collect(),
        Raw::Str(s) => Ok(match sep {
            Some(c) => s.split(c).map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect(),
            None => s.split_whitespace().map(String::from).collect(),
        }),
        _ => Err(format!("expected a list of strings, got {}", got(raw))),
    }
}

/// supervisord's `list_of_strings`: a comma list with each item stripped, empty items kept
/// (so `programs = a,` names a program "" and is refused, as in supervisord); an empty value
/// is an empty list. A TOML list is taken as it is.
pub fn comma_list(raw: &Raw) -> Parsed<Vec<String>> {
    match raw {
        Raw::Str(s) if s.is_empty() => Ok(Vec::new()),
        Raw::Str(s) => Ok(s.split(',').map(|x| x.trim().to_string()).collect()),
        other => string_list(other, Some(',')),
    }
}

/// Python's `os.path.normpath` on a POSIX path: collapses `//`, `.` and `a/..` lexically,
/// without looking at the file system (supervisord's `normalize_path` uses it).
pub fn normpath(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return PathBuf::from(".");
    }
    // POSIX lets an implementation give "//" a meaning of its own; Python keeps exactly two.
    let lead: &[u8] = if bytes.starts_with(b"//") && !bytes.starts_with(b"///") {
        b"//"
    } else if bytes.starts_with(b"/") {
        b"/"
    } else {
        b""
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in bytes.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if parts.last().is_some_and(|p| *p != b"..") => {
                parts.pop();
            }
            b".." if !lead.is_empty() => {}
            other => parts.push(other),
        }
    }
    let mut out = lead.to_vec();
    out.extend(parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Python's `os.path.expanduser`: `~` and `~/x` from HOME in `env` (else the current user's
/// home), `~name/x` from the password database; anything else unchanged.
pub fn expand_user(p: &str, env: &BTreeMap<String, String>) -> PathBuf {
    let Some(rest) = p.strip_prefix('~') else {
        return PathBuf::from(p);
    };
    let (user, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let home = if user.is_empty() {
        env.get("HOME")
            .map(PathBuf::from)
            .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.dir))
    } else {
        nix::unistd::User::from_name(user).ok().flatten().map(|u| u.dir)
    };
    let Some(home) = home else {
        return PathBuf::from(p);
    };
    // Python strips the home's trailing slash, and gives "/" if nothing is left.
    let joined = format!("{}{tail}", home.to_string_lossy().trim_end_matches('/'));
    PathBuf::from(if joined.is_empty() { "/".to_string() } else { joined })
}

/// Environment variables: a TOML table, or supervisord's `KEY="value",KEY2=value2`.
///
/// The string form is read exactly as supervisord's `dict_of_key_value_pairs` reads it,
/// quirks included, so a supervisord.conf means the same thing to both.
pub fn environment(raw: &Raw) -> Parsed<BTreeMap<String, String>> {
    match raw {
        Raw::Table(t) => t
            .iter()
            .map(|(k, v)| match v {
                Raw::Str(s) => Ok((k.clone(), s.clone())),
                Raw::Int(n) => Ok((k.clone(), n.to_string())),
                Raw::Float(x) => Ok((k.clone(), x.to_string())),
                Raw::Bool(b) => Ok((k.clone(), b.to_string())),
                other => Err(format!("the value of {k} must be a string, not {}", other.kind())),
            })
            .collect(),
        Raw::Str(s) => key_value_pairs(s),
        _ => Err(format!(
            "expected a table like {{ KEY = \"value\" }} or a string like KEY=\"value\",KEY2=\"v2\", got {}",
            got(raw)
        )),
    }
}

fn key_value_pairs(arg: &str) -> Parsed<BTreeMap<String, String>> {
    key_value_pairs_as(arg, false)
}

/// As supervisord reads `KEY=value` pairs; with `one_quote_pair`, a quoted value loses only its
/// own pair of quotes (supervisord strips every quote at either end, so `"sh -c 'x'"` would
/// lose the inner `'` too: fine for its environment, wrong for a probe's command).
fn key_value_pairs_as(arg: &str, one_quote_pair: bool) -> Parsed<BTreeMap<String, String>> {
    let tokens = python_shlex_tokens(arg, "/.+-():")?;
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let kv = &tokens[i..tokens.len().min(i + 3)];
        if kv.len() != 3 || kv[1] != "=" {
            return Err(format!(
                "expected KEY=value pairs separated by commas (quote values that contain commas or spaces), got {arg:?}"
            ));
        }
        let v = &kv[2];
        let value = match (one_quote_pair, v.chars().next()) {
            (true, Some(q @ ('"' | '\''))) if v.len() >= 2 && v.ends_with(q) => v[1..v.len() - 1].to_string(),
            _ => v.trim_matches(|c| c == '\'' || c == '"').to_string(),
        };
        out.insert(kv[0].clone(), value);
        i += 4;
    }
    Ok(out)
}

/// The tokens Python's `shlex.shlex(s)` yields in its default, non-POSIX mode, with
/// `extra_word_chars` added to `wordchars`: runs of word characters, quoted strings (quotes
/// kept), and every other non-blank character on its own; `#` comments out the rest of a line.
fn python_shlex_tokens(s: &str, extra_word_chars: &str) -> Parsed<Vec<String>> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || extra_word_chars.contains(c);
    let is_blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    let skip_line = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        for c in chars.by_ref() {
            if c == '\n' {
                break;
            }
        }
    };
    while let Some(c) = chars.next() {
        if is_blank(c) {
            continue;
        }
        if c == '#' {
            skip_line(&mut chars);
            continue;
        }
        if c == '\'' || c == '"' {
            let mut tok = String::from(c);
            loop {
                match chars.next() {
                    None => return Err(format!("no closing quotation in {s:?}")),
                    Some(q) if q == c => {
                        tok.push(q);
                        break;
                    }
                    Some(other) => tok.push(other),
                }
            }
            tokens.push(tok);
            continue;
        }
        if !is_word(c) {
            tokens.push(c.to_string());
            continue;
        }
        // A word: word characters and quote characters run on (non-POSIX shlex keeps them).
        let mut tok = String::from(c);
        while let Some(&n) = chars.peek() {
            if is_word(n) || n == '\'' || n == '"' {
                tok.push(n);
                chars.next();
            } else if n == '#' {
                // Non-POSIX shlex drops the comment and carries on with the same word.
                chars.next();
                skip_line(&mut chars);
            } else {
                break;
            }
        }
        tokens.push(tok);
    }
    Ok(tokens)
}

/// Why [`shlex_split`] could not split a command: Python's `ValueError` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// A quote was opened and never closed.
    NoClosingQuotation,
    /// The text ends with a backslash that escapes nothing.
    NoEscapedCharacter,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitError::NoClosingQuotation => "No closing quotation",
            SplitError::NoEscapedCharacter => "No escaped character",
        })
    }
}

/// Python's `shlex.split(s)`, which supervisord applies to `command`: a port of
/// `shlex.read_token` with `posix=True`, `whitespace_split=True` and no comment characters.
///
/// It is not a shell's splitting, and differs from one (and from the `shlex` crate) where it
/// matters: inside double quotes a backslash escapes only `"` and `\` and is otherwise kept
/// (`"\$HOME"` stays `\$HOME`); outside quotes a backslash escapes any character, a newline
/// included (kept as a newline, not a line continuation); `#` is an ordinary character;
/// only space, tab, CR and LF separate words; `''` and `""` are empty words.
pub fn shlex_split(s: &str) -> Result<Vec<String>, SplitError> {
    /// `read_token`'s states: between words, in a word, in quotes, after a backslash (with
    /// the state to return to).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Blank,
        Word,
        Quote(char),
        Escape(Escaped),
    }
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Escaped {
        Word,
        DoubleQuote,
    }
    let is_blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut words = Vec::new();
    let mut token = String::new();
    // A word that had quotes in it is a word even when empty (`''`).
    let mut quoted = false;
    let mut state = State::Blank;
    for c in s.chars() {
        state = match state {
            State::Blank | State::Word if is_blank(c) => {
                if state == State::Word || quoted {
                    words.push(std::mem::take(&mut token));
                    quoted = false;
                }
                State::Blank
            }
            State::Blank | State::Word => match c {
                '\\' => State::Escape(Escaped::Word),
                '\'' | '"' => State::Quote(c),
                _ => {
                    token.push(c);
                    State::Word
                }
            },
            State::Quote(q) => {
                quoted = true;
                if c == q {
                    State::Word
                } else if c == '\\' && q == '"' {
                    State::Escape(Escaped::DoubleQuote)
                } else {
                    token.push(c);
                    state
                }
            }
            State::Escape(back) => {
                // In double quotes the backslash stays unless it escapes `"` or `\`.
                if back == Escaped::DoubleQuote && c != '"' && c != '\\' {
                    token.push('\\');
                }
                token.push(c);
                match back {
                    Escaped::Word => State::Word,
                    Escaped::DoubleQuote => State::Quote('"'),
                }
            }
        };
    }
    match state {
        State::Quote(_) => Err(SplitError::NoClosingQuotation),
        State::Escape(_) => Err(SplitError::NoEscapedCharacter),
        State::Word => {
            words.push(token);
            Ok(words)
        }
        State::Blank => {
            if quoted {
                words.push(token);
            }
            Ok(words)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Raw {
        Raw::Str(x.to_string())
    }

    #[test]
    fn commands_split_as_pythons_shlex_split() {
        // Every expected value is what Python 3's shlex.split gives for the same text.
        let ok = |s: &str, words: &[&str]| {
            assert_eq!(shlex_split(s), Ok(words.iter().map(|w| w.to_string()).collect()), "{s:?}");
        };
        ok(r#"bash -c "echo \$HOME""#, &["bash", "-c", r"echo \$HOME"]);
        ok(r"a\ b c", &["a b", "c"]);
        ok(r#""a\"b" \'x\' "\\""#, &["a\"b", "'x'", "\\"]);
        ok(r"'a\b' \\ x", &[r"a\b", "\\", "x"]);
        ok("echo #not-a-comment", &["echo", "#not-a-comment"]);
        ok("a''b '' \"\"", &["ab", "", ""]);
        ok("x\ty\rz\nw", &["x", "y", "z", "w"]);
        ok("a\\\nb", &["a\nb"]);
        ok("a\x0bb\x0cc", &["a\x0bb\x0cc"]);
        ok(r#""a"'b'c"#, &["abc"]);
        ok("  lead  trail  ", &["lead", "trail"]);
        ok(r#""\n\t\a""#, &[r"\n\t\a"]);
        ok("é ünï \"cödé\"", &["é", "ünï", "cödé"]);
        ok(r#""a b"c d"#, &["a bc", "d"]);
        ok(r#"\"\'"#, &["\"'"]);
        ok("\"\"", &[""]);
        ok("", &[]);
        ok("   ", &[]);
        ok("a;b|c&&d>e", &["a;b|c&&d>e"]);
        ok("\"$(x)\" `y`", &["$(x)", "`y`"]);
        assert_eq!(shlex_split("it's"), Err(SplitError::NoClosingQuotation));
        assert_eq!(shlex_split("\"unterminated"), Err(SplitError::NoClosingQuotation));
        assert_eq!(shlex_split(r"'\''"), Err(SplitError::NoClosingQuotation));
        assert_eq!(shlex_split("ends\\"), Err(SplitError::NoEscapedCharacter));
        assert_eq!(shlex_split("\"in quotes \\"), Err(SplitError::NoEscapedCharacter));
    }

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "yes", "on", "1"] {
            assert_eq!(boolean(&s(t)), Ok(true));
        }
        for f in ["false", "No", "off", "0"] {
            assert_eq!(boolean(&s(f)), Ok(false));
        }
        assert!(boolean(&s("maybe")).is_err());
        assert_eq!(boolean(&Raw::Bool(true)), Ok(true));
    }

    #[test]
    fn sizes() {
        assert_eq!(byte_size(&s("50MB")), Ok(50 << 20));
        assert_eq!(byte_size(&s("10kb")), Ok(10 << 10));
        assert_eq!(byte_size(&s("1GB")), Ok(1 << 30));
        assert_eq!(byte_size(&s("123")), Ok(123));
        assert_eq!(byte_size(&Raw::Int(0)), Ok(0));
        assert!(byte_size(&s("10TB")).is_err());
        assert!(byte_size(&s("-1")).is_err());
    }

    #[test]
    fn seconds_and_fractions() {
        assert_eq!(seconds(&s("10")), Ok(Duration::from_secs(10)));
        assert_eq!(seconds(&Raw::Float(0.25)), Ok(Duration::from_millis(250)));
        assert!(seconds(&s("-1")).is_err());
        assert!(seconds(&s("soon")).is_err());
        assert!(seconds(&Raw::Float(f64::NAN)).is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exitcodes(&s("0,2")), Ok(vec![0, 2]));
        assert_eq!(exitcodes(&Raw::List(vec![Raw::Int(0), Raw::Int(3)])), Ok(vec![0, 3]));
        assert!(exitcodes(&s("0,256")).is_err());
        assert!(exitcodes(&s("a")).is_err());
    }

    #[test]
    fn python_normpath() {
        // Each expected value is Python's posixpath.normpath of the input.
        for (input, want) in [
            ("/a/b/../c", "/a/c"),
            ("/a/./b//c/", "/a/b/c"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("//a/b", "//a/b"),
            ("///a", "/a"),
            ("", "."),
            ("a/..", "."),
        ] {
            assert_eq!(normpath(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn user_expansion() {
        let env: BTreeMap<String, String> = [("HOME".to_string(), "/home/x/".to_string())].into();
        assert_eq!(expand_user("~/log", &env), PathBuf::from("/home/x/log"));
        assert_eq!(expand_user("~", &env), PathBuf::from("/home/x"));
        assert_eq!(expand_user("/a/~", &env), PathBuf::from("/a/~"));
        assert_eq!(expand_user("~root/x", &env), PathBuf::from("/root/x"));
        assert_eq!(expand_user("~no-such-user-here/x", &env), PathBuf::from("~no-such-user-here/x"));
    }

    #[test]
    fn comma_lists_keep_empty_items() {
        assert_eq!(comma_list(&s("a, b,")), Ok(vec!["a".into(), "b".into(), String::new()]));
        assert_eq!(comma_list(&s("")), Ok(vec![]));
        assert_eq!(exitcodes(&s("")), Ok(vec![]));
    }

    #[test]
    fn octals() {
        assert_eq!(octal(&s("022")), Ok(0o22));
        assert_eq!(octal(&Raw::Int(0o022)), Ok(0o22));
        assert!(octal(&s("9")).is_err());
    }

    #[test]
    fn environment_strings_as_supervisord_reads_them() {
        let env = |x: &str| environment(&s(x));
        let map =
            |pairs: &[(&str, &str)]| Ok(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(env("A=1,B=2"), map(&[("A", "1"), ("B", "2")]));
        assert_eq!(env("A=\"x,y\",B='z w'"), map(&[("A", "x,y"), ("B", "z w")]));
        assert_eq!(env("PATH=/usr/bin:/bin"), map(&[("PATH", "/usr/bin:/bin")]));
        assert_eq!(env(""), map(&[]));
        // supervisord drops a trailing word it cannot pair ("A=a b" gives A=a).
        assert_eq!(env("A=a b"), map(&[("A", "a")]));
        assert!(env("A=").is_err());
        assert!(env("A=x@y").is_err());
        assert!(env("A=\"open").is_err());
    }
}
