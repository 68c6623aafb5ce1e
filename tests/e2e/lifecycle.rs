//! The process state machine as users see it: startsecs, backoff, autorestart, stop.

use std::time::Duration;

use crate::harness::{code, stdout, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

#[test]
fn autostart_waits_startsecs_before_running() {
    let d = Daemon::start(
        r#"
[program.slow]
command = "sleep 100"
startsecs = 1.5
"#,
    );
    d.wait_state("slow", "RUNNING", 10 * SECS);
    let spawned = d.log_lines("spawned: 'slow'");
    let success = d.log_lines("success: slow entered RUNNING state");
    assert_eq!(spawned.len(), 1, "{}", d.log());
    assert_eq!(success.len(), 1, "{}", d.log());
    let up = success[0].0 - spawned[0].0;
    // The "spawned" line is stamped a moment after the instant startsecs counts from, and both
    // stamps are cut to milliseconds: allow 10 ms for that, no more.
    assert!(up >= 1.49, "RUNNING after {up} s, before startsecs=1.5");
    assert!(success[0].1.contains("process has stayed up for > than 1.5 seconds (startsecs)"));
}

#[test]
fn quick_exits_back_off_one_two_three_seconds_then_fatal() {
    let d = Daemon::start(
        r#"
[program.flaky]
command = "false"
startretries = 3
"#,
    );
    d.wait_state("flaky", "FATAL", 20 * SECS);
    let spawns: Vec<f64> = d.log_lines("spawned: 'flaky'").iter().map(|(t, _)| *t).collect();
    assert_eq!(spawns.len(), 4, "startretries=3 means 4 attempts:\n{}", d.log());
    for (i, pair) in spawns.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let want = (i + 1) as f64;
        assert!(
            gap >= want && gap < want + 0.5,
            "attempt {} came {gap:.3} s after the last, not ~{want} s",
            i + 2
        );
    }
    assert_eq!(
        d.log_lines("gave up: flaky entered FATAL state, too many start retries too quickly").len(),
        1
    );
    assert_eq!(d.process("flaky")["description"], "Exited too quickly (process log may have details)");
    // FATAL is left only by an explicit start.
    let out = d.ctl(&["start", "flaky"]);
    assert_eq!(code(&out), 7, "{}", stdout(&out));
    assert!(stdout(&out).contains("flaky: ERROR (spawn error)"), "{}", stdout(&out));
}

/// A program that runs for 0.3 s (past startsecs = 0.1) and exits with `code`.
fn exits_with(name: &str, code: i32, autorestart: &str) -> String {
    format!(
        "[program.{name}]\ncommand = \"sh -c 'sleep 0.3; exit {code}'\"\nstartsecs = 0.1\nautorestart = {autorestart}\nexitcodes = \"0,2\"\n"
    )
}

