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
