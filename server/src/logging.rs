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

/// How each line of the daemon's log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// supervisord's: `2026-11-24 05:07:01,123 INFO spawned: 'web' with pid 20535`.
    #[default]
    Supervisord,
    /// One JSON object per line: `{"time":"…","level":"INFO","message":"spawned: …"}`, plus
    /// any structured fields the event carries.
    Json,
}

/// Formats events as log lines in the chosen format.
struct LineFormat(LogFormat);

/// Collects an event's fields for the JSON format.
#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = chrono::Local::now();
        let level = *event.metadata().level();
        match self.0 {
            LogFormat::Supervisord => {
                let level = match level {
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
            LogFormat::Json => {
                let mut fields = Fields::default();
                event.record(&mut fields);
                let mut line = serde_json::Map::new();
                line.insert("time".into(), now.to_rfc3339_opts(chrono::SecondsFormat::Millis, false).into());
                line.insert("level".into(), level.as_str().into());
                line.extend(fields.0);
                writeln!(w, "{}", serde_json::Value::Object(line))
            }
        }
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
    pub format: LogFormat,
}

/// Sends the daemon's log to its file (through a log channel, which rotates it and lets
/// `maintail` read it), or to standard output. Returns the channel, if any.
pub fn init(target: LogTarget) -> std::io::Result<Option<Arc<LogChannel>>> {
    let registry = tracing_subscriber::registry().with(filter(target.level));
    let format = target.format;
    let layer = tracing_subscriber::fmt::layer().event_format(LineFormat(format)).with_ansi(false);
    match target.file {
        Some(spec) => {
            // Fail now, with the reason, rather than at the first line.
            crate::logs::open_append(&spec.path)?;
            let channel = LogChannel::new(spec);
            let echo = target.echo.then(|| {
                tracing_subscriber::fmt::layer()
                    .event_format(LineFormat(format))
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
