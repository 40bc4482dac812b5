//! The reconcile loop: applies the owned objects, observes pods and nodes, asks the planner for
//! one action, records it as intent in status, carries it out, and reports status, conditions,
//! Events and metrics. `run` wires it into kube-runtime `Controller`s (one for all namespaces,
//! or one per watched namespace).
//!
//! Deletion: every owned object carries an owner reference, so deleting a `ConfluxCluster`
//! lets Kubernetes' garbage collector remove the Secret, Services, PDB, NetworkPolicy and
//! StatefulSet. The volumes stay (the StatefulSet's `persistentVolumeClaimRetentionPolicy`
//! `whenDeleted` is `Retain`) unless `spec.storage.deleteVolumesWithCluster` makes it `Delete`.
//! No finalizer is needed, and none blocks a deletion. A resource created again with the same
//! name finds the kept volumes (labelled with another uid, [`CLUSTER_UID_LABEL`]) and adopts the
//! cluster their pods report.
//!
//! The token Secret must be this resource's: one that exists without an owner reference to it
//! is refused (condition `Degraded`, reason `ForeignTokenSecret`, a Warning Event); its token is
//! never read and no pod is created.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use conflux::{client::ClientError, wire};
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{PersistentVolumeClaim, Pod, Secret},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::{Action as Requeue, Controller},
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
    Resource, ResourceExt,
};
use rand::{distributions::Alphanumeric, Rng};
use serde_json::json;

use crate::{
    backup,
    crd::backup::ConfluxBackup,
    crd::{
        condition, selector_string, ConfluxCluster, ConfluxClusterStatus, MemberRole, MemberStatus, NodeId, Operation,
        OperationKind, Phase,
    },
    metrics::Metrics,
    network_policy::{self, OperatorPeers},
    nodes::NodeAdmin,
    plan::{
        majority, plan, Action, Desired, MembershipView, NodeState, NodeView, Observed, PlannerConfig, PodView,
        RemovalReason, WaitReason,
    },
    recovery,
    resources::{self, Names, ADMIN_TOKEN_KEY, TOKEN_KEY},
    restore, tls, Error, Result,
};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "conflux-operator";
/// Reason of the `Degraded` condition and the Warning Event for a token Secret not ours (one
/// left by a deleted resource of the same name is garbage-collected within moments).
pub const FOREIGN_TOKEN_SECRET: &str = "ForeignTokenSecret";
/// Label of a volume claim: the uid of the `ConfluxCluster` it was made for. A claim with
/// another uid was kept from a deleted resource of the same name.
pub const CLUSTER_UID_LABEL: &str = "conflux.io/cluster-uid";
/// Reason of the `Degraded` condition when RBAC denies the operator the cluster's Secret.
pub const FORBIDDEN: &str = "Forbidden";

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub nodes: Arc<dyn NodeAdmin>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub planner: PlannerConfig,
    /// The time certificates, backup schedules and records use; tests move it.
    pub clock: Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>,
    /// Who the NetworkPolicies admit to the peer port besides the members.
    pub operator: OperatorPeers,
}

/// The operator's namespace and pod labels when not configured: the chart's defaults.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "conflux-system";
pub const DEFAULT_OPERATOR_POD_LABELS: &str = "app.kubernetes.io/name=conflux-operator";

impl Context {
    pub fn new(client: kube::Client, nodes: Arc<dyn NodeAdmin>, metrics: Metrics) -> Context {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        let operator = OperatorPeers {
            namespace: DEFAULT_OPERATOR_NAMESPACE.into(),
            pod_labels: BTreeMap::from([("app.kubernetes.io/name".to_string(), "conflux-operator".to_string())]),
        };
        Context {
            client,
            nodes,
            metrics,
            recorder,
            planner: PlannerConfig::default(),
            clock: Arc::new(jiff::Timestamp::now),
            operator,
        }
    }

    pub fn now(&self) -> jiff::Timestamp {
        (self.clock)()
    }
}

/// Runs the controllers until the process is asked to stop: one over all namespaces when
/// `namespaces` is empty, else one per namespace (what a namespaced install's Roles allow).
///
/// A cluster is reconciled when it changes, when its StatefulSet or one of its pods changes,
/// and on the requeue timer every reconcile sets. Status is written only when it changed, so
/// a converged cluster does not retrigger itself.
pub async fn run(context: Arc<Context>, namespaces: Vec<String>) {
    let client = context.client.clone();
    if namespaces.is_empty() {
        run_one(
            context,
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        )
        .await;
    } else {
        let controllers = namespaces.iter().map(|namespace| {
            run_one(
                context.clone(),
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
            )
        });
        futures::future::join_all(controllers).await;
    }
}

/// The cluster and backup controllers over one scope (every namespace, or one).
async fn run_one(
    context: Arc<Context>,
    clusters: Api<ConfluxCluster>,
    backups: Api<ConfluxBackup>,
    statefulsets: Api<StatefulSet>,
    pods: Api<Pod>,
) {
    let pod_watch = watcher::Config::default().labels("app.kubernetes.io/managed-by=conflux-operator");
    let backups = Controller::new(backups, watcher::Config::default())
        .shutdown_on_signal()
        .run(backup::reconcile, backup_error_policy, context.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "backup reconcile failed");
            }
        });
    let clusters = Controller::new(clusters, watcher::Config::default())
        .owns(statefulsets, watcher::Config::default())
        .watches(pods, pod_watch, |pod: Pod| {
            let namespace = pod.namespace()?;
            let cluster = pod.labels().get("app.kubernetes.io/instance")?.clone();
            Some(ObjectRef::<ConfluxCluster>::new(&cluster).within(&namespace))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "reconcile failed");
            }
        });
    futures::future::join(clusters, backups).await;
}

