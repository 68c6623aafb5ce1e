//! Gives a [`RawConfig`] its meaning: defaults, expansions, numprocs, groups and validation,
//! the same for both front ends, following supervisord 4.3's `options.py` section by section.
//!
//! Every option is read through [`Section::take`], which records an error and carries on with
//! the default, so one pass finds every problem. Options nobody took are unknown: a warning.
//!
//! Which `%(name)s` an option may use is supervisord's choice, kept here: `%(here)s` and
//! `%(ENV_X)s` everywhere; `%(program_name)s`, `%(group_name)s` and `%(host_node_name)s` in
//! program-like sections; `%(process_num)d` and `%(numprocs)d` only in the options expanded
//! once per process (command, process_name, environment, directory, the std*_logfile family).
//! Where supervisord expands a value twice (`[supervisord] environment`, `std*_logfile`), so
//! does a supervisord.conf here, so that `%%` means what it means there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{ConfigErrors, Diagnostic, Origin};
use super::expand::{self, Var, Vars};
use super::raw::{Raw, RawConfig, RawSection, RawValue, SectionKind};
use super::values::{self, AutoRestart, CgroupSetting, Parsed};
use super::{
    read_tokens, ClientConfig, Config, Context, Credentials, DaemonConfig, EventListenerPool, FcgiSocket,
    GroupConfig, GroupKind, LogFormat, LogLevel, LogTarget, Owner, Password, ProcessConfig,
    RpcInterfaceConfig, TlsFiles,
};
use crate::address::Address;
use crate::signal::Signal;

/// The event types an `[eventlistener:x] events` line may name (supervisord's `EventTypes`).
pub const EVENT_TYPES: &[&str] = &[
    "EVENT",
    "PROCESS_COMMUNICATION",
    "PROCESS_COMMUNICATION_STDERR",
    "PROCESS_COMMUNICATION_STDOUT",
    "PROCESS_GROUP",
    "PROCESS_GROUP_ADDED",
    "PROCESS_GROUP_REMOVED",
    "PROCESS_LOG",
    "PROCESS_LOG_STDERR",
    "PROCESS_LOG_STDOUT",
    "PROCESS_STATE",
    "PROCESS_STATE_BACKOFF",
    "PROCESS_STATE_EXITED",
    "PROCESS_STATE_FATAL",
    "PROCESS_STATE_RUNNING",
    "PROCESS_STATE_STARTING",
    "PROCESS_STATE_STOPPED",
    "PROCESS_STATE_STOPPING",
    "PROCESS_STATE_UNKNOWN",
    "REMOTE_COMMUNICATION",
    "SUPERVISOR_STATE_CHANGE",
    "SUPERVISOR_STATE_CHANGE_RUNNING",
    "SUPERVISOR_STATE_CHANGE_STOPPING",
    "TICK",
    "TICK_3600",
    "TICK_5",
    "TICK_60",
];

/// supervisord's default event listener result handler.
pub const DEFAULT_RESULT_HANDLER: &str = "supervisor.dispatchers:default_handler";

/// Collects errors and warnings across the whole configuration.
struct Report {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// `[DEFAULT]` options some section used; the others are unknown.
    defaults_taken: BTreeSet<String>,
    /// Where each program's `depends_on` was given, checked once every group is known.
    depends_on: Vec<DependsOn>,
}

/// A program's `depends_on`, with where it was written.
struct DependsOn {
    group: String,
    program: String,
    origin: Origin,
    key: String,
}

impl Report {
    fn error(&mut self, origin: Origin, key: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(Diagnostic::new(origin, key, msg));
    }

    fn warn(&mut self, origin: Origin, key: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push(Diagnostic::new(origin, key, msg));
    }
}

/// Everything a section needs from the whole configuration.
struct Shared<'a> {
    raw: &'a RawConfig,
    ctx: &'a Context,
}

impl Shared<'_> {
    fn toml(&self) -> bool {
        self.raw.toml
    }
}

/// One section being read: which options have been taken, and how to name them.
struct Section<'a> {
    raw: &'a RawSection,
    shared: &'a Shared<'a>,
    taken: BTreeSet<&'a str>,
}

impl<'a> Section<'a> {
    fn new(raw: &'a RawSection, shared: &'a Shared<'a>) -> Self {
        Section { raw, shared, taken: BTreeSet::new() }
    }

    /// How the user wrote this option: `program.web.startsecs` or `[program:web] startsecs`.
    fn key(&self, opt: &str) -> String {
        let label = self.raw.kind.label(&self.raw.name, self.shared.toml());
        match (opt.is_empty(), self.shared.toml()) {
            (true, _) => label,
            (false, true) => format!("{label}.{opt}"),
            (false, false) => format!("{label} {opt}"),
        }
    }

    fn label(&self) -> String {
        self.key("")
    }

    fn origin(&self, opt: &str) -> Origin {
        self.peek(opt).map_or_else(|| self.raw.origin.clone(), |v| v.origin.clone())
    }

