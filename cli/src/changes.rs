//! The commands that change the configuration in use: reread, update, add, remove, avail,
//! reload, and `config convert` (which needs no daemon).

use minder::pb;
use serde_json::json;

use crate::exit;
use crate::output;

fn kind_name(c: &pb::ConfigChange) -> &'static str {
    match c.kind() {
        pb::ChangeKind::Added => "added",
        pb::ChangeKind::Changed => "changed",
        pb::ChangeKind::Removed => "removed",
        pb::ChangeKind::Unspecified => "unknown",
    }
}

fn changes_json(changes: &pb::ConfigChanges) -> serde_json::Value {
    json!({
        "applied": changes.applied,
        "changes": changes.changes.iter().map(|c| json!({
            "name": c.full_name,
            "group": c.group,
            "change": kind_name(c),
            "options": c.options,
            "stopped": c.stopped,
            "started": c.started,
            "result": if c.code() == pb::ResultCode::Success { "SUCCESS" } else { "FAILED" },
            "message": c.message,
            "state": if c.state() == pb::ProcessState::Unspecified {
                serde_json::Value::Null
            } else {
                json!(output::state_name(c.state()))
            },
            "spawn_error": c.spawn_error,
        })).collect::<Vec<_>>(),
    })
}

/// supervisorctl's word for what happened to a program's group; a process of a group of
/// several programs is named on its own.
fn done_line(c: &pb::ConfigChange) -> String {
    let name = &c.full_name;
    let what = match c.kind() {
        pb::ChangeKind::Added => "added",
        pb::ChangeKind::Changed => "updated",
        pb::ChangeKind::Removed => "removed",
        pb::ChangeKind::Unspecified => "changed",
    };
    if c.group == c.name {
        format!("{name}: {what} process group")
    } else {
        format!("{name}: {what}")
    }
}

/// Prints changes as supervisorctl's update does, process by process (`NAME: stopped`,
/// `NAME: added process group`, ...), and says when a process it started is in BACKOFF or
/// FATAL rather than on its way up; returns the exit code.
fn print_changes(changes: &pb::ConfigChanges, json: bool) -> u8 {
    let failed = changes.changes.iter().any(|c| c.code() != pb::ResultCode::Success);
    if json {
        output::print_json(&changes_json(changes));
    } else if changes.changes.is_empty() {
        outln!("No config updates to processes");
    } else {
        for c in &changes.changes {
            let name = &c.full_name;
            if !changes.applied {
                match c.kind() {
                    pb::ChangeKind::Changed => {
                        outln!("{name}: would be updated ({})", c.options.join(", "))
                    }
                    _ => outln!("{name}: would be {}", kind_name(c)),
                }
                continue;
            }
            if c.stopped {
                outln!("{name}: stopped");
            }
            outln!("{}", done_line(c));
            if c.code() != pb::ResultCode::Success {
                outln!("{name}: ERROR ({})", c.message);
            } else if c.started {
                let why = if c.spawn_error.is_empty() { "unknown error" } else { c.spawn_error.as_str() };
                match c.state() {
                    pb::ProcessState::Fatal => outln!("{name}: not started: {why} (FATAL)"),
                    pb::ProcessState::Backoff => outln!("{name}: not started yet: {why} (BACKOFF, retrying)"),
                    _ => {}
                }
            }
        }
    }
    if failed {
        exit::GENERIC
    } else {
        exit::OK
    }
}

pub async fn reread(client: &mut crate::client::Client, json: bool) -> Result<u8, tonic::Status> {
    let changes = client.reread(pb::RereadRequest {}).await?.into_inner();
    if json {
        output::print_json(&changes_json(&changes));
        return Ok(exit::OK);
    }
    // supervisorctl's words: available, changed, disappeared; sorted by name.
    let mut lines: Vec<String> = changes
        .changes
        .iter()
        .map(|c| match c.kind() {
            pb::ChangeKind::Added => format!("{}: available", c.full_name),
            pb::ChangeKind::Changed => format!("{}: changed ({})", c.full_name, c.options.join(", ")),
            _ => format!("{}: disappeared", c.full_name),
        })
        .collect();
    lines.sort();
    if lines.is_empty() {
        outln!("No config updates to processes");
    }
    for l in lines {
        outln!("{l}");
    }
    Ok(exit::OK)
}

pub async fn update(
    client: &mut crate::client::Client,
    groups: Vec<String>,
    dry_run: bool,
    json: bool,
) -> Result<u8, tonic::Status> {
    let changes = client.update(pb::UpdateRequest { groups, dry_run }).await?.into_inner();
    Ok(print_changes(&changes, json))
}

pub async fn reload(
    client: &mut crate::client::Client,
    restart_all: bool,
    json: bool,
) -> Result<u8, tonic::Status> {
    let changes = client.reload(pb::ReloadRequest { restart_all }).await?.into_inner();
    Ok(print_changes(&changes, json))
}

/// supervisorctl's add and remove, one group at a time, with its messages.
pub async fn add_remove(
    client: &mut crate::client::Client,
    names: Vec<String>,
    add: bool,
    json: bool,
) -> Result<u8, tonic::Status> {
    let mut code = exit::OK;
    let mut results = Vec::new();
    for name in names {
        let r = if add {
            client.add_group(pb::AddGroupRequest { name: name.clone() }).await
        } else {
            client.remove_group(pb::RemoveGroupRequest { name: name.clone() }).await
        };
        let (ok, line) = match r {
            Ok(_) => (true, format!("{name}: {} process group", if add { "added" } else { "removed" })),
            Err(s) => {
                let line = match s.code() {
                    tonic::Code::AlreadyExists => "ERROR: process group already active".to_string(),
                    tonic::Code::NotFound => format!("ERROR: no such process/group: {name}"),
                    tonic::Code::FailedPrecondition if !add => {
                        format!("ERROR: process/group still running: {name}")
                    }
                    _ => format!("ERROR: {}", s.message()),
                };
                // supervisorctl leaves the exit code alone for "already active".
                if s.code() != tonic::Code::AlreadyExists {
                    code = exit::GENERIC;
                }
                (false, line)
            }
        };
        if json {
            results.push(json!({"group": name, "ok": ok, "message": line}));
        } else {
            outln!("{line}");
        }
    }
    if json {
        output::print_json(&json!({ "results": results }));
    }
    Ok(code)
}

pub async fn avail(client: &mut crate::client::Client, json: bool) -> Result<u8, tonic::Status> {
    let list = client.list_available(pb::ListAvailableRequest {}).await?.into_inner();
    if json {
        let v: Vec<_> = list
            .processes
            .iter()
            .map(|p| {
                json!({"name": p.full_name, "group": p.group, "in_use": p.in_use, "autostart": p.autostart,
                       "group_priority": p.group_priority, "priority": p.priority})
            })
            .collect();
        output::print_json(&json!({ "processes": v }));
    } else {
        for p in &list.processes {
            let inuse = if p.in_use { "in use" } else { "avail" };
            let auto = if p.autostart { "auto" } else { "manual" };
            let prio = format!("{}:{}", p.group_priority, p.priority);
            outln!("{:<32} {inuse:<9} {auto:<9} {prio}", p.full_name);
        }
    }
    Ok(exit::OK)
}

/// `minder config convert FILE`: prints the TOML equivalent of a configuration.
pub fn convert(path: &std::path::Path) -> u8 {
    match minder::config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("minder: warning: {w}");
            }
            out!("{}", minder::config::to_toml(&c));
            exit::OK
        }
        Err(e) => {
            eprintln!("minder: {e}");
            exit::INVALID_ARGS
        }
    }
}
