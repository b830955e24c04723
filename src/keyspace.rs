//! A subscription to one source node's keyspace notifications, held by a
//! thread of its own that tells a [`Listener`] what it hears: `--follow`
//! (which queues changed keys, [`crate::follow::events`]) and the source
//! fence's change feed ([`crate::copy::feed`]) both listen this way.
//!
//! The thread subscribes to the keyevent channels (`__keyevent@<db>__:<event>`,
//! whose message is the key) and to any channels of the listener's own.
//! Flushes have no keyevent: they are seen through client-side caching. A
//! second connection turns on `CLIENT TRACKING ... BCAST` for a prefix no
//! key has, redirected to the subscription: the only invalidation messages
//! that arrive are the ones a flush sends to every tracking client (with no
//! key). Redis 5 has no tracking.
//!
//! A subscription that breaks (a dropped link, `CLIENT KILL TYPE pubsub`,
//! the pub/sub output buffer limit) may have lost changes: the listener
//! hears of it, and the subscription is made again at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use redis::Value;

use crate::endpoint::Endpoint;

/// The only keys tracking could report: none has this prefix.
const NO_KEY_PREFIX: &[u8] = b"\xffredis-ferry:flush-watch\x00\xfe";
/// How long a read waits before the thread checks whether to stop.
const READ_TICK: Duration = Duration::from_millis(200);
/// How often the tracking connection is checked.
const TRACKER_CHECK: Duration = Duration::from_secs(5);
/// How long [`Subscription::start`] waits for the first subscription.
const FIRST_SUBSCRIBE_WAIT: Duration = Duration::from_secs(60);

/// One subscription made by the thread: it counts them, and names the
/// client that keeps flush tracking on (`None`: the server has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub number: u64,
    pub tracker_id: Option<i64>,
}

/// What the thread tells, from its own thread.
pub trait Listener: Send + 'static {
    /// Subscribed: every change made from now on reaches the listener.
    fn up(&mut self, _session: Session) {}
    /// `key` of database `db` changed (written, deleted, expired...).
    fn changed(&mut self, db: i64, key: &[u8]);
    /// A database was flushed.
    fn flushed(&mut self);
    /// A message on one of the listener's own channels.
    fn message(&mut self, _channel: &str, _payload: &[u8], _session: Session) {}
    /// The session that was up ended (broken, or stopped).
    fn down(&mut self) {}
    /// The session broke: changes may have been missed. It is made again.
    fn broke(&mut self, reason: &str);
}

/// What to subscribe to besides the keyevents.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// The listener's own channels.
    pub own: Vec<String>,
    /// Refuse a server without tracking (its flushes would go unseen).
    pub need_tracking: bool,
}

/// A running subscription thread.
pub struct Subscription {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscription {
    /// Starts the thread; returns once the first subscription is up, so no
    /// change made afterwards is missed, or with why it could not be made.
    pub fn start(
        endpoint: Endpoint,
        address: String,
        channels: Channels,
        listener: impl Listener,
        thread_name: &str,
    ) -> Result<Subscription> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let address = address.clone();
            std::thread::Builder::new()
                .name(thread_name.into())
                .spawn(move || listen(endpoint, address, channels, listener, stop, ready_tx))
                .context("cannot start a thread")?
        };
        let ready = ready_rx
            .recv_timeout(FIRST_SUBSCRIBE_WAIT)
            .unwrap_or_else(|_| {
                Err(anyhow!(
                    "subscribing to the changes of {address} took over 60s"
                ))
            });
        let subscription = Subscription {
            stop,
            thread: Some(thread),
        };
        ready.map(|()| subscription)
    }

    /// Stops listening (the thread ends within a read tick).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The connections of one session.
struct Connections {
    subscription: redis::Connection,
    tracker: Option<redis::Connection>,
    session: Session,
}

/// The thread: subscribe, read, and subscribe again after a break.
fn listen(
    endpoint: Endpoint,
    address: String,
    channels: Channels,
    mut listener: impl Listener,
    stop: Arc<AtomicBool>,
    ready: Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut number = 0;
    let mut backoff = crate::connection::Backoff::default();
    while !stop.load(Ordering::SeqCst) {
        number += 1;
        let connections = match open(&endpoint, &address, &channels, number) {
            Ok(connections) => connections,
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
        let read = read_changes(connections, &channels, &mut listener, &stop, &mut ready);
        if let Err(reason) = read {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(anyhow!(reason)));
                return;
            }
            listener.broke(&reason);
        }
    }
}

