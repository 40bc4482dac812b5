//! The fault suite: real `conflux serve` processes under a seeded nemesis, clients recording
//! every operation, then a linearizability check of the whole history (`support/linearizability.rs`).
//!
//! Per seed: 3 nodes; 5 clients doing linearizable reads, writes and `If-Match` writes of a few
//! keys through random nodes; a nemesis that, one fault at a time, SIGKILLs a node (restarting it
//! later on its data directory), SIGSTOPs one (SIGCONT later), cuts one off from its peers (the
//! fault proxy), SIGKILLs one and SIGSTOPs another (no majority left), or churns membership:
//! removes a voter (the leader too), wipes it and adds it back as a new member, sometimes
//! SIGKILLing it while it catches up. Nodes snapshot every 100 entries and keep 20 below, so
//! restarted and new nodes catch up by snapshot install. Afterwards every fault is healed and the
//! suite checks that each key's history is linearizable (no acknowledged write lost, no stale or
//! reordered read, no two `If-Match` winners; versions increase one by one), and that every node
//! holds the same content and version of every key.
//!
//! A client's operation whose outcome it never learned (timeout, dropped connection, 5xx) is
//! recorded as returning "never"; a failed read is dropped (it changed nothing). Every written
//! value is unique and the tenant keeps every version, so afterwards the version history settles
//! each unknown write: stored under version v (it took effect, as v) or absent (it never did).
//! An acknowledged write missing from that history fails the seed at once.
//!
//! `FAULT_SEEDS` (comma-separated, default `1,2`; nodes on `--read-policy read-index`),
//! `FAULT_LEASE_SEEDS` (default `3`; nodes on `--read-policy lease`) and `FAULT_SECONDS` (per seed,
//! default 8) choose the run; `scripts/fault-suite.sh N` runs seeds 1..=N, and
//! `FAULT_READ_POLICY=lease scripts/fault-suite.sh N` runs them with lease reads.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/linearizability.rs"]
mod linearizability;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conflux::client::{Client, ClientError, PutOptions};
use conflux::wire::{QuotaSpec, TenantSpec};
use harness::{NodeOptions, TestCluster};
use linearizability::{check, Operation, RegisterInput, RegisterOutput, Verdict, VersionedRegister};

const NODES: usize = 3;
const CLIENTS: usize = 5;
const KEYS: usize = 3;
/// Longest a client waits for an answer; then the outcome is unknown.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// The checker's step budget per key.
const SEARCH_STEPS: u64 = 50_000_000;

/// splitmix64: a small seeded generator, so a seed replays the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn key_path(key: usize) -> [String; 4] {
    ["fault".into(), "app".into(), "prod".into(), format!("k{key}")]
}

fn parts(path: &[String; 4]) -> [&str; 4] {
    [&path[0], &path[1], &path[2], &path[3]]
}

type Op = Operation<RegisterInput, RegisterOutput>;
type Recorded = (usize, Op);

/// One client: random operations on random keys through random nodes until `stop`.
async fn client_loop(id: usize, nodes: Vec<Client>, seed: u64, epoch: Instant, stop: Arc<AtomicBool>) -> Vec<Recorded> {
    let mut rng = Rng(seed ^ ((id as u64) << 32));
    let mut history = Vec::new();
    let mut seen_versions = [0u64; KEYS];
    let mut sequence = 0u64;
    let now = || epoch.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.below(KEYS as u64) as usize;
        let client = &nodes[rng.below(nodes.len() as u64) as usize];
        let path = key_path(key);
        let kind = rng.below(3);
        let called = now();
        if kind == 0 {
            let answer = tokio::time::timeout(OPERATION_TIMEOUT, client.get(parts(&path), false)).await;
            if let Ok(Ok(found)) = answer {
                let seen = found.map(|f| {
                    let value = String::from_utf8_lossy(&f.content).parse::<u64>().expect("contents are numbers");
                    seen_versions[key] = seen_versions[key].max(f.version);
                    (value, f.version)
                });
                let output = Some(RegisterOutput::Seen(seen));
                history.push((key, Operation { input: RegisterInput::Read, output, called, returned: Some(now()) }));
            }
        } else {
            sequence += 1;
            let value = (id as u64 + 1) * 1_000_000 + sequence;
            let expected = (kind == 2 && seen_versions[key] > 0).then_some(seen_versions[key]);
            let input = match expected {
                Some(expected) => RegisterInput::WriteIf { expected, value },
                None => RegisterInput::Write { value },
            };
            let options = PutOptions { format: Some("text"), if_match: expected };
            let write = client.put(parts(&path), value.to_string().into_bytes(), options);
            let output = match tokio::time::timeout(OPERATION_TIMEOUT, write).await {
                Ok(Ok(result)) => {
                    seen_versions[key] = seen_versions[key].max(result.version);
                    Some(RegisterOutput::Written { version: result.version })
                }
                Ok(Err(ClientError::Problem(problem))) if problem.status == 412 => Some(RegisterOutput::Mismatch),
                // Never sent, or refused as a request: it changed nothing.
                Ok(Err(ClientError::Http(error))) if error.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Ok(Err(ClientError::Problem(problem)))
                    if (400..500).contains(&problem.status) && problem.status != 408 =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                _ => None,
            };
            let returned = output.is_some().then(now);
            history.push((key, Operation { input, output, called, returned }));
        }
        tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
    }
    history
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(usize),
    Pause(usize),
    Isolate(usize),
    /// Membership churn: the node leaves the cluster, is wiped, and joins again as a new member.
    Replace(usize),
    /// [`Fault::Replace`], with the new member SIGKILLed once 0–400 ms into its catch-up (which
    /// starts with a snapshot install, at these settings) and restarted on what it had written.
    ReplaceKilledWhileJoining(usize),
    /// Two faults at once: the first node SIGKILLed and the second SIGSTOPped, so no majority is
    /// left until both are healed.
    KillAndPause(usize, usize),
}

