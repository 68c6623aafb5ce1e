//! Configuration as minderd reads it: bad files rejected whole, overrides, includes.

use std::process::Command;
use std::time::Duration;

use crate::harness::{bin, code, stderr, Daemon};

const SECS: Duration = Duration::from_secs(1);

fn check(toml: &str) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).expect("write");
    let out = Command::new(bin("minderd"))
        .arg("-c")
        .arg(&path)
        .arg("--listen")
        .arg(format!("unix://{}/never.sock", dir.path().display()))
        .output()
        .expect("minderd runs");
    let err = stderr(&out).replace(&dir.path().display().to_string(), "DIR");
    (code(&out), err, dir)
}

#[test]
fn every_error_is_listed_with_file_line_and_key() {
    let (code, err, dir) = check(
        r#"[program.web]
command = "sleep 1"
startsecs = "soon"
autorestart = "sometimes"

[program.two]
numprocs = 2
command = "sleep 1"

[program.grp]
command = "sleep 1"
stopasgroup = true
killasgroup = false

[group.g]
programs = ["ghost"]

[program.nocmd]
autostart = true
"#,
    );
    assert_eq!(code, 2);
    assert!(!dir.path().join("never.sock").exists(), "nothing was started");
    // Listed in the order of the file.
    let lines: Vec<u32> = err
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DIR/bad.toml:")?.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(lines, [3, 4, 6, 13, 16, 18], "{err}");
    for want in [
        "6 errors in the configuration:",
        "DIR/bad.toml:3: program.web.startsecs: expected a number of seconds like 10 or 0.5, got \"soon\"",
        "DIR/bad.toml:4: program.web.autorestart: expected true, false or unexpected, got \"sometimes\"",
        "DIR/bad.toml:6: program.two.process_name: must contain %(process_num) when numprocs is greater than 1",
        "DIR/bad.toml:13: program.grp.killasgroup: cannot be false when stopasgroup is true",
        "DIR/bad.toml:16: group.g.programs: names program \"ghost\", which is not defined",
        "DIR/bad.toml:18: program.nocmd.command: required: the command to run",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let (code, err, _dir) = check("[program.web]\ncommand = \"sleep 1\nautostart = true\n");
    assert_eq!(code, 2);
    assert!(
        err.starts_with("minderd: 1 error in the configuration:\n  DIR/bad.toml:2: TOML syntax error"),
        "{err}"
    );
}

#[test]
fn bad_expansions_are_errors() {
    let (code, err, _dir) = check("[program.web]\ncommand = \"echo 100%\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("DIR/bad.toml:2: program.web.command: a '%' must start an expansion like %(program_name)s; write '%%' for a literal '%'"), "{err}");
    assert!(err.starts_with("minderd: 1 error in the configuration:"), "one mistake, one error: {err}");
}

#[test]
fn environment_overrides_and_includes() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
    std::fs::write(
        dir.path().join("main.toml"),
        "[include]\nfiles = [\"conf.d/*.toml\"]\n\n[program.main]\ncommand = \"sleep 100\"\nstartsecs = 0\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("conf.d/a.toml"),
        "[program.included]\ncommand = \"sleep 100\"\nstartsecs = 0\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("conf.d/b.toml"), "[program.disabled]\ncommand = \"sleep 100\"\n")
        .expect("write");
    let sock = dir.path().join("m.sock");
    let mut child = Command::new(bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("main.toml"))
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .arg("-l")
        .arg(dir.path().join("d.log"))
        .env("MINDER_PROGRAM__DISABLED__AUTOSTART", "false")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("minderd starts");
    let ctl = |args: &[&str]| crate::harness::ctl_at(&sock, args);
    crate::harness::wait_for("minderd", 10 * SECS, || ctl(&["version"]).status.success());
    let state = |name: &str| {
        let v: serde_json::Value =
            serde_json::from_slice(&ctl(&["--json", "status", name]).stdout).expect("json");
        v["processes"][0]["state"].as_str().unwrap_or("").to_string()
    };
    crate::harness::wait_for("both autostarted programs", 10 * SECS, || {
        state("main") == "RUNNING" && state("included") == "RUNNING"
    });
    assert_eq!(state("disabled"), "STOPPED", "MINDER_PROGRAM__DISABLED__AUTOSTART=false overrode the file");
    crate::harness::sigterm(&child);
    let status = child.wait().expect("exits");
    assert!(status.success());
}

#[test]
fn a_live_socket_is_not_taken_over() {
    let d = Daemon::start("[program.a]\ncommand = \"sleep 100\"\n");
    let out = Command::new(bin("minderd"))
        .arg("-c")
        .arg(&d.config)
        .arg("--listen")
        .arg(format!("unix://{}", d.socket.display()))
        .output()
        .expect("runs");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("another minderd is already listening at"), "{}", stderr(&out));
    // The first daemon still answers.
    assert!(d.ctl(&["version"]).status.success());
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "precious").expect("write");
    std::fs::write(dir.path().join("m.toml"), "").expect("write");
    let out = Command::new(bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .arg("--listen")
        .arg(format!("unix://{}", path.display()))
        .output()
        .expect("runs");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("exists and is not a socket"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).expect("still there"), "precious");
}

