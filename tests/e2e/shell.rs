//! The interactive shell, driven through a real pseudo-terminal as a person would drive it:
//! typed keys in, the screen's bytes out. Also the completion scripts and the man pages.
//!
//! The shell is a session leader with the pty as its controlling terminal, so a Ctrl-C typed
//! while a command runs is a real SIGINT, as in a terminal. Tests read the screen until an
//! expected text appears, up to a deadline; they never sleep to synchronise.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{bin, code, stdout, Daemon};

const SECS: Duration = Duration::from_secs(1);
/// How long the screen may take to show what a test waits for.
const DEADLINE: Duration = Duration::from_secs(20);

const PROGRAMS: &str = r#"
[program.worker]
command = "sh -c 'echo worker says hello; exec sleep 100'"
startsecs = 0

[program.echo]
command = "sh -c 'while read line; do echo \"got:$line\"; done'"
startsecs = 0
"#;

/// `minder` in a pseudo-terminal.
struct Pty {
    child: Child,
    master: File,
    /// What the reader thread has read from the terminal.
    chunks: mpsc::Receiver<Vec<u8>>,
    /// Everything shown so far, and how much of it the test has looked at.
    screen: String,
    seen: usize,
}

impl Pty {
    /// Runs `minder ARGS` on a new 50x200 terminal, with `$HOME` and `$XDG_STATE_HOME` in
    /// `home` (the history goes there).
    fn spawn(args: &[&str], home: &Path) -> Pty {
        let size = nix::pty::Winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&size), None).expect("a pseudo-terminal");
        let slave = File::from(pty.slave);
        let mut cmd = Command::new(bin("minder"));
        cmd.args(args)
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .env("HOME", home)
            .env("XDG_STATE_HOME", home.join("state"))
            .env_remove("MINDER_SERVER")
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe. A session of its own with the pty
        // as controlling terminal: Ctrl-C then sends SIGINT to minder, as in a terminal.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("minder starts");
        // The parent's copies of the slave end close with `cmd`, so the master sees the end
        // when minder exits.
        drop(cmd);
        let master = File::from(pty.master);
        let mut reader = master.try_clone().expect("dup");
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once minder has exited and the slave is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty { child, master, chunks, screen: String::new(), seen: 0 }
    }

    /// Types `keys`.
    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type on the terminal");
    }

    /// Reads the screen until `text` shows after what earlier expectations matched; returns
    /// what came before it.
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(at) = self.screen[self.seen..].find(text) {
                let before = self.screen[self.seen..self.seen + at].to_string();
                self.seen += at + text.len();
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.screen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!(
                    "waited {DEADLINE:?} for {text:?}; the screen after the last match:\n{:?}",
                    &self.screen[self.seen..]
                ),
            }
        }
    }

    /// Waits for a new prompt; returns what was shown since the last one (the line typed and
    /// the command's output).
    fn prompt(&mut self) -> String {
        self.prompt_of("minder> ")
    }

    /// rustyline turns bracketed paste on as it starts reading each line, and only then: the
    /// prompt drawn anew while a line is edited (a completion, a line from history) does not
    /// count.
    fn prompt_of(&mut self, prompt: &str) -> String {
        let shown = self.expect("\x1b[?2004h");
        self.expect(prompt);
        shown
    }

    /// Waits for minder to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // Keep draining the screen, so minder never blocks writing to it.
            while self.chunks.try_recv().is_ok() {}
            if let Some(status) = self.child.try_wait().expect("wait for minder") {
                return status;
            }
            assert!(Instant::now() < deadline, "minder did not exit within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // Only the minder this test started, by its pid.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A whole session as supervisorctl users know it: the status table on entry, TAB completion,
/// commands, help, errors that do not end the shell, Ctrl-C, and `exit` with status 0; then a
/// second session that finds the first one's history.
#[test]
fn interactive_session() {
    let d =
        Daemon::start(&format!("{PROGRAMS}\n[program.idle]\ncommand = \"sleep 100\"\nautostart = false\n"));
    d.wait_state("worker", "RUNNING", 10 * SECS);
    let server = format!("unix://{}", d.socket.display());
    let home = d.path("home");

    let mut sh = Pty::spawn(&["-s", &server], &home);
    // `status` runs on entry.
    let table = sh.prompt();
    assert!(table.contains("NAME"), "{table:?}");
    assert!(table.contains("idle") && table.contains("STOPPED"), "{table:?}");
    assert!(table.contains("worker") && table.contains("RUNNING"), "{table:?}");

    // `sta` is ambiguous: TAB beeps, a second TAB lists both. Ctrl-C drops the line.
    sh.send("sta\t\t");
    sh.expect("\x07");
    let listed = sh.expect("minder> sta");
    assert!(listed.contains("status") && listed.contains("start"), "{listed:?}");
    sh.send("\x03");
    sh.prompt();

    // A process name is asked of the daemon and completed; running the line proves it.
    // (What the editor redraws is its business: the line it hands over is what counts.)
    sh.send("stop w\t\r");
    sh.expect("worker: stopped");
    sh.prompt();
    sh.send("status worker\r");
    let status = sh.prompt();
    assert!(status.contains("worker") && status.contains("STOPPED"), "{status:?}");
    sh.send("start i\t\r");
    sh.expect("idle: started");
    sh.prompt();

    // help lists the commands, clap's help describes one.
    sh.send("help\r");
    let help = sh.prompt();
    for command in ["status", "start", "stop", "tail", "exit", "help"] {
        assert!(help.contains(&format!("\n  {command} ")), "{command} is not in help: {help:?}");
    }
    sh.send("help stop\r");
    assert!(sh.prompt().contains("Usage: stop [OPTIONS] <NAMES>..."));

    // Unknown commands and bad arguments are reported, and the shell goes on.
    sh.send("frobnicate now\r");
    assert!(sh.prompt().contains("unrecognized subcommand 'frobnicate'"));
    sh.send("start\r");
    assert!(sh.prompt().contains("required arguments were not provided"));
    sh.send("status 'unbalanced\r");
    assert!(sh.prompt().contains("unbalanced quotes"));

    // A stream runs until Ctrl-C, which comes back to the prompt.
    sh.send("start worker\r");
    sh.expect("worker: started");
    sh.prompt();
    sh.send("tail -f worker\r");
    sh.expect("worker says hello");
    sh.send("\x03");
    sh.prompt();
    sh.send("version\r");
    assert!(sh.prompt().contains(env!("CARGO_PKG_VERSION")));

    sh.send("exit\r");
    let status = sh.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let history = std::fs::read_to_string(home.join("state/minder/history")).expect("the history file");
    assert!(history.lines().any(|l| l == "status worker"), "{history:?}");

    // A second session recalls the first one's lines: Up shows `exit`, Up again `version`.
    let mut sh = Pty::spawn(&["-s", &server], &home);
    sh.prompt();
    sh.send("\x1b[A\x1b[A\r");
    let p = sh.prompt();
    assert!(p.contains(env!("CARGO_PKG_VERSION")), "Up, Up, Enter ran `version` again: {p:?}");
    // Ctrl-D leaves too, with status 0.
    sh.send("\x04");
    assert_eq!(sh.wait().code(), Some(0));
}

/// fg inside the shell: typed lines go to the process; Ctrl-C detaches, and the next line
/// typed goes to the shell, not to a read left pending by fg.
/// `shutdown` and `reload` ask first, in supervisorctl's words; only an answer starting with
/// y goes ahead.
#[test]
fn shutdown_and_reload_ask_first() {
    let mut d = Daemon::start(PROGRAMS);
    d.wait_state("worker", "RUNNING", 10 * SECS);
    let pid = d.process("worker")["pid"].clone();
    let server = format!("unix://{}", d.socket.display());
    let mut sh = Pty::spawn(&["-s", &server], &d.path("home"));
    sh.prompt();

    sh.send("reload\r");
    sh.expect("Really restart the remote supervisord process y/N? ");
    sh.send("\r");
    sh.prompt();
    sh.send("shutdown\r");
    sh.expect("Really shut the remote supervisord process down y/N? ");
    sh.send("no\r");
    sh.prompt();
    // Nothing was done: the same daemon runs the same worker.
    assert_eq!(d.process("worker")["pid"], pid);

    sh.send("shutdown\r");
    sh.expect("Really shut the remote supervisord process down y/N? ");
    sh.send("Y\r");
    sh.expect("Shut down");
    sh.prompt();
    assert!(d.wait_exit(20 * SECS).success());
    sh.send("exit\r");
    assert!(sh.wait().success());
}

#[test]
fn fg_then_prompt() {
    let d = Daemon::start(PROGRAMS);
    d.wait_state("echo", "RUNNING", 10 * SECS);
    let server = format!("unix://{}", d.socket.display());
    let mut sh = Pty::spawn(&["-s", &server], &d.path("home"));
    sh.prompt();
    sh.send("fg echo\r");
    // As supervisorctl's, once attached (and only then is what the process writes shown).
    sh.expect("==> Press Ctrl-C to exit <==");
    sh.send("hello\r");
    sh.expect("got:hello");
    sh.send("\x03");
    sh.prompt();
    sh.send("pid echo\r");
    let pid = sh.prompt();
    assert!(pid.lines().any(|l| l.trim().parse::<u32>().is_ok()), "{pid:?}");
    assert_eq!(d.state("echo"), "RUNNING", "detaching does not stop it");
    sh.send("quit\r");
    assert_eq!(sh.wait().code(), Some(0));
}

/// The prompt and the history file come from the configuration's `[ctl]` (supervisorctl's
/// `[supervisorctl]` prompt and history_file), and so does the address.
#[test]
fn prompt_and_history_file_from_the_configuration() {
    let d = Daemon::start(&format!(
        "{PROGRAMS}\n[ctl]\nserverurl = \"unix://{{dir}}/minder.sock\"\nprompt = \"mctl\"\nhistory_file = \"{{dir}}/hist/ctl_history\"\n"
    ));
    let config = d.config.display().to_string();
    let mut sh = Pty::spawn(&["-c", &config], &d.path("home"));
    assert!(sh.prompt_of("mctl> ").contains("worker"));
    sh.send("pid\r");
    sh.prompt_of("mctl> ");
    sh.send("exit\r");
    assert_eq!(sh.wait().code(), Some(0));
    let history = std::fs::read_to_string(d.path("hist/ctl_history")).expect("history_file");
    assert!(history.lines().any(|l| l == "pid"), "{history:?}");
    assert!(!d.path("home/state/minder/history").exists(), "the configured file, not the default one");
}

/// No daemon: the shell says so once, opens anyway, and tries again for each command. And a
/// history file that cannot be written is a warning, not an error.
#[test]
fn no_daemon_still_opens() {
    let dir = tempfile::tempdir().expect("dir");
    let server = format!("unix://{}", dir.path().join("absent.sock").display());
    std::fs::create_dir_all(dir.path().join("state/minder/history")).expect("a directory in the way");
    let mut sh = Pty::spawn(&["-s", &server], dir.path());
    let entry = sh.prompt();
    assert_eq!(entry.matches("no such socket").count(), 1, "{entry:?}");
    sh.send("status\r");
    let answer = sh.prompt();
    assert_eq!(answer.matches("cannot write the history file").count(), 1, "{answer:?}");
    assert!(answer.contains("no such socket"), "{answer:?}");
    sh.send("version\r");
    let answer = sh.prompt();
    assert!(!answer.contains("history"), "warned once: {answer:?}");
    assert!(answer.contains("no such socket"), "{answer:?}");
    sh.send("exit\r");
    assert_eq!(sh.wait().code(), Some(0));
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("minder")).args(["completions", shell]).output().expect("runs");
        assert_eq!(code(&out), 0, "{shell}");
        let script = stdout(&out);
        assert!(script.contains("status") && script.contains("tail"), "{shell}: {script}");
    }
    let out = Command::new(bin("minder")).args(["completions", "tcsh"]).output().expect("runs");
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");
}

