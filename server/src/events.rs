//! The daemon's history of state changes, for `WatchEvents`.
//!
//! Every change gets the next sequence number and goes into a bounded ring. A watcher reads
//! from the ring at its own pace; one that falls so far behind that what it needs has left the
//! ring is told so (with how many it missed), never silently skipped. Process tasks publish
//! their changes and their new snapshot under the ring's lock, so a snapshot taken under the
//! same lock is exactly "the state after event N".
//!
//! Every change published here is also notified to the event listener pools
//! ([`crate::listener::Hub`]) as the Supervisor event it is (PROCESS_STATE_*,
//! SUPERVISOR_STATE_CHANGE_*, PROCESS_GROUP_*), with supervisord's payload. Events that are
//! not state changes (ticks, output, remote messages) go to the hub only, not into the ring:
//! they would push the state changes a watcher resumes from out of it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::lifecycle::{Exit, Kind};
use crate::listener::Hub;

/// How many changes the ring keeps for watchers that fall behind or resume.
pub const HISTORY: usize = 16_384;

/// A change of one process's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessChange {
    pub name: String,
    pub group: String,
    pub from: Kind,
    pub to: Kind,
    pub pid: Option<u32>,
    /// How it ended, on a change caused by an exit.
    pub exit: Option<Exit>,
    pub spawn_error: Option<String>,
    /// Failed starts so far (supervisord's `backoff`), for STARTING and BACKOFF events.
    pub tries: u32,
}

impl ProcessChange {
    /// The Supervisor event type of this change.
    pub fn event_name(&self) -> &'static str {
        match self.to {
            Kind::Stopped => "PROCESS_STATE_STOPPED",
            Kind::Starting => "PROCESS_STATE_STARTING",
            Kind::Running => "PROCESS_STATE_RUNNING",
            Kind::Backoff => "PROCESS_STATE_BACKOFF",
            Kind::Stopping => "PROCESS_STATE_STOPPING",
            Kind::Exited => "PROCESS_STATE_EXITED",
            Kind::Fatal => "PROCESS_STATE_FATAL",
            Kind::Unknown => "PROCESS_STATE_UNKNOWN",
        }
    }

    /// supervisord's payload: `processname:P groupname:G from_state:S` and the fields of the
    /// new state (`tries` for STARTING and BACKOFF; `expected` and `pid` for EXITED; `pid`
    /// for RUNNING, STOPPING and STOPPED, 0 when there was no child).
    pub fn payload(&self) -> String {
        let mut s =
            format!("processname:{} groupname:{} from_state:{}", self.name, self.group, self.from.name());
        let pid = self.pid.unwrap_or(0);
        match self.to {
            Kind::Starting | Kind::Backoff => s.push_str(&format!(" tries:{}", self.tries)),
            Kind::Exited => {
                let expected = self.exit.is_some_and(|e| e.expected);
                s.push_str(&format!(" expected:{} pid:{pid}", u8::from(expected)));
            }
            Kind::Running | Kind::Stopping | Kind::Stopped => s.push_str(&format!(" pid:{pid}")),
            Kind::Fatal | Kind::Unknown => {}
        }
        s
    }
}

/// The daemon's own state, as events report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonPhase {
    Running,
    /// Stopping everything to start it again (reload --restart-all).
    Restarting,
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Process(ProcessChange),
    Daemon {
        from: DaemonPhase,
        to: DaemonPhase,
    },
    /// A group appeared (update, add) — supervisord's PROCESS_GROUP_ADDED.
    GroupAdded(String),
    /// A group went away (update, remove) — supervisord's PROCESS_GROUP_REMOVED.
    GroupRemoved(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub time: SystemTime,
    pub kind: EventKind,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    /// The sequence number the next event gets; the first is 1.
    next: u64,
}

/// What a watcher gets when it asks for events after a sequence number.
#[derive(Debug)]
pub enum Since {
    /// The events that followed, in order (possibly none yet).
    Events(Vec<Arc<Event>>),
    /// The watcher asked for events that have left the ring: this many are lost.
    Lagged { missed: u64 },
}

#[derive(Debug)]
pub struct EventBus {
    ring: Mutex<Ring>,
    /// The last sequence number published, for watchers to wait on.
    last: watch::Sender<u64>,
    /// Identifies this run of the daemon, so a client resuming against a restarted daemon
    /// (whose numbers start again) knows to start over.
    pub instance: String,
    /// The event listener pools, told of every change published here.
    pub listeners: Arc<Hub>,
}