#[test]
fn the_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start("");
    let mode = std::fs::metadata(&d.socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn daemonize_reports_start_up_and_writes_the_pidfile() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("m.toml");
    std::fs::write(&conf, "[program.s]\ncommand = \"sleep 100\"\nstartsecs = 0\n").expect("write");
    let sock = dir.path().join("m.sock");
    let pidfile = dir.path().join("m.pid");
    let daemonize = |extra: &[&str]| {
        Command::new(bin("minderd"))
            .arg("-c")
            .arg(&conf)
            .arg("--listen")
            .arg(format!("unix://{}", sock.display()))
            .arg("-j")
            .arg(&pidfile)
            .arg("-l")
            .arg(dir.path().join("d.log"))
            .arg("--daemonize")
            .args(extra)
            .output()
            .expect("minderd runs")
    };
    let out = daemonize(&[]);
    // The foreground process returns only once the daemon is listening.
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pid: i32 = std::fs::read_to_string(&pidfile).expect("pidfile").trim().parse().expect("a pid");
    let ctl = |args: &[&str]| crate::harness::ctl_at(&sock, args);
    assert_eq!(crate::harness::stdout(&ctl(&["pid"])).trim(), pid.to_string());
    // A second one fails, and says why, from the foreground.
    let again = daemonize(&[]);
    assert_eq!(code(&again), 1);
    assert!(stderr(&again).contains("another minderd is already listening"), "{}", stderr(&again));
    // TERM (to the daemon this test started, by its pid) stops it and removes socket and pidfile.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .expect("signal");
    crate::harness::wait_for("the daemon to exit", 30 * SECS, || !crate::harness::alive(pid));
    assert!(!pidfile.exists(), "the pidfile is removed");
    assert!(!sock.exists(), "the socket is removed");
}

#[test]
fn the_daemon_log_can_be_json() {
    let mut d = Daemon::start("[program.j]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.stop();
    std::fs::remove_file(&d.log).expect("rm");
    d.spawn(&["--log-format", "json"]);
    d.wait_state("j", "RUNNING", 10 * SECS);
    let log = d.log();
    let line = log.lines().find(|l| l.contains("spawned: 'j'")).expect("a spawned line");
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["level"], "INFO");
    assert!(v["message"].as_str().is_some_and(|m| m.starts_with("spawned: 'j' with pid ")), "{line}");
    assert!(chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap_or("")).is_ok(), "{line}");
}

