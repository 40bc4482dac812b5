//! The real `reconcile` against kube-fake-client (objects validated against Kubernetes' own
//! OpenAPI definitions and the CRD's schema), with an in-memory cluster of nodes behind
//! `NodeAdmin` and a small harness playing the StatefulSet controller and the kubelet.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use conflux::{
    client::ClientError,
    wire::{self, ClusterStatus},
};
use futures::future::BoxFuture;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{PersistentVolumeClaim, Pod, PodCondition, PodStatus, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams, PostParams},
    CustomResourceExt, ResourceExt,
};
use serde_json::json;

use crate::{
    controller::{reconcile, Context},
    crd::{
        backup::ConfluxBackup, labels, ConfluxCluster, ConfluxClusterSpec, MemberRole, NodeId, OperationKind, Phase,
    },
    metrics::Metrics,
    nodes::{BackupBody, BackupTaken, NodeAdmin, Rebuilt},
    resources::Names,
};

const NAMESPACE: &str = "prod";
const NAME: &str = "cfx";

async fn create_cluster(clusters: &Api<ConfluxCluster>, spec: ConfluxClusterSpec) {
    let mut cluster = ConfluxCluster::new(NAME, spec);
    cluster.metadata.namespace = Some(NAMESPACE.into());
    clusters.create(&PostParams::default(), &cluster).await.expect("cluster is created");
}

/// The in-memory Raft cluster: what each running pod's node reports.
#[derive(Default)]
struct FakeRaft {
    /// Running nodes by endpoint.
    running: BTreeMap<String, NodeId>,
    /// Node id → cluster id it learned.
    cluster_of: BTreeMap<NodeId, String>,
    voters: BTreeMap<NodeId, String>,
    learners: BTreeMap<NodeId, String>,
    leader: Option<NodeId>,
    /// Endpoints that do not answer.
    silent: BTreeSet<String>,
    /// What status said about the operation when each membership change arrived.
    intents_seen: Vec<(String, Option<OperationKind>, Vec<NodeId>)>,
    inits: usize,
    /// Removals that fail before reaching Raft, as if the operator died mid-call.
    lost_removals: usize,
    /// The CA the controller last said the members' certificates come from.
    trusted_ca: Option<String>,
    /// Applied index per node (10 when not set).
    applied: BTreeMap<NodeId, u64>,
    /// What `GET /admin/backup` streams, and the endpoints it was read from.
    backup_file: Vec<u8>,
    backups_from: Vec<String>,
    /// Bodies `POST /admin/restore` received.
    restored: Vec<Vec<u8>>,
    /// (endpoint, confirmed cluster id) of every `POST /admin/recover`.
    recovers: Vec<(String, String)>,
    /// The problem code `POST /admin/recover` answers with (409), as a node that still reaches
    /// its quorum does.
    recover_refusal: Option<&'static str>,
}

/// What a backup file starts with; the fake node refuses anything else (`invalid_backup`).
const BACKUP_MAGIC: &[u8] = b"CFXBACKUP";

struct FakeNodes {
    raft: Mutex<FakeRaft>,
    clusters: Api<ConfluxCluster>,
}

fn unreachable(endpoint: &str) -> ClientError {
    ClientError::Unexpected { status: 0, body: format!("{endpoint} does not answer") }
}

fn problem(status: u16, code: &str) -> ClientError {
    ClientError::Problem(Box::new(wire::Problem {
        kind: "about:blank".into(),
        title: code.into(),
        status,
        code: code.into(),
        detail: code.into(),
        errors: Vec::new(),
    }))
}

impl FakeNodes {
    fn raft(&self) -> std::sync::MutexGuard<'_, FakeRaft> {
        self.raft.lock().expect("fake raft lock")
    }

    /// Records what status said at the moment a membership change arrived (rule 6).
    async fn note_intent(&self, call: &str) {
        let status = self.clusters.get_status(NAME).await.ok().and_then(|c| c.status);
        let kind = status.as_ref().and_then(|s| s.operation.as_ref()).map(|op| op.kind);
        let removed = status.map(|s| s.removed_node_ids).unwrap_or_default();
        self.raft().intents_seen.push((call.to_string(), kind, removed));
    }

    fn answering(&self, endpoint: &str) -> Result<NodeId, ClientError> {
        let raft = self.raft();
        if raft.silent.contains(endpoint) {
            return Err(unreachable(endpoint));
        }
        raft.running.get(endpoint).copied().ok_or_else(|| unreachable(endpoint))
    }
}

impl NodeAdmin for FakeNodes {
    fn trust(&self, names: &Names, ca_pem: Option<&str>) {
        assert_eq!(names.cluster, NAME);
        self.raft().trusted_ca = ca_pem.map(String::from);
    }

