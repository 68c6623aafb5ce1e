//! Supervisor's HTTP URLs on minderd's sockets: `/logtail/…` and `/mainlogtail` followed by the
//! seed's own `curl` command, by raw clients and by the real supervisorctl 4.3.0 (`tail -f`,
//! `maintail -f`, `fg`); `/tail.html` and `/ok.html`; authentication and roles; and clients
//! meant to hurt: one that trickles a request body, one that stops reading a log it follows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{rss_kib, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);
const PASSWORD: &str = "s3cret-PASSWORD";
const READER: &str = "reader-token-0123456789";
/// "admin:s3cret-PASSWORD" in base64.
const ADMIN_BASIC: &str = "YWRtaW46czNjcmV0LVBBU1NXT1JE";

/// Prints `tick N` on stdout and `err N` on stderr every 50 ms.
const TICKER: &str = "sh -c 'i=0; while :; do echo tick $i; echo err $i >&2; i=$((i+1)); sleep 0.05; done'";

/// minderd on a unix socket (open to root) and on TCP with a password and a read-only token.
fn daemon(programs: &str) -> Daemon {
    daemon_with(programs, &[])
}

/// [`daemon`], with `files` written into its directory first.
fn daemon_with(programs: &str, files: &[(&str, &str)]) -> Daemon {
    let tokens = format!("grafana read-only {READER}\n");
    let mut all = vec![("tokens", tokens.as_str())];
    all.extend_from_slice(files);
    Daemon::start_with(
        &format!(
            "[daemon]\ntokens_file = \"{{dir}}/tokens\"\n\
             [daemon.credentials.\"tcp://127.0.0.1:0\"]\nusername = \"admin\"\npassword = \"{PASSWORD}\"\n{programs}"
        ),
        &all,
        &["--listen", "tcp://127.0.0.1:0"],
    )
}

/// What a child process (curl, supervisorctl) printed so far, collected by a thread.
struct Output {
    child: Child,
    text: Arc<Mutex<Vec<u8>>>,
}