/// One fault (or one pair of faults) at a time for `run_for`: it lasts 0.3–1.5 s (a replacement as long as it takes),
/// then a calm 0.2–1 s. Returns the faults, and how many new members caught up by installing a
/// snapshot.
async fn nemesis(cluster: &mut TestCluster, rng: &mut Rng, run_for: Duration) -> (Vec<Fault>, usize) {
    let deadline = Instant::now() + run_for;
    let (mut faults, mut snapshot_joins) = (Vec::new(), 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        let node = rng.below(NODES as u64) as usize;
        let other = (node + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
        let fault = match rng.below(6) {
            0 => Fault::Kill(node),
            1 => Fault::Pause(node),
            2 => Fault::Isolate(node),
            3 => Fault::Replace(node),
            4 => Fault::ReplaceKilledWhileJoining(node),
            _ => Fault::KillAndPause(node, other),
        };
        let lasts = Duration::from_millis(300 + rng.below(1200));
        match fault {
            Fault::Kill(node) => cluster.kill(node),
            Fault::Pause(node) => cluster.set_paused(node, true),
            Fault::Isolate(node) => cluster.partition(&[node]),
            Fault::Replace(node) => snapshot_joins += usize::from(replace(cluster, node, None).await),
            Fault::ReplaceKilledWhileJoining(node) => {
                let kill_after = Duration::from_millis(rng.below(400));
                snapshot_joins += usize::from(replace(cluster, node, Some(kill_after)).await);
            }
            Fault::KillAndPause(killed, paused) => {
                cluster.kill(killed);
                cluster.set_paused(paused, true);
            }
        }
        tokio::time::sleep(lasts).await;
        match fault {
            Fault::Kill(node) => cluster.restart(node).await,
            Fault::Pause(node) => cluster.set_paused(node, false),
            Fault::Isolate(_) => cluster.heal(),
            Fault::Replace(_) | Fault::ReplaceKilledWhileJoining(_) => {}
            Fault::KillAndPause(killed, paused) => {
                cluster.set_paused(paused, false);
                cluster.restart(killed).await;
            }
        }
        faults.push(fault);
    }
    (faults, snapshot_joins)
}

/// Takes node `index` out of the cluster through the leader (a voter removal: joint consensus,
/// possibly removing the leader itself), wipes it, adds the pristine node as a learner, optionally
/// SIGKILLs and restarts it `kill_after` into its catch-up, waits until it has caught up, and
/// makes it a voter again. Clients keep sending to its address throughout. Answers whether the
/// new member (since its last start) caught up by installing a snapshot.
async fn replace(cluster: &mut TestCluster, index: usize, kill_after: Option<Duration>) -> bool {
    let old_id = cluster.nodes[index].node_id;
    eventually_member_change(cluster, &format!("remove node {old_id}"), |admin| async move {
        // A removal that timed out may have happened: what counts is the leader's view after.
        let _ = admin.remove_member(old_id).await;
        matches!(admin.status().await, Ok(s) if !s.voters.contains_key(&old_id) && !s.learners.contains_key(&old_id))
    })
    .await;
    let new_id = cluster.wipe_and_restart(index).await;
    let peer_url = cluster.nodes[index].peer_url.clone();
    let add = |wait: Option<Duration>| {
        let peer_url = peer_url.clone();
        move |admin: Client| {
            let peer_url = peer_url.clone();
            async move { matches!(admin.add_learner(new_id, &peer_url, wait).await, Ok(r) if wait.is_none() || r.caught_up) }
        }
    };
    if let Some(kill_after) = kill_after {
        eventually_member_change(cluster, &format!("add learner {new_id}"), add(None)).await;
        tokio::time::sleep(kill_after).await;
        cluster.kill(index);
        cluster.restart(index).await;
    }
    eventually_member_change(cluster, &format!("learner {new_id} catches up"), add(Some(Duration::from_secs(20))))
        .await;
    let voters: Vec<u64> = cluster.nodes.iter().map(|n| n.node_id).collect();
    eventually_member_change(cluster, &format!("promote {new_id}"), |admin| {
        let voters = voters.clone();
        async move { admin.set_voters(voters).await.is_ok() }
    })
    .await;
    cluster.nodes[index].metric("conflux_snapshots_installed_total", &[]).await > 0.0
}

/// Retries `change` against the current leader's admin API until it reports success: a leader
/// can be deposed mid-call (the fault suite's clients keep the cluster busy), and a change that
/// timed out may or may not have happened, so each change is written to succeed when repeated.
async fn eventually_member_change<F, Fut>(cluster: &TestCluster, what: &str, change: F)
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Not `TestCluster::leader`: a pristine node that is not a member yet knows no leader.
        if let Some(leader) = self_declared_leader(cluster).await {
            if change(cluster.nodes[leader].admin()).await {
                return;
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> =
                (0..cluster.nodes.len()).map(|i| format!("node {i}:\n{}", cluster.log_tail(i, 30))).collect();
            panic!("membership change never succeeded: {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node that says it leads, in the highest term (a deposed leader may not know it yet).
async fn self_declared_leader(cluster: &TestCluster) -> Option<usize> {
    let mut leader: Option<(u64, usize)> = None;
    for index in 0..cluster.nodes.len() {
        if let Some(status) = cluster.status(index).await.filter(|s| s.state == "Leader") {
            leader = leader.max(Some((status.term, index)));
        }
    }
    leader.map(|(_, index)| index)
}

/// Nodes that build a snapshot every 100 entries and keep only 20 below it, so a node down for
/// a second, and every pristine member, catches up by installing a snapshot; and that confirm
/// linearizable reads by `read_policy` (`read-index` or `lease`).
fn snapshotting_often(read_policy: &str) -> NodeOptions {
    let args = ["--snapshot-logs", "100", "--keep-logs", "20", "--read-policy", read_policy];
    NodeOptions { extra_args: args.map(String::from).to_vec() }
}

/// Runs one seed and panics, naming the seed, on any violation.
async fn run_seed(seed: u64, seconds: u64, read_policy: &str) {
    let mut cluster = TestCluster::start(NODES, snapshotting_often(read_policy)).await;
    let clients: Vec<Client> = cluster.nodes.iter().map(|node| node.client()).collect();
    let keep_all = QuotaSpec { max_versions_kept: Some(10_000), ..QuotaSpec::default() };
    let tenant = TenantSpec { quotas: Some(keep_all), ..TenantSpec::default() };
    clients[cluster.leader().await].put_tenant("fault", &tenant).await.expect("tenant keeping every version");
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> =
        (0..CLIENTS).map(|id| tokio::spawn(client_loop(id, clients.clone(), seed, epoch, stop.clone()))).collect();
    let mut rng = Rng(seed);
    let (faults, snapshot_joins) = nemesis(&mut cluster, &mut rng, Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut history: Vec<Recorded> = Vec::new();
    for task in tasks {
        history.extend(task.await.expect("client task"));
    }

    // Healed: every node up and caught up with the leader's log.
    let leader = cluster.leader().await;
    let committed = cluster.status(leader).await.expect("leader status").committed_index;
    cluster.wait_applied(committed).await;
    let mut finals = Vec::new();
    for key in 0..KEYS {
        let path = key_path(key);
        let states: Vec<Option<(Vec<u8>, u64)>> = node_states(&cluster, &path).await;
        assert!(states.windows(2).all(|w| w[0] == w[1]), "seed {seed}: nodes disagree on k{key}: {states:?}");
        let called = epoch.elapsed().as_nanos() as u64;
        let found = clients[leader].get(parts(&path), false).await.expect("final read");
        let seen = found.map(|f| (String::from_utf8_lossy(&f.content).parse::<u64>().expect("number"), f.version));
        let read = Operation {
            input: RegisterInput::Read,
            output: Some(RegisterOutput::Seen(seen)),
            called,
            returned: Some(epoch.elapsed().as_nanos() as u64),
        };
        finals.push((key, read));
    }
    history.extend(finals);

    let acknowledged =
        history.iter().filter(|(_, op)| matches!(op.output, Some(RegisterOutput::Written { .. }))).count();
    let unknown = history.iter().filter(|(_, op)| op.returned.is_none()).count();
    for key in 0..KEYS {
        let of_key: Vec<_> = history.iter().filter(|(k, _)| *k == key).map(|(_, op)| op.clone()).collect();
        let kept = kept_versions(&clients[leader], &key_path(key)).await;
        let of_key = resolve_outcomes(of_key, &kept, seed, key);
        let verdict = check(&VersionedRegister, &of_key, SEARCH_STEPS);
        assert_eq!(
            verdict,
            Verdict::Linearizable,
            "seed {seed}, key k{key}: {} operations, faults {faults:?}",
            of_key.len()
        );
    }
    eprintln!(
        "seed {seed}: {} operations ({acknowledged} acknowledged writes, {unknown} of unknown outcome), faults \
         {faults:?} ({snapshot_joins} new members caught up by snapshot): linearizable",
        history.len(),
    );
}

/// Every version of `path` the cluster holds (all are kept: the tenant keeps 10,000), as
/// written value → version.
async fn kept_versions(client: &Client, path: &[String; 4]) -> HashMap<u64, u64> {
    let current = client.get(parts(path), false).await.expect("final read").map_or(0, |f| f.version);
    let mut kept = HashMap::new();
    for version in 1..=current {
        let stored = client.version(parts(path), version).await.expect("every version is kept");
        let value = stored.content.parse::<u64>().expect("contents are numbers");
        assert!(kept.insert(value, version).is_none(), "value {value} written twice");
    }
    kept
}

/// Settles what each write did from the versions the cluster holds (every written value is
/// unique): an acknowledged write must be there under the version it was told, a write of unknown
/// outcome either is (then it took that version) or never took effect (then it is dropped).
/// A lost or misplaced acknowledged write fails here, before the search.
fn resolve_outcomes(history: Vec<Op>, kept: &HashMap<u64, u64>, seed: u64, key: usize) -> Vec<Op> {
    history
        .into_iter()
        .filter_map(|mut op| {
            let value = match op.input {
                RegisterInput::Read => return Some(op),
                RegisterInput::Write { value } | RegisterInput::WriteIf { value, .. } => value,
            };
            match (op.output, kept.get(&value)) {
                (Some(RegisterOutput::Written { version }), stored) => {
                    assert_eq!(
                        stored,
                        Some(&version),
                        "seed {seed}, k{key}: acknowledged write of {value} lost or moved"
                    );
                    Some(op)
                }
                (Some(RegisterOutput::Mismatch), stored) => {
                    assert_eq!(stored, None, "seed {seed}, k{key}: {value} was refused with 412 yet stored");
                    Some(op)
                }
                (_, Some(version)) => {
                    op.output = Some(RegisterOutput::Written { version: *version });
                    Some(op)
                }
                (_, None) => None,
            }
        })
        .collect()
}

/// Each node's content and version of `path`, read locally (serializable) once it has applied
/// everything.
async fn node_states(cluster: &TestCluster, path: &[String; 4]) -> Vec<Option<(Vec<u8>, u64)>> {
    let mut states = Vec::new();
    for node in &cluster.nodes {
        let found = node.client().get(parts(path), true).await.expect("serializable read");
        states.push(found.map(|f| (f.content, f.version)));
    }
    states
}

fn env_number_list(name: &str, default: &str) -> Vec<u64> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    text.split(',').map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: {s:?} is not a number"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_pauses_partitions_and_membership_churn_every_history_is_linearizable() {
    let seconds = env_number_list("FAULT_SECONDS", "8")[0];
    for seed in env_number_list("FAULT_SEEDS", "1,2") {
        run_seed(seed, seconds, "read-index").await;
    }
}

/// The same nemesis against nodes serving lease reads (`--read-policy lease`): a SIGSTOPped or
/// cut-off leader, or followers killed and restarted under it, must never yield a stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lease_reads_every_history_is_linearizable_too() {
    let seconds = env_number_list("FAULT_SECONDS", "8")[0];
    for seed in env_number_list("FAULT_LEASE_SEEDS", "3") {
        run_seed(seed, seconds, "lease").await;
    }
}
