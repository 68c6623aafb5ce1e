//! Gives a [`RawConfig`] its meaning: defaults, expansions, numprocs, groups and validation.
//!
//! Every option is read through [`Section::take`], which records an error and carries on with
//! the default, so one pass finds every problem. Options nobody took are unknown: a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{ConfigErrors, Diagnostic, Origin};
use super::expand::{self, Var, Vars};
use super::raw::{Raw, RawConfig, RawSection, RawValue, SectionKind};
use super::values::{self, AutoRestart, Parsed};
use super::{Config, DaemonConfig, GroupConfig, LogLevel, LogTarget, ProcessConfig};
use crate::address::Address;
use crate::signal::Signal;

/// Collects errors and warnings across the whole configuration.
struct Report {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// One section being read: which options have been taken, and how to name them.
struct Section<'a> {
    raw: &'a RawSection,
    toml: bool,
    taken: BTreeSet<&'a str>,
}

impl<'a> Section<'a> {
    fn new(raw: &'a RawSection, toml: bool) -> Self {
        Section { raw, toml, taken: BTreeSet::new() }
    }

    /// How the user wrote this option: `program.web.startsecs` or `[program:web] startsecs`.
    fn key(&self, opt: &str) -> String {
        let label = self.raw.kind.label(&self.raw.name, self.toml);
        if self.toml {
            format!("{label}.{opt}")
        } else {
            format!("{label} {opt}")
        }
    }

    fn origin(&self, opt: &str) -> Origin {
        self.raw.options.get(opt).map_or_else(|| self.raw.origin.clone(), |v| v.origin.clone())
    }

