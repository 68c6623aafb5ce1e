//! Supervisor's event listener protocol: `[eventlistener:x]` pools, their buffers, and the
//! conversation with each listener process over its stdin and stdout.
//!
//! Events are *notified* to the [`Hub`] as they happen (a state change, a tick, a chunk of
//! output, a remote message). Each pool that subscribes to the event's type (or to its
//! family, or to `EVENT`) takes it into its buffer, oldest dropped when the buffer is full,
//! and hands the oldest buffered event to its first listener that is RUNNING and READY. The
//! listener answers on its stdout (`RESULT <len>\n<body>`); `OK` accepts, anything else
//! rejects, and a rejected event — or one whose listener died before answering — goes back to
//! the head of the buffer. This is supervisord's `EventListenerPool` and
//! `PEventListenerDispatcher`, message for message and log line for log line.
//!
//! A listener controls what it writes: [`Protocol`] parses it with bounded memory whatever it
//! sends (a result body is compared with `OK` as it streams past, never stored; a result line
//! longer than [`MAX_RESULT_LINE`] is a protocol violation), and never panics.
//!
//! A gRPC `WatchEvents` client may ask for the events that are not state changes (output,
//! capture mode, ticks, remote messages): it gets a [`Tap`], a bounded channel fed by the
//! same notifications; a client that reads too slowly loses events and is told how many.
//!
//! Nothing here runs unless a pool or tap exists: with no listener configured, notifying is a lock
//! and an empty loop, and no tick timer is started (an idle minderd keeps sleeping).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use minder::config::EventListenerPool;

use crate::process::Stdin;

/// The families an `events =` line may name, each standing for every type that starts with
/// its name and `_` (`EVENT` stands for all of them).
const FAMILIES: &[&str] = &[
    "PROCESS_STATE",
    "PROCESS_COMMUNICATION",
    "PROCESS_LOG",
    "SUPERVISOR_STATE_CHANGE",
    "TICK",
    "PROCESS_GROUP",
];

/// The longest result line (`RESULT <len>`) a listener may send: far more than any honest
/// number needs, and all a listener can make minderd hold before it has answered.
pub const MAX_RESULT_LINE: usize = 128;

/// Whether a pool subscribed to `subscription` receives events of type `event`.
pub fn subscribes(subscription: &str, event: &str) -> bool {
    subscription == "EVENT"
        || subscription == event
        || (FAMILIES.contains(&subscription)
            && event.len() > subscription.len()
            && event.starts_with(subscription)
            && event.as_bytes()[subscription.len()] == b'_')
}

/// Where a listener is in the protocol (supervisord's `EventListenerStates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// Started, or answered an event: waiting for `READY\n`.
    Acknowledged,
    /// Said `READY\n`: may be sent an event.
    Ready,
    /// Was sent an event: waiting for its `RESULT`.
    Busy,
    /// Broke the protocol: sent nothing more until it is restarted.
    Unknown,
}

impl ListenerState {
    fn name(self) -> &'static str {
        match self {
            ListenerState::Acknowledged => "ACKNOWLEDGED",
            ListenerState::Ready => "READY",
            ListenerState::Busy => "BUSY",
            ListenerState::Unknown => "UNKNOWN",
        }
    }
}

/// What a listener's output meant, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// `READY\n`: it may be sent an event.
    Ready,
    /// A result whose body was `OK`.
    Accepted,
    /// A result with any other body.
    Rejected,
    /// A result line whose length is not a number (shown as Python shows it).
    BadResultLine(String),
    /// Something other than `READY\n` when that was due, or output while READY.
    Violation,
}

/// The listener side of the protocol, fed the listener's stdout as it arrives. Holds at most
/// [`MAX_RESULT_LINE`] bytes, however the output is cut into reads.
#[derive(Debug, Clone)]
pub struct Protocol {
    state: ListenerState,
    /// A partial `READY\n` or result line.
    pending: Vec<u8>,
    /// The result being read: its declared length, how much of it has come, and whether
    /// what has come so far is a prefix of `OK`.
    body: Option<(u64, u64, bool)>,
}

const READY_TOKEN: &[u8] = b"READY\n";
const RESULT_TOKEN_LEN: usize = b"RESULT ".len();

impl Default for Protocol {
    fn default() -> Self {
        Protocol::new()
    }
}

