//! The reliability suite: load, faults and hostile input, with nothing lost.
//!
//! The quick part runs with every test run. `MINDER_SOAK_SECS=N` makes the flapping load run
//! N seconds instead of 10 (and `MINDER_SOAK=1` multiplies the fuzz cases in tests/fuzz.rs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use minder::pb;

use crate::harness::{alive, code, fds, rss_kib, stderr, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

fn soak_secs(quick: u64) -> u64 {
    std::env::var("MINDER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(quick)
}

/// Children of `pid` (forked by any of its threads) that are zombies.
fn zombies(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|p| !alive(p.parse().unwrap_or(0)) && std::path::Path::new(&format!("/proc/{p}")).exists())
        .count()
}

/// 200 programs crash-looping three ways — exiting at once (BACKOFF), exiting after startsecs
/// (EXITED, autorestart), killed by a signal — while clients read status, follow logs and
/// watch events. Afterwards: no zombie, no leaked descriptor, bounded memory, and every state
/// change seen by the watcher, in order, each one following on from the last.
#[tokio::test(flavor = "multi_thread")]
async fn flapping_load_loses_nothing() {
    let secs = soak_secs(10);
    let mut conf = String::new();
    // startsecs = 10: `true` must always fail to start (BACKOFF), even when a loaded machine
    // notices its exit late; with the default 1 s it could reach RUNNING, then stay EXITED.
    for i in 0..70 {
        conf += &format!(
            "[program.quick{i:02}]\ncommand = \"true\"\nstartsecs = 10\nstartretries = 1000\nautostart = false\n\n"
        );
    }
    for i in 0..70 {
        conf += &format!(
            "[program.late{i:02}]\ncommand = \"sh -c 'echo run; sleep 0.5; exit 1'\"\nstartsecs = 0.1\nautorestart = true\nautostart = false\n\n"
        );
    }
    for i in 0..60 {
        conf += &format!(
            "[program.killed{i:02}]\ncommand = \"sh -c 'echo boom >&2; sleep 0.7; kill -9 $$'\"\nstartsecs = 0.1\nautorestart = true\nautostart = false\n\n"
        );
    }
    let d = Daemon::start(&conf);
    let pid = d.pid();
    let fds_before = fds(pid);
    let mut c = d.client().await;

    // The watcher: snapshot first, then every change.
    let mut events = c.watch_events(pb::WatchEventsRequest::default()).await.expect("watch").into_inner();
    let first = events.message().await.expect("ok").expect("snapshot");
    let Some(pb::event::Kind::Snapshot(snap)) = first.kind else { panic!("no snapshot") };
    let mut last: BTreeMap<String, pb::ProcessState> =
        snap.processes.iter().map(|p| (p.full_name.clone(), p.state())).collect();
    let watcher = tokio::spawn(async move {
        let mut seq = first.seq;
        let mut changes = 0u64;
        while let Ok(Some(e)) = events.message().await {
            assert_eq!(e.seq, seq + 1, "event numbers are consecutive");
            seq = e.seq;
            match e.kind {
                Some(pb::event::Kind::Process(p)) => {
                    let before = last.insert(p.full_name.clone(), p.to()).expect("a known process");
                    assert_eq!(
                        before,
                        p.from(),
                        "{} changed from {:?} but was {:?}",
                        p.full_name,
                        p.from(),
                        before
                    );
                    changes += 1;
                }
                Some(pb::event::Kind::Lagged(l)) => panic!("the watcher lagged by {}", l.missed),
                Some(pb::event::Kind::Daemon(_)) => break,
                _ => {}
            }
        }
        (changes, last)
    });

    let out = d.ctl(&["start", "--no-wait", "all"]);
    assert!(out.status.success() || code(&out) == 7, "{}", stderr(&out));
    // Clients in parallel: a status loop and followers of some logs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for who in ["late00", "late01", "killed00", "killed01"] {
        let mut c = d.client().await;
        let stop = std::sync::Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let channels = vec![pb::LogChannel::Stdout as i32, pb::LogChannel::Stderr as i32];
            let req = pb::TailLogRequest {
                names: vec![who.into()],
                channels,
                start: Some(pb::tail_log_request::Start::Offset(0)),
                follow: true,
                resume: vec![],
            };
            let mut s = c.tail_log(req).await.expect("tail").into_inner();
            let mut bytes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                    Ok(Ok(Some(chunk))) => bytes += chunk.data.len(),
                    Ok(other) => panic!("the tail of {who} ended: {other:?}"),
                    Err(_) => {}
                }
            }
            bytes
        }));
    }
    let mut statuses = 0u64;
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let list = c.list_processes(pb::ListProcessesRequest::default()).await.expect("status under load");
        assert_eq!(list.into_inner().processes.len(), 200);
        statuses += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for cl in clients {
        assert!(cl.await.expect("follower") > 0, "a follower received output");
    }

    let out = d.ctl(&["stop", "all"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = c.list_processes(pb::ListProcessesRequest::default()).await.expect("status").into_inner();
    assert!(list.processes.iter().all(|p| p.state() == pb::ProcessState::Stopped), "all stopped");
    // Orphaned grandchildren (a shell's sleep) may still be exiting: each is reaped at once.
    wait_for("no zombie children", 10 * SECS, || zombies(pid) == 0);
    let rss = rss_kib(pid);
    assert!(rss < 64 * 1024, "minderd's RSS after the load: {rss} kB");
    let spawns = list.processes.iter().map(|p| u64::from(p.spawn_count)).sum::<u64>();
    assert!(spawns > 400, "the programs did flap: {spawns} spawns");

    // The watcher saw everything: end it by shutting down (a daemon event ends its loop).
    drop(c);
    let mut d = d;
    let out = d.ctl(&["shutdown"]);
    assert_eq!(code(&out), 0);
    let (changes, states) = watcher.await.expect("the watcher saw every change in order");
    assert!(changes >= spawns, "{changes} changes for {spawns} spawns");
    assert!(states.values().all(|s| *s == pb::ProcessState::Stopped));
    let _ = d.wait_exit(30 * SECS);
    eprintln!(
        "flapping load: 200 programs for {secs} s, {spawns} spawns, {changes} state changes seen in order, \
         {statuses} status calls, RSS {rss} kB, fds before {fds_before}"
    );
}

/// Memory does not grow with the number of state changes. 20 programs restart as fast as they
/// can; between 8,000 spawns (the event history of 16,384 events is full by then) and 24,000
/// spawns, minderd's RSS stays put. (The health service once kept a name for every state
/// change, about 160 bytes each.)
#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_flat_under_endless_restarts() {
    let d = Daemon::start(
        "[program.flap]\ncommand = \"true\"\nnumprocs = 20\nprocess_name = \"flap_%(process_num)02d\"\n\
         startsecs = 0\nautorestart = true\nstdout_logfile = \"NONE\"\nredirect_stderr = true\n",
    );
    let pid = d.pid();
    let mut c = d.client().await;
    let mut spawns_reach = async |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let list = c.list_processes(pb::ListProcessesRequest::default()).await.expect("status");
            let spawns: u64 = list.into_inner().processes.iter().map(|p| u64::from(p.spawn_count)).sum();
            if spawns >= n {
                return spawns;
            }
            assert!(Instant::now() < deadline, "only {spawns} of {n} spawns");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let early = spawns_reach(8_000).await;
    let rss_early = rss_kib(pid);
    let late = spawns_reach(early + 16_000).await;
    let rss_late = rss_kib(pid);
    eprintln!("RSS {rss_early} kB after {early} spawns, {rss_late} kB after {late}");
    assert!(
        rss_late < rss_early + 1024,
        "minderd grew from {rss_early} kB to {rss_late} kB over {} spawns",
        late - early
    );
}

