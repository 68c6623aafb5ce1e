//! `minderd`: reads the configuration, applies the daemon's settings, binds the listeners, and
//! runs the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use minder::address::Address;
use minder::config::{self, Config, LogLevel};
use minderd::daemonize::{self, Readiness};
use minderd::{listen, logging, reaper, setup, spawn, upgrade};

/// minderd supervises programs as supervisord does, and serves the minder.v1 gRPC API on a
/// unix socket (by default) or TCP. Control it with `minder`. It reads its own TOML
/// configuration or a supervisord.conf, unmodified; supervisord's options work here too.
#[derive(Debug, Parser)]
#[command(name = "minderd", version, max_term_width = 100)]
struct Args {
    /// The configuration file (TOML, or supervisord's INI). Without it, minderd looks for
    /// ./minder.toml, ~/.config/minder/minder.toml, /etc/minder/minder.toml, then
    /// supervisord's search path.
    #[arg(short = 'c', long = "configuration", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Check the configuration and print it, every option resolved, then exit: 0 when it is
    /// valid, 2 with every error listed when it is not. Nothing is started.
    #[arg(long)]
    check_config: bool,

    /// With --check-config, print JSON.
    #[arg(long, requires = "check_config")]
    json: bool,

    /// With --check-config, skip what only the machine that will run the configuration can
    /// tell: that its users, groups, log directories, `directory` and TLS/token files exist.
    /// Everything else (syntax, values, expansions, groups, includes) is still checked: for
    /// validating a configuration in CI before deploying it.
    #[arg(long, requires = "check_config")]
    no_host_checks: bool,

    /// Serve on this address instead of the configured ones: unix:///path or
    /// tcp://host:port. May be given more than once.
    #[arg(long, value_name = "ADDRESS")]
    listen: Vec<Address>,

    /// Serve Prometheus metrics over HTTP at this host:port (GET /metrics).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,

    /// Allow a TCP listener on a non-loopback address with no authentication.
    #[arg(long)]
    insecure: bool,

    /// Fork into the background once listening (supervisord's default, nodaemon=false).
    #[arg(long, conflicts_with = "nodaemon")]
    daemonize: bool,

    /// Stay in the foreground (a TOML configuration's default).
    #[arg(short = 'n', long)]
    nodaemon: bool,

    /// In the foreground, do not copy the log to standard output.
    #[arg(short = 's', long)]
    silent: bool,

    /// Run as this user once listening (name or uid; minderd must start as root).
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,

    /// The daemon's umask, in octal (default 022).
    #[arg(short = 'm', long, value_name = "UMASK", value_parser = parse_octal)]
    umask: Option<u32>,

    /// chdir here when going into the background.
    #[arg(short = 'd', long, value_name = "DIR")]
    directory: Option<PathBuf>,

    /// Write the daemon's log to this file instead of standard output.
    #[arg(short = 'l', long, value_name = "FILE")]
    logfile: Option<PathBuf>,

    /// Rotate the daemon's log at this size (50MB, 1GB, 0 never).
    #[arg(short = 'y', long = "logfile_maxbytes", value_name = "BYTES", value_parser = parse_size)]
    logfile_maxbytes: Option<u64>,

    /// How many rotated daemon logs to keep.
    #[arg(short = 'z', long = "logfile_backups", value_name = "NUM")]
    logfile_backups: Option<u32>,

    /// How the daemon's log lines are written: supervisord (its format) or json (one object
    /// per line).
    #[arg(long, value_name = "FORMAT", default_value = "supervisord", value_parser = parse_format)]
    log_format: logging::LogFormat,

    /// The daemon's log level: critical, error, warn, info, debug, trace or blather.
    #[arg(short = 'e', long, value_name = "LEVEL", value_parser = parse_level)]
    loglevel: Option<LogLevel>,

    /// Write the daemon's pid to this file.
    #[arg(short = 'j', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// The daemon's identifier (in AUTO log names and DaemonInfo).
    #[arg(short = 'i', long, value_name = "STR")]
    identifier: Option<String>,

    /// Where AUTO child logs go.
    #[arg(short = 'q', long, value_name = "DIR")]
    childlogdir: Option<PathBuf>,

    /// Keep the AUTO child logs of earlier runs.
    #[arg(short = 'k', long)]
    nocleanup: bool,

    /// The least number of open files the daemon needs (the limit is raised, or it exits).
    #[arg(short = 'a', long, value_name = "NUM")]
    minfds: Option<u64>,

