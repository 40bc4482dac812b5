//! Snapshot correctness on the real store: a snapshot built while non-idempotent commands are
//! being applied reproduces the exact state when installed elsewhere and followed by the rest of
//! the log; and a process killed in the middle of installing a snapshot leaves the old state or
//! the new one, never a mix; a log purge never gets ahead of the state machine (openraft 0.9
//! ran the purge after an install concurrently with the install); and appends are reported
//! durable by the WAL syncer only after they are.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use conflux::command::{Change, Command, CommandBatch, Origin};
use conflux::model::{ConfigKey, Format, Namespace};
use conflux::store::{LogStore, Store};
use conflux::types::{typ, TypeConfig};
use openraft::alias::OneshotOf;
use openraft::async_runtime::Oneshot;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use tempfile::TempDir;

fn put_entry(index: u64, name: &str, content: &str) -> typ::Entry {
    let change = Change::WriteVersion {
        key: ConfigKey::new("t", "a", "e", name).expect("valid key"),
        format: Format::Text,
        content: content.as_bytes().to_vec(),
        message: String::new(),
        expected_version: None,
        checked_schema: None,
        format_from_config: false,
    };
    let command = Command { origin: Origin::new("test", &format!("r{index}")), change };
    typ::Entry {
        log_id: typ::LogId::new(typ::LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(CommandBatch { time_ms: index, commands: vec![command] }),
    }
}

fn namespace() -> Namespace {
    Namespace::new("t", "a", "e").expect("valid namespace")
}

/// Every config in the test namespace: name, current version, content.
fn dump(store: &Store) -> Vec<(String, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_configs(&namespace(), cursor.as_deref(), 1000).expect("list");
        for (name, record) in page.items {
            let key = ConfigKey::new("t", "a", "e", &name).expect("valid key");
            let (_, content) = store.get_config(&key).expect("get").expect("listed config exists");
            out.push((name, record.current_version.unwrap_or(0), content));
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_built_during_non_idempotent_applies_reproduces_the_state() {
    let dir_a = TempDir::new().unwrap();
    let store_a = Store::open(dir_a.path()).unwrap();
    let mut sm_a = store_a.raft_storage().state_machine;
    // 40 keys written 100 times each: every re-apply would bump a version, so any skew between a
    // snapshot's metadata and its data shows up as a wrong version.
    let entries: Vec<typ::Entry> =
        (1..=4000u64).map(|i| put_entry(i, &format!("k{}", i % 40), &format!("value-{i}"))).collect();
    let applier = sm_a.clone();
    let to_apply = entries.clone();
    let apply_task = tokio::spawn(async move {
        for chunk in to_apply.chunks(8) {
            applier.apply_entries(chunk.to_vec()).expect("apply");
            tokio::task::yield_now().await;
        }
    });
    loop {
        let (applied, _) = sm_a.applied_state().await.unwrap();
        if applied.map_or(0, |l| l.index) >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let snapshot = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    apply_task.await.unwrap();
    let snapshot_index = snapshot.meta.last_log_id.expect("snapshot has a log id").index;
    assert!((1000..4000).contains(&snapshot_index), "snapshot must be taken mid-stream, got {snapshot_index}");

    let dir_b = TempDir::new().unwrap();
    let store_b = Store::open(dir_b.path()).unwrap();
    let mut sm_b = store_b.raft_storage().state_machine;
    sm_b.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let (applied_b, _) = sm_b.applied_state().await.unwrap();
    assert_eq!(applied_b.map(|l| l.index), Some(snapshot_index));
    sm_b.apply_entries(entries[snapshot_index as usize..].to_vec()).unwrap();

    let state_a = dump(&store_a);
    assert_eq!(state_a.len(), 40);
    assert!(state_a.iter().all(|(_, version, _)| *version == 100), "each key was written 100 times");
    assert_eq!(state_a, dump(&store_b));
}

#[tokio::test]
async fn installing_a_snapshot_replaces_the_whole_state_and_survives_reopen() {
    let source_dir = TempDir::new().unwrap();
    let source = Store::open(source_dir.path()).unwrap();
    let mut source_sm = source.raft_storage().state_machine;
    source_sm.apply_entries(vec![put_entry(1, "kept", "new")]).unwrap();
    let snapshot = source_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let target_dir = TempDir::new().unwrap();
    {
        let target = Store::open(target_dir.path()).unwrap();
        let mut sm = target.raft_storage().state_machine;
        sm.apply_entries(vec![put_entry(1, "stale", "old"), put_entry(2, "kept", "old")]).unwrap();
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    }
    let reopened = Store::open(target_dir.path()).unwrap();
    assert_eq!(dump(&reopened), vec![("kept".to_string(), 1, b"new".to_vec())]);
    let mut sm = reopened.raft_storage().state_machine;
    let current = sm.get_current_snapshot().await.unwrap().expect("installed snapshot is current");
    assert_eq!(current.meta, snapshot.meta);
}

fn entry_at(index: u64) -> typ::Entry {
    put_entry(index, "after", "x")
}

/// The order openraft 0.9 may run them in: the purge a snapshot allows is issued while the
/// install is still to be written. Written at once, a kill in between would leave a log purged
/// past the state machine, a node openraft refuses to start; so the purge is deferred (openraft
/// sees it done) and written with the first append after the install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_is_written_only_once_the_state_machine_holds_what_it_removes() {
    let snapshot = build_snapshot_of("p").await;
    let upto = snapshot.meta.last_log_id.expect("a snapshot of applied entries");
    let dir = TempDir::new().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.raft_storage().log_store;
        log.purge(upto).await.unwrap();
        let seen = log.get_log_state().await.unwrap();
        assert_eq!((seen.last_purged_log_id, seen.last_log_id), (Some(upto), Some(upto)), "openraft sees it done");
    } // killed before the install was written
    let store = Store::open(dir.path()).unwrap();
    let (mut log, mut sm) = (store.raft_storage().log_store, store.raft_storage().state_machine);
    let restarted = log.get_log_state().await.unwrap();
    assert_eq!(restarted.last_purged_log_id, None, "a purge past the state machine was written");
    assert_eq!(sm.applied_state().await.unwrap().0, None);

    log.purge(upto).await.unwrap();
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let next = entry_at(upto.index + 1);
    append_and_wait(&mut log, vec![next.clone()]).await;
    drop((log, sm, store));

    let store = Store::open(dir.path()).unwrap();
    let mut log = store.raft_storage().log_store;
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(upto), Some(next.log_id)));
}