    fn get(&mut self, opt: &'a str) -> Option<&'a RawValue> {
        self.taken.insert(opt);
        self.raw.options.get(opt)
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
        let Some(value) = self.get(opt) else {
            return default;
        };
        let expanded = match expand_raw(&value.value, vars) {
            Ok(v) => v,
            Err(e) => {
                report.error(value.origin.clone(), self.key(opt), e.to_string());
                return default;
            }
        };
        match parse(&expanded) {
            Ok(v) => v,
            Err(msg) => {
                report.error(value.origin.clone(), self.key(opt), msg);
                default
            }
        }
    }

    /// Reads `opt` as text, expanded, if given.
    fn text(&mut self, report: &mut Report, opt: &'a str, vars: &Vars) -> Option<String> {
        self.take(report, opt, vars, None, |r| text(r).map(Some))
    }

    /// Reports every option no one asked for.
    fn finish(self, report: &mut Report) {
        for (name, value) in &self.raw.options {
            if !self.taken.contains(name.as_str()) {
                report.warnings.push(Diagnostic::new(
                    value.origin.clone(),
                    self.key(name),
                    "unknown option, ignored (check its spelling)",
                ));
            }
        }
    }
}

impl Report {
    fn error(&mut self, origin: Origin, key: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(Diagnostic::new(origin, key, msg));
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

fn host_node_name() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

pub(super) fn resolve(raw: &RawConfig, env: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
    let mut report = Report { errors: Vec::new(), warnings: raw.warnings.clone() };
    let host = host_node_name();

    let daemon = resolve_daemon(raw, env, &host, &mut report);

    // ENV_X sees the daemon's environment over the real one, as in supervisord.
    let mut env_expansions = env.clone();
    env_expansions.extend(daemon.environment.iter().map(|(k, v)| (k.clone(), v.clone())));

    // Which group each program belongs to: its [group], or its own implicit group.
    let mut group_of: BTreeMap<String, String> = BTreeMap::new();
    let programs: BTreeMap<&str, &RawSection> = raw
        .sections
        .iter()
        .filter(|s| s.kind == SectionKind::Program)
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut explicit_groups = Vec::new();
    for section in raw.sections.iter().filter(|s| s.kind == SectionKind::Group) {
        let mut sec = Section::new(section, raw.toml);
        if let Err(e) = check_name(&section.name) {
            report.error(section.origin.clone(), sec.key(""), e);
        }
        let vars = Vars::new()
            .with_env(&env_expansions)
            .str("here", here_of(&section.origin, &raw.path))
            .str("host_node_name", host.clone())
            .str("group_name", section.name.clone());
        let members =
            sec.take(&mut report, "programs", &vars, Vec::new(), |r| values::string_list(r, Some(',')));
        if sec.get("programs").is_none() {
            report.error(
                section.origin.clone(),
                sec.key("programs"),
                "required: the programs this group runs, e.g. programs = [\"web\", \"worker\"]",
            );
        }
        let priority = sec.take(&mut report, "priority", &vars, 999, priority);
        for member in &members {
            if !programs.contains_key(member.as_str()) {
                report.error(
                    sec.origin("programs"),
                    sec.key("programs"),
                    format!("names program {member:?}, which is not defined"),
                );
            } else if let Some(other) = group_of.insert(member.clone(), section.name.clone()) {
                report.error(
                    sec.origin("programs"),
                    sec.key("programs"),
                    format!(
                        "program {member:?} is already in group {other:?}; a program belongs to one group"
                    ),
                );
            }
        }
        sec.finish(&mut report);
        explicit_groups.push((section, priority, members));
    }

    let mut groups: BTreeMap<String, GroupConfig> = BTreeMap::new();
    for (section, priority, _) in &explicit_groups {
        groups.insert(
            section.name.clone(),
            GroupConfig { name: section.name.clone(), priority: *priority, processes: Vec::new() },
        );
    }
    for (name, section) in &programs {
        let group_name = group_of.get(*name).map_or(*name, String::as_str);
        let Some((program_priority, processes)) =
            resolve_program(section, group_name, raw, &env_expansions, &daemon, &host, &mut report)
        else {
            continue;
        };
        if !group_of.contains_key(*name) && groups.contains_key(*name) {
            report.error(
                section.origin.clone(),
                section.kind.label(name, raw.toml),
                format!("a group is also named {name:?}; rename one of them"),
            );
            continue;
        }
        let group = groups.entry(group_name.to_string()).or_insert_with(|| GroupConfig {
            name: group_name.to_string(),
            priority: program_priority,
            processes: Vec::new(),
        });
        for p in processes {
            if group.processes.iter().any(|q| q.name == p.name) {
                report.error(
                    section.origin.clone(),
                    section.kind.label(name, raw.toml),
                    format!("process name {:?} is used twice in group {group_name:?}", p.name),
                );
            } else {
                group.processes.push(p);
            }
        }
    }

    for section in &raw.sections {
        if !matches!(section.kind, SectionKind::Daemon | SectionKind::Program | SectionKind::Group) {
            report.warnings.push(Diagnostic::new(
                section.origin.clone(),
                section.kind.label(&section.name, raw.toml),
                "this section is not supported in this configuration format, ignored",
            ));
        }
    }

    if !report.errors.is_empty() {
        return Err(ConfigErrors { errors: report.errors });
    }
    let mut groups: Vec<GroupConfig> = groups.into_values().collect();
    for g in &mut groups {
        g.processes.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    }
    groups.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    Ok(Config { path: raw.path.clone(), daemon, groups, warnings: report.warnings })
}

fn priority(raw: &Raw) -> Parsed<i32> {
    values::integer_in(raw, i32::MIN.into(), i32::MAX.into()).map(|n| n as i32)
}

fn path_text(raw: &Raw) -> Parsed<PathBuf> {
    let t = text(raw)?;
    if t.is_empty() {
        return Err("expected a path, got an empty string".into());
    }
    Ok(expand_user(&t))
}

/// `~` and `~/x` as Python's `os.path.expanduser` reads them (supervisord applies it to paths).
fn expand_user(p: &str) -> PathBuf {
    if p == "~" || p.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(p.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(p)
}

fn resolve_daemon(
    raw: &RawConfig,
    env: &BTreeMap<String, String>,
    host: &str,
    report: &mut Report,
) -> DaemonConfig {
    let mut d = DaemonConfig {
        listen: Vec::new(),
        socket_mode: 0o700,
        pidfile: None,
        logfile: None,
        loglevel: LogLevel::Info,
        identifier: "minder".to_string(),
        childlogdir: std::env::temp_dir(),
        environment: BTreeMap::new(),
    };
    let Some(section) = raw.section(SectionKind::Daemon) else {
        return d;
    };
    let mut sec = Section::new(section, raw.toml);
    let vars = Vars::new()
        .with_env(env)
        .str("here", here_of(&section.origin, &raw.path))
        .str("host_node_name", host.to_string());
    d.listen = sec.take(report, "listen", &vars, Vec::new(), |r| {
        values::string_list(r, None)?.iter().map(|a| a.parse::<Address>()).collect()
    });
    d.socket_mode = sec.take(report, "socket_mode", &vars, d.socket_mode, values::octal);
    d.pidfile = sec.take(report, "pidfile", &vars, None, |r| path_text(r).map(Some));
    d.logfile = sec.take(report, "logfile", &vars, None, |r| path_text(r).map(Some));
    d.loglevel = sec.take(report, "loglevel", &vars, d.loglevel, |r| {
        LogLevel::parse(&text(r)?).ok_or_else(|| format!("expected one of {}", LogLevel::NAMES))
    });
    d.identifier = sec.take(report, "identifier", &vars, d.identifier.clone(), text);
    d.childlogdir = sec.take(report, "childlogdir", &vars, d.childlogdir.clone(), |r| {
        let p = path_text(r)?;
        if p.is_dir() {
            Ok(p)
        } else {
            Err(format!("{} is not an existing directory", p.display()))
        }
    });
    d.environment = sec.take(report, "environment", &vars, BTreeMap::new(), values::environment);
    sec.finish(report);
    d
}

/// Resolves one program section into its processes. Returns the program's priority too (the
/// priority of its implicit group). `None` when the section is too broken to go on with.
fn resolve_program(
    section: &RawSection,
    group_name: &str,
    raw: &RawConfig,
    env_expansions: &BTreeMap<String, String>,
    daemon: &DaemonConfig,
    host: &str,
    report: &mut Report,
) -> Option<(i32, Vec<ProcessConfig>)> {
    let errors_before = report.errors.len();
    let mut sec = Section::new(section, raw.toml);
    if let Err(e) = check_name(&section.name) {
        report.error(section.origin.clone(), sec.key(""), e);
        return None;
    }
    let here = here_of(&section.origin, &raw.path);
    let vars = Vars::new()
        .with_env(env_expansions)
        .str("here", here)
        .str("program_name", section.name.clone())
        .str("group_name", group_name.to_string())
        .str("host_node_name", host.to_string());

    let priority = sec.take(report, "priority", &vars, 999, priority);
    let autostart = sec.take(report, "autostart", &vars, true, values::boolean);
    let autorestart = sec.take(report, "autorestart", &vars, AutoRestart::Unexpected, values::autorestart);
    let startsecs = sec.take(report, "startsecs", &vars, Duration::from_secs(1), values::seconds);
    let startretries = sec.take(report, "startretries", &vars, 3, |r| {
        values::integer_in(r, 0, u32::MAX.into()).map(|n| n as u32)
    });
    let exitcodes = sec.take(report, "exitcodes", &vars, vec![0], values::exitcodes);
    let stopsignal = sec.take(report, "stopsignal", &vars, Signal::SIGTERM, values::signal);
    let stopwaitsecs = sec.take(report, "stopwaitsecs", &vars, Duration::from_secs(10), values::seconds);
    let stopasgroup = sec.take(report, "stopasgroup", &vars, false, values::boolean);
    let killasgroup = sec.take(report, "killasgroup", &vars, stopasgroup, values::boolean);
    if stopasgroup && !killasgroup {
        report.error(
            sec.origin("killasgroup"),
            sec.key("killasgroup"),
            "cannot be false when stopasgroup is true (a group that is stopped must also be killable as a group)",
        );
    }
    let redirect_stderr = sec.take(report, "redirect_stderr", &vars, false, values::boolean);
    let numprocs = sec.take(report, "numprocs", &vars, 1, |r| values::integer_in(r, 1, 100_000));
    let numprocs_start =
        sec.take(report, "numprocs_start", &vars, 0, |r| values::integer_in(r, 0, i64::from(i32::MAX)));
    let umask = sec.take(report, "umask", &vars, None, |r| values::octal(r).map(Some));
    let user = sec.take(report, "user", &vars, None, |r| {
        let name = text(r)?;
        lookup_user(&name)?;
        Ok(Some(name))
    });

    // Per-process options are expanded once per process, with process_num and numprocs.
    let name_template = match sec.get("process_name") {
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
                "must contain %(process_num) when numprocs is greater than 1 (numprocs = {numprocs}), e.g. process_name = \"%(program_name)s_%(process_num)02d\""
            ),
        );
        return None;
    }
    if sec.get("command").is_none() {
        report.error(section.origin.clone(), sec.key("command"), "required: the command to run");
        return None;
    }

    let mut processes = Vec::new();
    for num in numprocs_start..numprocs_start + numprocs {
        let mut pvars = vars.clone();
        pvars.set("process_num", Var::Int(num)).set("numprocs", Var::Int(numprocs));
        let own_env = sec.take(report, "environment", &pvars, BTreeMap::new(), values::environment);
        // Per-process options also see the program's own environment as ENV_X.
        let pvars = pvars.with_env(&own_env);
        let mut environment = daemon.environment.clone();
        environment.extend(own_env);

        let name = match expand::expand(&name_template, &pvars) {
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
        let command = sec.text(report, "command", &pvars).unwrap_or_default();
        let argv = match shlex::split(&command) {
            Some(argv) if !argv.is_empty() => argv,
            Some(_) => {
                report.error(sec.origin("command"), sec.key("command"), "is empty");
                Vec::new()
            }
            None => {
                report.error(
                    sec.origin("command"),
                    sec.key("command"),
                    format!("cannot be split into words (is a quote not closed?): {command:?}"),
                );
                Vec::new()
            }
        };
        let directory = sec.take(report, "directory", &pvars, None, |r| path_text(r).map(Some));
        let stdout_logfile = sec.take(report, "stdout_logfile", &pvars, LogTarget::Auto, log_target);
        let stderr_logfile = if redirect_stderr {
            // Read (so it is not called unknown) but ignored, as in supervisord.
            let _ = sec.get("stderr_logfile");
            LogTarget::None
        } else {
            sec.take(report, "stderr_logfile", &pvars, LogTarget::Auto, log_target)
        };
        processes.push(ProcessConfig {
            name,
            group: group_name.to_string(),
            program: section.name.clone(),
            command,
            argv,
            priority,
            autostart,
            autorestart,
            startsecs,
            startretries,
            exitcodes: exitcodes.clone(),
            stopsignal,
            stopwaitsecs,
            stopasgroup,
            killasgroup,
            user: user.clone(),
            directory,
            umask,
            environment,
            redirect_stderr,
            stdout_logfile,
            stderr_logfile,
        });
        if report.errors.len() > errors_before {
            // Every process would repeat the same errors; one set is enough.
            break;
        }
    }
    sec.finish(report);
    (report.errors.len() == errors_before).then_some((priority, processes))
}

fn log_target(raw: &Raw) -> Parsed<LogTarget> {
    let t = text(raw)?;
    match t.trim().to_ascii_lowercase().as_str() {
        "none" | "off" => Ok(LogTarget::None),
        "auto" => Ok(LogTarget::Auto),
        "syslog" => Err("syslog as a log target is not supported; use a file path, AUTO or NONE".into()),
        _ => {
            let p = expand_user(&t);
            match p.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(format!(
                    "the directory {} does not exist (create it, or use AUTO or NONE)",
                    dir.display()
                )),
                _ => Ok(LogTarget::File(p)),
            }
        }
    }
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
