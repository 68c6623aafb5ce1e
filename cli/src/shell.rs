//! The interactive shell: `minder` with no command, as supervisorctl with none.
//!
//! It runs `status` on entry, then reads lines with rustyline (history in a file, TAB
//! completion of commands and names). Each line is split as a shell splits it and parsed with
//! the same clap definitions as the one-shot command line, so every command works the same
//! in both; it runs over one connection, made again after the daemon goes away. Ctrl-C cancels
//! the line being typed, or the command running (a `tail -f`, say) and comes back to the
//! prompt; `exit`, `quit` and Ctrl-D leave. The shell's own exit status is always 0, as
//! supervisorctl's is.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use clap::{FromArgMatches, Subcommand};
use minder::config::ClientConfig;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Editor};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::client::ConnectError;
use crate::complete::Helper;
use crate::{exit, Cli, Command};

/// What `help` shows in the shell.
const HELP: &str = "\
Commands:
{subcommands}

Names: NAME, GROUP:NAME, GROUP:* (every process of a group), or all.
`help COMMAND` tells more about one; TAB completes commands and names.";

/// The parser of a line typed at the prompt: one of minder's commands (from the same clap
/// definitions as the command line), or the shell's own `exit`. A multicall parser, as clap
/// suggests for a REPL: the first word is the command; `help` and `help COMMAND` come free.
fn line_parser() -> clap::Command {
    // A multicall parser takes no options of its own: `--json` is given to each command, as
    // `minder --json` (a global option) gives it on the command line.
    let json = clap::Arg::new("json")
        .long("json")
        .global(true)
        .action(clap::ArgAction::SetTrue)
        .help("Print machine-readable JSON instead of tables and lines");
    let parser = clap::Command::new("minder")
        .multicall(true)
        .max_term_width(100)
        .override_usage("COMMAND [ARGS]...")
        .help_template(HELP);
    LineCommand::augment_subcommands(parser).mut_subcommands(|c| c.arg(json.clone()))
}

#[derive(Debug, Subcommand)]
enum LineCommand {
    #[command(flatten)]
    Minder(Command),
    /// Leave the shell (Ctrl-D does too).
    #[command(visible_alias = "quit")]
    Exit,
}

/// The connection to the daemon, shared by the commands and by completion: made when first
/// needed, and made again after it fails.
#[derive(Debug)]
pub struct Connection {
    cli: Cli,
    client: Mutex<Option<crate::client::Client>>,
}

impl Connection {
    /// The client, connecting first if there is none.
    pub async fn client(&self) -> Result<crate::client::Client, ConnectError> {
        if let Some(c) = &*self.client.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(c.clone());
        }
        // Not under the lock: connecting awaits.
        let c = crate::connect(&self.cli).await?;
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
        Ok(c)
    }

    /// Drops the client after a transport failure, so the next command connects afresh.
    fn forget(&self) {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Whether the shell goes on after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Runs the shell until `exit`, `quit` or end of input.
pub async fn run(cli: Cli) -> u8 {
    let settings = client_settings(cli.config.as_deref());
    let prompt = format!("{}> ", settings.as_ref().map_or("minder", |s| s.prompt.as_str()));
    let json = cli.json;
    let connection = Arc::new(Connection { cli, client: Mutex::new(None) });
    // Once this is registered, SIGINT no longer ends minder: it cancels the running command.
    // (While a line is being typed the terminal is raw, and Ctrl-C comes as a key instead.)
    let sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("minder: warning: Ctrl-C will end the shell, not just a command: {e}");
            None
        }
    };
    let mut shell = Shell { connection: connection.clone(), sigint, json };

    let config = rustyline::Config::builder()
        .completion_type(CompletionType::List)
        .max_history_size(1000)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| b.history_ignore_space(true).auto_add_history(false).build());
    let editor = config.and_then(Editor::<Helper, DefaultHistory>::with_config);
    let mut editor = match editor {
        Ok(e) => e,
        Err(e) => {
            eprintln!("minder: cannot read commands from the terminal: {e}");
            return exit::GENERIC;
        }
    };
    editor.set_helper(Some(Helper::new(connection, tokio::runtime::Handle::current())));
    let mut history = History::open(settings.and_then(|s| s.history_file), &mut editor);

    shell.line("status").await;
    loop {
        if let Some(h) = editor.helper() {
            h.forget();
        }
        let _ = std::io::stdout().flush();
        // The editor blocks on the terminal: on a blocking thread, so the runtime goes on
        // serving the connection meanwhile (and completion can ask the daemon for names).
        let prompt_now = prompt.clone();
        let read = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&prompt_now);
            (editor, line)
        })
        .await;
        let line = match read {
            Ok((e, line)) => {
                editor = e;
                line
            }
            Err(e) => {
                eprintln!("minder: the line editor failed: {e}");
                break;
            }
        };
        match line {
            Ok(line) => {
                history.add(&mut editor, &line);
                if shell.line(&line).await == Flow::Exit {
                    break;
                }
            }
            // Ctrl-C: the line is dropped; a fresh prompt.
            Err(ReadlineError::Interrupted) => continue,
            // Ctrl-D: supervisorctl ends the line before leaving.
            Err(ReadlineError::Eof) => {
                outln!();
                break;
            }
            Err(e) => {
                eprintln!("minder: cannot read from the terminal: {e}");
                break;
            }
        }
    }
    exit::OK
}