    fn status<'a>(&'a self, endpoint: &'a str, _token: &'a str) -> BoxFuture<'a, Result<ClusterStatus, ClientError>> {
        Box::pin(async move {
            let id = self.answering(endpoint)?;
            let raft = self.raft();
            let member = raft.voters.contains_key(&id) || raft.learners.contains_key(&id);
            let state = match () {
                _ if raft.leader == Some(id) => "Leader",
                _ if raft.voters.contains_key(&id) => "Follower",
                _ if raft.learners.contains_key(&id) => "Learner",
                _ => "Uninitialized",
            };
            let leader = raft.leader == Some(id);
            Ok(ClusterStatus {
                node_id: id,
                cluster_id: raft.cluster_of.get(&id).cloned(),
                state: state.into(),
                term: 1,
                leader_id: if member { raft.leader } else { None },
                voters: if member { raft.voters.clone() } else { BTreeMap::new() },
                learners: if member { raft.learners.clone() } else { BTreeMap::new() },
                last_log_index: 10,
                committed_index: 10,
                applied_index: raft.applied.get(&id).copied().unwrap_or(10),
                matched_index: leader
                    .then(|| raft.voters.keys().chain(raft.learners.keys()).map(|&id| (id, 10)).collect()),
                quorum_acked_ms_ago: leader.then_some(0),
            })
        })
    }

    fn init<'a>(&'a self, endpoint: &'a str, _token: &'a str) -> BoxFuture<'a, Result<wire::InitResult, ClientError>> {
        Box::pin(async move {
            self.note_intent("init").await;
            let id = self.answering(endpoint)?;
            let mut raft = self.raft();
            if raft.cluster_of.contains_key(&id) {
                return Err(problem(409, "already_initialized"));
            }
            raft.inits += 1;
            raft.cluster_of.insert(id, "c1".into());
            raft.voters.insert(id, endpoint.to_string());
            raft.leader = Some(id);
            Ok(wire::InitResult { node_id: id, cluster_id: "c1".into() })
        })
    }

    fn add_learner<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
        node_id: NodeId,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<wire::LearnerResult, ClientError>> {
        Box::pin(async move {
            self.note_intent("add_learner").await;
            self.answering(endpoint)?;
            let mut raft = self.raft();
            if raft.voters.values().chain(raft.learners.values()).any(|url| url == peer_url) {
                return Err(problem(422, "invalid_membership"));
            }
            raft.learners.insert(node_id, peer_url.to_string());
            let cluster = raft.leader.and_then(|leader| raft.cluster_of.get(&leader).cloned());
            raft.cluster_of.insert(node_id, cluster.unwrap_or_else(|| "c1".into()));
            Ok(wire::LearnerResult { node_id, caught_up: true, matched_index: 10 })
        })
    }

    fn set_voters<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
        voters: Vec<NodeId>,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        Box::pin(async move {
            self.note_intent("set_voters").await;
            self.answering(endpoint)?;
            let mut raft = self.raft();
            let mut members: BTreeMap<NodeId, String> = raft.voters.clone();
            members.extend(raft.learners.clone());
            if voters.iter().any(|id| !members.contains_key(id)) {
                return Err(problem(404, "unknown_member"));
            }
            raft.voters = voters.iter().map(|id| (*id, members[id].clone())).collect();
            raft.learners = members.into_iter().filter(|(id, _)| !voters.contains(id)).collect();
            Ok(wire::Membership { voters: raft.voters.clone(), learners: raft.learners.clone(), log_index: 11 })
        })
    }

    fn remove_member<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
        node_id: NodeId,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        Box::pin(async move {
            self.note_intent("remove_member").await;
            self.answering(endpoint)?;
            let mut raft = self.raft();
            if raft.lost_removals > 0 {
                raft.lost_removals -= 1;
                return Err(unreachable(endpoint));
            }
            if raft.voters.remove(&node_id).is_none() && raft.learners.remove(&node_id).is_none() {
                return Err(problem(404, "unknown_member"));
            }
            if raft.leader == Some(node_id) {
                raft.leader = raft.voters.keys().next().copied();
            }
            Ok(wire::Membership { voters: raft.voters.clone(), learners: raft.learners.clone(), log_index: 12 })
        })
    }

    fn transfer_leader<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
    ) -> BoxFuture<'a, Result<wire::LeaderTransfer, ClientError>> {
        Box::pin(async move {
            self.note_intent("transfer_leader").await;
            self.answering(endpoint)?;
            let mut raft = self.raft();
            let from = raft.leader.ok_or_else(|| problem(503, "no_leader"))?;
            let to =
                raft.voters.keys().copied().find(|id| *id != from).ok_or_else(|| problem(422, "invalid_membership"))?;
            raft.leader = Some(to);
            Ok(wire::LeaderTransfer { from, to, term: 2 })
        })
    }

    fn backup<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
        out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<BackupTaken, ClientError>> {
        Box::pin(async move {
            let id = self.answering(endpoint)?;
            let (file, cluster_id) = {
                let mut raft = self.raft();
                raft.backups_from.push(endpoint.to_string());
                (raft.backup_file.clone(), raft.cluster_of.get(&id).cloned().unwrap_or_default())
            };
            // In two writes, as a stream arrives.
            let (head, tail) = file.split_at(file.len() / 2);
            for part in [head, tail] {
                tokio::io::AsyncWriteExt::write_all(out, part)
                    .await
                    .map_err(|e| ClientError::Unexpected { status: 0, body: e.to_string() })?;
            }
            Ok(BackupTaken { cluster_id, revision: 42, bytes: file.len() as u64, sha256: format!("{:x}", file.len()) })
        })
    }

    fn restore<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
        body: BackupBody,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>> {
        Box::pin(async move {
            self.note_intent("restore").await;
            let id = self.answering(endpoint)?;
            let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(body)
                .await
                .map_err(|e| ClientError::Unexpected { status: 0, body: e.to_string() })?;
            let file = chunks.concat();
            let mut raft = self.raft();
            if raft.cluster_of.contains_key(&id) {
                return Err(problem(409, "not_pristine"));
            }
            if !file.starts_with(BACKUP_MAGIC) {
                return Err(problem(400, "invalid_backup"));
            }
            raft.restored.push(file);
            raft.cluster_of.insert(id, "c2".into());
            raft.voters.insert(id, endpoint.to_string());
            raft.leader = Some(id);
            Ok(Rebuilt { node_id: id, cluster_id: "c2".into(), revision: 43 })
        })
    }

    fn recover<'a>(
        &'a self,
        endpoint: &'a str,
        _token: &'a str,
        cluster_id: &'a str,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>> {
        Box::pin(async move {
            self.note_intent("recover").await;
            let id = self.answering(endpoint)?;
            let mut raft = self.raft();
            raft.recovers.push((endpoint.to_string(), cluster_id.to_string()));
            if raft.cluster_of.get(&id).map(String::as_str) != Some(cluster_id) {
                return Err(problem(409, "cluster_id_mismatch"));
            }
            if let Some(code) = raft.recover_refusal {
                return Err(problem(409, code));
            }
            // The survivor keeps what it applied and alone forms a new cluster.
            raft.cluster_of.insert(id, "c9".into());
            raft.voters = BTreeMap::from([(id, endpoint.to_string())]);
            raft.learners.clear();
            raft.leader = Some(id);
            Ok(Rebuilt { node_id: id, cluster_id: "c9".into(), revision: 77 })
        })
    }
}

