//! TLS of a cluster's members (`spec.tls`): the certificates of `Auto` mode (the operator's own
//! CA, one certificate per pod, renewal at two thirds of their lifetime), the cert-manager
//! `Certificate` of `CertManager` mode, and how a pod finds its files. Pure, except for
//! [`secrets`], which reads and writes them in the API server.
//!
//! Layout (both modes): one Secret `<name>-tls` mounted whole at [`TLS_DIR`] in every pod, with
//! `ca.crt`. In `Auto` it holds `<pod>.crt` and `<pod>.key` for every pod and a pod reads its own
//! through `$(POD_NAME)` in its environment (a StatefulSet has one template for every pod); in
//! `CertManager` one certificate (`tls.crt`, `tls.key`) names every pod's peer host through a
//! wildcard. The CA's key stays in `<name>-ca`, which no pod mounts.
//!
//! Node identity: a certificate names the pod's stable peer host (`<pod>.<name>-peers.<ns>.svc`),
//! the host of the peer URL the member is added with, which the node accepts as the member's
//! identity (`src/network/identity.rs`); node ids do not exist before a pod's first start.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::core::v1::{EnvVar, PodSpec, Secret, SecretVolumeSource, Volume, VolumeMount},
    ByteString,
};
use kube::api::DynamicObject;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

use crate::{
    crd::{ConfluxCluster, IssuerKind, TlsMode},
    resources::Names,
};

pub mod secrets;

/// Where every pod finds the TLS Secret.
pub const TLS_DIR: &str = "/etc/conflux/tls";
/// The CA certificate, in both Secrets.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA's private key, in `<name>-ca` only.
pub const CA_KEY_KEY: &str = "ca.key";
/// On `<name>-tls` (Auto): when its certificates are renewed (RFC 3339).
pub const RENEW_AT_ANNOTATION: &str = "conflux.io/renew-at";
/// Lifetime of the Auto CA. It is not rotated; a cluster older than this needs a new CA.
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 365 * 10);
/// Lifetime of an Auto member certificate.
pub const LEAF_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 90);
/// Certificates are valid from a little before they are issued: clocks differ.
const BACKDATE: SignedDuration = SignedDuration::from_mins(5);

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("secret {secret} has no valid `{key}`")]
    InvalidSecret { secret: String, key: &'static str },
    #[error("time {0} is outside what a certificate can hold")]
    Time(Timestamp),
}

/// The operator's CA of one cluster.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A member certificate and its key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new CA for the cluster, valid for [`CA_VALIDITY`] from `now`.
    pub fn generate(names: &Names, now: Timestamp) -> Result<Authority, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(names);
        params.not_before = offset(now - BACKDATE)?;
        params.not_after = offset(now + CA_VALIDITY)?;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Authority { issuer: Issuer::new(ca_params(names), key), cert_pem, key_pem })
    }

    /// The CA kept in `secret` (`<name>-ca`). Its subject is derived from the cluster's name, so
    /// the key alone rebuilds the issuer.
    pub fn load(names: &Names, secret: &Secret) -> Result<Authority, TlsError> {
        let cert_pem = secret_text(secret, CA_CERT_KEY)?;
        let key_pem = secret_text(secret, CA_KEY_KEY)?;
        let invalid = || TlsError::InvalidSecret { secret: names.ca_secret(), key: CA_KEY_KEY };
        let key = KeyPair::from_pem(&key_pem).map_err(|_| invalid())?;
        Ok(Authority { issuer: Issuer::new(ca_params(names), key), cert_pem, key_pem })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The Secret data that keeps this CA.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            (CA_CERT_KEY.to_string(), ByteString(self.cert_pem.clone().into_bytes())),
            (CA_KEY_KEY.to_string(), ByteString(self.key_pem.clone().into_bytes())),
        ])
    }

    /// A certificate for `hosts` (DNS names), for both serving and calling peers, valid for
    /// `validity` from `now`, with a fresh key.
    pub fn issue(&self, hosts: &[String], now: Timestamp, validity: SignedDuration) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.not_before = offset(now - BACKDATE)?;
        params.not_after = offset(now + validity)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn ca_params(names: &Names) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("conflux {}/{} CA", names.namespace, names.cluster));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn offset(at: Timestamp) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second()).map_err(|_| TlsError::Time(at))
}

