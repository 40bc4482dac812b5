//! Applying log entries on the RocksDB state machine: the commands of one entry (a batch of
//! concurrent client writes) apply in order, each seeing the ones before it, and all carry the
//! entry's index as their revision; blank entries answer nothing.

use conflux::command::{Command, CommandBatch, CommandResponse};
use conflux::model::{ConfigKey, Format};
use conflux::store::Store;
use conflux::types::{typ, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use tempfile::TempDir;

fn key(name: &str) -> ConfigKey {
    ConfigKey::new("t", "a", "e", name).expect("valid key")
}

fn put(name: &str, content: &str, expected_version: Option<u64>) -> Command {
    Command::Put { key: key(name), format: Format::Text, content: content.as_bytes().to_vec(), expected_version }
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> typ::Entry {
    openraft::Entry::<TypeConfig> { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }
}

#[tokio::test]
async fn commands_of_one_entry_apply_in_order_and_share_its_revision() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut state_machine = store.raft_storage().state_machine;
    let batch = CommandBatch(vec![
        put("one", "first", None),
        put("one", "second", Some(1)),
        put("one", "stale", Some(1)),
        Command::Delete { key: key("two"), expected_version: None },
        put("two", "created", None),
        Command::Delete { key: key("two"), expected_version: Some(1) },
    ]);
    let answers = state_machine
        .apply(vec![entry(1, EntryPayload::Blank), entry(2, EntryPayload::Normal(batch))])
        .await
        .expect("apply");

    assert_eq!(answers.len(), 2, "one answer per entry");
    assert!(answers[0].is_empty(), "a blank entry answers nothing");
    assert_eq!(
        answers[1],
        vec![
            CommandResponse::Written { version: 1, revision: 2 },
            CommandResponse::Written { version: 2, revision: 2 },
            CommandResponse::VersionMismatch { current: Some(2) },
            CommandResponse::NotFound,
            CommandResponse::Written { version: 1, revision: 2 },
            CommandResponse::Deleted { version: 1, revision: 2 },
        ]
    );
    let (record, content) = store.get_config(&key("one")).unwrap().expect("one exists");
    assert_eq!((record.current_version, record.revision, content.as_slice()), (Some(2), 2, &b"second"[..]));
    assert!(store.get_config(&key("two")).unwrap().is_none(), "deleted in the same entry that created it");
    let (applied, _) = state_machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
}