    /// The option's value, from the section or else from `[DEFAULT]`, without taking it.
    fn peek(&self, opt: &str) -> Option<&'a RawValue> {
        self.raw.options.get(opt).or_else(|| self.shared.raw.defaults.get(opt))
    }

    fn get(&mut self, report: &mut Report, opt: &'a str) -> Option<&'a RawValue> {
        self.taken.insert(opt);
        if !self.raw.options.contains_key(opt) && self.shared.raw.defaults.contains_key(opt) {
            report.defaults_taken.insert(opt.to_string());
        }
        self.peek(opt)
    }

    /// `vars` plus `%(here)s`: the directory of the file the value was written in.
    fn vars_for(&self, value: &RawValue, vars: &Vars) -> Vars {
        vars.clone().str("here", here_of(&value.origin, &self.shared.raw.path))
    }

    /// The option's value with its text expanded `passes` times (supervisord expands a few
    /// options twice), or `None` if not given or the expansion failed (reported).
    fn expanded(
        &mut self,
        report: &mut Report,
        opt: &'a str,
        vars: &Vars,
        passes: usize,
    ) -> Option<(Raw, Origin)> {
        let value = self.get(report, opt)?;
        let vars = self.vars_for(value, vars);
        let mut raw = value.value.clone();
        for _ in 0..passes {
            match expand_raw(&raw, &vars) {
                Ok(v) => raw = v,
                Err(e) => {
                    report.error(value.origin.clone(), self.key(opt), e.to_string());
                    return None;
                }
            }
        }
        Some((raw, value.origin.clone()))
    }

    /// Reads `opt` with `parse` after expanding its text with `vars`, or gives `default`.
    /// A bad value is reported and replaced by `default`, so reading goes on.
    fn take<T>(
        &mut self,
        report: &mut Report,
        opt: &'a str,
        vars: &Vars,
        default: T,
        parse: impl Fn(&Raw) -> Parsed<T>,
    ) -> T {
        self.take_n(report, opt, vars, 1, default, parse)
    }

    fn take_n<T>(
        &mut self,
        report: &mut Report,
        opt: &'a str,
        vars: &Vars,
        passes: usize,
        default: T,
        parse: impl Fn(&Raw) -> Parsed<T>,
    ) -> T {
        if self.peek(opt).is_none() {
            self.taken.insert(opt);
            return default;
        }
        let Some((raw, origin)) = self.expanded(report, opt, vars, passes) else {
            return default;
        };
        match parse(&raw) {
            Ok(v) => v,
            Err(msg) => {
                report.error(origin, self.key(opt), msg);
                default
            }
        }
    }

    /// Reads `opt` as text, expanded, if given.
    fn text(&mut self, report: &mut Report, opt: &'a str, vars: &Vars) -> Option<String> {
        self.take(report, opt, vars, None, |r| text(r).map(Some))
    }

    /// Marks options as read without reading them (supervisord ignores them here).
    fn ignore(&mut self, opts: &[&'a str]) {
        self.taken.extend(opts.iter().copied());
    }

    /// Reports every option no one asked for.
    fn finish(self, report: &mut Report) {
        // Suggestions come from the options this section reads, so that an option of another
        // kind of section is never "corrected" to itself.
        let own: Vec<&str> = self.taken.iter().copied().collect();
        for (name, value) in &self.raw.options {
            if !self.taken.contains(name.as_str()) {
                let hint = if name.starts_with('[') {
                    " (it looks like a section header without its closing ']': the options after it are read into the section above)".to_string()
                } else if !self.shared.toml() && TOML_DAEMON_ONLY.contains(&name.as_str()) {
                    format!(" ({name} is minder's own option: set it in [daemon] of a TOML configuration)")
                } else if KNOWN_OPTIONS.contains(&name.as_str()) || TOML_DAEMON_ONLY.contains(&name.as_str())
                {
                    format!(
                        " ({name} is not an option of {}; is a section header above it missing or broken?)",
                        self.label()
                    )
                } else {
                    spelling_hint(name, &own)
                };
                report.warn(value.origin.clone(), self.key(name), format!("unknown option, ignored{hint}"));
            }
        }
    }
}

/// minder's own daemon options, which a supervisord.conf has no section for.
const TOML_DAEMON_ONLY: &[&str] = &[
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tokens_file",
    "socket_users",
    "socket_groups",
    "insecure",
    "metrics",
    "cgroup",
    "kill_on_exit",
];

/// Every option name supervisord knows, for "did you mean" hints (minder's own daemon options
/// are in [`TOML_DAEMON_ONLY`]).
const KNOWN_OPTIONS: &[&str] = &[
    "command",
    "process_name",
    "numprocs",
    "numprocs_start",
    "priority",
    "autostart",
    "autorestart",
    "startsecs",
    "startretries",
    "backoff",
    "backoff_initial",
    "backoff_max",
    "backoff_jitter",
    "backoff_reset",
    "exitcodes",
    "oneshot",
    "depends_on",
    "ready",
    "ready_timeout",
    "watchdog_sec",
    "readiness_probe",
    "liveness_probe",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "kill_mode",
    "memory_max",
    "memory_high",
    "cpu_weight",
    "cpu_max",
    "pids_max",
    "io_weight",
    "user",
    "redirect_stderr",
    "log_timestamps",
    "log_format",
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_logfile_compress",
    "stderr_logfile_compress",
    "stdout_capture_maxbytes",
    "stdout_events_enabled",
    "stdout_syslog",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "stderr_capture_maxbytes",
    "stderr_events_enabled",
    "stderr_syslog",
    "environment",
    "directory",
    "umask",
    "serverurl",
    "events",
    "buffer_size",
    "result_handler",
    "socket",
    "socket_backlog",
    "socket_owner",
    "socket_mode",
    "programs",
    "logfile",
    "logfile_maxbytes",
    "logfile_backups",
    "loglevel",
    "pidfile",
    "nodaemon",
    "silent",
    "minfds",
    "minprocs",
    "nocleanup",
    "childlogdir",
    "strip_ansi",
    "identifier",
    "file",
    "chmod",
    "chown",
    "username",
    "password",
    "port",
    "prompt",
    "history_file",
];

/// " (did you mean autostart?)" for `auto_start`, `autostrat`, `startsec` and the like: the
/// candidate that differs by one letter (wrong, missing, extra, or two neighbours swapped),
/// ignoring case, `_` and `-`.
fn spelling_hint(name: &str, candidates: &[&str]) -> String {
    let squash = |s: &str| -> Vec<char> {
        s.chars().filter(|c| !matches!(c, '_' | '-')).flat_map(char::to_lowercase).collect()
    };
    let n = squash(name);
    let close = candidates
        .iter()
        .find(|k| squash(k) == n)
        .or_else(|| candidates.iter().find(|k| one_edit_apart(&squash(k), &n)));
    match close {
        Some(k) => format!(" (did you mean {k}?)"),
        None => " (check its spelling)".to_string(),
    }
}

/// Whether `a` becomes `b` by one substitution, insertion, deletion, or swap of neighbours.
fn one_edit_apart(a: &[char], b: &[char]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    match long.len() - short.len() {
        0 => {
            let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            diff.len() == 1
                || (diff.len() == 2
                    && diff[1] == diff[0] + 1
                    && a[diff[0]] == b[diff[1]]
                    && a[diff[1]] == b[diff[0]])
        }
        // Skip the one extra character of the longer; the rest must match.
        1 => short[prefix..] == long[prefix + 1..],
        _ => false,
    }
}

/// Any scalar as text (TOML and environment overrides may give numbers where text is meant).
fn text(raw: &Raw) -> Parsed<String> {
    match raw {
        Raw::Str(s) => Ok(s.clone()),
        Raw::Int(n) => Ok(n.to_string()),
        Raw::Float(x) => Ok(x.to_string()),
        Raw::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, got {}", other.kind())),
    }
}

/// Expands the text inside a raw value: strings, and the strings within lists and tables.
fn expand_raw(raw: &Raw, vars: &Vars) -> Result<Raw, expand::ExpandError> {
    Ok(match raw {
        Raw::Str(s) => Raw::Str(expand::expand(s, vars)?),
        Raw::List(items) => Raw::List(items.iter().map(|i| expand_raw(i, vars)).collect::<Result<_, _>>()?),
        Raw::Table(t) => Raw::Table(
            t.iter().map(|(k, v)| Ok((k.clone(), expand_raw(v, vars)?))).collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// The directory a value's file is in, for `%(here)s`; the main file's for values that came
/// from the environment or defaults.
fn here_of(origin: &Origin, main: &Path) -> String {
    let file = origin.path().unwrap_or(main);
    file.parent().unwrap_or(Path::new("/")).display().to_string()
}

/// supervisord's rule for process and group names, plus no control characters (they would
/// corrupt logs and terminals).
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a name must not be empty".into());
    }
    if let Some(c) = name.chars().find(|c| matches!(c, ' ' | ':' | '/') || c.is_control()) {
        return Err(format!(
            "invalid name {name:?}: it must not contain {c:?} (nor spaces, ':', '/' or control characters)"
        ));
    }
    Ok(())
}

fn priority(raw: &Raw) -> Parsed<i32> {
    values::integer_in(raw, i32::MIN.into(), i32::MAX.into()).map(|n| n as i32)
}

fn count(raw: &Raw) -> Parsed<u32> {
    values::integer_in(raw, 0, u32::MAX.into()).map(|n| n as u32)
}

fn count64(raw: &Raw) -> Parsed<u64> {
    values::integer_in(raw, 0, i64::MAX).map(|n| n as u64)
}

/// supervisord's `existing_dirpath`: `~` expanded; the directory part, if any, must exist
/// (unless host checks are off). The path is otherwise kept as written (a relative one stays
/// relative).
fn dirpath(raw: &Raw, ctx: &Context) -> Parsed<PathBuf> {
    let p = values::expand_user(&text(raw)?, &ctx.env);
    match p.parent() {
        Some(dir) if ctx.host_checks && !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(format!("the directory {} does not exist (create it first)", dir.display()))
        }
        _ => Ok(p),
    }
}

/// supervisord's `existing_directory`: `~` expanded, and it must be a directory (unless
/// host checks are off).
fn existing_directory(raw: &Raw, ctx: &Context) -> Parsed<PathBuf> {
    let t = text(raw)?;
    let p = values::expand_user(&t, &ctx.env);
    if !ctx.host_checks || p.is_dir() {
        Ok(p)
    } else {
        Err(format!("{t} is not an existing directory"))
    }
}

/// supervisord's `normalize_path`: `~` expanded, made absolute, `..` and `.` removed.
fn normalize_path(p: &Path, ctx: &Context) -> PathBuf {
    let p = values::expand_user(&p.to_string_lossy(), &ctx.env);
    values::normpath(&ctx.cwd.join(p))
}

/// The id given to a user or group that could not be looked up because host checks are off
/// (`minderd --check-config --no-host-checks`): (uid_t)-1, which chown(2) reads as "leave
/// unchanged". Such a configuration is only printed, never run.
const UNRESOLVED_ID: u32 = u32::MAX;

/// supervisord's `name_to_uid`: a user name, or a uid that must exist (with host checks).
fn name_to_uid(name: &str, ctx: &Context) -> Parsed<u32> {
    match lookup_user(name) {
        Ok(u) => Ok(u.uid.as_raw()),
        Err(_) if !ctx.host_checks => Ok(name.parse().unwrap_or(UNRESOLVED_ID)),
        Err(e) => Err(e),
    }
}

/// supervisord's `name_to_gid`: a group name, or a gid that must exist (with host checks).
fn name_to_gid(name: &str, ctx: &Context) -> Parsed<u32> {
    let found = match name.parse::<u32>() {
        Ok(gid) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
        Err(_) => nix::unistd::Group::from_name(name),
    };
    match found {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ if !ctx.host_checks => Ok(name.parse().unwrap_or(UNRESOLVED_ID)),
        Ok(None) => Err(format!("no such group {name:?} on this system")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// A user that must exist on this machine, unless host checks are off.
fn check_user(name: &str, ctx: &Context) -> Parsed<()> {
    if ctx.host_checks {
        lookup_user(name).map(drop)
    } else {
        Ok(())
    }
}

/// supervisord's `colon_separated_user_group`: `user` or `user:group`, names or ids.
fn owner(raw: &Raw, ctx: &Context) -> Parsed<Owner> {
    let t = text(raw)?;
    let (user, group) = match t.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (t.as_str(), None),
    };
    Ok(Owner { uid: name_to_uid(user, ctx)?, gid: group.map(|g| name_to_gid(g, ctx)).transpose()? })
}

/// Finds a user by name or numeric uid.
pub(super) fn lookup_user(name: &str) -> Parsed<nix::unistd::User> {
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    match found {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!("no such user {name:?} on this system")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

pub(super) fn resolve(raw: &RawConfig, ctx: &Context) -> Result<Config, ConfigErrors> {
    let mut report = Report {
        errors: Vec::new(),
        warnings: raw.warnings.clone(),
        defaults_taken: BTreeSet::new(),
        depends_on: Vec::new(),
    };
    let shared = Shared { raw, ctx };

    let mut daemon = resolve_daemon(&shared, &mut report);
    // supervisorctl reads its section with its own parser, which never sees the daemon's
    // environment.
    let client = resolve_client(&shared, &mut report);

    // From here on ENV_X sees the daemon's environment over the real one, as in supervisord
    // (which adds `[supervisord] environment` to its expansions once it has read it).
    let mut env_expansions = ctx.env.clone();
    env_expansions.extend(daemon.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    resolve_servers(&shared, &env_expansions, &mut daemon, &mut report);
    let rpcinterfaces = resolve_rpcinterfaces(&shared, &env_expansions, &mut report);
    let groups = resolve_groups(&shared, &env_expansions, &daemon, &mut report);

    for (name, value) in &raw.defaults {
        if !report.defaults_taken.contains(name) {
            let hint = spelling_hint(name, KNOWN_OPTIONS);
            report.warn(
                value.origin.clone(),
                format!("[DEFAULT] {name}"),
                format!("unknown option, ignored (no section uses it){hint}"),
            );
        }
    }

    if !report.errors.is_empty() {
        // In the order of the files, so a long list reads top to bottom.
        let mut errors = report.errors;
        errors.sort_by_key(|e| origin_key(&e.origin));
        return Err(ConfigErrors { errors });
    }
    Ok(Config {
        path: raw.path.clone(),
        daemon,
        groups,
        client,
        rpcinterfaces,
        warnings: report.warnings,
        included: raw.included.clone(),
    })
}

fn resolve_daemon(shared: &Shared<'_>, report: &mut Report) -> DaemonConfig {
    let ctx = shared.ctx;
    let ini = !shared.toml();
    // A supervisord.conf gets supervisord's defaults; minder's own format keeps minder's
    // (log to standard output, no pidfile, stay in the foreground).
    let mut d = DaemonConfig {
        listen: Vec::new(),
        socket_mode: 0o700,
        socket_owner: None,
        credentials: BTreeMap::new(),
        pidfile: ini.then(|| normalize_path(Path::new("supervisord.pid"), ctx)),
        logfile: ini.then(|| normalize_path(Path::new("supervisord.log"), ctx)),
        syslog: false,
        logfile_maxbytes: 50 << 20,
        logfile_backups: 10,
        loglevel: LogLevel::Info,
        umask: 0o022,
        nodaemon: !ini,
        silent: false,
        minfds: 1024,
        minprocs: 200,
        nocleanup: false,
        user: None,
        directory: None,
        strip_ansi: false,
        identifier: if ini { "supervisor" } else { "minder" }.to_string(),
        childlogdir: temp_dir(&ctx.env),
        environment: BTreeMap::new(),
        tls: None,
        tokens_file: None,
        tokens: Vec::new(),
        socket_users: Vec::new(),
        socket_groups: Vec::new(),
        socket_uids: Vec::new(),
        socket_gids: Vec::new(),
        insecure: false,
        metrics: None,
        cgroup: CgroupSetting::Auto,
        kill_on_exit: true,
    };
    let Some(section) = shared.raw.section(SectionKind::Daemon) else {
        return d;
    };
    let env = &ctx.env;
    let mut sec = Section::new(section, shared);
    // supervisord expands [supervisord] options before it has read its environment, and
    // without %(host_node_name)s (options.py `read_config`).
    let vars = Vars::new().with_env(env);
    if shared.toml() {
        d.listen = sec.take(report, "listen", &vars, Vec::new(), |r| {
            values::string_list(r, None)?.iter().map(|a| a.parse::<Address>()).collect()
        });
        d.socket_mode = sec.take(report, "socket_mode", &vars, d.socket_mode, values::octal);
        d.socket_owner = sec.take(report, "socket_owner", &vars, None, |r| owner(r, ctx).map(Some));
        d.credentials = sec.take(report, "credentials", &vars, BTreeMap::new(), credentials_table);
        for (addr, c) in &d.credentials {
            if let Some(why) = c.password.never_matches() {
                report.warn(sec.origin("credentials"), sec.key("credentials"), format!("{addr}: {why}"));
            }
        }
        let file = |r: &Raw| {
            let p = PathBuf::from(text(r)?);
            let p = if p.is_absolute() { p } else { ctx.cwd.join(p) };
            if !ctx.host_checks || p.is_file() {
                Ok(Some(p))
            } else {
                Err(format!("{} is not a readable file", p.display()))
            }
        };
        let cert = sec.take(report, "tls_cert", &vars, None, file);
        let key = sec.take(report, "tls_key", &vars, None, file);
        let client_ca = sec.take(report, "tls_client_ca", &vars, None, file);
        d.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key, client_ca }),
            (None, None) if client_ca.is_none() => None,
            _ => {
                report.error(
                    sec.origin("tls_cert"),
                    sec.key("tls_cert"),
                    "tls_cert and tls_key go together (and tls_client_ca needs both)",
                );
                None
            }
        };
        d.tokens_file = sec.take(report, "tokens_file", &vars, None, file);
        // Without host checks, a tokens file that is not here is not read (it is still
        // checked when it is).
        if let Some(path) = d.tokens_file.as_ref().filter(|p| ctx.host_checks || p.exists()) {
            match read_tokens(path) {
                Ok(t) => d.tokens = t,
                Err(e) => report.errors.extend(e.errors),
            }
        }
        let names = |r: &Raw| values::string_list(r, Some(','));
        // Resolved here, once, to the ids the daemon checks: a name or number that does not
        // resolve is an error (failing closed; an empty list would let everyone in).
        (d.socket_users, d.socket_uids) = sec.take(report, "socket_users", &vars, Default::default(), |r| {
            let users = names(r)?;
            let uids = users.iter().map(|u| name_to_uid(u, ctx)).collect::<Parsed<Vec<u32>>>()?;
            Ok((users, uids))
        });
        (d.socket_groups, d.socket_gids) =
            sec.take(report, "socket_groups", &vars, Default::default(), |r| {
                let groups = names(r)?;
                let gids = groups.iter().map(|g| name_to_gid(g, ctx)).collect::<Parsed<Vec<u32>>>()?;
                Ok((groups, gids))
            });
        d.insecure = sec.take(report, "insecure", &vars, false, values::boolean);
        d.cgroup = sec.take(report, "cgroup", &vars, CgroupSetting::Auto, values::cgroup_setting);
        d.kill_on_exit = sec.take(report, "kill_on_exit", &vars, true, values::boolean);
        d.metrics = sec.take(report, "metrics", &vars, None, |r| {
            let t = text(r)?;
            match t.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Some(t)),
                _ => Err(format!("expected host:port, like 127.0.0.1:9100, got {t:?}")),
            }
        });
    }
    d.minfds = sec.take(report, "minfds", &vars, d.minfds, count64);
    d.minprocs = sec.take(report, "minprocs", &vars, d.minprocs, count64);
    d.directory = sec.take(report, "directory", &vars, None, |r| existing_directory(r, ctx).map(Some));
    d.user = sec.take(report, "user", &vars, None, |r| {
        let name = text(r)?;
        check_user(&name, ctx)?;
        Ok(Some(name))
    });
    d.umask = sec.take(report, "umask", &vars, d.umask, values::octal);
    let logfile = sec.take(report, "logfile", &vars, None, |r| {
        // Only the exact word: `SYSLOG` is a file named SYSLOG, as in supervisord.
        if text(r)? == "syslog" {
            return Ok(Some(None));
        }
        dirpath(r, ctx).map(|p| Some(Some(normalize_path(&p, ctx))))
    });
    match logfile {
        Some(Some(path)) => d.logfile = Some(path),
        Some(None) => {
            d.logfile = None;
            d.syslog = true;
        }
        None => {}
    }
    d.logfile_maxbytes = sec.take(report, "logfile_maxbytes", &vars, d.logfile_maxbytes, values::byte_size);
    d.logfile_backups = sec.take(report, "logfile_backups", &vars, d.logfile_backups, count);
    d.loglevel = sec.take(report, "loglevel", &vars, d.loglevel, |r| {
        LogLevel::parse(&text(r)?).ok_or_else(|| format!("expected one of {}", LogLevel::NAMES))
    });
    d.pidfile = sec.take(report, "pidfile", &vars, d.pidfile.clone(), |r| {
        dirpath(r, ctx).map(|p| Some(normalize_path(&p, ctx)))
    });
    d.identifier = sec.take(report, "identifier", &vars, d.identifier.clone(), text);
    d.nodaemon = sec.take(report, "nodaemon", &vars, d.nodaemon, values::boolean);
    d.silent = sec.take(report, "silent", &vars, d.silent, values::boolean);
    d.childlogdir =
        sec.take(report, "childlogdir", &vars, d.childlogdir.clone(), |r| existing_directory(r, ctx));
    d.nocleanup = sec.take(report, "nocleanup", &vars, d.nocleanup, values::boolean);
    d.strip_ansi = sec.take(report, "strip_ansi", &vars, d.strip_ansi, values::boolean);
    // supervisord expands `environment` twice: once as every option (no host_node_name), then
    // again with host_node_name. So `%%(host_node_name)s` works there and `%(host_node_name)s`
    // is refused, exactly as supervisord 4.3 does.
    let with_host = vars.clone().str("host_node_name", ctx.host_node_name.clone());
    d.environment = if shared.toml() {
        sec.take(report, "environment", &with_host, BTreeMap::new(), values::environment)
    } else {
        match sec.expanded(report, "environment", &vars, 1) {
            None => BTreeMap::new(),
            Some((first, origin)) => {
                let here = here_of(&origin, &shared.raw.path);
                match expand_raw(&first, &with_host.clone().str("here", here)) {
                    Ok(second) => values::environment(&second).unwrap_or_else(|e| {
                        report.error(origin, sec.key("environment"), e);
                        BTreeMap::new()
                    }),
                    Err(e) => {
                        report.error(origin, sec.key("environment"), e.to_string());
                        BTreeMap::new()
                    }
                }
            }
        }
    };
    sec.finish(report);
    d
}

/// Python's `tempfile.gettempdir()`: TMPDIR, TEMP or TMP if it names a directory, else /tmp.
fn temp_dir(env: &BTreeMap<String, String>) -> PathBuf {
    ["TMPDIR", "TEMP", "TMP"]
        .iter()
        .filter_map(|k| env.get(*k))
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// TOML's `[daemon.credentials."ADDRESS"]` tables: `username` and `password` per listener.
fn credentials_table(raw: &Raw) -> Parsed<BTreeMap<Address, Credentials>> {
    let hint =
        "expected tables like [daemon.credentials.\"tcp://127.0.0.1:9001\"] with username and password";
    let Raw::Table(table) = raw else {
        return Err(hint.into());
    };
    let mut out = BTreeMap::new();
    for (addr, body) in table {
        let address: Address = addr.parse()?;
        let field = |name: &str| match body {
            Raw::Table(t) => match t.get(name) {
                Some(Raw::Str(s)) => Ok(s.clone()),
                _ => Err(format!("{addr}: {name} is required and must be a string ({hint})")),
            },
            _ => Err(hint.to_string()),
        };
        let username = field("username")?;
        let password = Password::parse(&field("password")?)?;
        out.insert(address, Credentials { username, password });
    }
    Ok(out)
}

/// `username` and `password` of a server section: both or neither.
fn credentials(sec: &mut Section<'_>, report: &mut Report, vars: &Vars) -> Option<Credentials> {
    let username = sec.text(report, "username", vars);
    let password = sec.take(report, "password", vars, None, |r| Password::parse(&text(r)?).map(Some));
    if let Some(why) = password.as_ref().and_then(Password::never_matches) {
        report.warn(sec.origin("password"), sec.key("password"), why);
    }
    match (username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        (u, _) => {
            let (given, missing) =
                if u.is_some() { ("username", "password") } else { ("password", "username") };
            report.error(
                sec.origin(given),
                sec.key(missing),
                format!("required with {given}: give both username and password, or neither (supervisord: \"incomplete authentication\")"),
            );
            None
        }
    }
}

/// `[inet_http_server]` and `[unix_http_server]`: listen addresses, with their credentials.
fn resolve_servers(
    shared: &Shared<'_>,
    env_expansions: &BTreeMap<String, String>,
    d: &mut DaemonConfig,
    report: &mut Report,
) {
    let ctx = shared.ctx;
    let vars = Vars::new().with_env(env_expansions);
    // supervisord makes the inet servers first, then the unix ones.
    for section in shared.raw.sections_of(SectionKind::InetServer) {
        let mut sec = Section::new(section, shared);
        let port = sec.take(report, "port", &vars, None, |r| inet_address(&text(r)?).map(Some));
        if sec.peek("port").is_none() {
            report.error(
                section.origin.clone(),
                sec.key("port"),
                "required: the address to listen on, e.g. port = 127.0.0.1:9001 (:9001 or *:9001 for every interface)",
            );
        }
        let creds = credentials(&mut sec, report, &vars);
        if let Some(addr) = port {
            if let Some(c) = creds {
                d.credentials.insert(addr.clone(), c);
            }
            d.listen.push(addr);
        }
        sec.finish(report);
    }
    let mut unix_settings: Option<(u32, Option<Owner>, Origin)> = None;
    for section in shared.raw.sections_of(SectionKind::UnixServer) {
        let mut sec = Section::new(section, shared);
        let file = sec.take(report, "file", &vars, None, |r| {
            let t = text(r)?;
            let t = t.trim();
            if t.is_empty() {
                return Err("expected the path of the socket to create".into());
            }
            Ok(Some(normalize_path(Path::new(t), ctx)))
        });
        if sec.peek("file").is_none() {
            report.error(
                section.origin.clone(),
                sec.key("file"),
                "required: the path of the socket, e.g. file = /run/supervisor.sock",
            );
        }
        let chmod = sec.take(report, "chmod", &vars, 0o700, values::octal);
        let chown = sec.take(report, "chown", &vars, None, |r| owner(r, ctx).map(Some));
        let creds = credentials(&mut sec, report, &vars);
        match &unix_settings {
            Some((mode, own, first)) if (*mode, *own) != (chmod, chown) => report.error(
                section.origin.clone(),
                sec.label(),
                format!("minder gives all its unix sockets one chmod and chown, and the server at {first} has others; make them the same"),
            ),
            Some(_) => {}
            None => unix_settings = Some((chmod, chown, section.origin.clone())),
        }
        if let Some(path) = file {
            let addr = Address::Unix(path);
            if let Some(c) = creds {
                d.credentials.insert(addr.clone(), c);
            }
            d.listen.push(addr);
        }
        sec.finish(report);
    }
    if let Some((mode, own, _)) = unix_settings {
        d.socket_mode = mode;
        d.socket_owner = own;
    }
}

/// supervisord's `inet_address`: `host:port`, or a bare port; an empty host or `*` is every
/// interface.
fn inet_address(s: &str) -> Parsed<Address> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h.to_lowercase(), p),
        None => (String::new(), s),
    };
    let port: u16 = values::integer(&Raw::Str(port.to_string()))
        .ok()
        .filter(|p| (1..=65535).contains(p))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            format!("{s:?} has no valid port number (1-65535); write host:port, :port or *:port")
        })?;
    let host = if host.is_empty() || host == "*" { "0.0.0.0".to_string() } else { host };
    Ok(Address::Tcp(format!("{host}:{port}")))
}