/// Appends through openraft's path and waits for the WAL syncer to report the entries durable.
async fn append_and_wait(log: &mut LogStore, entries: Vec<typ::Entry>) {
    let (flushed, reported) = OneshotOf::<TypeConfig>::channel();
    log.append(entries, IOFlushed::signal(flushed)).await.unwrap();
    let reported = tokio::time::timeout(Duration::from_secs(10), reported).await;
    reported.expect("the WAL syncer reports within 10 s").unwrap().unwrap();
}

/// An append returns at once, its entries readable (the leader replicates them meanwhile); the
/// WAL syncer reports them durable afterwards, appends queued during a sync sharing the next one,
/// each reported. A vote saved while appends wait for their report does not lose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_readable_at_once_and_reported_durable_by_the_wal_syncer_in_order() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.raft_storage().log_store;
    let mut reports = Vec::new();
    for index in 1..=50 {
        let (flushed, reported) = OneshotOf::<TypeConfig>::channel();
        log.append([entry_at(index)], IOFlushed::signal(flushed)).await.unwrap();
        let read = log.try_get_log_entries(index..=index).await.unwrap();
        assert_eq!(read.len(), 1, "entry {index} is readable before it is reported durable");
        reports.push(reported);
    }
    log.save_vote(&typ::Vote::new_committed(2, 1)).await.unwrap();
    for (i, reported) in reports.into_iter().enumerate() {
        let reported = tokio::time::timeout(Duration::from_secs(10), reported).await;
        reported.unwrap_or_else(|_| panic!("append {} was never reported", i + 1)).unwrap().unwrap();
    }
    drop((log, store));
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.raft_storage().log_store;
    assert_eq!(log.get_log_state().await.unwrap().last_log_id.map(|id| id.index), Some(50));
    assert_eq!(log.read_vote().await.unwrap(), Some(typ::Vote::new_committed(2, 1)));
}

const CHILD_DIR_ENV: &str = "CONFLUX_TEST_SNAPSHOT_INSTALL_DIR";
const SNAPSHOT_KEYS: u64 = 3000;

