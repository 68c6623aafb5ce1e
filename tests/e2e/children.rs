//! How children are set up and ended: names, groups, users, environment, process groups.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{alive, code, stdout, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

#[test]
fn numprocs_names_and_group_selectors() {
    let d = Daemon::start(
        r#"
[program.web]
command = "sleep 100"
numprocs = 3
numprocs_start = 1
process_name = "%(program_name)s_%(process_num)02d"
startsecs = 0
"#,
    );
    let out = d.ctl(&["--json", "status", "web:*"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = v["processes"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["full_name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["web:web_01", "web:web_02", "web:web_03"]);
    for n in &names {
        d.wait_state(n, "RUNNING", 10 * SECS);
    }
    // A bare program name is not a process when numprocs > 1, as in supervisorctl.
    let out = d.ctl(&["status", "web"]);
    assert_eq!(code(&out), 4);
    assert_eq!(stdout(&out), "web: ERROR (no such process)\n");
    let out = d.ctl(&["stop", "web:web_02"]);
    assert_eq!(stdout(&out), "web:web_02: stopped\n");
    let out = d.ctl(&["stop", "web:*"]);
    assert_eq!(stdout(&out), "web:web_03: stopped\nweb:web_01: stopped\n", "the rest, highest first");
    let out = d.ctl(&["start", "web:*"]);
    assert_eq!(stdout(&out), "web:web_01: started\nweb:web_02: started\nweb:web_03: started\n");
    assert_eq!(code(&out), 0);
}

#[test]
fn groups_collect_programs() {
    let d = Daemon::start(
        r#"
[program.api]
command = "sleep 100"
startsecs = 0

[program.worker]
command = "sleep 100"
startsecs = 0

[group.site]
programs = ["api", "worker"]
"#,
    );
    for n in ["site:api", "site:worker"] {
        d.wait_state(n, "RUNNING", 10 * SECS);
    }
    let out = d.ctl(&["stop", "site:*"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("site:api: stopped") && stdout(&out).contains("site:worker: stopped"));
    // The programs' own implicit groups are gone.
    assert_eq!(code(&d.ctl(&["status", "api"])), 4);
    let out = d.ctl(&["start", "site"]);
    assert_eq!(stdout(&out), "site: ERROR (no such process) (did you mean site:*?)\n");
    assert_eq!(code(&out), 1);
}

#[test]
fn stopasgroup_ends_the_grandchildren_too() {
    let d = Daemon::start(
        r#"
[program.grouped]
command = "sh -c 'sleep 1000 & echo $! > {dir}/grouped.pid; wait'"
startsecs = 0
stopasgroup = true

[program.alone]
command = "sh -c 'sleep 1000 & echo $! > {dir}/alone.pid; wait'"
startsecs = 0
"#,
    );
    let grandchild = |name: &str| -> i32 {
        let path = d.path(&format!("{name}.pid"));
        wait_for("the grandchild's pid", 10 * SECS, || {
            std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
        });
        std::fs::read_to_string(&path).expect("pid file").trim().parse().expect("a pid")
    };
    let (g, a) = (grandchild("grouped"), grandchild("alone"));
    assert_eq!(code(&d.ctl(&["stop", "grouped", "alone"])), 0);
    wait_for("the grouped grandchild to be gone (and reaped, not a zombie)", 10 * SECS, || !alive(g));
    // Without stopasgroup only the shell gets the signal; its child lives on.
    assert!(alive(a), "the grandchild of a program without stopasgroup survives its stop");
    // This test started it (through minderd): end it by its pid.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(a), nix::sys::signal::Signal::SIGKILL);
    wait_for("the orphan to be reaped by minderd, the subreaper", 10 * SECS, || !alive(a));
}

#[test]
fn environment_directory_and_supervisor_variables() {
    let d = Daemon::start(
        r#"
[daemon]
environment = { SHARED = "from-daemon", OVERRIDDEN = "daemon" }

[program.env]
command = "sh -c 'echo $SHARED $OVERRIDDEN $OWN; echo $SUPERVISOR_ENABLED $SUPERVISOR_PROCESS_NAME $SUPERVISOR_GROUP_NAME $MINDER_PROCESS_NAME; pwd; umask'"
directory = "{dir}"
environment = "OWN=\"a,b\",OVERRIDDEN=program"
umask = "027"
startsecs = 0
autorestart = false
stdout_logfile = "{dir}/env.out"
"#,
    );
    d.wait_state("env", "EXITED", 10 * SECS);
    let out = std::fs::read_to_string(d.path("env.out")).expect("the program's output");
    let dir = d.dir.path().canonicalize().expect("dir");
    assert_eq!(out, format!("from-daemon program a,b\n1 env env env\n{}\n0027\n", dir.display()));
}

/// `user=`: the uid, the primary group and the supplementary groups become the user's (set
/// with raw system calls in the child), and HOME, USER and LOGNAME follow. Tests run as root
/// in CI; elsewhere only the refusal can be checked.
#[test]
fn user_switching_sets_uid_groups_and_home() {
    let d = Daemon::start(
        r#"
[program.asnobody]
command = "sh -c 'id -u; id -g; id -G; echo $HOME $USER $LOGNAME'"
user = "nobody"
startsecs = 0
autorestart = false
stdout_logfile = "{dir}/nobody.out"
"#,
    );
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("a nobody user");
    if nix::unistd::Uid::current().is_root() {
        d.wait_state("asnobody", "EXITED", 10 * SECS);
        let out = std::fs::read_to_string(d.path("nobody.out")).expect("output");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], nobody.uid.to_string());
        assert_eq!(lines[1], nobody.gid.to_string());
        // Exactly nobody's groups: none of root's is left over.
        let name = std::ffi::CString::new(nobody.name.clone()).expect("a name");
        let mut want: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
            .expect("groups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got: Vec<u32> = lines[2].split_whitespace().map(|g| g.parse().expect("a gid")).collect();
        want.sort_unstable();
        want.dedup();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, want, "supplementary groups");
        assert_eq!(lines[3], format!("{} nobody nobody", nobody.dir.display()));
    } else {
        // Only root can switch users; the reason is the spawn error, not a mysterious exit.
        d.wait_state("asnobody", "FATAL", 20 * SECS);
        let why = d.process("asnobody")["description"].as_str().unwrap_or("").to_string();
        assert!(why.contains("Can't drop privilege as nonroot user"), "{why}");
    }
}

/// The uid a process runs as (real, effective, saved and fs all the same), from /proc.
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uids: Vec<u32> = line.split_whitespace().skip(1).filter_map(|u| u.parse().ok()).collect();
    (uids.len() == 4 && uids.iter().all(|&u| u == uids[0])).then(|| uids[0])
}

/// A SIGKILLed minderd cannot stop its children: they must go with it. The kernel forgets a
/// parent-death signal at every change of credentials, so it has to be asked for after the
/// switch to `user=`; a program that drops privileges itself (setpriv, gosu, su-exec) loses it
/// again when it does, and is ended by the sentinel, which outlives minderd for just that.
#[test]
fn children_go_with_a_sigkilled_minderd_whoever_they_run_as() {
    if !nix::unistd::Uid::current().is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("a nobody user");
    let d = Daemon::start(&format!(
        r#"
[program.asroot]
command = "sleep 1000"
startsecs = 0

[program.asnobody]
command = "sleep 1000"
user = "nobody"
startsecs = 0

[program.dropper]
command = "setpriv --reuid={uid} --regid={gid} --clear-groups sleep 1000"
startsecs = 0
"#,
        uid = nobody.uid,
        gid = nobody.gid
    ));
    let mut pids = Vec::new();
    for name in ["asroot", "asnobody", "dropper"] {
        d.wait_state(name, "RUNNING", 10 * SECS);
        let pid = d.process(name)["pid"].as_i64().expect("a pid") as i32;
        let want = if name == "asroot" { 0 } else { nobody.uid.as_raw() };
        // setpriv has exec'd sleep once its uid is nobody's.
        wait_for(&format!("{name} to run as uid {want}"), 10 * SECS, || uid_of(pid) == Some(want));
        pids.push((name, pid));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL minderd, which this test started");
    for (name, pid) in pids {
        wait_for(&format!("{name} (pid {pid}) to die with minderd"), 10 * SECS, || !alive(pid));
    }
}

/// minderd's sentinel: its child named `minderd-sentinel`.
fn sentinel_of(minderd: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == minderd && name.starts_with("minderd-sentine")).then_some(pid)
    })
}