/// `[supervisorctl]` (`[ctl]` in TOML): where the command line connects.
fn resolve_client(shared: &Shared<'_>, report: &mut Report) -> Option<ClientConfig> {
    let section = shared.raw.section(SectionKind::Ctl)?;
    let ctx = shared.ctx;
    let mut sec = Section::new(section, shared);
    let vars = Vars::new().with_env(&ctx.env);
    let default = Address::Tcp("localhost:9001".into());
    let serverurl = sec.take(report, "serverurl", &vars, default.clone(), |r| server_url(&text(r)?, ctx));
    let username = sec.text(report, "username", &vars);
    let password = sec.text(report, "password", &vars);
    // supervisorctl's default prompt in a supervisord.conf; minder's own in its own format.
    let default_prompt = if shared.toml() { "minder" } else { "supervisor" };
    let prompt = sec.take(report, "prompt", &vars, default_prompt.to_string(), text);
    let history_file = sec.take(report, "history_file", &vars, None, |r| {
        let t = text(r)?;
        Ok((!t.is_empty()).then(|| normalize_path(Path::new(&t), ctx)))
    });
    sec.finish(report);
    Some(ClientConfig { serverurl, username, password, prompt, history_file })
}

/// supervisorctl's `serverurl`: `unix://PATH` (made absolute) or `http://host[:port][/path]`.
fn server_url(url: &str, ctx: &Context) -> Parsed<Address> {
    if let Some(path) = url.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(format!("{url:?} has no socket path; write unix:///path/to.sock"));
        }
        return Ok(Address::Unix(normalize_path(Path::new(path), ctx)));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?} is not a URL supervisorctl can use; write unix:///path/to.sock or http://host:port"
        ));
    };
    let netloc = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let netloc = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    if netloc.is_empty() {
        return Err(format!("{url:?} has no host; write http://host:port"));
    }
    let has_port = match netloc.rsplit_once(':') {
        Some((_, p)) if !netloc.ends_with(']') => {
            if p.parse::<u16>().is_err() {
                return Err(format!("{url:?} has a bad port number"));
            }
            true
        }
        _ => false,
    };
    // Python's http client uses port 80 when the URL names none.
    Ok(Address::Tcp(if has_port { netloc.to_string() } else { format!("{netloc}:80") }))
}

