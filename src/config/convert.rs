//! Writes a resolved [`Config`] as an equivalent native TOML configuration: the migration
//! path from supervisord.conf (`minder config convert FILE.conf`).
//!
//! The output writes every daemon setting out (the two formats' daemon defaults differ) and
//! leaves out the program settings at their default (the same in both); it reads back into
//! the same [`Config`]. Expansions are already
//! done, so every literal `%` is written `%%`. A program of several processes is written back
//! as one `[program.NAME]` with `numprocs`, its per-process options as templates using
//! `%(process_num)d`; when no such template reproduces every process, each process becomes a
//! program of its own in an explicit group (a comment says so).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

use super::{Config, DaemonConfig, GroupConfig, GroupKind, LogFormat, LogTarget, Owner, ProcessConfig};
use crate::address::Address;

/// The native TOML equivalent of `config`.
pub fn to_toml(config: &Config) -> String {
    let mut doc = DocumentMut::new();
    let mut notes: Vec<String> = Vec::new();
    doc.insert("daemon", Item::Table(daemon(&config.daemon)));

    if let Some(c) = &config.client {
        let mut t = Table::new();
        let url = match &c.serverurl {
            Address::Unix(p) => format!("unix://{}", p.display()),
            Address::Tcp(hp) => format!("http://{hp}"),
        };
        t.insert("serverurl", s(&url));
        if let Some(u) = &c.username {
            t.insert("username", s(u));
        }
        if let Some(p) = &c.password {
            t.insert("password", s(p));
        }
        t.insert("prompt", s(&c.prompt));
        if let Some(h) = &c.history_file {
            t.insert("history_file", path(h));
        }
        doc.insert("ctl", Item::Table(t));
    }

    let mut programs = implicit_table();
    let mut groups = implicit_table();
    let mut listeners = implicit_table();
    let mut fcgis = implicit_table();
    for g in &config.groups {
        match &g.kind {
            GroupKind::Programs => {
                programs_of_group(g, &config.daemon, &mut programs, &mut groups, &mut notes)
            }
            GroupKind::EventListener(pool) => {
                let mut t = program_table(&owned(&g.processes), &config.daemon, &mut notes, &g.name);
                // An event listener's pool and processes read the same `priority`; only
                // when it is not given do they differ (-1 and 999).
                let proc_priority = g.processes.first().map_or(999, |p| p.priority);
                if g.priority == -1 && proc_priority == 999 {
                    t.remove("priority");
                } else {
                    t.insert("priority", int(g.priority));
                }
                let mut events = Array::new();
                for e in &pool.events {
                    events.push(e.as_str());
                }
                t.insert("events", toml_edit::value(events));
                t.insert("buffer_size", int(pool.buffer_size));
                t.insert("result_handler", s(&pool.result_handler));
                listeners.insert(&g.name, Item::Table(t));
            }
            GroupKind::FcgiProgram(socket) => {
                let mut t = program_table(&owned(&g.processes), &config.daemon, &mut notes, &g.name);
                t.insert("priority", int(g.priority));
                t.insert("socket", s(&socket.address.to_string()));
                if let Some(b) = socket.backlog {
                    t.insert("socket_backlog", int(b));
                }
                if let Some(o) = socket.owner {
                    t.insert("socket_owner", s(&owner(o)));
                }
                if let Some(m) = socket.mode {
                    t.insert("socket_mode", toml_edit::value(format!("{m:04o}")));
                }
                fcgis.insert(&g.name, Item::Table(t));
            }
        }
    }
    for (name, table) in
        [("program", programs), ("group", groups), ("eventlistener", listeners), ("fcgi-program", fcgis)]
    {
        if !table.is_empty() {
            doc.insert(name, Item::Table(table));
        }
    }

    if !config.rpcinterfaces.is_empty() {
        let mut all = implicit_table();
        for r in &config.rpcinterfaces {
            let mut t = Table::new();
            t.insert("supervisor.rpcinterface_factory", s(&r.factory));
            for (k, v) in &r.options {
                t.insert(k, s(v));
            }
            all.insert(&r.name, Item::Table(t));
        }
        doc.insert("rpcinterface", Item::Table(all));
    }

    let mut out = format!(
        "# minder configuration converted from {}.\n\
         # Every setting is written out, with supervisord's expansions already done\n\
         # (so a literal % is written %%).\n",
        config.path.display()
    );
    for n in &notes {
        let _ = writeln!(out, "# Note: {n}");
    }
    out.push('\n');
    out.push_str(&doc.to_string());
    out
}