impl Protocol {
    /// A listener just started: ACKNOWLEDGED, as supervisord sets it.
    pub fn new() -> Protocol {
        Protocol { state: ListenerState::Acknowledged, pending: Vec::new(), body: None }
    }

    pub fn state(&self) -> ListenerState {
        self.state
    }

    /// An event was sent: READY becomes BUSY.
    pub fn sent(&mut self) {
        self.state = ListenerState::Busy;
        self.pending.clear();
        self.body = None;
    }

    /// The listener can no longer be sent events (its stdin is gone).
    pub fn give_up(&mut self) {
        self.state = ListenerState::Unknown;
        self.pending.clear();
        self.body = None;
    }

    /// Reads `data`, appending what it meant to `heard`; state changes as supervisord's
    /// `handle_listener_state_change` makes them.
    pub fn feed(&mut self, mut data: &[u8], heard: &mut Vec<Heard>) {
        loop {
            match self.state {
                ListenerState::Unknown => {
                    self.pending.clear();
                    return;
                }
                ListenerState::Acknowledged => {
                    let take = (READY_TOKEN.len() - self.pending.len()).min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() < READY_TOKEN.len() {
                        return;
                    }
                    if self.pending == READY_TOKEN {
                        self.state = ListenerState::Ready;
                        heard.push(Heard::Ready);
                    } else {
                        self.state = ListenerState::Unknown;
                        heard.push(Heard::Violation);
                    }
                    self.pending.clear();
                }
                ListenerState::Ready => {
                    if data.is_empty() {
                        return;
                    }
                    // Spurious output while READY: supervisord is strict about it.
                    self.state = ListenerState::Unknown;
                    heard.push(Heard::Violation);
                    return;
                }
                ListenerState::Busy => match self.body {
                    None => {
                        let Some(pos) = data.iter().position(|&b| b == b'\n') else {
                            self.pending.extend_from_slice(data);
                            if self.pending.len() > MAX_RESULT_LINE {
                                let line = std::mem::take(&mut self.pending);
                                self.state = ListenerState::Unknown;
                                heard.push(Heard::BadResultLine(shown(
                                    &line[..MAX_RESULT_LINE.min(line.len())],
                                )));
                            }
                            return;
                        };
                        self.pending.extend_from_slice(&data[..pos]);
                        data = &data[pos + 1..];
                        let line = std::mem::take(&mut self.pending);
                        if line.len() > MAX_RESULT_LINE {
                            self.state = ListenerState::Unknown;
                            heard.push(Heard::BadResultLine(shown(&line[..MAX_RESULT_LINE])));
                            return;
                        }
                        match python_int(line.get(RESULT_TOKEN_LEN..).unwrap_or_default()) {
                            Some(len) => self.body = Some((len, 0, true)),
                            None => {
                                self.state = ListenerState::Unknown;
                                heard.push(Heard::BadResultLine(shown(&line)));
                                return;
                            }
                        }
                    }
                    Some((len, seen, ok)) => {
                        let take = (len - seen).min(data.len() as u64) as usize;
                        let mut ok = ok;
                        for (i, &b) in data[..take].iter().enumerate() {
                            let at = seen as usize + i;
                            ok &= b"OK".get(at) == Some(&b);
                        }
                        data = &data[take..];
                        let seen = seen + take as u64;
                        if seen < len {
                            self.body = Some((len, seen, ok));
                            return;
                        }
                        self.body = None;
                        self.state = ListenerState::Acknowledged;
                        heard.push(if ok && len == 2 { Heard::Accepted } else { Heard::Rejected });
                    }
                },
            }
            // A result of length 0 is complete with no more data.
            if data.is_empty() && !matches!(self.body, Some((len, seen, _)) if seen == len) {
                return;
            }
        }
    }
}

/// Python's `int()` of a result length (surrounding whitespace and a `+` allowed); a length
/// below zero or beyond u64 is refused, as no listener can mean it.
fn python_int(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    let s = s.strip_prefix(b"+").unwrap_or(s);
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// A result line as supervisord shows it: the text, or `Undecodable: b'...'`.
fn shown(line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Ok(s) => s.to_string(),
        Err(_) => format!("Undecodable: {}", crate::capture::python_bytes_repr(line)),
    }
}

/// An event as a pool holds it.
#[derive(Debug, Clone)]
struct Queued {
    serial: u64,
    pool_serial: u64,
    name: &'static str,
    payload: Arc<str>,
}