/// What kube-runtime calls for every change of a `ConfluxCluster` or an object it owns.
pub async fn reconcile(cluster: Arc<ConfluxCluster>, context: Arc<Context>) -> Result<Requeue> {
    let _timer = context.metrics.reconcile_started();
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let namespace = cluster.namespace().ok_or_else(|| Error::MissingNamespace(cluster.name_any()))?;
    Reconciler { cluster: &cluster, context: &context, names: Names::of(&cluster), namespace }.run().await
}

/// Logs and counts a failed reconcile and retries it soon.
pub fn error_policy(cluster: Arc<ConfluxCluster>, error: &Error, context: Arc<Context>) -> Requeue {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    context.metrics.reconcile_failed(error.metric_label());
    Requeue::requeue(Duration::from_secs(5))
}

fn backup_error_policy(backup: Arc<ConfluxBackup>, error: &Error, context: Arc<Context>) -> Requeue {
    tracing::warn!(backup = %backup.name_any(), %error, "backup reconcile failed");
    context.metrics.reconcile_failed(error.metric_label());
    Requeue::requeue(Duration::from_secs(5))
}

pub(crate) struct Reconciler<'a> {
    pub(crate) cluster: &'a ConfluxCluster,
    pub(crate) context: &'a Context,
    pub(crate) names: Names,
    pub(crate) namespace: String,
}

/// One pod as observed this round.
pub(crate) struct SeenPod {
    pub(crate) ordinal: u32,
    ready: bool,
    up_to_date: bool,
    pub(crate) status: Option<wire::ClusterStatus>,
}