/// Opens a subscription connection and, where the server has tracking, a
/// second one that turns flush tracking on for it.
fn open(
    endpoint: &Endpoint,
    address: &str,
    channels: &Channels,
    number: u64,
) -> Result<Connections> {
    let mut subscription = endpoint.connect(0)?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut subscription)
        .context("CLIENT ID failed")?;
    let tracker = endpoint.connect(0).ok().and_then(|mut tracker| {
        let on: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("on")
            .arg("REDIRECT")
            .arg(id)
            .arg("BCAST")
            .arg("PREFIX")
            .arg(NO_KEY_PREFIX)
            .query(&mut tracker);
        on.is_ok().then_some(tracker)
    });
    let tracker_id = match tracker {
        Some(mut tracker) => {
            let tracker_id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query(&mut tracker)
                .context("CLIENT ID failed")?;
            return Ok(Connections {
                subscription,
                tracker: Some(tracker),
                session: Session {
                    number,
                    tracker_id: Some(tracker_id),
                },
            });
        }
        None if channels.need_tracking => bail!(
            "source {address} has no CLIENT TRACKING (Redis 6 or later has it), which is needed to see flushes"
        ),
        None => None,
    };
    Ok(Connections {
        subscription,
        tracker: None,
        session: Session { number, tracker_id },
    })
}

/// Reads messages until `stop` (`Ok`) or until the session breaks (`Err`
/// with the reason).
fn read_changes(
    connections: Connections,
    channels: &Channels,
    listener: &mut impl Listener,
    stop: &AtomicBool,
    ready: &mut Option<Sender<Result<()>>>,
) -> std::result::Result<(), String> {
    let Connections {
        mut subscription,
        mut tracker,
        session,
    } = connections;
    let mut pubsub = subscription.as_pubsub();
    pubsub
        .psubscribe("__keyevent@*__:*")
        .map_err(|error| format!("PSUBSCRIBE failed: {error}"))?;
    let mut own: Vec<&str> = channels.own.iter().map(String::as_str).collect();
    if tracker.is_some() {
        own.push("__redis__:invalidate");
    }
    if !own.is_empty() {
        pubsub
            .subscribe(&own)
            .map_err(|error| format!("SUBSCRIBE failed: {error}"))?;
    }
    pubsub
        .set_read_timeout(Some(READ_TICK))
        .map_err(|error| error.to_string())?;
    listener.up(session);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    let read = read_until_stopped(&mut pubsub, &mut tracker, channels, listener, session, stop);
    listener.down();
    read
}

fn read_until_stopped(
    pubsub: &mut redis::PubSub<'_>,
    tracker: &mut Option<redis::Connection>,
    channels: &Channels,
    listener: &mut impl Listener,
    session: Session,
    stop: &AtomicBool,
) -> std::result::Result<(), String> {
    let mut tracker_checked = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match pubsub.get_message() {
            Ok(message) => on_message(&message, channels, listener, session),
            Err(error) if error.is_timeout() => {}
            Err(error) => return Err(error.to_string()),
        }
        if tracker_checked.elapsed() >= TRACKER_CHECK {
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

fn on_message(
    message: &redis::Msg,
    channels: &Channels,
    listener: &mut impl Listener,
    session: Session,
) {
    let channel = message.get_channel_name();
    if let Some(db) = keyevent_db(channel) {
        listener.changed(db, message.get_payload_bytes());
    } else if channel == "__redis__:invalidate" {
        if matches!(message.get_payload::<Value>(), Ok(Value::Nil)) {
            listener.flushed();
        }
    } else if channels.own.iter().any(|own| own == channel) {
        listener.message(channel, message.get_payload_bytes(), session);
    }
}

/// `__keyevent@3__:set` → 3.
fn keyevent_db(channel: &str) -> Option<i64> {
    let rest = channel.strip_prefix("__keyevent@")?;
    let (db, _event) = rest.split_once("__:")?;
    db.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyevent_channels_name_their_database() {
        assert_eq!(keyevent_db("__keyevent@0__:set"), Some(0));
        assert_eq!(keyevent_db("__keyevent@15__:rename_to"), Some(15));
        assert_eq!(keyevent_db("__keyspace@0__:k"), None);
        assert_eq!(keyevent_db("__redis__:invalidate"), None);
    }
}
