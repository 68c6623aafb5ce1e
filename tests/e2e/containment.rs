//! Containment: a cgroup per process on the cgroup v2 hierarchy (this machine's unified mount
//! or a pure v2 host), so that a program's whole tree is known, stopped and never outlives
//! minderd; and the fallback to process groups, which cannot promise that.
//!
//! These need cgroup v2 and root, as CI has: a machine without them fails the first test
//! with the daemon's own explanation rather than passing without checking anything.

use std::time::Duration;

use crate::harness::{alive, code, stderr, stdout, wait_for, Daemon};

/// A program whose shell starts a grandchild in a session of its own (out of its process
/// group, as a double-forking daemon does), writes the grandchild's pid, then execs a sleep.
const TREE: &str =
    "#!/bin/sh\nsetsid sh -c 'echo $$ > \"$1\"; exec sleep 1000' x \"$1\" &\nexec sleep 1000\n";

fn with_tree(daemon_extra: &str, kill_mode: Option<&str>) -> Daemon {
    let kill_mode = kill_mode.map(|m| format!("kill_mode = \"{m}\"\n")).unwrap_or_default();
    Daemon::start_with(
        &format!(
            "[daemon]\n{daemon_extra}\n[program.tree]\ncommand = \"sh {{dir}}/tree.sh {{dir}}/grandchild.pid\"\n\
             startsecs = 0\nstopwaitsecs = 5\n{kill_mode}"
        ),
        &[("tree.sh", TREE)],
        &[],
    )
}

/// A GET over the daemon's unix socket, as curl --unix-socket makes it: the whole answer.
fn http_get(socket: &std::path::Path, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    answer
}

/// The grandchild's pid, once the program has written it.
fn grandchild(d: &Daemon) -> i32 {
    let file = d.path("grandchild.pid");
    wait_for("the grandchild's pid", Duration::from_secs(10), || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    std::fs::read_to_string(&file).expect("pid file").trim().parse().expect("a pid")
}

/// The cgroup root the daemon said it uses.
fn cgroup_root(d: &Daemon) -> std::path::PathBuf {
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("every process gets a cgroup of its own under "))
        .unwrap_or_else(|| panic!("minderd uses no cgroups here (cgroup v2 and root are needed):\n{log}"));
    std::path::PathBuf::from(line.rsplit("under ").next().expect("a path").trim())
}

