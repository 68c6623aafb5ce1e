//! reread, update, add, remove, avail and reload: only what changed is touched.

use std::time::Duration;

use crate::harness::{code, stdout, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

const BEFORE: &str = r#"
[program.same]
command = "sleep 100"
startsecs = 0

[program.edited]
command = "sleep 100"
startsecs = 0

[program.dropped]
command = "sleep 100"
startsecs = 0

[program.api]
command = "sleep 100"
startsecs = 0

[program.worker]
command = "sleep 100"
startsecs = 0

[group.site]
programs = ["api", "worker"]
"#;

/// BEFORE with `edited` changed, `dropped` gone, `fresh` new, and `worker` changed inside the
/// group whose `api` is not.
fn after() -> String {
    BEFORE
        .replace("[program.edited]\ncommand = \"sleep 100\"", "[program.edited]\ncommand = \"sleep 200\"")
        .replace("[program.dropped]\ncommand = \"sleep 100\"\nstartsecs = 0\n", "")
        .replace("[program.worker]\ncommand = \"sleep 100\"", "[program.worker]\ncommand = \"sleep 300\"")
        + "\n[program.fresh]\ncommand = \"sleep 100\"\nstartsecs = 0\n"
}

fn pid(d: &Daemon, name: &str) -> i64 {
    d.process(name)["pid"].as_i64().unwrap_or(0)
}

fn all_running(d: &Daemon, names: &[&str]) {
    for n in names {
        d.wait_state(n, "RUNNING", 10 * SECS);
    }
}

#[test]
fn update_restarts_only_what_changed() {
    let d = Daemon::start(BEFORE);
    all_running(&d, &["same", "edited", "dropped", "site:api", "site:worker"]);
    let before: Vec<i64> = ["same", "edited", "site:api", "site:worker"].iter().map(|n| pid(&d, n)).collect();
    std::fs::write(&d.config, after()).expect("edit the config");

    let out = d.ctl(&["reread"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out),
        "dropped: disappeared\nedited: changed (argv, command)\nfresh: available\nsite:worker: changed (argv, command)\n"
    );
    // reread changes nothing that runs.
    assert_eq!(pid(&d, "edited"), before[1]);

    let out = d.ctl(&["update", "--dry-run"]);
    assert!(stdout(&out).contains("edited: would be updated (argv, command)"), "{}", stdout(&out));
    assert_eq!(pid(&d, "edited"), before[1], "a dry run changes nothing");

    let out = d.ctl(&["update"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let text = stdout(&out);
    for line in [
        "dropped: stopped\ndropped: removed process group\n",
        "edited: stopped\nedited: updated process group\n",
        "site:worker: stopped\nsite:worker: updated\n",
        "fresh: added process group\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    all_running(&d, &["same", "edited", "fresh", "site:api", "site:worker"]);
    assert_eq!(pid(&d, "same"), before[0], "an unchanged program keeps its pid");
    assert_eq!(pid(&d, "site:api"), before[2], "an unchanged program in a changed group keeps its pid");
    assert_ne!(pid(&d, "edited"), before[1]);
    assert_ne!(pid(&d, "site:worker"), before[3]);
    assert_eq!(code(&d.ctl(&["status", "dropped"])), 4, "removed");
    assert_eq!(d.process("edited")["description"].as_str().map(|s| s.starts_with("pid ")), Some(true));
    assert!(stdout(&d.ctl(&["update"])).contains("No config updates to processes"));
}

#[test]
fn a_bad_configuration_changes_nothing() {
    let d = Daemon::start(BEFORE);
    all_running(&d, &["same", "edited"]);
    let before = pid(&d, "same");
    std::fs::write(&d.config, after() + "\n[program.broken]\nstartsecs = \"soon\"\n").expect("edit");
    for cmd in [&["reread"][..], &["update"][..], &["reload"][..]] {
        let out = d.ctl(cmd);
        assert_eq!(code(&out), 1, "{cmd:?}");
        let err = crate::harness::stderr(&out);
        assert!(err.contains("program.broken.startsecs") && err.contains("program.broken.command"), "{err}");
    }
    assert_eq!(pid(&d, "same"), before);
    assert_eq!(d.state("dropped"), "RUNNING", "nothing was removed");
    assert_eq!(code(&d.ctl(&["status", "fresh"])), 4, "nothing was added");
}

#[test]
fn sighup_applies_the_configuration_like_update() {
    let d = Daemon::start(BEFORE);
    all_running(&d, &["same", "edited", "dropped"]);
    let same = pid(&d, "same");
    std::fs::write(&d.config, after()).expect("edit");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGHUP)
        .expect("hup");
    d.wait_state("fresh", "RUNNING", 10 * SECS);
    wait_for("dropped to be removed", 10 * SECS, || code(&d.ctl(&["status", "dropped"])) == 4);
    assert_eq!(pid(&d, "same"), same);
}

#[test]
fn reload_restart_all_restarts_everything() {
    let d = Daemon::start(BEFORE);
    all_running(&d, &["same", "edited"]);
    let same = pid(&d, "same");
    let out = d.ctl(&["reload", "--restart-all"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    d.wait_state("same", "RUNNING", 10 * SECS);
    assert_ne!(pid(&d, "same"), same, "supervisord's reload restarts everything");
}

#[test]
fn add_remove_and_avail() {
    let d = Daemon::start(BEFORE);
    all_running(&d, &["same"]);
    std::fs::write(&d.config, after()).expect("edit");
    assert_eq!(code(&d.ctl(&["reread"])), 0);
    let avail = stdout(&d.ctl(&["avail"]));
    assert!(avail.contains(&format!("{:<32} {:<9} {:<9} 999:999", "fresh", "avail", "auto")), "{avail}");
    assert!(avail.contains(&format!("{:<32} {:<9} {:<9} 999:999", "same", "in use", "auto")), "{avail}");
    let out = d.ctl(&["add", "fresh"]);
    assert_eq!(stdout(&out), "fresh: added process group\n");
    d.wait_state("fresh", "RUNNING", 10 * SECS);
    let out = d.ctl(&["add", "fresh"]);
    assert_eq!(stdout(&out), "ERROR: process group already active\n");
    let out = d.ctl(&["add", "nope"]);
    assert_eq!(stdout(&out), "ERROR: no such process/group: nope\n");
    assert_eq!(code(&out), 1);
    let out = d.ctl(&["remove", "fresh"]);
    assert_eq!(stdout(&out), "ERROR: process/group still running: fresh\n");
    assert_eq!(code(&out), 1);
    assert_eq!(code(&d.ctl(&["stop", "fresh"])), 0);
    let out = d.ctl(&["remove", "fresh"]);
    assert_eq!(stdout(&out), "fresh: removed process group\n");
    assert_eq!(code(&d.ctl(&["status", "fresh"])), 4);
}
