//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`: realistic
//! bodies (bincode of real peer requests and replies, stored records as the store encodes them,
//! sample contents of each format, client requests and JSON bodies), each behind the selector
//! byte its target reads. Run by `scripts/fuzz.sh --seed`; not a fuzz target.
//!
//! Usage: `seed_corpus <corpus dir>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use conflux::command::{Change, Command, CommandBatch, CommandResponse, Level, Origin, ReleaseKind};
use conflux::model::access::{Revocation, Role, Scope, TokenRecord};
use conflux::model::audit::{AuditAction, AuditRecord};
use conflux::model::config::{Release, ReleaseAction, VersionMeta};
use conflux::model::hierarchy::{AppRecord, EnvRecord, LevelInfo, QuotaUpdate, Quotas, TenantRecord};
use conflux::model::release::{Labels, Percent, Rule};
use conflux::model::{ConfigKey, ConfigRecord, Format, Namespace};
use conflux::service::membership::{JoinCluster, MembershipChange, MembershipOutcome};
use conflux::service::watchers::WatchersQuery;
use conflux::service::Error;
use conflux::types::{typ, PeerNode, TypeConfig};
use conflux::watch::presence::{Presence, Who};
use conflux::wire;
use openraft::{EntryPayload, Membership, StoredMembership};
use serde::Serialize;

// librocksdb-sys links the C++ runtime only when it compiles RocksDB itself; with the prebuilt
// RocksDB scripts/fuzz.sh links, only libFuzzer brings it, and this binary has no libFuzzer.
#[link(name = "stdc++")]
extern "C" {}

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
    }

    /// The selector byte, then the bincode of `value`.
    fn bincode<T: Serialize>(&self, target: &str, name: &str, selector: u8, value: &T) {
        let mut bytes = vec![selector];
        bytes.extend(bincode::serialize(value).expect("encode a seed"));
        self.write(target, name, &bytes);
    }

    fn text(&self, target: &str, name: &str, selector: Option<u8>, text: &str) {
        let mut bytes: Vec<u8> = selector.into_iter().collect();
        bytes.extend_from_slice(text.as_bytes());
        self.write(target, name, &bytes);
    }
}

