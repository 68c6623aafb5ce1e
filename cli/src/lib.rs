//! `minder`: controls minderd over gRPC, as supervisorctl controls supervisord.
//!
//! Each command is one or a few RPCs. Output is a table (status), supervisorctl's own lines
//! (start, stop, …), or JSON with `--json`; exit codes are supervisorctl's.

mod changes;
pub mod client;
mod output;
mod streams;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use minder::pb;

use crate::client::ConnectError;

/// The exit codes, as supervisorctl 4.x uses them.
pub mod exit {
    pub const OK: u8 = 0;
    /// A generic error.
    pub const GENERIC: u8 = 1;
    /// Bad arguments (also: no such group for start).
    pub const INVALID_ARGS: u8 = 2;
    /// status: a listed process is not running (STOPPED, EXITED, FATAL or UNKNOWN).
    pub const STATUS_NOT_RUNNING: u8 = 3;
    /// status: a name is unknown, or the daemon cannot be reached; other commands: the daemon
    /// refused the connection.
    pub const UNKNOWN: u8 = 4;
    /// A process is not running after the command: a spawn error, an abnormal termination;
    /// or the daemon's socket does not exist.
    pub const NOT_RUNNING: u8 = 7;
}

const EXIT_CODES: &str = "\
Exit codes (as supervisorctl's):
  0  success
  1  an error (a bad name for stop, a failed action, ...)
  2  bad arguments; for start, no such group
  3  status: a listed process is STOPPED, EXITED, FATAL or UNKNOWN
  4  status: a name is unknown or minderd cannot be reached;
     other commands: minderd refused the connection
  7  a process did not start (spawn error, abnormal termination) or is not running;
     or minderd's socket does not exist

Names: NAME, GROUP:NAME, GROUP:* (every process of a group), or all.";

/// Control minderd, the minder process supervisor.
#[derive(Debug, Parser)]
#[command(name = "minder", version, max_term_width = 100, after_help = EXIT_CODES)]
pub struct Cli {
    /// Read the daemon's address from this configuration file.
    #[arg(short = 'c', long = "configuration", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The daemon's address: unix:///path or tcp://host:port [env: MINDER_SERVER].
    #[arg(short = 's', long = "serverurl", value_name = "URL", global = true)]
    pub server: Option<String>,