fn implicit_table() -> Table {
    let mut t = Table::new();
    t.set_implicit(true);
    t
}

/// A string as TOML, with `%` doubled so the expansion step gives it back unchanged.
fn s(text: &str) -> Item {
    toml_edit::value(text.replace('%', "%%"))
}

fn path(p: &Path) -> Item {
    s(&p.to_string_lossy())
}

fn int(n: impl TryInto<i64>) -> Item {
    toml_edit::value(n.try_into().unwrap_or(i64::MAX))
}

fn owner(o: Owner) -> String {
    match o.gid {
        Some(g) => format!("{}:{g}", o.uid),
        None => o.uid.to_string(),
    }
}

/// A probe as the inline table the TOML front end reads back; defaults left out.
fn probe_table(probe: &crate::config::Probe, default_period: u64) -> Item {
    use crate::config::ProbeCheck;
    let mut t = toml_edit::InlineTable::new();
    let mut put = |key: &str, item: Item| {
        if let Ok(v) = item.into_value() {
            t.insert(key, v);
        }
    };
    put(probe.check.kind(), s(probe.check.target()));
    if let ProbeCheck::Grpc { service, .. } = &probe.check {
        if !service.is_empty() {
            put("service", s(service));
        }
    }
    if probe.period != std::time::Duration::from_secs(default_period) {
        put("period", secs(probe.period));
    }
    if probe.timeout != std::time::Duration::from_secs(1) {
        put("timeout", secs(probe.timeout));
    }
    if probe.failure_threshold != 3 {
        put("failure_threshold", int(probe.failure_threshold));
    }
    if probe.success_threshold != 1 {
        put("success_threshold", int(probe.success_threshold));
    }
    if !probe.initial_delay.is_zero() {
        put("initial_delay", secs(probe.initial_delay));
    }
    if probe.status != (200, 399) {
        put("status", s(&format!("{}-{}", probe.status.0, probe.status.1)));
    }
    toml_edit::value(t)
}

fn secs(d: std::time::Duration) -> Item {
    if d.subsec_nanos() == 0 {
        int(d.as_secs())
    } else {
        toml_edit::value(d.as_secs_f64())
    }
}

fn daemon(d: &DaemonConfig) -> Table {
    let mut t = Table::new();
    let mut listen = Array::new();
    for a in &d.listen {
        listen.push(a.to_string().replace('%', "%%"));
    }
    t.insert("listen", toml_edit::value(listen));
    t.insert("socket_mode", toml_edit::value(format!("{:04o}", d.socket_mode)));
    if let Some(o) = d.socket_owner {
        t.insert("socket_owner", s(&owner(o)));
    }
    if d.syslog {
        t.insert("logfile", s("syslog"));
    } else if let Some(p) = &d.logfile {
        t.insert("logfile", path(p));
    }
    t.insert("logfile_maxbytes", int(d.logfile_maxbytes));
    t.insert("logfile_backups", int(d.logfile_backups));
    t.insert("loglevel", s(d.loglevel.name()));
    if let Some(p) = &d.pidfile {
        t.insert("pidfile", path(p));
    }
    t.insert("umask", toml_edit::value(format!("{:03o}", d.umask)));
    t.insert("nodaemon", toml_edit::value(d.nodaemon));
    t.insert("silent", toml_edit::value(d.silent));
    t.insert("minfds", int(d.minfds));
    t.insert("minprocs", int(d.minprocs));
    t.insert("nocleanup", toml_edit::value(d.nocleanup));
    t.insert("childlogdir", path(&d.childlogdir));
    if let Some(u) = &d.user {
        t.insert("user", s(u));
    }
    if let Some(p) = &d.directory {
        t.insert("directory", path(p));
    }
    t.insert("strip_ansi", toml_edit::value(d.strip_ansi));
    if let Some(tls) = &d.tls {
        t.insert("tls_cert", path(&tls.cert));
        t.insert("tls_key", path(&tls.key));
        if let Some(ca) = &tls.client_ca {
            t.insert("tls_client_ca", path(ca));
        }
    }
    if let Some(p) = &d.tokens_file {
        t.insert("tokens_file", path(p));
    }
    let list = |items: &[String]| {
        let mut a = Array::new();
        for i in items {
            a.push(i.as_str());
        }
        toml_edit::value(a)
    };
    if !d.socket_users.is_empty() {
        t.insert("socket_users", list(&d.socket_users));
    }
    if !d.socket_groups.is_empty() {
        t.insert("socket_groups", list(&d.socket_groups));
    }
    if d.insecure {
        t.insert("insecure", toml_edit::value(true));
    }
    if let Some(m) = &d.metrics {
        t.insert("metrics", s(m));
    }
    match &d.cgroup {
        crate::config::CgroupSetting::Auto => {}
        crate::config::CgroupSetting::Off => drop(t.insert("cgroup", s("off"))),
        crate::config::CgroupSetting::Path(p) => drop(t.insert("cgroup", s(p))),
    }
    if !d.kill_on_exit {
        t.insert("kill_on_exit", toml_edit::value(false));
    }
    t.insert("identifier", s(&d.identifier));
    t.insert("environment", env_table(&d.environment));
    if !d.credentials.is_empty() {
        let mut creds = implicit_table();
        for (addr, c) in &d.credentials {
            let mut ct = Table::new();
            ct.insert("username", s(&c.username));
            ct.insert("password", s(&c.password.as_written()));
            creds.insert(&addr.to_string(), Item::Table(ct));
        }
        t.insert("credentials", Item::Table(creds));
    }
    t
}

