//! Re-reading the configuration and applying it: reread, update, add, remove, avail, reload.
//!
//! A configuration that does not read or validate changes nothing: the errors go back to the
//! caller whole, and every running program carries on. One change at a time (the supervisor's
//! `changing` lock); processes are stopped before they are replaced or removed, and only
//! processes whose own settings changed are touched.

use std::collections::BTreeSet;
use std::sync::Arc;

use minder::config::{self, Config, ConfigErrors};

use crate::events::EventKind;
use crate::lifecycle::Kind;
use crate::plan::{self, Plan};
use crate::process::Fault;
use crate::supervisor::{DaemonState, Supervisor};

/// What happened (or, in a dry run, would happen) to one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    /// Restarted with new settings; the options that changed.
    Changed(Vec<String>),
    Removed,
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub group: String,
    pub name: String,
    pub change: Change,
    /// What was done: whether it was stopped, and whether it was started (a changed process
    /// may be both); a fault when a stop or start failed.
    pub result: Result<Done, Fault>,
    /// For a process it started: its state once the spawn was tried, and the spawn error
    /// when that left it in BACKOFF or FATAL (a start that failed is not an update failure,
    /// but the caller must hear of it).
    pub after_start: Option<(Kind, Option<String>)>,
}

/// The stops and starts an update made for one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    pub stopped: bool,
    pub started: bool,
}

/// Why an update could not be done.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    StillRunning(String),
    #[error("{0} is already added")]
    AlreadyAdded(String),
    #[error("minderd is shutting down")]
    ShuttingDown,
}

/// A program available in the loaded configuration (supervisorctl's avail).
#[derive(Debug, Clone)]
pub struct Available {
    pub group: String,
    pub name: String,
    pub in_use: bool,
    pub autostart: bool,
    pub group_priority: i32,
    pub priority: i32,
}

impl Supervisor {
    /// Reads the configuration file again. If it is valid it becomes the loaded
    /// configuration; the plan from the running processes to it is returned. Nothing runs or
    /// stops.
    pub async fn reread(&self) -> Result<Plan, UpdateError> {
        let _one = self.changing.lock().await;
        let fresh = self.read_config().await?;
        let (running, groups) = self.running();
        Ok(plan::plan(&running, &groups, &fresh, None))
    }

