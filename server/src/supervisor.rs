//! The set of groups and processes one daemon supervises, and the operations on many of them
//! at once: selection by name, start and stop in priority order, shutdown level by level.
//!
//! Dependencies (`depends_on`) are worked out here, the one place that sees every process: a
//! start whose dependencies are not met puts the process in WAITING (STARTING without a
//! child, its description saying what for) and a small task follows the dependencies'
//! snapshots until they are, then lets it spawn; `start web` starts what web needs; stops go
//! in waves, dependents first. A dependency that fails (FATAL) leaves its dependents waiting,
//! saying so, until it is started again.
//!
//! The registry is read far more than it changes; it sits behind a std `RwLock` held only to
//! clone handles, never across an `.await`. Each process's state belongs to its own task
//! ([`crate::process`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use std::os::fd::OwnedFd;

use minder::config::{Condition, Config, FcgiSocket, GroupConfig, GroupKind, LogTarget, ProcessConfig};
use minder::signal::Signal;
use tokio::sync::{watch, Notify};

use crate::events::{DaemonPhase, EventKind};
use crate::lifecycle::Kind;
use crate::logs::{LogChannel, LogSpec};
use crate::process::{Fault, ProcessHandle, Shared, Snapshot, Started, Stdio};

/// The state of the daemon as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonState {
    Running,
    /// Stopping everything to start it again (reload --restart-all).
    Restarting,
    Shutdown,
}

/// What a request names, parsed as supervisorctl's `split_namespec` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Group(String),
    Process { group: String, name: String },
}

impl Target {
    /// Parses a selector: `all`, `NAME`, `GROUP:*`, `GROUP:`, `GROUP:NAME`.
    pub fn parse(s: &str) -> Result<Target, String> {
        if s == "all" {
            return Ok(Target::All);
        }
        if s.is_empty() {
            return Err("an empty name selects nothing; use NAME, GROUP:*, GROUP:NAME or all".into());
        }
        match s.split_once(':') {
            Some(("", _)) => Err(format!("{s:?} has no group name before ':'")),
            Some((_, rest)) if rest.contains(':') => {
                Err(format!("{s:?} has more than one ':'; use GROUP:NAME or GROUP:*"))
            }
            Some((group, "" | "*")) => Ok(Target::Group(group.to_string())),
            Some((group, name)) => Ok(Target::Process { group: group.into(), name: name.into() }),
            None => Ok(Target::Process { group: s.into(), name: s.into() }),
        }
    }

    /// Whether it names exactly one process (start then reports ALREADY_STARTED rather than
    /// skipping a running process, as supervisord does).
    fn is_single(&self) -> bool {
        matches!(self, Target::Process { .. })
    }
}

/// The outcome of an action on one process, or on a selector that named nothing.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The process acted on; `None` when `selector` matched nothing.
    pub process: Option<ProcessHandle>,
    /// The selector as given, for outcomes of selectors that matched nothing.
    pub selector: String,
    /// What was done, in supervisorctl's words: "started", "stopped", "signalled".
    pub done: &'static str,
    pub result: Result<(), Fault>,
}

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no such process: {0}")]
    NotFound(String),
    #[error("minderd is shutting down")]
    ShuttingDown,
}

/// Facts about the daemon that do not change while it runs.
#[derive(Debug, Clone)]
pub struct DaemonFacts {
    pub pid: u32,
    pub identifier: String,
    pub config_path: PathBuf,
    pub start_time: SystemTime,
    /// How many times this daemon has been upgraded in place since it started.
    pub upgrades: u32,
    /// Why the last upgrade did not take (the old binary took the hand-over back).
    pub upgrade_failure: Option<String>,
    pub hostname: String,
}

struct Group {
    priority: i32,
    processes: BTreeMap<String, ProcessHandle>,
}

#[derive(Default)]
struct Registry {
    groups: BTreeMap<String, Group>,
}

pub struct Supervisor {
    /// Itself, for the tasks that wait for dependencies (they must not keep it alive).
    me: Weak<Supervisor>,
    /// Bumped whenever a process is installed or removed: waiting processes look again.
    generation: watch::Sender<u64>,
    pub(crate) shared: Arc<Shared>,
    registry: RwLock<Registry>,
    facts: DaemonFacts,
    state: watch::Sender<DaemonState>,
    shutdown_requested: Notify,
    /// The configuration as last read (at start, or by reread): what update, add and avail
    /// work from. Running processes may differ from it until an update.
    pub(crate) loaded: std::sync::Mutex<Arc<Config>>,
    /// One reread, update, add, remove or reload at a time.
    pub(crate) changing: tokio::sync::Mutex<()>,
    /// The bound socket of each FastCGI group, kept while its settings stay the same.
    sockets: std::sync::Mutex<BTreeMap<String, (FcgiSocket, Bound)>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("facts", &self.facts).finish_non_exhaustive()
    }
}

/// A FastCGI socket as bound, or why it could not be.
type Bound = Result<Arc<OwnedFd>, String>;

/// How many starts of one priority are in flight at once (see [`Supervisor::start_each`]).
const SPAWN_WINDOW: usize = 8;

