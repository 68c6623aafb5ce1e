//! The daemon's own settings, applied at start as supervisord applies them: umask and resource
//! limits first, the socket's owner and the switch of user once the listeners are bound, and
//! the AUTO logs of earlier runs cleared away.

use std::path::Path;

use minder::config::{Config, DaemonConfig};

use crate::listen::Listener;

/// Something [`before_start`] did or found, for the daemon log once it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub text: String,
}

impl Note {
    pub fn log(&self) {
        if self.warning {
            tracing::warn!("{}", self.text);
        } else {
            tracing::info!("{}", self.text);
        }
    }
}

/// Descriptors minderd keeps for itself: listeners, its log, the runtime, clients.
const DAEMON_FDS: u64 = 64;
/// Descriptors each process holds while it runs: its stdin, stdout and stderr pipes, a pidfd,
/// and a log file (or two); briefly more while it is spawned.
const FDS_PER_PROCESS: u64 = 5;

/// How many descriptors minderd needs to run every configured process.
pub fn descriptors_needed(config: &Config) -> u64 {
    DAEMON_FDS + FDS_PER_PROCESS * config.processes().count() as u64
}

/// Sets the umask and raises the open-file and process limits to minfds and minprocs, or says
/// why it cannot (supervisord refuses to start then too). The soft limit of open files is
/// raised further, toward the hard limit, as far as the configured processes need; if even the
/// hard limit cannot cover them, a warning says so (spawns would fail for lack of descriptors).
/// What it did comes back as notes to log once the log is open.
pub fn before_start(config: &Config) -> Result<Vec<Note>, String> {
    let d = &config.daemon;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(d.umask as libc::mode_t));
    let notes = raise_nofile(d.minfds, descriptors_needed(config), config.processes().count())?;
    #[cfg(not(target_os = "macos"))]
    raise_limit(nix::sys::resource::Resource::RLIMIT_NPROC, d.minprocs, "minprocs", "processes")?;
    Ok(notes)
}

/// Raises the soft limit of open files to `max(minfds, needed)`: the hard limit too when
/// allowed (root), else up to the hard limit. Short of minfds is an error, as in supervisord;
/// short of what the processes need is a warning.
fn raise_nofile(minfds: u64, needed: u64, processes: usize) -> Result<Vec<Note>, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let res = Resource::RLIMIT_NOFILE;
    let (soft, hard) =
        getrlimit(res).map_err(|e| format!("cannot read the limit of file descriptors: {e}"))?;
    let want = minfds.max(needed);
    if soft >= want {
        return Ok(Vec::new());
    }
    let raised = if setrlimit(res, want, hard.max(want)).is_ok() {
        want
    } else {
        let capped = want.min(hard);
        if capped > soft && setrlimit(res, capped, hard).is_ok() {
            capped
        } else {
            soft
        }
    };
    if raised < minfds {
        return Err(format!(
            "the minimum number of file descriptors required is {minfds}, as minfds says, but this \
             environment only allows {hard}; raise the hard limit (ulimit -H) or lower minfds"
        ));
    }
    let mut notes = Vec::new();
    if raised > soft {
        // supervisord's words.
        notes.push(Note { warning: false, text: format!("Increased RLIMIT_NOFILE limit to {raised}") });
    }
    if raised < needed {
        notes.push(Note {
            warning: true,
            text: format!(
                "RLIMIT_NOFILE is {raised} (the hard limit), but {processes} processes need about {needed} \
                 descriptors ({FDS_PER_PROCESS} each, and {DAEMON_FDS} for minderd): spawns may fail with \
                 \"too many open files\"; raise the hard limit (ulimit -Hn, LimitNOFILE=) or run fewer processes"
            ),
        });
    }
    Ok(notes)
}

/// Raises `res` to `want` (the hard limit too when allowed), or says why it cannot.
#[cfg(not(target_os = "macos"))]
fn raise_limit(res: nix::sys::resource::Resource, want: u64, option: &str, what: &str) -> Result<(), String> {
    let (soft, hard) =
        nix::sys::resource::getrlimit(res).map_err(|e| format!("cannot read the limit of {what}: {e}"))?;
    if soft >= want {
        return Ok(());
    }
    // Raise the hard limit too when allowed (root); otherwise up to it.
    let new_hard = hard.max(want);
    if nix::sys::resource::setrlimit(res, want, new_hard).is_ok() {
        return Ok(());
    }
    if hard >= want && nix::sys::resource::setrlimit(res, want, hard).is_ok() {
        return Ok(());
    }
    Err(format!(
        "the minimum number of {what} required is {want}, as {option} says, but this environment only \
         allows {hard}; raise the hard limit (ulimit -H) or lower {option}"
    ))
}

