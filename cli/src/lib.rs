//! `minder`: controls minderd over gRPC, as supervisorctl controls supervisord.
//!
//! Each command is one or a few RPCs. Output is a table (status), supervisorctl's own lines
//! (start, stop, …), or JSON with `--json`; exit codes are supervisorctl's. With no command,
//! `shell` reads commands line by line and runs each exactly as the command line would
//! (`execute`); `generate` writes completion scripts and man pages from the same definitions.

/// `println!` for command output. When standard output has gone (`minder status | head`),
/// minder ends quietly with 141 (128 + SIGPIPE), as other tools do, instead of panicking.
/// (SIGPIPE itself stays ignored: a server closing a socket must be an error, not a death.)
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// `print!` for command output, as [`outln`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        if write!(stdout, $($arg)*).and_then(|()| stdout.flush()).is_err() {
            std::process::exit(141);
        }
    }};
}

mod changes;
pub mod client;
mod complete;
mod generate;
mod output;
mod shell;
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

/// Control minderd, the minder process supervisor; with no command, an interactive shell.
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

    /// The command to run; with none, an interactive shell reads commands line by line.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the state of processes (all of them with no names).
    Status {
        /// How to print: table (minder's), or supervisorctl (its exact lines, for scripts
        /// that parse them; always so when minder is run as `supervisorctl`).
        #[arg(long, value_name = "FORMAT", value_enum)]
        format: Option<StatusFormat>,
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
    /// Rotate the log files of processes now, whatever their size
    Rotate {
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
        /// Also print these Supervisor events, as an event listener gets them:
        /// PROCESS_LOG, PROCESS_COMMUNICATION, TICK (or one of their types, such as TICK_5),
        /// REMOTE_COMMUNICATION, or EVENT for all of them (comma-separated or repeated).
        #[arg(long = "with", value_name = "TYPES", value_delimiter = ',')]
        with: Vec<String>,
    },
    /// Send a REMOTE_COMMUNICATION event to the event listeners that subscribe to it
    /// (supervisord's sendRemoteCommEvent).
    SendEvent {
        /// The event's type (its payload's `type:`).
        r#type: String,
        /// The event's data.
        data: String,
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
    /// Replace minderd with the binary now at its path, keeping every process running.
    #[command(
        long_about = "Replace minderd with the binary now at the path it was started from, in place: \
        the same pid, every process still running (no output lost), the same sockets. The new \
        binary is tried first; if it cannot take over, or the configuration has changes not yet \
        applied (run `minder update` first), minderd carries on unchanged and this says why. \
        Waits until the new binary answers. Sending minderd SIGUSR1 does the same."
    )]
    Upgrade,
    /// Print minderd's version.
    Version,
    /// Print a completion script for a shell (commands and options; not process names).
    #[command(
        after_help = "For example: minder completions bash > /usr/share/bash-completion/completions/minder"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (minder.1, minder-status.1, ...) into DIR; for packagers.
    #[command(hide = true)]
    Man {
        /// Where to write them (created if need be).
        dir: PathBuf,
    },
}

/// supervisorctl's `tail -1600 NAME`: a bare `-N` after `tail` or `maintail` means the last N
/// bytes.
fn supervisorctl_spellings<T: From<String> + AsRef<std::ffi::OsStr>>(
    args: impl Iterator<Item = T>,
) -> Vec<T> {
    let mut in_tail = false;
    args.map(|a| {
        let s = a.as_ref().to_string_lossy();
        if s == "tail" || s == "maintail" {
            in_tail = true;
        } else if in_tail && s.len() > 1 && s.starts_with('-') && s[1..].bytes().all(|b| b.is_ascii_digit()) {
            return T::from(format!("--bytes={}", &s[1..]));
        }
        a
    })
    .collect()
}

/// How `status` prints processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// minder's table, with a header.
    Table,
    /// supervisorctl's lines: `name   RUNNING   pid 42, uptime 0:01:02`.
    Supervisorctl,
}

/// Set once, at start, when the binary was run as `supervisorctl` (a symlink): then `status`
/// prints supervisorctl's lines by default, for the tools that parse them.
static AS_SUPERVISORCTL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether argv[0]'s file name is `supervisorctl`.
fn invoked_as_supervisorctl(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0.and_then(|a| std::path::Path::new(a).file_name()).is_some_and(|n| n == "supervisorctl")
}