/// kube-fake-client with OpenAPI validation of every kind the operator writes, including the
/// ConfluxCluster against its own generated schema and the Lease of leader election (which
/// kube-fake-client looks up as `io.k8s.coordination.v1.Lease`, without the `api` segment).
pub(crate) async fn fake_kubernetes() -> kube::Client {
    // Relative to the package root, where cargo runs tests: a path baked in at compile time
    // would point into whichever checkout built the binary first.
    let fixture = "tests/fixtures/k8s-definitions.json";
    let mut swagger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture exists")).expect("fixture is JSON");
    let crd = serde_json::to_value(ConfluxCluster::crd()).expect("crd serializes");
    let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    swagger["definitions"]["io.conflux.v1alpha1.ConfluxCluster"] = schema;
    let lease = swagger["definitions"]["io.k8s.api.coordination.v1.Lease"].clone();
    assert!(lease.is_object(), "the fixture has the Lease definition");
    swagger["definitions"]["io.k8s.coordination.v1.Lease"] = lease;
    // kube-fake-client names a dotted group's definition by reversing the group
    // (`io.k8s.networking.v1.NetworkPolicy`); Kubernetes names it `io.k8s.api.networking.v1...`.
    swagger["definitions"]["io.k8s.networking.v1.NetworkPolicy"] =
        swagger["definitions"]["io.k8s.api.networking.v1.NetworkPolicy"].clone();
    let crd = serde_json::to_value(ConfluxBackup::crd()).expect("crd serializes");
    swagger["definitions"]["io.conflux.v1alpha1.ConfluxBackup"] =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let path = std::env::temp_dir().join(format!(
        "conflux-operator-swagger-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, swagger.to_string()).expect("writes the schema file");
    let mut builder = kube_fake_client::ClientBuilder::new()
        .with_resource::<ConfluxCluster>()
        .with_status_subresource::<ConfluxCluster>()
        .with_resource::<ConfluxBackup>()
        .with_status_subresource::<ConfluxBackup>()
        .with_schema_validation_file(&path)
        .expect("schema file loads");
    for gvk in [
        "apps/v1/StatefulSet",
        "/v1/Service",
        "/v1/Secret",
        "/v1/Pod",
        "/v1/PersistentVolumeClaim",
        "policy/v1/PodDisruptionBudget",
        "networking.k8s.io/v1/NetworkPolicy",
        "conflux.io/v1alpha1/ConfluxCluster",
        "coordination.k8s.io/v1/Lease",
        "conflux.io/v1alpha1/ConfluxBackup",
    ] {
        builder = builder.with_validation_for(gvk).expect("definition exists");
    }
    builder.build().await.expect("fake client builds")
}

struct Harness {
    client: kube::Client,
    nodes: Arc<FakeNodes>,
    context: Arc<Context>,
    names: Names,
    /// The node id on each ordinal's volume (a volume outlives its pod).
    disks: BTreeMap<u32, NodeId>,
    next_id: NodeId,
    /// Ordinals that had a pod at least once, and pods recreated after the operator deleted them.
    started: BTreeSet<u32>,
    restarts: Vec<u32>,
    /// The operator's clock (`Context::clock`).
    now: Arc<Mutex<jiff::Timestamp>>,
}

/// The cluster every harness starts from.
fn test_cluster(replicas: i32) -> ConfluxCluster {
    let mut cluster = ConfluxCluster::new(NAME, ConfluxClusterSpec::for_tests(replicas));
    cluster.metadata.namespace = Some(NAMESPACE.into());
    cluster
}

impl Harness {
    async fn new(replicas: i32) -> Harness {
        Harness::of(test_cluster(replicas)).await
    }

    async fn with_spec(spec: ConfluxClusterSpec) -> Harness {
        let mut cluster = ConfluxCluster::new(NAME, spec);
        cluster.metadata.namespace = Some(NAMESPACE.into());
        Harness::of(cluster).await
    }

    /// A harness whose cluster is `cluster` (named `NAME` in `NAMESPACE`).
    async fn of(cluster: ConfluxCluster) -> Harness {
        let client = fake_kubernetes().await;
        let clusters: Api<ConfluxCluster> = Api::namespaced(client.clone(), NAMESPACE);
        clusters.create(&PostParams::default(), &cluster).await.expect("cluster is created");
        let nodes = Arc::new(FakeNodes { raft: Mutex::new(FakeRaft::default()), clusters: clusters.clone() });
        let now = Arc::new(Mutex::new(jiff::Timestamp::now()));
        let mut context = Context::new(client.clone(), nodes.clone(), Metrics::new().expect("metrics"));
        let clock = now.clone();
        context.clock = Arc::new(move || *clock.lock().expect("clock lock"));
        let context = Arc::new(context);
        let names = Names { cluster: NAME.into(), namespace: NAMESPACE.into(), tls: false };
        Harness {
            client,
            nodes,
            context,
            names,
            disks: BTreeMap::new(),
            next_id: 100,
            started: BTreeSet::new(),
            restarts: Vec::new(),
            now,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn cluster(&self) -> ConfluxCluster {
        self.api::<ConfluxCluster>().get(NAME).await.expect("cluster exists")
    }

    async fn reconcile_once(&self) {
        let cluster = Arc::new(self.cluster().await);
        if let Err(error) = reconcile(cluster, self.context.clone()).await {
            panic!("reconcile failed: {error}");
        }
    }

    async fn statefulset_replicas(&self) -> i32 {
        let sts = self.api::<StatefulSet>().get(NAME).await.expect("statefulset exists");
        sts.spec.and_then(|s| s.replicas).unwrap_or(-1)
    }

    /// Plays the StatefulSet controller and the kubelet: pods (Ready, on their volume's node)
    /// for every ordinal below the StatefulSet's replicas, none above. Like the StatefulSet
    /// controller, pods are owned by the StatefulSet, and so are the claims when its
    /// `persistentVolumeClaimRetentionPolicy.whenDeleted` is `Delete`; without a StatefulSet
    /// (the cluster was deleted) no node runs.
    async fn kubelet(&mut self) {
        let pods = self.api::<Pod>();
        let claims = self.api::<PersistentVolumeClaim>();
        let existing_claims: BTreeSet<String> =
            claims.list(&Default::default()).await.expect("list claims").items.iter().map(|c| c.name_any()).collect();
        self.disks.retain(|ordinal, _| existing_claims.contains(&self.names.volume_claim(*ordinal)));
        let Some(sts) = self.api::<StatefulSet>().get_opt(NAME).await.expect("get statefulset") else {
            self.nodes.raft().running.clear();
            return;
        };
        let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: NAME.into(),
            uid: sts.metadata.uid.clone().expect("statefulset uid"),
            ..Default::default()
        };
        let claims_owned = sts
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
        for claim in &existing_claims {
            let owners = if claims_owned { json!([owner]) } else { json!(null) };
            let patch = json!({ "metadata": { "ownerReferences": owners } });
            claims.patch(claim, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("claim owners");
        }
        let replicas = u32::try_from(self.statefulset_replicas().await).unwrap_or(0);
        let revision = self.publish_revision(replicas).await;
        for ordinal in 0..replicas.max(self.disks.keys().max().map_or(0, |o| o + 1)) {
            let pod_name = self.names.pod(ordinal);
            let endpoint = self.names.peer_url(ordinal);
            if ordinal >= replicas {
                let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
                self.nodes.raft().running.remove(&endpoint);
                continue;
            }
            if !self.disks.contains_key(&ordinal) {
                self.disks.insert(ordinal, self.next_id);
                self.next_id += 1;
                let claim = PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(self.names.volume_claim(ordinal)),
                        labels: Some(labels(NAME)),
                        ..ObjectMeta::default()
                    },
                    ..PersistentVolumeClaim::default()
                };
                claims.create(&PostParams::default(), &claim).await.expect("claim is created");
            }
            self.nodes.raft().running.insert(endpoint, self.disks[&ordinal]);
            if pods.get_opt(&pod_name).await.expect("get pod").is_none() {
                if !self.started.insert(ordinal) {
                    self.restarts.push(ordinal);
                }
                let mut pod_labels = labels(NAME);
                pod_labels.insert("controller-revision-hash".into(), revision.clone());
                let pod = Pod {
                    metadata: ObjectMeta {
                        name: Some(pod_name),
                        labels: Some(pod_labels),
                        owner_references: Some(vec![owner.clone()]),
                        ..ObjectMeta::default()
                    },
                    status: Some(PodStatus {
                        conditions: Some(vec![PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            ..PodCondition::default()
                        }]),
                        ..PodStatus::default()
                    }),
                    ..Pod::default()
                };
                pods.create(&PostParams::default(), &pod).await.expect("pod is created");
            }
        }
    }

    /// Like the StatefulSet controller: the revision of the current pod template, published as
    /// `status.updateRevision`; pods are labelled with the revision they were created from.
    async fn publish_revision(&self, replicas: u32) -> String {
        let sts = self.api::<StatefulSet>().get(NAME).await.expect("statefulset exists");
        let template = serde_json::to_string(&sts.spec.map(|s| s.template)).expect("template serializes");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&template, &mut hasher);
        let revision = format!("{NAME}-{:x}", std::hash::Hasher::finish(&hasher));
        let status = json!({ "status": { "replicas": replicas, "updateRevision": revision } });
        self.api::<StatefulSet>()
            .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("statefulset status");
        revision
    }

    /// Reconciles (and plays the kubelet) until the planner has nothing left to do.
    async fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.reconcile_once().await;
            self.kubelet().await;
        }
    }

    async fn scale(&self, replicas: i32) {
        self.api::<ConfluxCluster>()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": replicas } })))
            .await
            .expect("scales");
    }

    fn voters(&self) -> usize {
        self.nodes.raft().voters.len()
    }
}

fn condition(cluster: &ConfluxCluster, type_: &str) -> (String, String) {
    let conditions = cluster.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let found = conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("condition {type_} is written"));
    (found.status.clone(), found.reason.clone())
}

