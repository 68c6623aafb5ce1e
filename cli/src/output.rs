//! What the command line prints: tables, supervisorctl's result lines, and JSON.

use std::io::IsTerminal;

use minder::pb;
use serde_json::{json, Value};
use tabled::settings::{Padding, Style};
use tabled::tables::CompactTable;

/// Whether to colour output: only on a terminal, and never when NO_COLOR is set.
pub fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn paint(text: &str, code: &str) -> String {
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// supervisord's name for a state.
pub fn state_name(s: pb::ProcessState) -> &'static str {
    match s {
        pb::ProcessState::Stopped => "STOPPED",
        pb::ProcessState::Starting => "STARTING",
        pb::ProcessState::Running => "RUNNING",
        pb::ProcessState::Backoff => "BACKOFF",
        pb::ProcessState::Stopping => "STOPPING",
        pb::ProcessState::Exited => "EXITED",
        pb::ProcessState::Fatal => "FATAL",
        pb::ProcessState::Unknown => "UNKNOWN",
        pb::ProcessState::Unspecified => "UNSPECIFIED",
    }
}

/// supervisord's STOPPED_STATES.
pub fn is_stopped(s: pb::ProcessState) -> bool {
    matches!(
        s,
        pb::ProcessState::Stopped
            | pb::ProcessState::Exited
            | pb::ProcessState::Fatal
            | pb::ProcessState::Unknown
    )
}

/// The colour of a process's state in the status table.
fn state_colour(p: &pb::ProcessInfo) -> &'static str {
    let unexpected_exit = p.exit_status.as_ref().is_some_and(|e| !e.expected);
    match p.state() {
        pb::ProcessState::Running => "32",
        pb::ProcessState::Starting | pb::ProcessState::Stopping | pb::ProcessState::Backoff => "33",
        pb::ProcessState::Fatal | pb::ProcessState::Unknown => "31",
        pb::ProcessState::Exited if unexpected_exit => "31",
        _ => "2",
    }
}

