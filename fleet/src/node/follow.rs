//! Following a process's stdout or stderr on a node, as a stream of [`Piece`]s of bytes.
//!
//! - minderd: one `TailLog` call with `follow`: the node pushes each write as it happens;
//!   bytes rotated away before they were read come as the chunk's `skipped`.
//! - supervisord: `tailProcessStdoutLog(name, offset, length)` every `poll_interval`, each call
//!   read-only and under `call_timeout`. supervisord answers `[text, size, overflow]`, where
//!   the text is the last `length` bytes up to `size` whenever the file grew past `offset`:
//!   the new bytes are the last `size - offset` of it, and with more new bytes than that the
//!   middle is reported skipped. A size below the offset asked for means the file was
//!   rotated or cleared, and the new file is then read from its start.
//!
//! The first read is made before the source is handed out, so a node that cannot serve the
//! log is an error the client gets as an HTTP status, not a stream that ends at once.

use std::time::Duration;

use minder::pb;
use minder::xmlrpc::Value;

use super::xmlrpc::XmlRpcClient;
use super::CallError;
use crate::config::Timing;

/// How much of the log is shown when a follow starts.
pub const FIRST_BYTES: u64 = 2048;

/// The most one supervisord poll reads; more new output than this in one interval is skipped
/// (and said to be).
pub const POLL_BYTES: i64 = 64 * 1024;

/// Something worth telling the reader besides the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// This many bytes before the piece were not read (rotated away, or more than a poll takes).
    Skipped(u64),
    /// The log file was rotated or cleared; the piece starts the new one.
    Rotated,
}

/// Bytes of the log, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub data: Vec<u8>,
    /// The piece starts inside a line (its first partial line is not shown).
    pub cut: bool,
    pub note: Option<Note>,
}

/// A log being followed on one node.
#[derive(Debug)]
pub enum LogSource {
    Grpc {
        stream: tonic::Streaming<pb::LogChunk>,
        first: bool,
        deadline: Duration,
    },
    XmlRpc {
        client: XmlRpcClient,
        name: String,
        method: &'static str,
        /// The log's size as supervisord last gave it: where the next read starts.
        offset: i64,
        timing: Timing,
        /// The first read, made when the follow started.
        pending: Option<Piece>,
    },
}

/// supervisord's answer to a tail: `[text, size, overflow]`.
fn tail_answer(v: Value) -> Result<(Vec<u8>, i64, bool), CallError> {
    let Value::Array(v) = v else {
        return Err(CallError::Protocol("a tail that is not [text, offset, overflow]".into()));
    };
    let text = match v.first() {
        Some(Value::String(s)) => s.clone().into_bytes(),
        _ => Vec::new(),
    };
    let size = match v.get(1) {
        Some(Value::Int(n)) => *n,
        _ => return Err(CallError::Protocol("a tail without its offset".into())),
    };
    Ok((text, size, matches!(v.get(2), Some(Value::Bool(true)))))
}

impl LogSource {
    pub(super) async fn grpc(
        mut client: super::grpc::Client,
        full: &str,
        stderr: bool,
        deadline: Duration,
    ) -> Result<LogSource, CallError> {
        let channel = if stderr { pb::LogChannel::Stderr } else { pb::LogChannel::Stdout };
        let req = pb::TailLogRequest {
            names: vec![full.to_string()],
            channels: vec![channel as i32],
            start: Some(pb::tail_log_request::Start::LastBytes(FIRST_BYTES)),
            follow: true,
            resume: vec![],
        };
        let stream = match tokio::time::timeout(deadline, client.tail_log(req)).await {
            Err(_) => return Err(CallError::TimedOut(deadline)),
            Ok(Err(s)) => return Err(super::grpc::status_error(&s, deadline)),
            Ok(Ok(r)) => r.into_inner(),
        };
        Ok(LogSource::Grpc { stream, first: true, deadline })
    }

    pub(super) async fn xmlrpc(
        client: XmlRpcClient,
        full: &str,
        stderr: bool,
        timing: Timing,
    ) -> Result<LogSource, CallError> {
        let method =
            if stderr { "supervisor.tailProcessStderrLog" } else { "supervisor.tailProcessStdoutLog" };
        let args = [Value::from(full), Value::Int(0), Value::Int(FIRST_BYTES as i64)];
        let (data, size, overflow) = tail_answer(client.call(method, &args, timing.call_timeout).await?)?;
        Ok(LogSource::XmlRpc {
            client,
            name: full.to_string(),
            method,
            offset: size,
            timing,
            pending: Some(Piece { data, cut: overflow, note: None }),
        })
    }

    /// The next piece of the log; `None` when the node ended the stream (it shuts down).
    /// Cancel-safe for the reader's purpose: dropping the future loses at most one poll.
    pub async fn next(&mut self) -> Result<Option<Piece>, CallError> {
        match self {
            LogSource::Grpc { stream, first, deadline } => match stream.message().await {
                Ok(Some(chunk)) => {
                    let cut = std::mem::replace(first, false) && chunk.offset > 0;
                    let note = (chunk.skipped > 0).then_some(Note::Skipped(chunk.skipped));
                    Ok(Some(Piece { data: chunk.data, cut, note }))
                }
                Ok(None) => Ok(None),
                Err(s) => Err(super::grpc::status_error(&s, *deadline)),
            },
            LogSource::XmlRpc { client, name, method, offset, timing, pending } => {
                if let Some(p) = pending.take() {
                    return Ok(Some(p));
                }
                loop {
                    tokio::time::sleep(timing.poll_interval).await;
                    let args = [Value::from(name.as_str()), Value::Int(*offset), Value::Int(POLL_BYTES)];
                    let (data, size, _) =
                        tail_answer(client.call(method, &args, timing.call_timeout).await?)?;
                    if size < *offset {
                        // Rotated or cleared: read the new file from its start.
                        let args = [Value::from(name.as_str()), Value::Int(0), Value::Int(POLL_BYTES)];
                        let (data, size, overflow) =
                            tail_answer(client.call(method, &args, timing.call_timeout).await?)?;
                        *offset = size;
                        return Ok(Some(Piece { data, cut: overflow, note: Some(Note::Rotated) }));
                    }
                    if size == *offset {
                        continue;
                    }
                    // A tail is the last `length` bytes up to the end, not what follows the
                    // offset: the new bytes are the end of it.
                    let new = (size - *offset) as usize;
                    *offset = size;
                    if new <= data.len() {
                        let data = data[data.len() - new..].to_vec();
                        return Ok(Some(Piece { data, cut: false, note: None }));
                    }
                    let note = Some(Note::Skipped((new - data.len()) as u64));
                    return Ok(Some(Piece { data, cut: true, note }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_answer_is_read_or_refused() {
        let v = Value::Array(vec![Value::from("ab\n"), Value::Int(10), Value::Bool(true)]);
        assert_eq!(tail_answer(v).ok(), Some((b"ab\n".to_vec(), 10, true)));
        assert!(tail_answer(Value::Int(1)).is_err());
        assert!(tail_answer(Value::Array(vec![Value::from("x")])).is_err());
    }
}