/// `[rpcinterface:x]`: recorded (minder serves its own API, not supervisord's Python one).
fn resolve_rpcinterfaces(
    shared: &Shared<'_>,
    env_expansions: &BTreeMap<String, String>,
    report: &mut Report,
) -> Vec<RpcInterfaceConfig> {
    const FACTORY: &str = "supervisor.rpcinterface_factory";
    let vars = Vars::new().with_env(env_expansions);
    let mut out = Vec::new();
    for section in shared.raw.sections_of(SectionKind::RpcInterface) {
        let mut sec = Section::new(section, shared);
        let factory = sec.text(report, FACTORY, &vars);
        if factory.is_none() {
            report.error(
                section.origin.clone(),
                sec.key(FACTORY),
                "required: the factory of this RPC interface, e.g. supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            );
        }
        // Every other option (the [DEFAULT] ones too, as in supervisord) goes to the factory.
        let names: BTreeSet<&str> = section
            .options
            .keys()
            .chain(shared.raw.defaults.keys())
            .map(String::as_str)
            .filter(|k| *k != FACTORY)
            .collect();
        let mut options = BTreeMap::new();
        for name in names {
            if let Some(v) = sec.text(report, name, &vars) {
                options.insert(name.to_string(), v);
            }
        }
        sec.finish(report);
        out.push(RpcInterfaceConfig {
            name: section.name.clone(),
            factory: factory.unwrap_or_default(),
            options,
        });
    }
    out
}

/// Groups, as supervisord's `process_groups_from_parser` builds them: `[group:x]` sections
/// (taking their programs out of their own groups), the remaining `[program:x]` each a group
/// of its own, every `[eventlistener:x]` a pool, every remaining `[fcgi-program:x]` a group
/// with its socket. Sorted by priority, then name.
fn resolve_groups(
    shared: &Shared<'_>,
    env_expansions: &BTreeMap<String, String>,
    daemon: &DaemonConfig,
    report: &mut Report,
) -> Vec<GroupConfig> {
    let raw = shared.raw;
    let by_name = |kind| -> BTreeMap<&str, &RawSection> {
        raw.sections_of(kind).map(|s| (s.name.as_str(), s)).collect()
    };
    let programs = by_name(SectionKind::Program);
    let fcgis = by_name(SectionKind::FcgiProgram);
    let global = Vars::new().with_env(env_expansions);
    let mut groups: Vec<GroupConfig> = Vec::new();
    let mut in_group: BTreeMap<(SectionKind, &str), String> = BTreeMap::new();

    for section in raw.sections_of(SectionKind::Group) {
        let mut sec = Section::new(section, shared);
        if let Err(e) = check_name(&section.name) {
            report.error(section.origin.clone(), sec.label(), e);
        }
        let members = sec.take(report, "programs", &global, Vec::new(), values::comma_list);
        if members.is_empty() {
            report.warn(
                sec.origin("programs"),
                sec.key("programs"),
                "this group has no programs (give them as programs = a,b)",
            );
        }
        let priority = sec.take(report, "priority", &global, 999, priority);
        let mut processes = Vec::new();
        for member in &members {
            let member_section = match (programs.get(member.as_str()), fcgis.get(member.as_str())) {
                (Some(p), None) => *p,
                (None, Some(f)) => *f,
                (Some(_), Some(_)) => {
                    report.error(
                        sec.origin("programs"),
                        sec.key("programs"),
                        format!("{member:?} is ambiguous: there is both a [program:{member}] and an [fcgi-program:{member}]"),
                    );
                    continue;
                }
                (None, None) => {
                    report.error(
                        sec.origin("programs"),
                        sec.key("programs"),
                        format!("names program {member:?}, which is not defined (there is no [program:{member}] or [fcgi-program:{member}])"),
                    );
                    continue;
                }
            };
            let key = (member_section.kind, member_section.name.as_str());
            if let Some(other) = in_group.insert(key, section.name.clone()) {
                report.error(
                    sec.origin("programs"),
                    sec.key("programs"),
                    format!(
                        "program {member:?} is already in group {other:?}; a program belongs to one group"
                    ),
                );
                continue;
            }
            let mut psec = Section::new(member_section, shared);
            if member_section.kind == SectionKind::FcgiProgram {
                // supervisord makes an fcgi-program in a [group] a plain program and never
                // reads its socket options.
                psec.ignore(&["socket", "socket_backlog", "socket_owner", "socket_mode"]);
                report.warn(
                    member_section.origin.clone(),
                    psec.label(),
                    format!("in [group:{}], this runs as a plain program: supervisord ignores the socket of an fcgi-program that belongs to a group", section.name),
                );
            }
            if let Some((_, procs)) = resolve_program(&mut psec, &section.name, &global, daemon, report) {
                processes.extend(procs);
            }
            psec.finish(report);
        }
        sec.finish(report);
        groups.push(GroupConfig {
            name: section.name.clone(),
            priority,
            kind: GroupKind::Programs,
            processes: processes.into_iter().map(std::sync::Arc::new).collect(),
        });
    }

    for (name, section) in &programs {
        if in_group.contains_key(&(SectionKind::Program, *name)) {
            continue;
        }
        let mut sec = Section::new(section, shared);
        if let Some((priority, processes)) = resolve_program(&mut sec, name, &global, daemon, report) {
            groups.push(GroupConfig {
                name: name.to_string(),
                priority,
                kind: GroupKind::Programs,
                processes: processes.into_iter().map(std::sync::Arc::new).collect(),
            });
        }
        sec.finish(report);
    }

    for section in raw.sections_of(SectionKind::EventListener) {
        let mut sec = Section::new(section, shared);
        let vars = program_vars(&global, &section.name, &section.name, shared);
        // Listeners start first and stop last: their pool's priority defaults to -1 (while
        // each listener process keeps the usual 999, as in supervisord).
        let pool_priority = sec.take(report, "priority", &vars, -1, priority);
        let buffer_size = sec.take(report, "buffer_size", &vars, 10, |r| {
            values::integer_in(r, 1, u32::MAX.into()).map(|n| n as u32)
        });
        let result_handler =
            sec.take(report, "result_handler", &vars, DEFAULT_RESULT_HANDLER.to_string(), text);
        if result_handler != DEFAULT_RESULT_HANDLER {
            report.warn(
                sec.origin("result_handler"),
                sec.key("result_handler"),
                format!("minder cannot run supervisord's Python result handlers; {DEFAULT_RESULT_HANDLER} is used instead"),
            );
        }
        let errors_before = report.errors.len();
        let events = sec.take(report, "events", &vars, Vec::new(), |r| {
            let mut names = BTreeSet::new();
            for e in values::comma_list(r)? {
                let upper = e.to_uppercase();
                if !EVENT_TYPES.contains(&upper.as_str()) {
                    return Err(format!("unknown event type {e:?}; known: {}", EVENT_TYPES.join(", ")));
                }
                names.insert(upper);
            }
            Ok(names.into_iter().collect::<Vec<_>>())
        });
        if events.is_empty() && report.errors.len() == errors_before {
            report.error(
                sec.origin("events"),
                sec.key("events"),
                "required: the events this listener subscribes to, e.g. events = PROCESS_STATE,TICK_60",
            );
        }
        if sec.take(report, "redirect_stderr", &vars, false, values::boolean) {
            report.error(
                sec.origin("redirect_stderr"),
                sec.key("redirect_stderr"),
                "cannot be true for an event listener: its stdout speaks the event listener protocol, and stderr mixed in would break it",
            );
        }
        if let Some((_, processes)) = resolve_program(&mut sec, &section.name, &global, daemon, report) {
            groups.push(GroupConfig {
                name: section.name.clone(),
                priority: pool_priority,
                kind: GroupKind::EventListener(EventListenerPool { events, buffer_size, result_handler }),
                processes: processes.into_iter().map(std::sync::Arc::new).collect(),
            });
        }
        sec.finish(report);
    }

    for (name, section) in &fcgis {
        if in_group.contains_key(&(SectionKind::FcgiProgram, *name)) {
            continue;
        }
        let mut sec = Section::new(section, shared);
        let socket = fcgi_socket(&mut sec, &global, report);
        if let Some((priority, processes)) = resolve_program(&mut sec, name, &global, daemon, report) {
            if let Some(socket) = socket {
                groups.push(GroupConfig {
                    name: name.to_string(),
                    priority,
                    kind: GroupKind::FcgiProgram(socket),
                    processes: processes.into_iter().map(std::sync::Arc::new).collect(),
                });
            }
        }
        sec.finish(report);
    }

    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &groups {
        let kind = match g.kind {
            GroupKind::Programs => "group",
            GroupKind::EventListener(_) => "eventlistener",
            GroupKind::FcgiProgram(_) => "fcgi-program",
        };
        if let Some(other) = seen.insert(&g.name, kind) {
            let origin = raw
                .sections
                .iter()
                .rev()
                .find(|s| s.name == g.name && s.kind != SectionKind::RpcInterface)
                .map_or_else(|| Origin::file(&raw.path, None), |s| s.origin.clone());
            report.error(
                origin,
                g.name.clone(),
                format!("two groups are named {:?} (a {other} and a {kind}); rename one of them", g.name),
            );
        }
    }
    for g in &mut groups {
        g.processes.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        let mut names = BTreeSet::new();
        for p in &g.processes {
            if !names.insert(p.name.as_str()) {
                report.error(
                    Origin::file(&raw.path, None),
                    g.name.clone(),
                    format!("process name {:?} is used twice in group {:?}", p.name, g.name),
                );
            }
        }
    }
    groups.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    check_dependencies(&groups, report);
    groups
}

/// Every `depends_on` entry must name a process, and no program may end up waiting for
/// itself: a cycle is an error naming it, at the `depends_on` of the first program in it.
fn check_dependencies(groups: &[GroupConfig], report: &mut Report) {
    let processes: Vec<&ProcessConfig> =
        groups.iter().flat_map(|g| g.processes.iter().map(|p| &**p)).collect();
    // The graph is between programs (group, program): a program's processes share its options.
    let mut edges: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    let entries = std::mem::take(&mut report.depends_on);
    for entry in &entries {
        let Some(p) = processes.iter().find(|p| p.group == entry.group && p.program == entry.program) else {
            continue; // numprocs = 0: nothing to start, nothing to check
        };
        let mut out = BTreeSet::new();
        for dep in &p.depends_on {
            let matched: Vec<&&ProcessConfig> =
                processes.iter().filter(|q| dep.matches(&q.group, &q.name, &q.program)).collect();
            if matched.is_empty() {
                report.error(
                    entry.origin.clone(),
                    entry.key.clone(),
                    format!("{:?} names no program, process or group that is configured", dep.target),
                );
            }
            out.extend(matched.iter().map(|q| (q.group.clone(), q.program.clone())));
        }
        edges.insert((entry.group.clone(), entry.program.clone()), out);
    }
    // Depth-first search for a cycle, reported once (from the program it was found from).
    let mut done: BTreeSet<(String, String)> = BTreeSet::new();
    for start in edges.keys() {
        let mut path: Vec<(String, String)> = Vec::new();
        if let Some(cycle) = find_cycle(start, &edges, &mut path, &mut done) {
            let names: Vec<String> = cycle.iter().map(|(g, p)| super::full_name(g, p)).collect();
            let first = &cycle[0];
            let at = entries.iter().find(|e| (&e.group, &e.program) == (&first.0, &first.1));
            let (origin, key) = at.map_or_else(
                || (Origin::Default, "depends_on".to_string()),
                |e| (e.origin.clone(), e.key.clone()),
            );
            report.error(origin, key, format!("dependency cycle: {}", names.join(" -> ")));
            return;
        }
    }
}

/// The cycle reachable from `node`, as the path from its first program back to it.
fn find_cycle(
    node: &(String, String),
    edges: &BTreeMap<(String, String), BTreeSet<(String, String)>>,
    path: &mut Vec<(String, String)>,
    done: &mut BTreeSet<(String, String)>,
) -> Option<Vec<(String, String)>> {
    if let Some(i) = path.iter().position(|n| n == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.clone());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.clone());
    for next in edges.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(next, edges, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.clone());
    None
}