fn key() -> ConfigKey {
    ConfigKey::new("acme", "shop", "prod", "db.yaml").expect("a valid key")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn rules() -> Vec<Rule> {
    vec![
        Rule {
            labels: labels(&[("zone", "eu-1")]),
            version: 3,
            priority: 20,
            percent: Some(Percent::from_percent(12.5).unwrap()),
        },
        Rule { labels: labels(&[("canary", "true")]), version: 3, priority: 10, percent: None },
        Rule { labels: Labels::new(), version: 2, priority: 0, percent: None },
    ]
}

fn origin() -> Origin {
    Origin::new("token:0123456789abcdef", "req-7f3a")
}

fn commands() -> Vec<(&'static str, Command)> {
    let changes = vec![
        (
            "put-tenant",
            Change::PutTenant {
                tenant: "acme".into(),
                description: Some("Acme Corp".into()),
                quotas: QuotaUpdate {
                    max_config_bytes: Some(65536),
                    max_configs: Some(500),
                    max_versions_kept: Some(20),
                },
            },
        ),
        ("delete-tenant", Change::DeleteTenant { tenant: "acme".into(), force: true }),
        ("put-app", Change::PutApp { tenant: "acme".into(), app: "shop".into(), description: None }),
        ("delete-app", Change::DeleteApp { tenant: "acme".into(), app: "shop".into(), force: false }),
        (
            "put-env",
            Change::PutEnv {
                namespace: Namespace::new("acme", "shop", "prod").unwrap(),
                description: Some("production".into()),
            },
        ),
        ("delete-env", Change::DeleteEnv { namespace: Namespace::new("acme", "shop", "prod").unwrap(), force: false }),
        (
            "write-json",
            Change::WriteVersion {
                key: key(),
                format: Format::Json,
                content: br#"{"pool": {"size": 10, "timeout_ms": 2500}, "hosts": ["db1", "db2"]}"#.to_vec(),
                message: "raise pool".into(),
                expected_version: Some(2),
                checked_schema: Some("9f86d081884c7d65".into()),
                format_from_config: false,
            },
        ),
        (
            "write-yaml",
            Change::WriteVersion {
                key: key(),
                format: Format::Yaml,
                content: b"pool:\n  size: 10\nhosts: [db1, db2]\n".to_vec(),
                message: String::new(),
                expected_version: None,
                checked_schema: None,
                format_from_config: false,
            },
        ),
        (
            "write-toml",
            Change::WriteVersion {
                key: key(),
                format: Format::Toml,
                content: b"[pool]\nsize = 10\n".to_vec(),
                message: String::new(),
                expected_version: None,
                checked_schema: None,
                format_from_config: false,
            },
        ),
        (
            "write-properties",
            Change::WriteVersion {
                key: key(),
                format: Format::Properties,
                content: b"pool.size=10\nhosts=db1,db2\n".to_vec(),
                message: String::new(),
                expected_version: None,
                checked_schema: None,
                format_from_config: false,
            },
        ),
        ("delete-config", Change::DeleteConfig { key: key(), expected_version: Some(3) }),
        (
            "set-schema",
            Change::SetSchema {
                key: key(),
                schema: Some(br#"{"type":"object","required":["pool"]}"#.to_vec()),
                checksum: Some("abc".into()),
            },
        ),
        ("clear-schema", Change::SetSchema { key: key(), schema: None, checksum: None }),
        (
            "set-release",
            Change::SetRelease {
                key: key(),
                rules: rules(),
                expected_release: 4,
                message: "gray 12.5% of eu-1".into(),
                kind: ReleaseKind::Set,
            },
        ),
        (
            "rollback",
            Change::SetRelease {
                key: key(),
                rules: rules()[2..].to_vec(),
                expected_release: 5,
                message: String::new(),
                kind: ReleaseKind::Rollback { to: 3 },
            },
        ),
        (
            "create-token",
            Change::CreateToken {
                id: "0123456789abcdef".into(),
                name: "ci deploy".into(),
                role: Role::Publisher,
                scope: Scope::parse("acme/shop").unwrap(),
                secret_sha256: [7; 32],
                ttl_ms: Some(86_400_000),
            },
        ),
        ("revoke-token", Change::RevokeToken { id: "0123456789abcdef".into() }),
    ];
    changes.into_iter().map(|(name, change)| (name, Command { origin: origin(), change })).collect()
}

fn log_id(term: u64, index: u64) -> typ::LogId {
    typ::LogId::new(typ::LeaderId { term, node_id: 1 }, index)
}

fn membership() -> Membership<u64, PeerNode> {
    let nodes: BTreeMap<u64, PeerNode> =
        (1..=4).map(|id| (id, PeerNode { peer_url: format!("http://10.0.0.{id}:7001") })).collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).expect("every voter has a node")
}

fn snapshot_pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    let record = ConfigRecord {
        format: Format::Yaml,
        current_version: Some(3),
        latest_version: 3,
        revision: 42,
        kept_versions: vec![1, 2, 3],
        release: None,
        latest_release: 0,
        schema_checksum: None,
    };
    vec![
        (b"c\0acme\0shop\0prod\0db.yaml".to_vec(), bincode::serialize(&record).unwrap()),
        ([&b"v\0acme\0shop\0prod\0db.yaml\0"[..], &3u64.to_be_bytes()].concat(), b"pool:\n  size: 10\n".to_vec()),
    ]
}

fn snapshot_meta() -> typ::SnapshotMeta {
    openraft::SnapshotMeta {
        last_log_id: Some(log_id(2, 40)),
        last_membership: StoredMembership::new(Some(log_id(1, 3)), membership()),
    }
}

/// A snapshot chunk's metadata: the snapshot's, with the id the chunked transport names it by.
fn chunk_meta() -> openraft_legacy::network_v1::SnapshotMeta<TypeConfig> {
    let meta = snapshot_meta();
    openraft_legacy::network_v1::SnapshotMeta {
        last_log_id: meta.last_log_id,
        last_membership: meta.last_membership,
        snapshot_id: "2-1-40-17".into(),
    }
}

