//! Applying log entries on the RocksDB state machine: the commands of one entry apply in order,
//! each seeing the ones before it, and all carry the entry's index as their revision and its
//! leader timestamp; every change has exactly one audit record in the same entry; refusals write
//! nothing; retention keeps the newest versions and every version the release uses.

use conflux::command::{Change, Command, CommandBatch, CommandResponse, Level, Origin, ReleaseKind};
use conflux::model::audit::{AuditAction, AuditFilter};
use conflux::model::hierarchy::QuotaUpdate;
use conflux::model::release::{Labels, Percent, Rule};
use conflux::model::{ConfigKey, Format, Namespace};
use conflux::store::{StateMachineStore, Store};
use conflux::types::typ;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use tempfile::TempDir;

fn key(name: &str) -> ConfigKey {
    ConfigKey::new("t", "a", "e", name).expect("valid key")
}

fn command(change: Change) -> Command {
    Command { origin: Origin::new("alice", "req-1"), change }
}

fn put(name: &str, content: &str, expected_version: Option<u64>) -> Command {
    command(Change::WriteVersion {
        key: key(name),
        format: Format::Text,
        content: content.as_bytes().to_vec(),
        message: format!("write {content}"),
        expected_version,
        checked_schema: None,
        format_from_config: false,
    })
}

fn delete(name: &str, expected_version: Option<u64>) -> Command {
    command(Change::DeleteConfig { key: key(name), expected_version })
}

fn entry(index: u64, payload: typ::EntryPayload) -> typ::Entry {
    typ::Entry { log_id: typ::LogId::new(typ::LeaderId { term: 1, node_id: 1 }, index), payload }
}

struct Harness {
    _dir: TempDir,
    store: Store,
    state_machine: StateMachineStore,
    next_index: u64,
}

impl Harness {
    fn new() -> Harness {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let state_machine = store.raft_storage().state_machine;
        Harness { _dir: dir, store, state_machine, next_index: 1 }
    }

    /// Applies one entry holding `commands`, stamped at `time_ms`; returns its answers.
    async fn apply(&mut self, time_ms: u64, commands: Vec<Command>) -> Vec<CommandResponse> {
        let index = self.next_index;
        self.next_index += 1;
        let payload = EntryPayload::Normal(CommandBatch { time_ms, commands });
        let mut answers = self.state_machine.apply_entries(vec![entry(index, payload)]).expect("apply");
        answers.pop().unwrap()
    }

    fn audit_count(&self) -> usize {
        self.store.audit("t", &AuditFilter::default(), None, 1000).unwrap().items.len()
    }
}

#[tokio::test]
async fn commands_of_one_entry_apply_in_order_and_share_its_revision() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut state_machine = store.raft_storage().state_machine;
    let batch = CommandBatch {
        time_ms: 1_700_000_000_000,
        commands: vec![
            put("one", "first", None),
            put("one", "second", Some(1)),
            put("one", "stale", Some(1)),
            delete("two", None),
            put("two", "created", None),
            delete("two", Some(1)),
        ],
    };
    let answers = state_machine
        .apply_entries(vec![entry(1, EntryPayload::Blank), entry(2, EntryPayload::Normal(batch))])
        .expect("apply");

    assert_eq!(answers.len(), 2, "one answer per entry");
    assert!(answers[0].is_empty(), "a blank entry answers nothing");
    assert_eq!(
        answers[1],
        vec![
            CommandResponse::Written { version: 1, revision: 2 },
            CommandResponse::Written { version: 2, revision: 2 },
            CommandResponse::VersionMismatch { current: Some(2) },
            CommandResponse::NotFound { level: Level::Config, name: "t/a/e/two".into() },
            CommandResponse::Written { version: 1, revision: 2 },
            CommandResponse::Deleted { version: 1, revision: 2 },
        ]
    );
    let (record, content) = store.get_config(&key("one")).unwrap().expect("one exists");
    assert_eq!((record.current_version, record.revision, content.as_slice()), (Some(2), 2, &b"second"[..]));
    assert!(store.get_config(&key("two")).unwrap().is_none(), "deleted in the same entry that created it");
    let (applied, _) = state_machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));

    let meta = store.version_meta(&key("one"), 2).unwrap().expect("version 2 kept");
    assert_eq!((meta.author.as_str(), meta.message.as_str()), ("alice", "write second"));
    assert_eq!((meta.created_ms, meta.revision, meta.size), (1_700_000_000_000, 2, 6));
    assert_eq!(meta.checksum, conflux::store::checksum(b"second"));
}