/// The expansions of a program-like section (before the per-process ones).
fn program_vars(global: &Vars, program: &str, group: &str, shared: &Shared<'_>) -> Vars {
    global
        .clone()
        .str("program_name", program)
        .str("group_name", group)
        .str("host_node_name", shared.ctx.host_node_name.clone())
}

/// An `[fcgi-program:x]` socket, read as supervisord's `parse_fcgi_socket` reads it.
fn fcgi_socket(sec: &mut Section<'_>, global: &Vars, report: &mut Report) -> Option<FcgiSocket> {
    let ctx = sec.shared.ctx;
    let errors_before = report.errors.len();
    // supervisord gives `socket` only %(program_name)s (and %(here)s, %(ENV_X)s).
    let vars = global.clone().str("program_name", sec.raw.name.clone());
    let user_uid = sec
        .peek("user")
        .and_then(|v| text(&v.value).ok())
        .and_then(|u| lookup_user(&u).ok().map(|u| u.uid.as_raw()));
    let backlog = sec.take(report, "socket_backlog", &vars, None, |r| {
        values::integer_in(r, 1, 65535).map(|n| Some(n as u32))
    });
    let owner_given = sec.take(report, "socket_owner", &vars, None, |r| owner(r, ctx).map(Some));
    let mode_given = sec.take(report, "socket_mode", &vars, None, |r| values::octal(r).map(Some));
    let socket = sec.text(report, "socket", &vars).unwrap_or_default();
    if socket.is_empty() {
        report.error(
            sec.origin("socket"),
            sec.key("socket"),
            "required: the socket to bind, e.g. socket = tcp://127.0.0.1:9002 or unix:///run/%(program_name)s.sock",
        );
        return None;
    }
    let address = if let Some(path) = socket.strip_prefix("unix://") {
        if !path.starts_with('/') {
            report.error(
                sec.origin("socket"),
                sec.key("socket"),
                format!("the unix socket path {path:?} must be absolute (unix:///path)"),
            );
            return None;
        }
        Address::Unix(normalize_path(Path::new(path), ctx))
    } else {
        if owner_given.is_some() || mode_given.is_some() {
            let opt = if owner_given.is_some() { "socket_owner" } else { "socket_mode" };
            report.error(
                sec.origin(opt),
                sec.key(opt),
                "applies only to a unix socket (socket = unix:///path)",
            );
        }
        match socket.strip_prefix("tcp://").and_then(|hp| hp.rsplit_once(':')).filter(|(h, p)| {
            !h.is_empty()
                && !h.contains(|c: char| c == ':' || c.is_whitespace())
                && !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
        }) {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) if p >= 1 => Address::Tcp(format!("{}:{p}", host.to_lowercase())),
                _ => {
                    report.error(
                        sec.origin("socket"),
                        sec.key("socket"),
                        format!("port {port} is not between 1 and 65535"),
                    );
                    return None;
                }
            },
            None => {
                report.error(
                    sec.origin("socket"),
                    sec.key("socket"),
                    format!("{socket:?} is not a socket: write tcp://host:port or unix:///absolute/path"),
                );
                return None;
            }
        }
    };
    if report.errors.len() > errors_before {
        return None;
    }
    let unix = matches!(address, Address::Unix(_));
    // A unix socket belongs to the program's user when that is not the daemon's, so the
    // program can use it after dropping privileges.
    let me = nix::unistd::getuid().as_raw();
    let owner = owner_given.or_else(|| {
        let uid = user_uid.filter(|u| unix && *u != me)?;
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
        Some(Owner { uid, gid })
    });
    Some(FcgiSocket {
        address,
        backlog,
        owner: if unix { owner } else { None },
        mode: unix.then(|| mode_given.unwrap_or(0o700)),
    })
}

/// One value per output channel, read once per process.
struct Channel {
    logfile: LogTarget,
    maxbytes: u64,
    backups: u32,
    compress: Option<super::LogCompress>,
    syslog: bool,
}