fn peer_raft(seeds: &Seeds) {
    let t = "peer_raft";
    let batch = CommandBatch { time_ms: 1_764_000_000_000, commands: commands().into_iter().map(|(_, c)| c).collect() };
    let entries: Vec<typ::Entry> = vec![
        openraft::Entry { log_id: log_id(2, 6), payload: EntryPayload::Blank },
        openraft::Entry { log_id: log_id(2, 7), payload: EntryPayload::Normal(batch) },
        openraft::Entry { log_id: log_id(2, 8), payload: EntryPayload::Membership(membership()) },
    ];
    let vote = typ::Vote::new_committed(2, 1);
    let append =
        typ::AppendEntriesRequest { vote, prev_log_id: Some(log_id(2, 5)), entries, leader_commit: Some(log_id(2, 5)) };
    seeds.bincode(t, "append", 0, &append);
    let heartbeat = typ::AppendEntriesRequest {
        vote,
        prev_log_id: Some(log_id(2, 8)),
        entries: vec![],
        leader_commit: Some(log_id(2, 8)),
    };
    seeds.bincode(t, "heartbeat", 0, &heartbeat);
    seeds.bincode(t, "vote", 1, &typ::VoteRequest::new(typ::Vote::new(3, 2), Some(log_id(2, 8))));
    let data = bincode::serialize(&snapshot_pairs()).unwrap();
    let chunk = typ::InstallSnapshotRequest { vote, meta: chunk_meta(), offset: 0, data, done: true };
    seeds.bincode(t, "snapshot", 2, &chunk);
    let ok: Result<typ::AppendEntriesResponse, typ::RaftError> = Ok(openraft::raft::AppendEntriesResponse::Success);
    seeds.bincode(t, "append-reply", 3, &ok);
    let higher: Result<typ::AppendEntriesResponse, typ::RaftError> =
        Ok(openraft::raft::AppendEntriesResponse::HigherVote(typ::Vote::new(4, 3)));
    seeds.bincode(t, "append-reply-higher", 3, &higher);
    let granted: Result<typ::VoteResponse, typ::RaftError> = Ok(openraft::raft::VoteResponse {
        vote: typ::Vote::new(3, 2),
        vote_granted: true,
        last_log_id: Some(log_id(2, 8)),
    });
    seeds.bincode(t, "vote-reply", 4, &granted);
    let installed: Result<typ::InstallSnapshotResponse, typ::RaftError<typ::InstallSnapshotError>> =
        Ok(openraft_legacy::network_v1::InstallSnapshotResponse { vote });
    seeds.bincode(t, "snapshot-reply", 5, &installed);
    // Three chunks of one snapshot: 0..4096, 4096..8192 (done).
    let mut chunks = vec![6u8];
    for (offset, done) in [(0u64, 0u8), (4096, 0), (4096, 0), (8192, 0x80)] {
        chunks.push(1);
        chunks.extend_from_slice(&offset.to_le_bytes());
        chunks.extend_from_slice(&4096u32.to_le_bytes());
        chunks.push(done);
    }
    seeds.write(t, "chunks", &chunks);
}