#[tokio::test]
async fn every_change_has_one_audit_record_in_its_entry_and_refusals_have_none() {
    let mut h = Harness::new();
    // The first write creates tenant, app and env: four records, in order, at one revision.
    h.apply(10, vec![put("db", "v1", None)]).await;
    let records = h.store.audit("t", &AuditFilter::default(), None, 100).unwrap().items;
    let actions: Vec<AuditAction> = records.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        vec![AuditAction::TenantCreate, AuditAction::AppCreate, AuditAction::EnvCreate, AuditAction::ConfigWrite]
    );
    assert!(records
        .iter()
        .all(|r| r.revision == 1 && r.time_ms == 10 && r.actor == "alice" && r.request_id == "req-1"));
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!((records[3].before, records[3].after, records[3].resource.as_str()), (None, Some(1), "t/a/e/db"));

    let before = h.audit_count();
    let refused = h.apply(11, vec![put("db", "stale", Some(7)), delete("missing", None)]).await;
    assert!(matches!(refused[0], CommandResponse::VersionMismatch { .. }));
    assert_eq!(h.audit_count(), before, "a refused change leaves no audit record");

    h.apply(12, vec![put("db", "v2", Some(1)), delete("db", Some(2))]).await;
    let records = h.store.audit("t", &AuditFilter::default(), None, 100).unwrap().items;
    let last: Vec<(AuditAction, Option<u64>, Option<u64>)> =
        records.iter().rev().take(2).map(|r| (r.action, r.before, r.after)).collect();
    assert_eq!(last, vec![(AuditAction::ConfigDelete, Some(2), None), (AuditAction::ConfigWrite, Some(1), Some(2))]);
}

#[tokio::test]
async fn retention_keeps_the_newest_versions_and_those_a_release_uses() {
    let mut h = Harness::new();
    h.apply(1, vec![put("db", "v1", None)]).await; // release 1: everyone gets version 1
    for i in 2..=150 {
        h.apply(i, vec![put("db", &format!("v{i}"), None)]).await;
    }
    let record = h.store.config_record(&key("db")).unwrap().unwrap();
    let mut expected: Vec<u64> = vec![1];
    expected.extend(51..=150);
    assert_eq!(record.kept_versions, expected, "the last 100, plus version 1 which release 1 hands out");
    assert!(h.store.version_content(&key("db"), 1).unwrap().is_some());
    assert!(h.store.version_content(&key("db"), 2).unwrap().is_none(), "dropped");
    assert!(h.store.version_meta(&key("db"), 50).unwrap().is_none(), "dropped");
    let page = h.store.versions(&key("db"), None, 1000).unwrap();
    assert_eq!(page.items.len(), 101);
    assert_eq!(page.items[0].version, 150, "newest first");

    // Publish 150: version 1 is no longer pinned and goes with the next write.
    let default = |version| Rule { labels: Labels::new(), version, priority: 0, percent: None };
    let publish = command(Change::SetRelease {
        key: key("db"),
        rules: vec![default(150)],
        expected_release: 1,
        message: String::new(),
        kind: ReleaseKind::Publish,
    });
    assert_eq!(h.apply(200, vec![publish]).await, vec![CommandResponse::Released { release: 2, revision: 151 }]);
    h.apply(201, vec![put("db", "v151", None)]).await;
    let record = h.store.config_record(&key("db")).unwrap().unwrap();
    assert_eq!(record.kept_versions, (52..=151).collect::<Vec<u64>>());
}

