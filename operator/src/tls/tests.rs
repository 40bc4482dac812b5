//! The certificate builder checked the way a peer checks it (rustls-webpki: chain to the CA,
//! usage, validity window, names), the renewal rule, and what pods mount.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, Secret};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};

use super::*;
use crate::crd::{ConfluxClusterSpec, IssuerRef, TlsSpec};

fn names() -> Names {
    Names { cluster: "cfx".into(), namespace: "prod".into(), tls: true }
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("one PEM certificate")
}

/// What a peer checks: the chain to `ca_pem`, for `usage`, at `time`, and the name `host`.
fn verify(ca_pem: &str, leaf_pem: &str, host: &str, time: Timestamp, usage: webpki::KeyUsage) -> Result<(), String> {
    let ca = der(ca_pem);
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| e.to_string())?;
    let leaf = der(leaf_pem);
    let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(time.as_second()).expect("after 1970")));
    cert.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &[anchor], &[], time, usage, None, None)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|e| e.to_string())
}

fn server() -> webpki::KeyUsage {
    webpki::KeyUsage::server_auth()
}

#[test]
fn a_pod_certificate_chains_to_the_ca_for_both_usages_and_names_only_its_pod_and_the_service() {
    let now = at("2026-03-01T00:00:00Z");
    let ca = Authority::generate(&names(), now).expect("CA");
    let leaf = ca.issue(&pod_hosts(&names(), 1), now, LEAF_VALIDITY).expect("leaf");
    for host in ["cfx-1.cfx-peers.prod.svc", "cfx-1.cfx-peers.prod.svc.cluster.local", "cfx", "cfx.prod.svc"] {
        assert_eq!(verify(ca.cert_pem(), &leaf.cert_pem, host, now, server()), Ok(()), "{host}");
    }
    let client = webpki::KeyUsage::client_auth();
    assert_eq!(verify(ca.cert_pem(), &leaf.cert_pem, "cfx-1.cfx-peers.prod.svc", now, client), Ok(()));
    for other in ["cfx-2.cfx-peers.prod.svc", "cfx-1.cfx-peers.other.svc", "node-1.conflux"] {
        assert!(verify(ca.cert_pem(), &leaf.cert_pem, other, now, server()).is_err(), "{other}");
    }
    // Another cluster's CA does not vouch for it.
    let stranger = Authority::generate(&Names { cluster: "other".into(), ..names() }, now).expect("CA");
    assert!(verify(stranger.cert_pem(), &leaf.cert_pem, "cfx-1.cfx-peers.prod.svc", now, server()).is_err());
}

#[test]
fn a_certificate_is_valid_from_just_before_issue_until_its_lifetime_ends() {
    let now = at("2026-03-01T00:00:00Z");
    let ca = Authority::generate(&names(), now).expect("CA");
    let leaf = ca.issue(&pod_hosts(&names(), 0), now, LEAF_VALIDITY).expect("leaf");
    let host = "cfx-0.cfx-peers.prod.svc";
    let check = |time: Timestamp| verify(ca.cert_pem(), &leaf.cert_pem, host, time, server());
    assert_eq!(check(now - SignedDuration::from_mins(4)), Ok(()), "clocks a little behind still accept it");
    assert!(check(now - SignedDuration::from_hours(1)).is_err(), "not valid long before issue");
    assert_eq!(check(now + LEAF_VALIDITY - SignedDuration::from_secs(1)), Ok(()));
    assert!(check(now + LEAF_VALIDITY + SignedDuration::from_secs(1)).is_err(), "expired");
}

#[test]
fn a_ca_loaded_from_its_secret_issues_certificates_that_chain_to_the_original() {
    let now = at("2026-03-01T00:00:00Z");
    let original = Authority::generate(&names(), now).expect("CA");
    let secret = Secret { data: Some(original.secret_data()), ..Secret::default() };
    let loaded = Authority::load(&names(), &secret).expect("loads");
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    let leaf = loaded.issue(&pod_hosts(&names(), 2), now, LEAF_VALIDITY).expect("leaf");
    assert_eq!(verify(original.cert_pem(), &leaf.cert_pem, "cfx-2.cfx-peers.prod.svc", now, server()), Ok(()));

    let broken = Secret { data: Some([(CA_CERT_KEY.to_string(), ByteString(b"x".to_vec()))].into()), ..secret };
    assert!(matches!(Authority::load(&names(), &broken), Err(TlsError::InvalidSecret { key: CA_KEY_KEY, .. })));
}