fn peer_requests(seeds: &Seeds) {
    let t = "peer_requests";
    for (name, command) in commands() {
        seeds.bincode(t, &format!("write-{name}"), 0, &command);
    }
    let batch =
        CommandBatch { time_ms: 1_764_000_000_000, commands: commands().into_iter().take(5).map(|(_, c)| c).collect() };
    seeds.bincode(t, "batch", 1, &batch);
    seeds.bincode(
        t,
        "add-learner",
        2,
        &MembershipChange::AddLearner { node_id: 4, peer_url: "http://10.0.0.4:7001".into(), wait_millis: 30_000 },
    );
    seeds.bincode(t, "set-voters", 2, &MembershipChange::SetVoters { voters: BTreeSet::from([1, 2, 4]) });
    seeds.bincode(t, "remove", 2, &MembershipChange::Remove { node_id: 3 });
    seeds.bincode(t, "join", 3, &JoinCluster { cluster_id: format!("{:032x}", 0x5eed_u128 << 64 | 0xc0ff_ee) });
    let query = WatchersQuery { key: ConfigKey::new("t", "a", "e", "c").unwrap(), after: None, limit: 100 };
    seeds.bincode(t, "watchers", 4, &query);
    let written: Result<CommandResponse, Error> = Ok(CommandResponse::Written { version: 4, revision: 43 });
    seeds.bincode(t, "write-reply", 5, &written);
    let missing: Result<CommandResponse, Error> =
        Ok(CommandResponse::NotFound { level: Level::Env, name: "acme/shop/prod".into() });
    seeds.bincode(t, "write-reply-not-found", 5, &missing);
    let no_leader: Result<CommandResponse, Error> = Err(Error::NoLeader);
    seeds.bincode(t, "write-reply-no-leader", 5, &no_leader);
    let membership = wire::Membership {
        voters: (1..=3).map(|id| (id, format!("http://10.0.0.{id}:7001"))).collect(),
        learners: BTreeMap::from([(4, "http://10.0.0.4:7001".to_string())]),
        log_index: 9,
    };
    let changed: Result<MembershipOutcome, Error> = Ok(MembershipOutcome::Changed(membership));
    seeds.bincode(t, "membership-reply", 6, &changed);
    let index: Result<u64, Error> = Ok(43);
    seeds.bincode(t, "read-index-reply", 7, &index);
    let presence = Presence::new(2);
    let key = ConfigKey::new("t", "a", "e", "c").unwrap();
    presence.join(&key, &Who::new(Some("pod-1"), 1), &labels(&[("zone", "eu-1")]), 3);
    presence.join(&key, &Who::new(None, 2), &Labels::new(), 2);
    let page = presence.page(&key, None, 10);
    seeds.bincode(t, "watchers-pages", 8, &(1u16, vec![page.clone(), page]));
}

fn store_records(seeds: &Seeds) {
    let t = "store_records";
    let release = Release {
        number: 5,
        rules: rules(),
        action: ReleaseAction::Set,
        author: "token:0123456789abcdef".into(),
        message: "gray".into(),
        created_ms: 1_764_000_000_000,
        revision: 41,
    };
    let record = ConfigRecord {
        format: Format::Yaml,
        current_version: Some(3),
        latest_version: 3,
        revision: 42,
        kept_versions: vec![1, 2, 3],
        release: Some(release.clone()),
        latest_release: 5,
        schema_checksum: Some("9f86d081".into()),
    };
    seeds.bincode(t, "config-record", 0, &record);
    let meta = VersionMeta {
        version: 3,
        format: Format::Yaml,
        author: "alice".into(),
        message: "raise pool".into(),
        created_ms: 1_764_000_000_000,
        size: 27,
        checksum: "9f86d081884c7d65".into(),
        revision: 42,
    };
    seeds.bincode(t, "version-meta", 1, &meta);
    seeds.bincode(t, "release", 2, &release);
    let info =
        LevelInfo { description: "Acme".into(), created_revision: 1, created_ms: 1_764_000_000_000, revision: 40 };
    seeds.bincode(t, "tenant", 3, &TenantRecord { info: info.clone(), quotas: Quotas::default(), apps: 2, configs: 7 });
    seeds.bincode(t, "app", 4, &AppRecord { info: info.clone(), envs: 3, configs: 7 });
    seeds.bincode(t, "env", 5, &EnvRecord { info, configs: 7 });
    let token = TokenRecord {
        id: "0123456789abcdef".into(),
        name: "ci".into(),
        role: Role::Editor,
        scope: Scope::parse("acme/shop/prod").unwrap(),
        secret_sha256: [9; 32],
        created_ms: 1,
        created_by: "bootstrap-admin".into(),
        expires_ms: Some(2),
        revoked: Some(Revocation { time_ms: 3, by: "token:fedcba9876543210".into() }),
    };
    seeds.bincode(t, "token", 6, &token);
    let audit = AuditRecord {
        revision: 42,
        seq: 1,
        time_ms: 1_764_000_000_000,
        actor: "alice".into(),
        action: AuditAction::ConfigWrite,
        resource: "acme/shop/prod/db.yaml".into(),
        before: Some(2),
        after: Some(3),
        request_id: "req-1".into(),
    };
    seeds.bincode(t, "audit", 7, &audit);
    let batch =
        CommandBatch { time_ms: 1_764_000_000_000, commands: commands().into_iter().take(3).map(|(_, c)| c).collect() };
    let entry: typ::Entry = openraft::Entry { log_id: log_id(2, 7), payload: EntryPayload::Normal(batch) };
    seeds.bincode(t, "log-entry", 8, &entry);
    let entry: typ::Entry = openraft::Entry { log_id: log_id(2, 8), payload: EntryPayload::Membership(membership()) };
    seeds.bincode(t, "log-entry-membership", 8, &entry);
    seeds.bincode(t, "vote", 9, &typ::Vote::new_committed(2, 1));
    seeds.bincode(t, "log-id", 10, &Some(log_id(2, 7)));
    seeds.bincode(t, "membership", 11, &StoredMembership::new(Some(log_id(1, 3)), membership()));
    seeds.bincode(t, "snapshot-payload", 12, &snapshot_pairs());
    seeds.bincode(t, "snapshot", 13, &(snapshot_meta(), bincode::serialize(&snapshot_pairs()).unwrap()));
    seeds.write(t, "keys", b"\x0eacme\xffshop\xffprod\xffdb.yaml\xffacme2");
}