fn env_table(env: &BTreeMap<String, String>) -> Item {
    let mut it = InlineTable::new();
    for (k, v) in env {
        it.insert(k, Value::from(v.replace('%', "%%")));
    }
    toml_edit::value(it)
}

/// A `[group:x]` or a program's own group: its programs, and a `[group.NAME]` when needed.
fn programs_of_group(
    g: &GroupConfig,
    daemon: &DaemonConfig,
    programs: &mut Table,
    groups: &mut Table,
    notes: &mut Vec<String>,
) {
    let mut by_program: BTreeMap<&str, Vec<&ProcessConfig>> = BTreeMap::new();
    for p in &g.processes {
        by_program.entry(&p.program).or_default().push(p);
    }
    // A program's own group: one program, named as the group, at the program's priority.
    let implicit = by_program.len() == 1
        && by_program.contains_key(g.name.as_str())
        && g.processes.iter().all(|p| p.priority == g.priority);
    if implicit {
        let procs = owned(&g.processes);
        if let Some(t) = program_as_one(&procs, daemon) {
            programs.insert(&g.name, Item::Table(t));
            return;
        }
    }
    let mut members = Array::new();
    for (program, procs) in &by_program {
        let procs: Vec<ProcessConfig> = procs.iter().map(|p| (*p).clone()).collect();
        match program_as_one(&procs, daemon) {
            Some(t) => {
                programs.insert(program, Item::Table(t));
                members.push(*program);
            }
            None => {
                notes.push(format!(
                    "the processes of program {program:?} differ in ways no %(process_num)d template gives back, so each is a program of its own in group {:?}",
                    g.name
                ));
                for p in &procs {
                    let mut t = process_table(p, daemon);
                    t.insert("process_name", s(&p.name));
                    programs.insert(&p.name, Item::Table(t));
                    members.push(p.name.as_str());
                }
            }
        }
    }
    if by_program.is_empty() && implicit_empty(g) {
        // An empty group of one's own: a program with numprocs = 0.
        let mut t = Table::new();
        t.insert("command", s("true"));
        t.insert("numprocs", int(0));
        t.insert("priority", int(g.priority));
        programs.insert(&g.name, Item::Table(t));
        return;
    }
    let mut t = Table::new();
    t.insert("programs", toml_edit::value(members));
    t.insert("priority", int(g.priority));
    groups.insert(&g.name, Item::Table(t));
}

/// An empty group is written as a program with numprocs = 0 (as it most likely was).
fn implicit_empty(g: &GroupConfig) -> bool {
    g.processes.is_empty()
}

/// The processes of a group, as values.
fn owned(procs: &[std::sync::Arc<ProcessConfig>]) -> Vec<ProcessConfig> {
    procs.iter().map(|p| (**p).clone()).collect()
}

