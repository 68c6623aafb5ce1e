//! `minder upgrade`: minderd replaced in place by the binary now at its path, with the same
//! pid, every child still running, and not a byte of their output lost or repeated.
//!
//! Each test runs a copy of minderd from its own directory, so that it can replace the file
//! there (a new copy renamed over it, as a package manager does) without touching the build.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{alive, bin, code, stderr, stdout, wait_for, Daemon};

/// Writes a counter line every millisecond, each with one write(2), unbuffered.
const COUNTER: &str =
    "import os, time\ni = 0\nwhile True:\n    os.write(1, b'%d\\n' % i)\n    i += 1\n    time.sleep(0.001)\n";

/// A program whose shell starts a grandchild in a session of its own (out of its process
/// group), writes the grandchild's pid, then execs a sleep.
const TREE: &str =
    "#!/bin/sh\nsetsid sh -c 'echo $$ > \"$1\"; exec sleep 1000' x \"$1\" &\nexec sleep 1000\n";

/// A daemon started from a copy of minderd at `DIR/bin/minderd`.
fn daemon(programs: &str, files: &[(&str, &str)]) -> Daemon {
    let mut d = Daemon::prepare(programs, files);
    let binary = d.path("bin/minderd");
    std::fs::create_dir_all(d.path("bin")).expect("make bin/");
    std::fs::copy(bin("minderd"), &binary).expect("copy minderd");
    d.minderd = Some(binary);
    d.spawn(&[]);
    d
}

/// Replaces the file at the daemon's binary path by `source` (a new file renamed over it).
fn replace_binary(d: &Daemon, source: &Path) {
    let fresh = d.path("bin/minderd.new");
    std::fs::copy(source, &fresh).expect("copy the new binary");
    std::fs::rename(&fresh, d.path("bin/minderd")).expect("rename it into place");
}

fn pid_of(d: &Daemon, name: &str) -> i64 {
    d.process(name)["pid"].as_i64().unwrap_or_else(|| panic!("{name} has a pid: {}", d.process(name)))
}

/// The counter lines in `log`, checked to be 0, 1, 2, … with nothing missing or repeated (a
/// last line still being written is left out). Returns how many.
fn check_counter(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).expect("the counter's log");
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for (i, line) in complete.lines().enumerate() {
        assert_eq!(
            line,
            i.to_string(),
            "line {} of the counter's log ({} lines)",
            i + 1,
            complete.lines().count()
        );
    }
    complete.lines().count()
}

/// What `/proc/PID/exe` names: "(deleted)" at the end while the daemon runs an image whose
/// file was replaced.
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// Runs `minder status counter` in a loop until told to stop; returns every failure (a
/// status that is not 0 with its output) and how many calls there were.
struct StatusLoop {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl StatusLoop {
    fn start(socket: PathBuf) -> StatusLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut calls = 0;
            while !flag.load(Ordering::SeqCst) {
                let o = crate::harness::ctl_at(&socket, &["status", "counter"]);
                calls += 1;
                if code(&o) != 0 || !stdout(&o).contains("RUNNING") {
                    failures.push(format!("exit {}: {}{}", code(&o), stdout(&o), stderr(&o)));
                }
            }
            (calls, failures)
        });
        StatusLoop { stop, thread }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the status loop")
    }
}

