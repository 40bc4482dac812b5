//! The TLS objects of one cluster in the API server: in `Auto` mode the CA Secret `<name>-ca`
//! (created once) and `<name>-tls` (written when [`renewal`] says so: new pods, renewal due, or
//! another CA); in `CertManager` mode the cert-manager `Certificate`. Kubelet refreshes mounted
//! Secrets and nodes reload changed certificate files every 2 s, so a renewal restarts no pod.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};

use super::{
    cert_manager_certificate, pod_certificates, renew_at, renewal, Authority, Renewal, CA_CERT_KEY, LEAF_VALIDITY,
    RENEW_AT_ANNOTATION,
};
use crate::{
    crd::{ConfluxCluster, TlsMode},
    resources::{metadata, Names},
    Result,
};

/// What [`ensure`] found and did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// The CA (PEM) the members' certificates are signed by; `None` without TLS, or while
    /// cert-manager has not issued the certificate yet.
    pub ca_pem: Option<String>,
    /// What was issued this time, for an Event.
    pub issued: Option<String>,
}

/// Makes the TLS objects of `cluster` current for `ordinals` pods at `now`.
pub async fn ensure(
    client: &kube::Client,
    cluster: &ConfluxCluster,
    names: &Names,
    ordinals: u32,
    now: Timestamp,
    field_manager: &str,
) -> Result<Ensured> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    match cluster.spec.tls_mode() {
        TlsMode::Disabled => Ok(Ensured::default()),
        TlsMode::Auto => auto(&secrets, cluster, names, ordinals, now).await,
        TlsMode::CertManager => {
            if let Some(certificate) = cert_manager_certificate(cluster, names) {
                let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
                let certificates: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &names.namespace, &ApiResource::from_gvk(&gvk));
                let params = PatchParams::apply(field_manager).force();
                certificates.patch(&names.tls_secret(), &params, &Patch::Apply(&certificate)).await?;
            }
            let issued = secrets.get_opt(&names.tls_secret()).await?;
            let ca = issued.as_ref().and_then(|secret| secret.data.as_ref()?.get(CA_CERT_KEY).cloned());
            Ok(Ensured { ca_pem: ca.and_then(|bytes| String::from_utf8(bytes.0).ok()), issued: None })
        }
    }
}

async fn auto(
    secrets: &Api<Secret>,
    cluster: &ConfluxCluster,
    names: &Names,
    ordinals: u32,
    now: Timestamp,
) -> Result<Ensured> {
    let authority = match secrets.get_opt(&names.ca_secret()).await? {
        Some(secret) => Authority::load(names, &secret)?,
        None => {
            let authority = Authority::generate(names, now)?;
            let secret = opaque(cluster, names.ca_secret(), authority.secret_data());
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => authority,
                // Another operator replica made it first: use that one.
                Err(kube::Error::Api(response)) if response.code == 409 => {
                    Authority::load(names, &secrets.get(&names.ca_secret()).await?)?
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    let ca_pem = Some(authority.cert_pem().to_string());
    let existing = secrets.get_opt(&names.tls_secret()).await?;
    let decided = renewal(names, existing.as_ref(), ordinals, authority.cert_pem(), now);
    let renew = match &decided {
        Renewal::Nothing => return Ok(Ensured { ca_pem, issued: None }),
        Renewal::All => renew_at(now, LEAF_VALIDITY).to_string(),
        Renewal::Add(_) => existing
            .as_ref()
            .and_then(|secret| secret.metadata.annotations.as_ref()?.get(RENEW_AT_ANNOTATION).cloned())
            .unwrap_or_else(|| renew_at(now, LEAF_VALIDITY).to_string()),
    };
    let data = pod_certificates(names, &authority, existing.as_ref(), &decided, ordinals, now)?;
    let mut secret = opaque(cluster, names.tls_secret(), data);
    secret.metadata.annotations = Some([(RENEW_AT_ANNOTATION.to_string(), renew.clone())].into());
    match existing {
        // Guarded by the version read: a concurrent writer makes this round fail and retry.
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version;
            secrets.replace(&names.tls_secret(), &PostParams::default(), &secret).await?;
        }
        None => {
            secrets.create(&PostParams::default(), &secret).await?;
        }
    }
    let what = match decided {
        Renewal::Add(ordinals) => format!("issued certificates for pods {ordinals:?}"),
        _ => format!("issued every member's certificate (valid {LEAF_VALIDITY:#}), renewed after {renew}"),
    };
    Ok(Ensured { ca_pem, issued: Some(what) })
}

fn opaque(
    cluster: &ConfluxCluster,
    name: String,
    data: std::collections::BTreeMap<String, k8s_openapi::ByteString>,
) -> Secret {
    Secret { metadata: metadata(cluster, name), type_: Some("Opaque".into()), data: Some(data), ..Secret::default() }
}
