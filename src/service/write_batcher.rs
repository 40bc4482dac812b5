//! Batches concurrent client writes into one Raft entry. openraft 0.9 appends and fsyncs the entry
//! of one `client_write` before it takes the next, so one entry per write would cap a node at one
//! write per fsync however many clients wait. Writers queue here instead; one proposal is in flight
//! at a time, and every write that queued meanwhile becomes the next entry (within a command and
//! byte budget). An idle batcher proposes at once, so a lone writer waits for nothing extra.
//!
//! The queue is bounded in writes and bytes (`--write-queue-max-writes`, `--write-queue-max-bytes`):
//! a write that does not fit is refused at once with [`Error::Overloaded`], never queued, so a
//! leader that cannot commit (cut off from its followers) holds a bounded amount of memory here
//! however many clients keep writing. What a write holds is given back when it leaves the queue
//! for a proposal.
//!
//! A proposal is given up after the request timeout: openraft 0.9 never answers the proposer of
//! an uncommitted entry that a snapshot from a newer leader overtakes (it answers only entries it
//! applies or truncates), and one such entry must not stall every later write on this node.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::Error;
use crate::command::{Command, CommandBatch, CommandResponse};
use crate::overload::WriteQueueLimits;
use crate::types::{typ, NodeId};

/// At most this many commands share one log entry.
const MAX_BATCH_COMMANDS: usize = 512;
/// A batch stops growing once its commands reach this many bytes (one command may exceed it).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Why a write was not applied by this node.
#[derive(Debug, Clone)]
pub enum Rejected {
    /// This node does not lead; `leader` is the leader it knows of (id and peer URL), if any.
    NotLeader { leader: Option<(NodeId, String)> },
    /// Anything else; final for this write.
    Failed(Error),
}

type Reply = oneshot::Sender<Result<CommandResponse, Rejected>>;

struct Pending {
    command: Command,
    reply: Reply,
    _queued: Queued,
}

/// A write's share of the queue's bounds, given back when it leaves the queue.
struct Queued {
    _write: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

impl Drop for Queued {
    fn drop(&mut self) {
        crate::metrics::global().write_queue_bytes.sub(self.bytes.num_permits() as i64);
    }
}

/// Handle on the batching worker; dropping every handle stops it.
pub struct WriteBatcher {
    queue: mpsc::UnboundedSender<Pending>,
    writes: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    limits: WriteQueueLimits,
}

impl WriteBatcher {
    /// Starts the worker; `give_up_after` bounds how long one proposal may stay unanswered.
    pub fn start(raft: typ::Raft, give_up_after: Duration, limits: WriteQueueLimits) -> WriteBatcher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, give_up_after, pending));
        let permits = |n: usize| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        WriteBatcher { queue, writes: permits(limits.max_writes), bytes: permits(limits.max_bytes), limits }
    }

    /// Proposes `command` through this node's Raft, in the next batch; answers once it is applied.
    /// Refused at once with [`Error::Overloaded`] when the queue has no room for it.
    pub async fn submit(&self, command: Command) -> Result<CommandResponse, Rejected> {
        let stopped = || Rejected::Failed(Error::Stopped("write batcher stopped".into()));
        let queued = self.admit(command.size_hint())?;
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { command, reply, _queued: queued }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Takes room for one write of `size` bytes (a write larger than the whole bound needs all of it).
    fn admit(&self, size: usize) -> Result<Queued, Rejected> {
        let refuse = |what: String| {
            crate::metrics::global().requests_shed.with_label_values(&["write_queue"]).inc();
            Rejected::Failed(Error::Overloaded(format!(
                "this node's queue of writes waiting for Raft is full ({what}); retry shortly"
            )))
        };
        let Ok(write) = self.writes.clone().try_acquire_owned() else {
            return Err(refuse(format!("{} writes", self.limits.max_writes)));
        };
        let charge = size.clamp(1, self.limits.max_bytes).min(u32::MAX as usize) as u32;
        let Ok(bytes) = self.bytes.clone().try_acquire_many_owned(charge) else {
            return Err(refuse(format!("{} bytes", self.limits.max_bytes)));
        };
        crate::metrics::global().write_queue_bytes.add(i64::from(charge));
        Ok(Queued { _write: write, bytes })
    }
}

async fn run(raft: typ::Raft, give_up_after: Duration, mut queue: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.command.size_hint();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            bytes += next.command.size_hint();
            batch.push(next);
        }
        // A writer that gave up (its request timed out or was dropped) is not proposed at all.
        batch.retain(|pending| !pending.reply.is_closed());
        if !batch.is_empty() {
            propose(&raft, batch, give_up_after).await;
        }
    }
}

/// Commits one batch as one entry and hands each writer its own command's result.
async fn propose(raft: &typ::Raft, batch: Vec<Pending>, give_up_after: Duration) {
    // Leaving the queue gives its room back (`Queued` drops here).
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    crate::metrics::global().write_batch_commands.observe(count as f64);
    // The leader's clock, stamped once into the entry: apply never reads a clock.
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let entry = CommandBatch { time_ms, commands };
    let Ok(outcome) = tokio::time::timeout(give_up_after, raft.client_write(entry)).await else {
        let millis = give_up_after.as_millis() as u64;
        return answer_all(replies, Rejected::Failed(Error::Timeout { millis }));
    };
    match outcome {
        Ok(written) if written.data.len() == count => {
            for (reply, result) in replies.into_iter().zip(written.data) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(written) => {
            let reason = format!("a batch of {count} commands was answered with {} results", written.data.len());
            answer_all(replies, Rejected::Failed(Error::Storage(reason)));
        }
        Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
            let leader = f.leader_id.zip(f.leader_node).map(|(id, node)| (id, node.peer_url));
            answer_all(replies, Rejected::NotLeader { leader });
        }
        // A new leader truncated the entry: it may or may not have been committed elsewhere first.
        Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::LogEntryDiscarded(f))) => {
            let reason = "the entry was discarded by a new leader before this node saw it committed".to_string();
            answer_all(
                replies,
                Rejected::Failed(Error::OutcomeUnknown { leader_id: f.leader_id.unwrap_or_default(), reason }),
            )
        }
        Err(openraft::error::RaftError::APIError(e)) => {
            answer_all(replies, Rejected::Failed(Error::InvalidMembership(e.to_string())))
        }
        Err(openraft::error::RaftError::Fatal(f)) => {
            answer_all(replies, Rejected::Failed(Error::Stopped(f.to_string())))
        }
    }
}

fn answer_all(replies: Vec<Reply>, rejected: Rejected) {
    for reply in replies {
        let _ = reply.send(Err(rejected.clone()));
    }
}