/// The table of an event listener or FastCGI program: one program, possibly of many
/// processes.
fn program_table(
    procs: &[ProcessConfig],
    daemon: &DaemonConfig,
    notes: &mut Vec<String>,
    name: &str,
) -> Table {
    match program_as_one(procs, daemon) {
        Some(t) => t,
        None => {
            notes.push(format!(
                "the processes of {name:?} differ in ways no %(process_num)d template gives back; the first one's settings are used for all"
            ));
            procs.first().map(|p| process_table(p, daemon)).unwrap_or_default()
        }
    }
}

/// One process's settings as a program table (without numprocs or templates). Settings at
/// their default are left out: a program's defaults are the same in both formats.
fn process_table(p: &ProcessConfig, daemon: &DaemonConfig) -> Table {
    let mut t = Table::new();
    let mut put = |key: &str, item: Item, default: bool| {
        if !default {
            t.insert(key, item);
        }
    };
    put("command", s(&p.command), false);
    put("priority", int(p.priority), p.priority == 999);
    put("autostart", toml_edit::value(p.autostart), p.autostart);
    let autorestart = match p.autorestart {
        super::AutoRestart::True => "true",
        super::AutoRestart::False => "false",
        super::AutoRestart::Unexpected => "unexpected",
    };
    put("autorestart", s(autorestart), p.autorestart == super::AutoRestart::Unexpected);
    put("startsecs", secs(p.startsecs), p.startsecs.as_secs_f64() == 1.0);
    if p.startretries == crate::config::INFINITE_RETRIES {
        put("startretries", s("infinite"), false);
    } else {
        put("startretries", int(p.startretries), p.startretries == 3);
    }
    let b = &p.backoff;
    if b.kind == crate::config::BackoffKind::Exponential {
        put("backoff", s("exponential"), false);
    }
    put("backoff_initial", secs(b.initial), b.initial.as_secs_f64() == 1.0);
    let default_max =
        (b.kind == crate::config::BackoffKind::Exponential).then(|| std::time::Duration::from_secs(60));
    if let Some(max) = b.max.filter(|m| Some(*m) != default_max) {
        put("backoff_max", secs(max), false);
    }
    put("backoff_jitter", toml_edit::value(b.jitter), b.jitter == 0.0);
    if let Some(reset) = b.reset {
        put("backoff_reset", secs(reset), false);
    }
    let mut codes = Array::new();
    for c in &p.exitcodes {
        codes.push(i64::from(*c));
    }
    put("exitcodes", toml_edit::value(codes), p.exitcodes == [0]);
    put("oneshot", toml_edit::value(p.oneshot), !p.oneshot);
    let mut deps = Array::new();
    for d in &p.depends_on {
        deps.push(d.to_string());
    }
    put("depends_on", toml_edit::value(deps), p.depends_on.is_empty());
    let ready = match p.ready {
        crate::config::Ready::Startsecs => "startsecs",
        crate::config::Ready::Notify => "notify",
        crate::config::Ready::Probe => "probe",
    };
    put("ready", s(ready), p.ready == crate::config::Ready::Startsecs);
    for (key, probe, default_period) in
        [("readiness_probe", &p.readiness_probe, 1), ("liveness_probe", &p.liveness_probe, 10)]
    {
        if let Some(probe) = probe {
            put(key, probe_table(probe, default_period), false);
        }
    }
    if let Some(t) = p.ready_timeout {
        put("ready_timeout", secs(t), false);
    }
    if let Some(t) = p.watchdog_sec {
        put("watchdog_sec", secs(t), false);
    }
    put(
        "stopsignal",
        s(p.stopsignal.as_str().trim_start_matches("SIG")),
        p.stopsignal == crate::signal::Signal::SIGTERM,
    );
    put("stopwaitsecs", secs(p.stopwaitsecs), p.stopwaitsecs.as_secs_f64() == 10.0);
    put("stopasgroup", toml_edit::value(p.stopasgroup), !p.stopasgroup);
    put("killasgroup", toml_edit::value(p.killasgroup), p.killasgroup == p.stopasgroup);
    if let Some(m) = p.kill_mode {
        let word = match m {
            crate::config::KillMode::Cgroup => "cgroup",
            crate::config::KillMode::Group => "group",
            crate::config::KillMode::Process => "process",
        };
        put("kill_mode", toml_edit::value(word), false);
    }
    let l = &p.limits;
    for (key, v) in [("memory_max", l.memory_max), ("memory_high", l.memory_high)] {
        if let Some(v) = v {
            put(key, int(v as i64), false);
        }
    }
    for (key, v) in [("cpu_weight", l.cpu_weight), ("pids_max", l.pids_max), ("io_weight", l.io_weight)] {
        if let Some(v) = v {
            put(key, int(i64::from(v)), false);
        }
    }
    if let Some(p) = l.cpu_max_percent {
        put("cpu_max", s(&format!("{p}%")), false);
    }
    if let Some(u) = &p.user {
        put("user", s(u), false);
    }
    if let Some(d) = &p.directory {
        put("directory", path(d), false);
    }
    if let Some(m) = p.umask {
        put("umask", toml_edit::value(format!("{m:03o}")), false);
    }
    let own = own_environment(p, daemon);
    put("environment", env_table(&own), own.is_empty());
    put("redirect_stderr", toml_edit::value(p.redirect_stderr), !p.redirect_stderr);
    put("log_timestamps", toml_edit::value(p.log_timestamps), !p.log_timestamps);
    put("log_format", toml_edit::value("json"), p.log_format != LogFormat::Json);
    for (ch, target, maxbytes, backups, compress, capture, events, syslog) in [
        (
            "stdout",
            &p.stdout_logfile,
            p.stdout_logfile_maxbytes,
            p.stdout_logfile_backups,
            p.stdout_logfile_compress,
            p.stdout_capture_maxbytes,
            p.stdout_events_enabled,
            p.stdout_syslog,
        ),
        (
            "stderr",
            &p.stderr_logfile,
            p.stderr_logfile_maxbytes,
            p.stderr_logfile_backups,
            p.stderr_logfile_compress,
            p.stderr_capture_maxbytes,
            p.stderr_events_enabled,
            p.stderr_syslog,
        ),
    ] {
        put(&format!("{ch}_logfile"), log_target(target), *target == LogTarget::Auto);
        put(&format!("{ch}_logfile_maxbytes"), int(maxbytes), maxbytes == 50 << 20);
        put(&format!("{ch}_logfile_backups"), int(backups), backups == 10);
        if let Some(c) = compress {
            put(&format!("{ch}_logfile_compress"), s(c.name()), false);
        }
        put(&format!("{ch}_capture_maxbytes"), int(capture), capture == 0);
        put(&format!("{ch}_events_enabled"), toml_edit::value(events), !events);
        put(&format!("{ch}_syslog"), toml_edit::value(syslog), !syslog);
    }
    if let Some(url) = &p.serverurl {
        put("serverurl", s(url), false);
    }
    t
}