    /// Reads and resolves the configuration file on a blocking thread: reading files, globbing
    /// includes and looking up users can all wait on the system (a slow disk, NSS), and an
    /// async worker that waits stalls every other request (status, stop) scheduled on it.
    async fn read_config(&self) -> Result<Arc<Config>, UpdateError> {
        let path = self.facts().config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await.map_err(|e| {
            UpdateError::Config(ConfigErrors::one(config::Diagnostic::new(
                config::Origin::file(&self.facts().config_path, None),
                "",
                format!("reading the configuration failed: {e}"),
            )))
        })?;
        let fresh = Arc::new(loaded.map_err(UpdateError::Config)?);
        for w in &fresh.warnings {
            tracing::warn!("{w}");
        }
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    fn loaded(&self) -> Arc<Config> {
        Arc::clone(&self.loaded.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the configuration and applies it to `groups` (all when empty). With
    /// `dry_run`, returns the plan without doing anything.
    pub async fn update(&self, groups: &[String], dry_run: bool) -> Result<Vec<Applied>, UpdateError> {
        if self.shared.shutting_down() {
            return Err(UpdateError::ShuttingDown);
        }
        let _one = self.changing.lock().await;
        let fresh = self.read_config().await?;
        let only: Option<BTreeSet<String>> = if groups.is_empty() || groups.iter().any(|g| g == "all") {
            None
        } else {
            Some(groups.iter().cloned().collect())
        };
        if let Some(only) = &only {
            let (_, running_groups) = self.running();
            for g in only {
                if !running_groups.contains_key(g) && !fresh.groups.iter().any(|x| &x.name == g) {
                    return Err(UpdateError::BadName(format!("no such group: {g}")));
                }
            }
        }
        let (running, running_groups) = self.running();
        let p = plan::plan(&running, &running_groups, &fresh, only.as_ref());
        Ok(self.apply(p, &fresh, dry_run).await)
    }

    /// Carries out a plan: removals first (highest priority number first), then changes, then
    /// additions (lowest first).
    async fn apply(&self, p: Plan, cfg: &Config, dry_run: bool) -> Vec<Applied> {
        let mut out = Vec::new();
        let group_of = |g: &str| cfg.groups.iter().find(|x| x.name == g);
        let group_priority = |g: &str| group_of(g).map_or(999, |x| x.priority);
        if dry_run {
            out.extend(p.remove.iter().map(|(g, n)| applied(g, n, Change::Removed, Ok(Done::default()))));
            out.extend(
                p.change.iter().map(|(c, o)| {
                    applied(&c.group, &c.name, Change::Changed(o.clone()), Ok(Done::default()))
                }),
            );
            out.extend(p.add.iter().map(|c| applied(&c.group, &c.name, Change::Added, Ok(Done::default()))));
            return out;
        }
        let mut remove = p.remove.clone();
        remove.sort_by_key(|(g, n)| std::cmp::Reverse(self.handle(g, n).map_or(0, |h| h.config.priority)));
        for (g, n) in remove {
            let result = match self.handle(&g, &n) {
                Some(h) => stop_if_running(&h).await.map(|stopped| Done { stopped, started: false }),
                None => Ok(Done::default()),
            };
            if result.is_ok() {
                self.uninstall(&g, &n);
            }
            out.push(applied(&g, &n, Change::Removed, result));
        }
        for g in &p.groups_removed {
            self.shared.events.publish(EventKind::GroupRemoved(g.clone()));
        }
        for (g, prio) in &p.group_priorities {
            self.set_group_priority(g, *prio);
        }
        let mut change = p.change.clone();
        change.sort_by_key(|(c, _)| (group_priority(&c.group), c.priority, c.name.clone()));
        for (c, options) in change {
            let Some(old) = self.handle(&c.group, &c.name) else { continue };
            let was_running = old.snapshot().state.is_running();
            let mut after = None;
            let result = match stop_if_running(&old).await {
                Ok(stopped) => match group_of(&c.group) {
                    Some(g) => {
                        let h = self.install(c.clone(), g, Some((&old.config, &old.logs)), &cfg.daemon);
                        let started = start_if(self, &h, was_running || c.autostart).await;
                        after = after_start(&h, &started);
                        started.map(|started| Done { stopped, started })
                    }
                    None => Err(Fault::Failed(format!("group {} is not in the configuration", c.group))),
                },
                Err(f) => Err(f),
            };
            let mut a = applied(&c.group, &c.name, Change::Changed(options), result);
            a.after_start = after;
            out.push(a);
        }
        let mut add = p.add.clone();
        add.sort_by_key(|c| (group_priority(&c.group), c.priority, c.name.clone()));
        let mut added = Vec::new();
        for c in add {
            if let Some(g) = group_of(&c.group) {
                added.push(self.install(c.clone(), g, None, &cfg.daemon));
            }
        }
        // Announced once installed, as supervisord does: a new listener pool hears of its own
        // group too.
        for g in &p.groups_added {
            self.shared.events.publish(EventKind::GroupAdded(g.clone()));
        }
        // Autostart the new ones in priority order, as at daemon start.
        for h in added {
            let started = start_if(self, &h, h.config.autostart).await;
            let after = after_start(&h, &started);
            let result = started.map(|started| Done { stopped: false, started });
            let mut a = applied(&h.config.group, &h.config.name, Change::Added, result);
            a.after_start = after;
            out.push(a);
        }
        out
    }

    /// Adds a group that is in the loaded configuration but not running (supervisorctl's
    /// `add`), starting its autostart processes.
    pub async fn add_group(&self, name: &str) -> Result<Vec<Applied>, UpdateError> {
        if self.shared.shutting_down() {
            return Err(UpdateError::ShuttingDown);
        }
        let _one = self.changing.lock().await;
        let cfg = self.loaded();
        let Some(g) = cfg.groups.iter().find(|g| g.name == name) else {
            return Err(UpdateError::BadName(format!(
                "no such group in the configuration: {name} (run reread after editing it)"
            )));
        };
        let (_, running_groups) = self.running();
        if running_groups.contains_key(name) {
            return Err(UpdateError::AlreadyAdded(name.to_string()));
        }
        let p = Plan { add: g.processes.clone(), groups_added: vec![name.to_string()], ..Plan::default() };
        Ok(self.apply(p, &cfg, false).await)
    }

    /// Removes a group whose processes are all stopped (supervisorctl's `remove`).
    pub async fn remove_group(&self, name: &str) -> Result<Vec<Applied>, UpdateError> {
        let _one = self.changing.lock().await;
        let (running, running_groups) = self.running();
        if !running_groups.contains_key(name) {
            return Err(UpdateError::BadName(format!("no such group: {name}")));
        }
        let keys: Vec<plan::Key> = running.keys().filter(|(g, _)| g == name).cloned().collect();
        let busy: Vec<String> = keys
            .iter()
            .filter(|(g, n)| self.handle(g, n).is_some_and(|h| !h.snapshot().state.is_stopped()))
            .map(|(_, n)| n.clone())
            .collect();
        if !busy.is_empty() {
            return Err(UpdateError::StillRunning(format!(
                "{name} still has running processes ({}); stop them first",
                busy.join(", ")
            )));
        }
        let p = Plan { remove: keys, groups_removed: vec![name.to_string()], ..Plan::default() };
        let cfg = self.loaded();
        Ok(self.apply(p, &cfg, false).await)
    }

    /// The programs of the loaded configuration and whether each is in use.
    pub fn available(&self) -> Vec<Available> {
        let cfg = self.loaded();
        let (running, _) = self.running();
        cfg.groups
            .iter()
            .flat_map(|g| {
                let running = &running;
                g.processes.iter().map(move |p| Available {
                    group: g.name.clone(),
                    name: p.name.clone(),
                    in_use: running.contains_key(&(g.name.clone(), p.name.clone())),
                    autostart: p.autostart,
                    group_priority: g.priority,
                    priority: p.priority,
                })
            })
            .collect()
    }

    /// Re-reads the configuration and applies all of it. With `restart_all`, as supervisord's
    /// reload: every process is stopped, level by level, and everything starts afresh.
    pub async fn reload(&self, restart_all: bool) -> Result<Vec<Applied>, UpdateError> {
        if !restart_all {
            return self.update(&[], false).await;
        }
        if self.shared.shutting_down() {
            return Err(UpdateError::ShuttingDown);
        }
        let _one = self.changing.lock().await;
        // Read first: a bad configuration must leave everything running.
        let fresh = self.read_config().await?;
        self.set_state(DaemonState::Restarting);
        self.stop_levels().await;
        let (running, running_groups) = self.running();
        let mut out = Vec::new();
        for (g, n) in running.keys() {
            self.uninstall(g, n);
            out.push(applied(g, n, Change::Removed, Ok(Done { stopped: true, started: false })));
        }
        for g in running_groups.keys() {
            self.shared.events.publish(EventKind::GroupRemoved(g.clone()));
        }
        let p = Plan {
            add: fresh.groups.iter().flat_map(|g| g.processes.iter().cloned()).collect(),
            groups_added: fresh.groups.iter().map(|g| g.name.clone()).collect(),
            ..Plan::default()
        };
        out.extend(self.apply(p, &fresh, false).await);
        self.set_state(DaemonState::Running);
        Ok(out)
    }
}

fn applied(group: &str, name: &str, change: Change, result: Result<Done, Fault>) -> Applied {
    Applied { group: group.to_string(), name: name.to_string(), change, result, after_start: None }
}

/// The state a start left `h` in, when it started it.
fn after_start(
    h: &crate::process::ProcessHandle,
    started: &Result<bool, Fault>,
) -> Option<(Kind, Option<String>)> {
    match started {
        Ok(true) => {
            let snap = h.snapshot();
            let why = matches!(snap.state, Kind::Backoff | Kind::Fatal).then_some(snap.spawn_error).flatten();
            Some((snap.state, why))
        }
        _ => None,
    }
}

/// Stops a process (and waits) if it is running; whether it had to.
async fn stop_if_running(h: &crate::process::ProcessHandle) -> Result<bool, Fault> {
    match h.snapshot().state {
        Kind::Stopped | Kind::Exited | Kind::Fatal => Ok(false),
        _ => match h.stop_and_report().await {
            Ok(()) => Ok(true),
            Err(Fault::NotRunning) => Ok(false),
            Err(f) => Err(f),
        },
    }
}

/// Starts a process (without waiting for RUNNING) when `start`; whether it did.
async fn start_if(sup: &Supervisor, h: &crate::process::ProcessHandle, start: bool) -> Result<bool, Fault> {
    if !start {
        return Ok(false);
    }
    // Spawn errors end in BACKOFF/FATAL, as at daemon start; they are not an update failure.
    // A process with unmet dependencies waits for them (STARTING), as at daemon start.
    match sup.autostart_one(h).await {
        Ok(_) | Err(Fault::SpawnError(_)) => Ok(true),
        Err(f) => Err(f),
    }
}
