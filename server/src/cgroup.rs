//! A cgroup per process, on the cgroup v2 hierarchy: so that minderd knows every process a
//! program started, however it forked, and can end them all.
//!
//! # Layout
//! minderd works in a subtree it owns, its *root*:
//! - with `cgroup = "auto"` (the default): minderd's own cgroup when it is not the hierarchy's
//!   root and minderd may create cgroups in it (delegated to it, as systemd does with
//!   `Delegate=yes`, or a container's cgroup namespace); otherwise `minderd-<pid>` under the
//!   cgroup minderd is in — which on a host without delegation is the hierarchy's root;
//! - with `cgroup = "/some/path"`: that cgroup, created if need be.
//!
//! Under the root, `programs/` holds one cgroup per process, named `group:name` (the `:` keeps
//! every name apart from the interface files, and from `.` and `..`), and `daemon/` holds
//! minderd's sentinel (and minderd itself, when the root is minderd's own cgroup: then it moves
//! there first, so that the root holds no process of its own — cgroup v2's "no internal
//! processes" rule, which controllers need).
//!
//! A subtree of its own is named `minderd-<pid>-<start time>`, unique even among minderds that
//! are all PID 1 of their own pid namespaces. One that a killed minderd left behind is removed by
//! the next minderd to start beside it, once its `daemon/` is empty (the sentinel is gone) and it
//! is older than a minute (so a subtree being set up is never taken for one); only empty cgroups
//! are removed.
//!
//! # Invariants
//! - A child joins its cgroup between fork and exec, by writing `0` to the `cgroup.procs`
//!   descriptor opened here beforehand: nothing the program runs is ever outside it. If it
//!   cannot join, it does not run (the spawn fails with the reason).
//! - Only cgroups under the root are ever written to or removed, and only empty ones are
//!   removed (`rmdir` refuses a populated cgroup).
//! - When minderd dies, its sentinel writes `1` to `programs/cgroup.kill`
//!   ([`crate::reaper::Reaper::watch_cgroup`]): every supervised process and descendant goes.
//!
//! Without a cgroup v2 hierarchy, or without permission, minderd says so once at start and
//! falls back to process groups: then a process that leaves its group (setsid) is not
//! followed, and `kill_mode = "cgroup"` acts as `group`.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minder::config::CgroupSetting;
use nix::sys::signal::Signal;

/// The subtree minderd owns, and where programs' cgroups go.
#[derive(Debug)]
pub struct Cgroups {
    /// The root of minderd's subtree (a directory of the cgroup2 mount).
    root: PathBuf,
    /// `root/programs`.
    programs: PathBuf,
    /// Whether minderd created `root` (and so removes it when it stops).
    created_root: bool,
    /// The cgroup minderd was in (where the sentinel goes back to before `root` is removed).
    home: PathBuf,
}

/// The subtree, as an upgrade hands it over.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    root: PathBuf,
    created_root: bool,
    home: PathBuf,
}

/// One process's cgroup.
#[derive(Debug)]
pub struct ProcessCgroup {
    pub dir: PathBuf,
}

