//! Pure builders of the objects one `ConfluxCluster` owns: the token Secret, the headless peer
//! Service, the client Service, the StatefulSet and the PodDisruptionBudget (the NetworkPolicy is
//! `network_policy`'s; placement and pod metadata are `placement`'s). No IO: the controller
//! applies what these return with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{
            StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
        },
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
            ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, ServicePort,
            ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
    ByteString,
};
use kube::{Resource, ResourceExt};

use crate::{
    crd::{labels, ConfluxCluster, TlsMode},
    placement,
    plan::majority,
};

/// Port of the client API, `/healthz`, `/readyz` and `/metrics`.
pub const CLIENT_PORT: i32 = 7000;
/// Port of Raft RPC and the admin API.
pub const PEER_PORT: i32 = 7001;
/// Key of the cluster token (proves a peer) in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Key of the bootstrap admin token (the operator's credential for the admin API) in the Secret.
pub const ADMIN_TOKEN_KEY: &str = "admin-token";
/// Name of the volume claim template; claims are `data-<pod>`.
pub const DATA_VOLUME: &str = "data";
/// UID and GID the node runs as (the image's non-root user).
pub const RUN_AS: i64 = 65532;

const TOKEN_DIR: &str = "/etc/conflux/token";
const DATA_DIR: &str = "/var/lib/conflux";

/// Names of everything a cluster owns, derived from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
    /// Members speak TLS (`spec.tls.mode` is not `Disabled`): peer URLs are `https://`.
    pub tls: bool,
}

impl Names {
    pub fn of(cluster: &ConfluxCluster) -> Names {
        Names {
            cluster: cluster.name_any(),
            namespace: cluster.namespace().unwrap_or_else(|| "default".into()),
            tls: cluster.spec.tls_mode() != TlsMode::Disabled,
        }
    }

    /// The scheme of the members' peer URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }

    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }

    pub fn peer_service(&self) -> String {
        format!("{}-peers", self.cluster)
    }

    pub fn token_secret(&self) -> String {
        format!("{}-token", self.cluster)
    }

    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }

    /// The Secret of the operator's CA (`spec.tls.mode: Auto`); never mounted by a pod.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }

    /// The Secret every pod mounts its certificate from (Auto or cert-manager).
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.cluster)
    }

    pub fn network_policy(&self) -> String {
        self.cluster.clone()
    }

    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }

    /// The ordinal of one of this cluster's pods, from its name.
    pub fn ordinal_of_pod(&self, pod: &str) -> Option<u32> {
        pod.strip_prefix(&self.cluster)?.strip_prefix('-')?.parse().ok()
    }

    pub fn volume_claim(&self, ordinal: u32) -> String {
        format!("{DATA_VOLUME}-{}", self.pod(ordinal))
    }

    /// The peer URL the pod at `ordinal` advertises, which members use to reach it.
    pub fn peer_url(&self, ordinal: u32) -> String {
        let scheme = self.scheme();
        format!("{scheme}://{}.{}.{}.svc:{PEER_PORT}", self.pod(ordinal), self.peer_service(), self.namespace)
    }

    /// The ordinal of a peer URL built by [`Names::peer_url`]; `None` for any other URL.
    pub fn ordinal_of_peer_url(&self, peer_url: &str) -> Option<u32> {
        let host = peer_url.strip_prefix(self.scheme())?.strip_prefix("://")?;
        let pod = host.split('.').next()?;
        let rest = host.strip_prefix(pod)?;
        if rest != format!(".{}.{}.svc:{PEER_PORT}", self.peer_service(), self.namespace) {
            return None;
        }
        let ordinal = pod.strip_prefix(&self.cluster)?.strip_prefix('-')?;
        if ordinal.is_empty() || (ordinal.len() > 1 && ordinal.starts_with('0')) {
            return None;
        }
        ordinal.parse().ok()
    }
}

fn owner(cluster: &ConfluxCluster) -> Vec<OwnerReference> {
    cluster.controller_owner_ref(&()).into_iter().collect()
}

/// Name, namespace, the cluster's labels and its controller owner reference.
pub fn metadata(cluster: &ConfluxCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels(&cluster.name_any())),
        owner_references: Some(owner(cluster)),
        ..ObjectMeta::default()
    }
}

/// The value of `key` in a Secret's `data` (or `stringData`, which a fake API server may keep).
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.clone())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.clone().into_bytes()))
}

