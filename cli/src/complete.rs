//! Tab completion in the shell, as supervisorctl's: command names first, then what the command
//! takes — process names (`NAME`, `GROUP:NAME`, `GROUP:*`, `all`), group names, a signal, an
//! option. Names are asked of the daemon once per prompt, at the first TAB that needs them
//! (supervisorctl too caches them until the next command).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::CommandFactory;
use minder::pb;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;

use crate::shell::Connection;
use crate::Cli;

/// What completion needs to know of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub group: String,
    pub name: String,
}

/// The commands whose arguments are processes.
const PROCESS_COMMANDS: &[&str] =
    &["status", "start", "stop", "restart", "signal", "pid", "tail", "clear", "rotate", "fg"];
/// The commands whose arguments are groups.
const GROUP_COMMANDS: &[&str] = &["add", "remove", "update"];
/// The signals people send; any other name or number is accepted too.
const SIGNALS: &[&str] = &["HUP", "INT", "QUIT", "KILL", "TERM", "USR1", "USR2", "STOP", "CONT", "WINCH"];
/// The shell's own words.
pub const SHELL_WORDS: &[&str] = &["help", "exit", "quit"];

/// The words that can be typed at the prompt, from the clap definitions.
#[derive(Debug)]
pub struct Vocabulary {
    /// Command names, in `--help`'s order, then the shell's own.
    commands: Vec<String>,
    /// Each command's long options.
    options: Vec<(String, Vec<String>)>,
}

impl Vocabulary {
    pub fn new() -> Vocabulary {
        let cli = Cli::command();
        let visible = || cli.get_subcommands().filter(|c| !c.is_hide_set());
        let commands = visible()
            .map(|c| c.get_name().to_string())
            .chain(SHELL_WORDS.iter().map(|w| w.to_string()))
            .collect();
        let options = visible()
            .map(|c| {
                let longs = c.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}"));
                (c.get_name().to_string(), longs.chain(["--json".into(), "--help".into()]).collect())
            })
            .collect();
        Vocabulary { commands, options }
    }

    /// The completions of the word that ends at `pos` in `line`: where the word starts, and
    /// each candidate followed by a space (as readline does in supervisorctl). `processes` is
    /// called only when process or group names can follow.
    pub fn complete(
        &self,
        line: &str,
        pos: usize,
        processes: impl FnOnce() -> Vec<Process>,
    ) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(|c: char| c.is_ascii_whitespace()).map_or(0, |i| i + 1);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        // Words after the command that are not options: how many arguments came before.
        let args = words.iter().skip(1).filter(|w| !w.starts_with('-')).count();
        let list: Vec<String> = match words.first().copied() {
            None => self.commands.clone(),
            Some("help") if args == 0 => self.commands.clone(),
            Some(command) if word.starts_with('-') => {
                self.options.iter().find(|(c, _)| c == command).map(|(_, o)| o.clone()).unwrap_or_default()
            }
            Some("signal") if args == 0 => SIGNALS.iter().map(|s| s.to_string()).collect(),
            Some("fg") if args > 0 => vec![],
            Some("tail") if args > 0 => {
                let mut names = process_names(&processes(), word);
                names.extend(["stdout".to_string(), "stderr".to_string()]);
                names
            }
            Some(command) if PROCESS_COMMANDS.contains(&command) => process_names(&processes(), word),
            Some(command) if GROUP_COMMANDS.contains(&command) => {
                let mut groups = group_names(&processes());
                if command == "update" {
                    groups.push("all".into());
                }
                groups
            }
            Some(_) => vec![],
        };
        let candidates = list.into_iter().filter(|c| c.starts_with(word)).map(|c| c + " ").collect();
        (start, candidates)
    }
}

/// supervisorctl's `_complete_processes`: a process alone in a group of its own name is
/// `NAME`; others are `GROUP:NAME`, with `GROUP:*` for the whole group — and every process is
/// `GROUP:NAME` once a `:` has been typed. Then `all`.
fn process_names(processes: &[Process], word: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    for p in processes {
        if word.contains(':') || p.name != p.group {
            push(format!("{}:{}", p.group, p.name));
            push(format!("{}:*", p.group));
        } else {
            push(p.name.clone());
        }
    }
    push("all".to_string());
    names
}

