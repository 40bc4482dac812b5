//! `spec.node`: the node's Raft and request settings as typed CRD fields, the CEL rules that
//! refuse what the node itself would refuse at start-up (`NodeConfig::raft_config` in the node
//! crate's `src/config.rs`), and the `CONFLUX_*` environment variables that carry them to the
//! node. A field left out is not passed, so the node uses its own default; the rules assume those
//! defaults ([`DEFAULTS`], checked against `src/config.rs` by a test).

use k8s_openapi::api::core::v1::EnvVar;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The node's defaults the CEL rules assume for absent fields: (environment variable, default).
pub const DEFAULTS: [(&str, u64); 4] = [
    ("CONFLUX_HEARTBEAT_MS", 200),
    ("CONFLUX_ELECTION_TIMEOUT_MIN_MS", 1000),
    ("CONFLUX_ELECTION_TIMEOUT_MAX_MS", 2000),
    ("CONFLUX_REQUEST_TIMEOUT_MS", 5000),
];

/// Settings of every node. Changing any rolls the pods one at a time, like a version change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
// Tests evaluate the CEL rules client-side (`NodeSettings::validate_cel`, needs `kube/cel`).
#[cfg_attr(test, x_kube(cel))]
#[x_kube(
    validation = Rule::new(
        "(has(self.heartbeatIntervalMs) ? self.heartbeatIntervalMs : 200) < \
         (has(self.electionTimeoutMinMs) ? self.electionTimeoutMinMs : 1000)"
    ).message("node.heartbeatIntervalMs must be below node.electionTimeoutMinMs (defaults 200 and 1000)"),
    validation = Rule::new(
        "(has(self.electionTimeoutMinMs) ? self.electionTimeoutMinMs : 1000) < \
         (has(self.electionTimeoutMaxMs) ? self.electionTimeoutMaxMs : 2000)"
    ).message("node.electionTimeoutMinMs must be below node.electionTimeoutMaxMs (defaults 1000 and 2000)"),
    validation = Rule::new(
        "(has(self.requestTimeoutMs) ? self.requestTimeoutMs : 5000) >= \
         (has(self.electionTimeoutMaxMs) ? self.electionTimeoutMaxMs : 2000)"
    ).message(
        "node.requestTimeoutMs must be at least node.electionTimeoutMaxMs (defaults 5000 and 2000): \
         requests would fail during every election"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    /// Raft heartbeat interval in milliseconds (`CONFLUX_HEARTBEAT_MS`, default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub heartbeat_interval_ms: Option<u64>,
    /// Lower bound of the randomized election timeout in milliseconds
    /// (`CONFLUX_ELECTION_TIMEOUT_MIN_MS`, default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 600000))]
    pub election_timeout_min_ms: Option<u64>,
    /// Upper bound of the randomized election timeout in milliseconds
    /// (`CONFLUX_ELECTION_TIMEOUT_MAX_MS`, default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 600000))]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many log entries since the last one (`CONFLUX_SNAPSHOT_LOGS`,
    /// default 20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub snapshot_logs_since_last: Option<u64>,
    /// Log entries kept below a snapshot so briefly lagging followers catch up by log
    /// (`CONFLUX_KEEP_LOGS`, default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000000))]
    pub keep_logs: Option<u64>,
    /// Upper bound of one client write or linearizable read in milliseconds
    /// (`CONFLUX_REQUEST_TIMEOUT_MS`, default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub request_timeout_ms: Option<u64>,
    /// Largest accepted config body in bytes, at most 64 MiB (`CONFLUX_MAX_BODY_BYTES`, default
    /// 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_body_bytes: Option<u64>,
    /// Every member gets the same value, which lease reads need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_policy: Option<ReadPolicy>,
}

/// How every node confirms a linearizable read (`CONFLUX_READ_POLICY`, default `ReadIndex`):
/// `ReadIndex`, a heartbeat round to a quorum for each batch of reads; `Lease`, the leader answers
/// from its lease (a quorum acknowledgement younger than 4/5 of `electionTimeoutMaxMs`, no round
/// trip), which assumes no member's monotonic clock stalls while the others run (README, "Lease
/// reads").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReadPolicy {
    ReadIndex,
    Lease,
}

impl ReadPolicy {
    /// The value of the node's `--read-policy`.
    fn flag_value(self) -> &'static str {
        match self {
            ReadPolicy::ReadIndex => "read-index",
            ReadPolicy::Lease => "lease",
        }
    }
}