/// Refuses a TCP listener that anyone on the network could reach without credentials
/// (supervisord's CVE-2019-12105), unless the operator said `insecure`.
pub fn check_exposure(d: &DaemonConfig) -> Result<(), String> {
    for a in &d.listen {
        let minder::address::Address::Tcp(hostport) = a else { continue };
        let loopback = std::net::ToSocketAddrs::to_socket_addrs(hostport.as_str())
            .map(|addrs| {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty() && addrs.iter().all(|s| s.ip().is_loopback())
            })
            .unwrap_or(false);
        let authenticated = !d.tokens.is_empty()
            || d.credentials.contains_key(a)
            || d.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !loopback && !authenticated && !d.insecure {
            return Err(format!(
                "refusing to listen at {a} without authentication: anyone who can reach it could control \
                 every process. Set tokens_file, tls_client_ca, or [inet_http_server] username and password; \
                 listen on a loopback address; or pass --insecure if the network is trusted"
            ));
        }
    }
    Ok(())
}

/// After binding: gives unix sockets their owner, then switches to `user` if one is set.
pub fn after_bind(d: &DaemonConfig, listeners: &[Listener]) -> Result<(), String> {
    if let Some(owner) = &d.socket_owner {
        for l in listeners {
            if let minder::address::Address::Unix(path) = l.address() {
                let gid = owner.gid.map(nix::unistd::Gid::from_raw);
                nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(owner.uid)), gid)
                    .map_err(|e| format!("cannot chown {} to {}: {e}", path.display(), owner.uid))?;
            }
        }
    }
    if let Some(user) = &d.user {
        drop_privileges(user)?;
    }
    Ok(())
}

/// supervisord's `drop_privileges`: nothing to do when already that user; root only otherwise.
fn drop_privileges(user: &str) -> Result<(), String> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    let u = found
        .map_err(|e| format!("cannot look up user {user}: {e}"))?
        .ok_or_else(|| format!("no such user {user:?} (the daemon's user setting)"))?;
    let me = nix::unistd::Uid::current();
    if me == u.uid {
        return Ok(());
    }
    if !me.is_root() {
        return Err(format!("can't drop privilege to {user} as nonroot user (minderd runs as uid {me})"));
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        let name = std::ffi::CString::new(u.name.clone()).map_err(|e| e.to_string())?;
        let groups = nix::unistd::getgrouplist(&name, u.gid)
            .map_err(|e| format!("cannot list {user}'s groups: {e}"))?;
        nix::unistd::setgroups(&groups).map_err(|e| format!("could not set groups of {user}: {e}"))?;
    }
    nix::unistd::setgid(u.gid).map_err(|e| format!("could not set group id of {user}: {e}"))?;
    nix::unistd::setuid(u.uid).map_err(|e| format!("could not set user id of {user}: {e}"))?;
    Ok(())
}

/// Removes the AUTO child logs an earlier run with the same identifier left in `dir`
/// (supervisord's `clear_autochildlogdir`: names like `x---<identifier>-y.log`, with rotated
/// `.N` suffixes) — only the files this user owns; others' are left alone without a word.
pub fn clear_auto_logs(dir: &Path, identifier: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!("could not clear the child log directory {}", dir.display());
        return;
    };
    let marker = format!("---{identifier}-");
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(at) = name.find(&marker).filter(|&at| at > 0) else { continue };
        let rest = &name[at + marker.len()..];
        let Some(dot) = rest.find(".log") else { continue };
        let (stem, suffix) = (&rest[..dot], &rest[dot + 4..]);
        let suffix_ok = suffix.is_empty()
            || (suffix.starts_with('.')
                && suffix.len() <= 5
                && suffix[1..].bytes().all(|b| b.is_ascii_digit()));
        // Only our own: in a shared directory such as /tmp, the AUTO logs of other users'
        // daemons are theirs, not leftovers of ours (and we could not remove them anyway).
        let ours = entry.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == me);
        if ours && !stem.is_empty() && !stem.contains(char::is_whitespace) && suffix_ok {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!("failed to clean up {}: {e}", entry.path().display());
            }
        }
    }
}

/// Settings that minderd reads but does not act on yet, for a warning at start: silence would
/// let someone believe they work.
pub fn unsupported(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.daemon.syslog {
        out.push("logfile = syslog is not supported yet; the daemon logs to standard output".to_string());
    }
    for p in config.processes() {
        let name = p.full_name();
        if p.stdout_syslog || p.stderr_syslog {
            out.push(format!("{name}: *_syslog is not supported yet; the output goes to its log files only"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_auto_logs_of_this_identifier_are_cleared() {
        let dir = tempfile::tempdir().expect("dir");
        let keep = ["web-stdout---other-abc.log", "notes.log", "web.log", "---minder-x.log"];
        let gone = ["web-stdout---minder-aB3xYz.log", "web_01-stderr---minder-q.log.3"];
        for f in keep.iter().chain(gone.iter()) {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        // Someone else's AUTO log in a shared directory: not ours to remove, nor to warn about.
        let theirs = dir.path().join("web-stdout---minder-other1.log");
        std::fs::write(&theirs, "x").expect("write");
        let someone_else = if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("a nobody user");
            nix::unistd::chown(&theirs, Some(nobody.uid), None).expect("chown as root");
            true
        } else {
            false
        };
        clear_auto_logs(dir.path(), "minder");
        assert_eq!(theirs.exists(), someone_else, "another user's AUTO log was removed");
        for f in keep {
            assert!(dir.path().join(f).exists(), "{f} was removed");
        }
        for f in gone {
            assert!(!dir.path().join(f).exists(), "{f} was kept");
        }
    }
}