#[test]
fn autorestart_follows_exitcodes() {
    let conf = [
        exits_with("always", 0, "true"),
        exits_with("never", 1, "false"),
        exits_with("unexpected_bad", 1, "\"unexpected\""),
        exits_with("unexpected_ok", 2, "\"unexpected\""),
    ]
    .concat();
    let d = Daemon::start(&conf);
    // The restarted ones are spawned a second time; the others stay EXITED after one run.
    for name in ["always", "unexpected_bad"] {
        wait_for(&format!("{name} to be restarted"), 10 * SECS, || {
            d.process(name)["spawn_count"].as_u64().unwrap_or(0) >= 2
        });
    }
    for (name, expected) in [("never", false), ("unexpected_ok", true)] {
        d.wait_state(name, "EXITED", 10 * SECS);
        let p = d.process(name);
        assert_eq!(p["spawn_count"], 1, "{name} was restarted: {p}");
        assert_eq!(p["exit_status"]["expected"], expected, "{name}: {p}");
    }
    let log = d.log();
    assert!(log.contains("exited: never (exit status 1; not expected)"), "{log}");
    assert!(log.contains("exited: unexpected_ok (exit status 2; expected)"), "{log}");
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_stopwaitsecs() {
    let d = Daemon::start(
        r#"
[program.stubborn]
command = "python3 -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(\"ready\", flush=True); time.sleep(100)'"
startsecs = 0.2
stopwaitsecs = 0.5
"#,
    );
    d.wait_state("stubborn", "RUNNING", 10 * SECS);
    let pid = d.process("stubborn")["pid"].as_i64().expect("a pid") as i32;
    // The child must have installed its handler before it is signalled.
    let log = d.process("stubborn")["stdout_logfile"].as_str().expect("a log").to_string();
    wait_for("the child to be ready", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("ready"))
    });
    let out = d.ctl(&["stop", "stubborn"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "stubborn: stopped\n");
    let killing = d.log_lines(&format!("killing 'stubborn' ({pid}) with SIGKILL"));
    assert_eq!(killing.len(), 1, "{}", d.log());
    let p = d.process("stubborn");
    assert_eq!(p["state"], "STOPPED");
    assert_eq!(p["exit_status"]["description"], "terminated by SIGKILL");
    assert_eq!(p["exit_status"]["expected"], true, "a stop that was asked for is expected: {p}");
    assert!(d.log().contains("stopped: stubborn (terminated by SIGKILL)"));
    // As supervisord, while the client waits for the stop.
    assert!(d.log().contains("INFO waiting for stubborn to stop"), "{}", d.log());
}

#[test]
fn stop_restart_and_signal_a_running_process() {
    let d = Daemon::start(
        r#"
[program.sleeper]
command = "sh -c 'trap \"echo got USR1\" USR1; echo ready; while :; do sleep 0.1; done'"
startsecs = 0
stopasgroup = true
stdout_logfile = "{dir}/sleeper.out"
"#,
    );
    d.wait_state("sleeper", "RUNNING", 10 * SECS);
    let first = d.process("sleeper")["pid"].clone();
    let out = d.ctl(&["restart", "sleeper"]);
    assert_eq!(stdout(&out), "sleeper: stopped\nsleeper: started\n");
    assert_eq!(code(&out), 0);
    let p = d.process("sleeper");
    assert_ne!(first, p["pid"], "restart gives a new process");
    // The shell must have set its trap before it is signalled.
    let output = || std::fs::read_to_string(d.path("sleeper.out")).unwrap_or_default();
    wait_for("the new child to be ready", 10 * SECS, || output().matches("ready").count() >= 2);
    // A signal changes no state: the child handles it and carries on, RUNNING, same pid.
    let out = d.ctl(&["signal", "USR1", "sleeper"]);
    assert_eq!(stdout(&out), "sleeper: signalled\n");
    wait_for("the child to report the signal", 10 * SECS, || output().contains("got USR1"));
    let after = d.process("sleeper");
    assert_eq!(after["state"], "RUNNING", "{after}");
    assert_eq!(after["pid"], p["pid"], "{after}");
    assert_eq!(after["spawn_count"], p["spawn_count"], "{after}");
    // SIGKILL then ends it as an unexpected exit, and it is restarted.
    let out = d.ctl(&["signal", "KILL", "sleeper"]);
    assert_eq!(code(&out), 0);
    wait_for("sleeper to be restarted after SIGKILL", 10 * SECS, || {
        d.process("sleeper")["spawn_count"].as_u64().unwrap_or(0) >= 3
    });
    assert!(d.log().contains("exited: sleeper (terminated by SIGKILL; not expected)"), "{}", d.log());
}

