//! The daemon's own log, in supervisord's line format:
//! `2026-11-24 05:07:01,123 INFO spawned: 'web' with pid 20535`.

use std::fmt;
use std::io::Write;
use std::sync::Arc;

use minder::config::LogLevel;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::logs::{LogChannel, LogSpec};

/// Formats events as supervisord's log lines.
struct SupervisordFormat;

impl<S, N> FormatEvent<S, N> for SupervisordFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
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
    Targets::new().with_target("minderd", level).with_target("minder", level).with_default(LevelFilter::WARN)
}

/// Writes each formatted event into the daemon's log channel as one write, so a line is never
/// split by a rotation.
struct ChannelWriter(Arc<LogChannel>);

/// One event's bytes, written to the channel when dropped.
struct Line {
    channel: Arc<LogChannel>,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.channel.write(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for ChannelWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { channel: Arc::clone(&self.0), buf: Vec::with_capacity(128) }
    }
}

/// Where the daemon's log goes, and how it rotates.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub level: LogLevel,
    /// `None` for standard output.
    pub file: Option<LogSpec>,
    /// With a file, copy every line to standard output too (supervisord in the foreground).
    pub echo: bool,
}

/// Sends the daemon's log to its file (through a log channel, which rotates it and lets
/// `maintail` read it), or to standard output. Returns the channel, if any.
pub fn init(target: LogTarget) -> std::io::Result<Option<Arc<LogChannel>>> {
    let registry = tracing_subscriber::registry().with(filter(target.level));
    let layer = tracing_subscriber::fmt::layer().event_format(SupervisordFormat).with_ansi(false);
    match target.file {
        Some(spec) => {
            // Fail now, with the reason, rather than at the first line.
            std::fs::OpenOptions::new().create(true).append(true).open(&spec.path)?;
            let channel = LogChannel::new(spec);
            let echo = target.echo.then(|| {
                tracing_subscriber::fmt::layer()
                    .event_format(SupervisordFormat)
                    .with_ansi(false)
                    .with_writer(std::io::stdout)
            });
            registry.with(layer.with_writer(ChannelWriter(Arc::clone(&channel)))).with(echo).init();
            Ok(Some(channel))
        }
        None => {
            registry.with(layer.with_writer(std::io::stdout)).init();
            Ok(None)
        }
    }
}
