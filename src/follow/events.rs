//! Reading the source's changes while following: one subscription per
//! source primary ([`crate::keyspace`]) whose listener queues every changed
//! key. A flush is a *gap* of its own kind: the keys only the target still
//! has are found by a catch-up pass (Redis 5 has no tracking: flushes
//! there are not seen, and the job says so). A subscription that breaks
//! may have lost changes: that is a gap, recorded, and the subscription is
//! made again at once.

use std::sync::Arc;

use anyhow::Result;

use crate::endpoint::Endpoint;
use crate::keyspace::{self, Channels, Listener, Session};

use super::gaps::{GapKind, Gaps};
use super::pending::Pending;

/// A running subscription to one source node.
pub struct Subscriber {
    pub address: String,
    subscription: keyspace::Subscription,
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
        let listener = Follow {
            address: address.clone(),
            pending,
            gaps,
            told_no_tracking: false,
        };
        let subscription = keyspace::Subscription::start(
            endpoint,
            address.clone(),
            Channels::default(),
            listener,
            "ferry-follow",
        )?;
        Ok(Subscriber {
            address,
            subscription,
        })
    }

    /// Stops listening (the thread ends within a read tick).
    pub fn stop(self) {
        self.subscription.stop();
    }
}

/// What following does with what the subscription hears.
struct Follow {
    address: String,
    pending: Arc<Pending>,
    gaps: Arc<Gaps>,
    told_no_tracking: bool,
}

impl Listener for Follow {
    fn up(&mut self, session: Session) {
        if session.tracker_id.is_none() && !self.told_no_tracking {
            self.told_no_tracking = true;
            crate::log::warn(format!(
                "source {} has no CLIENT TRACKING (Redis 6 or later has it): a FLUSHDB or FLUSHALL there is not seen while following",
                self.address
            ));
        }
    }

    fn changed(&mut self, db: i64, key: &[u8]) {
        self.pending.push(db, key.to_vec());
    }

    fn flushed(&mut self) {
        self.gaps.record(
            GapKind::Flush,
            format!(
                "a database of source {} was flushed (FLUSHDB or FLUSHALL)",
                self.address
            ),
        );
    }

    fn broke(&mut self, reason: &str) {
        self.gaps.record(
            GapKind::Lost,
            format!(
                "the subscription to source {} broke ({reason})",
                self.address
            ),
        );
    }
}