/// The order processes start in: group priority, process priority, then names.
fn start_key(h: &ProcessHandle, group_priority: i32) -> (i32, i32, String, String) {
    (group_priority, h.config.priority, h.config.group.clone(), h.config.name.clone())
}

impl Supervisor {
    /// Builds the registry for `config` and starts a task per process (none is spawned yet).
    pub fn new(config: Arc<Config>, shared: Arc<Shared>) -> Arc<Supervisor> {
        let facts = DaemonFacts {
            pid: std::process::id(),
            identifier: config.daemon.identifier.clone(),
            config_path: config.path.clone(),
            // The first start's, across upgrades.
            start_time: shared.started,
            upgrades: shared.upgrades,
            upgrade_failure: shared.upgrade_failure.clone(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let sup = Arc::new_cyclic(|me| Supervisor {
            me: me.clone(),
            generation: watch::channel(0).0,
            shared,
            registry: RwLock::new(Registry::default()),
            facts,
            state: watch::channel(DaemonState::Running).0,
            shutdown_requested: Notify::new(),
            loaded: std::sync::Mutex::new(Arc::clone(&config)),
            changing: tokio::sync::Mutex::new(()),
            sockets: std::sync::Mutex::new(BTreeMap::new()),
        });
        let hub = &sup.shared.events.listeners;
        hub.set_identifier(&config.daemon.identifier);
        for g in &config.groups {
            for p in &g.processes {
                sup.install(p.clone(), g, None, &config.daemon);
            }
            // supervisord adds each group at start with a PROCESS_GROUP_ADDED event (pools
            // added before it hear of it), then says it is RUNNING.
            hub.notify("PROCESS_GROUP_ADDED", || format!("groupname:{}\n", g.name));
        }
        hub.notify("SUPERVISOR_STATE_CHANGE_RUNNING", String::new);
        sup
    }

    /// The FastCGI socket of group `g`, bound on first use (and again when its settings change).
    fn socket_for(&self, g: &GroupConfig) -> Option<Bound> {
        let GroupKind::FcgiProgram(spec) = &g.kind else { return None };
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, bound)) = sockets.get(&g.name) {
            if old == spec && bound.is_ok() {
                return Some(bound.clone());
            }
        }
        let bound = crate::listen::bind_fcgi(spec).map(Arc::new);
        if let Err(e) = &bound {
            tracing::error!("{e}");
        }
        sockets.insert(g.name.clone(), (spec.clone(), bound.clone()));
        Some(bound)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        // Writers never panic half-way through an update, so a poisoned lock is still sound.
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a task for `p` and puts it in the registry (replacing any process of that name).
    /// `reuse` gives the log channels of the process it replaces, kept where the file is the
    /// same so followers carry on.
    pub(crate) fn install(
        &self,
        p: Arc<ProcessConfig>,
        group: &GroupConfig,
        reuse: Option<(&ProcessConfig, &Stdio)>,
        daemon: &minder::config::DaemonConfig,
    ) -> ProcessHandle {
        let group_priority = group.priority;
        let mut logs = logs_for(&p, daemon, reuse);
        if let GroupKind::EventListener(pool) = &group.kind {
            self.shared.events.listeners.ensure_pool(&group.name, pool);
            logs.pool = Some(group.name.clone());
        }
        match self.socket_for(group) {
            Some(Ok(sock)) => logs.socket = Some(sock),
            Some(Err(why)) => logs.socket_error = Some(why),
            None => {}
        }
        let group = p.group.clone();
        let name = p.name.clone();
        let h = ProcessHandle::spawn(p, logs, Arc::clone(&self.shared));
        let mut reg = self.write();
        let g = reg
            .groups
            .entry(group)
            .or_insert_with(|| Group { priority: group_priority, processes: BTreeMap::new() });
        g.priority = group_priority;
        g.processes.insert(name, h.clone());
        drop(reg);
        self.generation.send_modify(|n| *n += 1);
        h
    }

    /// Takes a process out of the registry (its group too, once empty). The caller has stopped
    /// it; its task ends when the last handle goes.
    pub(crate) fn uninstall(&self, group: &str, name: &str) -> Option<ProcessHandle> {
        let mut reg = self.write();
        let g = reg.groups.get_mut(group)?;
        let h = g.processes.remove(name);
        if g.processes.is_empty() {
            reg.groups.remove(group);
        }
        drop(reg);
        self.generation.send_modify(|n| *n += 1);
        h
    }

    pub(crate) fn set_group_priority(&self, group: &str, priority: i32) {
        if let Some(g) = self.write().groups.get_mut(group) {
            g.priority = priority;
        }
    }

    /// Every running process's settings, and every group's priority, for planning.
    pub(crate) fn running(&self) -> (BTreeMap<crate::plan::Key, Arc<ProcessConfig>>, BTreeMap<String, i32>) {
        let reg = self.read();
        let procs = reg
            .groups
            .iter()
            .flat_map(|(g, grp)| {
                grp.processes.iter().map(move |(n, h)| ((g.clone(), n.clone()), Arc::clone(&h.config)))
            })
            .collect();
        let groups = reg.groups.iter().map(|(g, grp)| (g.clone(), grp.priority)).collect();
        (procs, groups)
    }

    /// The handle of one process, by group and name.
    pub(crate) fn handle(&self, group: &str, name: &str) -> Option<ProcessHandle> {
        self.read().groups.get(group)?.processes.get(name).cloned()
    }

    pub fn facts(&self) -> &DaemonFacts {
        &self.facts
    }

    /// The daemon's state as it changes.
    pub fn watch_state(&self) -> watch::Receiver<DaemonState> {
        self.state.subscribe()
    }

    pub fn state(&self) -> DaemonState {
        *self.state.borrow()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        // Writers never panic half-way through an update, so a poisoned lock is still sound.
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every process, in start order.
    pub fn all(&self) -> Vec<ProcessHandle> {
        let reg = self.read();
        let mut all: Vec<_> = reg
            .groups
            .values()
            .flat_map(|g| g.processes.values().map(move |h| (start_key(h, g.priority), h.clone())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(_, h)| h).collect()
    }

    /// Every process, sorted by group then name (the order of status listings).
    pub fn all_by_name(&self) -> Vec<ProcessHandle> {
        let reg = self.read();
        reg.groups.values().flat_map(|g| g.processes.values().cloned()).collect()
    }

    /// The processes a target names, in start order, or why it names none.
    fn resolve(&self, target: &Target) -> Result<Vec<ProcessHandle>, String> {
        let reg = self.read();
        let in_order = |g: &Group| {
            let mut v: Vec<_> = g.processes.values().cloned().collect();
            v.sort_by_key(|h| start_key(h, g.priority));
            v
        };
        match target {
            Target::All => {
                drop(reg);
                Ok(self.all())
            }
            Target::Group(name) => {
                reg.groups.get(name).map(in_order).ok_or_else(|| "no such group".to_string())
            }
            Target::Process { group, name } => match reg.groups.get(group) {
                Some(g) => g.processes.get(name).map(|h| vec![h.clone()]).ok_or_else(|| {
                    if group == name {
                        format!("no such process (did you mean {group}:*?)")
                    } else {
                        "no such process".to_string()
                    }
                }),
                None => Err("no such process".to_string()),
            },
        }
    }

    /// Lists the processes `selectors` name (all when empty), sorted by group then name, and
    /// the selectors that named nothing.
    pub fn list(&self, selectors: &[String]) -> Result<(Vec<ProcessHandle>, Vec<String>), RequestError> {
        // Everything: already in that order, without sorting and de-duplicating thousands.
        if selectors.is_empty() || selectors.iter().all(|s| s == "all") {
            return Ok((self.all_by_name(), Vec::new()));
        }
        let mut unmatched = Vec::new();
        let mut found: BTreeMap<(String, String), ProcessHandle> = BTreeMap::new();
        for s in selectors {
            let target = Target::parse(s).map_err(RequestError::InvalidArgument)?;
            match self.resolve(&target) {
                Ok(hs) => {
                    for h in hs {
                        found.insert((h.config.group.clone(), h.config.name.clone()), h);
                    }
                }
                Err(_) => unmatched.push(s.clone()),
            }
        }
        Ok((found.into_values().collect(), unmatched))
    }

    /// One process by `NAME` or `GROUP:NAME`.
    pub fn get(&self, name: &str) -> Result<ProcessHandle, RequestError> {
        match Target::parse(name).map_err(RequestError::InvalidArgument)? {
            t @ Target::Process { .. } => self
                .resolve(&t)
                .map(|mut v| v.remove(0))
                .map_err(|_| RequestError::NotFound(name.to_string())),
            _ => Err(RequestError::InvalidArgument(format!(
                "{name:?} names several processes; use NAME or GROUP:NAME"
            ))),
        }
    }

    /// The processes selectors name, each once, in start order; `keep` decides which of a
    /// group's (or all's) processes take part, as supervisord's predicates do. Selectors that
    /// named nothing come back as BAD_NAME outcomes.
    fn select(
        &self,
        selectors: &[String],
        keep: impl Fn(Kind) -> bool,
    ) -> Result<(Vec<ProcessHandle>, Vec<Outcome>), RequestError> {
        if selectors.is_empty() {
            return Err(RequestError::InvalidArgument(
                "name at least one process: NAME, GROUP:*, GROUP:NAME or all".into(),
            ));
        }
        if self.shared.shutting_down() {
            return Err(RequestError::ShuttingDown);
        }
        let targets = selectors
            .iter()
            .map(|s| Target::parse(s).map(|t| (s, t)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RequestError::InvalidArgument)?;
        let mut seen = BTreeSet::new();
        let mut chosen = Vec::new();
        let mut bad = Vec::new();
        for (s, target) in targets {
            match self.resolve(&target) {
                Ok(hs) => {
                    for h in hs {
                        let explicit = target.is_single();
                        if (explicit || keep(h.snapshot().state)) && seen.insert(h.config.full_name()) {
                            chosen.push(h);
                        }
                    }
                }
                Err(why) => bad.push(Outcome {
                    process: None,
                    selector: s.clone(),
                    done: "",
                    result: Err(Fault::BadName(why)),
                }),
            }
        }
        let mut keyed: Vec<_> =
            chosen.into_iter().map(|h| (start_key(&h, self.group_priority(&h)), h)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((keyed.into_iter().map(|(_, h)| h).collect(), bad))
    }

    /// Starts what `selectors` name and what they need (`depends_on`), spawning in priority
    /// order, dependencies first, then (with `wait`) waiting for each to be RUNNING or to fail.
    pub async fn start(&self, selectors: &[String], wait: bool) -> Result<Vec<Outcome>, RequestError> {
        let (chosen, mut outcomes) = self.select(selectors, |k| !k.is_running())?;
        let chosen = self.with_needs(chosen);
        let pending = self.start_each(chosen, true, wait).await;
        let settled = join_all(pending.into_iter().map(|(h, r)| async move {
            let result = match r {
                Ok(started) => self.settled(&h, started).await,
                Err(f) => Err(f),
            };
            Outcome { selector: h.config.full_name(), process: Some(h), done: "started", result }
        }))
        .await;
        outcomes.extend(settled);
        Ok(outcomes)
    }

    /// Stops what `selectors` name: every stop signal is sent (highest priority number first),
    /// then, with `wait`, each stop is waited for. Where some of them depend on others, the
    /// dependents are stopped (and waited for) first, wave by wave.
    pub async fn stop(&self, selectors: &[String], wait: bool) -> Result<Vec<Outcome>, RequestError> {
        let (mut chosen, mut outcomes) = self.select(selectors, Kind::is_running)?;
        chosen.reverse();
        let how = if wait { Wait::Report } else { Wait::No };
        let waves = stop_waves(chosen);
        let last = waves.len().saturating_sub(1);
        for (i, wave) in waves.into_iter().enumerate() {
            // What depends on the next wave is stopped before that wave is signalled.
            let how = if i < last && how == Wait::No { Wait::Quietly } else { how };
            outcomes.extend(stop_all(wave, how).await);
        }
        Ok(outcomes)
    }

    /// Starts one process, or, when its dependencies are not met, puts it in WAITING and
    /// follows them until they are.
    async fn start_one(&self, h: &ProcessHandle, explicit: bool, wait: bool) -> Result<Started, Fault> {
        match self.unmet(h) {
            None if explicit => h.start(wait).await,
            None => h.autostart().await,
            Some(unmet) => {
                let started = h.start_waiting(explicit, wait, unmet.reason).await?;
                self.follow_dependencies(h.clone());
                Ok(started)
            }
        }
    }

    /// Starts a process as autostart does (without waiting for RUNNING), after its
    /// dependencies (for update and reload).
    pub(crate) async fn autostart_one(&self, h: &ProcessHandle) -> Result<Started, Fault> {
        self.start_one(h, false, false).await
    }

    /// Waits for a start to settle. A process still waiting for a dependency that will not get
    /// there on its own (FATAL, stopped, exited) settles as a failure saying which; it stays
    /// waiting, and starts when the dependency is started.
    async fn settled(&self, h: &ProcessHandle, started: Started) -> Result<(), Fault> {
        if h.config.depends_on.is_empty() {
            return started.settled().await;
        }
        let settled = started.settled();
        tokio::pin!(settled);
        loop {
            let change = self.next_change(h);
            if h.snapshot().waiting.is_some() {
                if let Some(unmet) = self.unmet(h).filter(|u| u.stuck) {
                    return Err(Fault::Failed(unmet.reason));
                }
            }
            tokio::select! {
                r = &mut settled => return r,
                () = change => {}
            }
        }
    }

    /// The processes a dependency names (never `h` itself).
    fn matching(&self, h: &ProcessHandle, dep: &minder::config::Dependency) -> Vec<ProcessHandle> {
        let me = h.config.full_name();
        self.all_by_name()
            .into_iter()
            .filter(|q| {
                dep.matches(&q.config.group, &q.config.name, &q.config.program) && q.config.full_name() != me
            })
            .collect()
    }

    /// What `h` still waits for, or `None` when every dependency is met.
    fn unmet(&self, h: &ProcessHandle) -> Option<Unmet> {
        let mut parts: Vec<String> = Vec::new();
        let mut stuck = false;
        for dep in &h.config.depends_on {
            for q in self.matching(h, dep) {
                let snap = q.snapshot();
                if satisfied(dep.condition, &snap, q.config.oneshot) {
                    continue;
                }
                let name = q.config.full_name();
                let part = match snap.state {
                    Kind::Starting | Kind::Running | Kind::Backoff | Kind::Stopping => name,
                    other => {
                        // At rest and not what we need: it gets there only if started again.
                        stuck = true;
                        format!("{name} ({other})")
                    }
                };
                if !parts.contains(&part) {
                    parts.push(part);
                }
            }
        }
        (!parts.is_empty()).then(|| Unmet { reason: format!("waiting for {}", parts.join(", ")), stuck })
    }

    /// Resolves at the next change to `h`, to any of its dependencies, or to the registry.
    /// Everything is marked seen now, so a change after this call (and before the wait) is
    /// not missed.
    fn next_change(&self, h: &ProcessHandle) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receivers = vec![h.watch()];
        for dep in &h.config.depends_on {
            receivers.extend(self.matching(h, dep).iter().map(ProcessHandle::watch));
        }
        for rx in &mut receivers {
            rx.borrow_and_update();
        }
        let mut generation = self.generation.subscribe();
        async move {
            type Change = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
            let mut changes: Vec<Change> = receivers
                .into_iter()
                .map(|mut rx| -> Change {
                    Box::pin(async move {
                        // A process whose task ended changes no more; the registry says when it goes.
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    })
                })
                .collect();
            changes.push(Box::pin(async move {
                if generation.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }));
            futures_util::future::select_all(changes).await;
        }
    }

    /// A task that follows a waiting process's dependencies, updates what it says it waits
    /// for, and lets it spawn once they are met. It ends when the process is no longer waiting
    /// (stopped meanwhile) or the supervisor is gone.
    fn follow_dependencies(&self, h: ProcessHandle) {
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                let change = {
                    let Some(sup) = me.upgrade() else { return };
                    let change = sup.next_change(&h);
                    let Some(waiting) = h.snapshot().waiting else { return };
                    match sup.unmet(&h) {
                        None => {
                            h.proceed();
                            return;
                        }
                        Some(unmet) if unmet.reason != waiting => h.set_waiting(unmet.reason),
                        Some(_) => {}
                    }
                    change
                };
                change.await;
            }
        });
    }

    /// `chosen`, with what they need that is not on its way (transitively), dependencies
    /// before their dependents and otherwise in start order.
    fn with_needs(&self, chosen: Vec<ProcessHandle>) -> Vec<ProcessHandle> {
        let mut set = chosen;
        let mut i = 0;
        while i < set.len() {
            let h = set[i].clone();
            for dep in &h.config.depends_on {
                for q in self.matching(&h, dep) {
                    let snap = q.snapshot();
                    let at_rest = matches!(snap.state, Kind::Stopped | Kind::Exited | Kind::Fatal);
                    let name = q.config.full_name();
                    if at_rest
                        && !satisfied(dep.condition, &snap, q.config.oneshot)
                        && !set.iter().any(|x| x.config.full_name() == name)
                    {
                        set.push(q);
                    }
                }
            }
            i += 1;
        }
        if set.iter().all(|h| h.config.depends_on.is_empty()) {
            return set;
        }
        // Start order, then dependencies first (Kahn's algorithm, picking in start order).
        let order: Vec<String> = self.all().iter().map(|h| h.config.full_name()).collect();
        set.sort_by_key(|h| order.iter().position(|n| *n == h.config.full_name()));
        let mut placed: Vec<ProcessHandle> = Vec::with_capacity(set.len());
        while !set.is_empty() {
            let ready = set.iter().position(|h| {
                !set.iter().any(|other| other.config.full_name() != h.config.full_name() && depends(h, other))
            });
            let next = set.remove(ready.unwrap_or(0));
            placed.push(next);
        }
        placed
    }

    /// Stops, then starts, what `selectors` name; the stop outcomes come first.
    pub async fn restart(&self, selectors: &[String], wait: bool) -> Result<Vec<Outcome>, RequestError> {
        let mut outcomes = self.stop(selectors, true).await?;
        // A process named on its own that was not running is simply started.
        outcomes.retain(|o| o.process.is_none() || o.result != Err(Fault::NotRunning));
        let started = self.start(selectors, wait).await?;
        // Bad names were reported by the stop already.
        outcomes.extend(started.into_iter().filter(|o| o.process.is_some()));
        Ok(outcomes)
    }

    /// Sends `signal` to what `selectors` name (running processes of groups).
    pub async fn signal(&self, selectors: &[String], signal: Signal) -> Result<Vec<Outcome>, RequestError> {
        let (chosen, mut outcomes) = self.select(selectors, Kind::is_signallable)?;
        for h in chosen {
            let result = h.signal(signal).await;
            outcomes.push(Outcome {
                selector: h.config.full_name(),
                process: Some(h),
                done: "signalled",
                result,
            });
        }
        Ok(outcomes)
    }

    /// Empties the log files of what `selectors` name (every process of a group).
    pub async fn clear_logs(&self, selectors: &[String]) -> Result<Vec<Outcome>, RequestError> {
        let (chosen, mut outcomes) = self.select(selectors, |_| true)?;
        // A log file several processes share is one channel: cleared once per request.
        let mut cleared: Vec<Arc<LogChannel>> = Vec::new();
        for h in chosen {
            let mut result = Ok(());
            for ch in [&h.logs.stdout, &h.logs.stderr].into_iter().flatten() {
                if cleared.iter().any(|c| Arc::ptr_eq(c, ch)) {
                    continue;
                }
                cleared.push(Arc::clone(ch));
                if let Err(e) = ch.clear() {
                    result = Err(Fault::Failed(e.to_string()));
                }
            }
            outcomes.push(Outcome {
                selector: h.config.full_name(),
                process: Some(h),
                done: "cleared",
                result,
            });
        }
        Ok(outcomes)
    }

    /// Rotates the log files of what `selectors` name now (`minder rotate`).
    pub async fn rotate_logs(&self, selectors: &[String]) -> Result<Vec<Outcome>, RequestError> {
        let (chosen, mut outcomes) = self.select(selectors, |_| true)?;
        // A log file several processes share is one channel: rotated once per request.
        let mut rotated: Vec<Arc<LogChannel>> = Vec::new();
        for h in chosen {
            let mut result = Ok(());
            for ch in [&h.logs.stdout, &h.logs.stderr].into_iter().flatten() {
                if rotated.iter().any(|c| Arc::ptr_eq(c, ch)) {
                    continue;
                }
                rotated.push(Arc::clone(ch));
                let ch = Arc::clone(ch);
                // Renames (and, with compression, more) are disk work: off the async workers.
                let done = tokio::task::spawn_blocking(move || ch.rotate_now()).await.unwrap_or_else(|e| {
                    Err(crate::logs::ClearError::Io(PathBuf::new(), std::io::Error::other(e)))
                });
                if let Err(e) = done {
                    result = Err(Fault::Failed(e.to_string()));
                }
            }
            outcomes.push(Outcome {
                selector: h.config.full_name(),
                process: Some(h),
                done: "rotated",
                result,
            });
        }
        Ok(outcomes)
    }

    /// Reopens every log file by its path (SIGUSR2).
    pub fn reopen_logs(&self) {
        // A log file several processes share is one channel: reopened once.
        let mut reopened: Vec<Arc<LogChannel>> = Vec::new();
        for h in self.all() {
            for ch in [&h.logs.stdout, &h.logs.stderr].into_iter().flatten() {
                if !reopened.iter().any(|c| Arc::ptr_eq(c, ch)) {
                    ch.reopen();
                    reopened.push(Arc::clone(ch));
                }
            }
        }
    }

    /// The processes `selectors` name, for reading their logs; a selector that names nothing
    /// is NOT_FOUND.
    pub fn select_for_reading(&self, selectors: &[String]) -> Result<Vec<ProcessHandle>, RequestError> {
        if selectors.is_empty() {
            return Err(RequestError::InvalidArgument(
                "name at least one process: NAME, GROUP:*, GROUP:NAME or all".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for s in selectors {
            let target = Target::parse(s).map_err(RequestError::InvalidArgument)?;
            let hs = self.resolve(&target).map_err(|why| RequestError::NotFound(format!("{s} ({why})")))?;
            for h in hs {
                if seen.insert(h.config.full_name()) {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }

    /// Starts every autostart process, in priority order, without waiting for any to be
    /// RUNNING (as supervisord does at start-up); one with dependencies waits for them, and
    /// what it needs is started too.
    pub async fn autostart(&self) {
        let chosen = self.with_needs(self.all().into_iter().filter(|h| h.config.autostart).collect());
        // Failures are logged by the process and end in BACKOFF or FATAL.
        self.start_each(chosen, false, false).await;
    }

    /// Starts `chosen`, which is in start order, and returns each one's start. The order
    /// holds between priorities and around dependencies: a process whose priority differs
    /// from the one before, or that has dependencies, starts once every start before it has
    /// spawned. Within a run of one priority without dependencies, up to [`SPAWN_WINDOW`]
    /// starts are in flight at once, so that minderd's own work for one (its pipes, its
    /// environment, the state and events of the last) overlaps the kernel's fork and exec of
    /// another; the forks themselves still happen one at a time. Nothing more starts once
    /// minderd is shutting down.
    async fn start_each(
        &self,
        chosen: Vec<ProcessHandle>,
        explicit: bool,
        wait: bool,
    ) -> Vec<(ProcessHandle, Result<Started, Fault>)> {
        use futures_util::StreamExt;
        let mut done = Vec::with_capacity(chosen.len());
        let mut rest = chosen.into_iter().peekable();
        while let Some(first) = rest.next() {
            let tier = self.tier(&first);
            let mut run = vec![first];
            while let Some(h) = rest.next_if(|h| tier.is_some() && self.tier(h) == tier) {
                run.push(h);
            }
            let started = futures_util::stream::iter(run)
                .map(|h| async move {
                    let r = if self.shared.shutting_down() {
                        Err(Fault::ShuttingDown)
                    } else {
                        self.start_one(&h, explicit, wait).await
                    };
                    (h, r)
                })
                .buffered(SPAWN_WINDOW)
                .collect::<Vec<_>>()
                .await;
            done.extend(started);
        }
        done
    }

    /// The priorities a start runs with (its group's, its own), or `None` when it has
    /// dependencies: those start alone, in order.
    fn tier(&self, h: &ProcessHandle) -> Option<(i32, i32)> {
        if !h.config.depends_on.is_empty() {
            return None;
        }
        Some((self.group_priority(h), h.config.priority))
    }

    /// The priority of a process's group (its own when the group is gone).
    fn group_priority(&self, h: &ProcessHandle) -> i32 {
        let reg = self.read();
        reg.groups.get(&h.config.group).map_or(h.config.priority, |g| g.priority)
    }

    /// Asks the daemon to shut down. False if it already is.
    pub fn request_shutdown(&self) -> bool {
        if self.shared.shutting_down() || self.state() == DaemonState::Shutdown {
            return false;
        }
        self.set_state(DaemonState::Shutdown);
        self.shutdown_requested.notify_one();
        true
    }

    /// Changes the daemon's state and tells event watchers.
    pub(crate) fn set_state(&self, to: DaemonState) {
        let from = self.state.send_replace(to);
        if from != to {
            let phase = |s| match s {
                DaemonState::Running => DaemonPhase::Running,
                DaemonState::Restarting => DaemonPhase::Restarting,
                DaemonState::Shutdown => DaemonPhase::Shutdown,
            };
            self.shared.events.publish(EventKind::Daemon { from: phase(from), to: phase(to) });
        }
    }

    /// Sends a REMOTE_COMMUNICATION event to the listener pools that subscribe to it
    /// (supervisord's `sendRemoteCommEvent`), with its payload `type:TYPE\nDATA`.
    pub fn send_remote_event(&self, kind: &str, data: &str) {
        self.shared.events.listeners.notify("REMOTE_COMMUNICATION", || format!("type:{kind}\n{data}"));
    }

    /// The event history shared with the process tasks.
    pub fn events(&self) -> &crate::events::EventBus {
        &self.shared.events
    }

    /// Resolves when a client has asked for a shutdown.
    pub async fn shutdown_requested(&self) {
        self.shutdown_requested.notified().await;
    }

    /// Stops every process, one group-priority level at a time, highest number first, each
    /// level fully stopped before the next; nothing restarts meanwhile.
    pub async fn shutdown(&self) {
        self.shared.begin_shutdown();
        self.set_state(DaemonState::Shutdown);
        self.stop_levels().await;
    }

    /// Stops every process, one group-priority level at a time, highest number first, each
    /// level fully stopped before the next.
    /// Dependents go first: in waves (see [`stop_waves`]), each made of levels.
    pub(crate) async fn stop_levels(&self) {
        let mut all = Vec::new();
        let mut priority: BTreeMap<String, i32> = BTreeMap::new();
        {
            let reg = self.read();
            for (name, g) in &reg.groups {
                priority.insert(name.clone(), g.priority);
                all.extend(g.processes.values().cloned());
            }
        }
        for wave in stop_waves(all) {
            let mut levels: BTreeMap<i32, Vec<ProcessHandle>> = BTreeMap::new();
            for h in wave {
                levels.entry(priority.get(&h.config.group).copied().unwrap_or(999)).or_default().push(h);
            }
            self.stop_wave(levels).await;
        }
    }

    /// Stops one wave, a group-priority level at a time, highest number first.
    async fn stop_wave(&self, levels: BTreeMap<i32, Vec<ProcessHandle>>) {
        for (_, mut level) in levels.into_iter().rev() {
            level.sort_by(|a, b| {
                (b.config.priority, &b.config.name).cmp(&(a.config.priority, &a.config.name))
            });
            let names: Vec<ProcessHandle> = level.clone();
            let stopping = stop_all(level, Wait::Quietly);
            tokio::pin!(stopping);
            let mut report = tokio::time::interval(Duration::from_secs(3));
            loop {
                tokio::select! {
                    _ = &mut stopping => break,
                    _ = report.tick() => {
                        let waiting: Vec<String> = names
                            .iter()
                            .filter(|h| !h.snapshot().state.is_stopped())
                            .map(|h| h.config.name.clone())
                            .collect();
                        if !waiting.is_empty() {
                            tracing::info!("waiting for {} to die", waiting.join(", "));
                        }
                    }
                }
            }
        }
    }
}

/// What a waiting process still waits for.
struct Unmet {
    /// `waiting for db, migrate (FATAL)`: its description.
    reason: String,
    /// Some dependency is at rest (FATAL, STOPPED, EXITED) and will not get there on its own.
    stuck: bool,
}

/// Whether a dependency in state `s` meets `condition`. `started`: it has a child, or ran and
/// completed; `ready`: RUNNING (or a one-shot program that completed); `completed`: EXITED
/// with an expected code.
pub fn satisfied(condition: Condition, s: &Snapshot, oneshot: bool) -> bool {
    let completed = s.state == Kind::Exited && s.last_exit.is_some_and(|e| e.expected);
    match condition {
        Condition::Started => {
            completed || s.state == Kind::Running || (s.state == Kind::Starting && s.pid.is_some())
        }
        Condition::Ready => s.state == Kind::Running || (oneshot && completed),
        Condition::Completed => completed,
    }
}

/// Whether `h` depends on `other`.
fn depends(h: &ProcessHandle, other: &ProcessHandle) -> bool {
    let c = &other.config;
    h.config.depends_on.iter().any(|d| d.matches(&c.group, &c.name, &c.program))
}

/// Splits processes to stop into waves: the first has everything nothing else in the set
/// depends on, the next what only the first depended on, and so on; each wave keeps the
/// order given. Without dependencies, one wave (supervisord's order, untouched).
fn stop_waves(handles: Vec<ProcessHandle>) -> Vec<Vec<ProcessHandle>> {
    let dependents: Vec<usize> =
        (0..handles.len()).filter(|&i| !handles[i].config.depends_on.is_empty()).collect();
    if dependents.is_empty() {
        return vec![handles];
    }
    // rank(p) = 1 + the highest rank of what depends on p; the configuration has no cycle,
    // and the loop is bounded anyway.
    let mut rank = vec![0usize; handles.len()];
    for _ in 0..handles.len() {
        let mut changed = false;
        for &i in &dependents {
            for j in 0..handles.len() {
                if i != j && depends(&handles[i], &handles[j]) && rank[j] < rank[i] + 1 {
                    rank[j] = rank[i] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let waves = rank.iter().copied().max().unwrap_or(0) + 1;
    let mut out: Vec<Vec<ProcessHandle>> = vec![Vec::new(); waves];
    for (h, r) in handles.into_iter().zip(rank) {
        out[r].push(h);
    }
    out.retain(|w| !w.is_empty());
    out
}

/// Whether [`stop_all`] waits for the stops, and whether it logs `waiting for NAME to stop`
/// meanwhile (as supervisord does for a client's stop, not for its own shutdown, which says
/// `waiting for … to die` instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    No,
    Quietly,
    Report,
}

/// Sends every stop at once, then (unless [`Wait::No`]) waits for all.
async fn stop_all(handles: Vec<ProcessHandle>, wait: Wait) -> Vec<Outcome> {
    join_all(handles.into_iter().map(|h| async move {
        let result = match wait {
            Wait::No => h.stop(false).await,
            Wait::Quietly => h.stop(true).await,
            Wait::Report => h.stop_and_report().await,
        };
        Outcome { selector: h.config.full_name(), process: Some(h), done: "stopped", result }
    }))
    .await
}

/// Sets up where a process's output goes. AUTO becomes a fresh file in childlogdir named as
/// supervisord names it: `<name>-<channel>---<identifier>-XXXXXX.log`.
fn logs_for(
    p: &ProcessConfig,
    daemon: &minder::config::DaemonConfig,
    reuse: Option<(&ProcessConfig, &Stdio)>,
) -> Stdio {
    let (childlogdir, identifier, strip_ansi) = (&daemon.childlogdir, &daemon.identifier, daemon.strip_ansi);
    let channel = |target: &LogTarget, which: &str| {
        let (maxbytes, backups, compress) = match which {
            "stdout" => (p.stdout_logfile_maxbytes, p.stdout_logfile_backups, p.stdout_logfile_compress),
            _ => (p.stderr_logfile_maxbytes, p.stderr_logfile_backups, p.stderr_logfile_compress),
        };
        let json = p.log_format == minder::config::LogFormat::Json;
        let spec = |path| LogSpec {
            path,
            maxbytes,
            backups,
            timestamps: p.log_timestamps,
            strip_ansi,
            json,
            compress,
        };
        // The same target and settings as the process this one replaces: keep its channel
        // (and its AUTO file), so followers carry on.
        if let Some((old, old_logs)) = reuse {
            let (old_target, old_channel) = match which {
                "stdout" => (&old.stdout_logfile, &old_logs.stdout),
                _ => (&old.stderr_logfile, &old_logs.stderr),
            };
            if let Some(ch) = old_channel.as_ref().filter(|_| old_target == target) {
                if ch.spec() == spec(ch.path().to_path_buf()) {
                    return Some(Arc::clone(ch));
                }
                if *target == LogTarget::Auto {
                    // Same AUTO file, new rotation settings.
                    return Some(LogChannel::shared(spec(ch.path().to_path_buf()), &p.full_name()));
                }
            }
        }
        let path = match target {
            LogTarget::None => return None,
            LogTarget::File(path) => path.clone(),
            LogTarget::Auto => {
                let prefix = format!("{}-{which}---{identifier}-", p.name);
                let made = tempfile::Builder::new()
                    .prefix(&prefix)
                    .suffix(".log")
                    .rand_bytes(6)
                    .tempfile_in(childlogdir)
                    .and_then(|f| f.keep().map_err(|e| e.error));
                match made {
                    Ok((_, path)) => path,
                    Err(e) => {
                        tracing::error!(
                            "cannot create an AUTO log file for {} in {}: {e}; its {which} is discarded",
                            p.name,
                            childlogdir.display()
                        );
                        return None;
                    }
                }
            }
        };
        // Outputs that name the same file share its channel (see logs.rs).
        Some(LogChannel::shared(spec(path), &p.full_name()))
    };
    Stdio {
        stdout: channel(&p.stdout_logfile, "stdout"),
        stderr: if p.redirect_stderr { None } else { channel(&p.stderr_logfile, "stderr") },
        socket: None,
        socket_error: None,
        pool: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_like_split_namespec() {
        let p = |g: &str, n: &str| Ok(Target::Process { group: g.into(), name: n.into() });
        assert_eq!(Target::parse("all"), Ok(Target::All));
        assert_eq!(Target::parse("web"), p("web", "web"));
        assert_eq!(Target::parse("web:*"), Ok(Target::Group("web".into())));
        assert_eq!(Target::parse("web:"), Ok(Target::Group("web".into())));
        assert_eq!(Target::parse("site:web_01"), p("site", "web_01"));
        assert!(Target::parse("").is_err());
        assert!(Target::parse(":x").is_err());
        assert!(Target::parse("a:b:c").is_err());
    }
}