#[tokio::test]
async fn a_three_replica_cluster_gets_valid_complete_objects_and_a_three_voter_membership() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;

    let secret = harness.api::<Secret>().get("cfx-token").await.expect("token secret");
    let data = secret.data.expect("data");
    let (token, admin_token) = (data["token"].0.clone(), data["admin-token"].0.clone());
    assert!(token.len() >= 16, "the token is long enough for the node");
    assert!(admin_token.len() >= 16 && admin_token != token, "a separate admin token for the admin API");
    let peers = harness.api::<Service>().get("cfx-peers").await.expect("headless service");
    let peer_spec = peers.spec.expect("spec");
    assert_eq!(peer_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peer_spec.publish_not_ready_addresses, Some(true));
    harness.api::<Service>().get("cfx").await.expect("client service");
    let pdb = harness.api::<PodDisruptionBudget>().get("cfx").await.expect("pdb");
    assert_eq!(pdb.spec.and_then(|s| s.max_unavailable), Some(IntOrString::Int(1)));
    let sts = harness.api::<StatefulSet>().get("cfx").await.expect("statefulset");
    let owners = sts.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!((owners[0].kind.as_str(), owners[0].controller), ("ConfluxCluster", Some(true)));
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(3));

    {
        let raft = harness.nodes.raft();
        assert_eq!(raft.inits, 1, "pod 0 is initialized exactly once");
        assert_eq!(raft.voters.len(), 3);
        assert!(raft.learners.is_empty());
    }

    let cluster = harness.cluster().await;
    let status = cluster.status.clone().expect("status is written");
    assert_eq!(status.cluster_id.as_deref(), Some("c1"));
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(status.selector.as_deref(), Some("app.kubernetes.io/name=conflux,app.kubernetes.io/instance=cfx"));
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.leader.as_deref(), Some("cfx-0"));
    assert_eq!(status.members.iter().filter(|m| m.healthy).count(), 3);
    assert_eq!(status.members[0].role, MemberRole::Leader);
    assert_eq!(status.operation, None);
    assert_eq!(condition(&cluster, "Available").0, "True");
    assert_eq!(condition(&cluster, "Quorate").0, "True");
    assert_eq!(condition(&cluster, "Progressing"), ("False".into(), "Converged".into()));
    assert_eq!(condition(&cluster, "Degraded").0, "False");
}

#[tokio::test]
async fn scaling_down_shrinks_the_statefulset_only_when_the_planner_allows() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    assert_eq!(harness.voters(), 3);

    // Pod 1 stops answering; removing pod 2 would leave {0, 1} with one healthy voter.
    let silent = harness.names.peer_url(1);
    harness.nodes.raft().silent.insert(silent.clone());
    harness.scale(1).await;
    harness.settle(4).await;
    assert_eq!(harness.statefulset_replicas().await, 3, "no shrink while removal would lose quorum");
    assert_eq!(harness.voters(), 3, "no voter removed");
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded"), ("True".into(), "WouldLoseQuorum".into()));
    assert_eq!(condition(&cluster, "Progressing"), ("True".into(), "WouldLoseQuorum".into()));

    harness.nodes.raft().silent.clear();
    harness.settle(10).await;
    assert_eq!(harness.voters(), 1);
    assert_eq!(harness.statefulset_replicas().await, 1);
    let status = harness.cluster().await.status.expect("status");
    assert_eq!(status.removed_node_ids.len(), 2, "both removed ids are tombstoned");
    let claims = harness.api::<PersistentVolumeClaim>().list(&Default::default()).await.expect("claims");
    let names: Vec<String> = claims.items.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["data-cfx-0"], "removed members' volumes are deleted after the shrink");

    // An Event for the refusal and for every change.
    let events = harness.api::<k8s_openapi::api::events::v1::Event>().list(&Default::default()).await.expect("events");
    let seen: Vec<(String, String)> = events
        .items
        .iter()
        .map(|e| (e.type_.clone().unwrap_or_default(), e.reason.clone().unwrap_or_default()))
        .collect();
    for (type_, reason) in [
        ("Warning", "WouldLoseQuorum"),
        ("Normal", "Bootstrap"),
        ("Normal", "AddLearners"),
        ("Normal", "PromoteVoters"),
        ("Normal", "RemoveMember"),
        ("Normal", "ShrinkStatefulSet"),
        ("Normal", "DeleteVolume"),
    ] {
        assert!(seen.contains(&(type_.to_string(), reason.to_string())), "no {type_} {reason} event in {seen:?}");
    }
}

#[tokio::test]
async fn every_membership_change_finds_its_intent_recorded_first() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.scale(2).await;
    harness.settle(4).await;
    let intents = harness.nodes.raft().intents_seen.clone();
    let expected = |call: &str| match call {
        "init" => OperationKind::Bootstrap,
        "add_learner" => OperationKind::AddLearners,
        "set_voters" => OperationKind::PromoteVoters,
        _ => OperationKind::RemoveMember,
    };
    assert!(intents.iter().any(|(call, _, _)| call == "remove_member"));
    for (call, recorded, removed) in &intents {
        assert_eq!(recorded.as_ref(), Some(&expected(call)), "{call} ran without its intent in status");
        if call == "remove_member" {
            assert_eq!(removed.len(), 1, "the id is tombstoned before it is removed");
        }
    }
}

#[tokio::test]
async fn a_vanished_pod_is_waited_for_and_never_removed() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.api::<Pod>().delete("cfx-2", &DeleteParams::default()).await.expect("pod deleted");
    harness.nodes.raft().running.remove(&harness.names.peer_url(2));
    for _ in 0..3 {
        harness.reconcile_once().await;
    }
    assert_eq!(harness.voters(), 3);
    assert_eq!(harness.statefulset_replicas().await, 3);
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded").0, "True");
    assert_eq!(condition(&cluster, "Quorate").0, "True");
    let member = cluster.status.expect("status").members.into_iter().find(|m| m.pod == "cfx-2").expect("still listed");
    assert!(!member.healthy);
}

/// Guards the meaning of the tests above: the fake API server really validates what is written.
#[tokio::test]
async fn the_fake_api_server_rejects_objects_that_break_their_schema() {
    let harness = Harness::new(3).await;
    let bad_statefulset = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "bad", "namespace": NAMESPACE },
        "spec": { "replicas": "three", "selector": {}, "template": {} }
    });
    let params = PatchParams::apply("test").force();
    let refused = harness.api::<StatefulSet>().patch("bad", &params, &Patch::Apply(&bad_statefulset)).await;
    assert!(refused.is_err(), "a StatefulSet with string replicas is refused");

    let bad_status = json!({ "status": { "phase": "Sleeping" } });
    let refused =
        harness.api::<ConfluxCluster>().patch_status(NAME, &PatchParams::default(), &Patch::Merge(&bad_status)).await;
    assert!(refused.is_err(), "a status outside the CRD's schema is refused");
}

#[tokio::test]
async fn a_pod_whose_disk_was_lost_rejoins_as_a_new_member_and_the_old_id_is_tombstoned() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    let old_id = harness.disks[&2];

    // The volume of pod 2 is replaced by an empty one: the node comes back with a new id.
    let new_id = 999;
    harness.disks.insert(2, new_id);
    harness.nodes.raft().running.insert(harness.names.peer_url(2), new_id);
    harness.settle(8).await;

    let voters: BTreeSet<NodeId> = harness.nodes.raft().voters.keys().copied().collect();
    assert_eq!(voters.len(), 3);
    assert!(voters.contains(&new_id) && !voters.contains(&old_id), "{voters:?}");
    let status = harness.cluster().await.status.expect("status");
    assert!(status.removed_node_ids.contains(&old_id));
    assert_eq!(status.phase, Some(Phase::Running));
}

#[tokio::test]
async fn hibernation_keeps_membership_and_volumes_and_waking_restores_the_cluster() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.scale(0).await;
    harness.settle(3).await;
    assert_eq!(harness.statefulset_replicas().await, 0);
    assert_eq!(harness.voters(), 3, "hibernation changes no membership");
    let claims = harness.api::<PersistentVolumeClaim>().list(&Default::default()).await.expect("claims");
    assert_eq!(claims.items.len(), 3, "volumes are kept");
    assert_eq!(harness.cluster().await.status.expect("status").phase, Some(Phase::Hibernated));

    harness.scale(3).await;
    harness.settle(4).await;
    assert_eq!(harness.statefulset_replicas().await, 3);
    assert_eq!(harness.voters(), 3);
    assert_eq!(harness.nodes.raft().inits, 1, "waking never re-initializes");
}