    /// Strip ANSI escape sequences from child logs.
    #[arg(short = 't', long = "strip_ansi")]
    strip_ansi: bool,

    /// Write the man page, minderd.1, into DIR and exit (for packagers).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,

    /// The pre-flight of an upgrade (`minder upgrade` runs the new binary with it): read the
    /// configuration, print `minderd-upgrade-ok VERSION` and exit 0 if this binary can take
    /// over.
    #[arg(long, hide = true)]
    upgrade_check: bool,
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    LogLevel::parse(s).ok_or_else(|| format!("expected one of {}", LogLevel::NAMES))
}

fn parse_format(s: &str) -> Result<logging::LogFormat, String> {
    match s {
        "supervisord" => Ok(logging::LogFormat::Supervisord),
        "json" => Ok(logging::LogFormat::Json),
        _ => Err("expected supervisord or json".into()),
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    config::values::octal(&config::raw::Raw::Str(s.to_string()))
}

fn parse_size(s: &str) -> Result<u64, String> {
    config::values::byte_size(&config::raw::Raw::Str(s.to_string()))
}

/// Exit codes: 0 after a clean shutdown, 1 when start-up fails, 2 for a bad configuration
/// (as supervisord's usage errors).
const START_FAILED: u8 = 1;
const BAD_CONFIG: u8 = 2;

/// Whether argv[0]'s file name is `supervisord` (minderd installed under that name, a symlink,
/// for tools that run supervisord by name).
fn invoked_as_supervisord(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0.and_then(|a| Path::new(a).file_name()).is_some_and(|n| n == "supervisord")
}

/// The arguments, with supervisord's `-?` (its third way of asking for usage) read as `--help`.
fn arguments() -> Vec<std::ffi::OsString> {
    std::env::args_os().map(|a| if a == "-?" { "--help".into() } else { a }).collect()
}

fn main() -> ExitCode {
    let argv = arguments();
    // The sentinel minderd forks runs this binary again under its own name (reaper.rs).
    if let Some(never) = reaper::sentinel_exec(&argv) {
        match never {}
    }
    // An upgrade's hand-over is taken out of the environment before anything else.
    let resumed = upgrade::take_handover();
    let resumed_later;
    let as_supervisord = invoked_as_supervisord(argv.first().map(|a| a.as_os_str()));
    let args = match (Args::try_parse_from(argv), resumed) {
        (Ok(args), resumed) => {
            resumed_later = resumed;
            args
        }
        // An upgrade's new binary that does not take these arguments: back to the old one.
        (Err(e), Some(resumed)) if e.use_stderr() => {
            eprintln!("minderd: {}", resumed.fall_back(&format!("it refused its arguments: {}", e.kind())));
            return ExitCode::from(START_FAILED);
        }
        (Err(e), _) => e.exit(),
    };
    let resumed = resumed_later;
    if let Some(dir) = &args.generate_man {
        use clap::CommandFactory;
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::Man::new(Args::command()).generate_to(dir));
        return match written {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("minderd: cannot write the man page in {}: {e}", dir.display());
                ExitCode::from(START_FAILED)
            }
        };
    }
    spawn::ensure_std_fds();
    spawn::reserve_spawn_slots();
    // A file-size limit must make log writes fail (EFBIG, reported), not kill the daemon.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    // Run as supervisord, only supervisord's own search path is looked at, as supervisord does.
    let search_paths: Vec<PathBuf> = config::search_paths()
        .into_iter()
        .filter(|p| !as_supervisord || p.file_name().is_some_and(|n| n == "supervisord.conf"))
        .collect();
    let Some(path) = args.config.clone().or_else(|| search_paths.iter().find(|p| p.is_file()).cloned())
    else {
        let searched: Vec<String> = search_paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "minderd: no configuration file; give one with -c FILE (looked for {})",
            searched.join(", ")
        );
        return ExitCode::from(BAD_CONFIG);
    };
    let mut config = match load(&path, !args.no_host_checks) {
        Ok(c) => c,
        Err(e) => {
            if let Some(resumed) = resumed {
                eprintln!("minderd: {}", resumed.fall_back(&format!("cannot read the configuration: {e}")));
                return ExitCode::from(START_FAILED);
            }
            eprintln!("minderd: {e}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    // An upgrade: the hand-over must be readable, or the old image takes it back.
    let (mut handover, old_image, fell_back) = match resumed {
        None => (None, None, None),
        Some(mut r) => match std::mem::replace(&mut r.handover, Err(String::new())) {
            Ok(h) => (Some(h), r.old.take(), r.fallback.take()),
            Err(e) => {
                eprintln!("minderd: {}", r.fall_back(&e));
                return ExitCode::from(START_FAILED);
            }
        },
    };
    apply_args(&args, &mut config);
    if args.upgrade_check {
        println!("{} {}", upgrade::CHECK_OK, minder::VERSION);
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        return check_config(&config, args.json);
    }
    for w in &config.warnings {
        eprintln!("minderd: warning: {w}");
    }
    if let Err(e) = setup::check_exposure(&config.daemon) {
        eprintln!("minderd: {e}");
        return ExitCode::from(START_FAILED);
    }
    let start_notes = match setup::before_start(&config) {
        Ok(notes) => notes,
        Err(e) => {
            eprintln!("minderd: {e}");
            return ExitCode::from(START_FAILED);
        }
    };
    let background = match &handover {
        Some(h) => h.background,
        None => args.daemonize || (!config.daemon.nodaemon && !args.nodaemon),
    };
    let readiness = if handover.is_some() {
        // Already in the background (or not) and announced: the pid is the same.
        if background {
            let state_dir = minder::address::default_socket()
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            config.daemon.logfile.get_or_insert_with(|| state_dir.join("minderd.log"));
            config.daemon.pidfile.get_or_insert_with(|| state_dir.join("minderd.pid"));
        }
        Readiness::none()
    } else if background {
        let state_dir =
            minder::address::default_socket().parent().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        // In the background there is no terminal to log to, and the pid must be findable.
        config.daemon.logfile.get_or_insert_with(|| state_dir.join("minderd.log"));
        config.daemon.pidfile.get_or_insert_with(|| state_dir.join("minderd.pid"));
        match daemonize::daemonize(config.daemon.directory.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("minderd: cannot go into the background: {e}");
                return ExitCode::from(START_FAILED);
            }
        }
    } else {
        Readiness::none()
    };
    let fail = |readiness: Readiness, why: String| {
        eprintln!("minderd: {why}");
        readiness.failed(&why);
        ExitCode::from(START_FAILED)
    };
    let target = logging::LogTarget {
        level: config.daemon.loglevel,
        file: config.daemon.logfile.clone().map(|path| minderd::logs::LogSpec {
            path,
            maxbytes: config.daemon.logfile_maxbytes,
            backups: config.daemon.logfile_backups,
            timestamps: false,
            strip_ansi: false,
            json: false,
            compress: None,
        }),
        // supervisord copies its log to standard output in the foreground unless silent.
        echo: !background && !config.daemon.silent,
        format: args.log_format,
    };
    let daemon_log = match logging::init(target) {
        Ok(channel) => channel,
        Err(e) => return fail(readiness, format!("cannot open the log file: {e}")),
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(why) = &fell_back {
        tracing::error!("the upgrade failed ({why}): minderd carries on as it was, with the same binary");
    }
    // supervisord's line for each included file, once the log is open.
    for f in &config.included {
        tracing::info!("Included extra file \"{}\" during parsing", f.display());
    }
    for n in &start_notes {
        n.log();
    }
    for w in setup::unsupported(&config) {
        tracing::warn!("{w}");
    }
    // An upgraded daemon's AUTO logs are its children's, in use.
    if !config.daemon.nocleanup && handover.is_none() {
        setup::clear_auto_logs(&config.daemon.childlogdir, &config.daemon.identifier);
    }
    let image = match upgrade::Image::current(handover.as_ref().map(|h| h.exe.clone()), old_image) {
        Ok(image) => Some(image),
        Err(e) => {
            tracing::warn!("minderd cannot upgrade itself in place: its binary is unknown ({e})");
            None
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(readiness, format!("cannot start the runtime: {e}")),
    };
    // The main thread forks every child and makes an upgrade's exec (see upgrade.rs); the
    // daemon runs on a thread of its own.
    let forks = upgrade::install_forker();
    let daemon = std::thread::Builder::new().name("minderd".into()).spawn(move || {
        let code = runtime.block_on(serve(
            config,
            fell_back,
            readiness,
            daemon_log,
            handover.take(),
            image,
            background,
        ));
        upgrade::quit_forker();
        code
    });
    let daemon = match daemon {
        Ok(d) => d,
        Err(e) => {
            eprintln!("minderd: cannot start: {e}");
            return ExitCode::from(START_FAILED);
        }
    };
    upgrade::serve_forks(forks);
    daemon.join().unwrap_or(ExitCode::from(START_FAILED))
}

/// Binds (or, after an upgrade, adopts) the listeners, finishes the set-up, announces
/// readiness and runs the daemon.
async fn serve(
    config: Config,
    upgrade_failure: Option<String>,
    readiness: Readiness,
    daemon_log: Option<Arc<minderd::logs::LogChannel>>,
    mut handover: Option<upgrade::Handover>,
    image: Option<upgrade::Image>,
    background: bool,
) -> ExitCode {
    let fail = |readiness: Readiness, why: String| {
        eprintln!("minderd: {why}");
        readiness.failed(&why);
        ExitCode::from(START_FAILED)
    };
    {
        let bound = match &mut handover {
            Some(h) => {
                let adopted: Result<Vec<_>, _> =
                    std::mem::take(&mut h.listeners).into_iter().map(listen::Listener::adopt).collect();
                adopted.map_err(|e| format!("cannot take over the listening sockets: {e}"))
            }
            None => listen::bind_all(&config.daemon.listen, config.daemon.socket_mode)
                .await
                .map_err(|e| e.to_string()),
        };
        let listeners = match bound {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return fail(readiness, e);
            }
        };
        let metrics = match handover.as_mut().and_then(|h| h.metrics.take()) {
            Some(fd) => match upgrade::take_fd(fd).and_then(|fd| {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(l) => Some(l),
                Err(e) => return fail(readiness, format!("cannot take over the metrics port: {e}")),
            },
            None => None,
        };
        // TLS and the metrics port are set up before readiness too: a daemon that said it is
        // ready serves on everything it was told to, or it does not start.
        let endpoints = match minderd::Endpoints::prepare_with(&config.daemon, listeners, metrics).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("{e}");
                return fail(readiness, e);
            }
        };
        if let Err(e) = setup::after_bind(&config.daemon, &endpoints.listeners) {
            tracing::error!("{e}");
            return fail(readiness, e);
        }
        let pidfile = match &config.daemon.pidfile {
            Some(p) => match Pidfile::write(p) {
                Ok(f) => Some(f),
                Err(e) => return fail(readiness, format!("cannot write the pidfile {}: {e}", p.display())),
            },
            None => None,
        };
        readiness.ready();
        if handover.is_none() {
            // supervisord's own words, which tools wait for in its log; minderd's line follows.
            tracing::info!("supervisord started with pid {}", std::process::id());
        }
        let lineage = minderd::Lineage { image, handover, background, upgrade_failure };
        // The configuration is the daemon's from here on: one copy, replaced on reload.
        let result =
            minderd::run_as(Arc::new(config), endpoints, daemon_log, std::future::pending(), lineage).await;
        drop(pidfile);
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(START_FAILED)
            }
        }
    }
}