/// Why cgroups are not used, said once at start.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl Cgroups {
    /// Sets up minderd's subtree as `setting` says. `Ok(None)` when cgroups are off.
    pub fn setup(setting: &CgroupSetting) -> Result<Option<Cgroups>, Unavailable> {
        if *setting == CgroupSetting::Off {
            return Ok(None);
        }
        let mount =
            cgroup2_mount().ok_or_else(|| Unavailable("there is no cgroup v2 hierarchy mounted".into()))?;
        let own =
            own_cgroup().ok_or_else(|| Unavailable("minderd's own cgroup v2 path is unknown".into()))?;
        let own_dir = under(&mount, &own);
        let cg = match setting {
            CgroupSetting::Path(p) => {
                let root = under(&mount, p);
                let created = !root.exists();
                std::fs::create_dir_all(&root)
                    .map_err(|e| Unavailable(format!("cannot create cgroup {}: {e}", root.display())))?;
                Cgroups::within(root, created, own_dir)?
            }
            _ if own != "/" && delegated(&own_dir) => {
                // minderd leaves the root for a leaf of its own, so the root has no process.
                let daemon = own_dir.join("daemon");
                mkdir(&daemon)?;
                write_file(&daemon.join("cgroup.procs"), b"0").map_err(|e| {
                    Unavailable(format!("cannot move minderd into {}: {e}", daemon.display()))
                })?;
                Cgroups::within(own_dir.clone(), false, own_dir)?
            }
            _ => {
                sweep_stale(&own_dir);
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let root = own_dir.join(format!("minderd-{}-{started:x}", std::process::id()));
                mkdir(&root)?;
                Cgroups::within(root, true, own_dir)?
            }
        };
        Ok(Some(cg))
    }

    fn within(root: PathBuf, created_root: bool, home: PathBuf) -> Result<Cgroups, Unavailable> {
        mkdir(&root.join("daemon"))?;
        let programs = root.join("programs");
        mkdir(&programs)?;
        Ok(Cgroups { root, programs, created_root, home })
    }

    /// What an upgraded minderd needs to carry on in this subtree.
    pub fn save(&self) -> Saved {
        Saved { root: self.root.clone(), created_root: self.created_root, home: self.home.clone() }
    }

    /// The subtree an earlier image of this minderd set up (an upgrade): used as it is.
    pub fn restore(saved: Saved) -> Cgroups {
        let programs = saved.root.join("programs");
        Cgroups { root: saved.root, programs, created_root: saved.created_root, home: saved.home }
    }

    /// The root of minderd's subtree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `daemon/cgroup.procs`, opened for the sentinel to join.
    pub fn daemon_procs(&self) -> Option<OwnedFd> {
        open_write(&self.root.join("daemon").join("cgroup.procs")).ok()
    }

    /// `programs/cgroup.kill`, opened for the sentinel. `None` on kernels before 5.14.
    pub fn kill_file(&self) -> Option<OwnedFd> {
        open_write(&self.programs.join("cgroup.kill")).ok()
    }

    /// Where the cgroup of the process `full_name` is (`group:name`); `None` for a name that
    /// cannot be a cgroup's (the configuration never makes one).
    pub fn dir_for(&self, full_name: &str) -> Option<PathBuf> {
        let name =
            if full_name.contains(':') { full_name.to_string() } else { format!("{full_name}:{full_name}") };
        (!name.contains('/') && !name.contains('\0')).then(|| self.programs.join(name))
    }

    /// The cgroup for the process `full_name`, created if need be.
    pub fn for_process(&self, full_name: &str) -> std::io::Result<ProcessCgroup> {
        let dir = self.dir_for(full_name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "a process name with a /")
        })?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(ProcessCgroup { dir })
    }

    /// Sets `limits` on the cgroup at `dir`, enabling the controllers they need on the way
    /// (in the root and `programs/`, which hold no process, as cgroup v2 requires). Returns
    /// each limit that could not be set: (option, why).
    pub fn apply(&self, dir: &Path, limits: &minder::config::Limits) -> Vec<(&'static str, String)> {
        let mut failed = Vec::new();
        for (option, controller, file, value) in limits.files() {
            if let Err(why) = self.enable(controller) {
                failed.push((option, why));
                continue;
            }
            if let Err(e) = write_file(&dir.join(file), value.as_bytes()) {
                failed.push((option, format!("cannot write {value:?} to {file}: {e}")));
            }
        }
        failed
    }

    /// Makes `controller` available to the programs' cgroups.
    fn enable(&self, controller: &str) -> Result<(), String> {
        let has = |dir: &Path, file: &str| {
            std::fs::read_to_string(dir.join(file))
                .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
        };
        for dir in [&self.root, &self.programs] {
            if has(dir, "cgroup.subtree_control") {
                continue;
            }
            if !has(dir, "cgroup.controllers") {
                return Err(format!(
                    "the {controller} controller is not available to minderd's cgroup {} (enable it in its parent's cgroup.subtree_control, or use a host with it on cgroup v2)",
                    dir.display()
                ));
            }
            write_file(&dir.join("cgroup.subtree_control"), format!("+{controller}").as_bytes()).map_err(
                |e| format!("cannot enable the {controller} controller in {}: {e}", dir.display()),
            )?;
        }
        Ok(())
    }

    /// Removes the subtree's empty cgroups (at shutdown, once every process has stopped). The
    /// sentinel (`sentinel`, its pid) first goes back to where minderd started, so that the
    /// subtree minderd created can go too.
    pub async fn remove(&self, sentinel: Option<u32>) {
        // What programs left behind (a daemon a stopped program forked) goes with minderd, as
        // it would if minderd were killed.
        let left = pids(&self.programs).unwrap_or_default().len() + count_below(&self.programs);
        if left > 0 {
            tracing::info!("ending {left} process(es) that stopped programs left in their cgroups");
            let _ = write_file(&self.programs.join("cgroup.kill"), b"1");
        }
        // A child that has just been reaped may still count for a moment (and orphans that
        // minderd reaps as it goes): a few tries, for at most a second.
        for _ in 0..50 {
            remove_empty(&self.programs);
            if !self.programs.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = std::fs::remove_dir(&self.programs) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", self.programs.display());
            }
        }
        if self.created_root {
            if let Some(pid) = sentinel {
                let _ = write_file(&self.home.join("cgroup.procs"), pid.to_string().as_bytes());
            }
            remove_empty(&self.root);
        }
    }
}

