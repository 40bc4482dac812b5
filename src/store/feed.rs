//! The applied feed: after the state machine has written a batch of entries (or installed a
//! snapshot), it tells its subscribers which configs may now resolve differently, so watchers
//! look again exactly when something they watch changed. Subscribers read the state themselves;
//! the feed carries only the revision and the scopes, never data.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::command::Scope;

/// What one apply changed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The last log index written: the store holds at least this revision now.
    pub revision: u64,
    /// What may resolve differently.
    pub touched: Touched,
    /// When this node finished the write (the start of a watcher's notify latency).
    pub at: Instant,
}

#[derive(Debug, Clone)]
pub enum Touched {
    Scopes(Vec<Scope>),
    /// A snapshot replaced the whole state.
    Everything,
}

/// The subscribers of one store's applies.
#[derive(Default)]
pub struct AppliedFeed {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Applied>>>,
}

impl AppliedFeed {
    /// A new subscriber; it receives every apply from now on, in order.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Applied> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
        receiver
    }

    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Sends `applied` to every live subscriber and forgets the ones that went away.
    pub fn publish(&self, applied: Applied) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.send(applied.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_each_apply_in_order_and_dropped_ones_are_forgotten() {
        let feed = AppliedFeed::default();
        let mut first = feed.subscribe();
        let second = feed.subscribe();
        drop(second);
        for revision in [3, 4] {
            feed.publish(Applied { revision, touched: Touched::Everything, at: Instant::now() });
        }
        assert_eq!(first.try_recv().map(|a| a.revision).ok(), Some(3));
        assert_eq!(first.try_recv().map(|a| a.revision).ok(), Some(4));
        assert_eq!(feed.subscribers.lock().unwrap().len(), 1);
        drop(first);
        feed.publish(Applied { revision: 5, touched: Touched::Everything, at: Instant::now() });
        assert!(!feed.has_subscribers());
    }
}
