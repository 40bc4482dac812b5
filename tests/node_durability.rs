//! A real single-node process acknowledges writes, is killed with SIGKILL, and restarts on the
//! same data directory: every acknowledged write is there, and the node resumes where it left off.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use conflux::client::{Client, PutOptions};
use tempfile::TempDir;

fn start(dir: &std::path::Path, listen: &str, peer: &str) -> Child {
    let _ = std::fs::remove_file(dir.join("listen.json"));
    Command::new(env!("CARGO_BIN_EXE_conflux"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", listen, "--peer-listen", peer])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn addresses(dir: &std::path::Path) -> (String, String) {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(dir.join("listen.json")) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            return (v["client"].as_str().unwrap().to_string(), v["peer"].as_str().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node did not start");
}

async fn ready(client_addr: &str) {
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("http://{client_addr}/readyz")).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_restart() {
    let dir = TempDir::new().unwrap();
    let mut node = start(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
    let (client_addr, peer_addr) = addresses(dir.path()).await;
    ready(&client_addr).await;
    let before = Client::new(
        &format!("http://{peer_addr}"),
        Some(std::fs::read_to_string(dir.path().join("admin-token")).unwrap()),
    )
    .status()
    .await
    .unwrap();

    let admin_token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let client = Client::new(&format!("http://{client_addr}"), Some(admin_token));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    match client.put(["d", "a", "e", &name], name.clone().into_bytes(), PutOptions::default()).await {
                        Ok(_) => acked.lock().unwrap().push(name),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill().unwrap(); // SIGKILL, in the middle of the stream
    node.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "too few writes before the kill: {}", acked.len());

    let mut node = start(dir.path(), &client_addr, &peer_addr);
    ready(&client_addr).await;
    let listing = client.list("d", "a", "e").await.unwrap();
    let present: std::collections::HashSet<String> = listing.configs.into_iter().map(|c| c.name).collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    for name in acked.iter().step_by(11) {
        let got = client.get(["d", "a", "e", name], false).await.unwrap().unwrap();
        assert_eq!(got.content, name.as_bytes());
    }
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let after = Client::new(&format!("http://{peer_addr}"), Some(token)).status().await.unwrap();
    assert_eq!(after.node_id, before.node_id, "the node id is kept in the data directory");
    assert_eq!(after.cluster_id, before.cluster_id, "a restart never founds a new cluster");
    assert_eq!(after.voters.len(), 1);
    node.kill().unwrap();
    node.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly() {
    let dir = TempDir::new().unwrap();
    let mut node = start(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
    let (client_addr, _) = addresses(dir.path()).await;
    ready(&client_addr).await;
    // SAFETY: sending a signal to our own child process id.
    let sent = unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = tokio::task::spawn_blocking(move || node.wait().unwrap()).await.unwrap();
    assert!(status.success(), "SIGTERM must end the node with exit code 0, got {status:?}");
}

/// A small tmpfs mounted for a test, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = TempDir::new().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount (the tests run as root)");
        assert!(status.success(), "mounting a tmpfs needs root: {status:?}");
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_liveness_and_a_restart_with_space_keeps_every_acknowledged_write() {
    let disk = Tmpfs::mount("48m");
    let data = disk.path().join("data");
    let mut node = start(&data, "127.0.0.1:0", "127.0.0.1:0");
    let (client_addr, _) = addresses(&data).await;
    ready(&client_addr).await;
    let health = || async {
        reqwest::get(format!("http://{client_addr}/healthz")).await.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(health().await, 200);

    // Write 256 KiB configs until the disk is full and Raft stops.
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let client = Client::new(&format!("http://{client_addr}"), Some(token.clone()));
    let mut acked = Vec::new();
    let mut failures = 0;
    for i in 0..2000 {
        let name = format!("c{i}");
        let content = format!("{name}:{}", "x".repeat(256 * 1024)).into_bytes();
        match client.put(["full", "disk", "test", &name], content, PutOptions::default()).await {
            Ok(_) => acked.push(name),
            Err(_) => {
                failures += 1;
                if health().await == 503 || failures > 50 {
                    break;
                }
            }
        }
    }
    assert!(acked.len() > 10, "too few writes fit: {}", acked.len());
    let mut unhealthy = false;
    for _ in 0..100 {
        if health().await == 503 {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unhealthy, "/healthz must fail once Raft stopped on a full disk ({} writes acknowledged)", acked.len());
    node.kill().unwrap();
    node.wait().unwrap();

    // Restart on a copy of the data with room to spare.
    let roomy = TempDir::new().unwrap();
    copy_dir(&data, roomy.path());
    drop(disk);
    let mut node = start(roomy.path(), "127.0.0.1:0", "127.0.0.1:0");
    let (client_addr, _) = addresses(roomy.path()).await;
    ready(&client_addr).await;
    let client = Client::new(&format!("http://{client_addr}"), Some(token));
    for name in &acked {
        let got = client.get(["full", "disk", "test", name], false).await.unwrap();
        let got = got.unwrap_or_else(|| panic!("acknowledged write {name} was lost"));
        assert!(got.content.starts_with(format!("{name}:").as_bytes()));
    }
    let put = client.put(["full", "disk", "test", "after"], b"v".to_vec(), PutOptions::default()).await;
    assert!(put.is_ok(), "the restarted node takes writes again: {put:?}");
    node.kill().unwrap();
    node.wait().unwrap();
}