#[tokio::test]
async fn a_version_change_restarts_followers_first_and_the_leader_last_one_at_a_time() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    assert_eq!(harness.cluster().await.status.and_then(|s| s.leader).as_deref(), Some("cfx-0"));
    assert!(harness.restarts.is_empty());

    let patch = json!({ "spec": { "version": "0.2.0" } });
    harness.api::<ConfluxCluster>().patch(NAME, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    harness.settle(10).await;

    assert_eq!(harness.restarts, [2, 1, 0], "followers by highest ordinal, then the leader");
    let leader = harness.cluster().await.status.and_then(|s| s.leader);
    assert!(leader.is_some_and(|pod| pod != "cfx-0"), "the leader handed leadership over before its pod restarted");
    let sts = harness.api::<StatefulSet>().get(NAME).await.expect("statefulset");
    let image = sts.spec.and_then(|s| s.template.spec).map(|p| p.containers[0].image.clone());
    assert_eq!(image.flatten().as_deref(), Some("ghcr.io/conflux/conflux:0.2.0"));
    assert_eq!(harness.voters(), 3, "a restart changes no membership");
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Progressing"), ("False".into(), "Converged".into()));
}

#[tokio::test]
async fn a_pod_of_another_cluster_is_reported_and_never_merged() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.scale(4).await;
    harness.reconcile_once().await;
    harness.kubelet().await;
    // Pod 3 runs on a volume that belongs to some other cluster.
    harness.disks.insert(3, 4242);
    harness.nodes.raft().running.insert(harness.names.peer_url(3), 4242);
    harness.nodes.raft().cluster_of.insert(4242, "another".into());
    harness.settle(4).await;

    assert!(!harness.nodes.raft().learners.contains_key(&4242));
    assert!(!harness.nodes.raft().voters.contains_key(&4242));
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded"), ("True".into(), "ForeignClusterPods".into()));
}

#[tokio::test]
async fn a_bootstrap_whose_answer_was_lost_is_finished_after_pod_zero_was_unreachable() {
    let mut harness = Harness::new(1).await;
    harness.reconcile_once().await;
    harness.kubelet().await;
    // The operator recorded the bootstrap and pod 0 initialized, but the answer never arrived.
    let intent = json!({ "status": { "operation": {
        "kind": "Bootstrap", "nodeIds": [], "ordinals": [0], "startedAt": "2026-01-01T00:00:00Z" } } });
    harness
        .api::<ConfluxCluster>()
        .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&intent))
        .await
        .expect("intent");
    let endpoint = harness.names.peer_url(0);
    {
        let mut raft = harness.nodes.raft();
        let id = raft.running[&endpoint];
        raft.cluster_of.insert(id, "c1".into());
        raft.voters.insert(id, endpoint.clone());
        raft.leader = Some(id);
        raft.silent.insert(endpoint.clone());
    }
    // While pod 0 does not answer the intent is kept...
    harness.reconcile_once().await;
    let status = harness.cluster().await.status.expect("status");
    assert_eq!(status.operation.map(|op| op.kind), Some(OperationKind::Bootstrap));
    // ...and once it answers, the bootstrap is finished with pod 0's cluster id, not refused.
    harness.nodes.raft().silent.clear();
    harness.settle(3).await;
    let status = harness.cluster().await.status.expect("status");
    assert_eq!(status.cluster_id.as_deref(), Some("c1"));
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(harness.nodes.raft().inits, 0, "init is never repeated on an initialized node");
}

/// Operator HA: replica A records a removal's intent and dies before it reaches Raft; B cannot
/// lead until A's Lease expires, then finishes exactly that removal from `status.operation`.
#[tokio::test]
async fn a_second_operator_finishes_the_first_ones_recorded_removal_after_taking_over_its_lease() {
    use crate::leader::{Elector, Leadership, LeaseConfig};
    use std::time::{Duration, Instant};

    let mut harness = Harness::new(3).await;
    let a = Elector::new(harness.client.clone(), LeaseConfig::new("conflux-operator", "conflux-system", "operator-a"));
    let b = Elector::new(harness.client.clone(), LeaseConfig::new("conflux-operator", "conflux-system", "operator-b"));
    let t0 = Instant::now();
    assert_eq!(a.try_acquire_or_renew(t0).await.expect("a"), Leadership::Leading);
    harness.settle(8).await;
    assert_eq!(harness.voters(), 3);

    harness.scale(2).await;
    harness.nodes.raft().lost_removals = 1;
    let cluster = Arc::new(harness.cluster().await);
    assert!(reconcile(cluster, harness.context.clone()).await.is_err(), "A's removal call is lost");
    let status = harness.cluster().await.status.expect("status");
    let operation = status.operation.clone().expect("the intent stays recorded");
    assert_eq!(operation.kind, OperationKind::RemoveMember);
    let target = operation.node_ids[0];
    assert_eq!(status.removed_node_ids, [target]);
    assert_eq!(harness.voters(), 3, "nothing reached Raft");

    // A is gone. B must wait out the lease duration before it may reconcile.
    assert!(matches!(b.try_acquire_or_renew(t0).await.expect("b"), Leadership::Following { .. }));
    let almost = t0 + Duration::from_secs(14);
    assert!(matches!(b.try_acquire_or_renew(almost).await.expect("b"), Leadership::Following { .. }));
    assert_eq!(b.try_acquire_or_renew(t0 + Duration::from_secs(15)).await.expect("b"), Leadership::Leading);

    // B: a fresh process (new context, no memory) over the same cluster and nodes.
    let metrics = Metrics::new().expect("metrics");
    harness.context = Arc::new(Context::new(harness.client.clone(), harness.nodes.clone(), metrics));
    harness.settle(6).await;
    let voters: BTreeSet<NodeId> = harness.nodes.raft().voters.keys().copied().collect();
    assert_eq!(voters.len(), 2);
    assert!(!voters.contains(&target), "B removed the node A had recorded");
    assert_eq!(harness.statefulset_replicas().await, 2);
    let status = harness.cluster().await.status.expect("status");
    assert_eq!((status.operation, status.removed_node_ids), (None, vec![target]));
    assert_eq!(
        a.try_acquire_or_renew(t0 + Duration::from_secs(16)).await.expect("a"),
        Leadership::Following { holder: Some("operator-b".into()) }
    );
}

/// A harness whose cluster has `spec.tls` before its first reconcile.
async fn with_tls(replicas: i32, tls: serde_json::Value) -> Harness {
    let mut harness = Harness::new(replicas).await;
    let patch = json!({ "spec": { "tls": tls } });
    harness.api::<ConfluxCluster>().patch(NAME, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("tls");
    harness.names.tls = true;
    harness
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret.data.clone().unwrap_or_default().into_iter().map(|(key, value)| (key, value.0)).collect()
}

fn event_reasons(events: &[k8s_openapi::api::events::v1::Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

#[tokio::test]
async fn auto_tls_keeps_one_ca_and_a_certificate_per_pod_that_pods_mount_and_the_operator_trusts() {
    let mut harness = with_tls(3, json!({ "mode": "Auto" })).await;
    harness.settle(8).await;
    assert_eq!(harness.voters(), 3, "the cluster forms over https peer URLs");
    assert!(harness.nodes.raft().voters.values().all(|url| url.starts_with("https://cfx-")));

    let ca = harness.api::<Secret>().get("cfx-ca").await.expect("CA secret");
    let tls = harness.api::<Secret>().get("cfx-tls").await.expect("TLS secret");
    let (ca_data, tls_data) = (secret_data(&ca), secret_data(&tls));
    assert!(ca_data.contains_key("ca.key") && !tls_data.contains_key("ca.key"), "the CA key is never mounted");
    assert_eq!(tls_data["ca.crt"], ca_data["ca.crt"]);
    let files: BTreeSet<&str> = tls_data.keys().map(String::as_str).collect();
    let wanted = ["ca.crt", "cfx-0.crt", "cfx-0.key", "cfx-1.crt", "cfx-1.key", "cfx-2.crt", "cfx-2.key"];
    assert_eq!(files, wanted.into_iter().collect());
    for secret in [&ca, &tls] {
        let owner = secret.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner[0].kind, "ConfluxCluster", "deleted with the cluster");
    }
    let trusted = harness.nodes.raft().trusted_ca.clone();
    assert_eq!(trusted.map(String::into_bytes), Some(ca_data["ca.crt"].clone()), "the operator trusts the CA");

    let sts = harness.api::<StatefulSet>().get(NAME).await.expect("statefulset");
    let pod = sts.spec.and_then(|s| s.template.spec).expect("pod template");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "CONFLUX_PEER_TLS_CERT_FILE"));
    assert!(pod.volumes.unwrap_or_default().iter().any(|v| v.name == "tls"));

    // Later reconciles keep both: nothing is issued again while certificates are current.
    let versions = (ca.metadata.resource_version.clone(), tls.metadata.resource_version.clone());
    harness.settle(3).await;
    let ca_again = harness.api::<Secret>().get("cfx-ca").await.expect("CA secret");
    let tls_again = harness.api::<Secret>().get("cfx-tls").await.expect("TLS secret");
    assert_eq!((ca_again.metadata.resource_version, tls_again.metadata.resource_version), versions);
    let events = harness.api::<k8s_openapi::api::events::v1::Event>().list(&Default::default()).await.expect("events");
    assert!(event_reasons(&events.items).contains(&"CertificatesIssued".to_string()));
}

