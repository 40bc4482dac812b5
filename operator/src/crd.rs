//! The `ConfluxCluster` custom resource (`conflux.io/v1alpha1`): spec, status, conditions,
//! printer columns, the scale subresource and the CEL rules the API server enforces. The types of
//! `spec.scheduling`/`spec.podTemplate` (`placement`), `spec.node` (`node_settings`) and
//! `spec.networkPolicy` (`network_policy`) live beside the code that uses them.
//!
//! **API Boundary:** these types are the CRD. Renaming or retyping a field changes the schema
//! shipped in `manifests/crd.yaml` and `charts/`, and the `crd_is_up_to_date` test says so.

pub mod backup;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::{
    api::core::v1::{Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::backup::{BackupSchedule, BootstrapSpec, ConfluxBackup};
use crate::{
    network_policy::NetworkPolicySettings,
    node_settings::NodeSettings,
    placement::{PodTemplateOverrides, SchedulingSpec},
};

/// A Raft member's id, as the node reports it.
pub type NodeId = u64;

/// Desired state of a Conflux cluster.
// Clippy reads the repeated `printcolumn(type_ = ..)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    derive = "Default",
    group = "conflux.io",
    version = "v1alpha1",
    kind = "ConfluxCluster",
    namespaced,
    shortname = "cfx",
    status = "ConfluxClusterStatus",
    doc = "A Conflux cluster: its replicas drive Raft membership",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "(has(self.tls) ? self.tls.mode : 'Disabled') == (has(oldSelf.tls) ? oldSelf.tls.mode : 'Disabled')"
).message("tls.mode is immutable: members are recorded with the scheme of their peer URLs"))]
#[serde(rename_all = "camelCase")]
pub struct ConfluxClusterSpec {
    /// Number of members. 0 hibernates the cluster: pods stop, volumes and membership are kept.
    #[schemars(range(min = 0, max = 99))]
    pub replicas: i32,
    /// Container image repository of the node, without tag (the tag is `version`).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Node version; used as the image tag. Changing it rolls the pods one at a time.
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// Image pull policy of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets the pods pull the node image with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Persistent storage of each member.
    pub storage: StorageSpec,
    /// Compute resources of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod affinity rules. Its `podAntiAffinity` replaces the default anti-affinity of
    /// `scheduling.antiAffinity`; node and pod affinity are added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Pod topology spread constraints. When absent, members spread across
    /// `topology.kubernetes.io/zone` (`ScheduleAnyway`); any list, even empty, replaces that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Anti-affinity mode, priority class and node selector of the pods.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// Extra labels and annotations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
    /// Raft and request settings of the nodes, checked against each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeSettings>,
    /// The NetworkPolicy the operator emits for the pods.
    #[serde(default)]
    pub network_policy: NetworkPolicySettings,
    /// When true the operator changes nothing (no membership change, no restart, no scaling)
    /// and only refreshes status.
    #[serde(default)]
    pub paused: bool,
    /// Scheduled backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSchedule>,
    /// How a new cluster starts: empty, or from a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,
    /// TLS of the client API and mutual TLS between members. Absent: `mode: Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Where the certificates of the members come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("self.mode != 'CertManager' || has(self.issuerRef)")
    .message("tls.issuerRef is required with mode CertManager"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    pub mode: TlsMode,
    /// The cert-manager Issuer or ClusterIssuer that signs the members' certificates
    /// (`CertManager` mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// How members get their certificates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TlsMode {
    /// The operator keeps a CA (Secret `<name>-ca`) and issues and renews every member's
    /// certificate itself (Secret `<name>-tls`).
    Auto,
    /// cert-manager issues one Certificate per member from `issuerRef`.
    CertManager,
    /// Plain HTTP on both listeners.
    #[default]
    Disabled,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in the cluster's namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
}

/// The kind of a cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl ConfluxClusterSpec {
    /// The TLS mode in effect (`Disabled` when `spec.tls` is absent).
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map_or(TlsMode::Disabled, |tls| tls.mode)
    }

    /// The spec the operator's unit tests start from: `replicas` members of a pinned image,
    /// 1 Gi volumes, every other field at its default.
    #[cfg(test)]
    pub(crate) fn for_tests(replicas: i32) -> ConfluxClusterSpec {
        ConfluxClusterSpec {
            replicas,
            image: "ghcr.io/conflux/conflux".into(),
            version: "0.1.0".into(),
            storage: StorageSpec { size: "1Gi".into(), ..StorageSpec::default() },
            ..ConfluxClusterSpec::default()
        }
    }
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Storage of each member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
// Tests evaluate the CEL rules client-side (`StorageSpec::validate_cel`, needs `kube/cel`).
#[cfg_attr(test, x_kube(cel))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's volume, as a Kubernetes quantity (e.g. `10Gi`). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.size is immutable"))]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// Storage class of the volumes; the cluster default when absent. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.storageClassName is immutable"))]
    pub storage_class_name: Option<String>,
    /// What happens to a removed member's volume after scale-down.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// Delete every member's volume when the ConfluxCluster is deleted. By default (false) the
    /// volumes are kept, and a ConfluxCluster created again with the same name comes back on
    /// their data. Takes effect once the operator applied it to the StatefulSet
    /// (`status.observedGeneration` reached the change).
    #[serde(default)]
    pub delete_volumes_with_cluster: bool,
}