const JSON: &str = r#"{"pool": {"size": 10, "timeout_ms": 2500, "ratio": 0.75}, "hosts": ["db1", "db2"], "tls": true, "note": null, "name": "caf\u00e9 \ud83d\ude00"}"#;
const YAML: &str = "# database\npool:\n  size: 10\n  timeout_ms: 2500\nhosts:\n  - db1\n  - db2\nanchors:\n  base: &base {a: 1}\n  derived:\n    <<: *base\n    b: !!str 2\nmulti: |\n  line one\n  line two\n";
const TOML: &str = "title = \"shop\"\n[pool]\nsize = 10\ntimeout = 2.5\nstarted = 1979-05-27T07:32:00Z\n[[hosts]]\nname = \"db1\"\n[[hosts]]\nname = \"db2\"\n";
const PROPERTIES: &str = "# comment\npool.size=10\npool.timeout_ms : 2500\nhosts = db1,\\\n  db2\nunicode=caf\\u00e9\n! bang comment\nempty=\n";

fn content_format(seeds: &Seeds) {
    let t = "content_format";
    for (selector, name, text) in [
        (0u8, "json", JSON),
        (1, "yaml", YAML),
        (2, "toml", TOML),
        (3, "properties", PROPERTIES),
        (4, "text", "plain text\nsecond line\n"),
    ] {
        seeds.text(t, name, Some(selector), text);
        let changed = text.replace("10", "12").replace("db2", "db3");
        seeds.text(t, &format!("{name}-diff"), Some(0x80 | selector), &format!("{text}\0{changed}"));
    }
    seeds.text(t, "deep-json", Some(0), &format!("{}{}", "[".repeat(70), "]".repeat(70)));
    seeds.text(t, "deep-yaml", Some(1), &format!("{}1{}", "[".repeat(70), "]".repeat(70)));
    seeds.text(t, "bom-json", Some(0), "\u{feff}{\"a\": 1}");
    seeds.text(t, "name", Some(0x40), "YAML");
    seeds.text(t, "media-type", Some(0x40), "application/json; charset=utf-8");
}