/// One listener process of a pool.
#[derive(Debug)]
struct Member {
    /// The current child; output and exits of an earlier one are ignored.
    pid: u32,
    running: bool,
    stdin: Option<Stdin>,
    protocol: Protocol,
    /// The event it was sent and has not answered.
    current: Option<Queued>,
}

#[derive(Debug)]
struct Pool {
    subscriptions: Vec<String>,
    buffer_size: usize,
    buffer: VecDeque<Queued>,
    /// The next pool serial (supervisord's start at 0).
    next_serial: u64,
    members: BTreeMap<String, Member>,
}

#[derive(Debug, Default)]
struct Inner {
    identifier: String,
    /// The next global serial, given to an event when a first pool takes it.
    next_serial: u64,
    pools: BTreeMap<String, Pool>,
    taps: Vec<TapSender>,
}

/// The event types a [`Tap`] may ask for: those that are not state changes (which a
/// `WatchEvents` client gets from the history already).
pub const TAPPABLE: &[&str] = &[
    "PROCESS_LOG_STDOUT",
    "PROCESS_LOG_STDERR",
    "PROCESS_COMMUNICATION_STDOUT",
    "PROCESS_COMMUNICATION_STDERR",
    "TICK_5",
    "TICK_60",
    "TICK_3600",
    "REMOTE_COMMUNICATION",
];

/// How many events a tap holds for a slow reader before it drops them.
const TAP_BUFFER: usize = 1024;

/// An event as a tap delivers it.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub name: &'static str,
    pub payload: Arc<str>,
    pub time: SystemTime,
    /// Events dropped just before this one, the reader being too slow.
    pub dropped_before: u64,
}

/// The receiving end of a tap; dropping it removes the tap (at the next event).
pub type Tap = tokio::sync::mpsc::Receiver<Tapped>;

#[derive(Debug)]
struct TapSender {
    subscriptions: Vec<String>,
    tx: tokio::sync::mpsc::Sender<Tapped>,
    dropped: u64,
}

impl TapSender {
    fn wants(&self, name: &str) -> bool {
        TAPPABLE.contains(&name) && self.subscriptions.iter().any(|s| subscribes(s, name))
    }
}

/// Whether `name` is an event type or family that a tap can be given (`EVENT` included).
pub fn tappable(name: &str) -> bool {
    TAPPABLE.iter().any(|t| subscribes(name, t))
}

