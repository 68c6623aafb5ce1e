//! The command line as scripts see it: output, `--json`, and supervisorctl's exit codes.

use std::process::Command;
use std::time::Duration;

use crate::harness::{bin, code, stderr, stdout, Daemon};

const SECS: Duration = Duration::from_secs(1);

const PROGRAMS: &str = r#"
[program.web]
command = "sleep 100"
startsecs = 0

[program.idle]
command = "sleep 100"
autostart = false

[program.broken]
command = "/nonexistent/program"
autostart = false

[program.quitter]
command = "true"
autostart = false
startretries = 0

"#;

/// Every exit code of reference §3's table, from the command that produces it.
#[test]
fn exit_codes_are_supervisorctls() {
    let d = Daemon::start(PROGRAMS);
    d.wait_state("web", "RUNNING", 10 * SECS);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["status", "web"], 0, "status of running processes"),
        (&["status"], 3, "status with a stopped process listed"),
        (&["status", "web", "nope"], 4, "status with an unknown name"),
        (&["start", "web"], 0, "start of a running process (already started)"),
        (&["start", "broken"], 1, "start of a missing executable (no such file)"),
        (&["start", "quitter"], 7, "start that exits before startsecs (spawn error)"),
        (&["start", "nope:*"], 2, "start of an unknown group"),
        (&["start", "nope"], 1, "start of an unknown process"),
        (&["stop", "idle"], 0, "stop of a process that is not running"),
        (&["stop", "nope"], 1, "stop of an unknown process"),
        (&["pid", "idle"], 7, "pid of a stopped process"),
        (&["pid", "nope"], 1, "pid of an unknown process"),
        (&["pid", "web"], 0, "pid of a running process"),
        (&["signal", "HUP", "idle"], 7, "signal to a process that is not running"),
        (&["signal", "NOSUCHSIG", "web"], 2, "a bad signal name"),
    ];
    for (args, want, what) in cases {
        let out = d.ctl(args);
        assert_eq!(code(&out), *want, "{what}: minder {}\n{}{}", args.join(" "), stdout(&out), stderr(&out));
    }
}

/// A start still waiting for RUNNING when the process is stopped: abnormal termination, 7.
#[test]
fn abnormal_termination() {
    let d = Daemon::start(
        r#"
[program.slow]
command = "sleep 100"
startsecs = 30
autostart = false
"#,
    );
    std::thread::scope(|s| {
        let start = s.spawn(|| d.ctl(&["start", "slow"]));
        d.wait_state("slow", "STARTING", 10 * SECS);
        assert_eq!(code(&d.ctl(&["stop", "slow"])), 0);
        let out = start.join().expect("the start returns");
        assert_eq!(stdout(&out), "slow: ERROR (abnormal termination): exited before it was running\n");
        assert_eq!(code(&out), 7);
    });
}

#[test]
fn no_daemon_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("absent.sock");
    for (args, want) in [(&["status"][..], 4), (&["start", "web"][..], 7)] {
        let out = crate::harness::ctl_at(&sock, args);
        assert_eq!(code(&out), want, "{args:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "minder: no minderd at unix://{}: no such socket — start it with `minderd -c FILE`\n",
                sock.display()
            )
        );
        assert!(stdout(&out).is_empty());
    }
    // A stale socket that refuses connections.
    let _stale = std::os::unix::net::UnixListener::bind(&sock).map(drop);
    let out = crate::harness::ctl_at(&sock, &["stop", "x"]);
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("connection refused"), "{}", stderr(&out));
}

/// The status table, with pids and times replaced by placeholders.
#[test]
fn status_table_snapshot() {
    let d = Daemon::start(PROGRAMS);
    d.wait_state("web", "RUNNING", 10 * SECS);
    let _ = d.ctl(&["start", "broken"]);
    let out = d.ctl(&["status"]);
    // Column widths follow the pid's digits: pin the content and the column order, with runs
    // of spaces folded to two.
    insta::with_settings!({filters => vec![
        (r"\b\d{2,7}\b(\s+)\d+:\d\d:\d\d", "[PID]$1[UPTIME]"),
        (r" {2,}", "  "),
    ]}, {
        insta::assert_snapshot!(stdout(&out));
    });
}

