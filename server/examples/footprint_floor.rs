//! The per-program floor of a supervisor's memory on tokio (issue 17): what one idle program
//! must cost at the least, to compare minderd's resident size per program with.
//!
//!     footprint_floor COUNT DIR
//!
//! For each of COUNT programs it holds what minderd must hold for an idle one: one task that
//! waits for the program (its exit, its stdout and its stderr, registered with the reactor),
//! the three pipes minderd keeps an end of, and a log channel per output (an open file in DIR,
//! behind a lock, with its path). No child is started: children are not in minderd's memory.
//! It prints `COUNT <resident KiB before> <resident KiB after>` once all tasks are waiting.
//!
//! Built with `cargo build --release --example footprint_floor -p minderd`; run by
//! `bench/run.py footprint`.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe::Receiver;
use tokio::sync::oneshot;

/// A log channel reduced to what it cannot do without: its file and its path.
#[allow(dead_code)] // held, never read: the point is what it costs
struct Channel {
    path: PathBuf,
    file: Mutex<File>,
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .expect("a pipe (raise ulimit -n)");
    (r, w)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|n| n.parse().ok()).expect("usage: footprint_floor COUNT DIR");
    let dir = PathBuf::from(args.next().expect("usage: footprint_floor COUNT DIR"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let before = resident_kib();
        // What the children would hold (their pipe ends) stays here, so no pipe reads EOF.
        let mut theirs = Vec::with_capacity(count * 3);
        let mut exits = Vec::with_capacity(count);
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..count {
            let (stdin_child, stdin) = pipe();
            let (stdout, stdout_child) = pipe();
            let (stderr, stderr_child) = pipe();
            theirs.extend([stdin_child, stdout_child, stderr_child]);
            let channel = |stream: &str| {
                let path = dir.join(format!("p_{i:05}-{stream}.log"));
                let file = File::options().create(true).append(true).open(&path).expect("a log file");
                Arc::new(Channel { path, file: Mutex::new(file) })
            };
            let logs = (channel("stdout"), channel("stderr"));
            let (exit_tx, exit) = oneshot::channel::<i32>();
            exits.push(exit_tx);
            let waiting = Arc::clone(&waiting);
            tokio::spawn(async move {
                let _keep = (stdin, logs);
                let out = Receiver::from_owned_fd(stdout).expect("registered");
                let err = Receiver::from_owned_fd(stderr).expect("registered");
                waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = exit => {}
                    _ = out.readable() => {}
                    _ = err.readable() => {}
                }
            });
        }
        // Until every task has registered its pipes and reached its wait.
        while waiting.load(std::sync::atomic::Ordering::Relaxed) < count {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        println!("{count} {before} {}", resident_kib());
        drop((theirs, exits));
    });
}