fn log_target(t: &LogTarget) -> Item {
    match t {
        LogTarget::None => s("NONE"),
        LogTarget::Auto => s("AUTO"),
        LogTarget::File(p) => path(p),
    }
}

/// The program's own environment: what it adds to, or changes in, the daemon's.
fn own_environment(p: &ProcessConfig, daemon: &DaemonConfig) -> BTreeMap<String, String> {
    p.environment
        .iter()
        .filter(|(k, v)| daemon.environment.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One program from all its processes: with `numprocs`, `numprocs_start` and templates for
/// what differs from process to process. `None` when no template reproduces them all.
fn program_as_one(procs: &[ProcessConfig], daemon: &DaemonConfig) -> Option<Table> {
    let mut procs: Vec<&ProcessConfig> = procs.iter().collect();
    procs.sort_by_key(|p| p.process_num);
    let first = *procs.first()?;
    let mut t = process_table(first, daemon);
    if procs.len() == 1 && first.process_num == 0 {
        if first.name != first.program {
            t.insert("process_name", s(&first.name));
        }
        return Some(t);
    }
    // Everything but the per-process options must be the same for all.
    let fixed = |p: &ProcessConfig| {
        let mut t = process_table(p, daemon);
        for k in ["command", "directory", "environment", "stdout_logfile", "stderr_logfile"] {
            t.remove(k);
        }
        t.to_string()
    };
    let first_fixed = fixed(first);
    if procs.iter().any(|p| fixed(p) != first_fixed) {
        return None;
    }
    let nums: Vec<u32> = procs.iter().map(|p| p.process_num).collect();
    // The numbers must be consecutive, as numprocs makes them.
    if nums.windows(2).any(|w| w[1] != w[0] + 1) {
        return None;
    }
    let texts = |f: &dyn Fn(&ProcessConfig) -> Option<String>| -> Option<Vec<String>> {
        procs.iter().map(|p| f(p)).collect()
    };
    let name = template(&nums, &texts(&|p| Some(p.name.clone()))?)?;
    t.insert("process_name", toml_edit::value(name));
    t.insert("numprocs", int(procs.len()));
    t.insert("numprocs_start", int(first.process_num));
    let command = template(&nums, &texts(&|p| Some(p.command.clone()))?)?;
    t.insert("command", toml_edit::value(command));
    let dirs: Vec<Option<String>> =
        procs.iter().map(|p| p.directory.as_ref().map(|d| d.to_string_lossy().into_owned())).collect();
    match dirs.iter().all(Option::is_some) {
        true => {
            let dirs: Vec<String> = dirs.into_iter().flatten().collect();
            t.insert("directory", toml_edit::value(template(&nums, &dirs)?));
        }
        false if dirs.iter().all(Option::is_none) => {}
        false => return None,
    }
    for (key, get) in [
        ("stdout_logfile", (|p: &ProcessConfig| p.stdout_logfile.clone()) as fn(&ProcessConfig) -> LogTarget),
        ("stderr_logfile", |p: &ProcessConfig| p.stderr_logfile.clone()),
    ] {
        let targets: Vec<LogTarget> = procs.iter().map(|p| get(p)).collect();
        if targets.iter().all(|x| *x == targets[0]) {
            continue;
        }
        let files: Vec<String> = targets
            .iter()
            .map(|x| match x {
                LogTarget::File(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Option<_>>()?;
        t.insert(key, toml_edit::value(template(&nums, &files)?));
    }
    let envs: Vec<BTreeMap<String, String>> = procs.iter().map(|p| own_environment(p, daemon)).collect();
    let keys: Vec<&String> = envs[0].keys().collect();
    if envs.iter().any(|e| e.keys().collect::<Vec<_>>() != keys) {
        return None;
    }
    let mut it = InlineTable::new();
    for k in keys {
        let values: Vec<String> = envs.iter().map(|e| e[k].clone()).collect();
        it.insert(k, Value::from(template(&nums, &values)?));
    }
    t.insert("environment", toml_edit::value(it));
    Some(t)
}

/// A `%(process_num)d` template that gives `values[i]` for process number `nums[i]`, with
/// every other `%` escaped; `None` if there is none (of the usual widths).
fn template(nums: &[u32], values: &[String]) -> Option<String> {
    let escape = |x: &str| x.replace('%', "%%");
    if values.iter().all(|v| *v == values[0]) {
        return Some(escape(&values[0]));
    }
    // The widest padding first: "web_00" is web_%(process_num)02d, not web_0%(process_num)d.
    let formats: Vec<(String, usize)> = (2..=6)
        .rev()
        .map(|w| (format!("%(process_num)0{w}d"), w))
        .chain(std::iter::once(("%(process_num)d".to_string(), 0)))
        .collect();
    for (fmt, width) in &formats {
        let render = |n: u32| format!("{n:0width$}", width = *width);
        let first = render(nums[0]);
        if !values[0].contains(&first) {
            continue;
        }
        // Every occurrence of the number, or only the last one.
        let all: Vec<&str> = values[0].split(first.as_str()).collect();
        let last = values[0].rsplit_once(first.as_str()).map(|(a, b)| vec![a, b]).unwrap_or_default();
        for parts in [all, last] {
            let fits = nums.iter().zip(values).all(|(n, v)| parts.join(&render(*n)) == *v);
            if fits {
                let escaped: Vec<String> = parts.iter().map(|p| escape(p)).collect();
                return Some(escaped.join(fmt));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(template(&[0, 1], &v(&["web_00", "web_01"])).as_deref(), Some("web_%(process_num)02d"));
        assert_eq!(
            template(&[8, 9, 10], &v(&["w8 -p 8", "w9 -p 9", "w10 -p 10"])).as_deref(),
            Some("w%(process_num)d -p %(process_num)d")
        );
        // The 2 of "app2" is not the process number; only the last occurrence is.
        assert_eq!(
            template(&[2, 3], &v(&["/opt/app2/x2", "/opt/app2/x3"])).as_deref(),
            Some("/opt/app2/x%(process_num)d")
        );
        assert_eq!(template(&[0, 1], &v(&["100%", "100%"])).as_deref(), Some("100%%"));
        assert_eq!(template(&[0, 1], &v(&["a", "b"])), None);
    }
}