#[test]
fn man_pages() {
    let dir = tempfile::tempdir().expect("dir");
    let man = dir.path().join("man1");
    let out = Command::new(bin("minder")).arg("man").arg(&man).output().expect("runs");
    assert_eq!(code(&out), 0, "{}", crate::harness::stderr(&out));
    let out = Command::new(bin("minderd")).arg("--generate-man").arg(&man).output().expect("runs");
    assert_eq!(code(&out), 0, "{}", crate::harness::stderr(&out));
    for (page, title) in [
        ("minder.1", ".TH minder 1"),
        ("minder-status.1", ".TH minder-status 1"),
        ("minder-config-convert.1", ".TH minder-config-convert 1"),
        ("minderd.1", ".TH minderd 1"),
    ] {
        let roff = std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        // clap_mangen opens with two roff requests (an apostrophe string), then the title.
        assert!(roff.starts_with('.'), "{page} is not roff: {roff}");
        assert!(roff.lines().any(|l| l.starts_with(title)), "{page} has no {title}: {roff}");
        assert!(roff.contains(".SH NAME") && roff.contains(".SH SYNOPSIS"), "{page}");
    }
    assert!(!man.join("minder-man.1").exists(), "hidden commands get no page");
    assert!(!man.join("minder-help.1").exists());
}

