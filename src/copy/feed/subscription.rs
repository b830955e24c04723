//! One source node's subscription for the change feed ([`crate::keyspace`]
//! holds it, with the job's marker channel for that node): its listener
//! marks the keys rounds have in flight as they change and records markers;
//! when the subscription breaks, the rounds in flight cannot be vouched for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::endpoint::Endpoint;
use crate::follow::notify::{self, NotifySetting};
use crate::keyspace::{self, Channels, Listener, Session};

use super::Shared;

/// One node's subscription and the setting it needed.
pub(super) struct NodeFeed {
    endpoint: Endpoint,
    pub(super) setting: NotifySetting,
    subscription: keyspace::Subscription,
}

impl NodeFeed {
    /// Subscribes; returns once the subscription is up.
    pub(super) fn start(
        endpoint: Endpoint,
        address: String,
        setting: NotifySetting,
        channel_name: String,
        shared: Arc<Shared>,
    ) -> Result<NodeFeed> {
        let channels = Channels {
            own: vec![channel_name],
            need_tracking: true,
        };
        let listener = Feed {
            address: address.clone(),
            shared,
            breaks: BreakLog::default(),
        };
        let subscription = keyspace::Subscription::start(
            endpoint.clone(),
            address,
            channels,
            listener,
            "ferry-feed",
        )?;
        Ok(NodeFeed {
            endpoint,
            setting,
            subscription,
        })
    }

    /// Ends the subscription and puts the node's setting back.
    pub(super) fn stop(self) {
        self.subscription.stop();
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

/// What the feed does with what one node's subscription hears.
struct Feed {
    address: String,
    shared: Arc<Shared>,
    breaks: BreakLog,
}

impl Listener for Feed {
    fn up(&mut self, session: Session) {
        self.shared.set_up(&self.address, Some(session));
    }

    fn changed(&mut self, db: i64, key: &[u8]) {
        self.shared.key_changed(db, key);
    }

    fn flushed(&mut self) {
        self.shared.flushed();
    }

    /// The job's marker channel for this node: a round's marker.
    fn message(&mut self, _channel: &str, payload: &[u8], session: Session) {
        self.shared.marker(&self.address, session, payload);
    }

    fn down(&mut self) {
        self.shared.set_up(&self.address, None);
    }

    fn broke(&mut self, reason: &str) {
        self.breaks.note(&self.address, reason);
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