fn schema(seeds: &Seeds) {
    let schema = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","required":["pool"],"properties":{"pool":{"type":"object","properties":{"size":{"type":"integer","minimum":1,"maximum":100},"timeout_ms":{"type":"integer"}},"additionalProperties":false},"hosts":{"type":"array","items":{"type":"string","pattern":"^db[0-9]+$"},"uniqueItems":true},"tls":{"type":"boolean"}},"$defs":{"port":{"type":"integer","minimum":1,"maximum":65535}}}"#;
    seeds.text("schema", "object", None, &format!("{schema}\0{JSON}"));
    seeds.text(
        "schema",
        "violations",
        None,
        &format!("{schema}\0{{\"pool\":{{\"size\":1000,\"x\":1}},\"hosts\":[\"web\",\"web\"]}}"),
    );
    let composed = r#"{"oneOf":[{"type":"string","format":"email"},{"type":"array","minItems":2,"contains":{"const":3}}],"if":{"type":"string"},"then":{"maxLength":20},"else":{"not":{"type":"null"}}}"#;
    seeds.text("schema", "composed", None, &format!("{composed}\0[1,2,3]"));
    seeds.text("schema", "ref", None, "{\"$ref\":\"#/$defs/a\",\"$defs\":{\"a\":{\"enum\":[1,\"x\",null]}}}\0\"x\"");
}

fn client_request(seeds: &Seeds) {
    let t = "client_request";
    let cases = [
        ("read", "/api/v1/configs/acme/shop/prod/db.yaml?labels=zone=eu-1,canary=true&client_id=pod-1@eu&consistency=serializable&min_revision=42\n\"3\"\n\"3\", W/\"4\"\nacme/shop"),
        ("listing", "/api/v1/tenants/acme/apps/shop/envs/prod?limit=50&cursor=db.yaml&dry_run=true\nW/\"3\"\n*\nBearer cfx_0123456789abcdef_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("audit-cursor", "/api/v1/configs/acme/shop/prod/db.yaml?cursor=42.1&limit=1000\n\"r5\"\n\nzone=eu-1,tier=gold"),
        ("version", "/api/v1/configs/acme/shop/prod/db.yaml/versions/18446744073709551615\n\n\n*"),
        ("percent-encoded", "/api/v1/configs/acme/sh%6Fp/pr%00od/db%2Fyaml?labels=a%3Db&limit=%31\nr3\n\npod-1@eu:zone"),
    ];
    for (name, text) in cases {
        seeds.text(t, name, None, text);
    }
}

fn client_json(seeds: &Seeds) {
    let t = "client_json";
    let watch = wire::WatchRequest {
        tenant: "acme".into(),
        app: "shop".into(),
        env: "prod".into(),
        configs: Some(vec!["db.yaml".into(), "feature-flags".into()]),
        labels: labels(&[("zone", "eu-1")]),
        client_id: Some("pod-1@eu".into()),
        known: BTreeMap::from([
            ("db.yaml".to_string(), wire::Held::Exact { version: 3, checksum: Some("sha256:9f86".into()) }),
            ("feature-flags".to_string(), wire::Held::Version(0)),
        ]),
        since_revision: 42,
        timeout_ms: Some(30_000),
        inline_max_bytes: Some(65536),
        progress_ms: Some(5000),
    };
    seeds.text(t, "watch", Some(0), &serde_json::to_string(&watch).unwrap());
    seeds.text(t, "watch-env", Some(0), r#"{"tenant":"acme","app":"shop","env":"prod"}"#);
    let spec = wire::ReleaseSpec {
        rules: vec![
            wire::Rule { labels: labels(&[("zone", "eu-1")]), version: 3, priority: 20, percent: Some(12.5) },
            wire::Rule { labels: Labels::new(), version: 2, priority: 0, percent: None },
        ],
        message: Some("gray".into()),
    };
    seeds.text(t, "release", Some(1), &serde_json::to_string(&spec).unwrap());
}

fn main() {
    let root: PathBuf =
        std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| Path::new("corpus").to_path_buf());
    let seeds = Seeds { root };
    peer_raft(&seeds);
    peer_requests(&seeds);
    store_records(&seeds);
    content_format(&seeds);
    schema(&seeds);
    client_request(&seeds);
    client_json(&seeds);
    println!("seeds written to {}", seeds.root.display());
}