    /// Print machine-readable JSON instead of tables and lines.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub connect: client::ConnectOptions,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the state of processes (all of them with no names).
    Status {
        /// Processes to show: NAME, GROUP:NAME, GROUP:* or all.
        names: Vec<String>,
    },
    /// Start processes; waits until each is RUNNING (up for startsecs) or has failed.
    Start {
        /// Answer as soon as each process has been spawned.
        #[arg(long)]
        no_wait: bool,
        /// Processes to start: NAME, GROUP:NAME, GROUP:* or all.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop processes; waits until each has exited.
    Stop {
        /// Answer as soon as each stop signal has been sent.
        #[arg(long)]
        no_wait: bool,
        /// Processes to stop: NAME, GROUP:NAME, GROUP:* or all.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop, then start, processes (the configuration is not re-read).
    Restart {
        /// Answer as soon as each process has been spawned again.
        #[arg(long)]
        no_wait: bool,
        /// Processes to restart: NAME, GROUP:NAME, GROUP:* or all.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Send a signal to processes (their state does not change).
    Signal {
        /// The signal: a name (HUP, SIGUSR1) or a number.
        signal: String,
        /// Processes to signal: NAME, GROUP:NAME, GROUP:* or all.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print the pid of processes, or of minderd itself with no names.
    Pid {
        /// Processes: NAME, GROUP:NAME, or all.
        names: Vec<String>,
    },
    /// Print what processes wrote (the last 1600 bytes of stdout by default); -f follows.
    /// supervisorctl's `tail -f NAME` and `tail -1600 NAME stderr` work too.
    Tail {
        /// Keep printing new output until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Start with the last LINES lines.
        #[arg(short = 'n', long = "lines", value_name = "LINES", conflicts_with = "bytes")]
        lines: Option<u64>,
        /// Start with the last BYTES bytes.
        #[arg(short = 'c', long = "bytes", value_name = "BYTES")]
        bytes: Option<u64>,
        /// Processes (NAME, GROUP:NAME, GROUP:*, all), then optionally stdout or stderr.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print minderd's own log; -f follows.
    Maintail {
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(short = 'n', long = "lines", value_name = "LINES", conflicts_with = "bytes")]
        lines: Option<u64>,
        #[arg(short = 'c', long = "bytes", value_name = "BYTES")]
        bytes: Option<u64>,
    },
    /// Empty the log files of processes (their rotated backups are kept).
    Clear {
        /// Processes: NAME, GROUP:NAME, GROUP:* or all.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Attach to a process: follow its output, and send typed lines to its stdin. Ctrl-C
    /// detaches without stopping it.
    Fg {
        /// The process: NAME or GROUP:NAME.
        name: String,
    },
    /// Print state changes as they happen, until interrupted.
    Events {
        /// Print every process's current state first.
        #[arg(long)]
        snapshot: bool,
    },
    /// Read the configuration file again and show what differs from what runs (nothing
    /// starts or stops).
    Reread,
    /// Read the configuration and apply it: add new processes, remove old ones, and restart
    /// only the processes whose settings changed.
    Update {
        /// Show what would be done, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// Groups to update (all of them with none, or "all").
        groups: Vec<String>,
    },
    /// Add groups that are in the configuration last read but not running.
    Add {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Remove groups whose processes are all stopped.
    Remove {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// List the configured processes and whether each is in use.
    Avail,
    /// Read the configuration and apply all of it, as update does.
    Reload {
        /// Stop everything and start it afresh, as supervisord's reload does.
        #[arg(long)]
        restart_all: bool,
    },
    /// Work with configuration files (no daemon needed).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Stop every process and minderd itself.
    Shutdown,
    /// Print minderd's version.
    Version,
}

/// supervisorctl's `tail -1600 NAME`: a bare `-N` after `tail` or `maintail` means the last N
/// bytes.
fn supervisorctl_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut in_tail = false;
    args.map(|a| {
        let s = a.to_string_lossy();
        if s == "tail" || s == "maintail" {
            in_tail = true;
        } else if in_tail && s.len() > 1 && s.starts_with('-') && s[1..].bytes().all(|b| b.is_ascii_digit()) {
            return format!("--bytes={}", &s[1..]).into();
        }
        a
    })
    .collect()
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the native TOML equivalent of a configuration (a supervisord.conf, say).
    Convert {
        /// The configuration to convert.
        file: PathBuf,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    // `minder status | head`: a closed pipe ends minder quietly, as it ends other tools.
    // SAFETY: restoring SIGPIPE's default disposition has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse_from(supervisorctl_spellings(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minder: cannot start: {e}");
            return ExitCode::from(exit::GENERIC);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

/// Runs one command; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    let server = cli.server.clone().or_else(|| std::env::var("MINDER_SERVER").ok().filter(|s| !s.is_empty()));
    let unreachable = |e: &ConnectError, status: bool| -> u8 {
        eprintln!("minder: {e}");
        match e {
            _ if status => exit::UNKNOWN,
            ConnectError::Refused(_) => exit::UNKNOWN,
            ConnectError::NoSocket(_) => exit::NOT_RUNNING,
            ConnectError::BadAddress(_) => exit::INVALID_ARGS,
            _ => exit::GENERIC,
        }
    };
    if let Command::Config(ConfigCommand::Convert { file }) = &cli.command {
        return changes::convert(file);
    }
    let is_status = matches!(cli.command, Command::Status { .. });
    let target = match client::resolve_target(server.as_deref(), cli.config.as_deref()) {
        Ok(a) => a,
        Err(e) => return unreachable(&e, is_status),
    };
    let mut client = match client::connect_to(&target, &cli.connect).await {
        Ok(c) => c,
        Err(e) => return unreachable(&e, is_status),
    };
    let json = cli.json;
    let result = match cli.command {
        Command::Status { names } => status(&mut client, names, json).await,
        Command::Start { no_wait, names } => {
            let req = pb::StartProcessesRequest { names, no_wait };
            act(client.start_processes(req).await, json, Verb::Start)
        }
        Command::Stop { no_wait, names } => {
            let req = pb::StopProcessesRequest { names, no_wait };
            act(client.stop_processes(req).await, json, Verb::Stop)
        }
        Command::Restart { no_wait, names } => {
            let req = pb::RestartProcessesRequest { names, no_wait };
            act(client.restart_processes(req).await, json, Verb::Restart)
        }
        Command::Signal { signal, names } => {
            let req = pb::SignalProcessesRequest { names, signal };
            act(client.signal_processes(req).await, json, Verb::Signal)
        }
        Command::Pid { names } => pid(&mut client, names, json).await,
        Command::Tail { follow, lines, bytes, names } => {
            streams::tail(&mut client, names, follow, from(lines, bytes), json).await
        }
        Command::Maintail { follow, lines, bytes } => {
            streams::maintail(&mut client, follow, from(lines, bytes), json).await
        }
        Command::Clear { names } => {
            act(client.clear_logs(pb::ClearLogsRequest { names }).await, json, Verb::Clear)
        }
        Command::Fg { name } => streams::fg(&mut client, name).await,
        Command::Events { snapshot } => streams::events(&mut client, snapshot, json).await,
        Command::Reread => changes::reread(&mut client, json).await,
        Command::Update { dry_run, groups } => changes::update(&mut client, groups, dry_run, json).await,
        Command::Add { groups } => changes::add_remove(&mut client, groups, true, json).await,
        Command::Remove { groups } => changes::add_remove(&mut client, groups, false, json).await,
        Command::Avail => changes::avail(&mut client, json).await,
        Command::Reload { restart_all } => changes::reload(&mut client, restart_all, json).await,
        Command::Config(_) => unreachable!("handled before connecting"),
        Command::Shutdown => match client.shutdown(pb::ShutdownRequest {}).await {
            Ok(_) => {
                output::line(json, "Shut down", serde_json::json!({"result": "shutting down"}));
                Ok(exit::OK)
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                println!("ERROR: already shutting down");
                Ok(exit::OK)
            }
            Err(s) => Err(s),
        },
        Command::Version => match client.get_daemon_info(pb::GetDaemonInfoRequest {}).await {
            Ok(info) => {
                let info = info.into_inner();
                output::line(json, &info.version, serde_json::json!({"version": info.version}));
                Ok(exit::OK)
            }
            Err(s) => Err(s),
        },
    };
    match result {
        Ok(code) => code,
        Err(status) => {
            eprintln!("minder: {}", status.message());
            match status.code() {
                tonic::Code::InvalidArgument => exit::INVALID_ARGS,
                tonic::Code::Unavailable if status.message().contains("connect") => exit::UNKNOWN,
                _ => exit::GENERIC,
            }
        }
    }
}

async fn status(
    client: &mut crate::client::Client,
    names: Vec<String>,
    json: bool,
) -> Result<u8, tonic::Status> {
    let resp = client.list_processes(pb::ListProcessesRequest { names }).await?.into_inner();
    let mut code = exit::OK;
    for bad in &resp.unmatched {
        if !json {
            match bad.split_once(':') {
                Some((group, "" | "*")) => println!("{group}: ERROR (no such group)"),
                _ => println!("{bad}: ERROR (no such process)"),
            }
        }
        code = exit::UNKNOWN;
    }
    if json {
        output::print_json(&serde_json::json!({
            "processes": resp.processes.iter().map(output::process_json).collect::<Vec<_>>(),
            "unmatched": resp.unmatched,
        }));
    } else {
        print!("{}", output::status_table(&resp.processes));
    }
    // As supervisorctl: a stopped process wins over an unknown name.
    if resp.processes.iter().any(|p| output::is_stopped(p.state())) {
        code = exit::STATUS_NOT_RUNNING;
    }
    Ok(code)
}

fn from(lines: Option<u64>, bytes: Option<u64>) -> streams::From {
    match (lines, bytes) {
        (Some(n), _) => streams::From::Lines(n),
        (None, Some(n)) => streams::From::Bytes(n),
        (None, None) => streams::From::Default,
    }
}

/// The commands that act on processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Start,
    Stop,
    Restart,
    Signal,
    Clear,
}

fn act(
    resp: Result<tonic::Response<pb::ProcessActionResponse>, tonic::Status>,
    json: bool,
    verb: Verb,
) -> Result<u8, tonic::Status> {
    let results = resp?.into_inner().results;
    let mut code = exit::OK;
    for r in &results {
        if !json {
            println!("{}", output::result_line(r));
        }
        if let Some(c) = exit_for(verb, r) {
            code = c;
        }
    }
    if json {
        output::print_json(&serde_json::json!({
            "results": results.iter().map(output::result_json).collect::<Vec<_>>(),
        }));
    }
    Ok(code)
}

/// The exit code one result sets, as supervisorctl's `set_exitstatus_from_xmlrpc_fault` and
/// its special cases decide; `None` leaves it as it was.
fn exit_for(verb: Verb, r: &pb::ProcessResult) -> Option<u8> {
    use pb::ResultCode as C;
    let code = r.code();
    let group_selector = r.process.is_none() && (r.full_name.ends_with(":*") || r.full_name.ends_with(':'));
    let ignored = match verb {
        Verb::Start => code == C::AlreadyStarted,
        Verb::Stop => code == C::NotRunning,
        Verb::Restart => code == C::AlreadyStarted || code == C::NotRunning,
        Verb::Signal | Verb::Clear => false,
    };
    match code {
        C::Success => None,
        _ if ignored => None,
        C::BadName if group_selector && verb == Verb::Start => Some(exit::INVALID_ARGS),
        C::SpawnError | C::AbnormalTermination | C::NotRunning => Some(exit::NOT_RUNNING),
        _ => Some(exit::GENERIC),
    }
}

async fn pid(
    client: &mut crate::client::Client,
    names: Vec<String>,
    json: bool,
) -> Result<u8, tonic::Status> {
    if names.is_empty() {
        let info = client.get_daemon_info(pb::GetDaemonInfoRequest {}).await?.into_inner();
        output::line(json, &info.pid.to_string(), serde_json::json!({"pid": info.pid}));
        return Ok(exit::OK);
    }
    let mut code = exit::OK;
    let mut found = Vec::new();
    if names.iter().any(|n| n == "all") {
        let all = client.list_processes(pb::ListProcessesRequest { names: vec![] }).await?.into_inner();
        found = all.processes;
    } else {
        for name in &names {
            match client.get_process(pb::GetProcessRequest { name: name.clone() }).await {
                Ok(p) => {
                    let p = p.into_inner();
                    if p.pid == 0 {
                        code = exit::NOT_RUNNING;
                    }
                    found.push(p);
                }
                Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument) => {
                    if !json {
                        println!("No such process {name}");
                    }
                    code = exit::GENERIC;
                }
                Err(s) => return Err(s),
            }
        }
    }
    if json {
        let pids: Vec<_> =
            found.iter().map(|p| serde_json::json!({"name": p.full_name, "pid": p.pid})).collect();
        output::print_json(&serde_json::json!({ "processes": pids }));
    } else {
        for p in &found {
            println!("{}", p.pid);
        }
    }
    Ok(code)
}
