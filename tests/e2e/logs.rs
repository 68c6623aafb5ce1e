//! Captured output and live streams: tail, follow, clear, reopen, stdin, events.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use minder::pb;

use crate::harness::{bin, code, stdout, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

/// The exact bytes `sh -c 'i=0; while [ $i -lt N ]; do ...'` below writes: line i is
/// "line <i>" padded with dots to 64 bytes.
fn expected_lines(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut line = format!("line {i:08} ");
        while line.len() < 63 {
            line.push('.');
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// A program that writes `n` 64-byte lines as fast as it can, then sleeps.
fn writer(name: &str, n: usize, extra: &str) -> String {
    format!(
        "[program.{name}]\ncommand = \"python3 -c 'import sys\\nfor i in range({n}): sys.stdout.write(\\\"line %%08d \\\" %% i + \\\".\\\" * 49 + \\\"\\\\n\\\")\\nsys.stdout.flush()\\nimport time; time.sleep(100)'\"\nstartsecs = 0\n{extra}\n"
    )
}

/// Collects a TailLog stream until `want` bytes (data plus skipped) have arrived.
async fn collect(stream: &mut tonic::Streaming<pb::LogChunk>, from: u64, want: usize) -> (Vec<u8>, u64) {
    let mut data = Vec::new();
    let mut skipped = 0;
    while data.len() + (skipped as usize) < want {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a chunk within 30 s")
            .expect("no error")
            .expect("the stream goes on");
        assert_eq!(chunk.offset, from + data.len() as u64 + skipped + chunk.skipped, "chunks are contiguous");
        skipped += chunk.skipped;
        data.extend_from_slice(&chunk.data);
    }
    (data, skipped)
}

fn tail_req(name: &str, start: pb::tail_log_request::Start, follow: bool) -> pb::TailLogRequest {
    pb::TailLogRequest {
        names: vec![name.into()],
        channels: vec![pb::LogChannel::Stdout as i32],
        start: Some(start),
        follow,
        resume: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_last_lines_last_bytes_and_offsets() {
    let d = Daemon::start(&writer("w", 100, ""));
    let want = expected_lines(100);
    let log = d.process("w")["stdout_logfile"].as_str().expect("a log").to_string();
    wait_for("all lines in the log", 10 * SECS, || std::fs::metadata(&log).is_ok_and(|m| m.len() == 6400));
    let mut c = d.client().await;
    let read = |req| {
        let mut c = c.clone();
        async move {
            let mut s = c.tail_log(req).await.expect("tail").into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = s.message().await.expect("ok") {
                out.extend(chunk.data);
            }
            out
        }
    };
    use pb::tail_log_request::Start;
    assert_eq!(read(tail_req("w", Start::LastLines(2), false)).await, want[6272..]);
    assert_eq!(read(tail_req("w", Start::LastBytes(100), false)).await, want[6300..]);
    assert_eq!(read(tail_req("w", Start::Offset(64), false)).await, want[64..]);
    // The default is supervisorctl's: the last 1600 bytes.
    let mut req = tail_req("w", Start::LastLines(0), false);
    req.start = None;
    assert_eq!(read(req).await, want[6400 - 1600..]);
    // An offset beyond the end is refused, and says where the end is.
    let err = c.tail_log(tail_req("w", Start::Offset(10_000), false)).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert!(err.message().contains("6400"), "{}", err.message());
    // The CLI, as supervisorctl spells it.
    let out = d.ctl(&["tail", "-128", "w"]);
    assert_eq!(out.stdout, want[6400 - 128..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn followers_get_every_byte_and_a_stalled_one_stalls_nothing() {
    const LINES: usize = 40_000; // 2.56 MB
    let d = Daemon::start(&writer("w", LINES, "autostart = false"));
    let mut c = d.client().await;
    // Subscribe before the output exists, from offset 0.
    let mut fast = c
        .tail_log(tail_req("w", pb::tail_log_request::Start::Offset(0), true))
        .await
        .expect("tail")
        .into_inner();
    let mut second = c
        .tail_log(tail_req("w", pb::tail_log_request::Start::Offset(0), true))
        .await
        .expect("tail")
        .into_inner();
    // A follower that is never read from, on a connection of its own (on a shared HTTP/2
    // connection its unread data would hold back the others' flow-control window).
    let _stalled = d
        .client()
        .await
        .tail_log(tail_req("w", pb::tail_log_request::Start::Offset(0), true))
        .await
        .expect("tail")
        .into_inner();
    assert_eq!(code(&d.ctl(&["start", "w"])), 0);
    let want = expected_lines(LINES);
    let (got, skipped) = collect(&mut fast, 0, want.len()).await;
    assert_eq!(skipped, 0);
    assert!(got == want, "the follower's bytes differ from what the child wrote");
    let (got2, _) = collect(&mut second, 0, want.len()).await;
    assert!(got2 == want);
    // Capture went on to the end although one follower read nothing.
    let log = d.process("w")["stdout_logfile"].as_str().expect("a log").to_string();
    assert_eq!(std::fs::metadata(&log).expect("log").len(), want.len() as u64);
}

/// A program that echoes each line it reads on stdin, so a test decides when output appears.
/// A line "N" writes N 64-byte lines instead.
const ECHO: &str = "import sys\nfor line in sys.stdin:\n    word = line.strip()\n    if word.isdigit():\n        for i in range(int(word)):\n            sys.stdout.write(\"line %08d \" % i + \".\" * 49 + \"\\n\")\n    else:\n        sys.stdout.write(word + \"\\n\")\n    sys.stdout.flush()\n";

/// Sends `line` to `name`'s stdin.
async fn say(d: &Daemon, name: &str, line: &str) {
    let mut c = d.client().await;
    c.send_stdin(pb::SendStdinRequest { name: name.into(), data: format!("{line}\n").into_bytes() })
        .await
        .expect("stdin");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnecting_client_resumes_with_no_gap_and_no_duplicate() {
    let d = Daemon::start_with(
        "[program.w]\ncommand = \"python3 -u {dir}/echo.py\"\nstartsecs = 0\n",
        &[("echo.py", ECHO)],
        &[],
    );
    d.wait_state("w", "RUNNING", 10 * SECS);
    let batch = expected_lines(3000); // 192000 bytes: three chunks or more
    let log = d.process("w")["stdout_logfile"].as_str().expect("a log").to_string();
    let len = batch.len() as u64;
    let size = |n: u64| move || std::fs::metadata(&log).is_ok_and(|m| m.len() == n * len);
    let mut c = d.client().await;
    let mut s = c
        .tail_log(tail_req("w", pb::tail_log_request::Start::Offset(0), true))
        .await
        .expect("tail")
        .into_inner();
    say(&d, "w", "3000").await;
    // Take one chunk of the batch, and disconnect in the middle of it.
    let (first, _) = collect(&mut s, 0, 1).await;
    assert!(first.len() < batch.len(), "disconnected mid-stream, after {} bytes", first.len());
    drop(s);
    // The program writes a second batch while nobody follows.
    say(&d, "w", "3000").await;
    wait_for("both batches in the log", 10 * SECS, size(2));
    // Resume from the offset reached: the rest of the first batch and all of the second,
    // starting exactly there (collect checks every chunk's offset), then a third batch written
    // once resumed.
    let resume_at = first.len() as u64;
    let mut req = tail_req("w", pb::tail_log_request::Start::LastBytes(0), true);
    req.resume = vec![pb::ResumePoint {
        process: "w".into(),
        channel: pb::LogChannel::Stdout as i32,
        offset: resume_at,
    }];
    let mut s = c.tail_log(req).await.expect("tail").into_inner();
    let (rest, skipped) = collect(&mut s, resume_at, 2 * batch.len() - first.len()).await;
    assert_eq!(skipped, 0);
    say(&d, "w", "3000").await;
    let (third, _) = collect(&mut s, (2 * batch.len()) as u64, batch.len()).await;
    let mut all = first;
    all.extend(rest);
    all.extend(third);
    assert!(all == batch.repeat(3), "no gap and no duplicate");
}

#[test]
fn several_names_interleave_with_prefixes() {
    let d = Daemon::start(
        r#"
[program.a]
command = "sh -c 'echo from-a; exec sleep 100'"
startsecs = 0

[program.b]
command = "sh -c 'echo from-b; echo err-b >&2; exec sleep 100'"
startsecs = 0
"#,
    );
    wait_for("both outputs", 10 * SECS, || {
        let out = stdout(&d.ctl(&["tail", "a", "b", "stderr"]));
        let err = stdout(&d.ctl(&["tail", "a", "b"]));
        out.contains("err-b") && err.contains("from-a") && err.contains("from-b")
    });
    // Without a channel named: stdout only, as the help says, for several names too.
    let out = stdout(&d.ctl(&["tail", "a", "b"]));
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["a | from-a", "b | from-b"]);
    let out = stdout(&d.ctl(&["tail", "a", "b", "stderr"]));
    assert_eq!(out, "b (stderr) | err-b\n");
    // `-f` builds the same request (the channels do not depend on following).
}

#[test]
fn tail_json_carries_the_exact_bytes() {
    let d = Daemon::start_with(
        "[program.bin]\ncommand = \"sh {dir}/bin.sh\"\nstartsecs = 0\n",
        &[("bin.sh", "printf '\\377\\376ok\\n'\nexec sleep 100\n")],
        &[],
    );
    let mut v = serde_json::Value::Null;
    wait_for("the output", 10 * SECS, || {
        let out = d.ctl(&["--json", "tail", "bin"]);
        v = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["data"].as_str().is_some_and(|s| s.ends_with("ok\n"))
    });
    // The text replaces what is not UTF-8; the base64 is exactly what the program wrote.
    assert_eq!(v["data"], "\u{fffd}\u{fffd}ok\n");
    assert_eq!(v["data_base64"], "//5vawo=");
}

#[test]
fn redirect_stderr_and_clear() {
    let d = Daemon::start(
        r#"
[program.both]
command = "sh -c 'echo out; echo err >&2; exec sleep 100'"
startsecs = 0
redirect_stderr = true
stdout_logfile = "{dir}/both.log"
"#,
    );
    let log = d.path("both.log");
    wait_for("both lines in one file", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("out\n") && s.contains("err\n"))
    });
    let out = d.ctl(&["tail", "both", "stderr"]);
    assert_ne!(code(&out), 0);
    assert!(crate::harness::stderr(&out).contains("the stderr of both is redirected to its stdout"));
    let out = d.ctl(&["clear", "both"]);
    assert_eq!(stdout(&out), "both: cleared\n");
    assert_eq!(std::fs::read_to_string(&log).expect("still there"), "");
}

#[test]
fn sigusr2_reopens_a_log_moved_away() {
    let d = Daemon::start(
        r#"
[program.ticker]
command = "python3 -u -c 'import sys, time\nfor line in sys.stdin: print(line.strip(), flush=True)'"
startsecs = 0
stdout_logfile = "{dir}/ticker.log"
"#,
    );
    d.wait_state("ticker", "RUNNING", 10 * SECS);
    let say = |word: &str| {
        let out = d.ctl(&["--json", "status", "ticker"]);
        assert_eq!(code(&out), 0);
        rt().block_on(async {
            let mut c = d.client().await;
            c.send_stdin(pb::SendStdinRequest {
                name: "ticker".into(),
                data: format!("{word}\n").into_bytes(),
            })
            .await
            .expect("stdin");
        });
    };
    let log = d.path("ticker.log");
    say("before");
    wait_for("before", 10 * SECS, || std::fs::read_to_string(&log).is_ok_and(|s| s == "before\n"));
    // logrotate's "create" mode: rename, then signal.
    std::fs::rename(&log, d.path("ticker.log.old")).expect("rename");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGUSR2)
        .expect("signal");
    wait_for("the reopen to be logged", 10 * SECS, || {
        d.log().contains("received SIGUSR2 indicating log reopen request")
    });
    say("after");
    wait_for("after, in a new file", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s == "after\n")
    });
    assert_eq!(std::fs::read_to_string(d.path("ticker.log.old")).expect("old"), "before\n");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn fg_sends_typed_lines_and_shows_the_output() {
    let d = Daemon::start("[program.echo]\ncommand = \"cat\"\nstartsecs = 0\n");
    d.wait_state("echo", "RUNNING", 10 * SECS);
    let mut fg = Command::new(bin("minder"))
        .arg("-s")
        .arg(format!("unix://{}", d.socket.display()))
        .args(["fg", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("fg runs");
    let mut input = fg.stdin.take().expect("stdin");
    let output = fg.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    writeln!(input, "ping").expect("type");
    let line = rx.recv_timeout(Duration::from_secs(10)).expect("the echo comes back");
    assert_eq!(line, "ping");
    drop(input); // end of input detaches
    let status = fg.wait().expect("fg exits");
    assert!(status.success());
    assert_eq!(d.state("echo"), "RUNNING", "detaching leaves it running");
}

#[test]
fn maintail_shows_the_daemons_log() {
    let d = Daemon::start("[program.s]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("s", "RUNNING", 10 * SECS);
    let out = stdout(&d.ctl(&["maintail", "-n", "2"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(out.contains("success: s entered RUNNING state"), "{out}");
}

#[test]
fn a_target_of_dev_stdout_goes_to_minderds_stdout() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("m.toml"),
        "[program.loud]\ncommand = \"sh -c 'echo to-the-container-log; exec sleep 100'\"\nstartsecs = 0\nstdout_logfile = \"/dev/stdout\"\n",
    )
    .expect("write");
    let mut child = Command::new(bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .arg("--listen")
        .arg(format!("unix://{}/m.sock", dir.path().display()))
        .arg("-l")
        .arg(dir.path().join("d.log"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("minderd starts");
    let mut out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut seen = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("to-the-container-log\n") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the child's line on minderd's stdout");
    crate::harness::sigterm(&child);
    assert!(child.wait().expect("exits").success());
}

#[tokio::test(flavor = "multi_thread")]
async fn events_come_in_order_and_resume() {
    let d = Daemon::start("[program.e]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("e", "RUNNING", 10 * SECS);
    let mut c = d.client().await;
    let mut s = c.watch_events(pb::WatchEventsRequest::default()).await.expect("watch").into_inner();
    let first = s.message().await.expect("ok").expect("an event");
    let Some(pb::event::Kind::Snapshot(snap)) = &first.kind else { panic!("a snapshot first: {first:?}") };
    assert_eq!(snap.processes.len(), 1);
    assert_eq!(snap.processes[0].state(), pb::ProcessState::Running);
    assert_eq!(code(&d.ctl(&["restart", "e"])), 0);
    let mut seen = Vec::new();
    let mut last = first.seq;
    while seen.len() < 4 {
        let e = s.message().await.expect("ok").expect("an event");
        assert_eq!(e.seq, last + 1, "consecutive numbers");
        last = e.seq;
        if let Some(pb::event::Kind::Process(p)) = e.kind {
            seen.push(format!("{:?}->{:?}", p.from(), p.to()));
        }
    }
    assert_eq!(seen, ["Running->Stopping", "Stopping->Stopped", "Stopped->Starting", "Starting->Running"]);
    drop(s);
    // Missed while disconnected, then resumed: exactly the missed ones, no snapshot.
    assert_eq!(code(&d.ctl(&["stop", "e"])), 0);
    let req =
        pb::WatchEventsRequest { since_seq: last, instance: first.instance.clone(), ..Default::default() };
    let mut s = c.watch_events(req).await.expect("watch").into_inner();
    let e = s.message().await.expect("ok").expect("an event");
    assert_eq!(e.seq, last + 1);
    let Some(pb::event::Kind::Process(p)) = e.kind else { panic!("a change, not a snapshot") };
    assert_eq!((p.from(), p.to()), (pb::ProcessState::Running, pb::ProcessState::Stopping));
    // A different instance (a restarted daemon) gets a snapshot instead.
    let req = pb::WatchEventsRequest { since_seq: last, instance: "another".into(), ..Default::default() };
    let mut s = c.watch_events(req).await.expect("watch").into_inner();
    let e = s.message().await.expect("ok").expect("an event");
    assert!(matches!(e.kind, Some(pb::event::Kind::Snapshot(_))));
}

#[test]
fn events_cli_prints_changes() {
    let d = Daemon::start("[program.e]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("e", "RUNNING", 10 * SECS);
    let got = d.events_through_a_restart(&["--json"], "e", |l| l.contains("\"to\":\"STOPPED\""));
    let v: serde_json::Value = serde_json::from_str(&got[0]).expect("one JSON object per line");
    assert_eq!(v["type"], "process");
    assert_eq!(v["name"], "e");
}

#[test]
fn rotation_with_a_real_child_keeps_exact_sizes_and_shifts_backups() {
    // 100 lines of 64 bytes = 6400 bytes; files of 1000 bytes, 3 backups.
    let d = Daemon::start(&writer(
        "w",
        100,
        "stdout_logfile = \"{dir}/w.log\"\nstdout_logfile_maxbytes = 1000\nstdout_logfile_backups = 3",
    ));
    let want = expected_lines(100);
    let size = |p: &str| std::fs::metadata(d.path(p)).map(|m| m.len()).unwrap_or(u64::MAX);
    wait_for("the last 400 bytes in the current file", 10 * SECS, || size("w.log") == 400);
    assert_eq!((size("w.log.1"), size("w.log.2"), size("w.log.3")), (1000, 1000, 1000));
    assert!(!d.path("w.log.4").exists(), "only three backups are kept");
    // The files hold exactly the last 3400 bytes, oldest backup first.
    let mut tail = Vec::new();
    for f in ["w.log.3", "w.log.2", "w.log.1", "w.log"] {
        tail.extend(std::fs::read(d.path(f)).expect("read"));
    }
    assert!(tail == want[3000..]);
}

#[test]
fn no_backups_empties_the_file_at_maxbytes() {
    let d = Daemon::start(&writer(
        "w",
        100,
        "stdout_logfile = \"{dir}/w.log\"\nstdout_logfile_maxbytes = 1000\nstdout_logfile_backups = 0",
    ));
    wait_for("the current file to hold the last 400 bytes", 10 * SECS, || {
        std::fs::read(d.path("w.log")).is_ok_and(|b| b == expected_lines(100)[6000..])
    });
    assert!(!d.path("w.log.1").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_loses_nothing_across_rotations() {
    const LINES: usize = 20_000; // 1.28 MB through 100 KB files
    let d = Daemon::start(&writer(
        "w",
        LINES,
        "autostart = false\nstdout_logfile_maxbytes = 100000\nstdout_logfile_backups = 30",
    ));
    let mut c = d.client().await;
    let mut s = c
        .tail_log(tail_req("w", pb::tail_log_request::Start::Offset(0), true))
        .await
        .expect("tail")
        .into_inner();
    assert_eq!(code(&d.ctl(&["start", "w"])), 0);
    let want = expected_lines(LINES);
    let (got, skipped) = collect(&mut s, 0, want.len()).await;
    assert_eq!(skipped, 0, "nothing was rotated away before it was read");
    assert!(got == want, "the bytes differ from what the child wrote");
    let log = d.process("w")["stdout_logfile"].as_str().expect("a log").to_string();
    assert!(std::path::Path::new(&format!("{log}.12")).exists(), "the log did rotate, many times");
}

#[test]
fn auto_logs_are_named_as_supervisord_names_them_and_cleared_at_start() {
    let mut d = Daemon::start("[daemon]\nidentifier = \"e2e\"\n[program.a]\ncommand = \"sh -c 'echo hi; exec sleep 100'\"\nstartsecs = 0\n");
    let log = d.process("a")["stdout_logfile"].as_str().expect("a log").to_string();
    let file = std::path::Path::new(&log).file_name().expect("name").to_string_lossy().into_owned();
    assert!(file.starts_with("a-stdout---e2e-") && file.ends_with(".log"), "{file}");
    assert_eq!(file.len(), "a-stdout---e2e-".len() + 6 + ".log".len(), "six random characters: {file}");
    assert!(log.starts_with(&d.dir.path().display().to_string()), "in childlogdir (the temp dir): {log}");
    d.stop();
    assert!(std::path::Path::new(&log).exists());
    // A new daemon with the same identifier removes the old AUTO files (nocleanup = false).
    d.spawn(&[]);
    assert!(!std::path::Path::new(&log).exists(), "the previous run's AUTO log is cleared");
    d.stop();
    // With -k (nocleanup) they stay.
    let kept = d.process_log_path_after_start(&["-k"]);
    d.stop();
    d.spawn(&["-k"]);
    assert!(std::path::Path::new(&kept).exists(), "nocleanup keeps the previous run's AUTO log");
}

#[test]
fn log_timestamps_prefix_every_line() {
    let d = Daemon::start(
        "[program.t]\ncommand = \"sh -c 'echo one; echo two; exec sleep 100'\"\nstartsecs = 0\nlog_timestamps = true\nstdout_logfile = \"{dir}/t.log\"\n",
    );
    wait_for("two lines", 10 * SECS, || {
        std::fs::read_to_string(d.path("t.log")).is_ok_and(|s| s.lines().count() == 2)
    });
    let text = std::fs::read_to_string(d.path("t.log")).expect("read");
    for (line, word) in text.lines().zip(["one", "two"]) {
        let (stamp, rest) = line.split_at(24);
        assert_eq!(rest, word);
        assert!(
            chrono::NaiveDateTime::parse_from_str(stamp.trim_end(), "%Y-%m-%d %H:%M:%S,%3f").is_ok(),
            "{line}"
        );
    }
}

#[test]
fn clear_leaves_a_device_alone_and_says_so() {
    let d = Daemon::start(
        "[program.quiet]\ncommand = \"sh -c 'echo discarded; exec sleep 100'\"\nstartsecs = 0\nautostart = false\nstdout_logfile = \"{dir}/null\"\n",
    );
    // A character device like /dev/null (1, 3), inside the test's own directory.
    let null = d.path("null");
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod (the tests run as root)");
    assert_eq!(code(&d.ctl(&["start", "quiet"])), 0);
    let out = d.ctl(&["clear", "quiet"]);
    assert_ne!(code(&out), 0, "nothing was cleared, and the exit code says so");
    let text = stdout(&out);
    assert!(
        text.starts_with("quiet: ERROR (failed): ")
            && text.contains("is a character device, not a regular file"),
        "{text}"
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(&null).expect("still there");
    assert!(meta.file_type().is_char_device(), "the device is still a device");
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_replaced_by_a_link_to_a_root_file_is_refused() {
    // The program runs as nobody, and its log directory is nobody's: it can replace its log.
    let d = Daemon::start_with(
        "[program.p]\ncommand = \"sh {dir}/echo.sh\"\nstartsecs = 0\nautostart = false\nuser = \"nobody\"\nstdout_logfile = \"{dir}/logs/out.log\"\nstderr_logfile = \"{dir}/err.log\"\n",
        // Each line to stdout, then to stderr (python may not be nobody's to run).
        &[("echo.sh", "while IFS= read -r l; do echo \"$l\"; echo \"$l\" >&2; done\n"), ("logs/", "")],
        &[],
    );
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("a nobody user");
    nix::unistd::chown(&d.path("logs"), Some(nobody.uid), Some(nobody.gid)).expect("chown");
    // The test directory itself must be enterable by nobody for the script.
    std::fs::set_permissions(d.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(d.path("echo.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let secret = d.path("secret");
    std::fs::write(&secret, "root only\n").expect("write");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let out = d.ctl(&["start", "p"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), d.log());
    let log = d.path("logs/out.log");
    say(&d, "p", "before").await;
    wait_for("before", 10 * SECS, || std::fs::read_to_string(&log).is_ok_and(|s| s == "before\n"));
    // What the program's user can do: replace its log with a link, then wait for a reopen.
    std::fs::remove_file(&log).expect("rm");
    std::os::unix::fs::symlink(&secret, &log).expect("symlink");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGUSR2)
        .expect("signal");
    wait_for("the refusal in the daemon log", 10 * SECS, || {
        d.log().contains("refused: it is a symbolic link")
    });
    say(&d, "p", "after").await;
    // The program writes stdout first, then stderr: once stderr has it, stdout was written.
    wait_for("after, on stderr", 10 * SECS, || {
        std::fs::read_to_string(d.path("err.log")).is_ok_and(|s| s.contains("after"))
    });
    assert_eq!(std::fs::read_to_string(&secret).expect("read"), "root only\n", "the root file is unchanged");
    assert!(std::fs::symlink_metadata(&log).expect("link").file_type().is_symlink());
    // Nor is the link read: Supervisor's XML-RPC reads a log by its path, and a read-only
    // caller must not get the root file through it.
    for method in ["readProcessStdoutLog", "tailProcessStdoutLog"] {
        let body = format!(
            "<?xml version='1.0'?><methodCall><methodName>supervisor.{method}</methodName><params>\
             <param><value><string>p</string></value></param><param><value><int>0</int></value></param>\
             <param><value><int>1000</int></value></param></params></methodCall>"
        );
        let answer = xmlrpc_over_unix(&d.socket, &body);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(!answer.contains("root only"), "{method} read the link's target: {answer}");
    }
}

/// POSTs an XML-RPC call to /RPC2 on a unix socket and returns the whole answer.
fn xmlrpc_over_unix(sock: &std::path::Path, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    write!(
        s,
        "POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_sharing_a_log_file_share_clear() {
    let conf = "[program.a]\ncommand = \"python3 -u {dir}/echo.py\"\nstartsecs = 0\nstdout_logfile = \"{dir}/shared.log\"\n\n[program.b]\ncommand = \"python3 -u {dir}/echo.py\"\nstartsecs = 0\nstdout_logfile = \"{dir}/shared.log\"\nstdout_logfile_maxbytes = 1000\n";
    let d = Daemon::start_with(conf, &[("echo.py", ECHO)], &[]);
    d.wait_state("a", "RUNNING", 10 * SECS);
    d.wait_state("b", "RUNNING", 10 * SECS);
    let log = d.path("shared.log");
    say(&d, "a", "a1").await;
    say(&d, "b", "b1").await;
    wait_for("both lines", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("a1\n") && s.contains("b1\n"))
    });
    assert_eq!(stdout(&d.ctl(&["clear", "a"])), "a: cleared\n");
    // b goes on writing into the file, not into the one cleared away.
    say(&d, "b", "b2").await;
    wait_for("b's next line in the new file", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s == "b2\n")
    });
    // The channel lives as long as a process uses it: with a removed by an update, b's output
    // still goes into the file, and clearing b still clears it.
    let full = std::fs::read_to_string(&d.config).expect("config");
    let only_b = &full[full.find("[program.b]").expect("b")..];
    std::fs::write(&d.config, only_b).expect("write");
    let out = d.ctl(&["update"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    d.wait_state("b", "RUNNING", 10 * SECS);
    say(&d, "b", "b3").await;
    wait_for("b3 after a was removed", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s == "b2\nb3\n")
    });
    assert_eq!(stdout(&d.ctl(&["clear", "b"])), "b: cleared\n");
    say(&d, "b", "b4").await;
    wait_for("b4 in the new file", 10 * SECS, || std::fs::read_to_string(&log).is_ok_and(|s| s == "b4\n"));
    std::fs::write(&d.config, &full).expect("write");
    // --check-config says that the file is shared, and whose settings apply.
    let out =
        Command::new(bin("minderd")).arg("-c").arg(&d.config).arg("--check-config").output().expect("runs");
    let err = crate::harness::stderr(&out);
    assert!(err.contains("is written by a (stdout), b (stdout): they share one log"), "{err}");
    assert!(err.contains("maxbytes 1000, backups 10, timestamps false from b (stdout)"), "{err}");
}

#[test]
fn log_files_exist_once_the_process_runs() {
    let d = Daemon::start(
        "[program.quiet]\ncommand = \"sleep 100\"\nstartsecs = 0\nstdout_logfile = \"{dir}/quiet.out\"\nstderr_logfile = \"{dir}/quiet.err\"\n",
    );
    d.wait_state("quiet", "RUNNING", 10 * SECS);
    assert!(d.path("quiet.out").exists(), "stdout's log is created at spawn, as supervisord does");
    assert!(d.path("quiet.err").exists(), "and stderr's");
}

/// A tmpfs mounted for a test, unmounted (lazily: minderd may still hold a file) on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "mount a tmpfs (the tests run as root)");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn tail_n_is_exact_after_the_disk_filled_up() {
    // 100-byte lines, one write each, into a 64 KiB file system: the write that fills it is
    // taken in part (up to the page boundary) and the rest refused.
    let script = "import sys, time\nfor i in range(2000):\n    sys.stdout.write(\"line %08d \" % i + \".\" * 85 + \"\\n\")\ntime.sleep(100)\n";
    let d = Daemon::start_with(
        "[program.w]\ncommand = \"python3 -u {dir}/w.py\"\nstartsecs = 0\nautostart = false\nstdout_logfile = \"{dir}/small/w.log\"\n",
        &[("w.py", script), ("small/", "")],
        &[],
    );
    let _fs = Tmpfs::mount(&d.path("small"), "64k");
    assert_eq!(code(&d.ctl(&["start", "w"])), 0);
    wait_for("the disk to fill up", 10 * SECS, || d.log().contains("cannot write to"));
    let file = std::fs::read(d.path("small/w.log")).expect("read");
    assert!(file.len() % 100 != 0, "the last write was taken in part ({} bytes)", file.len());
    // The last two lines of what the file holds: a whole one and the piece of the next.
    let cut = file[..file.len() - 1].iter().rposition(|&b| b == b'\n').expect("a newline");
    let cut = file[..cut].iter().rposition(|&b| b == b'\n').expect("another") + 1;
    let out = d.ctl(&["tail", "-n", "2", "w"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&file[cut..]));
}

#[test]
fn tail_n_of_a_huge_newline_less_log_is_bounded_and_stalls_nobody() {
    let conf = "[program.big]\ncommand = \"sleep 100\"\nstartsecs = 0\nautostart = false\nstdout_logfile = \"{dir}/big.log\"\n";
    let mut d = Daemon::start(conf);
    d.stop();
    // 4 GiB without a newline, sparse (it costs nothing); counted as the log when minderd starts.
    std::fs::File::create(d.path("big.log")).expect("create").set_len(4 << 30).expect("set_len");
    d.spawn(&[]);
    let sock = d.socket.clone();
    let tails: Vec<_> = (0..4)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || crate::harness::ctl_at(&sock, &["tail", "-n", "5", "big"]))
        })
        .collect();
    // Other requests are answered while the tails run.
    for _ in 0..5 {
        let asked = std::time::Instant::now();
        assert_eq!(code(&d.ctl(&["status", "big"])), 3, "STOPPED");
        assert!(asked.elapsed() < 5 * SECS, "status took {:?}", asked.elapsed());
    }
    for t in tails {
        let out = t.join().expect("joined");
        assert_eq!(code(&out), 0);
        assert_eq!(out.stdout.len(), 1 << 20, "the last MiB, where the scan stopped");
        let err = crate::harness::stderr(&out);
        assert!(
            err.contains("the last 5 lines of big (stdout) start more than 1048576 bytes back; showing the last 1048576 bytes"),
            "{err}"
        );
    }
}

#[test]
fn rotate_now_and_json_lines() {
    let d = Daemon::start(
        r#"
[program.j]
command = "sh -c 'echo one; printf \"two \\\"q\\\"\\n\"; echo err >&2; exec sleep 100'"
startsecs = 0
log_format = "json"
stdout_logfile = "{dir}/j.log"
stdout_logfile_backups = 2
stderr_logfile = "{dir}/j.err"
"#,
    );
    let log = d.path("j.log");
    wait_for("two records", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.lines().count() == 2)
    });
    let text = std::fs::read_to_string(&log).expect("the log");
    let records: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(records[0]["line"], "one");
    assert_eq!(records[1]["line"], "two \"q\"");
    assert!(records.iter().all(|r| r["process"] == "j" && r["channel"] == "stdout" && r["time"].is_string()));
    wait_for("the stderr record", 10 * SECS, || {
        std::fs::read_to_string(d.path("j.err")).is_ok_and(|s| s.contains(r#""channel":"stderr""#))
    });

    // `minder rotate`: the file starts anew, the old one is j.log.1, and tail still reads
    // across the rotation.
    let out = d.ctl(&["rotate", "j"]);
    assert_eq!((code(&out), stdout(&out)), (0, "j: rotated\n".to_string()));
    assert_eq!(std::fs::read_to_string(&log).expect("the new log"), "");
    assert_eq!(std::fs::read_to_string(d.path("j.log.1")).expect("the backup"), text);
    let out = d.ctl(&["tail", "-c", "1000", "j"]);
    assert_eq!(stdout(&out), text);
    let out = d.ctl(&["rotate", "nosuch"]);
    assert_ne!(code(&out), 0);
}

#[test]
fn rotated_backups_are_compressed_and_still_read() {
    let d = Daemon::start(&format!(
        "{}{}",
        writer("z", 2000, "stdout_logfile = \"{dir}/z.log\"\nstdout_logfile_maxbytes = 40000\nstdout_logfile_backups = 5\nstdout_logfile_compress = \"gzip\"\n"),
        writer("s", 100, "stdout_logfile = \"{dir}/s.log\"\nstdout_logfile_compress = \"zstd\"\n"),
    ));
    let expected = expected_lines(2000);
    // 2000 lines of 64 bytes in files of 40,000: three backups plus the current file.
    wait_for("z's backups compressed", 20 * SECS, || {
        (1..=3).all(|i| d.path(&format!("z.log.{i}.gz")).exists() && !d.path(&format!("z.log.{i}")).exists())
    });
    let gz = Command::new("gzip").arg("-dc").arg(d.path("z.log.3.gz")).output().expect("gzip runs");
    assert!(gz.status.success());
    assert_eq!(gz.stdout, &expected[..40_000], "gzip itself reads the oldest backup");
    // tail reads across the compressed backups, byte for byte.
    let out = d.ctl(&["tail", "-c", "200000", "z"]);
    assert_eq!(out.stdout, expected, "every line, in order, once");
    let out = d.ctl(&["tail", "-n", "1000", "z"]);
    assert_eq!(out.stdout, &expected[expected.len() - 64_000..]);

    // zstd, through `minder rotate`.
    wait_for("s's lines", 10 * SECS, || std::fs::metadata(d.path("s.log")).is_ok_and(|m| m.len() == 6400));
    assert_eq!(code(&d.ctl(&["rotate", "s"])), 0);
    wait_for("s's backup compressed", 20 * SECS, || {
        d.path("s.log.1.zst").exists() && !d.path("s.log.1").exists()
    });
    let out = d.ctl(&["tail", "-c", "10000", "s"]);
    assert_eq!(out.stdout, expected_lines(100));
}