impl NodeSettings {
    /// The environment variables that pass the given settings to the node, in a stable order.
    pub fn env(&self) -> Vec<EnvVar> {
        let number = |value: Option<u64>| value.map(|v| v.to_string());
        [
            ("CONFLUX_HEARTBEAT_MS", number(self.heartbeat_interval_ms)),
            ("CONFLUX_ELECTION_TIMEOUT_MIN_MS", number(self.election_timeout_min_ms)),
            ("CONFLUX_ELECTION_TIMEOUT_MAX_MS", number(self.election_timeout_max_ms)),
            ("CONFLUX_SNAPSHOT_LOGS", number(self.snapshot_logs_since_last)),
            ("CONFLUX_KEEP_LOGS", number(self.keep_logs)),
            ("CONFLUX_REQUEST_TIMEOUT_MS", number(self.request_timeout_ms)),
            ("CONFLUX_MAX_BODY_BYTES", number(self.max_body_bytes)),
            ("CONFLUX_READ_POLICY", self.read_policy.map(|p| p.flag_value().to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            value.map(|value| EnvVar { name: name.into(), value: Some(value), ..EnvVar::default() })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capitalized(word: &str) -> String {
        let mut chars = word.chars();
        chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }

    fn accepted(settings: NodeSettings) -> bool {
        let value = serde_json::to_value(settings).expect("serializes");
        NodeSettings::validate_cel(&value, None).is_ok()
    }

    #[test]
    fn the_rules_refuse_what_the_node_refuses_at_start_up() {
        assert!(accepted(NodeSettings::default()), "the node's defaults");
        let ms = |heartbeat, min, max, request| NodeSettings {
            heartbeat_interval_ms: heartbeat,
            election_timeout_min_ms: min,
            election_timeout_max_ms: max,
            request_timeout_ms: request,
            ..NodeSettings::default()
        };
        assert!(accepted(ms(Some(100), Some(600), Some(1200), Some(1200))));
        assert!(!accepted(ms(Some(600), Some(600), None, None)), "heartbeat not below election min");
        assert!(!accepted(ms(Some(1000), None, None, None)), "heartbeat against the default min 1000");
        assert!(accepted(ms(Some(999), None, None, None)));
        assert!(!accepted(ms(None, Some(2000), None, None)), "min not below the default max 2000");
        assert!(!accepted(ms(None, Some(900), Some(800), None)), "min above max");
        assert!(!accepted(ms(None, None, Some(6000), None)), "request timeout below the election max");
        assert!(accepted(ms(None, None, Some(6000), Some(6000))));
        assert!(!accepted(ms(None, None, None, Some(1500))), "request timeout below the default max 2000");
    }

    #[test]
    fn only_given_settings_reach_the_node_as_its_own_environment_variables() {
        let settings = NodeSettings {
            heartbeat_interval_ms: Some(150),
            max_body_bytes: Some(2048),
            read_policy: Some(ReadPolicy::Lease),
            ..NodeSettings::default()
        };
        let env: Vec<(String, Option<String>)> = settings.env().into_iter().map(|e| (e.name, e.value)).collect();
        assert_eq!(
            env,
            [
                ("CONFLUX_HEARTBEAT_MS".to_string(), Some("150".to_string())),
                ("CONFLUX_MAX_BODY_BYTES".to_string(), Some("2048".to_string())),
                ("CONFLUX_READ_POLICY".to_string(), Some("lease".to_string()))
            ]
        );
        assert!(NodeSettings::default().env().is_empty());
    }

    #[test]
    fn the_schema_caps_the_body_limit_at_the_nodes_limit() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::crd::ConfluxCluster::crd()).expect("crd serializes");
        let node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["node"];
        assert_eq!(node["properties"]["maxBodyBytes"]["maximum"].as_f64(), Some(67_108_864.0));
        assert_eq!(node["x-kubernetes-validations"].as_array().map(Vec::len), Some(3), "the three relations");
    }

    /// Guards against drift from the node: every variable is one `conflux serve` reads, and the
    /// defaults the rules assume are the node's.
    #[test]
    fn variables_and_defaults_match_the_nodes_config() {
        let source = std::fs::read_to_string("../src/config.rs").expect("the node's src/config.rs");
        let all = NodeSettings {
            heartbeat_interval_ms: Some(1),
            election_timeout_min_ms: Some(1),
            election_timeout_max_ms: Some(1),
            snapshot_logs_since_last: Some(1),
            keep_logs: Some(1),
            request_timeout_ms: Some(1),
            max_body_bytes: Some(1),
            read_policy: Some(ReadPolicy::ReadIndex),
        };
        for variable in all.env() {
            assert!(
                source.contains(&format!("env = \"{}\"", variable.name)),
                "{} is not a node setting",
                variable.name
            );
        }
        for (name, default) in DEFAULTS {
            let declared = format!("env = \"{name}\", default_value_t = {default})");
            assert!(source.contains(&declared), "the node's default of {name} is not {default}");
        }
        // Every read policy is a value the node's `--read-policy` accepts.
        for policy in [ReadPolicy::ReadIndex, ReadPolicy::Lease] {
            let variant = policy.flag_value().split('-').map(capitalized).collect::<String>();
            assert!(source.contains(&format!("    {variant},\n")), "the node has no read policy {variant}");
        }
        // The schema's maximum of maxBodyBytes (67108864) is the node's limit.
        assert!(source.contains("MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024"));
    }
}
