//! Reading the source's changes: one thread per source primary holding a
//! subscription to its keyevent channels (`__keyevent@<db>__:<event>`,
//! whose message is the key), which queues every changed key.
//!
//! Flushes have no keyevent: `FLUSHDB` and `FLUSHALL` are seen through
//! client-side caching instead. A second connection turns on
//! `CLIENT TRACKING ... BCAST` for a prefix no key has, redirected to the
//! subscription: then the only invalidation messages that arrive are the
//! ones a flush sends to every tracking client (with no key). A flush is a
//! *gap* of its own kind: the keys only the target still has are found by a
//! catch-up pass (Redis 5 has no tracking: flushes there are not seen).
//!
//! A subscription that breaks (a dropped link, `CLIENT KILL TYPE pubsub`,
//! the pub/sub output buffer limit) may have lost changes: that is a gap,
//! recorded, and the subscription is made again at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use redis::Value;

use crate::endpoint::Endpoint;

use super::gaps::{GapKind, Gaps};
use super::pending::Pending;

/// The only keys tracking could report: none has this prefix.
const NO_KEY_PREFIX: &[u8] = b"\xffredis-ferry:flush-watch\x00\xfe";
/// How long a read waits before the thread checks whether to stop.
const READ_TICK: Duration = Duration::from_millis(200);
/// How often the tracking connection is checked.
const TRACKER_CHECK: Duration = Duration::from_secs(5);

/// A running subscription to one source node.
pub struct Subscriber {
    pub address: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `endpoint`'s changes; returns once the subscription is
    /// in place, so no change made afterwards is missed.
    pub fn start(
        endpoint: Endpoint,
        address: String,
        pending: Arc<Pending>,
        gaps: Arc<Gaps>,
    ) -> Result<Subscriber> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = channel();
        let thread = {
            let (stop, address) = (Arc::clone(&stop), address.clone());
            std::thread::Builder::new()
                .name("ferry-follow".into())
                .spawn(move || listen(endpoint, address, pending, gaps, stop, ready_tx))
                .context("cannot start a thread")?
        };
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("subscribing to the changes of {address} took over 60s"))?;
        ready?;
        Ok(Subscriber {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops listening (the thread ends within a read tick).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The connections of one subscription (also the source fence's, see
/// [`crate::copy::feed`]).
pub(crate) struct Session {
    pub subscription: redis::Connection,
    /// Keeps flush tracking on (`None`: the server has no tracking).
    pub tracker: Option<redis::Connection>,
}

/// The thread: subscribe, read, and subscribe again after a break.
fn listen(
    endpoint: Endpoint,
    address: String,
    pending: Arc<Pending>,
    gaps: Arc<Gaps>,
    stop: Arc<AtomicBool>,
    ready: Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut told_no_tracking = false;
    let mut backoff = crate::connection::Backoff::default();
    while !stop.load(Ordering::SeqCst) {
        let session = match open_session(&endpoint) {
            Ok(session) => session,
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
        if session.tracker.is_none() && !told_no_tracking {
            told_no_tracking = true;
            crate::log::warn(format!(
                "source {address} has no CLIENT TRACKING (Redis 6 or later has it): a FLUSHDB or FLUSHALL there is not seen while following"
            ));
        }
        match read_changes(session, &address, &pending, &gaps, &stop, &mut ready) {
            Ok(()) => return,
            Err(reason) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(anyhow!(reason)));
                    return;
                }
                gaps.record(
                    GapKind::Lost,
                    format!("the subscription to source {address} broke ({reason})"),
                );
            }
        }
    }
}

/// Opens a subscription connection and, where the server has tracking, a
/// second one that turns flush tracking on for it.
pub(crate) fn open_session(endpoint: &Endpoint) -> Result<Session> {
    let mut subscription = endpoint.connect(0)?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut subscription)
        .context("CLIENT ID failed")?;
    let tracker = match endpoint.connect(0) {
        Ok(mut tracker) => {
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
        }
        Err(_) => None,
    };
    Ok(Session {
        subscription,
        tracker,
    })
}

/// Reads messages until `stop` (`Ok`) or until the subscription breaks
/// (`Err` with the reason).
fn read_changes(
    session: Session,
    address: &str,
    pending: &Pending,
    gaps: &Gaps,
    stop: &AtomicBool,
    ready: &mut Option<Sender<Result<()>>>,
) -> std::result::Result<(), String> {
    let Session {
        mut subscription,
        mut tracker,
    } = session;
    let mut pubsub = subscription.as_pubsub();
    pubsub
        .psubscribe("__keyevent@*__:*")
        .map_err(|error| format!("PSUBSCRIBE failed: {error}"))?;
    if tracker.is_some() {
        pubsub
            .subscribe("__redis__:invalidate")
            .map_err(|error| format!("SUBSCRIBE failed: {error}"))?;
    }
    pubsub
        .set_read_timeout(Some(READ_TICK))
        .map_err(|error| error.to_string())?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    let mut tracker_checked = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match pubsub.get_message() {
            Ok(message) => on_message(&message, address, pending, gaps),
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

fn on_message(message: &redis::Msg, address: &str, pending: &Pending, gaps: &Gaps) {
    let channel = message.get_channel_name();
    if let Some(db) = keyevent_db(channel) {
        pending.push(db, message.get_payload_bytes().to_vec());
    } else if channel == "__redis__:invalidate"
        && matches!(message.get_payload::<Value>(), Ok(Value::Nil))
    {
        gaps.record(
            GapKind::Flush,
            format!("a database of source {address} was flushed (FLUSHDB or FLUSHALL)"),
        );
    }
}

/// `__keyevent@3__:set` → 3.
pub(crate) fn keyevent_db(channel: &str) -> Option<i64> {
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