fn group_names(processes: &[Process]) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for p in processes {
        if !groups.contains(&p.group) {
            groups.push(p.group.clone());
        }
    }
    groups
}

/// rustyline's helper: completion only (no hints, no colours, no multi-line input).
#[derive(Debug)]
pub struct Helper {
    vocabulary: Vocabulary,
    connection: Arc<Connection>,
    /// The runtime the shell runs on; the editor runs on one of its blocking threads, and asks
    /// for names through it.
    runtime: tokio::runtime::Handle,
    /// The processes, once asked for at this prompt.
    cache: Mutex<Option<Vec<Process>>>,
}

impl Helper {
    pub fn new(connection: Arc<Connection>, runtime: tokio::runtime::Handle) -> Helper {
        Helper { vocabulary: Vocabulary::new(), connection, runtime, cache: Mutex::new(None) }
    }

    /// Forgets the names: a command may have changed them.
    pub fn forget(&self) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn processes(&self) -> Vec<Process> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = &*cache {
            return p.clone();
        }
        let connection = self.connection.clone();
        // A daemon that does not answer quickly gets no names, not a frozen prompt; a failure
        // is remembered until the next command, so TAB does not wait twice.
        let fetched = self.runtime.block_on(async move {
            let ask = async {
                let mut client = connection.client().await.ok()?;
                client
                    .list_processes(pb::ListProcessesRequest { names: vec![], with_tree: false, brief: true })
                    .await
                    .ok()
            };
            tokio::time::timeout(Duration::from_secs(2), ask).await.ok().flatten()
        });
        let processes: Vec<Process> = fetched
            .map(|r| {
                r.into_inner()
                    .processes
                    .into_iter()
                    .map(|p| Process { group: p.group, name: p.name })
                    .collect()
            })
            .unwrap_or_default();
        *cache = Some(processes.clone());
        processes
    }
}

impl Completer for Helper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.vocabulary.complete(line, pos, || self.processes()))
    }
}

impl Hinter for Helper {
    type Hint = String;
}

impl Highlighter for Helper {}

impl Validator for Helper {}

impl rustyline::Helper for Helper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs() -> Vec<Process> {
        let p = |g: &str, n: &str| Process { group: g.into(), name: n.into() };
        vec![p("worker", "worker"), p("web", "web_00"), p("web", "web_01"), p("idle", "idle")]
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        Vocabulary::new().complete(line, line.len(), procs)
    }

    #[test]
    fn commands() {
        assert_eq!(complete("sta"), (0, vec!["status ".into(), "start ".into()]));
        assert_eq!(complete("qu"), (0, vec!["quit ".into()]));
        assert_eq!(
            complete("help re"),
            (5, vec!["restart ".into(), "reread ".into(), "remove ".into(), "reload ".into()])
        );
        assert!(complete("").1.contains(&"exit ".to_string()));
        assert!(!complete("").1.contains(&"man ".to_string()), "hidden commands are not offered");
    }

    #[test]
    fn process_names_as_supervisorctl() {
        assert_eq!(complete("start w").1, vec!["worker ", "web:web_00 ", "web:* ", "web:web_01 "]);
        assert_eq!(complete("stop worker:").1, vec!["worker:worker ", "worker:* "]);
        assert_eq!(complete("status a").1, vec!["all "]);
        assert_eq!(complete("start --no-wait i").1, vec!["idle "]);
        assert_eq!(complete("tail -f idle std").1, vec!["stdout ", "stderr "]);
        assert_eq!(complete("fg idle ").1, Vec::<String>::new());
    }

    #[test]
    fn groups_signals_options() {
        assert_eq!(complete("update w").1, vec!["worker ", "web "]);
        assert_eq!(complete("signal H").1, vec!["HUP "]);
        assert_eq!(complete("signal HUP id").1, vec!["idle "]);
        assert_eq!(complete("stop --n").1, vec!["--no-wait "]);
        assert_eq!(complete("frobnicate x").1, Vec::<String>::new());
    }

    #[test]
    fn names_are_asked_for_only_when_needed() {
        let v = Vocabulary::new();
        v.complete("sta", 3, || panic!("no names for a command"));
        v.complete("signal ", 7, || panic!("no names for a signal"));
    }
}
