//! The commands that stream: `tail`, `maintail`, `fg`, `events`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use base64::Engine as _;

use minder::pb;
use serde_json::json;

use crate::exit;
use crate::output;

/// Where a tail starts.
#[derive(Debug, Clone, Copy)]
pub enum From {
    /// supervisorctl's default: the last 1600 bytes.
    Default,
    Bytes(u64),
    Lines(u64),
}

fn tail_start(from: From) -> Option<pb::tail_log_request::Start> {
    match from {
        From::Default => None,
        From::Bytes(n) => Some(pb::tail_log_request::Start::LastBytes(n)),
        From::Lines(n) => Some(pb::tail_log_request::Start::LastLines(n)),
    }
}

/// Splits `tail`'s trailing words into names and an optional channel (`stdout`/`stderr`), as
/// supervisorctl reads `tail NAME stderr`.
pub fn names_and_channel(mut words: Vec<String>) -> (Vec<String>, Vec<pb::LogChannel>) {
    let channel = match words.last().map(String::as_str) {
        Some("stdout") if words.len() > 1 => Some(pb::LogChannel::Stdout),
        Some("stderr") if words.len() > 1 => Some(pb::LogChannel::Stderr),
        _ => None,
    };
    if channel.is_some() {
        words.pop();
    }
    (words, channel.into_iter().collect())
}

/// Prints chunks as they come: raw for one source; with several, whole lines prefixed by
/// their process (and channel), so they interleave readably.
struct Printer {
    prefixed: bool,
    colour: bool,
    /// Partial lines, per source, waiting for their end.
    partial: HashMap<(String, i32), Vec<u8>>,
}

impl Printer {
    fn label(process: &str, channel: i32) -> String {
        if channel == pb::LogChannel::Stderr as i32 {
            format!("{process} (stderr)")
        } else {
            process.to_string()
        }
    }

    fn print(&mut self, out: &mut impl Write, chunk: &pb::LogChunk) -> std::io::Result<()> {
        if chunk.skipped > 0 {
            let what = if chunk.process.is_empty() {
                "minderd's log".to_string()
            } else {
                Self::label(&chunk.process, chunk.channel)
            };
            eprintln!(
                "minder: [{} bytes of {what} were rotated away before they could be read]",
                chunk.skipped
            );
        }
        if !self.prefixed {
            out.write_all(&chunk.data)?;
            return out.flush();
        }
        let label = Self::label(&chunk.process, chunk.channel);
        let key = (chunk.process.clone(), chunk.channel);
        let buf = self.partial.entry(key).or_default();
        buf.extend_from_slice(&chunk.data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let prefix = format!("{label} | ");
            let prefix =
                if self.colour { format!("\x1b[{}m{prefix}\x1b[0m", colour_for(&label)) } else { prefix };
            out.write_all(prefix.as_bytes())?;
            out.write_all(&line)?;
        }
        out.flush()
    }

    /// Prints what is left of unfinished lines when the stream ends.
    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        for ((process, channel), rest) in self.partial.drain() {
            if !rest.is_empty() {
                let label = Self::label(&process, channel);
                write!(out, "{label} | ")?;
                out.write_all(&rest)?;
                writeln!(out)?;
            }
        }
        out.flush()
    }
}

/// A stable colour per name, so each process keeps its colour.
fn colour_for(name: &str) -> u8 {
    let palette = [36, 32, 33, 35, 34, 96, 92, 93, 95, 94];
    let h = name.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    palette[h % palette.len()]
}

/// How long a follow mode (`tail -f`, `events`) keeps trying to reconnect to a daemon that
/// went away (an upgrade cuts streams for a moment; so does a restart).
const RECONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Whether a follow stream that ended with `s` is worth resuming: the connection went, rather
/// than the daemon refusing the request.
fn resumable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
    )
}

/// Streams `resp` to standard output until it ends (or forever, when following).
async fn print_stream(
    resp: Result<tonic::Response<tonic::Streaming<pb::LogChunk>>, tonic::Status>,
    prefixed: bool,
    json: bool,
) -> Result<u8, tonic::Status> {
    let mut printer = Printer { prefixed, colour: output::colour(), partial: HashMap::new() };
    let mut seen = BTreeMap::new();
    let done = print_chunks(resp?, &mut printer, json, &mut seen).await;
    let _ = printer.finish(&mut std::io::stdout().lock());
    done
}