#[test]
fn kill_mode_cgroup_stops_a_grandchild_that_left_the_process_group() {
    let d = with_tree("", Some("cgroup"));
    let root = cgroup_root(&d);
    let gc = grandchild(&d);
    let main = d.process("tree")["pid"].as_i64().expect("a pid") as i32;
    assert!(alive(gc));
    // The grandchild is in another session and process group: only the cgroup holds it.
    let sid = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    assert_ne!(
        sid(gc).rsplit(')').next().map(|r| r.split_whitespace().nth(3).map(String::from)),
        sid(main).rsplit(')').next().map(|r| r.split_whitespace().nth(3).map(String::from))
    );
    // status --json lists the whole tree.
    let tree: Vec<i64> = d.process("tree")["tree_pids"]
        .as_array()
        .expect("tree_pids")
        .iter()
        .filter_map(|p| p.as_i64())
        .collect();
    assert!(
        tree.contains(&(main as i64)) && tree.contains(&(gc as i64)),
        "tree_pids {tree:?}, main {main}, grandchild {gc}"
    );
    assert!(root.join("programs").join("tree:tree").join("cgroup.procs").exists());
    // The web page shows the tree too: in its JSON, and beside the pid.
    let status = http_get(&d.socket, "/status.json");
    assert!(status.contains(&format!("{gc}")) && status.contains("\"tree_pids\""), "{status}");
    let page = http_get(&d.socket, "/");
    assert!(page.contains("title=\"its cgroup: ") && page.contains(">+1</span>"), "{page}");

    let out = d.ctl(&["stop", "tree"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // STOPPED means the cgroup is empty: no waiting here.
    assert!(!alive(gc), "the grandchild {gc} outlived the stop");
    assert!(!alive(main));
    assert_eq!(d.state("tree"), "STOPPED");
}

#[test]
fn without_kill_mode_a_stop_ends_the_main_process_as_supervisord_does() {
    // supervisord's behaviour stays the default: the grandchild in its own session is not
    // part of the stop. (It is still in the cgroup, so minderd's death would take it.)
    let mut d = with_tree("", None);
    cgroup_root(&d);
    let gc = grandchild(&d);
    let out = d.ctl(&["stop", "tree"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(alive(gc), "the default stop must not go beyond the process");
    let tree = d.process("tree")["tree_pids"].clone();
    assert_eq!(tree, serde_json::json!([gc]), "what is left stays visible in the cgroup");
    d.kill9();
    wait_for("the grandchild to go with minderd", Duration::from_secs(10), || !alive(gc));
}

#[test]
fn sigkill_of_minderd_leaves_no_process_of_any_program_alive() {
    let mut d = with_tree("", None);
    let root = cgroup_root(&d);
    let gc = grandchild(&d);
    let tree: Vec<i32> = d.process("tree")["tree_pids"]
        .as_array()
        .expect("tree_pids")
        .iter()
        .filter_map(|p| p.as_i64().map(|p| p as i32))
        .collect();
    assert!(tree.contains(&gc) && tree.len() >= 2, "{tree:?}");
    d.kill9();
    wait_for("every process of the tree to be gone", Duration::from_secs(10), || {
        tree.iter().all(|&p| !alive(p))
    });
    // The sentinel did it and left: the subtree is empty, for the next minderd to clear once
    // it is a minute old.
    wait_for("the subtree to be empty", Duration::from_secs(10), || {
        ["daemon", "programs/tree:tree"].iter().all(|c| {
            std::fs::read_to_string(root.join(c).join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "populated 0"))
        })
    });
}

#[test]
fn a_clean_shutdown_ends_what_programs_left_behind_and_removes_the_subtree() {
    let mut d = with_tree("", None);
    let root = cgroup_root(&d);
    let gc = grandchild(&d);
    // Stopped as supervisord stops it: the grandchild in its own session lives on...
    assert_eq!(code(&d.ctl(&["stop", "tree"])), 0);
    assert!(alive(gc));
    // ...until minderd itself stops: nothing it started outlives it.
    d.stop();
    assert!(!alive(gc), "the grandchild {gc} outlived minderd's shutdown");
    assert!(
        d.log().contains("ending 1 process(es) that stopped programs left in their cgroups"),
        "{}",
        d.log()
    );
    assert!(!root.exists(), "{} is still there after shutdown", root.display());
}

#[test]
fn with_cgroups_off_kill_mode_cgroup_acts_as_group_and_says_so() {
    let d = with_tree("cgroup = \"off\"", Some("cgroup"));
    assert!(d.log().contains("cgroups are off: processes are tracked by process group only"), "{}", d.log());
    let gc = grandchild(&d);
    assert_eq!(d.process("tree")["tree_pids"], serde_json::json!([]));
    let out = d.ctl(&["stop", "tree"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // What the fallback cannot promise: a process that left the group is not followed.
    assert!(alive(gc), "the grandchild left the group; without a cgroup it is not found");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gc), nix::sys::signal::Signal::SIGKILL)
        .expect("end it");
}

#[test]
fn a_bad_kill_mode_or_cgroup_names_the_option_and_what_is_allowed() {
    let dir = tempfile::tempdir().expect("dir");
    for (text, expect) in [
        ("[program.a]\ncommand = \"sleep 1\"\nkill_mode = \"tree\"\n", "expected cgroup, group or process"),
        (
            "[daemon]\ncgroup = \"relative/path\"\n[program.a]\ncommand = \"sleep 1\"\n",
            "expected auto, off or a cgroup path",
        ),
        (
            "[daemon]\ncgroup = \"/a/../b\"\n[program.a]\ncommand = \"sleep 1\"\n",
            "expected auto, off or a cgroup path",
        ),
    ] {
        let conf = dir.path().join("m.toml");
        std::fs::write(&conf, text).expect("write");
        let out = crate::harness::check_config(&conf);
        assert_ne!(code(&out), 0);
        let err = stderr(&out);
        assert!(err.contains(expect) && err.contains("m.toml"), "{err}");
    }
}

/// Limits are written to the process's cgroup where their controller is available to minderd's
/// subtree; where it is not (this machine's unified mount has no controllers: they are all on
/// cgroup v1), each is reported as not enforced, naming the option.
#[test]
fn limits_are_set_where_their_controller_exists_and_reported_where_not() {
    let d = Daemon::start(
        "[program.web]\ncommand = \"sleep 1000\"\nstartsecs = 0\nmemory_max = \"64MB\"\npids_max = 32\n\
         cpu_weight = 50\ncpu_max = 0.5\n",
    );
    let root = cgroup_root(&d);
    d.wait_state("web", "RUNNING", Duration::from_secs(10));
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let dir = root.join("programs").join("web:web");
    for (option, controller, file, value) in [
        ("memory_max", "memory", "memory.max", "67108864"),
        ("pids_max", "pids", "pids.max", "32"),
        ("cpu_weight", "cpu", "cpu.weight", "50"),
        ("cpu_max", "cpu", "cpu.max", "50000 100000"),
    ] {
        if available.split_whitespace().any(|c| c == controller) {
            let got = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert_eq!(got.trim(), value, "{option}");
        } else {
            let want =
                format!("{option} of web is not enforced: the {controller} controller is not available");
            assert!(d.log().contains(&want), "no {want:?} in:\n{}", d.log());
        }
    }
}

#[test]
fn limits_without_cgroups_are_reported_as_not_enforced() {
    let d = Daemon::start(
        "[daemon]\ncgroup = \"off\"\n[program.web]\ncommand = \"sleep 1000\"\nstartsecs = 0\nmemory_max = \"1GB\"\n",
    );
    d.wait_state("web", "RUNNING", Duration::from_secs(10));
    assert!(d.log().contains("memory_max of web is not enforced: minderd uses no cgroups"), "{}", d.log());
}

/// Where the memory controller is available, a program past memory_max is killed by the
/// kernel and minderd says so; where it is not, the limit is reported as not enforced and
/// the program keeps its memory (nothing pretends to limit it).
#[test]
fn memory_max_is_enforced_and_an_oom_kill_reported_where_the_controller_exists() {
    let d = Daemon::start(
        "[program.hog]\ncommand = \"python3 -c 'import time; b = bytearray(256 << 20); print(\\\"allocated\\\", flush=True); time.sleep(1000)'\"\n\
         startsecs = 0\nautorestart = false\nmemory_max = \"32MB\"\n",
    );
    let root = cgroup_root(&d);
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if available.split_whitespace().any(|c| c == "memory") {
        crate::harness::wait_for("the OOM kill to be reported", Duration::from_secs(20), || {
            d.log().contains("exited: hog (killed by the OOM killer")
        });
        assert_eq!(d.state("hog"), "EXITED");
    } else {
        d.wait_state("hog", "RUNNING", Duration::from_secs(10));
        assert!(
            d.log().contains("memory_max of hog is not enforced: the memory controller is not available"),
            "{}",
            d.log()
        );
        // Not limited: it allocated its 256 MiB and runs on.
        crate::harness::wait_for("the allocation", Duration::from_secs(20), || {
            d.ctl(&["tail", "hog"]).stdout.starts_with(b"allocated")
        });
        assert_eq!(d.state("hog"), "RUNNING");
    }
}
