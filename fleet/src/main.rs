//! `minder-fleet --config-file cesi.conf.toml --host H --port P`, as Cesi's `run.py` takes them.

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
    /// Check the configuration, print its nodes (never a credential) and exit: 0 if it is
    /// usable, 2 if not. Token and TLS files that are not on this host are not required.
    #[arg(long)]
    check_config: bool,
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
    if args.check_config {
        return match minder_fleet::config::check(&args.config_file) {
            Ok(c) => {
                print!("{}", minder_fleet::config::summary(&c));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("minder-fleet: the configuration is not usable:\n{e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let config = match minder_fleet::config::load(&args.config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("minder-fleet: the configuration is not usable:\n{e}");
            return std::process::ExitCode::from(2);
        }
    };
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
