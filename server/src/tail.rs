//! Which logs a tail reads, and from where: one choice for every front end.
//!
//! `minder tail` (gRPC `TailLog`), `/logtail` and the web page's log view all name processes
//! and outputs and a place to start; [`choose`] turns that into the [`Source`]s to stream with
//! [`LogChannel::stream`], with the same rules everywhere: a process named on its own must
//! have the output asked for, among several one that lacks it is left out, and a start beyond
//! the end is refused rather than silently moved.

use std::sync::Arc;

use crate::logs::{LogChannel, ReadError};
use crate::process::ProcessHandle;
use crate::supervisor::{RequestError, Supervisor};

/// The default start of a tail, as supervisorctl's: the last 1600 bytes.
pub const TAIL_BYTES: u64 = 1600;

/// A process's captured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
        }
    }

    /// This output's channel in `h`, when it is captured.
    pub fn of(self, h: &ProcessHandle) -> Option<&Arc<LogChannel>> {
        match self {
            Output::Stdout => h.logs.stdout.as_ref(),
            Output::Stderr => h.logs.stderr.as_ref(),
        }
    }
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    LastBytes(u64),
    LastLines(u64),
    Offset(u64),
}

/// One log to stream, from `pos`.
#[derive(Debug)]
pub struct Source {
    pub channel: Arc<LogChannel>,
    pub pos: u64,
    /// The process's full name (`group:name`).
    pub process: String,
    pub output: Output,
}

/// Why a tail cannot be made.
#[derive(Debug)]
pub enum TailError {
    Request(RequestError),
    Read(ReadError),
    /// The one process named lacks the output asked for; says why.
    NotCaptured(String),
    /// None of the selected processes has any of the outputs asked for.
    NothingCaptured,
}

impl std::fmt::Display for TailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailError::Request(RequestError::NotFound(name)) => write!(f, "no such process: {name}"),
            TailError::Request(RequestError::InvalidArgument(m)) => f.write_str(m),
            TailError::Request(RequestError::ShuttingDown) => f.write_str("minderd is shutting down"),
            TailError::Read(e) => write!(f, "{e}"),
            TailError::NotCaptured(why) => f.write_str(why),
            TailError::NothingCaptured => f.write_str("none of the selected outputs is captured"),
        }
    }
}

impl From<RequestError> for TailError {
    fn from(e: RequestError) -> TailError {
        TailError::Request(e)
    }
}

impl From<ReadError> for TailError {
    fn from(e: ReadError) -> TailError {
        TailError::Read(e)
    }
}

/// What to read, and notices for the reader (a `tail -n` cut short by the scan limit).
#[derive(Debug)]
pub struct Tail {
    pub sources: Vec<Source>,
    pub notices: Vec<String>,
}

/// Chooses the logs of `selectors` to read. `outputs` empty means both, each where captured;
/// `resume(process, output)` gives a position to carry on from, which wins over `start`.
pub async fn choose(
    sup: &Supervisor,
    selectors: &[String],
    outputs: &[Output],
    start: Option<Start>,
    resume: impl Fn(&str, Output) -> Option<u64>,
) -> Result<Tail, TailError> {
    let handles = sup.select_for_reading(selectors)?;
    let explicit = !outputs.is_empty();
    let wanted: &[Output] = if explicit { outputs } else { &[Output::Stdout, Output::Stderr] };
    let mut tail = Tail { sources: Vec::new(), notices: Vec::new() };
    for h in &handles {
        let full = h.config.full_name();
        for &output in wanted {
            match output.of(h) {
                Some(ch) => {
                    ch.readable()?;
                    let what = format!("{full} ({})", output.name());
                    let from = resume(&full, output).map(Start::Offset).or(start);
                    let pos = start_of(ch, from, &what, &mut tail.notices).await?;
                    tail.sources.push(Source { channel: Arc::clone(ch), pos, process: full.clone(), output });
                }
                // A process named on its own must have the output asked for; among several,
                // one that lacks it is left out (`tail -f all` with a NONE log).
                None if handles.len() == 1 && (explicit || output == Output::Stdout) => {
                    let why = if output == Output::Stderr && h.config.redirect_stderr {
                        "is redirected to its stdout"
                    } else {
                        "is not captured (its log file is NONE)"
                    };
                    return Err(TailError::NotCaptured(format!("the {} of {full} {why}", output.name())));
                }
                None => {}
            }
        }
    }
    if tail.sources.is_empty() {
        return Err(TailError::NothingCaptured);
    }
    Ok(tail)
}

/// Where a tail starts in `channel` (the last [`TAIL_BYTES`] without a `start`). A `tail -n`
/// whose lines start further back than the scan goes gets the last bytes and a notice.
pub async fn start_of(
    channel: &Arc<LogChannel>,
    start: Option<Start>,
    what: &str,
    notices: &mut Vec<String>,
) -> Result<u64, ReadError> {
    Ok(match start {
        None => channel.start_for_last_bytes(TAIL_BYTES),
        Some(Start::LastBytes(n)) => channel.start_for_last_bytes(n),
        Some(Start::LastLines(n)) => {
            let found = channel.last_lines(n).await?;
            if found.bounded {
                notices.push(format!(
                    "the last {n} lines of {what} start more than {} bytes back; showing the last {} bytes",
                    crate::logs::LINES_SCAN_LIMIT,
                    channel.end().saturating_sub(found.offset)
                ));
            }
            found.offset
        }
        Some(Start::Offset(o)) => {
            let end = channel.end();
            if o > end {
                return Err(ReadError::BeyondEnd { offset: o, end });
            }
            o
        }
    })
}