impl EventBus {
    pub fn new() -> EventBus {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        EventBus {
            ring: Mutex::new(Ring { events: VecDeque::new(), next: 1 }),
            last: watch::channel(0).0,
            instance: format!("{}-{}", std::process::id(), now.as_nanos()),
            listeners: Hub::new(),
        }
    }

    /// The history of an upgraded daemon: the same instance, numbering on from `next` (the
    /// events before it stayed with the old image), so a watcher resumes without a gap.
    pub fn resumed(instance: String, next: u64) -> EventBus {
        let next = next.max(1);
        EventBus {
            ring: Mutex::new(Ring { events: VecDeque::new(), next }),
            last: watch::channel(next - 1).0,
            instance,
            listeners: Hub::new(),
        }
    }

    /// The instance id and the number the next event gets, for an upgrade.
    pub fn resume_point(&self) -> (String, u64) {
        (self.instance.clone(), self.lock().next)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Pushes and pops cannot leave the ring half-changed.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `kinds` in order, running `then` under the same lock (a process publishes its
    /// new snapshot there).
    pub fn publish_with<R>(&self, kinds: impl IntoIterator<Item = EventKind>, then: impl FnOnce() -> R) -> R {
        let mut ring = self.lock();
        let time = SystemTime::now();
        let mut published = false;
        for kind in kinds {
            self.tell_listeners(&kind);
            let seq = ring.next;
            ring.next += 1;
            ring.events.push_back(Arc::new(Event { seq, time, kind }));
            if ring.events.len() > HISTORY {
                ring.events.pop_front();
            }
            published = true;
        }
        let last = ring.next - 1;
        let r = then();
        drop(ring);
        if published {
            self.last.send_replace(last);
        }
        r
    }

    /// Notifies the listener pools of a change, as the Supervisor event it is. Called under
    /// the ring's lock, so that pools see changes in the order of their numbers.
    fn tell_listeners(&self, kind: &EventKind) {
        match kind {
            EventKind::Process(c) => self.listeners.notify(c.event_name(), || c.payload()),
            EventKind::Daemon { to, .. } => {
                let name = match to {
                    DaemonPhase::Running => "SUPERVISOR_STATE_CHANGE_RUNNING",
                    DaemonPhase::Restarting | DaemonPhase::Shutdown => "SUPERVISOR_STATE_CHANGE_STOPPING",
                };
                self.listeners.notify(name, String::new);
            }
            EventKind::GroupAdded(g) => {
                self.listeners.notify("PROCESS_GROUP_ADDED", || format!("groupname:{g}\n"))
            }
            EventKind::GroupRemoved(g) => {
                // supervisord unsubscribes a pool before it tells of its removal.
                self.listeners.remove_pool(g);
                self.listeners.notify("PROCESS_GROUP_REMOVED", || format!("groupname:{g}\n"));
            }
        }
    }

    pub fn publish(&self, kind: EventKind) {
        self.publish_with([kind], || ());
    }

    /// Runs `f` while nothing can be published; returns the last sequence number with it.
    pub fn snapshot_with<R>(&self, f: impl FnOnce() -> R) -> (u64, R) {
        let ring = self.lock();
        let last = ring.next - 1;
        (last, f())
    }

    /// The events after `seq`.
    pub fn since(&self, seq: u64) -> Since {
        let ring = self.lock();
        let oldest = ring.events.front().map_or(ring.next, |e| e.seq);
        if seq + 1 < oldest {
            return Since::Lagged { missed: oldest - (seq + 1) };
        }
        let skip = (seq + 1).saturating_sub(oldest) as usize;
        Since::Events(ring.events.iter().skip(skip).cloned().collect())
    }

    /// Whether `seq` can still be resumed from.
    pub fn holds(&self, seq: u64) -> bool {
        let ring = self.lock();
        let oldest = ring.events.front().map_or(ring.next, |e| e.seq);
        seq + 1 >= oldest && seq < ring.next
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u32) -> EventKind {
        EventKind::Process(ProcessChange {
            name: format!("p{n}"),
            group: "g".into(),
            from: Kind::Stopped,
            to: Kind::Starting,
            pid: Some(n),
            exit: None,
            spawn_error: None,
            tries: 0,
        })
    }

    #[test]
    fn state_payloads_are_supervisords() {
        use crate::lifecycle::ExitStatus;
        let c = |from, to, pid, exit, tries| ProcessChange {
            name: "web".into(),
            group: "site".into(),
            from,
            to,
            pid,
            exit,
            spawn_error: None,
            tries,
        };
        let exit = Some(Exit { status: ExitStatus::Code(3), expected: false });
        let cases = [
            (
                c(Kind::Stopped, Kind::Starting, Some(7), None, 0),
                "PROCESS_STATE_STARTING",
                "processname:web groupname:site from_state:STOPPED tries:0",
            ),
            (
                c(Kind::Starting, Kind::Backoff, None, None, 2),
                "PROCESS_STATE_BACKOFF",
                "processname:web groupname:site from_state:STARTING tries:2",
            ),
            (
                c(Kind::Starting, Kind::Running, Some(7), None, 0),
                "PROCESS_STATE_RUNNING",
                "processname:web groupname:site from_state:STARTING pid:7",
            ),
            (
                c(Kind::Running, Kind::Exited, Some(7), exit, 0),
                "PROCESS_STATE_EXITED",
                "processname:web groupname:site from_state:RUNNING expected:0 pid:7",
            ),
            (
                c(Kind::Stopping, Kind::Stopped, Some(7), None, 0),
                "PROCESS_STATE_STOPPED",
                "processname:web groupname:site from_state:STOPPING pid:7",
            ),
            (
                c(Kind::Backoff, Kind::Stopped, None, None, 0),
                "PROCESS_STATE_STOPPED",
                "processname:web groupname:site from_state:BACKOFF pid:0",
            ),
            (
                c(Kind::Backoff, Kind::Fatal, None, None, 4),
                "PROCESS_STATE_FATAL",
                "processname:web groupname:site from_state:BACKOFF",
            ),
        ];
        for (change, name, payload) in cases {
            assert_eq!(change.event_name(), name);
            assert_eq!(change.payload(), payload);
        }
    }

    #[test]
    fn numbers_are_consecutive_and_resumable() {
        let bus = EventBus::new();
        for n in 0..5 {
            bus.publish(change(n));
        }
        let Since::Events(all) = bus.since(0) else { panic!("lagged") };
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let Since::Events(rest) = bus.since(3) else { panic!("lagged") };
        assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        let Since::Events(none) = bus.since(5) else { panic!("lagged") };
        assert!(none.is_empty());
        assert!(bus.holds(2) && !bus.holds(9));
    }

    #[test]
    fn a_watcher_that_falls_behind_is_told_how_far() {
        let bus = EventBus::new();
        for n in 0..(HISTORY as u32 + 10) {
            bus.publish(change(n));
        }
        match bus.since(0) {
            Since::Lagged { missed } => assert_eq!(missed, 10),
            Since::Events(_) => panic!("events that left the ring were served"),
        }
        let Since::Events(tail) = bus.since(10) else { panic!("lagged") };
        assert_eq!(tail.len(), HISTORY);
    }

    #[test]
    fn a_snapshot_is_consistent_with_the_sequence() {
        use std::sync::atomic::{AtomicU64, Ordering};
        // Writers publish events and apply them to shared state (as process tasks publish a
        // change and their new snapshot) while a reader takes snapshots: every snapshot must
        // be exactly "the state after event N", with N the number it is given.
        const WRITERS: u64 = 4;
        const EACH: u64 = 5_000;
        let bus = Arc::new(EventBus::new());
        let applied = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (bus, applied) = (Arc::clone(&bus), Arc::clone(&applied));
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        // Some publish two events at once; the state counts events.
                        let kinds: Vec<EventKind> = if i % 3 == 0 {
                            vec![change(w as u32), change(i as u32)]
                        } else {
                            vec![change(w as u32)]
                        };
                        let n = kinds.len() as u64;
                        bus.publish_with(kinds, || applied.fetch_add(n, Ordering::SeqCst));
                    }
                })
            })
            .collect();
        let mut snapshots = 0u64;
        let mut last = 0;
        let total = WRITERS * (EACH + EACH.div_ceil(3));
        loop {
            let (seq, seen) = bus.snapshot_with(|| applied.load(Ordering::SeqCst));
            assert_eq!(seq, seen, "snapshot {snapshots}: the state after event {seq} is the state it shows");
            assert!(seq >= last, "numbers never go back");
            last = seq;
            snapshots += 1;
            if seq == total {
                break;
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
        assert!(snapshots > 1, "snapshots were taken while writers published");
    }
}