/// `-u` without `-p` asks for the password first, as supervisorctl does: not echoed, not run
/// as a command, not in the history file, and it authenticates. Without a terminal, the
/// password is the first line of standard input.
#[test]
fn the_password_is_asked_for_without_echo() {
    const PASSWORD: &str = "typed-not-shown-42";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let tcp = format!("tcp://127.0.0.1:{port}");
    let d = Daemon::start_with(
        &format!(
            "{PROGRAMS}\n[daemon.credentials.\"{tcp}\"]\nusername = \"admin\"\npassword = \"{PASSWORD}\"\n"
        ),
        &[],
        &["--listen", &tcp],
    );
    let home = d.path("home");
    let mut sh = Pty::spawn(&["-s", &tcp, "-u", "admin"], &home);
    sh.expect("Password:");
    sh.send(&format!("{PASSWORD}\r"));
    let entry = sh.prompt();
    assert!(entry.contains("worker") && entry.contains("RUNNING"), "authenticated: {entry:?}");
    sh.send("exit\r");
    assert_eq!(sh.wait().code(), Some(0));
    assert!(!sh.screen.contains(PASSWORD), "the password was echoed:\n{}", sh.screen);
    let history = std::fs::read_to_string(home.join("state/minder/history")).unwrap_or_default();
    assert!(!history.contains(PASSWORD), "the password is in the history: {history:?}");

    let piped = |input: &str| {
        let mut child = Command::new(bin("minder"))
            .args(["-s", &tcp, "-u", "admin", "status", "worker"])
            .env_remove("MINDER_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        child.wait_with_output().expect("output")
    };
    let out = piped(&format!("{PASSWORD}\n"));
    assert_eq!(code(&out), 0, "{}", crate::harness::stderr(&out));
    let out = piped("wrong\n");
    assert!(crate::harness::stderr(&out).contains("the username or password is not valid"), "{out:?}");
}