/// What happens to the volume of a member removed by scale-down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReclaimPolicy {
    /// Delete the volume once the member's removal is committed and its pod is gone.
    #[default]
    Delete,
    /// Keep the volume. If the ordinal is needed again, the volume is recycled, because a
    /// removed node id never rejoins.
    Retain,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfluxClusterStatus {
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A one-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Number of pods the StatefulSet runs (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, as a string (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The Raft cluster id, recorded once when pod 0 is initialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The leader's pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The leader's node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_node_id: Option<NodeId>,
    /// Voter node ids.
    #[serde(default)]
    pub voters: Vec<NodeId>,
    /// Learner node ids.
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// One entry per pod or member.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// The operation in progress. Written before acting, so a restarted operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Node ids removed from the cluster. They never rejoin.
    #[serde(default)]
    pub removed_node_ids: Vec<NodeId>,
    /// The backup the cluster was restored from and the revision it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// `Available`, `Quorate`, `Progressing`, `Degraded` (and `Restored`, `QuorumLossRecovery`
    /// when those happened).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Where a restored cluster's data came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// The backup's location (`s3://bucket/key`, `file:///dir/key`).
    pub location: String,
    /// The revision the restored node reported; new writes continue above it.
    pub revision: u64,
}

/// A one-word summary of the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Bootstrapping,
    Running,
    Scaling,
    Updating,
    Degraded,
    Hibernated,
    Paused,
}

/// One member or pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name, when the member's pod is known.
    pub pod: String,
    /// The node id the pod reports (or the member's id when its pod does not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    pub role: MemberRole,
    /// Entries the member is behind the leader's last log index, when the leader reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Reachable, of this cluster, and caught up.
    pub healthy: bool,
}

/// The Raft role of a member as the operator sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
    /// Running but not a member yet.
    Joining,
    /// The pod does not answer.
    Unknown,
}

/// A membership or workload operation, recorded before it is carried out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    /// Node ids the operation acts on.
    #[serde(default)]
    pub node_ids: Vec<NodeId>,
    /// Pod ordinals the operation acts on.
    #[serde(default)]
    pub ordinals: Vec<i32>,
    /// StatefulSet replicas, for scaling operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// RFC 3339 time the operation was recorded.
    pub started_at: String,
}

/// What an [`Operation`] does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    Bootstrap,
    GrowStatefulSet,
    AddLearners,
    PromoteVoters,
    RemoveMember,
    ShrinkStatefulSet,
    DeleteVolume,
    RecycleVolume,
    RestartPod,
    /// The leader (`nodeIds`) hands leadership to another voter before its pod restarts.
    TransferLeader,
    /// Record the cluster id the pods on retained volumes report (a recreated resource).
    Adopt,
    /// Pod 0 is restored from `spec.bootstrap.fromBackup` (instead of initialized empty).
    Restore,
    /// Quorum-loss recovery: the surviving member (`ordinals`, `nodeIds`) becomes the single voter
    /// of a new cluster; every other member is tombstoned in `removedNodeIds`.
    Recover,
}

/// Condition types the operator maintains.
pub mod condition {
    pub const AVAILABLE: &str = "Available";
    pub const QUORATE: &str = "Quorate";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    /// The outcome of `spec.bootstrap.fromBackup`.
    pub const RESTORED: &str = "Restored";
    /// The outcome of the last `conflux.io/recover-from-quorum-loss` annotation.
    pub const QUORUM_LOSS_RECOVERY: &str = "QuorumLossRecovery";
}

/// The CRDs the operator serves, by the name `conflux-operator crd --kind` takes.
pub fn crds() -> [(&'static str, CustomResourceDefinition); 2] {
    [("ConfluxCluster", ConfluxCluster::crd()), ("ConfluxBackup", ConfluxBackup::crd())]
}

/// CRDs as YAML documents, exactly what `conflux-operator crd` prints: every CRD for
/// `manifests/crd.yaml`, or one (`--kind`) for its file in the chart's `crds/`.
pub fn crd_yaml(kind: Option<&str>) -> Result<String, serde_yaml::Error> {
    let mut out = String::from("# Generated by `conflux-operator crd` from operator/src/crd.rs. Do not edit.\n");
    for (name, crd) in crds() {
        if kind.is_none_or(|kind| kind == name) {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&crd)?);
        }
    }
    Ok(out)
}