/// Prints the chunks of `resp` until it ends, noting in `seen` where each (process, channel)
/// got to: the offset to resume from.
async fn print_chunks(
    resp: tonic::Response<tonic::Streaming<pb::LogChunk>>,
    printer: &mut Printer,
    json: bool,
    seen: &mut BTreeMap<(String, i32), u64>,
) -> Result<u8, tonic::Status> {
    // The daemon's word on what it is showing (e.g. `tail -n` lines that start too far back).
    if let Some(notice) = resp.metadata().get("minder-notice").and_then(|v| v.to_str().ok()) {
        eprintln!("minder: {notice}");
    }
    let mut stream = resp.into_inner();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(chunk) = stream.message().await? {
        seen.insert((chunk.process.clone(), chunk.channel), chunk.offset + chunk.data.len() as u64);
        let written = if json {
            let v = json!({
                "process": chunk.process,
                "channel": match pb::LogChannel::try_from(chunk.channel) {
                    Ok(pb::LogChannel::Stderr) => "stderr",
                    Ok(pb::LogChannel::Daemon) => "daemon",
                    _ => "stdout",
                },
                "offset": chunk.offset,
                "skipped": chunk.skipped,
                // Text for people (undecodable bytes become U+FFFD), and the exact bytes.
                "data": String::from_utf8_lossy(&chunk.data),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&chunk.data),
            });
            writeln!(out, "{v}").and_then(|()| out.flush())
        } else {
            printer.print(&mut out, &chunk)
        };
        if written.is_err() {
            // Standard output closed (e.g. `| head`): stop quietly.
            return Ok(exit::OK);
        }
    }
    Ok(exit::OK)
}

pub async fn tail(
    client: &mut crate::client::Client,
    words: Vec<String>,
    follow: bool,
    from: From,
    json: bool,
) -> Result<u8, tonic::Status> {
    let (names, channels) = names_and_channel(words);
    // With no channel named, stdout, as supervisorctl's tail and the help say — for several
    // processes too (the daemon leaves out those whose stdout is not captured).
    let channels = if channels.is_empty() { vec![pb::LogChannel::Stdout] } else { channels };
    let prefixed =
        names.len() > 1 || names.iter().any(|n| n.ends_with('*') || n.ends_with(':') || n == "all");
    let mut req = pb::TailLogRequest {
        names,
        channels: channels.into_iter().map(|c| c as i32).collect(),
        start: tail_start(from),
        follow,
        resume: vec![],
    };
    if !follow {
        return print_stream(client.tail_log(req).await, prefixed, json).await;
    }
    // Following: when the stream is cut (minderd upgraded or restarted), connect again and go
    // on from the offsets reached, so nothing is shown twice or skipped.
    let mut printer = Printer { prefixed, colour: output::colour(), partial: HashMap::new() };
    let mut seen = BTreeMap::new();
    let mut lost: Option<tokio::time::Instant> = None;
    loop {
        let result = match client.tail_log(req.clone()).await {
            Ok(resp) => {
                lost = None;
                print_chunks(resp, &mut printer, json, &mut seen).await
            }
            Err(s) => Err(s),
        };
        match result {
            Err(s) if resumable(&s) && lost.is_none_or(|t| t.elapsed() < RECONNECT_PATIENCE) => {
                lost.get_or_insert_with(tokio::time::Instant::now);
                tokio::time::sleep(Duration::from_millis(100)).await;
                req.resume = seen
                    .iter()
                    .map(|((process, channel), offset)| pb::ResumePoint {
                        process: process.clone(),
                        channel: *channel,
                        offset: *offset,
                    })
                    .collect();
            }
            other => {
                let _ = printer.finish(&mut std::io::stdout().lock());
                return other;
            }
        }
    }
}

