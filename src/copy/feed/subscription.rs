//! One source node's subscription for the change feed: a thread that holds
//! `PSUBSCRIBE __keyevent@*__:*`, the job's marker channel for that node and
//! flush tracking (the session code `--follow` uses), marks the keys rounds
//! have in flight as they change, records markers, and subscribes again
//! after a break (the rounds in flight then cannot be vouched for).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use redis::Value;

use crate::endpoint::Endpoint;
use crate::follow::events::{Session, keyevent_db, open_session};
use crate::follow::notify::{self, NotifySetting};

use super::{Shared, Subscription};

/// How a read waits before its thread checks whether to stop.
const READ_TICK: Duration = Duration::from_millis(200);

/// One node's subscription thread and the setting it needed.
pub(super) struct NodeFeed {
    endpoint: Endpoint,
    pub(super) setting: NotifySetting,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NodeFeed {
    /// Starts the subscription thread; returns once it is up.
    pub(super) fn start(
        endpoint: Endpoint,
        address: String,
        setting: NotifySetting,
        channel_name: String,
        shared: Arc<Shared>,
    ) -> Result<NodeFeed> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = channel();
        let thread = {
            let (stop, endpoint) = (Arc::clone(&stop), endpoint.clone());
            std::thread::Builder::new()
                .name("ferry-feed".into())
                .spawn(move || listen(endpoint, address, channel_name, shared, stop, ready_tx))
                .context("cannot start a thread")?
        };
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| Err(anyhow!("subscribing took over 60s")));
        if let Err(error) = ready {
            stop.store(true, Ordering::SeqCst);
            return Err(error);
        }
        Ok(NodeFeed {
            endpoint,
            setting,
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the subscription and puts the node's setting back.
    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !self.setting.changed {
            return;
        }
        let restored = crate::connection::NodeConnection::open(
            &self.endpoint,
            Duration::from_secs(5),
            crate::interrupt::Shutdown::default(),
        )
        .and_then(|mut connection| notify::restore(&mut connection, &self.setting));
        if let Err(error) = restored {
            crate::log::warn(format!("{error:#}"));
        }
    }
}

/// The thread: subscribe, read, and subscribe again after a break (the
/// rounds in flight then count as lost).
fn listen(
    endpoint: Endpoint,
    address: String,
    channel_name: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    ready: Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut number = 0;
    let mut backoff = crate::connection::Backoff::default();
    let mut breaks = BreakLog::default();
    while !stop.load(Ordering::SeqCst) {
        let session = open_session(&endpoint).and_then(|mut session| {
            let Some(tracker) = session.tracker.as_mut() else {
                bail!(
                    "source {address} has no CLIENT TRACKING (Redis 6 or later has it), which the feed needs to see flushes"
                );
            };
            let tracker_id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query(tracker)
                .context("CLIENT ID failed")?;
            Ok((session, tracker_id))
        });
        let (session, tracker_id) = match session {
            Ok(opened) => opened,
            Err(error) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error));
                    return;
                }
                backoff.wait();
                continue;
            }
        };
        backoff.reset();
        number += 1;
        let subscription = Subscription { number, tracker_id };
        let listened = read_changes(
            session,
            &address,
            &channel_name,
            subscription,
            &shared,
            &stop,
            &mut ready,
        );
        shared.set_up(&address, None);
        if let Err(reason) = listened {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(anyhow!(reason)));
                return;
            }
            breaks.note(&address, &reason);
        }
    }
}

/// Says that a subscription broke, at most once per [`BREAK_LOG_EVERY`]
/// (a link that flaps would fill the log), with how often it did.
#[derive(Default)]
struct BreakLog {
    last: Option<Instant>,
    unsaid: u64,
}

const BREAK_LOG_EVERY: Duration = Duration::from_secs(10);

impl BreakLog {
    fn note(&mut self, address: &str, reason: &str) {
        self.unsaid += 1;
        if self
            .last
            .is_some_and(|last| last.elapsed() < BREAK_LOG_EVERY)
        {
            return;
        }
        let times = match self.unsaid {
            1 => String::new(),
            n => format!(" ({n} times since the last warning)"),
        };
        crate::log::warn(format!(
            "the source fence's subscription to {address} broke{times}: {reason}; the keys in flight there are copied again under WATCH"
        ));
        self.last = Some(Instant::now());
        self.unsaid = 0;
    }
}

/// Reads messages until `stop` (`Ok`) or until the subscription breaks.
fn read_changes(
    session: Session,
    address: &str,
    channel_name: &str,
    subscription: Subscription,
    shared: &Shared,
    stop: &AtomicBool,
    ready: &mut Option<Sender<Result<()>>>,
) -> std::result::Result<(), String> {
    let Session {
        subscription: mut connection,
        mut tracker,
    } = session;
    let mut pubsub = connection.as_pubsub();
    pubsub
        .psubscribe("__keyevent@*__:*")
        .map_err(|error| format!("PSUBSCRIBE failed: {error}"))?;
    pubsub
        .subscribe(&["__redis__:invalidate", channel_name])
        .map_err(|error| format!("SUBSCRIBE failed: {error}"))?;
    pubsub
        .set_read_timeout(Some(READ_TICK))
        .map_err(|error| error.to_string())?;
    // Subscribed: every change from now on reaches this connection.
    shared.set_up(address, Some(subscription));
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    let mut tracker_checked = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match pubsub.get_message() {
            Ok(message) => {
                let channel = message.get_channel_name();
                if let Some(db) = keyevent_db(channel) {
                    shared.key_changed(db, message.get_payload_bytes());
                } else if channel == channel_name {
                    shared.marker(address, subscription, message.get_payload_bytes());
                } else if channel == "__redis__:invalidate"
                    && matches!(message.get_payload::<Value>(), Ok(Value::Nil))
                {
                    shared.flushed();
                }
            }
            Err(error) if error.is_timeout() => {}
            Err(error) => return Err(error.to_string()),
        }
        if tracker_checked.elapsed() >= Duration::from_secs(5) {
            tracker_checked = Instant::now();
            if let Some(tracker) = tracker.as_mut() {
                redis::cmd("PING")
                    .query::<()>(tracker)
                    .map_err(|error| format!("the flush-tracking connection broke: {error}"))?;
            }
        }
    }
    Ok(())
}