#[tokio::test]
async fn auto_tls_renews_due_certificates_and_adds_new_pods_without_restarting_any_pod() {
    use std::sync::atomic::{AtomicI64, Ordering};

    let mut harness = with_tls(3, json!({ "mode": "Auto" })).await;
    let offset_days = Arc::new(AtomicI64::new(0));
    let clock_offset = offset_days.clone();
    let mut context = Context::new(harness.client.clone(), harness.nodes.clone(), Metrics::new().expect("metrics"));
    context.clock = Arc::new(move || {
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * clock_offset.load(Ordering::SeqCst))
    });
    harness.context = Arc::new(context);
    harness.settle(8).await;
    let first = secret_data(&harness.api::<Secret>().get("cfx-tls").await.expect("TLS secret"));
    let renew_at =
        |secret: &Secret| secret.metadata.annotations.clone().unwrap_or_default()["conflux.io/renew-at"].clone();

    // 59 days on: not due (two thirds of 90 days is 60).
    offset_days.store(59, Ordering::SeqCst);
    harness.settle(2).await;
    assert_eq!(secret_data(&harness.api::<Secret>().get("cfx-tls").await.expect("TLS")), first);

    // Two more pods: only theirs are issued.
    harness.scale(5).await;
    harness.settle(8).await;
    assert_eq!(harness.voters(), 5);
    let grown = secret_data(&harness.api::<Secret>().get("cfx-tls").await.expect("TLS"));
    assert_eq!(
        (grown["cfx-0.crt"].clone(), grown["cfx-2.key"].clone()),
        (first["cfx-0.crt"].clone(), first["cfx-2.key"].clone())
    );
    assert!(grown.contains_key("cfx-4.crt") && grown.contains_key("cfx-4.key"));

    // 61 days on: every certificate is issued again from the same CA; no pod restarts.
    let before = harness.api::<Secret>().get("cfx-tls").await.expect("TLS");
    offset_days.store(61, Ordering::SeqCst);
    harness.settle(3).await;
    let renewed_secret = harness.api::<Secret>().get("cfx-tls").await.expect("TLS");
    let renewed = secret_data(&renewed_secret);
    for pod in ["cfx-0", "cfx-1", "cfx-2", "cfx-3", "cfx-4"] {
        assert_ne!(renewed[&format!("{pod}.crt")], grown[&format!("{pod}.crt")], "{pod} renewed");
        assert_ne!(renewed[&format!("{pod}.key")], grown[&format!("{pod}.key")], "{pod} has a new key");
    }
    assert_eq!(renewed["ca.crt"], first["ca.crt"], "the CA is kept");
    assert!(renew_at(&renewed_secret) > renew_at(&before), "the next renewal is later");
    assert!(harness.restarts.is_empty(), "renewal restarts no pod: {:?}", harness.restarts);
    assert_eq!(harness.voters(), 5);
}

/// cert-manager's `Certificate`, as the fake API server stores it.
#[derive(kube::CustomResource, Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[kube(group = "cert-manager.io", version = "v1", kind = "Certificate", namespaced)]
#[serde(rename_all = "camelCase")]
struct CertificateSpec {
    secret_name: String,
    dns_names: Vec<String>,
    issuer_ref: serde_json::Value,
}

#[tokio::test]
async fn cert_manager_tls_asks_for_a_certificate_and_trusts_the_ca_cert_manager_writes() {
    let mut harness = with_tls(1, json!({ "mode": "CertManager", "issuerRef": { "name": "corp-ca" } })).await;
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<ConfluxCluster>()
        .with_status_subresource::<ConfluxCluster>()
        .with_resource::<Certificate>()
        .build()
        .await
        .expect("fake client builds");
    // The same cluster in an API server that knows cert-manager's kinds.
    let cluster = harness.cluster().await;
    let clusters: Api<ConfluxCluster> = Api::namespaced(client.clone(), NAMESPACE);
    let fresh = ConfluxCluster { metadata: ObjectMeta { resource_version: None, ..cluster.metadata }, ..cluster };
    clusters.create(&PostParams::default(), &fresh).await.expect("cluster");
    harness.client = client.clone();
    harness.context = Arc::new(Context::new(client, harness.nodes.clone(), Metrics::new().expect("metrics")));

    harness.reconcile_once().await;
    let certificate = harness.api::<Certificate>().get("cfx-tls").await.expect("a Certificate");
    assert_eq!(certificate.spec.secret_name, "cfx-tls");
    assert_eq!(certificate.spec.issuer_ref["name"], "corp-ca");
    assert_eq!(certificate.spec.issuer_ref["kind"], "Issuer");
    assert!(certificate.spec.dns_names.contains(&"*.cfx-peers.prod.svc".to_string()));
    assert!(harness.api::<Secret>().get_opt("cfx-ca").await.expect("get").is_none(), "no CA of the operator's own");
    assert_eq!(harness.nodes.raft().trusted_ca, None, "nothing issued yet");

    // cert-manager issues: the operator trusts the CA it wrote.
    let issued = Secret {
        metadata: ObjectMeta { name: Some("cfx-tls".into()), ..ObjectMeta::default() },
        string_data: None,
        data: Some(BTreeMap::from([
            ("ca.crt".to_string(), k8s_openapi::ByteString(b"corp CA".to_vec())),
            ("tls.crt".to_string(), k8s_openapi::ByteString(b"leaf".to_vec())),
        ])),
        ..Secret::default()
    };
    harness.api::<Secret>().create(&PostParams::default(), &issued).await.expect("secret");
    harness.reconcile_once().await;
    assert_eq!(harness.nodes.raft().trusted_ca.as_deref(), Some("corp CA"));
}

#[tokio::test]
async fn without_tls_no_certificates_are_made_and_members_speak_http() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    assert_eq!(harness.voters(), 3);
    for name in ["cfx-ca", "cfx-tls"] {
        assert!(harness.api::<Secret>().get_opt(name).await.expect("get").is_none(), "{name}");
    }
    assert_eq!(harness.nodes.raft().trusted_ca, None);
    assert!(harness.nodes.raft().voters.values().all(|url| url.starts_with("http://")));
}

impl Harness {
    /// `kubectl delete confluxcluster`: the garbage collector removes what the cluster owns
    /// (the fake client cascades along owner references), then the kubelet stops the nodes.
    async fn delete_cluster(&mut self) {
        self.api::<ConfluxCluster>().delete(NAME, &DeleteParams::background()).await.expect("cluster deleted");
        self.kubelet().await;
    }