/// Resolves one program-like section into its processes, with the section-level priority
/// (its own group's priority). `None` when the section is too broken to go on with.
fn resolve_program<'a>(
    sec: &mut Section<'a>,
    group_name: &str,
    global: &Vars,
    daemon: &DaemonConfig,
    report: &mut Report,
) -> Option<(i32, Vec<ProcessConfig>)> {
    let errors_before = report.errors.len();
    let section = sec.raw;
    let shared = sec.shared;
    if let Err(e) = check_name(&section.name) {
        report.error(section.origin.clone(), sec.label(), e);
        return None;
    }
    let vars = program_vars(global, &section.name, group_name, shared);

    let priority = sec.take(report, "priority", &vars, 999, priority);
    let autostart = sec.take(report, "autostart", &vars, true, values::boolean);
    let autorestart = sec.take(report, "autorestart", &vars, AutoRestart::Unexpected, values::autorestart);
    let startsecs = sec.take(report, "startsecs", &vars, Duration::from_secs(1), values::seconds);
    let startretries = sec.take(report, "startretries", &vars, 3, values::startretries);
    let backoff = backoff(sec, report, &vars);
    let stopsignal = sec.take(report, "stopsignal", &vars, Signal::SIGTERM, values::signal);
    let stopwaitsecs = sec.take(report, "stopwaitsecs", &vars, Duration::from_secs(10), values::seconds);
    let stopasgroup = sec.take(report, "stopasgroup", &vars, false, values::boolean);
    let killasgroup = sec.take(report, "killasgroup", &vars, stopasgroup, values::boolean);
    let kill_mode = sec.take(report, "kill_mode", &vars, None, values::kill_mode);
    let weight = |r: &Raw| values::integer_in(r, 1, 10_000).map(|n| Some(n as u32));
    let limits = values::Limits {
        memory_max: sec.take(report, "memory_max", &vars, None, |r| values::byte_size(r).map(Some)),
        memory_high: sec.take(report, "memory_high", &vars, None, |r| values::byte_size(r).map(Some)),
        cpu_weight: sec.take(report, "cpu_weight", &vars, None, weight),
        cpu_max_percent: sec.take(report, "cpu_max", &vars, None, |r| values::cpu_percent(r).map(Some)),
        pids_max: sec.take(report, "pids_max", &vars, None, |r| count(r).map(Some)),
        io_weight: sec.take(report, "io_weight", &vars, None, weight),
    };
    let exitcodes = sec.take(report, "exitcodes", &vars, vec![0], values::exitcodes);
    let oneshot = sec.take(report, "oneshot", &vars, false, values::boolean);
    let depends_on = sec.take(report, "depends_on", &vars, Vec::new(), values::depends_on);
    let ready = sec.take(report, "ready", &vars, values::Ready::Startsecs, values::ready);
    let ready_timeout = sec.take(report, "ready_timeout", &vars, None, |r| values::duration(r).map(Some));
    let watchdog_sec = sec.take(report, "watchdog_sec", &vars, None, |r| {
        values::duration(r).and_then(|d| {
            if d.is_zero() {
                Err("must be more than 0 (leave it out for no watchdog)".into())
            } else {
                Ok(Some(d))
            }
        })
    });
    if ready != values::Ready::Notify && watchdog_sec.is_some() {
        report.error(
            sec.origin("watchdog_sec"),
            sec.key("watchdog_sec"),
            "needs ready = notify (the program reports readiness and keep-alives on NOTIFY_SOCKET)",
        );
    }
    if ready == values::Ready::Startsecs && ready_timeout.is_some() {
        report.error(
            sec.origin("ready_timeout"),
            sec.key("ready_timeout"),
            "needs ready = notify or ready = probe (with startsecs, readiness has no timeout)",
        );
    }
    let readiness_probe = sec
        .take(report, "readiness_probe", &vars, None, |r| values::probe(r, Duration::from_secs(1)).map(Some));
    let liveness_probe = sec
        .take(report, "liveness_probe", &vars, None, |r| values::probe(r, Duration::from_secs(10)).map(Some));
    if ready == values::Ready::Probe && readiness_probe.is_none() && sec.peek("readiness_probe").is_none() {
        report.error(
            sec.origin("ready"),
            sec.key("ready"),
            "ready = probe needs a readiness_probe (exec, http, tcp or grpc) to pass",
        );
    }
    if !depends_on.is_empty() {
        report.depends_on.push(DependsOn {
            group: group_name.to_string(),
            program: section.name.clone(),
            origin: sec.origin("depends_on"),
            key: sec.key("depends_on"),
        });
    }
    let redirect_stderr = sec.take(report, "redirect_stderr", &vars, false, values::boolean);
    // minder's extension (supervisor #553): the time at the start of every captured line.
    let log_timestamps = sec.take(report, "log_timestamps", &vars, false, values::boolean);
    let log_format = sec.take(report, "log_format", &vars, LogFormat::Text, values::log_format);
    // supervisord makes no process for numprocs = 0 (a way to switch a program off).
    let numprocs = sec.take(report, "numprocs", &vars, 1, |r| values::integer_in(r, 0, 100_000));
    let numprocs_start =
        sec.take(report, "numprocs_start", &vars, 0, |r| values::integer_in(r, 0, i64::from(i32::MAX)));
    let stdout_capture_maxbytes = sec.take(report, "stdout_capture_maxbytes", &vars, 0, values::byte_size);
    let stdout_events_enabled = sec.take(report, "stdout_events_enabled", &vars, false, values::boolean);
    let stderr_capture_maxbytes = sec.take(report, "stderr_capture_maxbytes", &vars, 0, values::byte_size);
    let stderr_events_enabled = sec.take(report, "stderr_events_enabled", &vars, false, values::boolean);
    let serverurl = sec.take(report, "serverurl", &vars, None, |r| {
        let t = text(r)?;
        Ok((!t.trim().eq_ignore_ascii_case("auto") && !t.is_empty()).then_some(t))
    });
    let user = sec.take(report, "user", &vars, None, |r| {
        let name = text(r)?;
        check_user(&name, shared.ctx)?;
        Ok(Some(name))
    });
    let umask = sec.take(report, "umask", &vars, None, |r| values::octal(r).map(Some));

    // Options expanded once per process are read raw here, as supervisord reads them.
    let name_template = match sec.get(report, "process_name") {
        Some(v) => match text(&v.value) {
            Ok(t) => t,
            Err(e) => {
                report.error(v.origin.clone(), sec.key("process_name"), e);
                return None;
            }
        },
        None => "%(program_name)s".to_string(),
    };
    if numprocs > 1 && !name_template.contains("%(process_num)") {
        report.error(
            sec.origin("process_name"),
            sec.key("process_name"),
            format!(
                "must contain %(process_num) when numprocs is greater than 1 (numprocs = {numprocs}), e.g. process_name = %(program_name)s_%(process_num)02d"
            ),
        );
        return None;
    }
    if stopasgroup && !killasgroup {
        report.error(
            sec.origin("killasgroup"),
            sec.key("killasgroup"),
            "cannot be false when stopasgroup is true (a group that is stopped must also be killable as a group)",
        );
    }
    if sec.peek("command").is_none() {
        report.error(section.origin.clone(), sec.key("command"), "required: the command to run");
        return None;
    }
    // supervisord expands the log file names twice (once as every option, once more per
    // process), so a literal % there is %%%%.
    let log_passes = if shared.toml() { 1 } else { 2 };

    let mut processes = Vec::new();
    for num in numprocs_start..numprocs_start + numprocs {
        let mut pvars = vars.clone();
        pvars.set("process_num", Var::Int(num)).set("numprocs", Var::Int(numprocs));
        let own_env = sec.take(report, "environment", &pvars, BTreeMap::new(), values::environment);
        // The other per-process options also see the program's own environment as ENV_X.
        let pvars = pvars.with_env(&own_env);
        let mut environment = daemon.environment.clone();
        environment.extend(own_env);

        let name = match expand::expand(&name_template, &sec.vars_for_opt("process_name", &pvars)) {
            Ok(n) => n,
            Err(e) => {
                report.error(sec.origin("process_name"), sec.key("process_name"), e.to_string());
                return None;
            }
        };
        if let Err(e) = check_name(&name) {
            report.error(sec.origin("process_name"), sec.key("process_name"), e);
            return None;
        }
        let errors_before_command = report.errors.len();
        let command = sec.text(report, "command", &pvars).unwrap_or_default();
        let argv = match values::shlex_split(&command) {
            Ok(argv) if !argv.is_empty() => argv,
            // The command could not be read (already reported): no second error about it.
            _ if report.errors.len() > errors_before_command => Vec::new(),
            Ok(_) => {
                report.error(sec.origin("command"), sec.key("command"), "is empty");
                Vec::new()
            }
            Err(values::SplitError::NoEscapedCharacter) => {
                report.error(
                    sec.origin("command"),
                    sec.key("command"),
                    format!("cannot be split into words: it ends with a backslash that escapes nothing: {command:?}"),
                );
                Vec::new()
            }
            Err(values::SplitError::NoClosingQuotation) => {
                // The usual cause in supervisord.conf: ` ;` inside quotes still starts a
                // comment (supervisord would accept the file and fail at every start).
                let why = if shared.toml() {
                    String::new()
                } else {
                    "; note that in supervisord.conf a ';' or '#' after a blank starts a comment even inside quotes, so the line may have been cut there (put the command in a script, or drop the blank before the ';')".to_string()
                };
                report.error(
                    sec.origin("command"),
                    sec.key("command"),
                    format!("cannot be split into words (is a quote not closed?): {command:?}{why}"),
                );
                Vec::new()
            }
        };
        // Kept as written: supervisord chdirs to it as it is (no ~ expansion), when not empty.
        let directory = sec.take(report, "directory", &pvars, None, |r| {
            let t = text(r)?;
            Ok((!t.is_empty()).then(|| PathBuf::from(t)))
        });
        let mut channel = |ch: &'static str, report: &mut Report| -> Channel {
            let (lf, mb, bu, sy, co) = match ch {
                "stdout" => (
                    "stdout_logfile",
                    "stdout_logfile_maxbytes",
                    "stdout_logfile_backups",
                    "stdout_syslog",
                    "stdout_logfile_compress",
                ),
                _ => (
                    "stderr_logfile",
                    "stderr_logfile_maxbytes",
                    "stderr_logfile_backups",
                    "stderr_syslog",
                    "stderr_logfile_compress",
                ),
            };
            let logfile = sec.take_n(report, lf, &pvars, log_passes, (LogTarget::Auto, false), |r| {
                log_target(r, shared.ctx)
            });
            let maxbytes = sec.take(report, mb, &pvars, 50 << 20, values::byte_size);
            let backups = sec.take(report, bu, &pvars, 10, count);
            let compress = sec.take(report, co, &pvars, None, values::log_compress);
            let mut syslog = sec.take(report, sy, &pvars, false, values::boolean);
            let (logfile, deprecated_syslog) = logfile;
            if deprecated_syslog {
                report.warn(
                    sec.origin(lf),
                    sec.key(lf),
                    format!("{lf}=syslog is deprecated (as in supervisord); write {sy}=true instead"),
                );
                syslog = true;
            }
            if logfile == LogTarget::Auto && maxbytes == 0 {
                report.warn(
                    sec.origin(mb),
                    sec.key(lf),
                    format!("AUTO logging without rotation ({mb} = 0) can fill the disk; set {mb} above 0"),
                );
            }
            Channel { logfile, maxbytes, backups, compress, syslog }
        };
        let stdout = channel("stdout", report);
        let mut stderr = channel("stderr", report);
        if redirect_stderr {
            if matches!(stderr.logfile, LogTarget::File(_)) {
                report.warn(
                    sec.origin("stderr_logfile"),
                    sec.key("stderr_logfile"),
                    "ignored: redirect_stderr is true, so stderr goes to the stdout log",
                );
            }
            stderr.logfile = LogTarget::None;
        }
        processes.push(ProcessConfig {
            name,
            group: group_name.to_string(),
            program: section.name.clone(),
            process_num: u32::try_from(num).unwrap_or_default(),
            command,
            argv,
            priority,
            autostart,
            autorestart,
            startsecs,
            startretries,
            backoff,
            exitcodes: exitcodes.clone(),
            oneshot,
            depends_on: depends_on.clone(),
            ready,
            ready_timeout,
            watchdog_sec,
            readiness_probe: readiness_probe.clone(),
            liveness_probe: liveness_probe.clone(),
            stopsignal,
            stopwaitsecs,
            stopasgroup,
            killasgroup,
            kill_mode,
            limits,
            user: user.clone(),
            directory,
            umask,
            environment,
            redirect_stderr,
            log_timestamps,
            log_format,
            stdout_logfile: stdout.logfile,
            stdout_logfile_maxbytes: stdout.maxbytes,
            stdout_logfile_backups: stdout.backups,
            stdout_logfile_compress: stdout.compress,
            stdout_capture_maxbytes,
            stdout_events_enabled,
            stdout_syslog: stdout.syslog,
            stderr_logfile: stderr.logfile,
            stderr_logfile_maxbytes: stderr.maxbytes,
            stderr_logfile_backups: stderr.backups,
            stderr_logfile_compress: stderr.compress,
            stderr_capture_maxbytes,
            stderr_events_enabled,
            stderr_syslog: stderr.syslog,
            serverurl: serverurl.clone(),
        });
        if report.errors.len() > errors_before {
            // Every process would repeat the same errors; one set is enough.
            break;
        }
        // Warnings too: one set per program, not one per process.
        dedup_warnings(report);
    }
    // Options read only inside the loop must count as read even for numprocs = 0.
    sec.ignore(&[
        "environment",
        "command",
        "directory",
        "stdout_logfile",
        "stdout_logfile_maxbytes",
        "stdout_logfile_backups",
        "stdout_logfile_compress",
        "stdout_syslog",
        "stderr_logfile",
        "stderr_logfile_maxbytes",
        "stderr_logfile_backups",
        "stderr_logfile_compress",
        "stderr_syslog",
    ]);
    (report.errors.len() == errors_before).then_some((priority, processes))
}