/// Descriptors come back: after streams end (clients gone) and processes stop, minderd holds
/// exactly what it held before.
#[tokio::test(flavor = "multi_thread")]
async fn no_descriptor_leaks_across_clients_and_spawns() {
    let d = Daemon::start("[program.talk]\ncommand = \"sh -c 'while true; do echo hi; sleep 0.05; done'\"\nstartsecs = 0\nautostart = false\n");
    let pid = d.pid();
    // Let the runtime settle its own descriptors first.
    let _ = d.ctl(&["status"]);
    let before = fds(pid);
    for _ in 0..20 {
        assert_eq!(code(&d.ctl(&["start", "talk"])), 0);
        let mut c = d.client().await;
        let req = pb::TailLogRequest {
            names: vec!["talk".into()],
            channels: vec![],
            start: None,
            follow: true,
            resume: vec![],
        };
        let mut s = c.tail_log(req).await.expect("tail").into_inner();
        let _ = s.message().await;
        // A client that disconnects mid-stream.
        drop(s);
        drop(c);
        assert_eq!(code(&d.ctl(&["stop", "talk"])), 0);
    }
    // `before` may include the connection of the status call just made; never more than it.
    wait_for("the descriptors to come back", 10 * SECS, || fds(pid) <= before);
}

/// Random, malformed and hostile requests: each gets a proper answer (never INTERNAL, never a
/// dropped connection), the daemon stays up, and nothing outside its logs is touched.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clean_answers() {
    let d = Daemon::start("[program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\n[program.other]\ncommand = \"cat\"\nstartsecs = 0\n");
    d.wait_state("web", "RUNNING", 10 * SECS);
    let mut c = d.client().await;
    let huge = "x".repeat(200_000);
    let names: Vec<String> = vec![
        "web".into(),
        "all".into(),
        "web:*".into(),
        "other:other".into(),
        "".into(),
        ":".into(),
        "a:b:c".into(),
        "../../etc/passwd".into(),
        "/etc/passwd".into(),
        "web\0".into(),
        "\u{1b}[31m".into(),
        "\n".into(),
        huge.clone(),
        "ü:*".into(),
        "*".into(),
        "web:".into(),
        "nope:*".into(),
        "..".into(),
    ];
    let signals = ["HUP", "SIGUSR1", "0", "-1", "65", "99999999999", "", "KILLL", "sig", &huge, "15"];
    // A small, seeded generator: the same requests every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut tried = 0;
    for _ in 0..1500 {
        let pick = |r: &mut dyn FnMut(usize) -> usize| names[r(names.len())].clone();
        let result: Result<(), tonic::Status> = match rand(8) {
            0 => c
                .list_processes(pb::ListProcessesRequest {
                    names: vec![pick(&mut rand), pick(&mut rand)],
                    with_tree: false,
                    brief: rand(2) == 0,
                })
                .await
                .map(drop),
            1 => c.get_process(pb::GetProcessRequest { name: pick(&mut rand) }).await.map(drop),
            2 => c
                .start_processes(pb::StartProcessesRequest { names: vec![pick(&mut rand)], no_wait: true })
                .await
                .map(drop),
            3 => c
                .stop_processes(pb::StopProcessesRequest { names: vec![pick(&mut rand)], no_wait: true })
                .await
                .map(drop),
            4 => {
                let signal = signals[rand(signals.len())].to_string();
                c.signal_processes(pb::SignalProcessesRequest { names: vec![pick(&mut rand)], signal })
                    .await
                    .map(drop)
            }
            5 => {
                let offset = [0u64, 1, u64::MAX, 1 << 40, 100][rand(5)];
                let req = pb::TailLogRequest {
                    names: vec![pick(&mut rand)],
                    channels: vec![[0, 1, 2, 3, 77][rand(5)]],
                    start: Some(pb::tail_log_request::Start::Offset(offset)),
                    follow: false,
                    resume: vec![],
                };
                match c.tail_log(req).await {
                    Ok(s) => {
                        let mut s = s.into_inner();
                        let mut r = Ok(());
                        while let Some(m) = s.message().await.transpose() {
                            if let Err(e) = m {
                                r = Err(e);
                                break;
                            }
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            6 => c.clear_logs(pb::ClearLogsRequest { names: vec![pick(&mut rand)] }).await.map(drop),
            _ => c
                .send_stdin(pb::SendStdinRequest { name: pick(&mut rand), data: vec![b'x'; rand(64)] })
                .await
                .map(drop),
        };
        tried += 1;
        if let Err(s) = result {
            assert!(
                matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::OutOfRange
                ),
                "an unclean answer: {s:?}"
            );
        }
    }
    // Still alive and well.
    let list = c.list_processes(pb::ListProcessesRequest::default()).await.expect("status").into_inner();
    assert_eq!(list.processes.len(), 2);
    assert!(!std::path::Path::new("/etc/passwd.1").exists());
    eprintln!("hostile requests: {tried} tried, all answered cleanly");
}

/// A child that never reads its stdin cannot hold a client (or the daemon): the write fails,
/// saying why, and everything else goes on.
#[tokio::test(flavor = "multi_thread")]
async fn stdin_of_a_child_that_never_reads() {
    let d = Daemon::start("[program.deaf]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("deaf", "RUNNING", 10 * SECS);
    let mut c = d.client().await;
    let big = vec![b'x'; 1 << 20];
    let err =
        c.send_stdin(pb::SendStdinRequest { name: "deaf".into(), data: big }).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("deaf is not reading its stdin"), "{}", err.message());
    // The daemon answers meanwhile and afterwards, and the process is untouched.
    assert_eq!(d.state("deaf"), "RUNNING");
    assert_eq!(code(&d.ctl(&["stop", "deaf"])), 0);
}

/// A thousand clients at once, more than the daemon's descriptor limit allows at one time:
/// every one is answered (the listener waits for descriptors instead of spinning or dying).
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_clients() {
    // This test opens 1000 connections itself.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 8192, 8192);
    let d = Daemon::start("[daemon]\nminfds = 256\n[program.s]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("s", "RUNNING", 10 * SECS);
    let uri = format!("unix://{}", d.socket.display());
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let attempt = async {
                    let ch =
                        tonic::transport::Endpoint::from_shared(uri.clone()).expect("uri").connect().await?;
                    let mut c = pb::supervisor_client::SupervisorClient::new(ch);
                    let r = c.list_processes(pb::ListProcessesRequest::default()).await;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                        r.map(|r| r.into_inner().processes.len())?,
                    )
                };
                match attempt.await {
                    Ok(n) => return n,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("a client was never answered: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("client"), 1);
    }
    assert_eq!(d.state("s"), "RUNNING");
}

/// A program that closes its stdout keeps running, and minderd carries on.
#[test]
fn a_child_that_closes_its_stdout() {
    let d = Daemon::start(
        "[program.closer]\ncommand = \"sh -c 'echo before; exec >&-; exec sleep 100'\"\nstartsecs = 0\nstdout_logfile = \"{dir}/closer.log\"\n",
    );
    d.wait_state("closer", "RUNNING", 10 * SECS);
    wait_for("the line written before stdout closed", 10 * SECS, || {
        std::fs::read_to_string(d.path("closer.log")).is_ok_and(|s| s == "before\n")
    });
    assert_eq!(d.state("closer"), "RUNNING");
    assert_eq!(code(&d.ctl(&["restart", "closer"])), 0);
}

/// The log disk fills (a file-size limit on minderd): writes fail and are reported once, the
/// child is never blocked, and minderd stays up.
#[test]
fn a_full_disk_is_reported_and_blocks_nothing() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("m.toml"),
        format!(
            "[program.flood]\ncommand = \"sh -c 'head -c 2000000 /dev/zero; echo done >&2'\"\nstartsecs = 0\nautorestart = false\nstdout_logfile = \"{0}/flood.log\"\nstderr_logfile = \"{0}/flood.err\"\nstdout_logfile_maxbytes = 0\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let sock = dir.path().join("m.sock");
    let mut cmd = std::process::Command::new(crate::harness::bin("minderd"));
    cmd.arg("-c").arg(dir.path().join("m.toml")).arg("--listen").arg(format!("unix://{}", sock.display()));
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // 256 KiB per file, for minderd (and so for the log files it writes).
            let lim = libc::rlimit { rlim_cur: 256 * 1024, rlim_max: 256 * 1024 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("minderd");
    let ctl = |args: &[&str]| crate::harness::ctl_at(&sock, args);
    // The child writes its 2 MB and finishes: it was never blocked by the full log.
    wait_for("the flood to finish", 30 * SECS, || {
        crate::harness::stdout(&ctl(&["status", "flood"])).contains("EXITED")
    });
    let size = std::fs::metadata(dir.path().join("flood.log")).expect("log").len();
    assert_eq!(size, 256 * 1024, "the log stopped at the limit");
    assert_eq!(std::fs::read_to_string(dir.path().join("flood.err")).expect("stderr log"), "done\n");
    assert!(child.try_wait().expect("wait").is_none(), "minderd is still running");
    assert_eq!(code(&ctl(&["version"])), 0);
    crate::harness::sigterm(&child);
    assert!(child.wait().expect("exits").success());
}

/// The log file is deleted while the program runs; SIGUSR2 starts a new one. With its
/// directory gone too, reopening fails, is reported, and nothing else breaks.
#[test]
fn a_deleted_log_is_recreated_on_reopen() {
    let d = Daemon::start_with(
        "[program.t]\ncommand = \"sh -c 'while true; do echo tick; sleep 0.05; done'\"\nstartsecs = 0\nstdout_logfile = \"{dir}/sub/t.log\"\n",
        &[("sub/", "")],
        &[],
    );
    let log = d.path("sub/t.log");
    let usr2 = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGUSR2)
            .expect("usr2")
    };
    wait_for("output", 10 * SECS, || std::fs::metadata(&log).is_ok_and(|m| m.len() > 0));
    std::fs::remove_file(&log).expect("rm");
    usr2();
    wait_for("a new log file", 10 * SECS, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.starts_with("tick"))
    });
    std::fs::remove_dir_all(d.path("sub")).expect("rm -r");
    usr2();
    wait_for("the failure to reopen to be logged", 10 * SECS, || d.log().contains("cannot reopen"));
    assert_eq!(d.state("t"), "RUNNING");
    assert_eq!(code(&d.ctl(&["restart", "t"])), 0, "minderd still answers and restarts it");
}

