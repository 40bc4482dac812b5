//! `spec.networkPolicy` and the pure builder of the one NetworkPolicy a cluster owns: the peer
//! port (Raft and the admin API) only from the cluster's own pods and the operator's pods; the
//! client port (API, `/metrics`) from the cluster's pods, pods labelled
//! `conflux.io/client: <cluster name>` in the cluster's namespace, the peers listed in
//! `clientFrom` and `metricsFrom`, or from anywhere with `clientFromAnywhere`. Egress is not
//! restricted. No IO: the controller applies (or, when disabled, deletes) what this returns.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::ResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    crd::{labels, ConfluxCluster},
    resources::{self, Names, CLIENT_PORT, PEER_PORT},
};

/// The label that lets a pod in the cluster's namespace reach the client port: its value is the
/// cluster's name.
pub const CLIENT_LABEL: &str = "conflux.io/client";

/// Who may reach a cluster's pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySettings {
    /// Emit the cluster's NetworkPolicy (default true). When false the operator deletes it.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Allow the client port from any source (the API still requires a token).
    #[serde(default)]
    pub client_from_anywhere: bool,
    /// More sources allowed to the client port, besides pods labelled
    /// `conflux.io/client: <cluster name>` in the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_from: Option<Vec<NetworkPolicyPeer>>,
    /// Sources that scrape `/metrics` (served on the client port), e.g. Prometheus' namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_from: Option<Vec<NetworkPolicyPeer>>,
}

fn enabled() -> bool {
    true
}

impl Default for NetworkPolicySettings {
    fn default() -> Self {
        NetworkPolicySettings { enabled: true, client_from_anywhere: false, client_from: None, metrics_from: None }
    }
}

/// Where the operator runs, so the peer port admits it: its namespace and its pods' labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPeers {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

impl OperatorPeers {
    /// Parses `key=value,key=value` pod labels.
    pub fn new(namespace: String, pod_labels: &str) -> Result<OperatorPeers, String> {
        let pod_labels = pod_labels
            .split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
                _ => Err(format!("operator pod label {pair:?} is not key=value")),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        if pod_labels.is_empty() {
            return Err("the operator's pod labels are empty: every pod would reach the peer port".into());
        }
        Ok(OperatorPeers { namespace, pod_labels })
    }
}

fn match_labels(labels: BTreeMap<String, String>) -> Option<LabelSelector> {
    Some(LabelSelector { match_labels: Some(labels), ..LabelSelector::default() })
}

fn tcp(port: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }])
}

/// The cluster's NetworkPolicy.
pub fn network_policy(cluster: &ConfluxCluster, operator: &OperatorPeers) -> NetworkPolicy {
    let names = Names::of(cluster);
    let settings = &cluster.spec.network_policy;
    let members = NetworkPolicyPeer { pod_selector: match_labels(labels(&names.cluster)), ..Default::default() };
    let operator_pods = NetworkPolicyPeer {
        namespace_selector: match_labels(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            operator.namespace.clone(),
        )])),
        pod_selector: match_labels(operator.pod_labels.clone()),
        ..Default::default()
    };
    let clients = NetworkPolicyPeer {
        pod_selector: match_labels(BTreeMap::from([(CLIENT_LABEL.to_string(), cluster.name_any())])),
        ..Default::default()
    };
    let mut client_sources = vec![members.clone(), clients];
    client_sources.extend(settings.client_from.clone().unwrap_or_default());
    client_sources.extend(settings.metrics_from.clone().unwrap_or_default());
    NetworkPolicy {
        metadata: resources::metadata(cluster, names.network_policy()),
        spec: Some(NetworkPolicySpec {
            pod_selector: match_labels(labels(&names.cluster)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule { from: Some(vec![members, operator_pods]), ports: tcp(PEER_PORT) },
                NetworkPolicyIngressRule {
                    // No `from`: every source.
                    from: (!settings.client_from_anywhere).then_some(client_sources),
                    ports: tcp(CLIENT_PORT),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_labels_must_be_key_value_pairs_and_not_empty() {
        let peers =
            OperatorPeers::new("ops".into(), "app.kubernetes.io/name=conflux-operator, tier=control").expect("parses");
        assert_eq!(peers.pod_labels.len(), 2);
        assert_eq!(peers.pod_labels["tier"], "control");
        assert!(OperatorPeers::new("ops".into(), "").is_err());
        assert!(OperatorPeers::new("ops".into(), "novalue").is_err());
        assert!(OperatorPeers::new("ops".into(), "=x").is_err());
    }
}
