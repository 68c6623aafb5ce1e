//! Issue 16's lifecycle options end to end: backoff, one-shot programs, dependencies and the
//! notify readiness protocol, in both configuration formats.

use std::time::Duration;

use crate::harness::Daemon;

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