/// Every event listener pool of the daemon.
#[derive(Debug, Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Whether the tick task runs.
    ticking: AtomicBool,
    /// Set once the hub's owner is gone, for the tasks it spawned.
    me: Mutex<Weak<Hub>>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        let hub = Arc::new(Hub::default());
        *hub.me.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&hub);
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock panics half-way through a change.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn me(&self) -> Weak<Hub> {
        self.me.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The daemon's identifier, which every envelope carries as `server:`.
    pub fn set_identifier(&self, identifier: &str) {
        self.lock().identifier = identifier.to_string();
    }

    /// Creates pool `name`, or updates its subscriptions and buffer size; starts the tick
    /// timer if it now has a subscriber.
    pub fn ensure_pool(&self, name: &str, config: &EventListenerPool) {
        {
            let mut inner = self.lock();
            let pool = inner.pools.entry(name.to_string()).or_insert_with(|| Pool {
                subscriptions: Vec::new(),
                buffer_size: 0,
                buffer: VecDeque::new(),
                next_serial: 0,
                members: BTreeMap::new(),
            });
            pool.subscriptions = config.events.clone();
            pool.buffer_size = config.buffer_size as usize;
        }
        self.ensure_ticks();
    }

    /// Pool `name` goes away with its group (before the group's removal is notified, as
    /// supervisord unsubscribes it first). What it still buffered is dropped.
    pub fn remove_pool(&self, name: &str) {
        self.lock().pools.remove(name);
    }

    /// A tap for `subscriptions` (each [`tappable`]): the events of those types from now on.
    pub fn tap(&self, subscriptions: Vec<String>) -> Tap {
        let (tx, rx) = tokio::sync::mpsc::channel(TAP_BUFFER);
        self.lock().taps.push(TapSender { subscriptions, tx, dropped: 0 });
        self.ensure_ticks();
        rx
    }

    /// An event happened: every pool that subscribes to `name` buffers it (the payload is made
    /// only if one does), and dispatches what it can; taps that want it get it.
    pub fn notify(&self, name: &'static str, payload: impl FnOnce() -> String) {
        let mut inner = self.lock();
        if inner.pools.is_empty() && inner.taps.is_empty() {
            return;
        }
        let Inner { identifier, next_serial, pools, taps } = &mut *inner;
        let mut payload = Some(payload);
        let mut text: Option<Arc<str>> = None;
        if taps.iter().any(|t| t.wants(name)) {
            let made: Arc<str> = Arc::from(payload.take().expect("made once")());
            let time = SystemTime::now();
            taps.retain_mut(|t| {
                if !t.wants(name) {
                    return !t.tx.is_closed();
                }
                let ev = Tapped { name, payload: Arc::clone(&made), time, dropped_before: t.dropped };
                match t.tx.try_send(ev) {
                    Ok(()) => {
                        t.dropped = 0;
                        true
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        t.dropped += 1;
                        true
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            text = Some(made);
        }
        let mut made: Option<(u64, Arc<str>)> = None;
        for (pool_name, pool) in pools.iter_mut() {
            if !pool.subscriptions.iter().any(|s| subscribes(s, name)) {
                continue;
            }
            let (serial, text) = made.get_or_insert_with(|| {
                let serial = *next_serial;
                *next_serial += 1;
                let text = match (text.take(), payload.take()) {
                    (Some(text), _) => text,
                    (None, Some(make)) => Arc::from(make()),
                    (None, None) => Arc::from(""),
                };
                (serial, text)
            });
            let queued =
                Queued { serial: *serial, pool_serial: pool.next_serial, name, payload: Arc::clone(text) };
            pool.next_serial += 1;
            accept(pool_name, pool, queued, false);
            dispatch(&self.me(), identifier, pool_name, pool);
        }
    }

    /// A listener process of pool `pool` was spawned as `pid`, with `stdin` to write events
    /// to: it starts ACKNOWLEDGED.
    pub fn attach(&self, pool: &str, process: &str, pid: u32, stdin: Stdin) {
        let mut inner = self.lock();
        let Some(p) = inner.pools.get_mut(pool) else { return };
        let old = p.members.insert(
            process.to_string(),
            Member { pid, running: false, stdin: Some(stdin), protocol: Protocol::new(), current: None },
        );
        // An event the previous child never answered (its exit not yet seen) is sent again.
        if let Some(ev) = old.and_then(|m| m.current) {
            accept(pool, p, ev, true);
        }
    }

    /// The state of a listener process changed: only a RUNNING one is sent events; once its
    /// child `pid` is gone (`alive` false), the event it had not answered goes back to the
    /// head of the buffer. News of an earlier child is ignored.
    pub fn process_state(&self, pool: &str, process: &str, pid: u32, alive: bool, running: bool) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(p) = inner.pools.get_mut(pool) else { return };
        let Some(m) = p.members.get_mut(process) else { return };
        if m.pid != pid {
            return;
        }
        m.running = alive && running;
        if !alive {
            m.stdin = None;
            if let Some(ev) = m.current.take() {
                accept(pool, p, ev, true);
            }
        }
        dispatch(&self.me(), &inner.identifier, pool, p);
    }

    /// A listener process wrote `data` on its stdout.
    pub fn heard(&self, pool: &str, process: &str, pid: u32, data: &[u8]) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(p) = inner.pools.get_mut(pool) else { return };
        let Some(m) = p.members.get_mut(process) else { return };
        if m.pid != pid {
            return;
        }
        let mut heard = Vec::new();
        let before = m.protocol.state();
        m.protocol.feed(data, &mut heard);
        let mut state = before;
        let mut requeue = Vec::new();
        for h in heard {
            let next = match &h {
                Heard::Ready => ListenerState::Ready,
                Heard::Accepted | Heard::Rejected => ListenerState::Acknowledged,
                Heard::BadResultLine(_) | Heard::Violation => ListenerState::Unknown,
            };
            match h {
                Heard::Ready => m.current = None,
                Heard::Accepted => {
                    m.current = None;
                    tracing::debug!("{process}: event was processed");
                }
                Heard::Rejected => {
                    tracing::warn!("{process}: event was rejected");
                    requeue.extend(m.current.take());
                }
                Heard::BadResultLine(line) => {
                    tracing::warn!("{process}: bad result line: '{line}'");
                    requeue.extend(m.current.take());
                }
                Heard::Violation => m.current = None,
            }
            tracing::debug!("{process}: {} -> {}", state.name(), next.name());
            if next == ListenerState::Unknown {
                tracing::warn!(
                    "{process}: has entered the UNKNOWN state and will no longer receive events, this \
                     usually indicates the process violated the eventlistener protocol"
                );
            }
            state = next;
        }
        for ev in requeue {
            accept(pool, p, ev, true);
        }
        dispatch(&self.me(), &inner.identifier, pool, p);
    }

    /// Writing an event to a listener failed: it gets no more, and the event goes back.
    fn write_failed(&self, pool: &str, process: &str, pid: u32, serial: u64, why: &str) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(p) = inner.pools.get_mut(pool) else { return };
        let Some(m) = p.members.get_mut(process) else { return };
        if m.pid != pid || m.current.as_ref().map(|e| e.serial) != Some(serial) {
            return;
        }
        tracing::debug!("cannot send event {serial} to listener {process}: {why}");
        m.protocol.give_up();
        m.stdin = None;
        if let Some(ev) = m.current.take() {
            accept(pool, p, ev, true);
        }
        dispatch(&self.me(), &inner.identifier, pool, p);
    }

    /// The state and buffer length of every pool's listeners, for tests and diagnostics.
    pub fn describe(&self, pool: &str) -> Option<(Vec<(String, ListenerState)>, usize)> {
        let inner = self.lock();
        let p = inner.pools.get(pool)?;
        Some((p.members.iter().map(|(n, m)| (n.clone(), m.protocol.state())).collect(), p.buffer.len()))
    }

    /// The tick periods some pool or live tap subscribes to.
    fn tick_periods(&self) -> Vec<u64> {
        let mut inner = self.lock();
        inner.taps.retain(|t| !t.tx.is_closed());
        TICKS
            .iter()
            .filter(|(_, name)| {
                inner.pools.values().any(|p| p.subscriptions.iter().any(|s| subscribes(s, name)))
                    || inner.taps.iter().any(|t| t.wants(name))
            })
            .map(|(period, _)| *period)
            .collect()
    }

    /// Starts the tick timer if a pool or tap subscribes to ticks and it is not running. It
    /// stops on its own once none does.
    fn ensure_ticks(&self) {
        if self.tick_periods().is_empty() || self.ticking.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.ticking.store(false, Ordering::SeqCst);
            return;
        };
        let me = self.me();
        runtime.spawn(async move {
            // supervisord notes the current slice of each period at start and notifies when
            // a slice rolls over.
            let mut last: BTreeMap<u64, u64> =
                TICKS.iter().map(|(p, _)| (*p, timeslice(*p, epoch()))).collect();
            loop {
                let Some(hub) = me.upgrade() else { return };
                let periods = hub.tick_periods();
                if periods.is_empty() {
                    hub.ticking.store(false, Ordering::SeqCst);
                    // A pool that subscribed meanwhile saw the flag set and started nothing.
                    if hub.tick_periods().is_empty() || hub.ticking.swap(true, Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                drop(hub);
                let now = epoch_f64();
                let next = periods
                    .iter()
                    .map(|p| (now / *p as f64).floor() * *p as f64 + *p as f64)
                    .fold(f64::MAX, f64::min);
                // A few milliseconds past the boundary, so the slice has surely rolled over.
                tokio::time::sleep(Duration::from_secs_f64((next - now).max(0.0) + 0.005)).await;
                let Some(hub) = me.upgrade() else { return };
                let now = epoch();
                for (period, name) in TICKS {
                    let slice = timeslice(*period, now);
                    if last.get(period) != Some(&slice) {
                        last.insert(*period, slice);
                        hub.notify(name, || format!("when:{slice}"));
                    }
                }
            }
        });
    }
}

/// The tick events and their periods in seconds.
const TICKS: &[(u64, &str)] = &[(5, "TICK_5"), (60, "TICK_60"), (3600, "TICK_3600")];

fn epoch_f64() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn epoch() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The start of the `period`-second slice `now` is in (supervisord's `timeslice`).
fn timeslice(period: u64, now: u64) -> u64 {
    now - now % period
}

/// Takes `ev` into the pool's buffer (at the head when it comes back rejected), dropping the
/// oldest when full, as supervisord's `_acceptEvent`.
fn accept(pool_name: &str, pool: &mut Pool, ev: Queued, head: bool) {
    if head {
        tracing::debug!(
            "rebuffering event {} for pool {pool_name} (buf size={}, max={})",
            ev.serial,
            pool.buffer.len(),
            pool.buffer_size
        );
    }
    if pool.buffer.len() >= pool.buffer_size {
        if let Some(dropped) = pool.buffer.pop_front() {
            tracing::error!("pool {pool_name} event buffer overflowed, discarding event {}", dropped.serial);
        }
    }
    if head {
        pool.buffer.push_front(ev);
    } else {
        pool.buffer.push_back(ev);
    }
}

/// Sends the oldest buffered events to READY listeners of a RUNNING process, first in name
/// order, while there are both (supervisord's `dispatch`).
fn dispatch(hub: &Weak<Hub>, identifier: &str, pool_name: &str, pool: &mut Pool) {
    while !pool.buffer.is_empty() {
        let Some((process, member)) = pool
            .members
            .iter_mut()
            .find(|(_, m)| m.running && m.protocol.state() == ListenerState::Ready && m.stdin.is_some())
        else {
            return;
        };
        let Some(ev) = pool.buffer.pop_front() else { return };
        let Some(stdin) = member.stdin.clone() else { return };
        // Python counts the payload's length in characters, and childutils reads that many
        // characters from a text stdin: the same count is given here.
        let envelope = format!(
            "ver:3.0 server:{identifier} serial:{} pool:{pool_name} poolserial:{} eventname:{} len:{}\n{}",
            ev.serial,
            ev.pool_serial,
            ev.name,
            ev.payload.chars().count(),
            ev.payload
        );
        member.protocol.sent();
        member.current = Some(ev.clone());
        tracing::debug!("event {} sent to listener {process}", ev.serial);
        let (hub, pool, process, pid) = (hub.clone(), pool_name.to_string(), process.clone(), member.pid);
        // The write waits for the listener to read; one is in flight per listener, as it is
        // BUSY until it answers.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let written = async {
                let mut pipe = stdin.lock().await;
                pipe.write_all(envelope.as_bytes()).await?;
                pipe.flush().await
            }
            .await;
            if let (Err(e), Some(hub)) = (written, hub.upgrade()) {
                hub.write_failed(&pool, &process, pid, ev.serial, &e.to_string());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(p: &mut Protocol, chunks: &[&[u8]]) -> Vec<Heard> {
        let mut heard = Vec::new();
        for c in chunks {
            p.feed(c, &mut heard);
        }
        heard
    }

    #[test]
    fn families_and_everything() {
        assert!(subscribes("EVENT", "TICK_5"));
        assert!(subscribes("PROCESS_STATE", "PROCESS_STATE_EXITED"));
        assert!(subscribes("TICK", "TICK_3600"));
        assert!(subscribes("TICK_60", "TICK_60"));
        assert!(!subscribes("TICK_5", "TICK_60"));
        assert!(!subscribes("PROCESS_STATE_RUNNING", "PROCESS_STATE_RUNNING_X"));
        assert!(!subscribes("PROCESS_LOG", "PROCESS_LOGX"));
        assert!(!subscribes("PROCESS_STATE", "PROCESS_LOG_STDOUT"));
    }

    #[test]
    fn a_conversation_in_any_cut() {
        // What a listener writes between two events (it writes nothing after READY until it
        // is sent one), each cut anywhere into two reads.
        let turns: [&[u8]; 3] = [b"READY\n", b"RESULT 2\nOKREADY\n", b"RESULT 4\nFAILREADY\n"];
        for (t, turn) in turns.iter().enumerate() {
            for cut in 0..=turn.len() {
                let mut p = Protocol::new();
                let mut heard = Vec::new();
                for earlier in &turns[..t] {
                    p.feed(earlier, &mut heard);
                    p.sent();
                }
                heard.clear();
                p.feed(&turn[..cut], &mut heard);
                p.feed(&turn[cut..], &mut heard);
                let want: &[Heard] = match t {
                    0 => &[Heard::Ready],
                    1 => &[Heard::Accepted, Heard::Ready],
                    _ => &[Heard::Rejected, Heard::Ready],
                };
                assert_eq!(heard, want, "turn {t} cut at {cut}");
                assert_eq!(p.state(), ListenerState::Ready);
            }
        }
    }

    #[test]
    fn results_and_ready_in_one_read() {
        let mut p = Protocol::new();
        assert_eq!(feed_all(&mut p, &[b"READY\n"]), [Heard::Ready]);
        p.sent();
        // The answer and the next READY arrive together (childutils' ok() then wait()).
        assert_eq!(feed_all(&mut p, &[b"RESULT 2\nOKREADY\n"]), [Heard::Accepted, Heard::Ready]);
        assert_eq!(p.state(), ListenerState::Ready);
        p.sent();
        assert_eq!(feed_all(&mut p, &[b"RESULT 0\n"]), [Heard::Rejected]);
        assert_eq!(p.state(), ListenerState::Acknowledged);
        p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert_eq!(feed_all(&mut p, &[b"RESULT +2 \nok"]), [Heard::Rejected], "OK is case-sensitive");
    }

    #[test]
    fn violations_make_it_unknown_and_it_stays_there() {
        let mut p = Protocol::new();
        assert_eq!(feed_all(&mut p, &[b"HELLO!", b"READY\n"]), [Heard::Violation]);
        assert_eq!(p.state(), ListenerState::Unknown);
        let mut p = Protocol::new();
        assert_eq!(feed_all(&mut p, &[b"READY\nx"]), [Heard::Ready, Heard::Violation]);
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert_eq!(feed_all(&mut p, &[b"RESULT two\nOK"]), [Heard::BadResultLine("RESULT two".into())]);
        assert_eq!(p.state(), ListenerState::Unknown);
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert_eq!(feed_all(&mut p, &[b"RESULT -1\n"]), [Heard::BadResultLine("RESULT -1".into())]);
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert_eq!(
            feed_all(&mut p, &[b"RESULT \xff\n"]),
            [Heard::BadResultLine("Undecodable: b'RESULT \\xff'".into())]
        );
    }

    #[test]
    fn hostile_output_is_held_in_bounded_memory() {
        // A result line that never ends: cut off at MAX_RESULT_LINE.
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        let junk = vec![b'7'; 64 * 1024];
        let mut heard = Vec::new();
        for _ in 0..64 {
            p.feed(&junk, &mut heard);
            assert!(p.pending.len() <= MAX_RESULT_LINE + junk.len());
        }
        assert!(matches!(heard.as_slice(), [Heard::BadResultLine(l)] if l.len() == MAX_RESULT_LINE));
        assert!(p.pending.is_empty());
        // A huge declared length: the body streams past, nothing of it is kept.
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        let mut heard = Vec::new();
        p.feed(b"RESULT 18446744073709551615\n", &mut heard);
        for _ in 0..64 {
            p.feed(&junk, &mut heard);
        }
        assert!(heard.is_empty());
        assert!(p.pending.capacity() <= MAX_RESULT_LINE * 2);
        assert_eq!(p.state(), ListenerState::Busy);
        // Beyond u64: a bad line, not a panic.
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert!(matches!(
            feed_all(&mut p, &[b"RESULT 99999999999999999999999\n"]).as_slice(),
            [Heard::BadResultLine(_)]
        ));
    }

    #[test]
    fn a_long_result_body_is_compared_not_kept() {
        let mut p = Protocol::new();
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert_eq!(feed_all(&mut p, &[b"RESULT 3\nOKK"]), [Heard::Rejected]);
        feed_all(&mut p, &[b"READY\n"]);
        p.sent();
        assert_eq!(feed_all(&mut p, &[b"RESULT 2\nO", b"K"]), [Heard::Accepted]);
    }

    fn pool(events: &[&str], buffer_size: u32) -> EventListenerPool {
        EventListenerPool {
            events: events.iter().map(|s| s.to_string()).collect(),
            buffer_size,
            result_handler: String::new(),
        }
    }

    #[test]
    fn the_buffer_drops_the_oldest_and_serials_count_accepted_events() {
        let hub = Hub::new();
        // No pool: nothing is made, no serial used.
        hub.notify("TICK_5", || unreachable!("no pool subscribes"));
        hub.ensure_pool("a", &pool(&["PROCESS_STATE"], 2));
        hub.notify("TICK_5", || unreachable!("no pool subscribes"));
        for n in 0..3 {
            hub.notify("PROCESS_STATE_RUNNING", || format!("n:{n}"));
        }
        let inner = hub.lock();
        let p = &inner.pools["a"];
        let kept: Vec<_> =
            p.buffer.iter().map(|e| (e.serial, e.pool_serial, e.payload.to_string())).collect();
        assert_eq!(kept, [(1, 1, "n:1".to_string()), (2, 2, "n:2".to_string())]);
    }
}
#[cfg(test)]
mod hub_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn pool(events: &[&str]) -> EventListenerPool {
        EventListenerPool {
            events: events.iter().map(|s| s.to_string()).collect(),
            buffer_size: 10,
            result_handler: String::new(),
        }
    }

    /// A listener's stdin: what the hub writes, and the end the test reads.
    fn stdin() -> (Stdin, tokio::net::unix::pipe::Receiver) {
        let (tx, rx) = tokio::net::unix::pipe::pipe().expect("a pipe");
        (Arc::new(tokio::sync::Mutex::new(tx)), rx)
    }

    /// Reads one envelope (header line and payload) from a listener's stdin.
    async fn envelope(rx: &mut tokio::net::unix::pipe::Receiver) -> String {
        let mut got = Vec::new();
        let read = async {
            loop {
                let mut b = [0u8; 1];
                rx.read_exact(&mut b).await.expect("read");
                got.push(b[0]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((head, body)) = text.split_once('\n') {
                    let len: usize = head.rsplit("len:").next().and_then(|l| l.parse().ok()).expect("len");
                    if body.chars().count() == len {
                        return text;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.expect("an envelope")
    }

    #[tokio::test]
    async fn rejected_and_orphaned_events_are_sent_again() {
        let hub = Hub::new();
        hub.set_identifier("box");
        hub.ensure_pool("p", &pool(&["REMOTE_COMMUNICATION"]));
        let (tx, mut rx) = stdin();
        hub.attach("p", "a", 1, tx);
        hub.notify("REMOTE_COMMUNICATION", || "type:t\nd".into());
        // Not RUNNING yet, then not READY: it waits in the buffer.
        hub.heard("p", "a", 1, b"READY\n");
        assert_eq!(hub.describe("p").expect("pool").1, 1);
        hub.process_state("p", "a", 1, true, true);
        let want =
            "ver:3.0 server:box serial:0 pool:p poolserial:0 eventname:REMOTE_COMMUNICATION len:8\ntype:t\nd";
        assert_eq!(envelope(&mut rx).await, want);
        assert_eq!(hub.describe("p").expect("pool").0, [("a".to_string(), ListenerState::Busy)]);
        // FAIL: back to the head, and sent again once READY.
        hub.heard("p", "a", 1, b"RESULT 4\nFAILREADY\n");
        assert_eq!(envelope(&mut rx).await, want);
        // Output from an earlier child changes nothing.
        hub.heard("p", "a", 99, b"RESULT 2\nOK");
        assert_eq!(hub.describe("p").expect("pool").0, [("a".to_string(), ListenerState::Busy)]);
        // The child dies before answering: a new child gets it.
        hub.process_state("p", "a", 1, false, false);
        assert_eq!(hub.describe("p").expect("pool").1, 1, "requeued");
        let (tx, mut rx) = stdin();
        hub.attach("p", "a", 2, tx);
        hub.process_state("p", "a", 2, true, true);
        hub.heard("p", "a", 2, b"READY\n");
        assert_eq!(envelope(&mut rx).await, want);
        hub.heard("p", "a", 2, b"RESULT 2\nOK");
        assert_eq!(
            hub.describe("p").expect("pool"),
            (vec![("a".to_string(), ListenerState::Acknowledged)], 0)
        );
    }

    #[tokio::test]
    async fn ticks_run_only_while_someone_subscribes() {
        let hub = Hub::new();
        hub.ensure_pool("p", &pool(&["PROCESS_STATE", "REMOTE_COMMUNICATION"]));
        let _tap = hub.tap(vec!["PROCESS_LOG".into()]);
        assert!(!hub.ticking.load(Ordering::SeqCst), "no one subscribes to ticks: no timer");
        hub.ensure_pool("q", &pool(&["TICK_3600"]));
        assert!(hub.ticking.load(Ordering::SeqCst));
    }
}

#[cfg(test)]
mod tick_tests {
    use super::*;

    #[tokio::test]
    async fn a_tap_gets_ticks() {
        let hub = Hub::new();
        let mut tap = hub.tap(vec!["TICK_5".into()]);
        let ev =
            tokio::time::timeout(Duration::from_secs(7), tap.recv()).await.expect("a tick").expect("open");
        assert_eq!(ev.name, "TICK_5");
    }
}