impl ProcessCgroup {
    /// `cgroup.procs`, opened for one spawn: the child writes `0` to it, between fork and
    /// exec, to join. (Opened per spawn, so an idle process holds no descriptor for it.)
    pub fn open_procs(&self) -> std::io::Result<OwnedFd> {
        open_write(&self.dir.join("cgroup.procs"))
    }

    /// The pids in the cgroup now (every thread group, main process included).
    pub fn pids(&self) -> Vec<u32> {
        pids(&self.dir).unwrap_or_default()
    }

    /// Whether any process is left in it.
    pub fn populated(&self) -> bool {
        match std::fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(s) => s.lines().any(|l| l == "populated 1"),
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// SIGKILLs everything in it: `cgroup.kill` (Linux 5.14), else each pid it lists.
    pub fn kill(&self) {
        if write_file(&self.dir.join("cgroup.kill"), b"1").is_err() {
            self.signal_each(Signal::SIGKILL, None);
        }
    }

    /// Sends `signal` to every process in it except `except` (the main process, signalled
    /// through its pidfd). The pids are read from `cgroup.procs` just before: a process that
    /// exits in between is simply not found.
    pub fn signal_each(&self, signal: Signal, except: Option<u32>) {
        for pid in self.pids() {
            if Some(pid) != except {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
        }
    }

    /// How many processes the OOM killer has killed in it (`memory.events` oom_kill; 0
    /// without the memory controller).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Waits until it is empty, at most `limit`; returns whether it is. `cgroup.events` is
    /// read every few milliseconds (the wait is for processes already told to go).
    pub async fn emptied(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            if !self.populated() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// What a process's cgroup holds and has used, read when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Every process in it, the main one included.
    pub pids: Vec<u32>,
    /// CPU time of every process that has been in it (`cpu.stat` usage_usec).
    pub cpu: Option<Duration>,
    /// Memory in use (`memory.current`), where the memory controller is enabled.
    pub memory: Option<u64>,
}

/// The tree in the cgroup at `dir`; `None` when there is no such cgroup.
pub fn tree(dir: &Path) -> Option<Tree> {
    let pids = pids(dir)?;
    let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok()))
        .map(Duration::from_micros);
    let memory = std::fs::read_to_string(dir.join("memory.current")).ok().and_then(|s| s.trim().parse().ok());
    Some(Tree { pids, cpu, memory })
}

/// How many processes the cgroups below `dir` hold.
fn count_below(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| pids(&e.path()).map_or(0, |p| p.len()) + count_below(&e.path()))
        .sum()
}

fn pids(dir: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a pure v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // `id parent major:minor root mountpoint options ... - fstype source superopts`
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mountpoint = before.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// minderd's cgroup in the v2 hierarchy: the `0::/path` line of /proc/self/cgroup.
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| p.trim().to_string())
}

/// `path` (absolute in the hierarchy) under the mount point.
fn under(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// Whether minderd may make cgroups in `dir` and move itself out of it.
fn delegated(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
        && nix::unistd::access(&dir.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_ok()
}

fn mkdir(dir: &Path) -> Result<(), Unavailable> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Unavailable(format!("cannot create cgroup {}: {e}", dir.display()))),
    }
}

fn open_write(path: &Path) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::from(open_write(path)?);
    f.write_all(data)
}

/// Removes `dir` and the cgroups below it, deepest first; a populated one stays.
fn remove_empty(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the subtrees that killed minderds left in `parent` (see the module doc): a
/// `minderd-*` whose `daemon/` is empty and which is older than a minute.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_str().is_some_and(|n| n.starts_with("minderd-")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= Duration::from_secs(60));
        let owner_gone = std::fs::read_to_string(path.join("daemon").join("cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l == "populated 0"));
        if old && owner_gone {
            tracing::info!("removing the empty cgroups a killed minderd left: {}", path.display());
            remove_empty(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/sys/fs/cgroup\040x"), "/sys/fs/cgroup x");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
