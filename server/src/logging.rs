//! The daemon's own log, in supervisord's line format:
//! `2026-11-24 05:07:01,123 INFO spawned: 'web' with pid 20535`.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use minder::config::LogLevel;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Formats events as supervisord's log lines.
struct SupervisordFormat;

impl<S, N> FormatEvent<S, N> for SupervisordFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now();
        let level = match *event.metadata().level() {
            Level::ERROR => "ERRO",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBG",
            Level::TRACE => "TRAC",
        };
        write!(w, "{} {level} ", now.format("%Y-%m-%d %H:%M:%S,%3f"))?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn filter(level: LogLevel) -> Targets {
    let level = match level {
        LogLevel::Critical | LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace | LogLevel::Blather => LevelFilter::TRACE,
    };
    // minder's own messages at the configured level; libraries only when they warn.
    Targets::new()
        .with_target("minderd", level)
        .with_target("minder", level)
        .with_default(LevelFilter::WARN)
}

/// Sends the daemon's log to `logfile` (appending), or to standard output.
pub fn init(level: LogLevel, logfile: Option<&Path>) -> std::io::Result<()> {
    let registry = tracing_subscriber::registry().with(filter(level));
    let layer = tracing_subscriber::fmt::layer().event_format(SupervisordFormat);
    match logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            registry
                .with(layer.with_writer(Mutex::new(file)).with_ansi(false))
                .init();
        }
        None => registry
            .with(layer.with_writer(std::io::stdout).with_ansi(false))
            .init(),
    }
    Ok(())
}
