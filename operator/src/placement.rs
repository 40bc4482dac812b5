//! Where a cluster's pods run and what their template carries beyond the node itself:
//! `spec.scheduling` (anti-affinity mode, priority class, node selector), the default
//! anti-affinity across hostnames and zone spread, and `spec.podTemplate` (extra labels and
//! annotations). The types are part of the CRD; [`apply`] is pure and fills a pod template.
//!
//! Rules: `spec.affinity.podAntiAffinity` replaces the default anti-affinity (node and pod
//! affinity are added to it); `spec.topologySpreadConstraints` (even `[]`) replaces the default
//! zone spread. User labels never override the selector labels (the CRD refuses them, and the
//! builder writes the selector labels last); user annotations override the operator's.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, PodAffinityTerm, PodAntiAffinity, PodSpec, TopologySpreadConstraint, WeightedPodAffinityTerm,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{labels, ConfluxCluster};

/// Topology key of the default anti-affinity: one member per node.
pub const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
/// Topology key of the default spread: members across zones.
pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";

/// How strongly members avoid sharing a node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AntiAffinity {
    /// The scheduler prefers a node without another member of this cluster.
    #[default]
    Preferred,
    /// A member is never scheduled onto a node that runs another member (pods stay Pending when
    /// there are fewer nodes than replicas).
    Required,
    /// No anti-affinity.
    None,
}

/// Placement of the cluster's pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Anti-affinity across `kubernetes.io/hostname`. Ignored when `spec.affinity` sets
    /// `podAntiAffinity`.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Node labels a pod's node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// Extra metadata of the pods. Changing it rolls the pods like a version change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
// Tests evaluate the CEL rules client-side (`PodTemplateOverrides::validate_cel`, needs `kube/cel`).
#[cfg_attr(test, x_kube(cel))]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Labels added to every pod. The selector labels (`app.kubernetes.io/name`, `/instance`,
    /// `/managed-by`) are the operator's and refused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Bounded, so the API server's CEL cost estimate of the rule below stays small.
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by']))"
    ).message("podTemplate.labels must not set the selector labels app.kubernetes.io/name, /instance or /managed-by"))]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every pod; they override the operator's (e.g. `prometheus.io/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The selector labels as a label selector.
fn selector(cluster_name: &str) -> LabelSelector {
    LabelSelector { match_labels: Some(labels(cluster_name)), ..LabelSelector::default() }
}

/// The anti-affinity `spec.scheduling.antiAffinity` asks for.
fn default_anti_affinity(cluster_name: &str, mode: AntiAffinity) -> Option<PodAntiAffinity> {
    let term = PodAffinityTerm {
        label_selector: Some(selector(cluster_name)),
        topology_key: HOSTNAME_KEY.into(),
        ..PodAffinityTerm::default()
    };
    match mode {
        AntiAffinity::Preferred => Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..PodAntiAffinity::default()
        }),
        AntiAffinity::Required => Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        }),
        AntiAffinity::None => None,
    }
}

/// The pods' affinity: the user's, with the default anti-affinity unless it sets its own.
pub fn affinity(cluster: &ConfluxCluster) -> Option<Affinity> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let mut affinity = cluster.spec.affinity.clone().unwrap_or_default();
    if affinity.pod_anti_affinity.is_none() {
        affinity.pod_anti_affinity = default_anti_affinity(name, cluster.spec.scheduling.anti_affinity);
    }
    (affinity != Affinity::default()).then_some(affinity)
}

/// The pods' topology spread: the user's when given (even empty), else one zone spread.
pub fn topology_spread(cluster: &ConfluxCluster) -> Vec<TopologySpreadConstraint> {
    if let Some(constraints) = &cluster.spec.topology_spread_constraints {
        return constraints.clone();
    }
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_KEY.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector(name)),
        ..TopologySpreadConstraint::default()
    }]
}