#[test]
fn help_snapshots() {
    let out = Command::new(bin("minder")).arg("--help").output().expect("runs");
    assert_eq!(code(&out), 0);
    insta::assert_snapshot!("minder_help", stdout(&out));
    let out = Command::new(bin("minderd")).arg("--help").output().expect("runs");
    assert_eq!(code(&out), 0);
    insta::assert_snapshot!("minderd_help", stdout(&out));
}

#[test]
fn json_results() {
    let d = Daemon::start(PROGRAMS);
    let out = d.ctl(&["--json", "start", "idle", "nope"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["full_name"], "nope");
    assert_eq!(results[0]["result"], "BAD_NAME");
    assert_eq!(results[1]["full_name"], "idle");
    assert_eq!(results[1]["result"], "SUCCESS");
    assert_eq!(results[1]["state"], "RUNNING", "start waits for RUNNING (startsecs=1 by default)");
}

/// `minder … | head`: when standard output closes early, minder ends quietly (141, as a tool
/// killed by SIGPIPE), without a panic on standard error.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    for args in [&["completions", "bash"][..], &["man", "/nonexistent-dir-for-this-test"][..]] {
        let mut child = Command::new(bin("minder"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        // Close the read end at once: every write minder makes fails.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("exits");
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
        if args[0] == "completions" {
            assert_eq!(out.status.code(), Some(141), "{args:?}");
        }
    }
}

/// Global options work after the command too (`minder status -c FILE`), while `tail -c N`
/// keeps meaning bytes.
#[test]
fn global_options_after_the_command() {
    let d = Daemon::start(&format!("{PROGRAMS}\n[ctl]\nserverurl = \"unix://{{dir}}/minder.sock\"\n"));
    d.wait_state("web", "RUNNING", 10 * SECS);
    let config = d.config.display().to_string();
    // Elsewhere than the configuration, so only -c can find it.
    let elsewhere = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| {
        Command::new(bin("minder"))
            .args(args)
            .current_dir(elsewhere.path())
            .env_remove("MINDER_SERVER")
            .env("HOME", elsewhere.path())
            .env("XDG_CONFIG_HOME", elsewhere.path())
            .output()
            .expect("runs")
    };
    for args in [
        vec!["status", "web", "-c", config.as_str()],
        vec!["status", "web", "--configuration", config.as_str()],
        vec!["status", "web", &format!("--configuration={config}")],
        vec!["--json", "status", "-c", config.as_str(), "web"],
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("RUNNING"), "{args:?}: {}", stdout(&out));
    }
    let sock = format!("unix://{}", d.socket.display());
    let out = run(&["tail", "-c", "3", "web", "-s", &sock]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// `tail` with an unknown name answers as supervisorctl's: `NAME: ERROR (no such process
/// name)` on standard output, exit status 1.
#[test]
fn tail_of_an_unknown_name() {
    let d = Daemon::start(PROGRAMS);
    let out = d.ctl(&["tail", "nosuch"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "nosuch: ERROR (no such process name)\n");
    let out = d.ctl(&["tail", "web", "nosuch", "stderr"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "nosuch: ERROR (no such process name)\n");
    let out = d.ctl(&["tail", "-f", "nosuch"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "nosuch: ERROR (no such process name)\n");
}

/// A brief listing (what `status` asks for) leaves out the log file paths and nothing else;
/// a full one has them.
#[tokio::test(flavor = "multi_thread")]
async fn a_brief_listing_leaves_out_only_the_log_paths() {
    use minder::pb;
    let d = Daemon::start(PROGRAMS);
    d.wait_state("web", "RUNNING", 10 * SECS);
    let mut c = d.client().await;
    let list = |brief| pb::ListProcessesRequest { names: vec!["web".into()], with_tree: false, brief };
    let full = c.list_processes(list(false)).await.expect("full").into_inner().processes;
    let brief = c.list_processes(list(true)).await.expect("brief").into_inner().processes;
    assert_eq!((full.len(), brief.len()), (1, 1));
    assert!(full[0].stdout_logfile.ends_with(".log"), "{:?}", full[0].stdout_logfile);
    assert_eq!((brief[0].stdout_logfile.as_str(), brief[0].stderr_logfile.as_str()), ("", ""));
    let without_logs =
        pb::ProcessInfo { stdout_logfile: String::new(), stderr_logfile: String::new(), ..full[0].clone() };
    // The uptime may tick between the two calls.
    let same = |p: &pb::ProcessInfo| (p.full_name.clone(), p.state, p.pid, p.start_time, p.spawn_count);
    assert_eq!(same(&without_logs), same(&brief[0]));
}