/// [supervisord] user: minderd binds its socket, then runs as that user.
#[test]
fn the_daemon_drops_privileges_after_binding() {
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("nobody");
    if !nix::unistd::Uid::current().is_root() {
        // Only root can switch: minderd must refuse, and say why.
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("m.toml"), "[daemon]\nuser = \"nobody\"\n").expect("write");
        let out =
            Command::new(bin("minderd")).arg("-c").arg(dir.path().join("m.toml")).output().expect("runs");
        assert_eq!(code(&out), 1);
        assert!(stderr(&out).contains("nonroot"), "{}", stderr(&out));
        return;
    }
    let d = Daemon::start("[daemon]\nuser = \"nobody\"\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    let uids: Vec<u32> = uid_line.split_whitespace().skip(1).map(|u| u.parse().expect("uid")).collect();
    assert!(
        uids.iter().all(|&u| u == nobody.uid.as_raw()),
        "real, effective, saved and fs uid are nobody's: {uid_line}"
    );
    // The socket it bound as root still answers.
    assert!(d.ctl(&["version"]).status.success());
}

/// minfds larger than the system allows: minderd refuses to start, as supervisord does.
#[test]
fn minfds_beyond_the_limit_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("m.toml"), "[daemon]\nminfds = 1000000000\n").expect("write");
    let out = Command::new(bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .arg("--listen")
        .arg(format!("unix://{}/m.sock", dir.path().display()))
        .output()
        .expect("runs");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("the minimum number of file descriptors required is 1000000000"),
        "{}",
        stderr(&out)
    );
}

/// umask applies to what minderd creates (its pidfile here).
#[test]
fn the_daemon_umask_applies() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start("");
    d.stop();
    let pidfile = d.path("m.pid");
    d.spawn(&["-m", "077", "-j", &pidfile.display().to_string()]);
    let mode = std::fs::metadata(&pidfile).expect("pidfile").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Runs `cmd` to its end, or fails the test if it is still running after `limit` (killing it,
/// by its pid): what these tests guard against is a hang.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// A named pipe or a device as the configuration file is refused at once, naming it (before,
/// minderd waited forever for a writer, or read /dev/zero until memory ran out).
#[test]
fn a_fifo_or_a_device_as_configuration_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    for name in ["minder.toml", "supervisord.conf"] {
        let fifo = dir.path().join(name);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let mut cmd = Command::new(bin("minderd"));
        cmd.arg("-c").arg(&fifo).arg("--listen").arg(format!("unix://{}/never.sock", dir.path().display()));
        let out = output_within(cmd, 10 * SECS);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{}: is a named pipe (FIFO)", fifo.display())), "{err}");
    }
    let mut cmd = Command::new(bin("minderd"));
    cmd.args(["-c", "/dev/zero", "--check-config"]);
    let out = output_within(cmd, 10 * SECS);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("/dev/zero: is a character device"), "{}", stderr(&out));
}