/// The backoff options of a program (`backoff`, `backoff_initial`, `backoff_max`,
/// `backoff_jitter`, `backoff_reset`).
fn backoff(sec: &mut Section<'_>, report: &mut Report, vars: &Vars) -> values::Backoff {
    let d = values::Backoff::default();
    let kind = sec.take(report, "backoff", vars, d.kind, values::backoff_kind);
    let initial = sec.take(report, "backoff_initial", vars, d.initial, values::duration);
    // Exponential growth without a cap soon means hours between tries: 60 s unless given.
    let default_max = (kind == values::BackoffKind::Exponential).then(|| Duration::from_secs(60));
    let max = sec.take(report, "backoff_max", vars, default_max, |r| values::duration(r).map(Some));
    let jitter = sec.take(report, "backoff_jitter", vars, d.jitter, |r| {
        let x = match r {
            Raw::Int(n) => *n as f64,
            Raw::Float(x) => *x,
            Raw::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("expected a fraction from 0 to 1 like 0.2, got {s:?}"))?,
            other => return Err(format!("expected a fraction from 0 to 1 like 0.2, got {}", other.kind())),
        };
        if (0.0..=1.0).contains(&x) {
            Ok(x)
        } else {
            Err(format!("expected a fraction from 0 to 1 like 0.2, got {x}"))
        }
    });
    let reset = sec.take(report, "backoff_reset", vars, None, |r| values::duration(r).map(Some));
    if max.is_some_and(|m| m < initial) {
        report.error(
            sec.origin("backoff_max"),
            sec.key("backoff_max"),
            format!(
                "is shorter than backoff_initial ({} s): no wait could be as long as the first",
                initial.as_secs_f64()
            ),
        );
    }
    values::Backoff { kind, initial, max, jitter, reset }
}

/// Drops repeated warnings (the same place, option and message).
fn dedup_warnings(report: &mut Report) {
    let mut seen = BTreeSet::new();
    report.warnings.retain(|w| seen.insert((w.origin.to_string(), w.key.clone(), w.message.clone())));
}

impl<'a> Section<'a> {
    /// `vars` plus `%(here)s` for an option read raw (such as process_name).
    fn vars_for_opt(&self, opt: &str, vars: &Vars) -> Vars {
        match self.peek(opt) {
            Some(v) => self.vars_for(v, vars),
            None => vars.clone().str("here", here_of(&self.raw.origin, &self.shared.raw.path)),
        }
    }
}

/// supervisord's `logfile_name`: NONE/off/empty discard, AUTO, a path whose directory exists;
/// the deprecated `syslog` (second of the pair) means no file and stdout/stderr_syslog.
fn log_target(raw: &Raw, ctx: &Context) -> Parsed<(LogTarget, bool)> {
    let t = text(raw)?;
    match t.to_lowercase().as_str() {
        "none" | "off" | "" => Ok((LogTarget::None, false)),
        "auto" => Ok((LogTarget::Auto, false)),
        "syslog" => Ok((LogTarget::None, true)),
        _ => dirpath(raw, ctx).map(|p| (LogTarget::File(p), false)),
    }
}