pub async fn maintail(
    client: &mut crate::client::Client,
    follow: bool,
    from: From,
    json: bool,
) -> Result<u8, tonic::Status> {
    let start = match from {
        From::Default => None,
        From::Bytes(n) => Some(pb::tail_daemon_log_request::Start::LastBytes(n)),
        From::Lines(n) => Some(pb::tail_daemon_log_request::Start::LastLines(n)),
    };
    let req = pb::TailDaemonLogRequest { start, follow };
    print_stream(client.tail_daemon_log(req).await, false, json).await
}

/// `fg`: follow a process's output and send what is typed to its stdin; Ctrl-C (or end of
/// input) detaches without stopping it.
pub async fn fg(client: &mut crate::client::Client, name: String) -> Result<u8, tonic::Status> {
    let info = client.get_process(pb::GetProcessRequest { name: name.clone() }).await?.into_inner();
    if info.state() != pb::ProcessState::Running {
        outln!("Error: process not running");
        return Ok(exit::GENERIC);
    }
    let req = pb::TailLogRequest {
        names: vec![name.clone()],
        channels: vec![],
        start: Some(pb::tail_log_request::Start::LastBytes(0)),
        follow: true,
        resume: vec![],
    };
    // Once the daemon has answered, the stream starts at the end of the log as it is now: what
    // the process writes from here on is shown. Only then is the user asked to type.
    let stream = client.tail_log(req).await?;
    // On stderr, so that standard output is only the process's.
    eprintln!("==> Press Ctrl-C to exit <==");
    let output = print_stream(Ok(stream), false, false);
    let mut typed = client.clone();
    let input = async move {
        let Some(mut stdin) = StdinReader::start() else {
            return exit::OK;
        };
        while let Some(data) = stdin.next().await {
            if let Err(s) = typed.send_stdin(pb::SendStdinRequest { name: name.clone(), data }).await {
                eprintln!("minder: {}", s.message());
                return exit::GENERIC;
            }
        }
        exit::OK
    };
    tokio::select! {
        r = output => r,
        code = input => Ok(code),
        _ = tokio::signal::ctrl_c() => Ok(exit::OK),
    }
}

/// Standard input for `fg`, read on a thread of its own as it comes (a line at a time from a
/// terminal). Unlike tokio's stdin, it stops as soon as it is dropped, with no read left
/// pending: in the shell, such a read would swallow the next line typed at the prompt.
struct StdinReader {
    data: tokio::sync::mpsc::Receiver<Vec<u8>>,
    /// Dropping it wakes the thread (its other end polls as hung up), which then ends.
    _stop: std::os::fd::OwnedFd,
}

impl StdinReader {
    fn start() -> Option<StdinReader> {
        let (stop_rx, stop_tx) = match nix::unistd::pipe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("minder: cannot read standard input: {e}");
                return None;
            }
        };
        let (tx, data) = tokio::sync::mpsc::channel(16);
        std::thread::spawn(move || read_stdin(&stop_rx, &tx));
        Some(StdinReader { data, _stop: stop_tx })
    }

    /// The next bytes typed; `None` at end of input.
    async fn next(&mut self) -> Option<Vec<u8>> {
        self.data.recv().await
    }
}