impl Reconciler<'_> {
    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.context.client.clone(), &self.namespace)
    }

    async fn apply<K>(&self, object: &K) -> Result<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        Ok(self.api::<K>().patch(&name, &params, &Patch::Apply(object)).await?)
    }

    async fn run(self) -> Result<Requeue> {
        let status = self.cluster.status.clone().unwrap_or_default();
        let token = match self.ensure_token().await {
            Ok(Some(token)) => token,
            Ok(None) => {
                let message = format!(
                    "Secret {} exists but is not owned by this ConfluxCluster; the operator does not trust its \
                     token and creates no pods until it is deleted or renamed",
                    self.names.token_secret()
                );
                return self.degrade(&status, FOREIGN_TOKEN_SECRET, message).await;
            }
            Err(Error::Kube(kube::Error::Api(response))) if response.code == 403 => {
                let message = format!(
                    "the operator may not use Secrets in namespace {}: add it to the chart's clusterNamespaces \
                     (or watchNamespaces); {}",
                    self.namespace, response.message
                );
                return self.degrade(&status, FORBIDDEN, message).await;
            }
            Err(error) => return Err(error),
        };
        let statefulset = self.api::<StatefulSet>().get_opt(&self.names.statefulset()).await?;
        let statefulset_replicas = statefulset
            .as_ref()
            .and_then(|sts| sts.spec.as_ref())
            .and_then(|spec| spec.replicas)
            .map(|replicas| u32::try_from(replicas).unwrap_or(0));
        let update_revision =
            statefulset.as_ref().and_then(|sts| sts.status.as_ref()).and_then(|s| s.update_revision.clone());
        self.ensure_tls(statefulset_replicas.unwrap_or(0)).await?;

        self.apply(&resources::peer_service(self.cluster)).await?;
        self.apply(&resources::client_service(self.cluster)).await?;
        let voters =
            if status.voters.is_empty() { self.cluster.spec.replicas.max(1) as usize } else { status.voters.len() };
        self.apply(&resources::pod_disruption_budget(self.cluster, voters)).await?;
        if self.cluster.spec.network_policy.enabled {
            self.apply(&network_policy::network_policy(self.cluster, &self.context.operator)).await?;
        } else {
            delete_ignoring_absent(&self.api::<NetworkPolicy>(), &self.names.network_policy()).await?;
        }
        self.apply(&resources::statefulset(self.cluster, statefulset_replicas.unwrap_or(0))).await?;

        let seen = self.observe_pods(&token, update_revision.as_deref()).await?;
        if let Some(confirmed) = recovery::requested(self.cluster) {
            return self.recover_from_quorum_loss(confirmed, &status, &seen, &token).await;
        }
        if status.cluster_id.is_some() && !self.cluster.spec.paused {
            // A backup problem never holds up membership management.
            if let Err(error) = backup::keep_schedule(self.context, self.cluster, &self.namespace).await {
                self.event(EventType::Warning, "BackupScheduleFailed", error.to_string()).await;
            }
        }
        let (volumes, retained_volumes) = self.observe_volumes().await?;
        let membership = self.leader_view(&seen);
        let observed = Observed {
            cluster_id: status.cluster_id.clone(),
            statefulset_replicas,
            pods: seen
                .iter()
                .map(|pod| {
                    let view = PodView {
                        ordinal: pod.ordinal,
                        ready: pod.ready,
                        up_to_date: pod.up_to_date,
                        node: pod.status.as_ref().map(node_view),
                    };
                    (pod.ordinal, view)
                })
                .collect(),
            volumes,
            retained_volumes,
            membership,
            removed: status.removed_node_ids.iter().copied().collect(),
            bootstrap_in_progress: status
                .operation
                .as_ref()
                .is_some_and(|op| matches!(op.kind, OperationKind::Bootstrap | OperationKind::Restore)),
            recorded_highest_member_ordinal: recorded_highest_member_ordinal(&self.names, &status)
                .or_else(|| self.reported_highest_member_ordinal(&status, &seen)),
        };
        let desired = Desired {
            replicas: u32::try_from(self.cluster.spec.replicas).unwrap_or(0),
            paused: self.cluster.spec.paused,
            reclaim_policy: self.cluster.spec.storage.reclaim_policy,
            from_backup: self.backup_to_restore().is_some(),
        };
        let action = plan(&desired, &observed, self.context.planner);
        tracing::info!(cluster = %self.names.cluster, ?action, "planned");

        let mut next = self.status(&status, &seen, &observed, &action);
        if let Some(operation) = intent(&action) {
            // Rule 6: the intent is recorded before anything changes; a removal tombstones its
            // id first, so a restarted operator never lets it back in (rule 7).
            if let Action::RemoveMember { node_id, .. } = action {
                if !next.removed_node_ids.contains(&node_id) {
                    next.removed_node_ids.push(node_id);
                }
            }
            next.operation = Some(operation);
            self.write_status(&next).await?;
            let outcome = self.execute(&action, &observed, &seen, &token).await;
            let kind = action_kind(&action);
            self.context.metrics.membership_change(kind, outcome.is_ok());
            match outcome {
                Ok(note) => {
                    if let Some(cluster_id) = note.cluster_id {
                        next.cluster_id = Some(cluster_id);
                    }
                    if let Some(from) = note.restored_from {
                        let message = format!("restored from {} at revision {}", from.location, from.revision);
                        set_condition(&mut next, condition::RESTORED, true, "Restored", &message);
                        next.restored_from = Some(from);
                    }
                    next.operation = None;
                    self.write_status(&next).await?;
                    self.event(EventType::Normal, kind, note.message).await;
                    Ok(Requeue::requeue(Duration::from_secs(2)))
                }
                Err(error) => {
                    if matches!(action, Action::Restore) {
                        // No fallback to an empty cluster: the restore is retried, and says why.
                        set_condition(&mut next, condition::RESTORED, false, "RestoreFailed", &error.to_string());
                        self.write_status(&next).await?;
                    }
                    self.event(EventType::Warning, &format!("{kind}Failed"), error.to_string()).await;
                    Err(error)
                }
            }
        } else {
            if Some(&next) != self.cluster.status.as_ref() {
                self.write_status(&next).await?;
            }
            match &action {
                Action::Wait { reason } => {
                    self.context.metrics.waited(reason.code());
                    let kind = match reason {
                        WaitReason::WouldLoseQuorum { .. }
                        | WaitReason::ForeignCluster { .. }
                        | WaitReason::NoLeader => EventType::Warning,
                        _ => EventType::Normal,
                    };
                    if kind == EventType::Warning {
                        self.event(kind, reason.code(), reason.to_string()).await;
                    }
                    Ok(Requeue::requeue(Duration::from_secs(5)))
                }
                _ => Ok(Requeue::requeue(Duration::from_secs(30))),
            }
        }
    }

    /// Creates the token Secret once (its tokens are random and never re-applied) and answers the
    /// bootstrap admin token, the operator's credential for the nodes' admin API. A Secret made
    /// before admin tokens existed gets one added. `None`: a Secret of that name exists that this
    /// resource does not own; it is neither read nor changed.
    async fn ensure_token(&self) -> Result<Option<String>> {
        let secrets = self.api::<Secret>();
        let name = self.names.token_secret();
        let random = || -> String { rand::thread_rng().sample_iter(&Alphanumeric).take(48).map(char::from).collect() };
        let existing = match secrets.get_opt(&name).await? {
            Some(secret) => secret,
            None => {
                let secret = resources::token_secret(self.cluster, &random(), &random());
                match secrets.create(&PostParams::default(), &secret).await {
                    Ok(created) => created,
                    Err(kube::Error::Api(response)) if response.code == 409 => secrets.get(&name).await?,
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let ours = self
            .cluster
            .metadata
            .uid
            .as_deref()
            .is_some_and(|uid| existing.metadata.owner_references.iter().flatten().any(|owner| owner.uid == uid));
        if !ours {
            return Ok(None);
        }
        let value = |key: &str| resources::secret_value(&existing, key);
        value(TOKEN_KEY).ok_or_else(|| Error::InvalidTokenSecret { name: name.clone() })?;
        let admin = match value(ADMIN_TOKEN_KEY) {
            Some(bytes) => bytes,
            None => {
                let admin = random();
                let patch = serde_json::json!({ "stringData": { ADMIN_TOKEN_KEY: admin } });
                secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                admin.into_bytes()
            }
        };
        String::from_utf8(admin).map(Some).map_err(|_| Error::InvalidTokenSecret { name })
    }

    /// Something outside the operator's reach stops this cluster before any pod: report it as
    /// `Degraded` with `reason`, plus a Warning Event, and change nothing else.
    async fn degrade(&self, previous: &ConfluxClusterStatus, reason: &str, message: String) -> Result<Requeue> {
        let mut next = previous.clone();
        next.observed_generation = self.cluster.metadata.generation;
        next.phase = Some(Phase::Degraded);
        next.conditions.retain(|c| c.type_ != condition::DEGRADED);
        next.conditions.push(condition(previous, condition::DEGRADED, true, reason, &message));
        if Some(&next) != self.cluster.status.as_ref() {
            self.write_status(&next).await?;
        }
        self.event(EventType::Warning, reason, message).await;
        Ok(Requeue::requeue(Duration::from_secs(30)))
    }

    /// The members' certificates (`spec.tls`) for every pod the StatefulSet runs or will run, and
    /// the CA the operator trusts when it calls them.
    async fn ensure_tls(&self, statefulset_replicas: u32) -> Result<()> {
        let ordinals = statefulset_replicas.max(u32::try_from(self.cluster.spec.replicas).unwrap_or(0));
        let now = (self.context.clock)();
        let ensured =
            tls::secrets::ensure(&self.context.client, self.cluster, &self.names, ordinals, now, FIELD_MANAGER).await?;
        self.context.nodes.trust(&self.names, ensured.ca_pem.as_deref());
        if let Some(note) = ensured.issued {
            self.event(EventType::Normal, "CertificatesIssued", note).await;
        }
        Ok(())
    }

    async fn observe_pods(&self, token: &str, update_revision: Option<&str>) -> Result<Vec<SeenPod>> {
        let selector = selector_string(&self.names.cluster);
        let pods = self.api::<Pod>().list(&ListParams::default().labels(&selector)).await?;
        let prefix = format!("{}-", self.names.cluster);
        let mut seen: Vec<SeenPod> =
            pods.items
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .filter_map(|pod| {
                    let ordinal = pod.name_any().strip_prefix(&prefix)?.parse::<u32>().ok()?;
                    let ready =
                        pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
                            conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    let revision = pod.labels().get("controller-revision-hash").map(String::as_str);
                    let up_to_date = match (update_revision, revision) {
                        (Some(wanted), Some(actual)) => wanted == actual,
                        _ => true,
                    };
                    Some(SeenPod { ordinal, ready, up_to_date, status: None })
                })
                .collect();
        let answers = futures::future::join_all(seen.iter().map(|pod| {
            let endpoint = self.context.nodes.endpoint(&self.names, pod.ordinal);
            async move { self.context.nodes.status(&endpoint, token).await }
        }))
        .await;
        for (pod, answer) in seen.iter_mut().zip(answers) {
            match answer {
                Ok(status) => pod.status = Some(status),
                Err(error) => tracing::debug!(pod = pod.ordinal, %error, "node did not answer"),
            }
        }
        seen.sort_by_key(|pod| pod.ordinal);
        Ok(seen)
    }

    /// The ordinals that have a volume claim, and those kept from a deleted resource of the same
    /// name: a claim labelled with another resource's uid, or unlabelled and older than this
    /// resource. Claims of this resource get its uid label the first time they are seen.
    async fn observe_volumes(&self) -> Result<(BTreeSet<u32>, BTreeSet<u32>)> {
        let selector = selector_string(&self.names.cluster);
        let claims = self.api::<PersistentVolumeClaim>();
        let listed = claims.list(&ListParams::default().labels(&selector)).await?;
        let prefix = format!("{}-{}-", resources::DATA_VOLUME, self.names.cluster);
        let uid = self.cluster.metadata.uid.as_deref();
        let created = self.cluster.metadata.creation_timestamp.as_ref().map(|time| time.0);
        let (mut volumes, mut retained) = (BTreeSet::new(), BTreeSet::new());
        for claim in listed.items.iter().filter(|claim| claim.metadata.deletion_timestamp.is_none()) {
            let Some(ordinal) = claim.name_any().strip_prefix(&prefix).and_then(|o| o.parse().ok()) else {
                continue;
            };
            volumes.insert(ordinal);
            let labelled = claim.labels().get(CLUSTER_UID_LABEL).map(String::as_str);
            let kept = match labelled {
                Some(owner) => Some(owner) != uid,
                None => {
                    let claimed = claim.metadata.creation_timestamp.as_ref().map(|time| time.0);
                    claimed.zip(created).is_some_and(|(claimed, created)| claimed < created)
                }
            };
            if kept {
                retained.insert(ordinal);
            } else if let (None, Some(uid)) = (labelled, uid) {
                let patch = json!({ "metadata": { "labels": { CLUSTER_UID_LABEL: uid } } });
                claims.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }
        Ok((volumes, retained))
    }

    /// Before status lists members (a resource created again over kept volumes), the highest
    /// ordinal any pod of the recorded cluster reports as a member: those pods are brought back so
    /// a majority can form.
    fn reported_highest_member_ordinal(&self, status: &ConfluxClusterStatus, seen: &[SeenPod]) -> Option<u32> {
        let recorded = status.cluster_id.as_deref()?;
        seen.iter()
            .filter_map(|pod| pod.status.as_ref())
            .filter(|reported| reported.cluster_id.as_deref() == Some(recorded))
            .flat_map(|reported| reported.voters.values().chain(reported.learners.values()))
            .filter_map(|url| self.context.nodes.ordinal_of(&self.names, url))
            .max()
    }

    /// The membership as the leader reports it, if a pod answers as the leader of this cluster.
    fn leader_view(&self, seen: &[SeenPod]) -> Option<MembershipView> {
        let recorded = self.cluster.status.as_ref().and_then(|s| s.cluster_id.clone())?;
        let ours = |status: &&wire::ClusterStatus| status.cluster_id.as_deref() == Some(recorded.as_str());
        let leader = seen.iter().filter_map(|pod| pod.status.as_ref()).filter(ours).find(|s| s.state == "Leader")?;
        let ordinal = |url: &String| self.context.nodes.ordinal_of(&self.names, url);
        Some(MembershipView {
            leader: leader.node_id,
            voters: leader.voters.iter().map(|(&id, url)| (id, ordinal(url))).collect(),
            learners: leader.learners.iter().map(|(&id, url)| (id, ordinal(url))).collect(),
            last_log_index: leader.last_log_index,
            matched: leader.matched_index.clone().unwrap_or_default(),
        })
    }

    async fn execute(&self, action: &Action, observed: &Observed, seen: &[SeenPod], token: &str) -> Result<Outcome> {
        let nodes = &self.context.nodes;
        // Membership calls go to the leader's pod (any member would forward them).
        let leader_endpoint = || -> Result<String> {
            let membership = observed.membership.as_ref().ok_or(Error::NoLeader)?;
            let ordinal = seen
                .iter()
                .find(|pod| pod.status.as_ref().is_some_and(|s| s.node_id == membership.leader))
                .map(|pod| pod.ordinal)
                .ok_or(Error::NoLeader)?;
            Ok(nodes.endpoint(&self.names, ordinal))
        };
        let node_error = |endpoint: &str| {
            let endpoint = endpoint.to_string();
            move |source: ClientError| Error::Node { endpoint, source: Box::new(source) }
        };
        match action {
            Action::GrowStatefulSet { replicas } | Action::ShrinkStatefulSet { replicas } => {
                self.apply(&resources::statefulset(self.cluster, *replicas)).await?;
                Ok(Outcome::said(format!("StatefulSet {} now runs {replicas} pods", self.names.statefulset())))
            }
            Action::Bootstrap => {
                let endpoint = nodes.endpoint(&self.names, 0);
                let cluster_id = match nodes.init(&endpoint, token).await {
                    Ok(result) => result.cluster_id,
                    // Initialized by an earlier attempt whose answer was lost: read it back.
                    Err(error) if error.code() == Some("already_initialized") => nodes
                        .status(&endpoint, token)
                        .await
                        .map_err(node_error(&endpoint))?
                        .cluster_id
                        .ok_or(Error::NoClusterId)?,
                    Err(error) => return Err(node_error(&endpoint)(error)),
                };
                Ok(Outcome {
                    message: format!("initialized {} as cluster {cluster_id}", self.names.pod(0)),
                    cluster_id: Some(cluster_id),
                    restored_from: None,
                })
            }
            Action::Restore => {
                let endpoint = nodes.endpoint(&self.names, 0);
                let from = self.backup_to_restore().ok_or(Error::NoBackupSource)?;
                // Restored by an earlier attempt whose answer was lost: pod 0 already reports
                // the new cluster (restore answers 409 on a node that is not pristine).
                let already =
                    observed.pods.get(&0).and_then(|pod| pod.node.as_ref()).and_then(|n| n.cluster_id.clone());
                if let Some(cluster_id) = already {
                    return Ok(Outcome {
                        message: format!("{} was already restored as cluster {cluster_id}", self.names.pod(0)),
                        cluster_id: Some(cluster_id),
                        restored_from: None,
                    });
                }
                let restored = restore::restore(self.context, &self.namespace, from, &endpoint, token).await?;
                Ok(Outcome {
                    message: format!(
                        "restored {} from {} as cluster {} at revision {}",
                        self.names.pod(0),
                        restored.from.location,
                        restored.rebuilt.cluster_id,
                        restored.rebuilt.revision
                    ),
                    cluster_id: Some(restored.rebuilt.cluster_id),
                    restored_from: Some(restored.from),
                })
            }
            Action::Adopt { cluster_id } => Ok(Outcome {
                message: format!(
                    "adopted cluster {cluster_id} from the volumes kept by a deleted resource of this name"
                ),
                cluster_id: Some(cluster_id.clone()),
                restored_from: None,
            }),
            Action::AddLearners { members } => {
                let endpoint = leader_endpoint()?;
                for &(ordinal, node_id) in members {
                    let peer_url = nodes.peer_url(&self.names, ordinal);
                    nodes.add_learner(&endpoint, token, node_id, &peer_url).await.map_err(node_error(&endpoint))?;
                }
                Ok(Outcome::said(format!("added learners {members:?} (ordinal, node id)")))
            }
            Action::PromoteVoters { voters } => {
                let endpoint = leader_endpoint()?;
                nodes
                    .set_voters(&endpoint, token, voters.iter().copied().collect())
                    .await
                    .map_err(node_error(&endpoint))?;
                Ok(Outcome::said(format!("voters are now {voters:?}")))
            }
            Action::RemoveMember { node_id, reason } => {
                let endpoint = leader_endpoint()?;
                match nodes.remove_member(&endpoint, token, *node_id).await {
                    Ok(_) => {}
                    // Already gone: the removal committed before an earlier attempt returned.
                    Err(error) if error.code() == Some("unknown_member") => {}
                    Err(error) => return Err(node_error(&endpoint)(error)),
                }
                Ok(Outcome::said(format!("removed node {node_id} ({})", removal_reason(*reason))))
            }
            Action::DeleteVolume { ordinal, reason } => {
                let claim = self.names.volume_claim(*ordinal);
                delete_ignoring_absent(&self.api::<PersistentVolumeClaim>(), &claim).await?;
                if *reason == crate::plan::VolumeReason::RemovedNodeId {
                    // The pod holds a removed node's data: it comes back on a fresh volume.
                    delete_ignoring_absent(&self.api::<Pod>(), &self.names.pod(*ordinal)).await?;
                }
                Ok(Outcome::said(format!("deleted volume claim {claim} ({reason:?})")))
            }
            Action::RestartPod { ordinal } => {
                let pod = self.names.pod(*ordinal);
                delete_ignoring_absent(&self.api::<Pod>(), &pod).await?;
                Ok(Outcome::said(format!("restarted {pod} on the new revision")))
            }
            Action::TransferLeader { from } => {
                let endpoint = leader_endpoint()?;
                let moved = nodes.transfer_leader(&endpoint, token).await.map_err(node_error(&endpoint))?;
                Ok(Outcome::said(format!(
                    "node {from} handed leadership to node {} (term {}) before its pod restarts",
                    moved.to, moved.term
                )))
            }
            Action::Wait { .. } | Action::Nothing => Ok(Outcome::said(String::new())),
        }
    }

    /// The status this round observed, before the action's outcome.
    fn status(
        &self,
        previous: &ConfluxClusterStatus,
        seen: &[SeenPod],
        observed: &Observed,
        action: &Action,
    ) -> ConfluxClusterStatus {
        let membership = observed.membership.as_ref();
        let leader_pod = membership.and_then(|m| {
            seen.iter().find(|pod| pod.status.as_ref().is_some_and(|s| s.node_id == m.leader)).map(|pod| pod.ordinal)
        });
        let members = member_statuses(&self.names, seen, membership, self.context.planner);
        let healthy_voters =
            members.iter().filter(|m| m.healthy && matches!(m.role, MemberRole::Leader | MemberRole::Follower)).count();
        let voter_count = membership.map_or(0, |m| m.voters.len());
        let quorate = membership.is_some() && healthy_voters >= majority(voter_count);
        let ready = seen.iter().filter(|pod| pod.ready).count();
        let wanted = self.cluster.spec.replicas.max(0) as usize;
        // Learners and joining pods are progress, not damage: only voters (and members whose pod
        // does not answer) count against health.
        let all_healthy =
            members.iter().filter(|m| !matches!(m.role, MemberRole::Joining | MemberRole::Learner)).all(|m| m.healthy);

        let (progressing, progress_reason, progress_message) = match action {
            Action::Nothing => (false, "Converged".to_string(), "membership matches spec.replicas".to_string()),
            Action::Wait { reason } => (true, reason.code().to_string(), reason.to_string()),
            other => (true, action_kind(other).to_string(), format!("{other:?}")),
        };
        let stuck = matches!(
            action,
            Action::Wait {
                reason: WaitReason::WouldLoseQuorum { .. } | WaitReason::ForeignCluster { .. } | WaitReason::NoLeader
            }
        );
        // Pods that answer with another cluster's id are never merged; they are reported.
        let foreign: Vec<String> = seen
            .iter()
            .filter(|pod| {
                let reported = pod.status.as_ref().and_then(|s| s.cluster_id.as_deref());
                reported.is_some() && observed.cluster_id.is_some() && reported != observed.cluster_id.as_deref()
            })
            .map(|pod| self.names.pod(pod.ordinal))
            .collect();
        let degraded =
            observed.cluster_id.is_some() && wanted > 0 && (!all_healthy || !quorate || stuck || !foreign.is_empty());
        let phase = if self.cluster.spec.paused {
            Phase::Paused
        } else if wanted == 0 && observed.statefulset_replicas.unwrap_or(0) == 0 {
            Phase::Hibernated
        } else if observed.cluster_id.is_none() {
            if matches!(action, Action::Bootstrap | Action::Restore | Action::Adopt { .. }) {
                Phase::Bootstrapping
            } else {
                Phase::Pending
            }
        } else if degraded {
            Phase::Degraded
        } else if matches!(action, Action::RestartPod { .. } | Action::TransferLeader { .. }) {
            Phase::Updating
        } else if progressing {
            Phase::Scaling
        } else {
            Phase::Running
        };

        let available_reason = if quorate && ready > 0 { "QuorumReady" } else { "NoQuorum" };
        let mut conditions = vec![
            condition(
                previous,
                condition::AVAILABLE,
                quorate && ready > 0,
                available_reason,
                "a leader serves reads and writes",
            ),
            condition(
                previous,
                condition::QUORATE,
                quorate,
                if quorate { "HealthyMajority" } else { "NoHealthyMajority" },
                &format!("{healthy_voters} of {voter_count} voters healthy"),
            ),
            condition(previous, condition::PROGRESSING, progressing, &progress_reason, &progress_message),
            condition(
                previous,
                condition::DEGRADED,
                degraded,
                if !degraded {
                    "AllHealthy"
                } else if stuck {
                    progress_reason.as_str()
                } else if !foreign.is_empty() {
                    "ForeignClusterPods"
                } else {
                    "MembersUnhealthy"
                },
                &if foreign.is_empty() {
                    format!("{} of {} members healthy", members.iter().filter(|m| m.healthy).count(), members.len())
                } else {
                    format!("pods {foreign:?} belong to another cluster and are not merged")
                },
            ),
        ];

        // Conditions other modules own (`Restored`, `QuorumLossRecovery`) are kept as they were.
        let built: Vec<String> = conditions.iter().map(|c| c.type_.clone()).collect();
        conditions.extend(previous.conditions.iter().filter(|c| !built.contains(&c.type_)).cloned());

        ConfluxClusterStatus {
            observed_generation: self.cluster.metadata.generation,
            phase: Some(phase),
            replicas: i32::try_from(observed.statefulset_replicas.unwrap_or(0)).unwrap_or(i32::MAX),
            ready_replicas: i32::try_from(ready).unwrap_or(i32::MAX),
            selector: Some(selector_string(&self.names.cluster)),
            cluster_id: observed.cluster_id.clone(),
            leader: leader_pod.map(|ordinal| self.names.pod(ordinal)),
            leader_node_id: membership.map(|m| m.leader),
            voters: membership.map(|m| m.voters.keys().copied().collect()).unwrap_or_else(|| previous.voters.clone()),
            learners: membership
                .map(|m| m.learners.keys().copied().collect())
                .unwrap_or_else(|| previous.learners.clone()),
            members: if membership.is_some() { members } else { keep_member_ids(previous, members) },
            // A blocked operation stays recorded until it completes or another replaces it; a
            // recorded bootstrap stays until the cluster id is known.
            operation: match action {
                Action::Wait { .. } => previous.operation.clone(),
                Action::Nothing if observed.cluster_id.is_none() => previous.operation.clone(),
                _ => None,
            },
            removed_node_ids: previous.removed_node_ids.clone(),
            restored_from: previous.restored_from.clone(),
            conditions,
        }
    }

    /// `spec.bootstrap.fromBackup`, when set.
    fn backup_to_restore(&self) -> Option<&crate::crd::backup::FromBackup> {
        self.cluster.spec.bootstrap.as_ref()?.from_backup.as_ref()
    }

    pub(crate) async fn write_status(&self, status: &ConfluxClusterStatus) -> Result<()> {
        let mut value = serde_json::to_value(status).map_err(|source| Error::Serialize { what: "status", source })?;
        // A merge patch keeps absent keys: clear the optional ones explicitly.
        if let Some(object) = value.as_object_mut() {
            for key in ["operation", "leader", "leaderNodeId", "clusterId", "phase", "observedGeneration", "selector"] {
                object.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        let api: Api<ConfluxCluster> = self.api();
        api.patch_status(&self.names.cluster, &PatchParams::default(), &Patch::Merge(&json!({ "status": value })))
            .await?;
        Ok(())
    }

    pub(crate) async fn event(&self, type_: EventType, reason: &str, note: String) {
        publish_event(&self.context.recorder, &self.cluster.object_ref(&()), type_, reason, note).await;
    }
}

/// Publishes an Event about `reference`; a failure is logged, never fatal.
pub(crate) async fn publish_event(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::warn!(%error, "publishing an event failed");
    }
}

/// What a carried-out action reports.
struct Outcome {
    message: String,
    cluster_id: Option<String>,
    restored_from: Option<crate::crd::RestoredFrom>,
}

impl Outcome {
    fn said(message: String) -> Outcome {
        Outcome { message, cluster_id: None, restored_from: None }
    }
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn node_view(status: &wire::ClusterStatus) -> NodeView {
    let state = match status.state.as_str() {
        "Leader" => NodeState::Leader,
        "Follower" => NodeState::Follower,
        "Learner" => NodeState::Learner,
        "Uninitialized" => NodeState::Uninitialized,
        // Candidate, Shutdown and anything newer: not able to take part in a majority now.
        _ => NodeState::Candidate,
    };
    NodeView { node_id: status.node_id, cluster_id: status.cluster_id.clone(), state }
}

/// The operation recorded in status before `action` is carried out; `None` for no change.
fn intent(action: &Action) -> Option<Operation> {
    let started_at = jiff::Timestamp::now().to_string();
    let operation = |kind, node_ids: Vec<NodeId>, ordinals: Vec<u32>, replicas: Option<u32>| Operation {
        kind,
        node_ids,
        ordinals: ordinals.into_iter().map(|o| i32::try_from(o).unwrap_or(i32::MAX)).collect(),
        replicas: replicas.map(|r| i32::try_from(r).unwrap_or(i32::MAX)),
        started_at: started_at.clone(),
    };
    Some(match action {
        Action::GrowStatefulSet { replicas } => {
            operation(OperationKind::GrowStatefulSet, vec![], vec![], Some(*replicas))
        }
        Action::ShrinkStatefulSet { replicas } => {
            operation(OperationKind::ShrinkStatefulSet, vec![], vec![], Some(*replicas))
        }
        Action::Bootstrap => operation(OperationKind::Bootstrap, vec![], vec![0], None),
        Action::Adopt { .. } => operation(OperationKind::Adopt, vec![], vec![], None),
        Action::Restore => operation(OperationKind::Restore, vec![], vec![0], None),
        Action::AddLearners { members } => operation(
            OperationKind::AddLearners,
            members.iter().map(|m| m.1).collect(),
            members.iter().map(|m| m.0).collect(),
            None,
        ),
        Action::PromoteVoters { voters } => {
            operation(OperationKind::PromoteVoters, voters.iter().copied().collect(), vec![], None)
        }
        Action::RemoveMember { node_id, .. } => operation(OperationKind::RemoveMember, vec![*node_id], vec![], None),
        Action::DeleteVolume { ordinal, reason } => {
            let kind = match reason {
                crate::plan::VolumeReason::ScaledDown => OperationKind::DeleteVolume,
                crate::plan::VolumeReason::RemovedNodeId => OperationKind::RecycleVolume,
            };
            operation(kind, vec![], vec![*ordinal], None)
        }
        Action::RestartPod { ordinal } => operation(OperationKind::RestartPod, vec![], vec![*ordinal], None),
        Action::TransferLeader { from } => operation(OperationKind::TransferLeader, vec![*from], vec![], None),
        Action::Wait { .. } | Action::Nothing => return None,
    })
}

/// A stable CamelCase name of an action, for Events, conditions and metric labels.
pub fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::GrowStatefulSet { .. } => "GrowStatefulSet",
        Action::Bootstrap => "Bootstrap",
        Action::Adopt { .. } => "Adopt",
        Action::Restore => "Restore",
        Action::AddLearners { .. } => "AddLearners",
        Action::PromoteVoters { .. } => "PromoteVoters",
        Action::RemoveMember { .. } => "RemoveMember",
        Action::ShrinkStatefulSet { .. } => "ShrinkStatefulSet",
        Action::DeleteVolume { .. } => "DeleteVolume",
        Action::RestartPod { .. } => "RestartPod",
        Action::TransferLeader { .. } => "TransferLeader",
        Action::Wait { .. } => "Wait",
        Action::Nothing => "Nothing",
    }
}

fn removal_reason(reason: RemovalReason) -> &'static str {
    match reason {
        RemovalReason::ScaleDown => "scale-down",
        RemovalReason::LostDisk => "its disk was lost; its pod rejoins as a new node",
        RemovalReason::Tombstoned => "finishing a recorded removal",
    }
}

fn member_statuses(
    names: &Names,
    seen: &[SeenPod],
    membership: Option<&MembershipView>,
    config: PlannerConfig,
) -> Vec<MemberStatus> {
    let mut by_ordinal: BTreeMap<u32, MemberStatus> = BTreeMap::new();
    for pod in seen {
        let node_id = pod.status.as_ref().map(|s| s.node_id);
        let role = match (membership, node_id) {
            (Some(m), Some(id)) if id == m.leader => MemberRole::Leader,
            (Some(m), Some(id)) if m.voters.contains_key(&id) => MemberRole::Follower,
            (Some(m), Some(id)) if m.learners.contains_key(&id) => MemberRole::Learner,
            (_, Some(_)) => MemberRole::Joining,
            (_, None) => MemberRole::Unknown,
        };
        let lag = match (membership, node_id) {
            (Some(m), Some(id)) if id == m.leader => Some(0),
            (Some(m), Some(id)) => m.matched.get(&id).map(|matched| m.last_log_index.saturating_sub(*matched)),
            _ => None,
        };
        let healthy = pod.ready
            && matches!(role, MemberRole::Leader | MemberRole::Follower | MemberRole::Learner)
            && lag.is_some_and(|lag| lag <= config.max_lag);
        by_ordinal.insert(pod.ordinal, MemberStatus { pod: names.pod(pod.ordinal), node_id, role, lag, healthy });
    }
    // Members whose pod is gone are still listed: they count against the majority.
    if let Some(m) = membership {
        for (&id, ordinal) in m.voters.iter().chain(m.learners.iter()) {
            let Some(ordinal) = *ordinal else { continue };
            if let Some(entry) = by_ordinal.get(&ordinal) {
                if entry.node_id == Some(id) {
                    continue;
                }
            }
            by_ordinal.entry(ordinal).or_insert(MemberStatus {
                pod: names.pod(ordinal),
                node_id: Some(id),
                role: MemberRole::Unknown,
                lag: None,
                healthy: false,
            });
        }
    }
    by_ordinal.into_values().collect()
}

/// Without a leader the members' ids are unknown this round: keep the last known ones.
fn keep_member_ids(previous: &ConfluxClusterStatus, mut members: Vec<MemberStatus>) -> Vec<MemberStatus> {
    for old in &previous.members {
        if !members.iter().any(|m| m.pod == old.pod) {
            members.push(MemberStatus { role: MemberRole::Unknown, lag: None, healthy: false, ..old.clone() });
        }
    }
    members.sort_by(|a, b| (a.pod.len(), &a.pod).cmp(&(b.pod.len(), &b.pod)));
    members
}

fn recorded_highest_member_ordinal(names: &Names, status: &ConfluxClusterStatus) -> Option<u32> {
    let prefix = format!("{}-", names.cluster);
    status
        .members
        .iter()
        .filter(|m| m.node_id.is_some_and(|id| status.voters.contains(&id) || status.learners.contains(&id)))
        .filter_map(|m| m.pod.strip_prefix(&prefix)?.parse().ok())
        .max()
}

/// Sets (replaces) one condition of `status`.
pub(crate) fn set_condition(status: &mut ConfluxClusterStatus, type_: &str, value: bool, reason: &str, message: &str) {
    let new = condition(status, type_, value, reason, message);
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(new);
}

fn condition(previous: &ConfluxClusterStatus, type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last = previous.conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match last {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
