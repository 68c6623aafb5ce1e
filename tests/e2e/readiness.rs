//! Issue 16's lifecycle options end to end: backoff, one-shot programs, dependencies and the
//! notify readiness protocol, in both configuration formats.

use std::time::Duration;

use crate::harness::{wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

/// The times (daemon log seconds) of every spawn of `name`.
fn spawns(d: &Daemon, name: &str) -> Vec<f64> {
    d.log_lines(&format!("spawned: '{name}'")).iter().map(|(t, _)| *t).collect()
}

#[test]
fn exponential_backoff_doubles_then_caps() {
    let d = Daemon::start(
        r#"
[program.flaky]
command = "false"
backoff = "exponential"
backoff_initial = "200ms"
backoff_max = "800ms"
startretries = 4
"#,
    );
    d.wait_state("flaky", "FATAL", 20 * SECS);
    let spawns = spawns(&d, "flaky");
    assert_eq!(spawns.len(), 5, "startretries = 4 means 5 attempts:\n{}", d.log());
    // 0.2 s, 0.4 s, 0.8 s, then capped at 0.8 s (each after a quick exit, a few ms).
    for (pair, want) in spawns.windows(2).zip([0.2, 0.4, 0.8, 0.8]) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= want - 0.01 && gap < want + 0.4,
            "a retry came {gap:.3} s after the last, not ~{want} s:\n{}",
            d.log()
        );
    }
}

#[test]
fn a_oneshot_completes_and_is_not_restarted() {
    let d = Daemon::start(
        r#"
[program.migrate]
command = "sh -c 'exit 0'"
oneshot = true
autorestart = true

[program.broken]
command = "sh -c 'exit 4'"
oneshot = true
startretries = 0
"#,
    );
    d.wait_state("migrate", "EXITED", 10 * SECS);
    d.wait_state("broken", "FATAL", 10 * SECS);
    assert_eq!(d.log_lines("exited: migrate (exit status 0; expected, completed)").len(), 1, "{}", d.log());
    // `start --wait` of a one-shot program succeeds once it has completed.
    let out = d.ctl(&["start", "migrate"]);
    assert_eq!(crate::harness::code(&out), 0, "{}", crate::harness::stdout(&out));
    assert_eq!(d.state("migrate"), "EXITED");
    assert_eq!(spawns(&d, "migrate").len(), 2, "one autostart, one start; never restarted:\n{}", d.log());
}

/// The daemon log time of the first line containing `needle`.
fn first(d: &Daemon, needle: &str) -> f64 {
    match d.log_lines(needle).first() {
        Some((t, _)) => *t,
        None => panic!("no {needle:?} in the log:\n{}", d.log()),
    }
}

#[test]
fn a_oneshot_migration_runs_before_the_program_that_needs_it_completed() {
    let d = Daemon::start(
        r#"
[program.web]
command = "sleep 100"
startsecs = 0
depends_on = ["migrate:completed"]

[program.migrate]
command = "sh -c 'sleep 0.5; exit 0'"
oneshot = true
"#,
    );
    d.wait_state("web", "RUNNING", 10 * SECS);
    assert_eq!(d.state("migrate"), "EXITED");
    let completed = first(&d, "exited: migrate (exit status 0; expected, completed)");
    let web = first(&d, "spawned: 'web'");
    assert!(web >= completed, "web spawned at {web}, before migrate completed at {completed}:\n{}", d.log());
}

#[test]
fn a_cycle_is_a_configuration_error_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("minder.toml");
    std::fs::write(
        &conf,
        "[program.a]\ncommand = \"sleep 1\"\ndepends_on = [\"b:ready\"]\n\n[program.b]\ncommand = \"sleep 1\"\ndepends_on = [\"a\"]\n",
    )
    .expect("write");
    let out = crate::harness::check_config(&conf);
    assert_ne!(crate::harness::code(&out), 0);
    let err = crate::harness::stderr(&out);
    assert!(err.contains("minder.toml:3: program.a.depends_on: dependency cycle: a -> b -> a"), "{err}");
}

