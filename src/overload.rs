//! The node's overload bounds in one place: per-listener connection caps and timeouts (enforced by
//! `listener`), the client requests and body bytes in flight (`api::shed`), and the write queue in
//! front of Raft (`service::write_batcher`). Each bound refuses at once past its limit; none is a
//! queue that grows with the load.

use std::time::Duration;

use crate::config::ConfigError;
use crate::listener::ListenerLimits;

/// Every bound, from `NodeConfig::overload_limits`.
#[derive(Debug, Clone)]
pub struct OverloadLimits {
    pub max_connections: usize,
    pub peer_max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_inflight_requests: usize,
    pub max_inflight_body_bytes: usize,
    pub write_queue_max_bytes: usize,
    pub write_queue_max_writes: usize,
}

/// Bounds on the writes waiting for the next proposal.
#[derive(Debug, Clone, Copy)]
pub struct WriteQueueLimits {
    pub max_bytes: usize,
    pub max_writes: usize,
}

impl OverloadLimits {
    /// Refuses settings that could never serve a request.
    pub fn check(&self, max_body_bytes: usize) -> Result<(), ConfigError> {
        let positive = [
            ("max-connections", self.max_connections as u128),
            ("peer-max-connections", self.peer_max_connections as u128),
            ("header-read-timeout-ms", self.header_read_timeout.as_millis()),
            ("body-read-timeout-ms", self.body_read_timeout.as_millis()),
            ("idle-timeout-ms", self.idle_timeout.as_millis()),
            ("max-inflight-requests", self.max_inflight_requests as u128),
            ("write-queue-max-writes", self.write_queue_max_writes as u128),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError { key, reason: "must be positive".into() });
        }
        let at_least_a_body = [
            ("max-inflight-body-bytes", self.max_inflight_body_bytes),
            ("write-queue-max-bytes", self.write_queue_max_bytes),
        ];
        if let Some((key, value)) = at_least_a_body.iter().find(|(_, value)| *value < max_body_bytes) {
            return Err(ConfigError {
                key,
                reason: format!(
                    "{value} is smaller than max-body-bytes ({max_body_bytes}): a largest body could never fit"
                ),
            });
        }
        Ok(())
    }

    pub fn client_listener(&self) -> ListenerLimits {
        ListenerLimits { name: "client", max_connections: self.max_connections, ..self.listener() }
    }

    pub fn peer_listener(&self) -> ListenerLimits {
        ListenerLimits { name: "peer", max_connections: self.peer_max_connections, ..self.listener() }
    }

    fn listener(&self) -> ListenerLimits {
        ListenerLimits {
            name: "",
            max_connections: 0,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    pub fn write_queue(&self) -> WriteQueueLimits {
        WriteQueueLimits { max_bytes: self.write_queue_max_bytes, max_writes: self.write_queue_max_writes }
    }
}
