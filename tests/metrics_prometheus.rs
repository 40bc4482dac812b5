//! The node's `/metrics` passes `promtool check metrics`, and a real Prometheus server scraping the
//! node sees its Raft state and request counters.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conflux::client::{Client, PutOptions};
use conflux::config::NodeConfig;
use conflux::node::start_node;
use conflux::wire;
use tempfile::TempDir;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_node_and_promtool_accepts_its_metrics() {
    let dir = TempDir::new().unwrap();
    let mut config = NodeConfig::with_data_dir(dir.path().join("node"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.peer_listen = "127.0.0.1:0".parse().unwrap();
    let node = start_node(config).await.unwrap();
    let admin_token = std::fs::read_to_string(dir.path().join("node/admin-token")).unwrap();
    let client = Client::new(&format!("http://{}", node.client_addr), Some(admin_token));
    for i in 0..5 {
        client.put(["m", "a", "e", &format!("k{i}")], b"v".to_vec(), PutOptions::default()).await.unwrap();
    }
    // Prometheus scrapes with a cluster-wide viewer token: it can read, never change.
    let scraper =
        wire::TokenRequest { name: "prometheus".into(), role: "viewer".into(), scope: "*".into(), ttl_seconds: None };
    let scrape_token = client.create_token(&scraper).await.unwrap().token;
    let metrics_url = format!("http://{}/metrics", node.client_addr);
    let anonymous = reqwest::get(&metrics_url).await.unwrap();
    assert_eq!(anonymous.status(), 401, "/metrics needs a token");
    let text = reqwest::Client::new().get(&metrics_url).bearer_auth(&scrape_token).send().await.unwrap();
    let text = text.text().await.unwrap();
    for name in [
        "conflux_raft_term",
        "conflux_raft_leader_id",
        "conflux_raft_committed_index",
        "conflux_raft_applied_index",
        "conflux_http_request_duration_seconds_bucket",
        "conflux_storage_size_bytes",
        "conflux_write_batch_commands_bucket",
        "conflux_wal_sync_group_appends_bucket",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh");
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let port = free_port();
    let config_path = dir.path().join("prometheus.yml");
    let token_path = dir.path().join("scrape-token");
    std::fs::write(&token_path, &scrape_token).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: conflux\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{}']\n",
            token_path.display(),
            node.client_addr
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed by scripts/setup.sh"),
    );
    let query = format!("http://127.0.0.1:{port}/api/v1/query");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = reqwest::Client::new()
            .get(&query)
            .query(&[("query", "conflux_raft_state{state=\"Leader\"} * on() group_left sum(conflux_http_requests_total{route=\"/api/v1/configs/{tenant}/{app}/{env}/{name}\",status=\"200\"})")])
            .send()
            .await;
        if let Ok(answer) = answer {
            if let Ok(body) = answer.json::<serde_json::Value>().await {
                if let Some(value) = body["data"]["result"][0]["value"][1].as_str() {
                    let requests: f64 = value.parse().unwrap();
                    assert!(requests >= 5.0, "Prometheus saw {requests} successful config requests");
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped the node's Raft state");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    node.shutdown().await;
}