#[test]
fn start_brings_up_what_a_program_needs_and_stop_goes_in_reverse() {
    let d = Daemon::start(
        r#"
[program.db]
command = "sleep 100"
startsecs = 0.5
autostart = false

[program.web]
command = "sleep 100"
startsecs = 0
autostart = false
depends_on = ["db:ready"]
"#,
    );
    // `start web` starts db too, and web spawns only once db is RUNNING.
    let out = d.ctl(&["start", "web"]);
    assert_eq!(crate::harness::code(&out), 0, "{}", crate::harness::stdout(&out));
    assert_eq!(d.state("db"), "RUNNING");
    assert_eq!(d.state("web"), "RUNNING");
    let db_ready = first(&d, "success: db entered RUNNING state");
    assert!(first(&d, "spawned: 'web'") >= db_ready, "{}", d.log());
    // Stopping both stops web (the dependent) before db is even signalled.
    let out = d.ctl(&["stop", "all"]);
    assert_eq!(crate::harness::code(&out), 0, "{}", crate::harness::stdout(&out));
    let web_stopped = first(&d, "stopped: web");
    let db_stopped = first(&d, "stopped: db");
    assert!(web_stopped <= db_stopped, "{}", d.log());
    let web_line = d.log().lines().position(|l| l.contains("stopped: web"));
    let db_line = d.log().lines().position(|l| l.contains("stopped: db"));
    assert!(web_line < db_line, "web must stop first:\n{}", d.log());
}

#[test]
fn a_failed_dependency_leaves_its_dependent_waiting_and_says_so() {
    let d = Daemon::start(
        r#"
[program.db]
command = "false"
startretries = 0

[program.web]
command = "sleep 100"
startsecs = 0
depends_on = ["db:ready"]
"#,
    );
    d.wait_state("db", "FATAL", 10 * SECS);
    wait_for("web to say why it waits", 10 * SECS, || {
        d.process("web")["description"] == "waiting for db (FATAL)"
    });
    assert_eq!(d.state("web"), "STARTING");
    assert!(d.log_lines("spawned: 'web'").is_empty(), "{}", d.log());
    // Stopping a waiting program is immediate; it never ran.
    let out = d.ctl(&["stop", "web"]);
    assert_eq!(crate::harness::code(&out), 0, "{}", crate::harness::stdout(&out));
    assert_eq!(d.state("web"), "STOPPED");
}

/// A `sh` command line that runs python3 to send `messages` (one sd_notify datagram each,
/// `sleep` seconds apart) on $NOTIFY_SOCKET, then sleeps `then` seconds.
fn notifier(messages: &[&str], gap: f64, then: u32) -> String {
    let msgs: Vec<String> = messages.iter().map(|m| format!("{m:?}")).collect();
    format!(
        "python3 -c 'import os,socket,time\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\nfor m in [{}]:\n  time.sleep({gap}); s.sendto(m.encode(), os.environ[\"NOTIFY_SOCKET\"])\ntime.sleep({then})'",
        msgs.join(",")
    )
}

#[test]
fn a_web_program_waits_for_its_database_to_say_ready() {
    let db = notifier(&["STATUS=loading", "READY=1\nSTATUS=accepting connections"], 0.4, 100);
    let conf = format!(
        "[program.db]\ncommand = {db:?}\nready = \"notify\"\nstartsecs = 0\n\n[program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\ndepends_on = [\"db:ready\"]\n"
    );
    let d = Daemon::start(&conf);
    // Before READY=1, db is STARTING (whatever startsecs says) and web waits, saying why.
    wait_for("db's STATUS", 10 * SECS, || d.process("db")["description"] == "loading");
    assert_eq!(d.state("db"), "STARTING");
    assert_eq!(d.process("web")["description"], "waiting for db");
    d.wait_state("web", "RUNNING", 10 * SECS);
    let ready = first(&d, "success: db entered RUNNING state, process reported READY=1 (notify)");
    assert!(first(&d, "spawned: 'web'") >= ready, "{}", d.log());
    let desc = d.process("db")["description"].as_str().unwrap_or_default().to_string();
    assert!(desc.ends_with(", accepting connections"), "{desc}");
    // Shutdown stops web before db.
    let mut d = d;
    d.stop();
    let log = d.log();
    let web = log.lines().position(|l| l.contains("stopped: web"));
    let db = log.lines().position(|l| l.contains("stopped: db"));
    assert!(web.is_some() && web < db, "web must stop first:\n{log}");
}

#[test]
fn the_watchdog_restarts_a_hung_program_and_ready_timeout_fails_a_start() {
    let hung = notifier(&["READY=1", "WATCHDOG=1"], 0.1, 100);
    let never = notifier(&["STATUS=thinking"], 0.1, 100);
    let conf = format!(
        "[program.hung]\ncommand = {hung:?}\nready = \"notify\"\nwatchdog_sec = \"700ms\"\n\n[program.never]\ncommand = {never:?}\nready = \"notify\"\nready_timeout = 0.5\nstartretries = 0\n"
    );
    let d = Daemon::start(&conf);
    wait_for("the watchdog to fire", 10 * SECS, || {
        !d.log_lines("watchdog: hung").is_empty() && spawns(&d, "hung").len() >= 2
    });
    let line = &d.log_lines("watchdog: hung")[0].1;
    assert!(line.contains("sent no WATCHDOG=1 within watchdog_sec (0.7 s); restarting it"), "{line}");
    // It was RUNNING, kept alive once (0.1 s after READY), then silent: restarted about
    // 0.8 s after READY=1, not before.
    let ready = first(&d, "success: hung entered RUNNING state");
    let fired = first(&d, "watchdog: hung");
    assert!(fired - ready >= 0.75 && fired - ready < 2.0, "{}", d.log());
    d.wait_state("never", "FATAL", 10 * SECS);
    assert_eq!(d.process("never")["description"], "Not ready within ready_timeout (0.5 s)");
}

