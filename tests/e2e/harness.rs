//! Runs the real `minderd` and `minder` binaries in a temporary directory.
//!
//! Each [`Daemon`] gets its own directory, socket and log. Tests wait for conditions by
//! polling up to a deadline ([`wait_for`]); they never sleep to synchronise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where cargo put the binaries: next to the directory holding this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace), as scripts/test does",
        path.display()
    );
    path
}

/// Runs `minder -s unix://SOCK ARGS…` against a daemon a test started itself.
/// `minderd --check-config -c CONF`: what a configuration resolves to, or its errors.
pub fn check_config(conf: &Path) -> Output {
    Command::new(bin("minderd")).arg("--check-config").arg("-c").arg(conf).output().expect("minderd runs")
}

pub fn ctl_at(sock: &Path, args: &[&str]) -> Output {
    Command::new(bin("minder"))
        .arg("-s")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .expect("minder runs")
}

/// Starts minderd in the foreground (`-n`) on a supervisord.conf a test wrote; its stdout is
/// dropped. The test ends it with [`sigterm`].
pub fn minderd_on(conf: &Path) -> Child {
    Command::new(bin("minderd")).arg("-c").arg(conf).arg("-n").stdout(Stdio::null()).spawn().expect("minderd")
}

/// Sends SIGTERM to a daemon a test started itself, by its pid (and to nothing else).
pub fn sigterm(child: &Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// Polls `cond` every 10 ms until it is true, or fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running minderd with its own directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The minderd binary to run (the build's when `None`): the upgrade tests run a copy.
    pub minderd: Option<PathBuf>,
    child: Option<Child>,
}

impl Daemon {
    /// Writes `toml` as the configuration and starts minderd on a socket in the directory.
    /// `{dir}` in `toml` is replaced by the directory's path.
    pub fn start(toml: &str) -> Daemon {
        Daemon::start_with(toml, &[], &[])
    }

    /// As [`Daemon::start`], with `files` (name, contents) written into the directory first
    /// and `extra` arguments for minderd.
    pub fn start_with(toml: &str, files: &[(&str, &str)], extra: &[&str]) -> Daemon {
        let mut d = Daemon::prepare(toml, files);
        d.spawn(extra);
        d
    }

    /// As [`Daemon::start_with`], without starting minderd: the test calls [`Daemon::spawn`].
    pub fn prepare(toml: &str, files: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new().prefix("minder-e2e-").tempdir().expect("a temp dir");
        for (name, contents) in files {
            if name.ends_with('/') {
                std::fs::create_dir_all(dir.path().join(name)).expect("make a directory");
            } else {
                std::fs::write(dir.path().join(name), contents).expect("write a file");
            }
        }
        let config = dir.path().join("minder.toml");
        std::fs::write(&config, toml.replace("{dir}", &dir.path().display().to_string()))
            .expect("write config");
        Daemon {
            socket: dir.path().join("minder.sock"),
            log: dir.path().join("minderd.log"),
            config,
            dir,
            minderd: None,
            child: None,
        }
    }