/// A `minder` that follows (tail -f), its output collected as it comes.
struct Follower {
    child: std::process::Child,
    out: Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Follower {
    fn start(socket: &Path, args: &[&str]) -> Follower {
        let mut child = std::process::Command::new(bin("minder"))
            .arg("-s")
            .arg(format!("unix://{}", socket.display()))
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("minder runs");
        let mut pipe = child.stdout.take().expect("its stdout");
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = Arc::clone(&out);
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Follower { child, out, reader }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    /// Ends it (by its pid) and returns everything it printed.
    fn stop(mut self) -> String {
        assert!(
            self.child.try_wait().expect("wait").is_none(),
            "the follower ended by itself: {}",
            self.text()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Follower { out, reader, .. } = self;
        let _ = reader.join();
        let text = String::from_utf8_lossy(&out.lock().expect("lock")).into_owned();
        text
    }
}

#[test]
fn an_upgrade_keeps_the_pids_and_every_line_the_children_write() {
    let mut d = daemon(
        "[program.counter]\ncommand = \"python3 {dir}/counter.py\"\nstartsecs = 1\n\
         stdout_logfile = \"{dir}/counter.log\"\nstdout_logfile_maxbytes = 0\n",
        &[("counter.py", COUNTER)],
    );
    d.wait_state("counter", "RUNNING", Duration::from_secs(20));
    let (daemon_pid, child_pid) = (d.pid(), pid_of(&d, "counter"));
    let log = d.path("counter.log");
    wait_for("the counter to write", Duration::from_secs(10), || check_counter(&log) > 100);

    replace_binary(&d, &bin("minderd"));
    assert!(
        exe_of(daemon_pid).ends_with("(deleted)"),
        "the old image's file is gone: {}",
        exe_of(daemon_pid)
    );
    let tail = Follower::start(&d.socket, &["tail", "-f", "counter"]);
    wait_for("tail -f to show lines", Duration::from_secs(10), || tail.text().lines().count() > 10);
    let status = StatusLoop::start(d.socket.clone());
    // The loop is running before the upgrade starts.
    wait_for("a status call", Duration::from_secs(10), || d.ctl(&["status", "counter"]).status.success());
    let started = std::time::Instant::now();
    let o = d.ctl(&["upgrade"]);
    let took = started.elapsed();
    assert_eq!(code(&o), 0, "minder upgrade: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("minderd upgraded to"), "{}", stdout(&o));
    let at_upgrade = check_counter(&log);
    // More status calls, and more lines, after the hand-over.
    wait_for("the counter to write on", Duration::from_secs(10), || check_counter(&log) > at_upgrade + 500);
    let (calls, failures) = status.finish();
    eprintln!("minder upgrade took {took:?}; {calls} status calls around it");
    assert!(
        failures.is_empty(),
        "{} of {calls} status calls failed around the upgrade: {failures:#?}",
        failures.len()
    );

    // The same daemon (pid), now running the new file; the same child, still writing.
    assert_eq!(exe_of(daemon_pid), d.path("bin/minderd").display().to_string(), "the new image runs");
    assert!(d.log().contains("carries on with pid"), "{}", d.log());
    let info = d.ctl(&["status", "counter", "--json"]);
    assert!(stdout(&info).contains("RUNNING"), "{}", stdout(&info));
    assert_eq!(pid_of(&d, "counter"), child_pid, "the child kept its pid");
    assert!(alive(child_pid as i32));
    let version = d.ctl(&["version"]);
    assert_eq!(code(&version), 0, "{}", stderr(&version));

    // tail -f went on through the upgrade (it reconnects), showing each line once.
    let past = at_upgrade + 300;
    wait_for("tail -f to show lines written after the upgrade", Duration::from_secs(10), || {
        tail.text().lines().any(|l| l.parse::<usize>().is_ok_and(|n| n > past))
    });
    let shown = tail.stop();
    let lines: Vec<&str> = shown.lines().collect();
    // The first line may be cut (the tail starts 1600 bytes back), the last still being written.
    let numbers: Vec<usize> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a counter line: {l:?}")))
        .collect();
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "tail -f skipped or repeated a line across the upgrade");
    }

    // Every line exactly once, in order, through the hand-over; then the daemon stops as ever.
    let total = check_counter(&log);
    assert!(total > at_upgrade + 500, "{total} lines");
    d.stop();
    wait_for("the counter to stop with minderd", Duration::from_secs(10), || !alive(child_pid as i32));
}

#[test]
fn a_new_binary_that_cannot_take_over_changes_nothing() {
    let d = daemon(
        "[program.counter]\ncommand = \"python3 {dir}/counter.py\"\nstartsecs = 1\n\
         stdout_logfile = \"{dir}/counter.log\"\nstdout_logfile_maxbytes = 0\n",
        &[("counter.py", COUNTER), ("broken", "#!/bin/sh\necho 'no such thing' >&2\nexit 1\n")],
    );
    d.wait_state("counter", "RUNNING", Duration::from_secs(20));
    let (daemon_pid, child_pid) = (d.pid(), pid_of(&d, "counter"));
    // Once its file is replaced, the running image is one whose file was deleted.
    let old_exe = format!("{} (deleted)", exe_of(daemon_pid));

    let broken = d.path("broken");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    replace_binary(&d, &broken);
    let o = d.ctl(&["upgrade"]);
    assert_ne!(code(&o), 0, "an upgrade to a failing binary is refused: {}", stdout(&o));
    assert!(
        stderr(&o).contains("cannot take over") && stderr(&o).contains("no such thing"),
        "{}",
        stderr(&o)
    );

    // A configuration changed and not applied: refused too, whatever the binary.
    replace_binary(&d, &bin("minderd"));
    let config = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(&d.config, format!("{config}\n[program.other]\ncommand = \"sleep 100\"\n"))
        .expect("write");
    let o = d.ctl(&["upgrade"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(stderr(&o).contains("not applied"), "{}", stderr(&o));

    // The old daemon carries on, with the same child, its output still logged.
    assert_eq!(exe_of(daemon_pid), old_exe, "still the old image");
    assert_eq!(d.state("counter"), "RUNNING");
    assert_eq!(pid_of(&d, "counter"), child_pid);
    let before = check_counter(&d.path("counter.log"));
    wait_for("the counter's log to grow", Duration::from_secs(10), || {
        check_counter(&d.path("counter.log")) > before + 100
    });
}

#[test]
fn after_an_upgrade_by_sigusr1_a_killed_minderd_still_leaves_no_process() {
    let mut d = daemon(
        "[program.tree]\ncommand = \"sh {dir}/tree.sh {dir}/grandchild.pid\"\nstartsecs = 0\n",
        &[("tree.sh", TREE)],
    );
    let log = d.log();
    assert!(
        log.contains("every process gets a cgroup of its own under "),
        "minderd uses no cgroups here (cgroup v2 and root are needed):\n{log}"
    );
    d.wait_state("tree", "RUNNING", Duration::from_secs(10));
    let file = d.path("grandchild.pid");
    wait_for("the grandchild's pid", Duration::from_secs(10), || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    let grandchild: i32 = std::fs::read_to_string(&file).expect("pid").trim().parse().expect("a pid");
    let child = pid_of(&d, "tree") as i32;

    // This time through the signal.
    replace_binary(&d, &bin("minderd"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGUSR1)
        .expect("signal minderd");
    wait_for("the upgraded image to answer", Duration::from_secs(20), || {
        d.log().contains("carries on with pid") && d.ctl(&["status", "tree"]).status.success()
    });
    assert_eq!(exe_of(d.pid()), d.path("bin/minderd").display().to_string(), "the new image runs");
    assert_eq!(pid_of(&d, "tree") as i32, child);
    let tree = d.process("tree")["tree_pids"].clone();
    assert!(
        tree.as_array().is_some_and(|t| t.iter().any(|p| p.as_i64() == Some(grandchild.into()))),
        "the tree still holds the grandchild {grandchild}: {tree}"
    );

    d.kill9();
    wait_for("the child and the grandchild to go with minderd", Duration::from_secs(10), || {
        !alive(child) && !alive(grandchild)
    });
}

/// `kill_on_exit = false`, the opt-out: a SIGKILLed minderd leaves its processes running (no
/// parent-death signal, no sentinel killing the cgroup), as supervisord does.
#[test]
fn with_kill_on_exit_off_a_killed_minderd_leaves_its_processes_running() {
    let mut d = Daemon::start(
        "[daemon]\nkill_on_exit = false\n\n[program.beat]\n\
         command = \"sh -c 'while :; do date +%%s%%N > {dir}/beat; sleep 0.02; done'\"\nstartsecs = 0\n",
    );
    d.wait_state("beat", "RUNNING", Duration::from_secs(10));
    let child = pid_of(&d, "beat") as i32;
    assert!(d.log().contains("kill_on_exit is off"), "{}", d.log());
    d.kill9();
    // The program still writes after minderd is gone.
    let beat = d.path("beat");
    let read = || std::fs::read_to_string(&beat).unwrap_or_default();
    let after_kill = read();
    wait_for("a heartbeat after minderd's death", Duration::from_secs(10), || read() != after_kill);
    assert!(alive(child), "the program outlived minderd");
    // It is the test's to end now (by its pid).
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
    wait_for("the orphan to end", Duration::from_secs(10), || !alive(child));
}

/// A new binary that passes the pre-flight but cannot restore the hand-over (here: it is run
/// with an argument it refuses) hands it back: the old image is executed again from the
/// descriptor it kept, and carries on with the same children, nothing lost.
#[test]
fn a_new_binary_that_cannot_restore_hands_back_to_the_old_one() {
    let d = daemon(
        "[program.counter]\ncommand = \"python3 {dir}/counter.py\"\nstartsecs = 1\n\
         stdout_logfile = \"{dir}/counter.log\"\nstdout_logfile_maxbytes = 0\n",
        &[("counter.py", COUNTER)],
    );
    d.wait_state("counter", "RUNNING", Duration::from_secs(20));
    let (daemon_pid, child_pid) = (d.pid(), pid_of(&d, "counter"));
    let real = d.path("bin/real-minderd");
    std::fs::copy(bin("minderd"), &real).expect("copy minderd");
    let wrapper = d.path("wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" --upgrade-check \"*) exec {real} \"$@\";; esac\n\
             exec {real} --no-such-option \"$@\"\n",
            real = real.display()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    replace_binary(&d, &wrapper);
    let old_exe = exe_of(daemon_pid);
    assert!(old_exe.ends_with("(deleted)"), "{old_exe}");
    let at_upgrade = check_counter(&d.path("counter.log"));

    let o = d.ctl(&["upgrade"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("did not take") && stderr(&o).contains("refused its arguments"),
        "{}",
        stderr(&o)
    );
    assert!(d.log().contains("the upgrade failed"), "{}", d.log());
    assert_eq!(exe_of(daemon_pid), old_exe, "the old image runs again");
    assert_eq!(pid_of(&d, "counter"), child_pid);
    wait_for("the counter to write on", Duration::from_secs(10), || {
        check_counter(&d.path("counter.log")) > at_upgrade + 300
    });
}