fn read_stdin(stop: &std::os::fd::OwnedFd, tx: &tokio::sync::mpsc::Sender<Vec<u8>>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut buf = vec![0u8; 4096];
    loop {
        let mut fds =
            [PollFd::new(stdin.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].any() != Some(false) {
            return;
        }
        if fds[0].any() == Some(false) {
            continue;
        }
        // Straight from the descriptor, past std's buffer: nothing is read ahead and kept.
        match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

/// `events`: a live feed of state changes (and, with `snapshot`, the states first).
pub async fn events(
    client: &mut crate::client::Client,
    snapshot: bool,
    with: Vec<String>,
    json: bool,
) -> Result<u8, tonic::Status> {
    // When the stream is cut (minderd upgraded or restarted), connect again and resume after
    // the last event seen (a restarted daemon, a new instance, sends a snapshot instead).
    let (mut since_seq, mut instance) = (0, String::new());
    let mut lost: Option<tokio::time::Instant> = None;
    loop {
        let req =
            pb::WatchEventsRequest { since_seq, instance: instance.clone(), supervisor_events: with.clone() };
        let result = match client.watch_events(req).await {
            Ok(resp) => {
                lost = None;
                print_events(resp.into_inner(), snapshot, json, &mut since_seq, &mut instance).await
            }
            Err(s) => Err(s),
        };
        match result {
            Err(s) if resumable(&s) && lost.is_none_or(|t| t.elapsed() < RECONNECT_PATIENCE) => {
                lost.get_or_insert_with(tokio::time::Instant::now);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Prints events until the stream ends, noting the last sequence number and instance seen.
async fn print_events(
    mut stream: tonic::Streaming<pb::Event>,
    snapshot: bool,
    json: bool,
    since_seq: &mut u64,
    instance: &mut String,
) -> Result<u8, tonic::Status> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(e) = stream.message().await? {
        *since_seq = (*since_seq).max(e.seq);
        if !e.instance.is_empty() {
            instance.clone_from(&e.instance);
        }
        let time = e.time.as_ref().map(output::local_time).unwrap_or_default();
        let line = match &e.kind {
            Some(pb::event::Kind::Snapshot(s)) => {
                if !snapshot {
                    continue;
                }
                if json {
                    json!({
                        "seq": e.seq, "time": time, "instance": e.instance, "type": "snapshot",
                        "processes": s.processes.iter().map(output::process_json).collect::<Vec<_>>(),
                    })
                    .to_string()
                } else {
                    s.processes
                        .iter()
                        .map(|p| format!("{time} {} {}", p.full_name, output::state_name(p.state())))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            }
            Some(pb::event::Kind::Process(c)) => {
                let from = output::state_name(c.from());
                let to = output::state_name(c.to());
                let detail = match (&c.exit_status, c.spawn_error.is_empty()) {
                    (Some(x), _) => format!(
                        " ({}; {})",
                        x.description,
                        if x.expected { "expected" } else { "not expected" }
                    ),
                    (None, false) => format!(" ({})", c.spawn_error),
                    _ => String::new(),
                };
                if json {
                    json!({
                        "seq": e.seq, "time": time, "type": "process", "name": c.full_name,
                        "group": c.group, "from": from, "to": to,
                        "pid": if c.pid == 0 { serde_json::Value::Null } else { json!(c.pid) },
                        "exit_status": c.exit_status.as_ref().map(|x| json!({"description": x.description, "expected": x.expected})),
                        "spawn_error": c.spawn_error,
                    })
                    .to_string()
                } else {
                    format!("{time} {} {from} -> {to}{detail}", c.full_name)
                }
            }
            Some(pb::event::Kind::Daemon(d)) => {
                let name = |s: i32| match pb::DaemonState::try_from(s) {
                    Ok(pb::DaemonState::Running) => "RUNNING",
                    Ok(pb::DaemonState::Restarting) => "RESTARTING",
                    Ok(pb::DaemonState::Shutdown) => "SHUTDOWN",
                    _ => "UNKNOWN",
                };
                if json {
                    json!({"seq": e.seq, "time": time, "type": "daemon", "from": name(d.from), "to": name(d.to)}).to_string()
                } else {
                    format!("{time} minderd {} -> {}", name(d.from), name(d.to))
                }
            }
            Some(pb::event::Kind::Group(g)) => {
                let what = if g.added { "added" } else { "removed" };
                if json {
                    json!({"seq": e.seq, "time": time, "type": "group", "name": g.name, "change": what})
                        .to_string()
                } else {
                    format!("{time} group {} {what}", g.name)
                }
            }
            Some(pb::event::Kind::Supervisor(ev)) => {
                if ev.dropped_before > 0 {
                    eprintln!("minder: fell behind; {} Supervisor events were dropped", ev.dropped_before);
                }
                if json {
                    json!({"seq": e.seq, "time": time, "type": "supervisor", "name": ev.name, "payload": ev.payload})
                        .to_string()
                } else {
                    // The payload as a listener gets it (output may span lines).
                    format!("{time} {} {}", ev.name, ev.payload.trim_end_matches('\n'))
                }
            }
            Some(pb::event::Kind::Lagged(l)) => {
                eprintln!("minder: fell behind; {} events were dropped", l.missed);
                continue;
            }
            None => continue,
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(exit::OK);
        }
    }
    Ok(exit::OK)
}
