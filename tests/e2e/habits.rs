//! supervisord's and supervisorctl's habits that scripts and tests written against them rely
//! on (issue 13): child output in the debug log, the start line, `-?`, starting beside another
//! minderd, a command line given as one argument, supervisorctl's status lines, and the
//! `supervisorctl` and `supervisord` names. (The shell's confirmations are in shell.rs, which
//! drives a terminal.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{bin, code, run_to_exit, sigterm, stderr, stdout, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

/// Writes "abc hello" on stdout and an undecodable byte on stderr, then waits.
const TALKER: &str = r#"
[program.talker]
command = "sh -c 'printf \"abc hello\\n\"; printf \"\\377 x\\n\" >&2; exec sleep 100'"
startsecs = 0
"#;

/// With `loglevel = debug` each chunk a child writes is in the daemon's log as supervisord
/// writes it, undecodable bytes as Python's repr; at info, none of it is.
#[test]
fn debug_log_carries_child_output_as_supervisord_does() {
    let d = Daemon::start_with(TALKER, &[], &["-e", "debug"]);
    d.wait_state("talker", "RUNNING", 10 * SECS);
    wait_for("the output in the daemon log", 10 * SECS, || {
        let log = d.log();
        log.contains(" DEBG 'talker' stdout output:\nabc hello\n")
            && log.contains(" DEBG 'talker' stderr output:\nUndecodable: b'\\xff x\\n'\n")
    });
    assert!(d.state("talker") == "RUNNING", "the daemon goes on");

    let quiet = Daemon::start(TALKER);
    quiet.wait_state("talker", "RUNNING", 10 * SECS);
    wait_for("the child's output in its own log", 10 * SECS, || {
        let out = quiet.ctl(&["tail", "talker"]);
        stdout(&out).contains("abc hello")
    });
    assert!(!quiet.log().contains("output:"), "info level logs no output:\n{}", quiet.log());
}

/// At debug level the output is read and logged even where no file keeps it (`NONE`), as
/// supervisord always reads its children's pipes.
#[test]
fn debug_log_carries_output_that_no_file_keeps() {
    let config = TALKER
        .replace("startsecs = 0", "startsecs = 0\nstdout_logfile = \"NONE\"\nstderr_logfile = \"NONE\"");
    let d = Daemon::start_with(&config, &[], &["-e", "debug"]);
    d.wait_state("talker", "RUNNING", 10 * SECS);
    wait_for("the output in the daemon log", 10 * SECS, || {
        let log = d.log();
        log.contains(" DEBG 'talker' stdout output:\nabc hello\n")
            && log.contains(" DEBG 'talker' stderr output:\nUndecodable: b'\\xff x\\n'\n")
    });
    assert_eq!(d.process("talker")["stdout_logfile"], "", "no log file is made");
}

/// The start line a tool waiting for supervisord finds, with this daemon's pid.
#[test]
fn start_line_keeps_supervisords_words() {
    let d = Daemon::start(TALKER);
    let line = format!(" INFO supervisord started with pid {}\n", d.pid());
    wait_for("the start line", 10 * SECS, || d.log().contains(&line));
}

/// `-h`, `-?` and `--help` all print the usage and exit 0.
#[test]
fn every_help_option_gives_usage() {
    for option in ["-h", "-?", "--help"] {
        let out = Command::new(bin("minderd")).arg(option).output().expect("minderd runs");
        assert_eq!(code(&out), 0, "{option}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage: minderd"), "{option}: {}", stdout(&out));
    }
}

/// minderd in the foreground on `conf`, with its default socket in `runtime`.
fn minderd_with_runtime_dir(conf: &Path, runtime: &Path, log: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("minderd"));
    cmd.arg("-c").arg(conf).arg("-n").arg("-l").arg(log).args(extra).env("XDG_RUNTIME_DIR", runtime);
    cmd
}

/// Whether a daemon answers at `socket`, and with which pid.
fn daemon_pid_at(socket: &Path) -> Option<u32> {
    let out = crate::harness::ctl_at(socket, &["pid"]);
    out.status.success().then(|| stdout(&out).trim().parse().ok()).flatten()
}

/// Stops a daemon the test started, by its pid, and waits for it.
fn stop(mut child: Child) {
    sigterm(&child);
    wait_for("minderd to stop", 30 * SECS, || child.try_wait().ok().flatten().is_some());
}