    async fn claim_names(&self) -> Vec<String> {
        let claims = self.api::<PersistentVolumeClaim>().list(&Default::default()).await.expect("claims");
        claims.items.iter().map(|c| c.name_any()).collect()
    }

    async fn events(&self) -> Vec<(String, String)> {
        let events = self.api::<k8s_openapi::api::events::v1::Event>().list(&Default::default()).await.expect("events");
        events
            .items
            .iter()
            .map(|e| (e.type_.clone().unwrap_or_default(), e.reason.clone().unwrap_or_default()))
            .collect()
    }

    async fn pod_template(&self) -> (ObjectMeta, k8s_openapi::api::core::v1::PodSpec) {
        let sts = self.api::<StatefulSet>().get(NAME).await.expect("statefulset");
        let template = sts.spec.expect("spec").template;
        (template.metadata.unwrap_or_default(), template.spec.expect("pod spec"))
    }
}

#[tokio::test]
async fn deleting_the_cluster_keeps_its_volumes_by_default() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    let sts = harness.api::<StatefulSet>().get(NAME).await.expect("statefulset");
    let policy = sts.spec.and_then(|s| s.persistent_volume_claim_retention_policy).expect("retention policy");
    assert_eq!(policy.when_deleted.as_deref(), Some("Retain"), "reclaimPolicy Delete no longer deletes them");
    assert_eq!(policy.when_scaled.as_deref(), Some("Retain"), "scale-down volumes are the operator's");

    harness.delete_cluster().await;
    assert!(harness.api::<StatefulSet>().get_opt(NAME).await.expect("get").is_none(), "the workload is gone");
    assert!(harness.api::<Pod>().list(&Default::default()).await.expect("pods").items.is_empty());
    let mut kept = harness.claim_names().await;
    kept.sort();
    assert_eq!(kept, ["data-cfx-0", "data-cfx-1", "data-cfx-2"]);
}

#[tokio::test]
async fn deleting_the_cluster_deletes_its_volumes_when_opted_in() {
    let mut spec = ConfluxClusterSpec::for_tests(3);
    spec.storage.delete_volumes_with_cluster = true;
    let mut harness = Harness::with_spec(spec).await;
    harness.settle(8).await;
    let sts = harness.api::<StatefulSet>().get(NAME).await.expect("statefulset");
    let policy = sts.spec.and_then(|s| s.persistent_volume_claim_retention_policy).expect("retention policy");
    assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(harness.claim_names().await.len(), 3);

    harness.delete_cluster().await;
    assert!(harness.claim_names().await.is_empty(), "the volumes went with the StatefulSet");
}

#[tokio::test]
async fn a_cluster_created_again_with_the_same_name_adopts_its_kept_volumes_and_never_reinitializes() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    let disks = harness.disks.clone();
    let voters: BTreeSet<NodeId> = harness.nodes.raft().voters.keys().copied().collect();
    harness.delete_cluster().await;

    create_cluster(&harness.api(), ConfluxClusterSpec::for_tests(3)).await;
    harness.settle(6).await;

    assert_eq!(harness.nodes.raft().inits, 1, "pod 0 was never initialized again");
    assert_eq!(harness.disks, disks, "every pod came back on its own volume");
    let cluster = harness.cluster().await;
    let status = cluster.status.clone().expect("status");
    assert_eq!(status.cluster_id.as_deref(), Some("c1"), "the cluster id was learned from the nodes");
    assert_eq!(status.voters.iter().copied().collect::<BTreeSet<_>>(), voters, "the same members");
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(condition(&cluster, "Available").0, "True");
    assert!(harness.events().await.contains(&("Normal".into(), "Adopt".into())));
}

#[tokio::test]
async fn a_token_secret_the_cluster_does_not_own_is_refused_and_no_pod_is_created() {
    let harness = Harness::new(3).await;
    let foreign = Secret {
        metadata: ObjectMeta { name: Some("cfx-token".into()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([("token".to_string(), k8s_openapi::ByteString(b"planted-by-someone".to_vec()))])),
        ..Secret::default()
    };
    harness.api::<Secret>().create(&PostParams::default(), &foreign).await.expect("secret planted");
    harness.reconcile_once().await;
    harness.reconcile_once().await;

    assert!(harness.api::<StatefulSet>().get_opt(NAME).await.expect("get").is_none(), "no pods");
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded"), ("True".into(), "ForeignTokenSecret".into()));
    assert_eq!(cluster.status.and_then(|s| s.phase), Some(Phase::Degraded));
    assert!(harness.events().await.contains(&("Warning".into(), "ForeignTokenSecret".into())));
    let secret = harness.api::<Secret>().get("cfx-token").await.expect("secret");
    assert_eq!(secret.data.expect("data").len(), 1, "the foreign Secret is not changed (no admin token added)");

    // Once it is gone the operator makes its own and goes on.
    harness.api::<Secret>().delete("cfx-token", &DeleteParams::default()).await.expect("deleted");
    let mut harness = harness;
    harness.settle(8).await;
    let secret = harness.api::<Secret>().get("cfx-token").await.expect("secret");
    assert_eq!(secret.metadata.owner_references.expect("owned")[0].kind, "ConfluxCluster");
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded"), ("False".into(), "AllHealthy".into()));
    assert_eq!(harness.voters(), 3);
}

/// `inner` behind a gate that answers every Secret request with 403 while `deny` is set, as the
/// API server does in a namespace the operator's Roles do not cover (kube-fake-client itself
/// never answers 403).
fn denying_secrets(inner: kube::Client, deny: Arc<AtomicBool>) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (inner, deny) = (inner.clone(), deny.clone());
        async move {
            if !(deny.load(Ordering::SeqCst) && request.uri().path().contains("/secrets")) {
                return inner.send(request).await;
            }
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                "message": "secrets \"cfx-token\" is forbidden: User \"system:serviceaccount:conflux-system:conflux-operator\" cannot get resource \"secrets\"",
            });
            let body = kube::client::Body::from(serde_json::to_vec(&status).expect("status serializes"));
            Ok::<_, kube::Error>(
                http::Response::builder()
                    .status(403)
                    .header("content-type", "application/json")
                    .body(body)
                    .expect("response builds"),
            )
        }
    });
    kube::Client::new(service, NAMESPACE)
}

#[tokio::test]
async fn a_namespace_whose_secrets_the_operator_may_not_use_degrades_the_cluster_until_rbac_allows_it() {
    let mut harness = Harness::new(3).await;
    let deny = Arc::new(AtomicBool::new(true));
    let mut context = Context::new(
        denying_secrets(harness.client.clone(), deny.clone()),
        harness.nodes.clone(),
        Metrics::new().expect("metrics"),
    );
    let clock = harness.now.clone();
    context.clock = Arc::new(move || *clock.lock().expect("clock lock"));
    harness.context = Arc::new(context);
    harness.reconcile_once().await;
    harness.reconcile_once().await;

    assert!(harness.api::<StatefulSet>().get_opt(NAME).await.expect("get").is_none(), "no pods without the token");
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded"), ("True".into(), "Forbidden".into()));
    let message = cluster.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"));
    let message = message.map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("clusterNamespaces"), "the condition says what to change: {message}");
    assert_eq!(cluster.status.and_then(|s| s.phase), Some(Phase::Degraded));
    assert!(harness.events().await.contains(&("Warning".into(), "Forbidden".into())));

    // Once RBAC allows it (the namespace added to the chart's values), the operator goes on.
    deny.store(false, Ordering::SeqCst);
    harness.settle(8).await;
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Degraded"), ("False".into(), "AllHealthy".into()));
    assert_eq!(harness.voters(), 3);
}