async fn build_snapshot_of(prefix: &str) -> typ::Snapshot {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.raft_storage().state_machine;
    let padding = prefix.repeat(1000);
    let entries: Vec<typ::Entry> =
        (1..=SNAPSHOT_KEYS).map(|i| put_entry(i, &format!("{prefix}{i}"), &padding)).collect();
    sm.apply_entries(entries).unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
}

fn save_snapshot(dir: &Path, name: &str, snapshot: typ::Snapshot) {
    std::fs::write(dir.join(format!("{name}.meta")), serde_json::to_vec(&snapshot.meta).unwrap()).unwrap();
    std::fs::write(dir.join(format!("{name}.data")), snapshot.snapshot.into_inner()).unwrap();
}

fn load_snapshot(dir: &Path, name: &str) -> (typ::SnapshotMeta, Vec<u8>) {
    let meta = serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.meta"))).unwrap()).unwrap();
    (meta, std::fs::read(dir.join(format!("{name}.data"))).unwrap())
}

/// The child process: installs A, B, A, B, ... until killed, printing `begin N` before and
/// `done N` after install N (snapshot A when N is even), so the parent knows where the kill landed.
fn install_forever(work: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&work.join("store")).unwrap();
        let mut sm = store.raft_storage().state_machine;
        let snapshots = [load_snapshot(work, "a"), load_snapshot(work, "b")];
        for install in 0usize.. {
            let (meta, data) = &snapshots[install % 2];
            println!("begin {install}");
            sm.install_snapshot(meta, std::io::Cursor::new(data.clone())).await.unwrap();
            println!("done {install}");
        }
    });
}

/// Where a kill landed, from the child's last progress line.
enum KilledAt {
    /// Inside an install: the state must be the old snapshot or the new one, whole.
    DuringInstall,
    /// After install N finished and before the next began: the state must be snapshot N.
    Between(usize),
}

fn snapshot_name(install: usize) -> &'static str {
    if install.is_multiple_of(2) {
        "a"
    } else {
        "b"
    }
}

#[test]
fn a_process_killed_while_installing_a_snapshot_keeps_old_or_new_state() {
    if let Ok(work) = std::env::var(CHILD_DIR_ENV) {
        install_forever(Path::new(&work));
        return;
    }
    let work = TempDir::new().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        save_snapshot(work.path(), "a", build_snapshot_of("a").await);
        save_snapshot(work.path(), "b", build_snapshot_of("b").await);
    });
    let exe = std::env::current_exe().unwrap();
    let mut kills_inside_an_install = 0;
    for round in 0..20u64 {
        let mut child = Process::new(&exe)
            .args(["--exact", "a_process_killed_while_installing_a_snapshot_keeps_old_or_new_state", "--nocapture"])
            .env(CHILD_DIR_ENV, work.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
        // Wait until B has been installed once, so the kill lands in the alternation.
        assert!(lines.any(|l| l == "done 1"), "round {round}: the child never installed B");
        std::thread::sleep(Duration::from_millis(7 * round % 60 + 1));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = lines.filter(|l| l.starts_with("begin ") || l.starts_with("done ")).last();
        let killed_at = match last.as_deref().and_then(|l| l.split_once(' ')) {
            Some(("begin", _)) => KilledAt::DuringInstall,
            Some((_, n)) => KilledAt::Between(n.parse().unwrap()),
            None => KilledAt::Between(1),
        };

        let store = Store::open(&work.path().join("store")).unwrap();
        let state = dump(&store);
        let prefix = if state.first().is_some_and(|(name, _, _)| name.starts_with('b')) { "b" } else { "a" };
        assert_eq!(state.len() as u64, SNAPSHOT_KEYS, "round {round}: a partial install is visible");
        let content = prefix.repeat(1000).into_bytes();
        assert!(
            state.iter().all(|(name, _, c)| name.starts_with(prefix) && *c == content),
            "round {round}: state mixes snapshots"
        );
        if let KilledAt::Between(install) = killed_at {
            assert_eq!(prefix, snapshot_name(install), "round {round}: a finished install was lost");
        } else {
            kills_inside_an_install += 1;
        }
        drop(store);
        if kills_inside_an_install >= 3 {
            break;
        }
    }
    assert!(kills_inside_an_install > 0, "no kill landed inside an install; the test proved nothing");
}