/// The index of the first argument that is not an option of minder's own (or an option's
/// value): the command. `None` when there is none, or it comes after `--`.
fn command_index<T: AsRef<std::ffi::OsStr>>(args: &[T]) -> Option<usize> {
    let mut i = 1;
    loop {
        let a = args.get(i)?.as_ref().to_string_lossy();
        if a == "--" {
            return None;
        }
        if TAKES_VALUE.contains(&a.as_ref()) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
}

/// supervisorctl joins its arguments with spaces and parses the result as a line typed at its
/// prompt, so scripts pass a whole command as one argument: `supervisorctl 'tail -100000'
/// prog`, `supervisorctl 'status foo'`. When the command word holds whitespace, minder does
/// the same: the command and everything after it are joined and split again as a shell
/// splits a line (plain whitespace splitting if the quotes do not balance, as Python's
/// `str.split` that supervisorctl uses). Otherwise the arguments are left as they are, so a
/// name or a signal given on its own keeps its exact bytes.
fn join_command_line(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(at) = command_index(&args) else { return args };
    if !args[at].to_string_lossy().contains(char::is_whitespace) {
        return args;
    }
    let line = args[at..].iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    let words = shlex::split(&line).unwrap_or_else(|| line.split_whitespace().map(String::from).collect());
    let mut joined: Vec<std::ffi::OsString> = args.into_iter().take(at).collect();
    joined.extend(words.into_iter().map(std::ffi::OsString::from));
    joined
}

/// Top-level options that take a value as the next argument.
const TAKES_VALUE: &[&str] = &[
    "-c",
    "--configuration",
    "-s",
    "--serverurl",
    "-u",
    "--username",
    "-p",
    "--password",
    "--token",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
    "--tls-domain",
];

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the native TOML equivalent of a configuration (a supervisord.conf, say).
    Convert {
        /// The configuration to convert.
        file: PathBuf,
    },
}