#[tokio::test]
async fn the_network_policy_admits_members_and_the_operator_to_the_peer_port_and_clients_to_the_client_port() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let mut harness = Harness::new(3).await;
    harness.settle(2).await;
    let policy = harness.api::<NetworkPolicy>().get(NAME).await.expect("network policy");
    assert_eq!(policy.metadata.owner_references.expect("owned")[0].kind, "ConfluxCluster");
    let spec = policy.spec.expect("spec");
    assert_eq!(spec.pod_selector.and_then(|s| s.match_labels), Some(labels(NAME)));
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.expect("ingress rules");
    let port = |i: usize| rules[i].ports.as_ref().expect("ports")[0].port.clone();
    assert_eq!((port(0), port(1)), (Some(IntOrString::Int(7001)), Some(IntOrString::Int(7000))));
    let peer_sources = rules[0].from.clone().expect("peer sources");
    assert_eq!(peer_sources.len(), 2, "members and the operator only: {peer_sources:?}");
    assert_eq!(peer_sources[0].pod_selector.clone().and_then(|s| s.match_labels), Some(labels(NAME)));
    assert!(peer_sources[0].namespace_selector.is_none(), "members: this namespace only");
    let operator = &peer_sources[1];
    let namespace = operator.namespace_selector.clone().and_then(|s| s.match_labels).expect("namespace selector");
    assert_eq!(namespace["kubernetes.io/metadata.name"], "conflux-system");
    let operator_labels = operator.pod_selector.clone().and_then(|s| s.match_labels).expect("operator pods");
    assert_eq!(operator_labels["app.kubernetes.io/name"], "conflux-operator");
    let client_sources = rules[1].from.clone().expect("client sources");
    let client_label = client_sources[1].pod_selector.clone().and_then(|s| s.match_labels).expect("client pods");
    assert_eq!(client_label, BTreeMap::from([("conflux.io/client".to_string(), NAME.to_string())]));

    // Clients from anywhere, then no policy at all.
    let anywhere = json!({ "spec": { "networkPolicy": { "clientFromAnywhere": true } } });
    harness
        .api::<ConfluxCluster>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&anywhere))
        .await
        .expect("patch");
    harness.reconcile_once().await;
    let policy = harness.api::<NetworkPolicy>().get(NAME).await.expect("network policy");
    let rules = policy.spec.and_then(|s| s.ingress).expect("rules");
    assert!(rules[1].from.is_none(), "the client port admits every source");
    assert_eq!(rules[0].from.as_ref().map(Vec::len), Some(2), "the peer port stays closed");
    let disabled = json!({ "spec": { "networkPolicy": { "enabled": false } } });
    harness
        .api::<ConfluxCluster>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&disabled))
        .await
        .expect("patch");
    harness.reconcile_once().await;
    assert!(harness.api::<NetworkPolicy>().get_opt(NAME).await.expect("get").is_none());
}

#[tokio::test]
async fn pods_spread_across_hosts_and_zones_by_default() {
    let mut harness = Harness::new(3).await;
    harness.settle(1).await;
    let (_, pod) = harness.pod_template().await;
    let anti = pod.affinity.and_then(|a| a.pod_anti_affinity).expect("default anti-affinity");
    let preferred = anti.preferred_during_scheduling_ignored_during_execution.expect("preferred");
    assert!(anti.required_during_scheduling_ignored_during_execution.is_none());
    assert_eq!(preferred[0].pod_affinity_term.topology_key, "kubernetes.io/hostname");
    let selector = preferred[0].pod_affinity_term.label_selector.clone().and_then(|s| s.match_labels);
    assert_eq!(selector, Some(labels(NAME)), "it avoids this cluster's own members");
    let spread = pod.topology_spread_constraints.expect("default zone spread");
    assert_eq!(
        (spread[0].topology_key.as_str(), spread[0].when_unsatisfiable.as_str(), spread[0].max_skew),
        ("topology.kubernetes.io/zone", "ScheduleAnyway", 1)
    );
    // Replacing the defaults: `placement::tests` drives the builder through every variant.
}

#[tokio::test]
async fn pod_settings_pass_through_and_selector_labels_stay_the_operators() {
    let mut spec = ConfluxClusterSpec::for_tests(1);
    spec.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "registry".into() }]);
    spec.scheduling.priority_class_name = Some("conflux-critical".into());
    spec.scheduling.node_selector = Some(BTreeMap::from([("pool".to_string(), "config".to_string())]));
    spec.pod_template = Some(crate::placement::PodTemplateOverrides {
        labels: Some(BTreeMap::from([("team".to_string(), "platform".to_string())])),
        annotations: Some(BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "false".to_string()),
            ("example.com/owner".to_string(), "platform".to_string()),
        ])),
    });
    let mut harness = Harness::with_spec(spec).await;
    harness.settle(1).await;
    let (metadata, pod) = harness.pod_template().await;
    assert_eq!(pod.priority_class_name.as_deref(), Some("conflux-critical"));
    assert_eq!(pod.node_selector.expect("node selector")["pool"], "config");
    assert_eq!(pod.image_pull_secrets.expect("pull secrets")[0].name, "registry");
    let pod_labels = metadata.labels.expect("labels");
    assert_eq!(pod_labels["team"], "platform");
    for (key, value) in labels(NAME) {
        assert_eq!(pod_labels[&key], value, "selector label {key}");
    }
    let annotations = metadata.annotations.expect("annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "false", "the user's annotation wins");
    assert_eq!(annotations["prometheus.io/port"], "7000");
    assert_eq!(annotations["example.com/owner"], "platform");

    // The API server refuses a selector label (CEL rule of the CRD).
    let refused = json!({ "spec": { "podTemplate": { "labels": { "app.kubernetes.io/instance": "other" } } } });
    let value = serde_json::to_value(refused["spec"]["podTemplate"].clone()).expect("json");
    assert!(crate::placement::PodTemplateOverrides::validate_cel(&value, None).is_err());
}

#[tokio::test]
async fn node_settings_reach_the_nodes_as_environment_and_a_change_rolls_the_pods() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    assert!(harness.restarts.is_empty());
    let settings = json!({ "spec": { "node": {
        "heartbeatIntervalMs": 100, "electionTimeoutMinMs": 600, "electionTimeoutMaxMs": 1200,
        "requestTimeoutMs": 3000, "snapshotLogsSinceLast": 5000, "maxBodyBytes": 4194304 } } });
    harness
        .api::<ConfluxCluster>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&settings))
        .await
        .expect("patch");
    harness.settle(10).await;

    let (_, pod) = harness.pod_template().await;
    let env: BTreeMap<String, Option<String>> =
        pod.containers[0].env.clone().unwrap_or_default().into_iter().map(|e| (e.name, e.value)).collect();
    for (name, value) in [
        ("CONFLUX_HEARTBEAT_MS", "100"),
        ("CONFLUX_ELECTION_TIMEOUT_MIN_MS", "600"),
        ("CONFLUX_ELECTION_TIMEOUT_MAX_MS", "1200"),
        ("CONFLUX_REQUEST_TIMEOUT_MS", "3000"),
        ("CONFLUX_SNAPSHOT_LOGS", "5000"),
        ("CONFLUX_MAX_BODY_BYTES", "4194304"),
    ] {
        assert_eq!(env.get(name).cloned().flatten().as_deref(), Some(value), "{name}");
    }
    assert!(!env.contains_key("CONFLUX_KEEP_LOGS"), "a setting not given keeps the node's default");
    assert_eq!(harness.restarts, [2, 1, 0], "followers first, the leader last, like a version change");
    assert_eq!(harness.voters(), 3);
}
mod backup_restore;
mod quorum_loss;