/// Fills the placement fields of a pod spec and merges `spec.podTemplate` into its metadata:
/// user labels first, then the selector labels; the operator's annotations first, then the user's.
pub fn apply(cluster: &ConfluxCluster, metadata: &mut ObjectMeta, pod: &mut PodSpec) {
    let spec = &cluster.spec;
    pod.affinity = affinity(cluster);
    let spread = topology_spread(cluster);
    pod.topology_spread_constraints = (!spread.is_empty()).then_some(spread);
    pod.tolerations = spec.tolerations.clone();
    pod.priority_class_name = spec.scheduling.priority_class_name.clone();
    pod.node_selector = spec.scheduling.node_selector.clone();
    pod.image_pull_secrets = spec.image_pull_secrets.clone();

    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = overrides.labels.unwrap_or_default();
    pod_labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(pod_labels);
    let mut annotations = metadata.annotations.take().unwrap_or_default();
    annotations.extend(overrides.annotations.unwrap_or_default());
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConfluxClusterSpec, StorageSpec};

    fn pod_with(patch: serde_json::Value) -> PodSpec {
        let mut spec = serde_json::to_value(ConfluxClusterSpec {
            replicas: 3,
            image: "conflux".into(),
            version: "1".into(),
            storage: StorageSpec { size: "1Gi".into(), ..StorageSpec::default() },
            ..ConfluxClusterSpec::default()
        })
        .expect("spec serializes");
        for (key, value) in patch.as_object().expect("patch is an object") {
            spec[key] = value.clone();
        }
        let mut cluster = ConfluxCluster::new("cfx", serde_json::from_value(spec).expect("spec deserializes"));
        cluster.metadata.namespace = Some("prod".into());
        let sts = crate::resources::statefulset(&cluster, 3);
        sts.spec.and_then(|s| s.template.spec).expect("pod spec")
    }

    #[test]
    fn the_anti_affinity_mode_and_the_users_own_rules_replace_the_defaults() {
        let required = pod_with(serde_json::json!({ "scheduling": { "antiAffinity": "Required" } }));
        let anti = required.affinity.and_then(|a| a.pod_anti_affinity).expect("anti-affinity");
        assert!(anti.preferred_during_scheduling_ignored_during_execution.is_none());
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution.expect("required")[0].topology_key,
            HOSTNAME_KEY
        );

        let none =
            pod_with(serde_json::json!({ "scheduling": { "antiAffinity": "None" }, "topologySpreadConstraints": [] }));
        assert!(none.affinity.is_none(), "no anti-affinity and nothing else");
        assert!(none.topology_spread_constraints.is_none(), "an empty list replaces the zone spread");

        let node_affinity = serde_json::json!({ "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [ { "matchExpressions": [ { "key": "disk", "operator": "In", "values": ["ssd"] } ] } ] } });
        let added = pod_with(serde_json::json!({ "affinity": { "nodeAffinity": node_affinity } }));
        let affinity = added.affinity.expect("affinity");
        assert!(affinity.node_affinity.is_some(), "the user's node affinity");
        assert!(affinity.pod_anti_affinity.is_some(), "plus the default anti-affinity");

        let own_anti = serde_json::json!({ "requiredDuringSchedulingIgnoredDuringExecution": [
            { "topologyKey": ZONE_KEY, "labelSelector": { "matchLabels": { "app": "other" } } } ] });
        let replaced = pod_with(serde_json::json!({ "affinity": { "podAntiAffinity": own_anti } }));
        let anti = replaced.affinity.and_then(|a| a.pod_anti_affinity).expect("the user's anti-affinity");
        assert!(anti.preferred_during_scheduling_ignored_during_execution.is_none(), "no default added");
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution.expect("required")[0].topology_key,
            ZONE_KEY
        );

        let spread =
            serde_json::json!([{ "maxSkew": 2, "topologyKey": HOSTNAME_KEY, "whenUnsatisfiable": "DoNotSchedule" }]);
        let own_spread = pod_with(serde_json::json!({ "topologySpreadConstraints": spread }));
        let constraints = own_spread.topology_spread_constraints.expect("the user's spread");
        assert_eq!((constraints.len(), constraints[0].max_skew), (1, 2));
    }

    fn labels_value(entries: &[(&str, &str)]) -> serde_json::Value {
        let labels: BTreeMap<String, String> = entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        serde_json::to_value(PodTemplateOverrides { labels: Some(labels), annotations: None }).expect("serializes")
    }

    #[test]
    fn pod_labels_may_not_claim_the_selector_labels() {
        assert!(PodTemplateOverrides::validate_cel(&labels_value(&[("team", "config")]), None).is_ok());
        for reserved in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"] {
            let refused = PodTemplateOverrides::validate_cel(&labels_value(&[(reserved, "x")]), None);
            assert!(refused.is_err(), "{reserved} is refused");
        }
        assert!(PodTemplateOverrides::validate_cel(&labels_value(&[("app.kubernetes.io/part-of", "x")]), None).is_ok());
    }
}