/// A `<name>-tls` Secret as written at `issued` for `ordinals` pods by `ca`.
fn written(ca: &Authority, ordinals: u32, issued: Timestamp) -> Secret {
    let data = pod_certificates(&names(), ca, None, &Renewal::All, ordinals, issued).expect("issues");
    let mut secret = Secret { data: Some(data), ..Secret::default() };
    let annotation = renew_at(issued, LEAF_VALIDITY).to_string();
    secret.metadata.annotations = Some([(RENEW_AT_ANNOTATION.to_string(), annotation)].into());
    secret
}

#[test]
fn certificates_are_renewed_at_two_thirds_of_their_lifetime_and_added_for_new_pods() {
    let issued = at("2026-03-01T00:00:00Z");
    let ca = Authority::generate(&names(), issued).expect("CA");
    let secret = written(&ca, 3, issued);
    let decide = |secret: Option<&Secret>, ordinals, now| renewal(&names(), secret, ordinals, ca.cert_pem(), now);
    assert_eq!(decide(None, 3, issued), Renewal::All, "nothing issued yet");
    assert_eq!(decide(Some(&secret), 3, issued), Renewal::Nothing);
    assert_eq!(decide(Some(&secret), 1, issued), Renewal::Nothing, "certificates of removed pods may stay");
    let sixty_days = issued + SignedDuration::from_hours(24 * 60);
    assert_eq!(decide(Some(&secret), 3, sixty_days - SignedDuration::from_secs(1)), Renewal::Nothing);
    assert_eq!(decide(Some(&secret), 3, sixty_days), Renewal::All, "two thirds of 90 days");
    assert_eq!(decide(Some(&secret), 5, issued), Renewal::Add(vec![3, 4]));

    let other = Authority::generate(&names(), issued).expect("CA");
    assert_eq!(renewal(&names(), Some(&secret), 3, other.cert_pem(), issued), Renewal::All, "the CA changed");
    let mut unreadable = secret.clone();
    unreadable.metadata.annotations = Some([(RENEW_AT_ANNOTATION.to_string(), "soon".to_string())].into());
    assert_eq!(decide(Some(&unreadable), 3, issued), Renewal::All);
}

#[test]
fn adding_pods_keeps_the_certificates_already_issued() {
    let issued = at("2026-03-01T00:00:00Z");
    let ca = Authority::generate(&names(), issued).expect("CA");
    let secret = written(&ca, 2, issued);
    let later = issued + SignedDuration::from_hours(24);
    let data = pod_certificates(&names(), &ca, Some(&secret), &Renewal::Add(vec![2]), 3, later).expect("adds");
    let old = secret.data.clone().expect("data");
    assert_eq!(data["cfx-0.crt"], old["cfx-0.crt"]);
    assert_eq!(data["cfx-1.key"], old["cfx-1.key"]);
    let new = String::from_utf8(data["cfx-2.crt"].0.clone()).expect("PEM");
    assert_eq!(verify(ca.cert_pem(), &new, "cfx-2.cfx-peers.prod.svc", later, server()), Ok(()));
    assert_eq!(data[CA_CERT_KEY].0, ca.cert_pem().as_bytes());
    let renewed = pod_certificates(&names(), &ca, Some(&secret), &Renewal::All, 2, later).expect("renews");
    assert_ne!(renewed["cfx-0.crt"], old["cfx-0.crt"]);
    assert_ne!(renewed["cfx-0.key"], old["cfx-0.key"], "a renewal brings a new key");
}

fn cluster(tls: Option<TlsSpec>) -> ConfluxCluster {
    let mut cluster =
        ConfluxCluster::new("cfx", ConfluxClusterSpec { replicas: 3, tls, ..ConfluxClusterSpec::default() });
    cluster.metadata.namespace = Some("prod".into());
    cluster.metadata.uid = Some("0000-1111".into());
    cluster
}

fn mounted(cluster: &ConfluxCluster) -> (BTreeMap<String, String>, PodSpec) {
    let statefulset = crate::resources::statefulset(cluster, 3);
    let pod = statefulset.spec.and_then(|spec| spec.template.spec).expect("pod spec");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    (env.into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect(), pod)
}