/// An included file replaced by a named pipe makes `reread` fail with a message naming it,
/// changes nothing, and leaves the daemon answering (`status`, `stop`).
#[test]
fn an_include_that_becomes_a_fifo_fails_reread_and_the_daemon_answers() {
    let d = Daemon::start_with(
        "[include]\nfiles = [\"conf.d/*.toml\"]\n\n[program.main]\ncommand = \"sleep 100\"\nstartsecs = 0\n",
        &[("conf.d/", ""), ("conf.d/a.toml", "[program.inc]\ncommand = \"sleep 100\"\nstartsecs = 0\n")],
        &[],
    );
    d.wait_state("inc", "RUNNING", 10 * SECS);
    let include = d.path("conf.d/a.toml");
    std::fs::remove_file(&include).expect("rm");
    nix::unistd::mkfifo(&include, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(bin("minder"));
        cmd.arg("-s").arg(format!("unix://{}", d.socket.display())).args(args).env_remove("MINDER_SERVER");
        output_within(cmd, 20 * SECS)
    };
    let out = ctl(&["reread"]);
    assert_ne!(code(&out), 0, "{}", crate::harness::stdout(&out));
    assert!(
        stderr(&out).contains(&format!("{}: is a named pipe (FIFO)", include.display())),
        "{}",
        stderr(&out)
    );
    let out = ctl(&["update"]);
    assert_ne!(code(&out), 0, "update refuses too");
    // Nothing changed, and the daemon still answers.
    let out = ctl(&["status", "inc"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(crate::harness::stdout(&out).contains("RUNNING"));
    assert_eq!(code(&ctl(&["stop", "main"])), 0);
}

/// `--check-config` hides passwords and secret-looking environment values and shows modes in
/// octal, in text and in JSON.
#[test]
fn check_config_redacts_secrets_and_shows_modes_in_octal() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        "[unix_http_server]\nfile=%(here)s/s.sock\nchmod=0770\nusername=u\npassword=plain-secret-1\n\
         [inet_http_server]\nport=127.0.0.1:9\nusername=u\npassword={SHA}82ab876d1387bfafe46cc1c8a2ef074eae50cb1d\n\
         [supervisord]\nlogfile=%(here)s/d.log\numask=027\nenvironment=DB_PASSWORD=\"env-secret-2\",LANG=\"C\"\n\
         [supervisorctl]\nserverurl=unix://%(here)s/s.sock\nusername=u\npassword=ctl-secret-3\n\
         [program:web]\ncommand=sleep 1\numask=002\nenvironment=API_TOKEN=\"env-secret-4\",aws_secret_access_key=\"env-secret-5\",PORT=\"80\"\n",
    )
    .expect("write");
    for json in [false, true] {
        let mut cmd = Command::new(bin("minderd"));
        cmd.arg("--check-config").arg("-c").arg(&conf);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("runs");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = crate::harness::stdout(&out);
        for secret in
            ["plain-secret-1", "82ab876d", "env-secret-2", "ctl-secret-3", "env-secret-4", "env-secret-5"]
        {
            assert!(!text.contains(secret), "{secret} printed (json: {json}):\n{text}");
        }
        assert!(text.contains("<redacted>"), "{text}");
        // What is not secret is still shown.
        assert!(text.contains("\"LANG\":\"C\"") || text.contains("\"LANG\": \"C\""), "{text}");
        assert!(text.contains("\"PORT\":\"80\"") || text.contains("\"PORT\": \"80\""), "{text}");
        if json {
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(v["daemon"]["umask"], "0027");
            assert_eq!(v["daemon"]["socket_mode"], "0770");
            assert_eq!(v["groups"][0]["processes"][0]["umask"], "0002");
        } else {
            assert!(text.contains("umask = \"0027\"") && text.contains("socket_mode = \"0770\""), "{text}");
            assert!(text.contains("umask = \"0002\""), "{text}");
        }
    }
}

/// `--check-config --no-host-checks` accepts users and directories that exist only on the
/// target machine, and still refuses everything else.
#[test]
fn check_config_without_host_checks() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("m.toml");
    let text = "[daemon]\nchildlogdir = \"/nonexistent-minder-dir/logs\"\nuser = \"no-such-user-minder\"\n\
                [program.web]\ncommand = \"sleep 1\"\nuser = \"no-such-user-minder\"\n\
                stdout_logfile = \"/nonexistent-minder-dir/web.log\"\n";
    std::fs::write(&conf, text).expect("write");
    let run = |extra: &[&str]| {
        Command::new(bin("minderd"))
            .arg("--check-config")
            .args(extra)
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("runs")
    };
    let out = run(&[]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    for key in ["daemon.childlogdir", "daemon.user", "program.web.user", "program.web.stdout_logfile"] {
        assert!(err.contains(key), "{key} not checked: {err}");
    }
    let out = run(&["--no-host-checks", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["groups"][0]["processes"][0]["user"], "no-such-user-minder");
    // Values, expansions and syntax are still checked.
    std::fs::write(&conf, format!("{text}startsecs = \"soon\"\nprocess_name = \"%(nope)s\"\n"))
        .expect("write");
    let out = run(&["--no-host-checks"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("program.web.startsecs") && err.contains("program.web.process_name"), "{err}");
    assert!(!err.contains("no-such-user"), "{err}");
    // Only with --check-config.
    let out =
        Command::new(bin("minderd")).arg("--no-host-checks").arg("-c").arg(&conf).output().expect("runs");
    assert_eq!(code(&out), 2, "a usage error");
}