/// A configuration with no server section starts even when another minderd holds the
/// default socket: it listens on a socket of its own and says where. A socket asked for
/// explicitly that is in use is still an error.
#[test]
fn no_server_section_starts_beside_another_minderd() {
    let dir = tempfile::Builder::new().prefix("minder-e2e-").tempdir().expect("a temp dir");
    let conf = dir.path().join("minder.toml");
    std::fs::write(&conf, "[program.idle]\ncommand = \"sleep 100\"\nautostart = false\n").expect("write");
    let default = dir.path().join("minder.sock");

    let spawn = |log: &str| {
        minderd_with_runtime_dir(&conf, dir.path(), &dir.path().join(log), &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("minderd starts")
    };
    let first = spawn("first.log");
    wait_for("the first minderd on the default socket", 10 * SECS, || {
        daemon_pid_at(&default) == Some(first.id())
    });

    let second = spawn("second.log");
    let fallback = dir.path().join(format!("minder-{}.sock", second.id()));
    wait_for("the second minderd on a socket of its own", 10 * SECS, || {
        daemon_pid_at(&fallback) == Some(second.id())
    });
    let log = std::fs::read_to_string(dir.path().join("second.log")).expect("the second log");
    assert!(
        log.contains(&format!(
            "WARN another minderd is already listening at the default socket unix://{}; this one listens at unix://{} instead",
            default.display(),
            fallback.display()
        )),
        "{log}"
    );
    assert_eq!(daemon_pid_at(&default), Some(first.id()), "the first keeps the default socket");

    // Asked for explicitly, the same socket in use is an error, as before.
    let listen = format!("unix://{}", default.display());
    let third = run_to_exit(
        minderd_with_runtime_dir(&conf, dir.path(), &dir.path().join("third.log"), &["--listen", &listen]),
        None,
    );
    assert_eq!(code(&third), 1, "{}", stderr(&third));
    assert!(stderr(&third).contains("another minderd is already listening"), "{}", stderr(&third));

    stop(second);
    assert!(!fallback.exists(), "the fallback socket goes with its daemon");
    stop(first);
}

/// supervisorctl joins its arguments and parses them as one line: so does minder when the
/// command word holds a space.
#[test]
fn a_whole_command_line_as_one_argument() {
    let d = Daemon::start(&format!("{TALKER}\n[program.idle]\ncommand = \"sleep 100\"\nautostart = false\n"));
    d.wait_state("talker", "RUNNING", 10 * SECS);

    let out = d.ctl(&["status talker"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("talker") && !stdout(&out).contains("idle"), "{}", stdout(&out));

    // `tail -6` with the name as the next argument: the last six bytes.
    wait_for("the output in the child's log", 10 * SECS, || {
        stdout(&d.ctl(&["tail -6", "talker"])) == "hello\n"
    });
    // The -c before the command is still minder's own option.
    let conf = d.config.display().to_string();
    let out = Command::new(bin("minder"))
        .args(["-s", &format!("unix://{}", d.socket.display()), "-c", &conf, "stop idle", "talker"])
        .output()
        .expect("minder runs");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("talker: stopped"), "{}", stdout(&out));
}

/// The status line supervisorctl prints, byte for byte (uptime aside): the name padded to
/// the longest name (at least 30) plus 3, the state padded to 10, then the description.
fn assert_supervisorctl_status(text: &str, pid: u32) {
    // In name order, as supervisord lists them.
    let mut lines = text.lines();
    let stopped = lines.next().unwrap_or_default();
    assert_eq!(stopped, format!("{:<33}{:<10}Not started", "idle", "STOPPED"), "{text:?}");
    let running = lines.next().unwrap_or_default();
    let prefix = format!("{:<33}{:<10}pid {pid}, uptime 0:", "talker", "RUNNING");
    assert!(running.starts_with(&prefix), "{running:?} does not start with {prefix:?}");
    assert_eq!(lines.next(), None, "no header, nothing else: {text:?}");
}

/// `status --format supervisorctl`, and plain `status` through a symlink named supervisorctl.
#[test]
fn supervisorctl_status_lines_and_names() {
    let d = Daemon::start(&format!("{TALKER}\n[program.idle]\ncommand = \"sleep 100\"\nautostart = false\n"));
    d.wait_state("talker", "RUNNING", 10 * SECS);
    let pid = d.process("talker")["pid"].as_u64().expect("a pid") as u32;

    let out = d.ctl(&["status", "--format", "supervisorctl", "talker", "idle"]);
    assert_eq!(code(&out), 3, "a STOPPED process listed: supervisorctl's 3");
    assert_supervisorctl_status(&stdout(&out), pid);

    let link = d.path("supervisorctl");
    std::os::unix::fs::symlink(bin("minder"), &link).expect("a symlink");
    let out = Command::new(&link)
        .args(["-s", &format!("unix://{}", d.socket.display()), "status", "talker", "idle"])
        .output()
        .expect("supervisorctl runs");
    assert_supervisorctl_status(&stdout(&out), pid);
    // As minder, the table stays.
    assert!(stdout(&d.ctl(&["status"])).contains("NAME"));

    // Run as supervisord, only supervisord's search path counts: supervisord.conf in the
    // current directory is found, minder.toml there is not read.
    let here = d.path("here");
    std::fs::create_dir_all(&here).expect("a directory");
    std::fs::write(here.join("minder.toml"), "this is not TOML [").expect("write");
    std::fs::write(here.join("supervisord.conf"), "[supervisord]\n[program:x]\ncommand=sleep 1\n")
        .expect("write");
    let supervisord = d.path("supervisord");
    std::os::unix::fs::symlink(bin("minderd"), &supervisord).expect("a symlink");
    let out = Command::new(&supervisord).arg("--check-config").current_dir(&here).output().expect("runs");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("supervisord.conf is valid"), "{}", stderr(&out));
    // As minderd, the same directory's minder.toml comes first (and is reported broken).
    let out = Command::new(bin("minderd")).arg("--check-config").current_dir(&here).output().expect("runs");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