/// Reads the configuration, checking what must exist on this machine when `host_checks`.
fn load(path: &Path, host_checks: bool) -> Result<Config, config::ConfigErrors> {
    let mut ctx = config::Context::from_process();
    ctx.host_checks = host_checks;
    config::load_in(path, &ctx)
}

/// Command-line options override the file, as supervisord's do.
fn apply_args(args: &Args, config: &mut Config) {
    let d = &mut config.daemon;
    if !args.listen.is_empty() {
        d.listen = args.listen.clone();
    }
    if args.nodaemon {
        d.nodaemon = true;
    }
    d.silent |= args.silent;
    if args.user.is_some() {
        d.user = args.user.clone();
    }
    if let Some(m) = args.umask {
        d.umask = m;
    }
    if args.directory.is_some() {
        d.directory = args.directory.clone();
    }
    if args.logfile.is_some() {
        d.logfile = args.logfile.clone();
    }
    if let Some(n) = args.logfile_maxbytes {
        d.logfile_maxbytes = n;
    }
    if let Some(n) = args.logfile_backups {
        d.logfile_backups = n;
    }
    if let Some(level) = args.loglevel {
        d.loglevel = level;
    }
    if args.pidfile.is_some() {
        d.pidfile = args.pidfile.clone();
    }
    if let Some(i) = &args.identifier {
        d.identifier = i.clone();
    }
    if let Some(dir) = &args.childlogdir {
        d.childlogdir = dir.clone();
    }
    d.nocleanup |= args.nocleanup;
    if let Some(n) = args.minfds {
        d.minfds = n;
    }
    d.strip_ansi |= args.strip_ansi;
    d.insecure |= args.insecure;
    if args.metrics.is_some() {
        d.metrics = args.metrics.clone();
    }
}

