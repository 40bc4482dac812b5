//! A cluster with `spec.tls.mode: Auto` on real nodes. The harness mounts the operator's
//! `<name>-tls` Secret as the kubelet would (a directory swapped whole when the Secret changes),
//! starts each node with the TLS settings of the StatefulSet's pod template, and resolves pod
//! names to loopback, so members reach each other over mutual TLS by the names their
//! certificates carry. Checked: plain HTTP is refused, scaling keeps every write, and a renewal
//! puts new certificates in service without a restart or a lost write.

use std::{path::Path, time::Duration};

use conflux_operator::{
    crd::{TlsMode, TlsSpec},
    resources::PEER_PORT,
    tls::{RENEW_AT_ANNOTATION, TLS_DIR},
};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Secret};
use kube::api::{Patch, PatchParams};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde_json::json;

use super::{node_container, Harness, Writer, NAME, NAMESPACE};

/// The pod template's TLS settings and advertised peer URL for the pod at `ordinal`, as the
/// kubelet would expand them: the pod's name and namespace filled in, the Secret's mount path
/// replaced by `tls_dir`, and the peer port by the one this harness gave the pod.
pub(super) fn pod_env(
    statefulset: &StatefulSet,
    ordinal: u32,
    peer_port: u16,
    tls_dir: &Path,
) -> Vec<(String, String)> {
    let container = node_container(statefulset);
    let tls_dir = tls_dir.to_str().expect("a UTF-8 temp dir");
    container
        .env
        .iter()
        .flatten()
        .filter(|var| var.name.contains("_TLS_") || var.name == "CONFLUX_ADVERTISE_PEER")
        .map(|var| {
            let value = var
                .value
                .as_deref()
                .expect("TLS settings are plain values")
                .replace("$(POD_NAME)", &format!("{NAME}-{ordinal}"))
                .replace("$(POD_NAMESPACE)", NAMESPACE)
                .replace(TLS_DIR, tls_dir)
                .replace(&format!(":{PEER_PORT}"), &format!(":{peer_port}"));
            (var.name.clone(), value)
        })
        .collect()
}

impl Harness {
    /// Where the pods' `<name>-tls` Secret is mounted (a symbolic link to its current contents).
    pub(super) fn tls_dir(&self) -> std::path::PathBuf {
        self.root.path().join("tls")
    }

    /// Mounts `<name>-tls` at [`Harness::tls_dir`] like the kubelet: a new directory with every
    /// key as a file, then the link swapped to it at once, so a node never reads a certificate of
    /// one issue and a key of another. `false` while the Secret does not exist.
    pub(super) async fn mount_tls_secret(&self) -> bool {
        let Some(secret) = self.api::<Secret>().get_opt(&format!("{NAME}-tls")).await.expect("get secret") else {
            return false;
        };
        let data = secret.data.unwrap_or_default();
        let link = self.tls_dir();
        let unchanged = data.iter().all(|(key, value)| std::fs::read(link.join(key)).is_ok_and(|old| old == value.0));
        if unchanged {
            return true;
        }
        let version = secret.metadata.resource_version.unwrap_or_default();
        let contents = self.root.path().join(format!("tls-{version}"));
        std::fs::create_dir_all(&contents).expect("secret volume dir");
        for (key, value) in &data {
            std::fs::write(contents.join(key), &value.0).expect("secret file");
        }
        let next = self.root.path().join("tls.next");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(&contents, &next).expect("symlink");
        std::fs::rename(&next, &link).expect("swap the mounted secret");
        true
    }
}

/// The certificate the listener at `url` presents.
async fn presented_certificate(url: &str) -> Vec<u8> {
    let builder = reqwest::Client::builder().danger_accept_invalid_certs(true).tls_info(true);
    let http = conflux::client::resolving(builder, &super::pod_hosts()).build().expect("http client");
    let response = http.get(format!("{url}/healthz")).send().await.expect("an https answer");
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info");
    info.peer_certificate().expect("a server certificate").to_vec()
}

fn certificate_of_pod(secret: &Secret, ordinal: u32) -> Vec<u8> {
    let pem = &secret.data.as_ref().expect("data")[&format!("{NAME}-{ordinal}.crt")].0;
    CertificateDer::from_pem_slice(pem).expect("a PEM certificate").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_tls_cluster_speaks_only_tls_scales_and_renews_its_certificates_without_losing_a_write() {
    let mut harness = Harness::with_tls(3, Some(TlsSpec { mode: TlsMode::Auto, issuer_ref: None })).await;
    harness.converge(3, "bootstrap with TLS").await;
    let (_, admin_token) = harness.tokens().await.expect("tokens");

    // Members were added by their pods' names over https, and the nodes refuse plain HTTP.
    let status = harness.admin_api(0, &admin_token).status().await.expect("status over mutual TLS");
    for (id, peer_url) in &status.voters {
        assert!(peer_url.starts_with(&format!("https://{NAME}-")), "member {id}: {peer_url}");
    }
    let client_addr = harness.addresses.lock().expect("addresses").client[&0];
    let plain = reqwest::Client::new().get(format!("http://{client_addr}/readyz")).send().await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
    let untrusting = conflux::client::Client::new(&format!("https://{client_addr}"), Some(admin_token.clone()));
    assert!(untrusting.status().await.is_err(), "a client that does not trust the cluster CA got in");

    let writer = Writer::start(harness.live_clients(3, &admin_token));
    harness.scale(5).await;
    harness.converge(5, "scale to 5 with TLS").await;
    harness.scale(3).await;
    writer.retarget(harness.live_clients(3, &admin_token));
    harness.converge(3, "scale back to 3 with TLS").await;

    // Renewal: due now, every certificate is issued again; the mounted files change and the
    // nodes serve the new ones without a restart.
    let secrets = harness.api::<Secret>();
    let before = secrets.get(&format!("{NAME}-tls")).await.expect("tls secret");
    let pids: Vec<u32> = harness.processes.values().map(|process| process.child.id()).collect();
    let due = json!({ "metadata": { "annotations": { RENEW_AT_ANNOTATION: "2000-01-01T00:00:00Z" } } });
    secrets.patch(&format!("{NAME}-tls"), &PatchParams::default(), &Patch::Merge(due)).await.expect("renewal due");
    harness.converge(3, "renewal").await;
    let after = secrets.get(&format!("{NAME}-tls")).await.expect("tls secret");
    let client_url = format!("https://{}:{}", super::pod_host(0), client_addr.port());
    let renewed = certificate_of_pod(&after, 0);
    assert_ne!(certificate_of_pod(&before, 0), renewed, "pod 0's certificate was issued again");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while presented_certificate(&client_url).await != renewed {
        assert!(std::time::Instant::now() < deadline, "pod 0 still serves its old certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids_after: Vec<u32> = harness.processes.values().map(|process| process.child.id()).collect();
    assert_eq!(pids, pids_after, "no node restarted for the renewal");
    // Raft keeps replicating over the renewed mutual TLS (new connections use the new files).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (acknowledged, longest_gap) = writer.finish().await;
    eprintln!("{} acknowledged writes over TLS; longest gap {longest_gap:?}", acknowledged.len());
    assert!(acknowledged.len() > 50, "the writer made progress: {}", acknowledged.len());
    assert!(longest_gap < Duration::from_secs(10), "writes stalled for {longest_gap:?}");
    for ordinal in 0..3 {
        super::assert_all_readable(&harness.api_client(ordinal, &admin_token), &acknowledged).await;
    }
}