#[test]
fn the_same_options_from_a_supervisord_conf() {
    // One line (supervisord.conf strips the indentation of continuation lines).
    let db = "python3 -c \"import os,socket,time; time.sleep(0.2); socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(100)\"";
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nlogfile=%(here)s/d.log\npidfile=%(here)s/d.pid\n[unix_http_server]\nfile=%(here)s/s.sock\n\
             [program:db]\ncommand={}\nready=notify\nwatchdog_sec=30\nready_timeout=10s\n\
             [program:migrate]\ncommand=sh -c 'exit 0'\noneshot=true\ndepends_on=db:ready\n\
             [program:web]\ncommand=sleep 100\nstartsecs=0\ndepends_on = db:ready, migrate:completed\nbackoff=exponential\nbackoff_initial=1s\nbackoff_max=60s\nstartretries=infinite\n",
            db
        ),
    )
    .expect("write");
    let child = Stopped(crate::harness::minderd_on(&conf));
    let sock = dir.path().join("s.sock");
    let state = |name: &str| {
        let out = crate::harness::ctl_at(&sock, &["status", name]);
        crate::harness::stdout(&out)
    };
    wait_for("web RUNNING", 15 * SECS, || state("web").contains("RUNNING"));
    assert!(state("migrate").contains("EXITED"), "{}", state("migrate"));
    assert!(state("db").contains("RUNNING"), "{}", state("db"));
    let log = std::fs::read_to_string(dir.path().join("d.log")).unwrap_or_default();
    let at = |needle: &str| log.lines().position(|l| l.contains(needle));
    assert!(at("success: db entered RUNNING state") < at("spawned: 'migrate'"), "{log}");
    assert!(at("exited: migrate (exit status 0; expected, completed)") < at("spawned: 'web'"), "{log}");
    drop(child);
}

/// A minderd the test started, ended (SIGTERM, by its pid) and waited for however the test
/// ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        crate::harness::sigterm(&self.0);
        let _ = self.0.wait();
    }
}

/// The NOTIFY_SOCKET a running child was given (from its environment).
fn notify_socket_of(pid: u64) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the child's environment");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("NOTIFY_SOCKET=").map(String::from))
        .expect("NOTIFY_SOCKET is set")
}

#[test]
fn only_the_child_can_say_it_is_ready_even_as_another_user() {
    // `nobody` must be able to reach its own socket (and run /usr/bin/python3: the pyenv
    // shim lives in root's home); we (root, another process) must not be
    // able to mark it ready, nor the other program.
    let ready_later = "/usr/bin/python3 -c \"import os,socket,time; time.sleep(float(os.environ['DELAY'])); socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(100)\"";
    let conf = format!(
        "[program.quiet]\ncommand = \"sleep 100\"\nready = \"notify\"\n\n[program.svc]\ncommand = {ready_later:?}\nready = \"notify\"\nuser = \"nobody\"\nenvironment = {{ DELAY = \"1\" }}\n"
    );
    let d = Daemon::start(&conf);
    wait_for("quiet to have a child", 10 * SECS, || d.process("quiet")["pid"].as_u64().unwrap_or(0) > 0);
    let pid = d.process("quiet")["pid"].as_u64().unwrap_or(0);
    let sock = notify_socket_of(pid);
    let meta = std::fs::metadata(&sock).expect("the socket");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let me = std::os::unix::net::UnixDatagram::unbound().expect("a socket");
    me.send_to(b"READY=1", &sock).expect("sent");
    // svc (as nobody) gets to RUNNING through its own socket, owned by nobody...
    d.wait_state("svc", "RUNNING", 10 * SECS);
    let svc_pid = d.process("svc")["pid"].as_u64().unwrap_or(0);
    let svc_sock = std::fs::metadata(notify_socket_of(svc_pid)).expect("svc's socket");
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("nobody exists");
    assert_eq!(svc_sock.uid(), nobody.uid.as_raw());
    // ...while our READY=1, sent a second before, changed nothing for quiet.
    assert_eq!(d.state("quiet"), "STARTING", "{}", d.log());
}