#[tokio::test]
async fn releases_are_compare_and_set_and_checked_against_kept_versions() {
    let mut h = Harness::new();
    h.apply(1, vec![put("db", "v1", None), put("db", "v2", None)]).await;
    let gray = vec![
        Rule { labels: [("canary".to_string(), "true".to_string())].into(), version: 2, priority: 10, percent: None },
        Rule { labels: Labels::new(), version: 2, priority: 5, percent: Some(Percent::from_percent(10.0).unwrap()) },
        Rule { labels: Labels::new(), version: 1, priority: 0, percent: None },
    ];
    let set = |rules: Vec<Rule>, expected| {
        command(Change::SetRelease {
            key: key("db"),
            rules,
            expected_release: expected,
            message: "gray".into(),
            kind: ReleaseKind::Set,
        })
    };
    let answers = h.apply(2, vec![set(gray.clone(), 1), set(gray.clone(), 1)]).await;
    assert_eq!(answers[0], CommandResponse::Released { release: 2, revision: 2 });
    assert_eq!(answers[1], CommandResponse::ReleaseMismatch { current: Some(2) }, "the second editor loses");
    let unknown = vec![Rule { labels: Labels::new(), version: 9, priority: 0, percent: None }];
    let refused = h.apply(3, vec![set(unknown, 2)]).await;
    assert!(matches!(&refused[0], CommandResponse::RulesInvalid { detail } if detail.contains('9')), "{refused:?}");
    let record = h.store.config_record(&key("db")).unwrap().unwrap();
    assert_eq!(record.release.as_ref().map(|r| (r.number, r.rules.clone())), Some((2, gray)));
    let history = h.store.releases(&key("db"), None, 10).unwrap().items;
    assert_eq!(history.iter().map(|r| r.number).collect::<Vec<_>>(), vec![2, 1]);
}

#[tokio::test]
async fn quotas_refuse_oversized_content_and_too_many_configs_without_writing() {
    let mut h = Harness::new();
    let quotas = QuotaUpdate { max_config_bytes: Some(4), max_configs: Some(1), max_versions_kept: None };
    let answers = h.apply(1, vec![command(Change::PutTenant { tenant: "t".into(), description: None, quotas })]).await;
    assert_eq!(answers, vec![CommandResponse::Put { created: true, revision: 1 }]);
    let answers = h.apply(2, vec![put("a", "12345", None), put("a", "1234", None), put("b", "1", None)]).await;
    assert_eq!(answers[0], CommandResponse::TooLarge { size: 5, limit: 4 });
    assert_eq!(answers[1], CommandResponse::Written { version: 1, revision: 2 });
    assert!(matches!(answers[2], CommandResponse::QuotaExceeded { .. }), "{:?}", answers[2]);
    assert!(h.store.config_record(&key("b")).unwrap().is_none(), "nothing of b was written");
    assert_eq!(h.store.tenant("t").unwrap().unwrap().configs, 1);
}

/// A write that named no format carries the format its node read from the config; the entry is
/// refused (and the writer checks again) when the config's format at apply differs.
#[tokio::test]
async fn a_write_that_took_the_configs_format_is_refused_if_that_format_changed() {
    let mut h = Harness::new();
    let write = |format: Format, content: &str, format_from_config: bool| {
        command(Change::WriteVersion {
            key: key("c"),
            format,
            content: content.as_bytes().to_vec(),
            message: String::new(),
            expected_version: None,
            checked_schema: None,
            format_from_config,
        })
    };
    // Absent config: its default format is text.
    let answers = h.apply(1, vec![write(Format::Json, "{}", true), write(Format::Text, "t", true)]).await;
    assert_eq!(answers[0], CommandResponse::ChecksOutdated);
    assert_eq!(answers[1], CommandResponse::Written { version: 1, revision: 1 });
    // Made json explicitly; a writer that still saw text is refused, one that saw json is not.
    let answers = h.apply(2, vec![write(Format::Json, "{}", false), write(Format::Text, "t", true)]).await;
    assert_eq!(answers[0], CommandResponse::Written { version: 2, revision: 2 });
    assert_eq!(answers[1], CommandResponse::ChecksOutdated);
    let answers = h.apply(3, vec![write(Format::Json, "[]", true)]).await;
    assert_eq!(answers[0], CommandResponse::Written { version: 3, revision: 3 });
    let record = h.store.config_record(&key("c")).unwrap().unwrap();
    assert_eq!((record.latest_version, record.format), (3, Format::Json), "refusals wrote nothing");
}