/// `minder status -c FILE`: the configuration option after the command, moved before it so
/// that clap, which keeps `-c` for the top level (tail's `-c` is its byte count), finds it.
/// Only `-c FILE`, `-cFILE`, `--configuration FILE` and `--configuration=FILE` move; in `tail`
/// and `maintail` only the long forms do. Nothing moves after `--`.
fn hoist_configuration<T: AsRef<std::ffi::OsStr>>(args: Vec<T>) -> Vec<T> {
    let text = |a: &T| a.as_ref().to_string_lossy().into_owned();
    let Some(command_at) = command_index(&args) else { return args };
    let in_tail = matches!(text(&args[command_at]).as_str(), "tail" | "maintail");
    let mut head: Vec<T> = Vec::new();
    let mut moved: Vec<T> = Vec::new();
    let mut rest: Vec<T> = Vec::new();
    let mut iter = args.into_iter().enumerate();
    let mut after_dashes = false;
    while let Some((at, a)) = iter.next() {
        let s = text(&a);
        if at < command_at {
            head.push(a);
            continue;
        }
        after_dashes |= s == "--";
        let long = s == "--configuration";
        let short = !in_tail && s == "-c";
        if !after_dashes && (long || short) {
            moved.push(a);
            if let Some((_, value)) = iter.next() {
                moved.push(value);
            }
        } else if !after_dashes
            && (s.starts_with("--configuration=") || (!in_tail && s.starts_with("-c") && s.len() > 2))
        {
            moved.push(a);
        } else {
            rest.push(a);
        }
    }
    head.extend(moved);
    head.extend(rest);
    head
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if invoked_as_supervisorctl(args.first().map(std::ffi::OsString::as_os_str)) {
        AS_SUPERVISORCTL.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let args = join_command_line(args);
    let mut cli = Cli::parse_from(hoist_configuration(supervisorctl_spellings(args.into_iter())));
    if let Err(e) = ask_password(&mut cli) {
        eprintln!("minder: cannot read the password: {e}");
        return ExitCode::from(exit::GENERIC);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minder: cannot start: {e}");
            return ExitCode::from(exit::GENERIC);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

/// supervisorctl's password prompt: with a username (`-u`, or the configuration's) and no
/// password (`-p`, or the configuration's) and no token, asks for the password before
/// connecting, without echo, on the terminal; when standard input is not a terminal, reads one
/// line from it. Without this, the shell would read the password typed next as a command, run
/// it and keep it in the history file.
fn ask_password(cli: &mut Cli) -> std::io::Result<()> {
    if cli.command.as_ref().is_some_and(is_local) || cli.connect.password.is_some() {
        return Ok(());
    }
    if cli.connect.token.is_some() || std::env::var("MINDER_TOKEN").is_ok_and(|t| !t.is_empty()) {
        return Ok(());
    }
    let configured = || {
        let server =
            cli.server.clone().or_else(|| std::env::var("MINDER_SERVER").ok().filter(|s| !s.is_empty()));
        client::resolve_target(server.as_deref(), cli.config.as_deref()).ok()
    };
    let needs = match &cli.connect.username {
        Some(_) => configured().is_none_or(|t| t.password.is_none()),
        None => configured().is_some_and(|t| t.username.is_some() && t.password.is_none()),
    };
    if needs {
        cli.connect.password = Some(read_password("Password:")?);
    }
    Ok(())
}

/// Reads a password: on the controlling terminal with echo off when standard input is a
/// terminal (as Python's getpass, which supervisorctl uses), else one line of standard input.
fn read_password(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let mut line = String::new();
    if std::io::stdin().is_terminal() {
        let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
        let saved = termios::tcgetattr(&tty)?;
        let mut quiet = saved.clone();
        // No echo, but the newline typed still moves the cursor (ECHONL), as getpass does.
        quiet.local_flags.remove(LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ECHOK);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        // Echo goes off before the prompt shows, so nothing typed after it is ever echoed.
        termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet)?;
        let read = (&tty)
            .write_all(prompt.as_bytes())
            .and_then(|()| (&tty).flush())
            .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
        // Restored whatever the read gave, keeping what was typed after the password. (A
        // Ctrl-C here ends minder with echo still off, as it would Python's getpass killed by a
        // signal; the shell that ran it restores the terminal.)
        let restored = termios::tcsetattr(&tty, SetArg::TCSANOW, &saved);
        read?;
        restored?;
    } else {
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

/// Runs one command, or the interactive shell when there is none; returns the exit code.
pub async fn run(mut cli: Cli) -> u8 {
    let Some(command) = cli.command.take() else {
        return shell::run(cli).await;
    };
    if let Some(code) = local(&command) {
        return code;
    }
    let is_status = matches!(command, Command::Status { .. });
    let mut client = match connect(&cli).await {
        Ok(c) => c,
        Err(e) => return unreachable_daemon(&e, is_status),
    };
    match execute(&mut client, command, cli.json).await {
        Ok(code) => code,
        Err(status) => failed(&status),
    }
}

/// Finds the daemon as the options say (`-s`, `MINDER_SERVER`, `-c`, the search path) and
/// connects to it.
pub(crate) async fn connect(cli: &Cli) -> Result<client::Client, ConnectError> {
    let server = cli.server.clone().or_else(|| std::env::var("MINDER_SERVER").ok().filter(|s| !s.is_empty()));
    let target = client::resolve_target(server.as_deref(), cli.config.as_deref())?;
    client::connect_to(&target, &cli.connect).await
}

/// Says why the daemon cannot be reached; returns the exit code for it.
pub(crate) fn unreachable_daemon(e: &ConnectError, status: bool) -> u8 {
    eprintln!("minder: {e}");
    match e {
        _ if status => exit::UNKNOWN,
        ConnectError::Refused(_) => exit::UNKNOWN,
        ConnectError::NoSocket(_) => exit::NOT_RUNNING,
        ConnectError::BadAddress(_) => exit::INVALID_ARGS,
        _ => exit::GENERIC,
    }
}

/// How long `minder upgrade` waits for the new binary to answer.
const UPGRADE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks for an upgrade, then waits until the new image answers (the connection the request
/// went over ends with the old one; the client connects again).
async fn upgrade(client: &mut client::Client, json: bool) -> Result<u8, tonic::Status> {
    let answer = match client.upgrade(pb::UpgradeRequest {}).await {
        Ok(a) => a.into_inner(),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("minder: upgrade refused: {}", s.message());
            return Ok(exit::GENERIC);
        }
        Err(s) => return Err(s),
    };
    let deadline = tokio::time::Instant::now() + UPGRADE_PATIENCE;
    loop {
        match client.get_daemon_info(pb::GetDaemonInfoRequest {}).await {
            Ok(info) if info.get_ref().upgrades >= answer.upgrades => {
                let info = info.into_inner();
                if !info.upgrade_failure.is_empty() {
                    eprintln!(
                        "minder: the upgrade did not take, minderd carries on as it was: {}",
                        info.upgrade_failure
                    );
                    return Ok(exit::GENERIC);
                }
                output::line(
                    json,
                    &format!("minderd upgraded to {} (pid {})", info.version, info.pid),
                    serde_json::json!({"result": "upgraded", "version": info.version, "pid": info.pid, "upgrades": info.upgrades}),
                );
                return Ok(exit::OK);
            }
            // The old image answering still, or the connection it closed: ask again.
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(_) => {
                eprintln!("minder: minderd accepted the upgrade, but has not come back as the new binary within {} s", UPGRADE_PATIENCE.as_secs());
                return Ok(exit::GENERIC);
            }
            Err(s) => return Err(s),
        }
    }
}

/// Says why an RPC failed; returns the exit code for it.
pub(crate) fn failed(status: &tonic::Status) -> u8 {
    eprintln!("minder: {}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument => exit::INVALID_ARGS,
        tonic::Code::Unavailable if status.message().contains("connect") => exit::UNKNOWN,
        _ => exit::GENERIC,
    }
}

/// Whether a command needs no daemon.
fn is_local(command: &Command) -> bool {
    matches!(command, Command::Config(_) | Command::Completions { .. } | Command::Man { .. })
}

/// Runs the commands that need no daemon; `None` for the others.
pub(crate) fn local(command: &Command) -> Option<u8> {
    match command {
        Command::Config(ConfigCommand::Convert { file }) => Some(changes::convert(file)),
        Command::Completions { shell } => Some(generate::completions(*shell)),
        Command::Man { dir } => Some(generate::man_pages(dir)),
        _ => None,
    }
}

/// Runs a command that talks to the daemon, over `client`.
pub(crate) async fn execute(
    client: &mut client::Client,
    command: Command,
    json: bool,
) -> Result<u8, tonic::Status> {
    match command {
        Command::Status { format, names } => {
            let lines = format.unwrap_or(if AS_SUPERVISORCTL.load(std::sync::atomic::Ordering::Relaxed) {
                StatusFormat::Supervisorctl
            } else {
                StatusFormat::Table
            });
            status(client, names, json, lines).await
        }
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
        Command::Pid { names } => pid(client, names, json).await,
        Command::Tail { follow, lines, bytes, names } => {
            match streams::tail(client, names.clone(), follow, from(lines, bytes), json).await {
                Err(s) if s.code() == tonic::Code::NotFound => {
                    no_such_process_names(client, names, json, s).await
                }
                other => other,
            }
        }
        Command::Maintail { follow, lines, bytes } => {
            streams::maintail(client, follow, from(lines, bytes), json).await
        }
        Command::Clear { names } => {
            act(client.clear_logs(pb::ClearLogsRequest { names }).await, json, Verb::Clear)
        }
        Command::Rotate { names } => {
            act(client.rotate_logs(pb::RotateLogsRequest { names }).await, json, Verb::Clear)
        }
        Command::Fg { name } => streams::fg(client, name).await,
        Command::Events { snapshot, with } => streams::events(client, snapshot, with, json).await,
        Command::SendEvent { r#type, data } => {
            client.send_remote_comm_event(pb::SendRemoteCommEventRequest { r#type, data }).await?;
            Ok(exit::OK)
        }
        Command::Reread => changes::reread(client, json).await,
        Command::Update { dry_run, groups } => changes::update(client, groups, dry_run, json).await,
        Command::Add { groups } => changes::add_remove(client, groups, true, json).await,
        Command::Remove { groups } => changes::add_remove(client, groups, false, json).await,
        Command::Avail => changes::avail(client, json).await,
        Command::Reload { restart_all } => changes::reload(client, restart_all, json).await,
        Command::Shutdown => match client.shutdown(pb::ShutdownRequest {}).await {
            Ok(_) => {
                output::line(json, "Shut down", serde_json::json!({"result": "shutting down"}));
                Ok(exit::OK)
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                outln!("ERROR: already shutting down");
                Ok(exit::OK)
            }
            Err(s) => Err(s),
        },
        Command::Upgrade => upgrade(client, json).await,
        Command::Version => {
            let info = client.get_daemon_info(pb::GetDaemonInfoRequest {}).await?.into_inner();
            output::line(json, &info.version, serde_json::json!({"version": info.version}));
            Ok(exit::OK)
        }
        Command::Config(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("local() runs the commands that need no daemon")
        }
    }
}

/// supervisorctl's answer to `tail` with a name it does not know: `NAME: ERROR (no such
/// process name)` on standard output, exit status 1. The names come from asking which of them
/// match nothing (the tail's own error names only the first).
async fn no_such_process_names(
    client: &mut crate::client::Client,
    words: Vec<String>,
    json: bool,
    error: tonic::Status,
) -> Result<u8, tonic::Status> {
    let (names, _) = streams::names_and_channel(words);
    let unmatched = client
        .list_processes(pb::ListProcessesRequest { names, with_tree: false, brief: true })
        .await?
        .into_inner()
        .unmatched;
    if unmatched.is_empty() {
        // Gone between the two calls: report the tail's own error.
        return Err(error);
    }
    if json {
        output::print_json(&serde_json::json!({ "unmatched": unmatched, "error": "no such process name" }));
    } else {
        for name in &unmatched {
            outln!("{name}: ERROR (no such process name)");
        }
    }
    Ok(exit::GENERIC)
}

async fn status(
    client: &mut crate::client::Client,
    names: Vec<String>,
    json: bool,
    format: StatusFormat,
) -> Result<u8, tonic::Status> {
    let resp = client
        .list_processes(pb::ListProcessesRequest { names, with_tree: json, brief: !json })
        .await?
        .into_inner();
    let mut code = exit::OK;
    for bad in &resp.unmatched {
        if !json {
            match bad.split_once(':') {
                Some((group, "" | "*")) => outln!("{group}: ERROR (no such group)"),
                _ => outln!("{bad}: ERROR (no such process)"),
            }
        }
        code = exit::UNKNOWN;
    }
    if json {
        output::print_json(&serde_json::json!({
            "processes": resp.processes.iter().map(output::process_json).collect::<Vec<_>>(),
            "unmatched": resp.unmatched,
        }));
    } else if format == StatusFormat::Supervisorctl {
        out!("{}", output::supervisorctl_status(&resp.processes));
    } else {
        out!("{}", output::status_table(&resp.processes));
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
            outln!("{}", output::result_line(r));
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
        let all = client
            .list_processes(pb::ListProcessesRequest { names: vec![], with_tree: false, brief: true })
            .await?
            .into_inner();
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
                        outln!("No such process {name}");
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
            outln!("{}", p.pid);
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hoisted(args: &[&str]) -> Vec<String> {
        hoist_configuration(args.iter().map(|a| a.to_string()).collect())
    }

    fn joined(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        join_command_line(args).into_iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_command_given_as_one_argument_is_split_as_supervisorctl_does() {
        assert_eq!(
            joined(&["minder", "-c", "f", "tail -100000", "web"]),
            ["minder", "-c", "f", "tail", "-100000", "web"]
        );
        assert_eq!(joined(&["minder", "status foo"]), ["minder", "status", "foo"]);
        assert_eq!(joined(&["minder", "signal 'SIGHUP'  web"]), ["minder", "signal", "SIGHUP", "web"]);
        // Unbalanced quotes: plain whitespace splitting, as Python's str.split.
        assert_eq!(joined(&["minder", "status it's"]), ["minder", "status", "it's"]);
        // A command word without whitespace: nothing changes, not even a later argument's.
        assert_eq!(joined(&["minder", "start", "a b"]), ["minder", "start", "a b"]);
        assert_eq!(joined(&["minder", "--", "status foo"]), ["minder", "--", "status foo"]);
        assert!(invoked_as_supervisorctl(Some("/usr/bin/supervisorctl".as_ref())));
        assert!(!invoked_as_supervisorctl(Some("/usr/bin/minder".as_ref())));
    }

    #[test]
    fn the_configuration_option_moves_before_the_command() {
        assert_eq!(hoisted(&["minder", "status", "-c", "f", "web"]), ["minder", "-c", "f", "status", "web"]);
        assert_eq!(hoisted(&["minder", "status", "web", "-cf"]), ["minder", "-cf", "status", "web"]);
        assert_eq!(
            hoisted(&["minder", "-s", "x", "status", "--configuration=f"]),
            ["minder", "-s", "x", "--configuration=f", "status"]
        );
        assert_eq!(
            hoisted(&["minder", "-u", "status", "stop", "--configuration", "f", "all"]),
            ["minder", "-u", "status", "--configuration", "f", "stop", "all"],
            "-u takes a value: the command is the word after it"
        );
        // tail's -c is its byte count; only the long option moves there.
        assert_eq!(hoisted(&["minder", "tail", "-c", "5", "web"]), ["minder", "tail", "-c", "5", "web"]);
        assert_eq!(
            hoisted(&["minder", "tail", "web", "--configuration", "f"]),
            ["minder", "--configuration", "f", "tail", "web"]
        );
        // Nothing after --, and nothing without a command.
        assert_eq!(hoisted(&["minder", "start", "--", "-c", "f"]), ["minder", "start", "--", "-c", "f"]);
        assert_eq!(hoisted(&["minder", "-c", "f"]), ["minder", "-c", "f"]);
        // The result parses.
        let cli = Cli::try_parse_from(hoisted(&["minder", "status", "web", "-c", "f.conf"])).expect("parses");
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("f.conf")));
    }
}