/// Without the sentinel, the kernel's parent-death signal alone still ends a `user=` child
/// with minderd, as it is asked for after the switch of user (before it, the switch clears
/// it). A program that drops privileges itself is not covered then: that is what the sentinel
/// is for.
#[test]
fn the_parent_death_signal_survives_the_switch_to_user() {
    if !nix::unistd::Uid::current().is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("a nobody user");
    let d = Daemon::start(
        r#"
[program.asnobody]
command = "sleep 1000"
user = "nobody"
startsecs = 0
"#,
    );
    d.wait_state("asnobody", "RUNNING", 10 * SECS);
    let pid = d.process("asnobody")["pid"].as_i64().expect("a pid") as i32;
    assert_eq!(uid_of(pid), Some(nobody.uid.as_raw()));
    let sentinel = sentinel_of(d.pid()).expect("minderd's sentinel");
    // Both are part of the daemon this test started; each is ended by its pid.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sentinel), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the sentinel");
    wait_for("the sentinel to be gone", 10 * SECS, || !alive(sentinel));
    assert!(alive(pid), "the sentinel ends nothing when it dies itself");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL minderd");
    wait_for("the user= child to die with minderd", 10 * SECS, || !alive(pid));
}

/// The number of descriptors a process has open.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd").count() as u64
}

