//! TLS on both listeners and mutual TLS between nodes, on real `conflux serve` processes with
//! certificates from `scripts/certs.sh`: a cluster forms and commits over TLS; a certificate from
//! another CA fails the handshake; a member's certificate claiming another node, a non-member's
//! certificate and no certificate are refused 403 on Raft routes; certificate files replaced on
//! disk are served without a restart while writes continue, and a broken file is not taken.

#[path = "support/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use harness::{eventually, make_certs, NodeOptions, TestCluster, WriteLoad, TOKEN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;

/// A raw peer client presenting node certificate `node-<id>` of `certs`, trusting `ca`.
fn peer_http(certs: &Path, id: u64, ca: &Path) -> reqwest::Client {
    let mut pem = std::fs::read(certs.join(format!("node-{id}.pem"))).unwrap();
    pem.extend(std::fs::read(certs.join(format!("node-{id}-key.pem"))).unwrap());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A peer call to `/raft/ping` on node `index`, claiming to come from node `from`.
async fn ping(
    cluster: &TestCluster,
    index: usize,
    http: &reqwest::Client,
    from: u64,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let node = &cluster.nodes[index];
    let cluster_id = cluster.status(index).await.unwrap().cluster_id.unwrap();
    let response = http
        .post(format!("https://{}/raft/ping", node.peer_addr))
        .bearer_auth(TOKEN)
        .header("x-conflux-target-node", node.node_id.to_string())
        .header("x-conflux-from-node", from.to_string())
        .header("x-conflux-cluster-id", cluster_id)
        .send()
        .await?;
    Ok(response.status())
}

/// The leaf certificate `addr` serves, checked against `ca`.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

fn certificate_file(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

async fn write_and_read_everywhere(cluster: &TestCluster, name: &str) {
    let key = ["tls", "app", "prod", name];
    let written = cluster.nodes[1].client().put(key, b"over tls".to_vec(), Default::default()).await.unwrap();
    for node in &cluster.nodes {
        let read = node.client().get(key, false).await.unwrap().expect("the write is readable on every node");
        assert_eq!(read.content, b"over tls");
        assert_eq!(read.version, written.version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_client_tls_and_peer_mtls_elects_a_leader_and_commits_writes() {
    let certs = TempDir::new().unwrap();
    make_certs(certs.path(), 3);
    let cluster = TestCluster::start_with_tls(3, NodeOptions::default(), Some(certs.path())).await;
    let leader = cluster.leader().await;
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.voters.len(), 3);
    assert!(status.voters.keys().all(|id| (1..=3).contains(id)), "--node-id names the nodes: {status:?}");
    write_and_read_everywhere(&cluster, "first").await;

    // The client listener speaks only TLS: a plain HTTP request gets no answer.
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", cluster.nodes[0].client_addr)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A client trusting another CA refuses the node's certificate.
    let other = TempDir::new().unwrap();
    make_certs(other.path(), 1);
    let ca = std::fs::read(other.path().join("ca.pem")).unwrap();
    let stranger = conflux::client::Client::with_ca(&cluster.nodes[0].client_url(), None, &ca).unwrap();
    let refused = stranger.get(["tls", "app", "prod", "first"], true).await;
    assert!(matches!(refused, Err(conflux::client::ClientError::Http(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_certificates_must_come_from_the_peer_ca_and_name_the_calling_member() {
    let certs = TempDir::new().unwrap();
    make_certs(certs.path(), 4);
    let cluster = TestCluster::start_with_tls(3, NodeOptions::default(), Some(certs.path())).await;
    let ca = certs.path().join("ca.pem");
    let node2 = cluster.nodes[1].node_id;
    assert_eq!(node2, 2);

    // The right certificate for the node it claims: accepted (the control).
    let member = peer_http(certs.path(), 2, &ca);
    assert_eq!(ping(&cluster, 0, &member, 2).await.unwrap(), 200);
    // A member's certificate claiming another member: 403.
    assert_eq!(ping(&cluster, 0, &member, 3).await.unwrap(), 403);
    // A certificate of the right CA naming a node that is not a member: 403.
    let outsider = peer_http(certs.path(), 4, &ca);
    assert_eq!(ping(&cluster, 0, &outsider, 4).await.unwrap(), 403);
    // No certificate at all: 403 on Raft routes, while the admin API (tokens only) answers.
    let no_certificate = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    assert_eq!(ping(&cluster, 0, &no_certificate, 2).await.unwrap(), 403);
    assert!(cluster.nodes[0].admin().status().await.is_ok(), "the admin API needs no certificate");

    // A node certificate from another CA (trusting the cluster's CA): the handshake fails.
    let other = TempDir::new().unwrap();
    make_certs(other.path(), 3);
    let impostor = peer_http(other.path(), 2, &ca);
    let refused = ping(&cluster, 0, &impostor, 2).await;
    assert!(refused.is_err(), "a certificate from another CA must fail the handshake: {refused:?}");

    // The cluster still works after all that.
    write_and_read_everywhere(&cluster, "after-refusals").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_files_replaced_on_disk_are_served_without_restart_while_writes_continue() {
    let certs = TempDir::new().unwrap();
    make_certs(certs.path(), 3);
    let cluster = TestCluster::start_with_tls(3, NodeOptions::default(), Some(certs.path())).await;
    let ca = certs.path().join("ca.pem");
    let node = &cluster.nodes[0];
    let old_client_cert = served_certificate(node.client_addr, &ca).await.unwrap();
    let old_peer_cert = served_certificate(node.peer_addr, &ca).await.unwrap();
    assert_eq!(old_client_cert, certificate_file(&certs.path().join("server.pem")));
    assert_eq!(old_peer_cert, certificate_file(&certs.path().join("node-1.pem")));

    let clients = cluster.nodes.iter().map(|n| n.client()).collect();
    let load = WriteLoad::start_with(clients, 4);
    // A certificate file that does not parse is not taken: the previous one stays in use (the
    // wait covers more than one reload poll).
    std::fs::write(certs.path().join("server.pem"), "not a certificate").unwrap();
    tokio::time::sleep(conflux::tls::RELOAD_INTERVAL * 2).await;
    assert_eq!(served_certificate(node.client_addr, &ca).await.unwrap(), old_client_cert);
    // New leaf certificates (new keys, new serials) from the same CA, replaced by rename.
    make_certs(certs.path(), 3);
    let new_client_cert = certificate_file(&certs.path().join("server.pem"));
    let new_peer_cert = certificate_file(&certs.path().join("node-1.pem"));
    assert_ne!(new_client_cert, old_client_cert);
    eventually("every node serves its new certificates", Duration::from_secs(15), || async {
        for (i, node) in cluster.nodes.iter().enumerate() {
            let peer = certificate_file(&certs.path().join(format!("node-{}.pem", i + 1)));
            let client = served_certificate(node.client_addr, &ca).await?;
            let served_peer = served_certificate(node.peer_addr, &ca).await?;
            if client != new_client_cert || served_peer != peer {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(served_certificate(node.peer_addr, &ca).await.unwrap(), new_peer_cert);

    // Writes committed after the rotation went through peer connections made with the new files.
    let before = cluster.status(cluster.leader().await).await.unwrap().applied_index;
    let leader = cluster.leader().await;
    eventually("writes commit after the rotation", Duration::from_secs(15), || async {
        (cluster.status(leader).await?.applied_index > before + 20).then_some(())
    })
    .await;
    let (acked, _failed) = load.stop().await;
    assert!(!acked.is_empty());
    let last = cluster.status(leader).await.unwrap().applied_index;
    cluster.wait_applied(last).await;
    cluster.assert_has_all(&acked).await;
    write_and_read_everywhere(&cluster, "after-rotation").await;
}