    /// Starts minderd (again) with extra arguments, and waits until it answers.
    pub fn spawn(&mut self, extra: &[&str]) {
        let child = Command::new(self.minderd.clone().unwrap_or_else(|| bin("minderd")))
            .arg("-c")
            .arg(&self.config)
            .arg("--listen")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("-l")
            .arg(&self.log)
            .args(extra)
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("minderd starts");
        self.child = Some(child);
        wait_for("minderd to answer", Duration::from_secs(10), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("minderd exited during start-up with {status}:\n{}", self.stderr_so_far());
            }
            // Up means answering, even if only to refuse this caller (socket_users).
            let out = self.ctl(&["version"]);
            out.status.success()
                || String::from_utf8_lossy(&out.stderr).contains("is not allowed to use this socket")
        });
    }

    fn stderr_so_far(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Starts the daemon with `extra` arguments and returns the stdout log path of process `a`.
    pub fn process_log_path_after_start(&mut self, extra: &[&str]) -> String {
        self.spawn(extra);
        self.process("a")["stdout_logfile"].as_str().expect("a log").to_string()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `minder` against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("minder"))
            .arg("-s")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("MINDER_SERVER")
            .output()
            .expect("minder runs")
    }

    /// Runs `minder [ARGS] events` against this daemon, restarts `name` until the events
    /// client has printed a line for which `stopped` holds (so it is connected and the stop
    /// went through it), and returns every line it printed until then.
    pub fn events_through_a_restart(
        &self,
        args: &[&str],
        name: &str,
        stopped: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        use std::io::BufRead;
        let mut ev = Command::new(bin("minder"))
            .arg("-s")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .arg("events")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("events runs");
        let out = ev.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut got = Vec::new();
        wait_for("the events client to see a stop", Duration::from_secs(10), || {
            let _ = self.ctl(&["restart", name]);
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                got.push(l);
            }
            got.iter().any(|l| stopped(l))
        });
        let _ = ev.kill();
        let _ = ev.wait();
        got
    }

    /// The TCP address this daemon reports listening at (when it was given port 0).
    pub fn tcp_address(&self) -> String {
        tcp_address_in(|| self.log())
    }

    /// A gRPC client connected to this daemon.
    pub async fn client(&self) -> minder::pb::supervisor_client::SupervisorClient<tonic::transport::Channel> {
        let uri = format!("unix://{}", self.socket.display());
        let channel =
            tonic::transport::Endpoint::from_shared(uri).expect("uri").connect().await.expect("connects");
        minder::pb::supervisor_client::SupervisorClient::new(channel)
    }

    /// `minder --json status NAME`: the process's fields.
    pub fn process(&self, name: &str) -> Value {
        let out = self.ctl(&["--json", "status", name]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("status --json {name}: {e}: {}", String::from_utf8_lossy(&out.stdout))
        });
        v["processes"][0].clone()
    }

    pub fn state(&self, name: &str) -> String {
        self.process(name)["state"].as_str().unwrap_or("?").to_string()
    }

    /// Waits until `name` is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        wait_for(&format!("{name} to be {state}"), timeout, || self.state(name) == state);
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines containing `needle`, with their times (seconds since the epoch).
    pub fn log_lines(&self, needle: &str) -> Vec<(f64, String)> {
        self.log().lines().filter(|l| l.contains(needle)).map(|l| (log_time(l), l.to_string())).collect()
    }

    /// Asks the daemon to stop (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the daemon is running");
        sigterm(&child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for minderd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("minderd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the daemon (no chance to clean up) and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().expect("SIGKILL minderd");
        child.wait().expect("wait for minderd");
    }

    /// Waits for the daemon to exit on its own (after `minder shutdown`).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the daemon is running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for minderd") {
                return status;
            }
            assert!(Instant::now() < deadline, "minderd did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// The time at the start of a daemon log line (`2026-11-24 05:07:01,123 ...`), in seconds.
pub fn log_time(line: &str) -> f64 {
    let stamp = line.get(..23).unwrap_or("");
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S,%3f")
        .map(|t| t.and_utc().timestamp_millis() as f64 / 1000.0)
        .unwrap_or_else(|_| panic!("not a log line: {line}"))
}

/// Text of a command's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code of a command that exited.
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// How many descriptors a process has open.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A process's resident memory in KiB (`VmRSS`), 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Runs minderd until it exits (at most 15 s) and returns what it said; fails the test if it
/// keeps running. `pidfile` is where a daemonized minderd would say its pid, to stop it then.
pub fn run_to_exit(mut cmd: Command, pidfile: Option<&Path>) -> Output {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("runs");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            sigterm(&child);
            let out = child.wait_with_output().expect("output");
            panic!(
                "minderd kept running instead of failing at start-up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    if let Some(pid) =
        pidfile.and_then(|p| std::fs::read_to_string(p).ok()).and_then(|s| s.trim().parse().ok())
    {
        // A daemon that wrongly started: stop it, by its pid, then fail below.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    out
}

/// The TCP address a daemon's log (read by `log`) says it listens at, once it says so.
pub fn tcp_address_in(log: impl Fn() -> String) -> String {
    let mut found = None;
    wait_for("the TCP listener", Duration::from_secs(10), || {
        found =
            log().lines().find_map(|l| l.split("listening at tcp://").nth(1).map(|a| a.trim().to_string()));
        found.is_some()
    });
    found.expect("an address")
}