impl Output {
    /// Collects what `child` writes to `from`.
    fn collect(child: Child, mut from: impl Read + Send + 'static) -> Output {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&text);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // A pty's master reads EIO once the child is gone: the end, as EOF is.
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("not poisoned").extend_from_slice(&buf[..n]);
            }
        });
        Output { child, text }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().expect("not poisoned")).into_owned()
    }

    /// Waits until what was printed satisfies `cond`, and returns it.
    fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + 20 * SECS;
        loop {
            let text = self.text();
            if cond(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; got:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the child (by its pid) and waits for it to exit.
    fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
        let deadline = Instant::now() + 20 * SECS;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the client did not exit after {sig}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The numbers of the complete `word N …` lines in `text`, in order (the first line may be cut:
/// a follower starts in the middle of one).
fn numbers(text: &str, word: &str) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(word)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The last number of a `word N` line in `text`.
fn last(text: &str, word: &str) -> Option<u64> {
    numbers(text, word).last().copied()
}

/// Runs `curl -N -s ARGS URL`: it decodes the chunked answer and prints it as it comes.
fn curl(args: &[&str], url: &str) -> Output {
    let mut child = Command::new("curl")
        .args(["-N", "-s"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    let out = child.stdout.take().expect("stdout");
    Output::collect(child, out)
}

/// Sends a GET for `path` on a fresh connection with `headers`, and returns the status and the
/// whole answer (read until the server closes or `Content-Length` is met).
fn get(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

fn admin() -> String {
    format!("Authorization: Basic {ADMIN_BASIC}\r\n")
}

#[test]
fn the_seeds_curl_command_gets_the_tail_and_keeps_following() {
    let d = daemon(&format!("[program.ping]\ncommand = \"{TICKER}\"\nstartsecs = 0\n"));
    let addr = d.tcp_address();
    // The command exactly as the seed writes it. Its output goes to a terminal, as a user's
    // would: curl's stdout is line-buffered there (into a pipe it would sit in curl's buffer).
    let pty = nix::pty::openpty(None, None).expect("a pty");
    let tty = || Stdio::from(std::fs::File::from(pty.slave.as_fd().try_clone_to_owned().expect("dup")));
    let child = Command::new("curl")
        .args(["-L", &format!("http://{addr}/logtail/ping"), "-u", &format!("admin:{PASSWORD}")])
        .stdin(Stdio::null())
        .stdout(tty())
        .stderr(tty())
        .spawn()
        .expect("curl runs");
    drop(pty.slave);
    let mut out = Output::collect(child, std::fs::File::from(pty.master));
    let first = out.wait("the tail", |t| last(t, "tick").is_some());
    let seen = last(&first, "tick").expect("a tick");
    let later =
        out.wait("ticks written after the request", |t| last(t, "tick").is_some_and(|n| n >= seen + 10));
    let ticks = numbers(&later, "tick");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no repeat: {ticks:?}");
    assert!(out.child.try_wait().expect("wait").is_none(), "curl is still following:\n{later}");
    out.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    // The daemon is unharmed and follows for the next client.
    let again = curl(&["-u", &format!("admin:{PASSWORD}")], &format!("http://{addr}/logtail/ping"));
    again.wait("a second follower", |t| last(t, "tick").is_some_and(|n| n > seen + 10));
}

#[test]
fn logtail_follows_a_log_across_its_rotations() {
    // Lines of 50 bytes every 10 ms into files of 1000 bytes: a rotation every 20 lines.
    let writer = "sh -c 'i=0; while :; do i=$((i+1)); printf \\\"line %%06d .................................\\\\n\\\" $i; sleep 0.01; done'";
    let d = daemon(&format!(
        "[program.w]\ncommand = \"{writer}\"\nstartsecs = 0\nstdout_logfile = \"{{dir}}/w.log\"\n\
         stdout_logfile_maxbytes = 1000\nstdout_logfile_backups = 2\n"
    ));
    let addr = d.tcp_address();
    let out = curl(&["-u", &format!("admin:{PASSWORD}")], &format!("http://{addr}/logtail/w"));
    let first = out.wait("the tail", |t| last(t, "line").is_some());
    let start = last(&first, "line").expect("a line");
    // 200 lines later the file has been rotated at least ten times under the follower.
    let text =
        out.wait("lines written after ten rotations", |t| last(t, "line").is_some_and(|n| n >= start + 200));
    assert!(d.path("w.log.2").exists(), "the log was rotated");
    let lines = numbers(&text, "line");
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "every line once, in order: {lines:?}");
    assert!(!text.contains("File truncated"), "a follower that keeps up loses nothing:\n{text}");
}

#[test]
fn stderr_unknown_names_uncaptured_outputs_and_credentials() {
    let d = daemon(&format!(
        "[program.ping]\ncommand = \"{TICKER}\"\nstartsecs = 0\n\
         [program.merged]\ncommand = \"{TICKER}\"\nstartsecs = 0\nredirect_stderr = true\n\
         [program.quiet]\ncommand = \"{TICKER}\"\nstartsecs = 0\nstdout_logfile = \"NONE\"\n\
         [program.idle]\ncommand = \"sleep 100\"\nautostart = false\nstdout_logfile = \"{{dir}}/idle.log\"\n\
         [group.g]\nprograms = [\"ping2\"]\n\
         [program.ping2]\ncommand = \"{TICKER}\"\nstartsecs = 0\n"
    ));
    let addr = d.tcp_address();
    let user = format!("admin:{PASSWORD}");
    // stderr, followed.
    let err = curl(&["-u", &user], &format!("http://{addr}/logtail/ping/stderr"));
    let first = err.wait("stderr", |t| last(t, "err").is_some());
    let n = last(&first, "err").expect("a line");
    err.wait("more stderr", |t| last(t, "err").is_some_and(|m| m >= n + 5));
    assert!(!err.text().contains("tick"), "stdout is not in stderr's tail");
    // GROUP:NAME, URL-encoded or not, and /stdout spelled out.
    for path in ["/logtail/g:ping2", "/logtail/g%3Aping2/stdout"] {
        let o = curl(&["-u", &user], &format!("http://{addr}{path}"));
        o.wait(path, |t| last(t, "tick").is_some());
    }
    // Refusals: 404 with a message for what cannot be followed, without following.
    for (path, why) in [
        ("/logtail/nope", "no process named nope"),
        ("/logtail/g:nope", "no process named g:nope"),
        ("/logtail/", "name a process"),
        ("/logtail/ping/stdin", "\"stdin\" is not a channel"),
        ("/logtail/merged/stderr", "the stderr of merged is redirected to its stdout"),
        ("/logtail/quiet", "the stdout of quiet is not captured (its log file is NONE)"),
        // Never started, with a log file named: no file yet (supervisord's 404 too; an AUTO log
        // is made at start, by both).
        ("/logtail/idle", "does not exist (yet)"),
    ] {
        let (code, text) = get(&addr, path, &admin());
        assert_eq!(code, 404, "{path}: {text}");
        assert!(text.contains(why), "{path}: {text}");
    }
    // No credentials, or wrong ones: 401 asking for Basic, on every URL, ok.html included.
    for path in ["/logtail/ping", "/mainlogtail", "/ok.html", "/tail.html?processname=ping"] {
        let (code, text) = get(&addr, path, "");
        assert_eq!(code, 401, "{path}: {text}");
        assert!(text.contains("www-authenticate: Basic realm=\"default\""), "{path}: {text}");
        let (code, _) = get(&addr, path, "Authorization: Basic YWRtaW46d3Jvbmc=\r\n");
        assert_eq!(code, 401, "{path} with a wrong password");
    }
    // Over HTTP/2 too (a browser speaks it over TLS): here cleartext, with prior knowledge.
    let h2 = curl(&["--http2-prior-knowledge", "-u", &user], &format!("http://{addr}/logtail/ping"));
    h2.wait("a follower over HTTP/2", |t| last(t, "tick").is_some());
    // A read-only caller may read.
    let ro =
        curl(&["-H", &format!("Authorization: Bearer {READER}")], &format!("http://{addr}/logtail/ping"));
    ro.wait("a read-only follower", |t| last(t, "tick").is_some());
    let (code, text) = get(&addr, "/ok.html", &format!("Authorization: Bearer {READER}\r\n"));
    assert_eq!(code, 200, "{text}");
    // Only GET (and HEAD).
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    write!(
        s,
        "POST /logtail/ping HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\nConnection: close\r\n\r\n",
        admin()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // The headers of a follow, without the follow.
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    write!(s, "HEAD /logtail/ping HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n", admin())
        .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("the server closes after a HEAD");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for h in
        ["content-type: text/plain;charset=utf-8", "x-accel-buffering: no", "x-content-type-options: nosniff"]
    {
        assert!(answer.contains(h), "{h}: {answer}");
    }
}

#[test]
fn mainlogtail_ok_html_and_the_tail_page() {
    let d = daemon(
        "[program.html]\ncommand = \"sh -c 'echo \\\"<script>alert(1)</script> & more\\\"; exec sleep 100'\"\nstartsecs = 0\n\
         stdout_logfile = \"{dir}/html.log\"\n\
         [program.pad]\ncommand = \"sh -c 'i=1000; while [ $i -lt 1500 ]; do echo pad $i; i=$((i+1)); done; exec sleep 100'\"\n\
         startsecs = 0\nstdout_logfile = \"{dir}/pad.log\"\n\
         [program.idle]\ncommand = \"sleep 100\"\nautostart = false\n",
    );
    let addr = d.tcp_address();
    let user = format!("admin:{PASSWORD}");
    // The daemon's own log, followed: a line written after the request comes through.
    let mut main = curl(&["-u", &user], &format!("http://{addr}/mainlogtail"));
    main.wait("the daemon log's tail", |t| t.contains(" INFO "));
    assert!(d.ctl(&["start", "idle"]).status.success());
    main.wait("a line logged later", |t| t.contains("spawned: 'idle'"));
    // ok.html: exactly OK.
    let (code, text) = get(&addr, "/ok.html", &admin());
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("\r\n\r\nOK"), "{text}");
    // A follower starts 1,024 bytes before the end (500 lines of 9 bytes were written).
    wait_for("pad's output", 10 * SECS, || {
        std::fs::read_to_string(d.path("pad.log")).unwrap_or_default().ends_with("pad 1499\n")
    });
    let mut pad = curl(&["-u", &user], &format!("http://{addr}/logtail/pad"));
    let text = pad.wait("the last KiB", |t| t.ends_with("pad 1499\n"));
    assert_eq!(text.len(), 1024, "{text}");
    // The tail page escapes what the process printed.
    wait_for("html's output", 10 * SECS, || {
        std::fs::read_to_string(d.path("html.log")).unwrap_or_default().contains("script")
    });
    // Followers of a quiet log that go away are noticed: their connections and files close.
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", d.pid())).expect("fds").count();
    let before = fds();
    let followers: Vec<Output> =
        (0..5).map(|_| curl(&["-u", &user], &format!("http://{addr}/logtail/html"))).collect();
    for f in &followers {
        f.wait("a follower of html", |t| t.contains("script"));
    }
    assert!(fds() >= before + 5, "each follower holds a connection");
    drop(followers);
    wait_for("the followers' descriptors to close", 10 * SECS, || fds() == before);
    let (code, page) = get(&addr, "/tail.html?processname=html&limit=10", &admin());
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(page.contains("<pre>&lt;script&gt;alert(1)&lt;/script&gt; &amp; more\n</pre>"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    // Supervisor's Refresh link (relative, with at least 1,024 bytes asked for).
    assert!(page.contains("href=\"tail.html?processname=html&amp;limit=1024\""), "{page}");
    let (code, page) = get(&addr, "/tail.html?processname=%3Cb%3E", &admin());
    assert_eq!(code, 404, "{page}");
    assert!(page.contains("No process named &lt;b&gt;") && !page.contains("<b>"), "{page}");
    let (code, page) = get(&addr, "/tail.html", &admin());
    assert_eq!(code, 400, "{page}");
    assert!(page.contains("No process name found"), "{page}");
    // Followers end when the daemon stops, with a complete answer (curl exits 0, not 18 for a
    // cut transfer) that holds what was logged while the processes stopped.
    let mut d = d;
    let started = Instant::now();
    assert!(d.stop().success());
    eprintln!("minderd stopped in {:?} with two followers", started.elapsed());
    assert!(started.elapsed() < 10 * SECS, "minderd took {:?} to stop", started.elapsed());
    for f in [&mut main, &mut pad] {
        wait_for("the follower to see the end", 10 * SECS, || f.child.try_wait().expect("wait").is_some());
        let status = f.child.try_wait().expect("wait").expect("exited");
        assert!(status.success(), "curl: {status}:\n{}", f.text());
    }
    assert!(main.text().contains("stopped: html"), "{}", main.text());
}

#[test]
fn mainlogtail_is_404_when_the_daemon_logs_to_stdout() {
    // Without -l, minderd logs to its standard output: there is no file to follow.
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("m.toml");
    std::fs::write(&conf, "[program.a]\ncommand = \"sleep 100\"\nstartsecs = 0\n").expect("write");
    let sock = dir.path().join("s.sock");
    let mut m = Command::new(crate::harness::bin("minderd"))
        .arg("-c")
        .arg(&conf)
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("minderd starts");
    wait_for("minderd to answer", 10 * SECS, || crate::harness::ctl_at(&sock, &["version"]).status.success());
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    s.write_all(b"GET /mainlogtail HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    crate::harness::sigterm(&m);
    let _ = m.wait();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("minderd logs to standard output"), "{answer}");
}

/// supervisorctl 4.3.0 run with `server` (`-s URL` and any credentials) and `args`, its
/// output collected (Python told not to buffer it).
fn supervisorctl(ctl: &std::path::Path, server: &[String], args: &[&str], stdin: Stdio) -> Output {
    let mut child = Command::new(ctl)
        .args(server)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supervisorctl runs");
    let out = child.stdout.take().expect("stdout");
    Output::collect(child, out)
}

#[test]
fn the_real_supervisorctl_follows_with_tail_f_maintail_f_and_fg() {
    let ctl = crate::xmlrpc::supervisorctl_430();
    // `echo` ticks and echoes what comes in on stdin.
    let echo = "import sys, threading, time\n\
                def tick():\n    i = 0\n    while True:\n        print('tick', i, flush=True)\n        print('err', i, file=sys.stderr, flush=True)\n        i += 1\n        time.sleep(0.1)\n\
                threading.Thread(target=tick, daemon=True).start()\n\
                for line in sys.stdin:\n    print('got', line.strip(), flush=True)\n";
    let d = daemon_with(
        "[program.echo]\ncommand = \"python3 -u {dir}/echo.py\"\nstartsecs = 0\n",
        &[("echo.py", echo)],
    );
    let unix = vec!["-s".to_string(), format!("unix://{}", d.socket.display())];
    let tcp: Vec<String> = ["-s", &format!("http://{}", d.tcp_address()), "-u", "admin", "-p", PASSWORD]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let int = nix::sys::signal::Signal::SIGINT;
    // tail -f NAME over the unix socket, tail -f NAME stderr over TCP with the password.
    for (server, args, word) in
        [(&unix, &["tail", "-f", "echo"][..], "tick"), (&tcp, &["tail", "-f", "echo", "stderr"][..], "err")]
    {
        let mut o = supervisorctl(&ctl, server, args, Stdio::null());
        let first = o
            .wait("the tail", |t| t.starts_with("==> Press Ctrl-C to exit <==\n") && last(t, word).is_some());
        let n = last(&first, word).expect("a line");
        let text = o.wait("lines written later", |t| last(t, word).is_some_and(|m| m >= n + 5));
        let other = if word == "tick" { "err" } else { "tick" };
        assert!(last(&text, other).is_none(), "{args:?} shows one channel:\n{text}");
        // Ctrl-C ends it as supervisord's does: a newline, exit 0.
        let status = o.signal_and_wait(int);
        assert_eq!(status.code(), Some(0), "{args:?}:\n{}", o.text());
        assert!(o.text().ends_with('\n'));
    }
    // maintail -f: a line the daemon logs later comes through.
    let mut o = supervisorctl(&ctl, &tcp, &["maintail", "-f"], Stdio::null());
    o.wait("the daemon log", |t| t.contains(" INFO "));
    assert!(d.ctl(&["signal", "CONT", "echo"]).status.success());
    o.wait("the request logged later", |t| t.contains("signal CONT echo"));
    assert_eq!(o.signal_and_wait(int).code(), Some(0), "{}", o.text());
    // fg: what is typed reaches the child, whose answer comes back on the follow.
    let mut child = Command::new(&ctl)
        .arg("-s")
        .arg(format!("unix://{}", d.socket.display()))
        .args(["fg", "echo"])
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supervisorctl runs");
    let mut input = child.stdin.take().expect("stdin");
    let out = child.stdout.take().expect("stdout");
    let mut o = Output::collect(child, out);
    o.wait("fg to follow", |t| t.starts_with("==> Press Ctrl-C to exit <==\n") && last(t, "err").is_some());
    input.write_all(b"hello from fg\n").expect("type a line");
    input.flush().expect("flush");
    o.wait("the child's answer", |t| t.contains("got hello from fg\n"));
    o.signal_and_wait(int);
    assert!(o.text().contains("Exiting foreground"), "{}", o.text());
    assert_eq!(d.state("echo"), "RUNNING");
}

#[test]
fn a_request_body_that_trickles_is_cut_off_at_the_deadline() {
    let d = daemon("[program.a]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    let addr = d.tcp_address();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(30 * SECS)).expect("timeout");
    write!(
        s,
        "POST /RPC2 HTTP/1.1\r\nHost: x\r\n{}Content-Type: text/xml\r\nContent-Length: 1000\r\n\r\n",
        admin()
    )
    .expect("write the head");
    let started = Instant::now();
    let mut writer = s.try_clone().expect("clone");
    // A byte a second: 1000 s for the whole body, if the server let it.
    let trickle = std::thread::spawn(move || {
        for _ in 0..60 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(SECS);
        }
    });
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // The deadline is 10 s from the headers; the connection closed with the answer.
    assert!(took >= 9 * SECS && took < 20 * SECS, "cut off after {took:?}");
    drop(s);
    trickle.join().expect("the writer ends");
    // A prompt client is still served.
    let body =
        "<?xml version='1.0'?><methodCall><methodName>supervisor.getAPIVersion</methodName></methodCall>";
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    write!(
        s,
        "POST /RPC2 HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        admin(),
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("<string>3.0</string>"), "{answer}");
}

/// Decodes a chunked HTTP/1.1 body (after the headers), as far as it is complete.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return out };
        let Ok(size) = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16) else {
            return out;
        };
        let rest = &raw[eol + 2..];
        if size == 0 || rest.len() < size + 2 {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        raw = &rest[size + 2..];
    }
}

#[test]
fn a_follower_that_stops_reading_costs_bounded_memory_and_is_told_what_it_missed() {
    // 64 MiB of output as fast as the child can write it, into files of 1 MiB, one backup.
    let flood = "import sys\nline = b'x' * 1023 + b'\\n'\nfor i in range(64 * 1024):\n    sys.stdout.buffer.write(line)\n\
                 sys.stdout.buffer.write(b'THE END\\n')\nsys.stdout.flush()\nimport time\ntime.sleep(100)\n";
    let d = Daemon::start_with(
        "[program.flood]\ncommand = \"python3 {dir}/flood.py\"\nstartsecs = 0\nautostart = false\n\
         stdout_logfile = \"{dir}/flood.log\"\nstdout_logfile_maxbytes = 1048576\nstdout_logfile_backups = 1\n",
        // The log exists before the flood starts (supervisord too answers 404 without a file).
        &[("flood.py", flood), ("flood.log", "")],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    // A follower that reads the headers and then nothing.
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(20 * SECS)).expect("timeout");
    s.write_all(b"GET /logtail/flood HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut head = [0u8; 512];
    let n = s.read(&mut head).expect("the headers");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let before = rss_kib(d.pid());
    assert!(d.ctl(&["start", "flood"]).status.success());
    wait_for("the flood to be written", 60 * SECS, || {
        std::fs::read(d.path("flood.log")).is_ok_and(|b| b.ends_with(b"THE END\n"))
    });
    let after = rss_kib(d.pid());
    eprintln!("minderd's RSS: {before} KiB before, {after} KiB after 64 MiB went past a stalled follower");
    assert!(after < before + 8 * 1024, "RSS grew from {before} KiB to {after} KiB");
    // Reading again, it is told how much it missed, then gets the rest.
    let mut raw = head[..n].to_vec();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + 60 * SECS;
    let body = loop {
        assert!(Instant::now() < deadline, "THE END never came");
        let n = s.read(&mut buf).expect("reading the follow");
        assert!(n > 0, "the server closed the follow");
        raw.extend_from_slice(&buf[..n]);
        let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let body = dechunk(&raw[at + 4..]);
        if body.ends_with(b"THE END\n") {
            break body;
        }
    };
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("==> File truncated: "), "the follower is told bytes were lost");
    assert!(body.len() < 32 << 20, "most of the flood was rotated away unread: {} bytes came", body.len());
}

/// A supervisord.conf for both servers, in `dir`: `pad` writes 500 lines to each output and
/// waits; `merged` sends stderr to stdout; `idle` never starts.
fn compared_conf(dir: &std::path::Path) -> std::path::PathBuf {
    let conf = format!(
        "{}[program:pad]\ncommand=sh -c 'i=1000; while [ $i -lt 1500 ]; do echo pad $i; echo oops $i >&2; i=$((i+1)); done; exec sleep 100'\nstartsecs=0\n\
         [program:merged]\ncommand=sh -c 'echo merged; exec sleep 100'\nstartsecs=0\nredirect_stderr=true\n\
         [program:idle]\ncommand=sleep 100\nstartsecs=0\nautostart=false\n",
        crate::xmlrpc::supervisord_head(dir)
    );
    let path = dir.join("supervisord.conf");
    std::fs::write(&path, conf).expect("write supervisord.conf");
    path
}

/// What supervisorctl prints for each following command against the server started by
/// `server` in `dir`: run until `until` is printed (then Ctrl-C) or until it ends by itself.
fn follow_session(
    ctl: &std::path::Path,
    server: &mut Child,
    dir: &std::path::Path,
) -> Vec<(String, Option<i32>)> {
    let conf = dir.join("supervisord.conf");
    let sock = dir.join("s.sock");
    wait_for("the server to answer", 20 * SECS, || {
        assert!(server.try_wait().expect("wait").is_none(), "the server exited");
        Command::new(ctl)
            .arg("-c")
            .arg(&conf)
            .args(["status", "pad"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    wait_for("pad's output", 20 * SECS, || {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("pad-stderr")
                    && std::fs::read(e.path()).is_ok_and(|b| b.ends_with(b"oops 1499\n"))
            })
        })
    });
    let commands: &[(&[&str], Option<&str>)] = &[
        (&["tail", "-f", "pad"], Some("pad 1499\n")),
        (&["tail", "-f", "pad", "stderr"], Some("oops 1499\n")),
        (&["tail", "-f", "merged"], Some("merged\n")),
        (&["tail", "-f", "merged", "stderr"], None),
        (&["tail", "-f", "nope"], None),
        // supervisord made idle's AUTO log files at start (mkstemp): there is a file to follow.
        (&["tail", "-f", "idle"], Some("==> Press Ctrl-C to exit <==\n")),
        (&["fg", "idle"], None),
    ];
    let mut out = Vec::new();
    for (args, until) in commands {
        let mut child = Command::new(ctl)
            .arg("-c")
            .arg(&conf)
            .args(*args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("supervisorctl runs");
        // stdout and stderr into one text, as a terminal shows them.
        let (o, e) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
        let mut o = Output::collect(child, o.chain(e));
        let code = match until {
            Some(text) => {
                o.wait(&format!("{args:?} to print {text:?}"), |t| t.ends_with(text));
                o.signal_and_wait(nix::sys::signal::Signal::SIGINT).code()
            }
            None => {
                wait_for(&format!("{args:?} to end"), 20 * SECS, || {
                    o.child.try_wait().expect("wait").is_some()
                });
                o.child.try_wait().expect("wait").and_then(|s| s.code())
            }
        };
        // Wait for both pipes to close, so that the text is whole.
        let shared = Arc::downgrade(&o.text);
        let text = o.wait("the output to end", |_| shared.strong_count() == 1);
        out.push((text.replace(&sock.display().to_string(), "SOCK"), code));
    }
    crate::harness::sigterm(server);
    let _ = server.wait();
    out
}

#[test]
fn supervisorctls_follows_print_what_they_print_against_supervisord() {
    let ctl = crate::xmlrpc::supervisorctl_430();
    let quiet = || Stdio::null();
    let theirs = {
        let dir = tempfile::tempdir().expect("dir");
        let conf = compared_conf(dir.path());
        let mut s = Command::new(ctl.with_file_name("supervisord"))
            .arg("-c")
            .arg(&conf)
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .expect("supervisord starts");
        follow_session(&ctl, &mut s, dir.path())
    };
    let ours = {
        let dir = tempfile::tempdir().expect("dir");
        let conf = compared_conf(dir.path());
        let mut m = Command::new(crate::harness::bin("minderd"))
            .arg("-c")
            .arg(&conf)
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .expect("minderd starts");
        follow_session(&ctl, &mut m, dir.path())
    };
    eprintln!("supervisord's: {theirs:#?}");
    // Not a comparison of two failures: supervisord's own answers are what is expected.
    assert!(theirs[0].0.starts_with("==> Press Ctrl-C to exit <==\n") && theirs[0].0.contains("pad 1499\n"));
    assert!(theirs[4].0.contains("Cannot read, status code 404"), "{theirs:?}");
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(o, t, "command {i}: minderd's, then supervisord's");
    }
}