/// Prints the effective configuration: every process with every option resolved, secrets
/// redacted (see [`redact`]) and modes in octal.
fn check_config(config: &Config, json: bool) -> ExitCode {
    // Printing to a pipe that closes (`| head`) ends the command quietly, as other tools do.
    // SAFETY: restoring SIGPIPE's default disposition has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Log files several outputs share: not an error, but worth knowing (clear and rotation act
    // for all of them). On stderr, so that --json output stays one JSON document.
    for note in minderd::logs::sharing_notes(config) {
        eprintln!("minderd: note: {note}");
    }
    if json {
        match serde_json::to_value(config).and_then(|v| serde_json::to_string_pretty(&redacted(v))) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("minderd: cannot print the configuration: {e}");
                return ExitCode::from(START_FAILED);
            }
        }
    } else {
        for w in &config.warnings {
            println!("# warning: {w}");
        }
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>(),
            other => format!("{other}\n"),
        };
        println!("[daemon]");
        print!("{}", serde_json::to_value(&config.daemon).map(|v| show(&redacted(v))).unwrap_or_default());
        let mut processes: Vec<_> = config.processes().collect();
        processes.sort_by_key(|p| p.full_name());
        for p in processes {
            println!("\n[process.\"{}\"]", p.full_name());
            print!("{}", serde_json::to_value(p).map(|v| show(&redacted(v))).unwrap_or_default());
        }
        let n = config.processes().count();
        eprintln!(
            "minderd: {} is valid: {n} process{}",
            config.path.display(),
            if n == 1 { "" } else { "es" }
        );
    }
    ExitCode::SUCCESS
}

