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
    let out = std::process::Command::new(crate::harness::bin("minderd"))
        .arg("--check-config")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("runs");
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