#[tokio::test]
async fn deletes_refuse_non_empty_levels_unless_forced_and_keep_the_audit_log() {
    let mut h = Harness::new();
    h.apply(1, vec![put("db", "v1", None), put("cache", "v1", None)]).await;
    let namespace = Namespace::new("t", "a", "e").unwrap();
    let delete_env = |force| command(Change::DeleteEnv { namespace: namespace.clone(), force });
    let refused = h.apply(2, vec![delete_env(false)]).await;
    assert!(matches!(&refused[0], CommandResponse::NotEmpty { detail } if detail.contains("2 config")), "{refused:?}");
    let tenant = h.store.tenant("t").unwrap().unwrap();
    assert_eq!((tenant.apps, tenant.configs), (1, 2));

    assert_eq!(h.apply(3, vec![delete_env(true)]).await, vec![CommandResponse::Done { revision: 3 }]);
    assert!(h.store.env(&namespace).unwrap().is_none());
    assert!(h.store.config_record(&key("db")).unwrap().is_none());
    assert!(h.store.version_content(&key("db"), 1).unwrap().is_none());
    let tenant = h.store.tenant("t").unwrap().unwrap();
    assert_eq!(tenant.configs, 0, "counters follow a forced delete");
    assert_eq!(h.store.app("t", "a").unwrap().unwrap().envs, 0);

    let delete_tenant = |force| command(Change::DeleteTenant { tenant: "t".into(), force });
    assert!(matches!(h.apply(4, vec![delete_tenant(false)]).await[0], CommandResponse::NotEmpty { .. }));
    assert_eq!(h.apply(5, vec![delete_tenant(true)]).await, vec![CommandResponse::Done { revision: 5 }]);
    assert!(h.store.tenant("t").unwrap().is_none());
    assert!(h.store.app("t", "a").unwrap().is_none());
    let last = h.store.audit("t", &AuditFilter::default(), None, 100).unwrap().items.pop().unwrap();
    assert_eq!(last.action, AuditAction::TenantDelete, "the audit log outlives the tenant");

    // Writing again starts over, and version numbers start over with the new config.
    let answers = h.apply(6, vec![put("db", "again", None)]).await;
    assert_eq!(answers, vec![CommandResponse::Written { version: 1, revision: 6 }]);
}

fn with_key(mut command: Command, actor: &str, idempotency_key: &str) -> Command {
    command.origin.actor = actor.to_string();
    command.origin.idempotency_key = Some(idempotency_key.to_string());
    command
}

#[tokio::test]
async fn an_idempotency_key_applies_its_change_once_per_actor_for_a_day() {
    let mut h = Harness::new();
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let first = h.apply(1_000, vec![with_key(put("db", "v1", None), "alice", "k1")]).await;
    assert!(matches!(first[..], [CommandResponse::Written { version: 1, .. }]), "{first:?}");
    // The retry (even in the same entry as another change) answers the same and writes nothing.
    let retry = h.apply(2_000, vec![with_key(put("db", "v1", None), "alice", "k1")]).await;
    assert_eq!(retry, first, "the retry gets the first answer");
    assert_eq!(h.store.versions(&key("db"), None, 1000).unwrap().items.len(), 1, "one version, not two");
    // The same key for a different change is refused; another actor's key is its own.
    let reused = h.apply(3_000, vec![with_key(put("db", "v2", None), "alice", "k1")]).await;
    assert_eq!(reused, [CommandResponse::IdempotencyKeyReused]);
    let bob = h.apply(4_000, vec![with_key(put("db", "v1", None), "bob", "k1")]).await;
    assert!(matches!(bob[..], [CommandResponse::Written { version: 2, .. }]), "{bob:?}");
    // A refusal is not remembered: the retry of a refused change is applied again.
    let stale = h.apply(5_000, vec![with_key(put("db", "v3", Some(1)), "alice", "k2")]).await;
    assert!(matches!(stale[..], [CommandResponse::VersionMismatch { .. }]));
    let fixed = h.apply(6_000, vec![with_key(put("db", "v3", Some(2)), "alice", "k2")]).await;
    assert!(matches!(fixed[..], [CommandResponse::Written { version: 3, .. }]), "{fixed:?}");
    // A day later the key is forgotten (and its records dropped), so it applies again.
    let later = h.apply(1_000 + DAY_MS + 1, vec![with_key(put("db", "v1", None), "alice", "k1")]).await;
    assert!(matches!(later[..], [CommandResponse::Written { version: 4, .. }]), "{later:?}");
    let again = h.apply(1_000 + DAY_MS + 2, vec![with_key(put("db", "v1", None), "alice", "k1")]).await;
    assert_eq!(again, later, "the new answer is remembered in turn");
}