/// `H:MM:SS`, with days as Python's timedelta prints them.
fn uptime(d: &prost_types::Duration) -> String {
    let secs = d.seconds.max(0) as u64;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// The status table. RUNNING rows leave the description empty: its pid and uptime are in their
/// own columns.
///
/// tabled's `CompactTable`, with the column widths measured here on the text without its
/// colour: `Table` measured and laid out every cell again, which for ten thousand processes
/// took longer than the whole request.
pub fn status_table(processes: &[pb::ProcessInfo]) -> String {
    if processes.is_empty() {
        return String::new();
    }
    let colour = colour();
    let header = ["NAME", "STATE", "PID", "UPTIME", "DESCRIPTION"].map(String::from);
    let mut widths = header.each_ref().map(|h| h.len());
    let mut rows = Vec::with_capacity(processes.len() + 1);
    rows.push(header);
    for p in processes {
        let state = state_name(p.state());
        let row = [
            p.full_name.clone(),
            if colour { paint(state, state_colour(p)) } else { state.to_string() },
            if p.pid == 0 { String::new() } else { p.pid.to_string() },
            p.uptime.as_ref().map(uptime).unwrap_or_default(),
            if p.state() == pb::ProcessState::Running { String::new() } else { p.description.clone() },
        ];
        for (c, (w, cell)) in widths.iter_mut().zip(&row).enumerate() {
            let shown = if c == 1 { state } else { cell.as_str() };
            *w = (*w).max(unicode_width::UnicodeWidthStr::width(shown));
        }
        rows.push(row);
    }
    // A column's width includes its padding.
    let table = CompactTable::new(&rows)
        .columns(5)
        .width(widths.map(|w| w + 2))
        .with(Style::blank())
        .with(Padding::new(0, 2, 0, 0))
        .to_string();
    let mut out = String::with_capacity(table.len() + 1);
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// supervisorctl's status lines, byte for byte: `%-{W}s%-10s%s` with W the longest name
/// (at least 30) plus 3, then the state and the description (`pid 42, uptime 0:01:02` when
/// RUNNING, as the daemon writes it). No header, no colour: scripts parse these.
pub fn supervisorctl_status(processes: &[pb::ProcessInfo]) -> String {
    let width = processes.iter().map(|p| p.full_name.chars().count()).max().unwrap_or(0).max(30) + 3;
    let mut out = String::new();
    for p in processes {
        out.push_str(&format!("{:<width$}{:<10}{}\n", p.full_name, state_name(p.state()), p.description));
    }
    out
}

/// A time as the daemon's log shows it, in local time.
pub fn local_time(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|dt| dt.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S,%3f").to_string())
        .unwrap_or_default()
}

fn rfc3339(t: &prost_types::Timestamp) -> Value {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map_or(Value::Null, |dt| Value::String(dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

/// A process as JSON: every field of ProcessInfo, states and codes by name.
pub fn process_json(p: &pb::ProcessInfo) -> Value {
    json!({
        "name": p.name,
        "group": p.group,
        "full_name": p.full_name,
        "program": p.program,
        "state": state_name(p.state()),
        "pid": if p.pid == 0 { Value::Null } else { json!(p.pid) },
        "start_time": p.start_time.as_ref().map_or(Value::Null, rfc3339),
        "stop_time": p.stop_time.as_ref().map_or(Value::Null, rfc3339),
        "uptime_seconds": p.uptime.as_ref().map_or(Value::Null, |d| json!(d.seconds)),
        "exit_status": p.exit_status.as_ref().map_or(Value::Null, |e| json!({
            "code": match e.how { Some(pb::exit_status::How::Code(c)) => json!(c), _ => Value::Null },
            "signal": match e.how { Some(pb::exit_status::How::Signal(s)) => json!(s), _ => Value::Null },
            "expected": e.expected,
            "description": e.description,
        })),
        "spawn_error": p.spawn_error,
        "description": p.description,
        "stdout_logfile": p.stdout_logfile,
        "stderr_logfile": p.stderr_logfile,
        "spawn_count": p.spawn_count,
        "tree_pids": p.tree_pids,
        "cpu_seconds": p.cpu_time.as_ref().map_or(Value::Null, |d| json!(d.seconds as f64 + f64::from(d.nanos) / 1e9)),
        "memory_bytes": p.memory_bytes,
        "readiness": p.readiness.as_ref().map_or(Value::Null, probe_json),
        "liveness": p.liveness.as_ref().map_or(Value::Null, probe_json),
    })
}

/// A probe's results as JSON (`healthy` null until decided).
fn probe_json(p: &pb::ProbeStatus) -> Value {
    json!({
        "kind": p.kind,
        "target": p.target,
        "healthy": p.healthy,
        "consecutive_failures": p.consecutive_failures,
        "failure_threshold": p.failure_threshold,
        "last_failure": p.last_failure,
        "failures_total": p.failures_total,
    })
}

/// supervisord's name for a result code.
fn code_name(c: pb::ResultCode) -> &'static str {
    match c {
        pb::ResultCode::Success => "SUCCESS",
        pb::ResultCode::BadName => "BAD_NAME",
        pb::ResultCode::NoFile => "NO_FILE",
        pb::ResultCode::NotExecutable => "NOT_EXECUTABLE",
        pb::ResultCode::Failed => "FAILED",
        pb::ResultCode::AbnormalTermination => "ABNORMAL_TERMINATION",
        pb::ResultCode::SpawnError => "SPAWN_ERROR",
        pb::ResultCode::AlreadyStarted => "ALREADY_STARTED",
        pb::ResultCode::NotRunning => "NOT_RUNNING",
        pb::ResultCode::Unspecified => "UNSPECIFIED",
    }
}

pub fn result_json(r: &pb::ProcessResult) -> Value {
    json!({
        "name": r.name,
        "group": r.group,
        "full_name": r.full_name,
        "result": code_name(r.code()),
        "message": r.message,
        "state": r.process.as_ref().map_or(Value::Null, |p| json!(state_name(p.state()))),
    })
}

/// supervisorctl's line for one result ("web: started", "web: ERROR (spawn error)"), with the
/// reason after it where minderd knows more than supervisorctl said.
pub fn result_line(r: &pb::ProcessResult) -> String {
    use pb::ResultCode as C;
    let name = &r.full_name;
    let label = match r.code() {
        C::Success => return format!("{name}: {}", r.message),
        C::BadName if r.process.is_none() && (name.ends_with(":*") || name.ends_with(':')) => {
            return format!("{}: ERROR (no such group)", r.group);
        }
        C::BadName => "no such process",
        C::NoFile => "no such file",
        C::NotExecutable => "file is not executable",
        C::AlreadyStarted => "already started",
        C::SpawnError => "spawn error",
        C::AbnormalTermination => "abnormal termination",
        C::NotRunning => "not running",
        C::Failed => "failed",
        C::Unspecified => "unknown result",
    };
    let detail = r.message.trim();
    match detail.strip_prefix(label) {
        // "no such process (did you mean web:*?)" adds to the label rather than repeating it.
        Some(rest) => format!("{name}: ERROR ({label}){rest}"),
        None if detail.is_empty() => format!("{name}: ERROR ({label})"),
        None => format!("{name}: ERROR ({label}): {detail}"),
    }
}

/// Prints `text`, or `value` as JSON.
pub fn line(json: bool, text: &str, value: Value) {
    if json {
        print_json(&value);
    } else {
        outln!("{text}");
    }
}

pub fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()));
}
