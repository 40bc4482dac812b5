//! The watchers of one config on the whole cluster: this node's own list, and every other
//! member's asked over the peer listener at once, merged into one page with counts.

use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Service;
use crate::model::ConfigKey;
use crate::types::NodeId;
use crate::watch::presence::{self, Cursor, PresencePage};

pub const PATH_WATCHERS: &str = "/raft/watchers";
/// How long a member may take to list its watchers before it is reported unreachable.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// One page of a config's watchers, as asked of each member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchersQuery {
    pub key: ConfigKey,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// The merged page of every member that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterWatchers {
    pub page: PresencePage,
    pub next: Option<Cursor>,
    pub unreachable: Vec<NodeId>,
}

impl Service {
    /// This node's page.
    pub fn local_watchers(&self, query: &WatchersQuery) -> PresencePage {
        self.watch.presence.page(&query.key, query.after.as_ref(), query.limit)
    }

    /// Every member's page, merged.
    pub async fn cluster_watchers(&self, query: WatchersQuery) -> ClusterWatchers {
        let limit = query.limit;
        // One more than shown from each, so the merge knows whether another page exists.
        let query = WatchersQuery { limit: limit + 1, ..query };
        let me = self.node_id();
        let members: Vec<(NodeId, String)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let nodes = m.membership_config.membership().nodes();
            nodes.filter(|(id, _)| **id != me).map(|(id, node)| (*id, node.peer_url.clone())).collect()
        };
        let asks = members.iter().map(|(id, url)| {
            let query = &query;
            async move {
                let answer: Result<PresencePage, _> =
                    self.peers.call(url, PATH_WATCHERS, *id, query, PEER_TIMEOUT).await;
                answer.map_err(|_| *id)
            }
        });
        let mut pages = vec![self.local_watchers(&query)];
        let mut unreachable = Vec::new();
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(page) => pages.push(page),
                Err(id) => unreachable.push(id),
            }
        }
        let (page, next) = presence::merge(pages, limit);
        ClusterWatchers { page, next, unreachable }
    }
}
