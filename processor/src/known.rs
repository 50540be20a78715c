//! [`KnownSubscriptions`]: the subscriptions of each request as the processor last read and
//! pushed to them, used again for the request's next change instead of a query.
//!
//! Whether they are still all of them, the change itself says: the store moves a request's
//! [`AsyncRequest::subscription_epoch`] whenever a subscription to it starts or its client
//! ends one, so a change written after that carries the new epoch. A subscription started
//! after a change was written is not owed that change: its snapshot (or resume) is at least
//! as new. An entry is also used only for the change right after the one it was kept at (the
//! old image's version is the kept one): when another processor handled a change in between
//! (a Lambda container of the same shard), the subscriptions are read again. A subscription
//! the processor itself ended or found gone is not kept (see `Processor::fan_out_waiting`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use streamer_core::{AsyncRequest, Subscription};

/// At most this many requests' subscriptions are kept; past it, all are forgotten at once.
const MAX_KNOWN: usize = 10_000;

/// See the [module](self).
#[derive(Debug, Default)]
pub(crate) struct KnownSubscriptions {
    by_request: Mutex<HashMap<String, Known>>,
}

#[derive(Debug)]
struct Known {
    /// The request's epoch when they were read.
    epoch: u64,
    /// The version of the state last pushed to them.
    version: u64,
    subscriptions: Vec<Arc<Subscription>>,
}

impl KnownSubscriptions {
    /// The subscriptions `state` goes to, if known without a read: none when no subscription
    /// to its request ever started, else those kept at the change before (`previous` is its
    /// old image's version) under the same epoch. Taken out: kept again by
    /// [`KnownSubscriptions::keep`] after a fan-out that reached every one.
    pub(crate) fn take(
        &self,
        state: &AsyncRequest,
        previous: Option<u64>,
    ) -> Option<Vec<Arc<Subscription>>> {
        if state.subscription_epoch == 0 {
            return Some(Vec::new());
        }
        let known = self
            .by_request
            .lock()
            .expect("known subscriptions lock")
            .remove(&state.id)?;
        (known.epoch == state.subscription_epoch && Some(known.version) == previous)
            .then_some(known.subscriptions)
    }

    /// Keeps `subscriptions` as those of `state`'s request after `state` was pushed to them;
    /// a request that ended is forgotten.
    pub(crate) fn keep(&self, state: &AsyncRequest, subscriptions: Vec<Arc<Subscription>>) {
        let mut by_request = self.by_request.lock().expect("known subscriptions lock");
        if state.status.is_terminal() || state.subscription_epoch == 0 {
            by_request.remove(&state.id);
            return;
        }
        if by_request.len() >= MAX_KNOWN && !by_request.contains_key(&state.id) {
            by_request.clear();
        }
        by_request.insert(
            state.id.clone(),
            Known {
                epoch: state.subscription_epoch,
                version: state.version,
                subscriptions,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn state(version: u64, epoch: u64) -> AsyncRequest {
        let mut state = AsyncRequest::new("r", "a", json!({}), Utc::now());
        state.version = version;
        state.subscription_epoch = epoch;
        state
    }

    #[test]
    fn kept_subscriptions_serve_the_next_change_under_the_same_epoch_only() {
        let known = KnownSubscriptions::default();
        assert_eq!(
            known.take(&state(1, 0), None),
            Some(Vec::new()),
            "none ever"
        );
        assert_eq!(known.take(&state(2, 1), Some(1)), None, "never read");
        known.keep(&state(2, 1), Vec::new());
        assert_eq!(known.take(&state(3, 1), Some(2)), Some(Vec::new()));
        known.keep(&state(3, 1), Vec::new());
        assert_eq!(known.take(&state(4, 2), Some(3)), None, "epoch moved");
        known.keep(&state(4, 2), Vec::new());
        assert_eq!(
            known.take(&state(6, 2), Some(5)),
            None,
            "a change handled elsewhere in between"
        );
        known.keep(&state(6, 2), Vec::new());
        let mut ended = state(7, 2);
        ended.status = streamer_core::RequestStatus::Completed;
        known.keep(&ended, Vec::new());
        assert_eq!(
            known.take(&state(8, 2), Some(7)),
            None,
            "forgotten once ended"
        );
    }
}