struct Shell {
    connection: Arc<Connection>,
    sigint: Option<Signal>,
    /// `minder --json` with no command: every command answers in JSON.
    json: bool,
}

impl Shell {
    /// Splits a line, parses it, and runs it.
    async fn line(&mut self, line: &str) -> Flow {
        let Some(words) = shlex::split(line) else {
            eprintln!("minder: unbalanced quotes or a trailing backslash in: {line}");
            return Flow::Continue;
        };
        if words.is_empty() {
            // As supervisorctl: an empty line does not repeat the last command.
            return Flow::Continue;
        }
        let parsed = line_parser()
            .try_get_matches_from(crate::supervisorctl_spellings(words.into_iter()))
            .and_then(|m| {
                let json = m.subcommand().is_some_and(|(_, sub)| sub.get_flag("json"));
                LineCommand::from_arg_matches(&m).map(|c| (c, json))
            });
        match parsed {
            // Also `help` and `help COMMAND`, which clap answers as an "error" to print.
            Err(e) => {
                let _ = e.print();
                Flow::Continue
            }
            Ok((LineCommand::Exit, _)) => Flow::Exit,
            Ok((LineCommand::Minder(command), json)) => {
                if let Some(question) = confirmation(&command) {
                    if !confirmed(question).await {
                        return Flow::Continue;
                    }
                }
                self.run(command, json || self.json).await;
                Flow::Continue
            }
        }
    }

    /// Runs one command until it ends or Ctrl-C; its exit code is not the shell's.
    async fn run(&mut self, command: Command, json: bool) {
        if crate::local(&command).is_some() {
            return;
        }
        let connection = self.connection.clone();
        let work = async move {
            let mut client = match connection.client().await {
                Ok(c) => c,
                Err(e) => {
                    crate::unreachable_daemon(&e, false);
                    return;
                }
            };
            match crate::execute(&mut client, command, json).await {
                // The connection broke (the daemon went away, or restarted): connect afresh,
                // which also says what is wrong better than the transport's error does. The
                // command is not sent again — it may have been carried out.
                Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                    connection.forget();
                    match connection.client().await {
                        Ok(_) => {
                            crate::failed(&status);
                        }
                        Err(e) => {
                            crate::unreachable_daemon(&e, false);
                        }
                    }
                }
                Err(status) => {
                    crate::failed(&status);
                }
                Ok(_) => {}
            }
        };
        let Some(sigint) = &mut self.sigint else {
            return work.await;
        };
        // A Ctrl-C from before this command is not for it.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while sigint.poll_recv(&mut cx).is_ready() {}
        tokio::select! {
            () = work => {}
            _ = sigint.recv() => {
                // The command's future is dropped: its RPC or stream is cancelled, and
                // whatever the daemon was asked to do goes on.
                outln!();
            }
        }
    }
}

/// supervisorctl's question before a command that takes the daemon down, in its words (its
/// one-shot command line asks nothing, and neither does minder's).
fn confirmation(command: &Command) -> Option<&'static str> {
    match command {
        Command::Shutdown => Some("Really shut the remote supervisord process down y/N? "),
        Command::Reload { .. } => Some("Really restart the remote supervisord process y/N? "),
        _ => None,
    }
}

/// Asks `question` and reads the answer from standard input (the terminal is back in its
/// ordinary mode between two lines of the editor). As supervisorctl: an answer starting with
/// y or Y goes ahead; anything else, an empty line or end of input cancels.
async fn confirmed(question: &'static str) -> bool {
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        out!("{question}");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    matches!(answer, Ok(Ok(line)) if line.trim_start().to_lowercase().starts_with('y'))
}

/// The `[supervisorctl]` settings (prompt, history file) of the configuration minder reads:
/// `-c FILE` or the first on the search path. A configuration that cannot be read is reported
/// by the first command that needs the daemon, not here.
fn client_settings(config: Option<&Path>) -> Option<ClientConfig> {
    let path = config.map(Path::to_path_buf).or_else(minder::config::find)?;
    minder::config::load(&path).ok()?.client
}

/// The history file: kept as lines are entered, so a shell that is killed loses nothing and
/// two shells at once both keep theirs. When it cannot be written, minder says so once and
/// goes on without it.
struct History {
    path: Option<PathBuf>,
}

impl History {
    fn open(configured: Option<PathBuf>, editor: &mut Editor<Helper, DefaultHistory>) -> History {
        let Some(path) = configured.or_else(default_history_file) else {
            return History { path: None };
        };
        let mut history = History { path: Some(path.clone()) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                history.give_up(&e.to_string());
                return history;
            }
        }
        match editor.load_history(&path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("minder: warning: cannot read the history file {}: {e}", path.display()),
        }
        history
    }

    fn add(&mut self, editor: &mut Editor<Helper, DefaultHistory>, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let _ = editor.add_history_entry(line);
        if let Some(path) = &self.path {
            if let Err(e) = editor.append_history(path) {
                self.give_up(&e.to_string());
            }
        }
    }

    fn give_up(&mut self, why: &str) {
        if let Some(path) = self.path.take() {
            eprintln!(
                "minder: warning: cannot write the history file {}: {why}; history is kept for this session only",
                path.display()
            );
        }
    }
}

/// `$XDG_STATE_HOME/minder/history`, else `~/.local/state/minder/history`.
fn default_history_file() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let state = std::env::var_os("XDG_STATE_HOME")
        .and_then(absolute)
        .or_else(|| std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".local").join("state")))?;
    Some(state.join("minder").join("history"))
}