/// Sorts origins by file, then line; environment overrides and defaults after files.
fn origin_key(o: &Origin) -> (u8, String, u32) {
    match o {
        Origin::File { path, line } => (0, path.display().to_string(), line.unwrap_or(0)),
        Origin::Env { var } => (1, var.clone(), 0),
        Origin::Default => (2, String::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minders_own_daemon_options_in_a_supervisord_conf_say_where_they_go() {
        let ini = load_text("s.conf", "[supervisord]\nsocket_users=root\n[program:a]\ncommand=/bin/cat\n");
        assert!(
            ini.iter().any(|w| w.contains(
                "[supervisord] socket_users: unknown option, ignored (socket_users is minder's own option: set it in [daemon] of a TOML configuration)"
            )),
            "{ini:?}"
        );
    }

    #[test]
    fn spelling_hints() {
        let hint = |name| spelling_hint(name, KNOWN_OPTIONS);
        assert_eq!(hint("auto_start"), " (did you mean autostart?)");
        assert_eq!(hint("autostrat"), " (did you mean autostart?)");
        assert_eq!(hint("startsec"), " (did you mean startsecs?)");
        assert_eq!(hint("stopsignl"), " (did you mean stopsignal?)");
        assert_eq!(hint("comand"), " (did you mean command?)");
        assert_eq!(hint("commandd"), " (did you mean command?)");
        assert_eq!(hint("commund"), " (did you mean command?)");
        assert_eq!(hint("stpsgnl"), " (check its spelling)");
        assert_eq!(hint("xyz"), " (check its spelling)");
        // Only the options of the section are suggested.
        assert_eq!(spelling_hint("comand", &["logfile", "pidfile"]), " (check its spelling)");
    }

    /// Loads `text` as the file `name`: the configuration, or every error as text.
    fn load(name: &str, text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let ctx = Context {
            env: BTreeMap::new(),
            host_node_name: "h".into(),
            cwd: dir.path().to_path_buf(),
            host_checks: true,
        };
        super::super::load_in(&path, &ctx).map_err(|e| e.to_string())
    }

    fn process<'c>(c: &'c Config, name: &str) -> &'c ProcessConfig {
        c.processes().find(|p| p.name == name).expect("the process")
    }

    #[test]
    fn backoff_options_in_both_formats() {
        let toml = load(
            "m.toml",
            "[program.web]\ncommand = \"/bin/cat\"\nbackoff = \"exponential\"\nbackoff_initial = \"500ms\"\nbackoff_max = \"1m\"\nbackoff_jitter = 0.2\nbackoff_reset = \"30s\"\nstartretries = \"infinite\"\n\n[program.plain]\ncommand = \"/bin/cat\"\n",
        )
        .expect("valid");
        let ini = load(
            "s.conf",
            "[supervisord]\n[program:web]\ncommand=/bin/cat\nbackoff=exponential\nbackoff_initial=500ms\nbackoff_max=60\nbackoff_jitter=0.2\nbackoff_reset=30s\nstartretries=infinite\n\n[program:plain]\ncommand=/bin/cat\n",
        )
        .expect("valid");
        for c in [&toml, &ini] {
            let web = process(c, "web");
            assert_eq!(web.startretries, crate::config::INFINITE_RETRIES);
            assert_eq!(
                web.backoff,
                values::Backoff {
                    kind: values::BackoffKind::Exponential,
                    initial: Duration::from_millis(500),
                    max: Some(Duration::from_secs(60)),
                    jitter: 0.2,
                    reset: Some(Duration::from_secs(30)),
                }
            );
            // The default is supervisord's exactly.
            let plain = process(c, "plain");
            assert_eq!(plain.startretries, 3);
            assert_eq!(plain.backoff, values::Backoff::default());
            assert_eq!(plain.backoff.wait(1, 0.5), Duration::from_secs(1));
            assert_eq!(plain.backoff.wait(3, 0.5), Duration::from_secs(3));
        }
        // The effective configuration says "infinite", and converting keeps every option.
        let json = serde_json::to_value(process(&toml, "web")).expect("json");
        assert_eq!(json["startretries"], "infinite");
        let back = crate::config::to_toml(&toml);
        let again = load("m.toml", &back).expect("the conversion loads");
        assert_eq!(process(&again, "web").backoff, process(&ini, "web").backoff);
        assert_eq!(process(&again, "web").startretries, crate::config::INFINITE_RETRIES);
    }

    #[test]
    fn depends_on_in_both_formats() {
        use crate::config::{Condition, Dependency};
        let toml = load(
            "m.toml",
            "[program.db]\ncommand = \"/bin/cat\"\n[program.migrate]\ncommand = \"/bin/true\"\noneshot = true\ndepends_on = [\"db:ready\"]\n[program.web]\ncommand = \"/bin/cat\"\ndepends_on = [\"db:ready\", \"migrate:completed\", \"site:api\"]\n[group.site]\nprograms = \"api\"\n[program.api]\ncommand = \"/bin/cat\"\n",
        )
        .expect("valid");
        let ini = load(
            "s.conf",
            "[supervisord]\n[program:db]\ncommand=/bin/cat\n[program:migrate]\ncommand=/bin/true\noneshot=true\ndepends_on=db:ready\n[program:web]\ncommand=/bin/cat\ndepends_on = db:ready, migrate:completed, site:api\n[group:site]\nprograms=api\n[program:api]\ncommand=/bin/cat\n",
        )
        .expect("valid");
        for c in [&toml, &ini] {
            let d = |t: &str, condition| Dependency { target: t.into(), condition };
            assert_eq!(
                process(c, "web").depends_on,
                vec![
                    d("db", Condition::Ready),
                    d("migrate", Condition::Completed),
                    d("site:api", Condition::Started)
                ]
            );
            assert!(process(c, "migrate").oneshot);
        }
    }

    #[test]
    fn a_dependency_cycle_or_an_unknown_name_is_an_error() {
        let err = load(
            "s.conf",
            "[supervisord]\n[program:a]\ncommand=/bin/cat\ndepends_on=b\n[program:b]\ncommand=/bin/cat\ndepends_on=c:ready\n[program:c]\ncommand=/bin/cat\ndepends_on=a:started\n",
        )
        .expect_err("a cycle");
        assert!(
            err.contains("s.conf:4: [program:a] depends_on: dependency cycle: a -> b -> c -> a"),
            "{err}"
        );
        let err = load("m.toml", "[program.a]\ncommand = \"/bin/cat\"\ndepends_on = [\"a\"]\n")
            .expect_err("itself");
        assert!(err.contains("m.toml:3: program.a.depends_on: dependency cycle: a -> a"), "{err}");
        let err =
            load("m.toml", "[program.a]\ncommand = \"/bin/cat\"\ndepends_on = [\"dbb:ready\", \"x:y:z\"]\n")
                .expect_err("unknown");
        assert!(err.contains("m.toml:3: program.a.depends_on: \"x:y:z\" is not a dependency"), "{err}");
        let err = load("m.toml", "[program.a]\ncommand = \"/bin/cat\"\ndepends_on = [\"dbb:ready\"]\n")
            .expect_err("unknown");
        assert!(err.contains("m.toml:3: program.a.depends_on: \"dbb\" names no program, process or group that is configured"), "{err}");
    }

    #[test]
    fn readiness_options_in_both_formats() {
        let toml = load(
            "m.toml",
            "[program.db]\ncommand = \"/bin/cat\"\nready = \"notify\"\nready_timeout = \"30s\"\nwatchdog_sec = 10\n",
        )
        .expect("valid");
        let ini = load("s.conf", "[supervisord]\n[program:db]\ncommand=/bin/cat\nready=notify\nready_timeout=30\nwatchdog_sec=10s\n")
            .expect("valid");
        for c in [&toml, &ini] {
            let db = process(c, "db");
            assert_eq!(db.ready, values::Ready::Notify);
            assert_eq!(db.ready_timeout, Some(Duration::from_secs(30)));
            assert_eq!(db.watchdog_sec, Some(Duration::from_secs(10)));
        }
        let err = load("m.toml", "[program.db]\ncommand = \"/bin/cat\"\nready = \"probe\"\n")
            .expect_err("no probe");
        assert!(err.contains("m.toml:3: program.db.ready: ready = probe needs a readiness_probe"), "{err}");
        let err = load("s.conf", "[supervisord]\n[program:db]\ncommand=/bin/cat\nwatchdog_sec=10\n")
            .expect_err("notify");
        assert!(err.contains("s.conf:4: [program:db] watchdog_sec: needs ready = notify"), "{err}");
    }

    #[test]
    fn probes_in_both_formats() {
        let toml = load(
            "m.toml",
            "[program.web]\ncommand = \"/bin/cat\"\nready = \"probe\"\nready_timeout = \"30s\"\n\
             readiness_probe = { http = \"http://127.0.0.1:8000/healthz\", period = \"1s\", timeout = \"1s\", failure_threshold = 3, status = \"200-299\" }\n\
             liveness_probe = { exec = \"check-web '--quick'\", period = \"5s\", failure_threshold = 3, initial_delay = 2 }\n\
             [program.rpc]\ncommand = \"/bin/cat\"\nreadiness_probe = { grpc = \"[::1]:50051\", service = \"api\", success_threshold = 2 }\n\
             liveness_probe = { tcp = \"localhost:5432\" }\n",
        )
        .expect("valid");
        let ini = load(
            "s.conf",
            "[supervisord]\n[program:web]\ncommand=/bin/cat\nready=probe\nready_timeout=30\n\
             readiness_probe = http=\"http://127.0.0.1:8000/healthz\", period=1s, timeout=1s, failure_threshold=3, status=200-299\n\
             liveness_probe = exec=\"check-web '--quick'\", period=5s, failure_threshold=3, initial_delay=2\n\
             [program:rpc]\ncommand=/bin/cat\nreadiness_probe = grpc=\"[::1]:50051\", service=api, success_threshold=2\n\
             liveness_probe = tcp=localhost:5432\n",
        )
        .expect("valid");
        for c in [&toml, &ini] {
            let web = process(c, "web");
            assert_eq!(web.ready, values::Ready::Probe);
            assert_eq!(web.ready_timeout, Some(Duration::from_secs(30)));
            let r = web.readiness_probe.as_ref().expect("readiness");
            assert_eq!(
                r.check,
                values::ProbeCheck::Http {
                    url: "http://127.0.0.1:8000/healthz".into(),
                    host: "127.0.0.1".into(),
                    port: 8000,
                    path: "/healthz".into()
                }
            );
            assert_eq!(
                (r.period, r.timeout, r.failure_threshold, r.success_threshold),
                (Duration::from_secs(1), Duration::from_secs(1), 3, 1)
            );
            assert_eq!(r.status, (200, 299));
            let l = web.liveness_probe.as_ref().expect("liveness");
            assert_eq!(
                l.check,
                values::ProbeCheck::Exec {
                    command: "check-web '--quick'".into(),
                    argv: vec!["check-web".into(), "--quick".into()]
                }
            );
            assert_eq!((l.period, l.initial_delay), (Duration::from_secs(5), Duration::from_secs(2)));
            let rpc = process(c, "rpc");
            assert_eq!(rpc.ready, values::Ready::Startsecs, "a readiness probe alone does not gate");
            let r = rpc.readiness_probe.as_ref().expect("grpc");
            assert_eq!(
                r.check,
                values::ProbeCheck::Grpc { address: "[::1]:50051".into(), service: "api".into() }
            );
            assert_eq!((r.period, r.success_threshold, r.status), (Duration::from_secs(1), 2, (200, 399)));
            let l = rpc.liveness_probe.as_ref().expect("tcp");
            assert_eq!(l.check, values::ProbeCheck::Tcp { address: "localhost:5432".into() });
            assert_eq!(l.period, Duration::from_secs(10), "Kubernetes' default period for liveness");
        }
        // Converted back to TOML, the same probes and readiness (as the INI file's too).
        let again = load("m.toml", &crate::config::to_toml(&toml)).expect("the conversion loads");
        for name in ["web", "rpc"] {
            let (a, b) = (process(&again, name), process(&ini, name));
            assert_eq!(
                (&a.readiness_probe, &a.liveness_probe, a.ready),
                (&b.readiness_probe, &b.liveness_probe, b.ready)
            );
        }
        for (text, want) in [
            ("{ http = \"https://x/\" }", "http: \"https://x/\": https:// is not supported; probe the port with tcp = \"host:port\", or run a checker with exec"),
            ("{ period = \"1s\" }", "needs exactly one kind of check, exec, http, tcp or grpc; none is given"),
            ("{ tcp = \"a:1\", exec = \"x\" }", "needs exactly one kind of check, exec, http, tcp or grpc; got exec and tcp"),
            ("{ tcp = \"nohost\" }", "tcp: expected host:port like 127.0.0.1:8000, got \"nohost\""),
            ("{ tcp = \"a:1\", perod = 1 }", "\"perod\" is not a probe option; a probe takes exec, http, tcp or grpc"),
            ("{ tcp = \"a:1\", failure_threshold = 0 }", "failure_threshold: must be between 1 and 1000000, got 0"),
            ("{ tcp = \"a:1\", status = \"200\" }", "status: only an http probe checks a status"),
        ] {
            let err = load("m.toml", &format!("[program.a]\ncommand = \"/bin/cat\"\nliveness_probe = {text}\n"))
                .expect_err(text);
            assert!(err.contains(&format!("m.toml:3: program.a.liveness_probe: {want}")), "{text}: {err}");
        }
        let err = load(
            "s.conf",
            "[supervisord]\n[program:a]\ncommand=/bin/cat\n\nreadiness_probe=http=https://x:1/\n",
        )
        .expect_err("https");
        assert!(
            err.contains(
                "s.conf:5: [program:a] readiness_probe: http: \"https://x:1/\": https:// is not supported"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_backoff_options_say_where_and_what() {
        let err = load(
            "s.conf",
            "[supervisord]\n[program:web]\ncommand=/bin/cat\nbackoff=fast\nbackoff_initial=soon\nbackoff_jitter=2\nstartretries=forever\nbackoff_max=1\nbackoff_initial=5\n",
        )
        .expect_err("invalid");
        assert!(
            err.contains("s.conf:4: [program:web] backoff: expected linear or exponential, got \"fast\""),
            "{err}"
        );
        assert!(err.contains("[program:web] backoff_jitter: expected a fraction from 0 to 1"), "{err}");
        assert!(
            err.contains("[program:web] startretries: expected a number of retries like 3, or \"infinite\""),
            "{err}"
        );
        let err = load(
            "m.toml",
            "[program.web]\ncommand = \"/bin/cat\"\nbackoff_initial = \"5s\"\nbackoff_max = \"1s\"\n",
        )
        .expect_err("invalid");
        assert!(
            err.contains("m.toml:4: program.web.backoff_max: is shorter than backoff_initial (5 s)"),
            "{err}"
        );
    }

    fn load_text(name: &str, text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let ctx = Context {
            env: BTreeMap::new(),
            host_node_name: "h".into(),
            cwd: dir.path().to_path_buf(),
            host_checks: true,
        };
        let c = super::super::load_in(&path, &ctx).expect("loads");
        c.warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn misspelled_options_get_a_suggestion_in_both_formats() {
        let ini = load_text("s.conf", "[supervisord]\n[program:web]\ncommand=/bin/cat\nstartsec=5\n");
        assert!(
            ini.iter().any(|w| w.contains("[program:web] startsec") && w.contains("did you mean startsecs?")),
            "{ini:?}"
        );
        let toml = load_text("m.toml", "[program.web]\ncommand = \"/bin/cat\"\nstartsec = 5\n");
        assert!(
            toml.iter().any(|w| w.contains("program.web.startsec") && w.contains("did you mean startsecs?")),
            "{toml:?}"
        );
    }

    #[test]
    fn a_broken_section_header_is_not_corrected_to_itself() {
        // `[program:web` has no closing bracket: configparser reads it as an option of
        // [supervisord], and the command after it too.
        let ini = load_text("s.conf", "[supervisord]\n[program:web\ncommand=/bin/cat\n");
        assert!(!ini.iter().any(|w| w.contains("did you mean command?")), "{ini:?}");
        assert!(
            ini.iter()
                .any(|w| w.contains("[supervisord] command") && w.contains("not an option of [supervisord]")),
            "{ini:?}"
        );
        assert!(
            ini.iter().any(|w| w.contains("[supervisord] [program") && w.contains("closing ']'")),
            "{ini:?}"
        );
        let toml = load_text("m.toml", "[daemon]\ncommand = \"/bin/cat\"\n");
        assert!(!toml.iter().any(|w| w.contains("did you mean command?")), "{toml:?}");
        assert!(
            toml.iter().any(|w| w.contains("daemon.command") && w.contains("not an option of daemon")),
            "{toml:?}"
        );
    }

    #[test]
    fn inet_addresses_as_supervisord_reads_them() {
        let a = |s: &str| inet_address(s).map(|a| a.to_string());
        assert_eq!(a("127.0.0.1:9001").as_deref(), Ok("tcp://127.0.0.1:9001"));
        assert_eq!(a(":9001").as_deref(), Ok("tcp://0.0.0.0:9001"));
        assert_eq!(a("*:9001").as_deref(), Ok("tcp://0.0.0.0:9001"));
        assert_eq!(a("9001").as_deref(), Ok("tcp://0.0.0.0:9001"));
        assert_eq!(a("LocalHost:9001").as_deref(), Ok("tcp://localhost:9001"));
        assert!(a("host:").is_err());
        assert!(a("host:0").is_err());
        assert!(a("host:65536").is_err());
    }

    #[test]
    fn server_urls() {
        let ctx = Context {
            env: BTreeMap::new(),
            host_node_name: "h".into(),
            cwd: PathBuf::from("/srv"),
            host_checks: true,
        };
        let u = |s: &str| server_url(s, &ctx).map(|a| a.to_string());
        assert_eq!(u("unix:///run/s.sock").as_deref(), Ok("unix:///run/s.sock"));
        assert_eq!(u("unix://s.sock").as_deref(), Ok("unix:///srv/s.sock"));
        assert_eq!(u("http://localhost:9001").as_deref(), Ok("tcp://localhost:9001"));
        assert_eq!(u("http://localhost:9001/RPC2").as_deref(), Ok("tcp://localhost:9001"));
        assert_eq!(u("http://example").as_deref(), Ok("tcp://example:80"));
        assert!(u("https://example:443").is_err());
        assert!(u("localhost:9001").is_err());
    }
}