fn secret_text(secret: &Secret, key: &'static str) -> Result<String, TlsError> {
    let invalid = || TlsError::InvalidSecret { secret: secret.metadata.name.clone().unwrap_or_default(), key };
    let bytes = secret.data.as_ref().and_then(|data| data.get(key)).ok_or_else(invalid)?;
    String::from_utf8(bytes.0.clone()).map_err(|_| invalid())
}

/// The DNS names a pod's certificate carries: its stable peer host (the host of the peer URL it
/// advertises, with and without the cluster domain) and the client Service's names.
pub fn pod_hosts(names: &Names, ordinal: u32) -> Vec<String> {
    let peer = format!("{}.{}.{}.svc", names.pod(ordinal), names.peer_service(), names.namespace);
    let mut hosts = vec![peer.clone(), format!("{peer}.cluster.local")];
    hosts.extend(client_hosts(names));
    hosts
}

fn client_hosts(names: &Names) -> Vec<String> {
    let service = names.client_service();
    let namespaced = format!("{service}.{}", names.namespace);
    vec![service, namespaced.clone(), format!("{namespaced}.svc"), format!("{namespaced}.svc.cluster.local")]
}

/// When certificates issued at `issued` for `validity` are renewed: at two thirds of their
/// lifetime, so a renewal that fails has a third of it left to succeed.
pub fn renew_at(issued: Timestamp, validity: SignedDuration) -> Timestamp {
    issued + validity * 2 / 3
}

/// What the `<name>-tls` Secret of an Auto cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Every pod's certificate is current.
    Nothing,
    /// Issue certificates for these ordinals (pods added since), keep the others.
    Add(Vec<u32>),
    /// Issue every certificate again: none yet, renewal due, or the CA is another one.
    All,
}

/// Decides what `<name>-tls` (`existing`) needs for `ordinals` pods, signed by the CA whose
/// certificate is `ca_pem`, at `now`.
pub fn renewal(names: &Names, existing: Option<&Secret>, ordinals: u32, ca_pem: &str, now: Timestamp) -> Renewal {
    let Some(secret) = existing else { return Renewal::All };
    let renew_at = secret.metadata.annotations.as_ref().and_then(|a| a.get(RENEW_AT_ANNOTATION));
    let due = renew_at.and_then(|at| at.parse::<Timestamp>().ok()).is_none_or(|at| now >= at);
    let same_ca = secret_text(secret, CA_CERT_KEY).is_ok_and(|pem| pem == ca_pem);
    if due || !same_ca {
        return Renewal::All;
    }
    let data = secret.data.clone().unwrap_or_default();
    let missing: Vec<u32> = (0..ordinals)
        .filter(|&ordinal| {
            let pod = names.pod(ordinal);
            !data.contains_key(&format!("{pod}.crt")) || !data.contains_key(&format!("{pod}.key"))
        })
        .collect();
    if missing.is_empty() {
        Renewal::Nothing
    } else {
        Renewal::Add(missing)
    }
}