/// What --check-config prints in place of a secret.
const REDACTED: &str = "<redacted>";

/// The options whose value is a file mode or umask, printed in octal as they are written.
const MODE_KEYS: &[&str] = &["umask", "socket_mode", "mode"];

/// `v` ready to print: see [`redact`].
fn redacted(mut v: serde_json::Value) -> serde_json::Value {
    redact(&mut v);
    v
}

/// Hides secrets in the effective configuration, which is printed, pasted into tickets and
/// kept in CI logs: every `password` (plain or `{SHA}`: a SHA-1 of a password is easily
/// reversed), and the `environment` (and `[rpcinterface:x]` option) values whose name says
/// they are secret ([`is_secret_name`]). Tokens are never serialized at all. Modes and umasks
/// become octal strings ("0022"), as they are written in a configuration.
fn redact(v: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = v else {
        if let Value::Array(items) = v {
            items.iter_mut().for_each(redact);
        }
        return;
    };
    for (key, value) in map.iter_mut() {
        match (key.as_str(), &mut *value) {
            ("password", Value::String(s)) => *s = REDACTED.to_string(),
            ("environment" | "options", Value::Object(vars)) => {
                for (name, val) in vars.iter_mut() {
                    if is_secret_name(name) {
                        *val = Value::from(REDACTED);
                    }
                }
            }
            (k, Value::Number(n)) if MODE_KEYS.contains(&k) => {
                if let Some(mode) = n.as_u64() {
                    *value = Value::from(format!("{mode:04o}"));
                }
            }
            _ => redact(value),
        }
    }
}

/// Whether an environment variable's name says it holds a secret: it contains PASS
/// (PASSWORD, PASSWD, PASSPHRASE), TOKEN, SECRET, KEY or CREDENTIAL, in any case.
/// Erring towards hiding: `KEYBOARD_LAYOUT` is hidden too.
fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASS", "TOKEN", "SECRET", "KEY", "CREDENTIAL"].iter().any(|w| upper.contains(w))
}

/// The pidfile; removed on drop if it still holds this process's pid.
struct Pidfile(PathBuf);

impl Pidfile {
    /// Written as log files are opened (no link another user could have planted is followed,
    /// no FIFO hangs it): a pidfile in /tmp written by root must not truncate what a link
    /// there points at.
    fn write(path: &Path) -> std::io::Result<Pidfile> {
        use std::io::Write as _;
        let mut file = minderd::logs::open_append(path)?;
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
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
