//! `minderd`: reads the configuration, binds the listeners, and runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use minder::address::Address;
use minder::config::{self, LogLevel};
use minderd::daemonize::{self, Readiness};
use minderd::{listen, logging, spawn};

/// minderd supervises programs as supervisord does, and serves the minder.v1 gRPC API on a
/// unix socket (by default) or TCP. Control it with `minder`.
#[derive(Debug, Parser)]
#[command(name = "minderd", version, max_term_width = 100)]
struct Args {
    /// The configuration file. Without it, minderd looks for ./minder.toml,
    /// ~/.config/minder/minder.toml, then /etc/minder/minder.toml.
    #[arg(short = 'c', long = "configuration", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Serve on this address instead of the configured ones: unix:///path or
    /// tcp://host:port. May be given more than once.
    #[arg(long, value_name = "ADDRESS")]
    listen: Vec<Address>,

    /// Fork into the background once listening, and write the pidfile.
    #[arg(long, conflicts_with = "nodaemon")]
    daemonize: bool,

    /// Stay in the foreground (the default; accepted for supervisord's -n).
    #[arg(short = 'n', long)]
    nodaemon: bool,

    /// Write the daemon's pid to this file.
    #[arg(short = 'j', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// Write the daemon's log to this file instead of standard output.
    #[arg(short = 'l', long, value_name = "FILE")]
    logfile: Option<PathBuf>,

    /// The daemon's log level: critical, error, warn, info, debug, trace or blather.
    #[arg(short = 'e', long, value_name = "LEVEL", value_parser = parse_level)]
    loglevel: Option<LogLevel>,
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    LogLevel::parse(s).ok_or_else(|| format!("expected one of {}", LogLevel::NAMES))
}

fn main() -> ExitCode {
    let args = Args::parse();
    spawn::ensure_std_fds();
    let Some(path) = args.config.clone().or_else(config::find) else {
        let searched: Vec<String> = config::search_paths().iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "minderd: no configuration file; give one with -c FILE (looked for {})",
            searched.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("minderd: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.listen.is_empty() {
        config.daemon.listen = args.listen.clone();
    }
    if let Some(level) = args.loglevel {
        config.daemon.loglevel = level;
    }
    if args.logfile.is_some() {
        config.daemon.logfile = args.logfile.clone();
    }
    if args.pidfile.is_some() {
        config.daemon.pidfile = args.pidfile.clone();
    }
    let readiness = if args.daemonize {
        let state_dir =
            minder::address::default_socket().parent().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        // In the background there is no terminal to log to, and the pid must be findable.
        config.daemon.logfile.get_or_insert_with(|| state_dir.join("minderd.log"));
        config.daemon.pidfile.get_or_insert_with(|| state_dir.join("minderd.pid"));
        match daemonize::daemonize() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("minderd: cannot go into the background: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        Readiness::none()
    };
    let target = logging::LogTarget {
        level: config.daemon.loglevel,
        file: config.daemon.logfile.clone().map(|path| minderd::logs::LogSpec {
            path,
            maxbytes: 50 * 1024 * 1024,
            backups: 10,
            timestamps: false,
        }),
    };
    let daemon_log = match logging::init(target) {
        Ok(channel) => channel,
        Err(e) => {
            let why = format!("cannot open the log file: {e}");
            eprintln!("minderd: {why}");
            readiness.failed(&why);
            return ExitCode::from(1);
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            readiness.failed(&format!("cannot start the runtime: {e}"));
            eprintln!("minderd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listeners = match listen::bind_all(&config.daemon.listen, config.daemon.socket_mode).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("minderd: {e}");
                readiness.failed(&e.to_string());
                return ExitCode::from(1);
            }
        };
        let pidfile = match &config.daemon.pidfile {
            Some(p) => match Pidfile::write(p) {
                Ok(f) => Some(f),
                Err(e) => {
                    let why = format!("cannot write the pidfile {}: {e}", p.display());
                    eprintln!("minderd: {why}");
                    readiness.failed(&why);
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        readiness.ready();
        let result = minderd::run(&config, listeners, daemon_log, std::future::pending()).await;
        drop(pidfile);
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(1)
            }
        }
    })
}

/// The pidfile; removed on drop if it still holds this process's pid.
struct Pidfile(PathBuf);

impl Pidfile {
    fn write(path: &std::path::Path) -> std::io::Result<Pidfile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(Pidfile(path.to_path_buf()))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == std::process::id().to_string()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