/// Sets the soft limit of open files of `pid` (a minderd this test started); returns the old.
fn set_soft_nofile(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: reads the current limits into `old`.
    let r = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: sets the limits from `new`.
    let r = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// minderd out of descriptors is minderd's problem, not the program's: the spawn fails into
/// BACKOFF and is retried every second without spending startretries, so the program never goes
/// FATAL for it, and starts once descriptors are free again.
#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_descriptors_does_not_make_a_program_fatal() {
    use minder::pb;
    let d = Daemon::start(
        r#"
[program.later]
command = "sleep 1000"
autostart = false
startretries = 0
startsecs = 0
"#,
    );
    // The one connection this test talks through, opened before the limit leaves no room.
    let mut c = d.client().await;
    let state = |p: &pb::ProcessInfo| p.state();
    let get = pb::GetProcessRequest { name: "later".into() };
    assert_eq!(
        state(&c.get_process(get.clone()).await.expect("get").into_inner()),
        pb::ProcessState::Stopped
    );
    let old = set_soft_nofile(d.pid(), open_fds(d.pid()));
    let start = pb::StartProcessesRequest { names: vec!["later".into()], no_wait: true };
    let _ = c.start_processes(start).await;
    let failures = || d.log_lines("too many open files to spawn 'later'").len();
    let deadline = std::time::Instant::now() + 20 * SECS;
    while failures() < 3 {
        let p = c.get_process(get.clone()).await.expect("get").into_inner();
        assert_ne!(state(&p), pb::ProcessState::Fatal, "FATAL for minderd's shortage:\n{}", d.log());
        assert!(std::time::Instant::now() < deadline, "no third attempt:\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let p = c.get_process(get.clone()).await.expect("get").into_inner();
    assert_eq!(state(&p), pb::ProcessState::Backoff, "{}", d.log());
    assert_eq!(p.description, "too many open files to spawn 'later'");
    assert!(d.log().contains("not counted against startretries"), "{}", d.log());
    set_soft_nofile(d.pid(), old);
    let deadline = std::time::Instant::now() + 10 * SECS;
    while state(&c.get_process(get.clone()).await.expect("get").into_inner()) != pb::ProcessState::Running {
        assert!(std::time::Instant::now() < deadline, "not RUNNING once descriptors were free:\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// linux/capability.h's number for CAP_SYS_RESOURCE (the libc crate does not name it).
const CAP_SYS_RESOURCE: libc::c_ulong = 24;

/// At start minderd raises its soft limit of open files as far as the configured processes
/// need (5 each), up to the hard limit, and warns when even the hard limit is too low.
#[test]
fn the_open_file_limit_is_raised_for_the_programs_and_a_shortfall_is_warned_of() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::Uid::current().is_root() {
        eprintln!("skipped: dropping CAP_SYS_RESOURCE needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    // 60 programs need 64 + 5 * 60 = 364 descriptors; the hard limit is 200.
    let mut conf = String::from("[daemon]\nminfds = 100\n");
    for i in 0..60 {
        conf.push_str(&format!("[program.p{i}]\ncommand = \"true\"\nautostart = false\nstdout_logfile = \"NONE\"\nstderr_logfile = \"NONE\"\n"));
    }
    std::fs::write(dir.path().join("m.toml"), conf).expect("write");
    let sock = dir.path().join("m.sock");
    let mut cmd = std::process::Command::new(crate::harness::bin("minderd"));
    cmd.arg("-c").arg(dir.path().join("m.toml")).arg("--listen").arg(format!("unix://{}", sock.display()));
    cmd.arg("-l").arg(dir.path().join("d.log"));
    // SAFETY: prctl and setrlimit are async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(|| {
            // Root without CAP_SYS_RESOURCE (gone from the bounding set, it is not regained
            // at exec) cannot raise a hard limit, as an unprivileged daemon could not.
            if libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let lim = libc::rlimit { rlim_cur: 50, rlim_max: 200 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.stdout(std::process::Stdio::null()).spawn().expect("minderd starts");
    wait_for("minderd to answer", 10 * SECS, || crate::harness::ctl_at(&sock, &["pid"]).status.success());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a line").to_string();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["200", "200"], "raised to the hard limit, beyond minfds: {line}");
    let log = std::fs::read_to_string(dir.path().join("d.log")).expect("log");
    assert!(log.contains("INFO Increased RLIMIT_NOFILE limit to 200"), "{log}");
    assert!(
        log.contains(
            "WARN RLIMIT_NOFILE is 200 (the hard limit), but 60 processes need about 364 descriptors"
        ),
        "{log}"
    );
    crate::harness::sigterm(&child);
    assert!(child.wait().expect("exits").success());
}

#[test]
fn spawn_failures_carry_their_reason() {
    let d = Daemon::start(
        r#"
[program.nodir]
command = "true"
directory = "/nonexistent/dir"
startretries = 0

[program.nofile]
command = "/nonexistent/program"
startretries = 0

[program.notexec]
command = "{dir}/minder.toml"
startretries = 0
"#,
    );
    for (name, why) in [
        ("nodir", "couldn't chdir to /nonexistent/dir: ENOENT (No such file or directory)"),
        ("nofile", "can't find command '/nonexistent/program'"),
        ("notexec", "is not executable"),
    ] {
        d.wait_state(name, "FATAL", 10 * SECS);
        let desc = d.process(name)["description"].as_str().unwrap_or("").to_string();
        assert!(desc.contains(why), "{name}: {desc}");
    }
}

#[test]
fn descriptors_above_two_are_not_inherited() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("m.toml"),
        format!(
            "[program.fds]\ncommand = \"sh -c 'ls /proc/$$/fd'\"\nstartsecs = 0\nautorestart = false\nstdout_logfile = \"{}/fds.out\"\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let sock = dir.path().join("m.sock");
    // minderd itself inherits a descriptor that is not close-on-exec, as from a careless parent.
    let leaked = std::fs::File::open("/dev/null").expect("open");
    let leaked_fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let mut cmd = std::process::Command::new(crate::harness::bin("minderd"));
    cmd.arg("-c").arg(dir.path().join("m.toml")).arg("--listen").arg(format!("unix://{}", sock.display()));
    cmd.arg("-l").arg(dir.path().join("d.log"));
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(leaked_fd, 9) < 0 || libc::fcntl(9, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.stdout(std::process::Stdio::null()).spawn().expect("minderd starts");
    wait_for("the program to list its descriptors", 10 * SECS, || {
        std::fs::read_to_string(dir.path().join("fds.out")).is_ok_and(|s| s.lines().count() >= 3)
    });
    let fds: Vec<String> =
        std::fs::read_to_string(dir.path().join("fds.out")).expect("out").lines().map(String::from).collect();
    // 0, 1 and 2, plus the one ls itself opens to read the directory.
    assert!(!fds.contains(&"9".to_string()), "descriptor 9 leaked into the child: {fds:?}");
    assert!(fds.len() <= 4, "{fds:?}");
    crate::harness::sigterm(&child);
    assert!(child.wait().expect("exits").success());
}

/// As PID 1 of a container (a new PID namespace), minderd reaps orphans that are not its own
/// children, shuts down on SIGTERM, and exits 0.
#[test]
fn as_pid_1_it_reaps_orphans_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    // The program leaves an orphan every time it runs: a grandchild that exits at once.
    std::fs::write(
        dir.path().join("m.toml"),
        "[program.orphans]\ncommand = \"sh -c '(sh -c \\\"exit 0\\\" &) ; sleep 100'\"\nstartsecs = 0\n",
    )
    .expect("write");
    let sock = dir.path().join("m.sock");
    let mut unshare = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(crate::harness::bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .arg("-l")
        .arg(dir.path().join("d.log"))
        .args(["-e", "debug"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare runs");
    let ctl = |args: &[&str]| crate::harness::ctl_at(&sock, args);
    wait_for("minderd as PID 1", 10 * SECS, || stdout(&ctl(&["pid"])).trim() == "1");
    // minderd's pid outside the namespace: unshare's only child.
    let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", unshare.id(), unshare.id()))
        .expect("children of unshare");
    let minderd: i32 = children.split_whitespace().next().expect("a child").parse().expect("pid");
    // Several runs leave several orphans; none stays a zombie.
    for _ in 0..3 {
        assert_eq!(code(&d_restart(&ctl)), 0);
    }
    // Each orphan is reaped by minderd, which logs it at debug level.
    wait_for("three orphans reaped", 10 * SECS, || {
        std::fs::read_to_string(dir.path().join("d.log"))
            .is_ok_and(|l| l.matches("reaped unknown pid").count() >= 3)
    });
    wait_for("no zombie children of minderd", 10 * SECS, || {
        let kids =
            std::fs::read_to_string(format!("/proc/{minderd}/task/{minderd}/children")).unwrap_or_default();
        kids.split_whitespace().all(|p| alive(p.parse().unwrap_or(0)))
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(minderd), nix::sys::signal::Signal::SIGTERM)
        .expect("signal");
    let status = unshare.wait().expect("unshare exits");
    assert!(status.success(), "minderd as PID 1 exits 0 after SIGTERM: {status}");
    assert!(std::fs::read_to_string(dir.path().join("d.log")).expect("log").contains("stopped: orphans"));
}

fn d_restart(ctl: &dyn Fn(&[&str]) -> std::process::Output) -> std::process::Output {
    ctl(&["restart", "orphans"])
}