/// The Secret holding the cluster token and the bootstrap admin token; created once, never
/// re-applied (the tokens are random).
pub fn token_secret(cluster: &ConfluxCluster, token: &str, admin_token: &str) -> Secret {
    let names = Names::of(cluster);
    Secret {
        metadata: metadata(cluster, names.token_secret()),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec())),
            (ADMIN_TOKEN_KEY.to_string(), ByteString(admin_token.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}

/// The headless Service that gives each pod a stable DNS name, ready or not.
pub fn peer_service(cluster: &ConfluxCluster) -> Service {
    let names = Names::of(cluster);
    Service {
        metadata: metadata(cluster, names.peer_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels(&names.cluster)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service applications use; only Ready pods receive traffic.
pub fn client_service(cluster: &ConfluxCluster) -> Service {
    let names = Names::of(cluster);
    Service {
        metadata: metadata(cluster, names.client_service()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels(&names.cluster)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The PodDisruptionBudget: a voluntary eviction may take down only as many pods as the voter
/// set can lose and keep a majority (none for one or two voters).
pub fn pod_disruption_budget(cluster: &ConfluxCluster, voters: usize) -> PodDisruptionBudget {
    let names = Names::of(cluster);
    let voters = voters.max(1);
    let tolerable = voters - majority(voters);
    PodDisruptionBudget {
        metadata: metadata(cluster, names.pdb()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(i32::try_from(tolerable).unwrap_or(0))),
            selector: Some(LabelSelector { match_labels: Some(labels(&names.cluster)), ..LabelSelector::default() }),
            // A pod that is not Ready already counts as unavailable; evicting it costs nothing.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The StatefulSet with `replicas` pods. Replicas are the planner's decision, not the spec's:
/// the controller passes the current value unless the planner grows or shrinks it.
pub fn statefulset(cluster: &ConfluxCluster, replicas: u32) -> StatefulSet {
    let names = Names::of(cluster);
    let spec = &cluster.spec;
    let pod_labels = labels(&names.cluster);
    let env = |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() };
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("client".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let mut env_vars = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        env("CONFLUX_DATA_DIR", DATA_DIR),
        env("CONFLUX_LISTEN", &format!("0.0.0.0:{CLIENT_PORT}")),
        env("CONFLUX_PEER_LISTEN", &format!("0.0.0.0:{PEER_PORT}")),
        env(
            "CONFLUX_ADVERTISE_PEER",
            &format!("{}://$(POD_NAME).{}.$(POD_NAMESPACE).svc:{PEER_PORT}", names.scheme(), names.peer_service()),
        ),
        // The operator initializes pod 0 itself, exactly once; every node starts waiting.
        env("CONFLUX_JOIN", "true"),
        env("CONFLUX_CLUSTER_TOKEN_FILE", &format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        env("CONFLUX_ADMIN_TOKEN_FILE", &format!("{TOKEN_DIR}/{ADMIN_TOKEN_KEY}")),
    ];
    // `spec.node`: part of the template, so a change rolls the pods like a version change.
    env_vars.extend(spec.node.as_ref().map(|node| node.env()).unwrap_or_default());
    let container = Container {
        name: "conflux".into(),
        image: Some(format!("{}:{}", spec.image, spec.version)),
        image_pull_policy: spec.image_pull_policy.map(|policy| policy.as_str().to_string()),
        args: Some(vec!["serve".into()]),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort { name: Some("client".into()), container_port: CLIENT_PORT, ..ContainerPort::default() },
            ContainerPort { name: Some("peer".into()), container_port: PEER_PORT, ..ContainerPort::default() },
        ]),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(10), ..probe("/healthz", 10, 6) }),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: DATA_VOLUME.into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() },
            VolumeMount {
                name: "token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
        ]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(pod_labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(spec.storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    // Deleting the cluster keeps every volume unless `deleteVolumesWithCluster` opts in; scale-down
    // volumes follow `reclaimPolicy`, deleted by the operator.
    let when_deleted = if spec.storage.delete_volumes_with_cluster { "Delete" } else { "Retain" };
    let mut pod_metadata = ObjectMeta {
        labels: Some(pod_labels.clone()),
        annotations: Some(BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("prometheus.io/port".to_string(), CLIENT_PORT.to_string()),
            ("prometheus.io/path".to_string(), "/metrics".to_string()),
        ])),
        ..ObjectMeta::default()
    };
    let mut pod_spec = PodSpec {
        containers: vec![container],
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..PodSecurityContext::default()
        }),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        volumes: Some(vec![
            Volume {
                name: "token".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names.token_secret()),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        ]),
        ..PodSpec::default()
    };
    placement::apply(cluster, &mut pod_metadata, &mut pod_spec);
    crate::tls::mount(cluster, &names, &mut pod_spec);
    StatefulSet {
        metadata: metadata(cluster, names.statefulset()),
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            service_name: Some(names.peer_service()),
            // Pods start together; only pod 0 is initialized, the rest wait to be added.
            pod_management_policy: Some("Parallel".into()),
            // The operator restarts pods itself, one at a time, followers first.
            update_strategy: Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), ..Default::default() }),
            // Scale-down volumes are the operator's (after the member's removal is committed).
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(when_deleted.into()),
                when_scaled: Some("Retain".into()),
            }),
            selector: LabelSelector { match_labels: Some(pod_labels), ..LabelSelector::default() },
            template: PodTemplateSpec { metadata: Some(pod_metadata), spec: Some(pod_spec) },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConfluxClusterSpec;

    pub fn cluster(replicas: i32) -> ConfluxCluster {
        let mut cluster = ConfluxCluster::new("cfx", ConfluxClusterSpec::for_tests(replicas));
        cluster.metadata.namespace = Some("prod".into());
        cluster.metadata.uid = Some("0000-1111".into());
        cluster
    }

    #[test]
    fn peer_urls_round_trip_to_their_ordinal() {
        let names = Names::of(&cluster(3));
        for ordinal in [0, 1, 9, 10, 123] {
            assert_eq!(names.ordinal_of_peer_url(&names.peer_url(ordinal)), Some(ordinal));
        }
        assert_eq!(names.peer_url(2), "http://cfx-2.cfx-peers.prod.svc:7001");
        for foreign in [
            "http://cfx-2.cfx-peers.other.svc:7001",
            "http://cfxx-2.cfx-peers.prod.svc:7001",
            "http://cfx-02.cfx-peers.prod.svc:7001",
            "http://127.0.0.1:7001",
            "cfx-2",
        ] {
            assert_eq!(names.ordinal_of_peer_url(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_budget_never_allows_an_eviction_that_breaks_a_majority() {
        let allowed = |voters| match pod_disruption_budget(&cluster(3), voters).spec.and_then(|s| s.max_unavailable) {
            Some(IntOrString::Int(n)) => n,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!([allowed(1), allowed(2), allowed(3), allowed(4), allowed(5), allowed(7)], [0, 0, 1, 1, 2, 3]);
    }

    #[test]
    fn every_pod_joins_and_reads_the_token_from_the_secret() {
        let sts = statefulset(&cluster(3), 3);
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.update_strategy.and_then(|s| s.type_).as_deref(), Some("OnDelete"));
        assert_eq!(spec.service_name.as_deref(), Some("cfx-peers"));
        let pod = spec.template.spec.expect("pod spec");
        let env: BTreeMap<String, Option<String>> =
            pod.containers[0].env.clone().unwrap_or_default().into_iter().map(|e| (e.name, e.value)).collect();
        assert_eq!(env["CONFLUX_JOIN"].as_deref(), Some("true"));
        assert_eq!(
            env["CONFLUX_ADVERTISE_PEER"].as_deref(),
            Some("http://$(POD_NAME).cfx-peers.$(POD_NAMESPACE).svc:7001")
        );
        assert_eq!(env["CONFLUX_CLUSTER_TOKEN_FILE"].as_deref(), Some("/etc/conflux/token/token"));
        assert_eq!(env["CONFLUX_ADMIN_TOKEN_FILE"].as_deref(), Some("/etc/conflux/token/admin-token"));
        let security = pod.containers[0].security_context.clone().expect("security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(sts.metadata.owner_references.expect("owner")[0].kind, "ConfluxCluster");
    }

    #[test]
    fn members_of_a_tls_cluster_have_https_peer_urls_and_only_those_are_its_own() {
        let mut tls = cluster(3);
        tls.spec.tls = Some(crate::crd::TlsSpec { mode: TlsMode::Auto, issuer_ref: None });
        let names = Names::of(&tls);
        assert_eq!(names.peer_url(2), "https://cfx-2.cfx-peers.prod.svc:7001");
        assert_eq!(names.ordinal_of_peer_url(&names.peer_url(2)), Some(2));
        assert_eq!(names.ordinal_of_peer_url("http://cfx-2.cfx-peers.prod.svc:7001"), None);
        assert_eq!(Names::of(&cluster(3)).ordinal_of_peer_url("https://cfx-2.cfx-peers.prod.svc:7001"), None);
    }
}
