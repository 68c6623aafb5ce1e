//! `minder-fleet --config-file cesi.conf.toml --host H --port P`, as Cesi's `run.py` takes them,
//! and `minder-fleet --config-file F user add|list|remove|passwd …` to manage the fleet's users
//! in its database (safe while the fleet runs: it looks users up on every request).

use std::path::PathBuf;

use clap::Parser;

/// Watches many minderd and supervisord nodes and serves Cesi's REST API over them.
#[derive(Debug, Parser)]
#[command(name = "minder-fleet", version = minder::VERSION)]
struct Args {
    /// The configuration: Cesi's cesi.conf.toml, unmodified, or the fleet's native TOML.
    #[arg(long, value_name = "FILE", default_value = "/etc/cesi.conf.toml")]
    config_file: PathBuf,
    /// The address to listen at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen at (0: any free port, printed at start).
    #[arg(long, default_value_t = 5000)]
    port: u16,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Manage the fleet's users (in the database of the configuration's [cesi] database).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input (asked twice on a terminal).
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        /// Restrict the user to the nodes of this environment (repeat for more).
        #[arg(long = "environment", value_name = "ENVIRONMENT")]
        environments: Vec<String>,
    },
    /// List the users, their roles and environments.
    List,
    /// Remove a user (not the last admin).
    Remove { name: String },
    /// Set a user's password, read as for `add`.
    Passwd { name: String },
}

/// The new password: one line of standard input, or asked for twice on a terminal without echo.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead as _, IsTerminal as _};
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading standard input: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt("New password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off, restoring the terminal after.
fn prompt(what: &str) -> Result<String, String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead as _, Write as _};
    let stdin = std::io::stdin();
    // Echo goes off before the prompt shows: what is typed after it never appears.
    let saved = tcgetattr(&stdin).map_err(|e| format!("the terminal: {e}"))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| format!("the terminal: {e}"))?;
    eprint!("{what}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.map_err(|e| format!("reading the terminal: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Runs a `user` command, and records a change in the activity log (as the Unix user who ran
/// it, from "command line").
fn user_command(config: &minder_fleet::config::FleetConfig, cmd: UserCommand) -> Result<String, String> {
    use minder_fleet::activity::{record_now, Entry};
    let path = minder_fleet::users::database_path(config);
    let (action, target) = match &cmd {
        UserCommand::Add { name, .. } => (Some("user add"), name.clone()),
        UserCommand::Remove { name } => (Some("user remove"), name.clone()),
        UserCommand::Passwd { name } => (Some("user change"), name.clone()),
        UserCommand::List => (None, String::new()),
    };
    let detail = match &cmd {
        UserCommand::Add { role, environments, .. } if environments.is_empty() => format!("role {role}"),
        UserCommand::Add { role, environments, .. } => {
            format!("role {role}, environments {}", environments.join(","))
        }
        UserCommand::Passwd { .. } => "password".to_string(),
        _ => String::new(),
    };
    let r = run_user_command(&path, cmd);
    if let Some(action) = action {
        let who = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
        let entry = Entry::new(&who, action, if r.is_ok() { "success" } else { "error" })
            .source("command line")
            .target_user(&target);
        let entry = if detail.is_empty() {
            entry
        } else {
            Entry { detail: entry.detail.map(|d| format!("{d}, {detail}")), ..entry }
        };
        let base = config.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let file = config.activity_log.as_ref().map(|f| base.join(f));
        if let Err(e) = record_now(&path, file.as_deref(), &entry) {
            eprintln!("minder-fleet: the activity log: {e}");
        }
    }
    r
}

fn run_user_command(path: &std::path::Path, cmd: UserCommand) -> Result<String, String> {
    use minder_fleet::users::{self, Role, Users};
    let store = Users::open(path).map_err(|e| e.to_string())?;
    match cmd {
        UserCommand::Add { name, role, environments } => {
            let role = Role::parse(&role).ok_or("the role is admin, operator or viewer")?;
            users::check_username(&name).map_err(|e| e.to_string())?;
            let password = read_password()?;
            let envs = (!environments.is_empty()).then_some(environments.as_slice());
            store.add(&name, &password, role, envs).map_err(|e| e.to_string())?;
            Ok(format!("added {name} ({}) to {}", role.as_str(), path.display()))
        }
        UserCommand::List => {
            let mut out = String::new();
            for u in store.list().map_err(|e| e.to_string())? {
                let envs = u.environments.as_ref().map_or_else(|| "*".to_string(), |e| e.join(","));
                out.push_str(&format!("{:<24} {:<9} {envs}\n", u.username, u.role.as_str()));
            }
            Ok(out.trim_end().to_string())
        }
        UserCommand::Remove { name } => {
            store.remove(&name).map_err(|e| e.to_string())?;
            Ok(format!("removed {name}"))
        }
        UserCommand::Passwd { name } => {
            if store.get(&name).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("no user named {name:?}"));
            }
            let password = read_password()?;
            store.set_password(&name, &password).map_err(|e| e.to_string())?;
            Ok(format!("changed the password of {name}"))
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINDER_FLEET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match minder_fleet::config::load(&args.config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("minder-fleet: the configuration is not usable:\n{e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::User { command }) = args.command {
        return match user_command(&config, command) {
            Ok(said) => {
                if !said.is_empty() {
                    println!("{said}");
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("minder-fleet: {e}");
                std::process::ExitCode::from(1)
            }
        };
    }
    let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("minder-fleet: cannot listen at {}:{}: {e}", args.host, args.port);
            return std::process::ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(a) => tracing::info!("listening at http://{a} with {} nodes", config.nodes.len()),
        Err(e) => tracing::warn!("listening (address unknown: {e})"),
    }
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match minder_fleet::run(config, listener, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minder-fleet: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