/// Labels shared by everything the operator creates for one cluster.
pub fn labels(cluster_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "conflux".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster_name.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "conflux-operator".to_string()),
    ])
}

/// The pod selector, as a label-selector string for the scale subresource.
pub fn selector_string(cluster_name: &str) -> String {
    format!("app.kubernetes.io/name=conflux,app.kubernetes.io/instance={cluster_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd_json() -> serde_json::Value {
        serde_json::to_value(ConfluxCluster::crd()).expect("crd serializes")
    }

    #[test]
    fn crd_has_scale_subresource_and_short_name() {
        let crd = crd_json();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "cfx");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let scale = &version["subresources"]["scale"];
        assert_eq!(scale["specReplicasPath"], ".spec.replicas");
        assert_eq!(scale["statusReplicasPath"], ".status.replicas");
        assert_eq!(scale["labelSelectorPath"], ".status.selector");
        assert!(version["subresources"]["status"].is_object());
    }

    #[test]
    fn crd_prints_replicas_ready_leader_phase_and_age() {
        let crd = crd_json();
        let names: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns")
            .iter()
            .filter_map(|column| column["name"].as_str())
            .collect();
        assert_eq!(names, ["Replicas", "Ready", "Leader", "Phase", "Age"]);
    }

    #[test]
    fn storage_size_and_class_cannot_change_but_the_reclaim_policy_can() {
        let storage = |size: &str, class: Option<&str>, policy: ReclaimPolicy| {
            serde_json::to_value(StorageSpec {
                size: size.into(),
                storage_class_name: class.map(String::from),
                reclaim_policy: policy,
                ..StorageSpec::default()
            })
            .expect("storage serializes")
        };
        let old = storage("1Gi", Some("fast"), ReclaimPolicy::Delete);
        assert!(StorageSpec::validate_cel(&old, None).is_ok());
        assert!(StorageSpec::validate_cel(&storage("1Gi", Some("fast"), ReclaimPolicy::Retain), Some(&old)).is_ok());
        assert!(StorageSpec::validate_cel(&storage("2Gi", Some("fast"), ReclaimPolicy::Delete), Some(&old)).is_err());
        assert!(StorageSpec::validate_cel(&storage("1Gi", Some("slow"), ReclaimPolicy::Delete), Some(&old)).is_err());
    }

    #[test]
    fn cert_manager_mode_needs_an_issuer_and_the_tls_mode_never_changes() {
        let tls = |mode: &str, issuer: bool| {
            let mut value = serde_json::json!({ "mode": mode });
            if issuer {
                value["issuerRef"] = serde_json::json!({ "name": "ca-issuer", "kind": "ClusterIssuer" });
            }
            value
        };
        assert!(TlsSpec::validate_cel(&tls("CertManager", true), None).is_ok());
        assert!(TlsSpec::validate_cel(&tls("CertManager", false), None).is_err());
        assert!(TlsSpec::validate_cel(&tls("Auto", false), None).is_ok());

        let crd = crd_json();
        let rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["x-kubernetes-validations"]
            .as_array()
            .expect("spec has CEL rules")
            .clone();
        let rule = rules.iter().find(|r| r["message"].as_str().is_some_and(|m| m.starts_with("tls.mode")));
        let rule = rule.expect("the tls mode rule").clone();
        assert_eq!(
            rule["rule"],
            "(has(self.tls) ? self.tls.mode : 'Disabled') == (has(oldSelf.tls) ? oldSelf.tls.mode : 'Disabled')"
        );
        assert_eq!(ConfluxClusterSpec::default().tls_mode(), TlsMode::Disabled);
    }

    #[test]
    fn crd_schema_rejects_negative_replicas_and_keeps_storage_immutable() {
        let crd = crd_json();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["replicas"]["minimum"].as_f64(), Some(0.0));
        let rules = spec["properties"]["storage"]["properties"]["storageClassName"]["x-kubernetes-validations"]
            .as_array()
            .expect("storage class has CEL rules");
        assert_eq!(rules[0]["rule"], "self == oldSelf");
        let required: Vec<&str> =
            spec["required"].as_array().expect("required").iter().filter_map(|v| v.as_str()).collect();
        for field in ["replicas", "image", "version", "storage"] {
            assert!(required.contains(&field), "{field} is required");
        }
    }
}