/// SIGKILL of minderd: its children go down with it instead of living on unsupervised.
#[test]
fn children_die_with_a_killed_daemon() {
    let mut d = Daemon::start("[program.a]\ncommand = \"sleep 100\"\nstartsecs = 0\n[program.b]\ncommand = \"sleep 100\"\nstartsecs = 0\n");
    d.wait_state("a", "RUNNING", 10 * SECS);
    d.wait_state("b", "RUNNING", 10 * SECS);
    let pids: Vec<i32> =
        ["a", "b"].iter().map(|n| d.process(n)["pid"].as_i64().expect("pid") as i32).collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    let _ = d.wait_exit(10 * SECS);
    for p in pids {
        wait_for("the child to die with minderd", 10 * SECS, || !alive(p));
    }
}

/// A TCP address already in use: minderd says so and exits 1.
#[test]
fn a_listen_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("m.toml"), "").expect("write");
    let out = std::process::Command::new(crate::harness::bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .arg("--listen")
        .arg(format!("tcp://{addr}"))
        .output()
        .expect("runs");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&format!("cannot listen at tcp://{addr}: Address already in use")),
        "{}",
        stderr(&out)
    );
}

/// Out-of-range configuration values are errors, not wrap-arounds or panics.
#[test]
fn out_of_range_values_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("m.toml");
    std::fs::write(
        &conf,
        "[program.p]\ncommand = \"true\"\nnumprocs = 10000000000\nprocess_name = \"%(process_num)d\"\nstartsecs = 1e308\nstopwaitsecs = -1\npriority = 99999999999\nexitcodes = [256]\numask = \"99\"\n",
    )
    .expect("write");
    let out = crate::harness::check_config(&conf);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    for key in ["numprocs", "stopwaitsecs", "priority", "exitcodes", "umask"] {
        assert!(err.contains(&format!("program.p.{key}")), "{key} not refused: {err}");
    }
}