/// The data of `<name>-tls` after `renewal`: `existing` data kept for pods not re-issued.
pub fn pod_certificates(
    names: &Names,
    authority: &Authority,
    existing: Option<&Secret>,
    renewal: &Renewal,
    ordinals: u32,
    now: Timestamp,
) -> Result<BTreeMap<String, ByteString>, TlsError> {
    let (mut data, issue): (BTreeMap<String, ByteString>, Vec<u32>) = match renewal {
        Renewal::Nothing => return Ok(existing.and_then(|s| s.data.clone()).unwrap_or_default()),
        Renewal::Add(ordinals) => (existing.and_then(|s| s.data.clone()).unwrap_or_default(), ordinals.clone()),
        Renewal::All => (BTreeMap::new(), (0..ordinals).collect()),
    };
    data.insert(CA_CERT_KEY.into(), ByteString(authority.cert_pem().as_bytes().to_vec()));
    for ordinal in issue {
        let issued = authority.issue(&pod_hosts(names, ordinal), now, LEAF_VALIDITY)?;
        let pod = names.pod(ordinal);
        data.insert(format!("{pod}.crt"), ByteString(issued.cert_pem.into_bytes()));
        data.insert(format!("{pod}.key"), ByteString(issued.key_pem.into_bytes()));
    }
    Ok(data)
}

/// The cert-manager `Certificate` of a `CertManager` cluster: one certificate for every member
/// (a wildcard over the peer Service's hosts) and the client Service, written by cert-manager
/// into `<name>-tls` (`tls.crt`, `tls.key`, `ca.crt`), renewed by cert-manager.
pub fn cert_manager_certificate(cluster: &ConfluxCluster, names: &Names) -> Option<DynamicObject> {
    let issuer = cluster.spec.tls.as_ref()?.issuer_ref.as_ref()?;
    let peers = format!("*.{}.{}.svc", names.peer_service(), names.namespace);
    let mut hosts = vec![peers.clone(), format!("{peers}.cluster.local")];
    hosts.extend(client_hosts(names));
    let kind = match issuer.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    let object = json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": names.tls_secret(),
            "namespace": names.namespace,
            "labels": crate::crd::labels(&names.cluster),
            "ownerReferences": kube::Resource::controller_owner_ref(cluster, &()).into_iter().collect::<Vec<_>>(),
        },
        "spec": {
            "secretName": names.tls_secret(),
            "commonName": hosts[0],
            "dnsNames": hosts,
            "duration": "2160h",
            "renewBefore": "720h",
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "usages": ["server auth", "client auth", "digital signature"],
            "issuerRef": { "name": issuer.name, "kind": kind, "group": "cert-manager.io" },
        }
    });
    serde_json::from_value(object).ok()
}

/// Points the node container at its certificate and mounts `<name>-tls` (no change when TLS is
/// disabled). Both listeners use the pod's certificate; peers must present one from the same CA.
/// The probes then ask over https (the kubelet does not verify a probe's certificate).
pub fn mount(cluster: &ConfluxCluster, names: &Names, pod: &mut PodSpec) {
    let (cert, key) = match cluster.spec.tls_mode() {
        TlsMode::Disabled => return,
        TlsMode::Auto => (format!("{TLS_DIR}/$(POD_NAME).crt"), format!("{TLS_DIR}/$(POD_NAME).key")),
        TlsMode::CertManager => (format!("{TLS_DIR}/tls.crt"), format!("{TLS_DIR}/tls.key")),
    };
    let env = |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() };
    let files = [
        env("CONFLUX_TLS_CERT_FILE", &cert),
        env("CONFLUX_TLS_KEY_FILE", &key),
        env("CONFLUX_PEER_TLS_CERT_FILE", &cert),
        env("CONFLUX_PEER_TLS_KEY_FILE", &key),
        env("CONFLUX_PEER_TLS_CA_FILE", &format!("{TLS_DIR}/{CA_CERT_KEY}")),
    ];
    if let Some(container) = pod.containers.first_mut() {
        container.env.get_or_insert_with(Vec::new).extend(files);
        let probes = [&mut container.readiness_probe, &mut container.liveness_probe, &mut container.startup_probe];
        for http_get in probes.into_iter().flatten().filter_map(|probe| probe.http_get.as_mut()) {
            http_get.scheme = Some("HTTPS".into());
        }
        container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(names.tls_secret()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
}

#[cfg(test)]
mod tests;
