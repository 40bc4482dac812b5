//! Watch: clients say which version of each config they hold and are answered as soon as what
//! they would resolve differs — a new version, a release that moves them (a gray flip), a delete.
//!
//! The answer compares state, never replays events, so restarts, leader changes, partitions and
//! log compaction cannot make a client miss its final configuration. How it fits together:
//! - [`hub`]: the node's index from config to parked watchers, fed by the state machine's applied
//!   feed. On each apply it reads the touched configs once (a consistent [`ConfigView`]) and wakes
//!   only their watchers; it also tracks whether the node can serve (a leader is known, not
//!   shutting down) and the per-tenant watcher quota.
//! - [`session`]: one client's watch — what it holds, the views it has seen (never older than its
//!   fence, never going back), and the comparison that produces a [`crate::wire::WatchAnswer`].
//!   The long-poll and the event stream both drive a session.
//! - [`presence`]: who watches what on this node, for `GET …/configs/{c}/clients`.
//!
//! [`ConfigView`]: crate::store::ConfigView

pub mod hub;
pub mod presence;
pub mod session;

pub use hub::{Availability, WatchHub, WatchLimits};
pub use session::{Step, WatchError, WatchSession, WatchSpec};