#[test]
fn each_pod_reads_its_own_certificate_from_the_mounted_secret_and_advertises_https() {
    let auto = cluster(Some(TlsSpec { mode: TlsMode::Auto, issuer_ref: None }));
    let (env, pod) = mounted(&auto);
    assert_eq!(env["CONFLUX_TLS_CERT_FILE"], "/etc/conflux/tls/$(POD_NAME).crt");
    assert_eq!(env["CONFLUX_PEER_TLS_KEY_FILE"], "/etc/conflux/tls/$(POD_NAME).key");
    assert_eq!(env["CONFLUX_PEER_TLS_CA_FILE"], "/etc/conflux/tls/ca.crt");
    assert_eq!(env["CONFLUX_ADVERTISE_PEER"], "https://$(POD_NAME).cfx-peers.$(POD_NAMESPACE).svc:7001");
    let names: Vec<String> = pod.containers[0].env.clone().unwrap_or_default().into_iter().map(|e| e.name).collect();
    let position = |name: &str| names.iter().position(|n| n == name).expect(name);
    assert!(position("POD_NAME") < position("CONFLUX_TLS_CERT_FILE"), "$(POD_NAME) is defined before its use");
    let volumes = pod.volumes.unwrap_or_default();
    let secret_of = |name: &str| volumes.iter().find(|v| v.name == name)?.secret.as_ref()?.secret_name.clone();
    assert_eq!(secret_of("tls").as_deref(), Some("cfx-tls"));
    assert!(!volumes.iter().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("cfx-ca")));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(mounts.iter().any(|m| m.name == "tls" && m.mount_path == TLS_DIR && m.read_only == Some(true)));
    assert_eq!(probe_schemes(&pod.containers[0]), ["HTTPS", "HTTPS"], "probes of a TLS listener ask over https");

    let issuer = IssuerRef { name: "corp-ca".into(), kind: IssuerKind::ClusterIssuer };
    let (env, _) = mounted(&cluster(Some(TlsSpec { mode: TlsMode::CertManager, issuer_ref: Some(issuer) })));
    assert_eq!(env["CONFLUX_TLS_CERT_FILE"], "/etc/conflux/tls/tls.crt");
    assert_eq!(env["CONFLUX_PEER_TLS_CA_FILE"], "/etc/conflux/tls/ca.crt");

    for plain in [cluster(None), cluster(Some(TlsSpec { mode: TlsMode::Disabled, issuer_ref: None }))] {
        let (env, pod) = mounted(&plain);
        assert!(!env.keys().any(|name| name.contains("TLS")), "{env:?}");
        assert!(!pod.volumes.unwrap_or_default().iter().any(|v| v.name == "tls"));
        assert_eq!(env["CONFLUX_ADVERTISE_PEER"], "http://$(POD_NAME).cfx-peers.$(POD_NAMESPACE).svc:7001");
        assert_eq!(probe_schemes(&pod.containers[0]), ["HTTP", "HTTP"]);
    }
}

/// The schemes of the readiness and liveness probes (`HTTP` when unset, as the kubelet reads it).
fn probe_schemes(container: &k8s_openapi::api::core::v1::Container) -> Vec<String> {
    [&container.readiness_probe, &container.liveness_probe]
        .into_iter()
        .map(|probe| {
            let http_get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("an HTTP probe");
            http_get.scheme.clone().unwrap_or_else(|| "HTTP".into())
        })
        .collect()
}

#[test]
fn cert_manager_is_asked_for_one_certificate_naming_every_member_and_the_service() {
    let issuer = IssuerRef { name: "corp-ca".into(), kind: IssuerKind::ClusterIssuer };
    let cluster = cluster(Some(TlsSpec { mode: TlsMode::CertManager, issuer_ref: Some(issuer) }));
    let certificate = cert_manager_certificate(&cluster, &names()).expect("a Certificate");
    let value = serde_json::to_value(&certificate).expect("serializes");
    assert_eq!(value["apiVersion"], "cert-manager.io/v1");
    assert_eq!(value["kind"], "Certificate");
    assert_eq!(value["metadata"]["ownerReferences"][0]["kind"], "ConfluxCluster");
    let spec = &value["spec"];
    assert_eq!(spec["secretName"], "cfx-tls");
    assert_eq!(
        spec["issuerRef"],
        serde_json::json!({ "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" })
    );
    let hosts: Vec<&str> = spec["dnsNames"].as_array().expect("dnsNames").iter().filter_map(|h| h.as_str()).collect();
    assert!(hosts.contains(&"*.cfx-peers.prod.svc") && hosts.contains(&"cfx.prod.svc"), "{hosts:?}");
    assert_eq!(spec["usages"], serde_json::json!(["server auth", "client auth", "digital signature"]));
    assert!(cert_manager_certificate(&self::cluster(None), &names()).is_none());
}