/// A stop that was asked for is expected, whatever the exit status: `minder events` must not
/// call it "not expected".
#[test]
fn a_requested_stop_is_an_expected_exit_in_events() {
    let d = Daemon::start("[program.e]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("e", "RUNNING", 10 * SECS);
    let got = d.events_through_a_restart(&[], "e", |l| l.contains("STOPPING -> STOPPED"));
    let stopped = got.iter().find(|l| l.contains("STOPPING -> STOPPED")).expect("a stop");
    assert!(stopped.ends_with("e STOPPING -> STOPPED (terminated by SIGTERM; expected)"), "{stopped}");
    let p = d.process("e");
    assert_eq!(p["state"], "RUNNING");
}

/// `update` says what became of a program it started: supervisorctl's `added process group`,
/// then, for one whose spawn failed, that it is FATAL or in BACKOFF and why, not `started`.
#[test]
fn update_says_when_a_new_program_could_not_start() {
    let d = Daemon::start("[program.ok]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("ok", "RUNNING", 10 * SECS);
    let conf = std::fs::read_to_string(&d.config).expect("config")
        + "\n[program.nocmd]\ncommand = \"/nonexistent/nocmd\"\nstartretries = 0\n"
        + "\n[program.flaky]\ncommand = \"/nonexistent/flaky\"\nstartretries = 3\n";
    std::fs::write(&d.config, conf).expect("edit the config");
    let out = d.ctl(&["update"]);
    assert_eq!(
        stdout(&out),
        "flaky: added process group\n\
         flaky: not started yet: can't find command '/nonexistent/flaky' (BACKOFF, retrying)\n\
         nocmd: added process group\n\
         nocmd: not started: can't find command '/nonexistent/nocmd' (FATAL)\n"
    );
    assert_eq!(code(&out), 0, "the update itself was done, as supervisorctl's");
    // The audit line names the request without a dangling space when no group is named.
    let audit: Vec<String> = d.log_lines("requested update").into_iter().map(|(_, l)| l).collect();
    assert!(!audit.is_empty() && audit.iter().all(|l| l.ends_with(" requested update")), "{audit:?}");
}

#[test]
fn start_in_priority_order_and_shut_down_highest_first() {
    let d = Daemon::start(
        r#"
[program.third]
command = "sleep 100"
priority = 30
startsecs = 0

[program.first]
command = "sleep 100"
priority = 10
startsecs = 0

[program.second]
command = "sleep 100"
priority = 20
startsecs = 0
"#,
    );
    for n in ["first", "second", "third"] {
        d.wait_state(n, "RUNNING", 10 * SECS);
    }
    let order: Vec<String> = d.log_lines("spawned: '").iter().map(|(_, l)| l.clone()).collect();
    let names: Vec<&str> = order.iter().filter_map(|l| l.split('\'').nth(1)).collect();
    assert_eq!(names, ["first", "second", "third"]);
    let mut d = d;
    let out = d.ctl(&["shutdown"]);
    assert_eq!(stdout(&out), "Shut down\n");
    let status = d.wait_exit(30 * SECS);
    assert!(status.success(), "minderd exited with {status}");
    let stopped: Vec<String> = d.log_lines("stopped: ").iter().map(|(_, l)| l.clone()).collect();
    let names: Vec<&str> =
        stopped.iter().filter_map(|l| l.split("stopped: ").nth(1)?.split(' ').next()).collect();
    assert_eq!(names, ["third", "second", "first"], "{}", d.log());
    assert!(!d.socket.exists(), "the socket is removed at exit");
}

/// The daemon log names each file `[include]` read, in supervisord's words, in the order read.
#[test]
fn the_daemon_log_names_the_included_files() {
    let d = Daemon::start_with(
        "[include]\nfiles = [\"conf.d/*.toml\"]\n",
        &[
            ("conf.d/", ""),
            ("conf.d/b.toml", "[program.b]\ncommand = \"sleep 100\"\nautostart = false\n"),
            ("conf.d/a.toml", "[program.a]\ncommand = \"sleep 100\"\nautostart = false\n"),
        ],
        &[],
    );
    let lines: Vec<String> = d.log_lines("Included extra file").into_iter().map(|(_, l)| l).collect();
    let conf_d = d.path("conf.d");
    let want: Vec<String> = ["a.toml", "b.toml"]
        .iter()
        .map(|f| format!("INFO Included extra file \"{}\" during parsing", conf_d.join(f).display()))
        .collect();
    assert_eq!(lines.len(), 2, "{}", d.log());
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.ends_with(want.as_str()), "{line:?} does not end with {want:?}");
    }
}
