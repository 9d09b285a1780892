//! The store contract: one set of cases, written against `Arc<dyn Store>`, that every
//! backend must pass. Each case runs as `sqlite::<case>` on a fresh SQLite file, and as
//! `postgres::<case>` on a fresh Postgres database when `TEST_DATABASE_URL` is set (without
//! it those pass without running; the test script runs this suite both ways). The cases pin
//! what the engine and the HTTP suite rely on: compare-and-set on heads and revisions,
//! entry paths, version and alias resolution, paging order, workspace isolation.

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

use palaver::domain::agents::{AgentConfig, VersionSelector};
use palaver::domain::conversations::AgentVersionRef;
use palaver::domain::entries::{Content, Entry, EntryObject, MessageInput, MessageOutput};
use palaver::domain::ids::{AgentId, ConversationId, EntryId, FileId, WorkspaceId};
use palaver::domain::time::Timestamp;
use palaver::store::blobs::{BlobKey, ByteStream};
use palaver::store::{
    AgentFilter, AgentRecord, AgentWrite, AliasRecord, ClaimTimes, ConnectOptions, ConversationRecord, FileFilter,
    FileRecord, KeyClaim, KeyUse, NewVersion, Page, RunWrite, Store, StoreError, StoredAnswer, StoredEvent, TurnWrite,
};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Declares each case once per backend.
macro_rules! contract {
    ($($case:ident,)+) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let fresh = super::Fresh::sqlite().await;
                    super::$case(fresh.store.clone()).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(fresh) = super::Fresh::postgres().await {
                        super::$case(fresh.store.clone()).await;
                    }
                }
            )+
        }
    };
}

contract! {
    a_healthy_store_answers_a_ping,
    a_created_agent_reads_back_whole_as_its_active_version_zero,
    creating_an_agent_whose_id_is_taken_conflicts_and_keeps_the_first,
    appended_versions_are_numbered_in_order_and_the_newest_becomes_active,
    an_append_on_a_stale_revision_conflicts_and_writes_no_version,
    activating_a_version_moves_only_the_active_pointer,
    versions_resolve_as_active_by_number_and_by_alias,
    agents_are_listed_newest_id_first_and_paged,
    agent_filters_match_the_active_version,
    deleting_an_agent_deletes_its_versions_and_aliases,
    several_agents_are_read_at_their_active_versions_at_once,
    another_workspace_sees_none_of_an_agent,
    a_started_conversation_reads_back_with_every_setting_and_its_entries,
    an_append_moves_the_head_only_from_the_head_it_was_built_on,
    history_is_the_path_from_the_root_to_the_given_entry_oldest_first,
    a_restart_branches_from_a_shared_prefix_and_both_heads_keep_their_paths,
    starting_a_conversation_whose_id_is_taken_conflicts_and_writes_nothing,
    the_conversation_for_a_turn_comes_with_the_agent_version_it_follows,
    conversations_are_listed_newest_first_and_paged,
    conversations_are_filtered_by_every_metadata_key,
    deleting_a_conversation_keeps_its_entries_for_the_branches_sharing_them,
    another_workspace_sees_none_of_a_conversation,
    a_stored_file_reads_back_whole_and_files_are_listed_newest_first_with_the_total,
    a_deleted_file_is_gone_and_another_workspace_sees_none,
    a_file_is_gone_from_its_expiry_on_and_purged_soonest_expired_first,
    files_are_filtered_by_purpose_name_source_sample_type_and_mimetype_and_counted_so,
    a_blob_in_the_database_streams_back_in_order_and_is_deleted,
    a_failed_blob_write_leaves_nothing,
    blobs_no_file_names_are_listed_once_written_before_the_time_asked,
    a_setting_keeps_the_first_value_written,
    an_idempotency_key_is_claimed_once_answered_then_replayed,
    a_released_or_expired_or_abandoned_key_can_be_claimed_again,
    a_claim_kept_alive_is_not_taken_over,
    a_conversations_latest_run_keeps_its_events_until_purged,
}

// ---------------------------------------------------------------------------------------
// Backends

/// A store of its own for one case (and the directory its SQLite file lives in).
struct Fresh {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Fresh {
    async fn sqlite() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("palaver.db").display());
        Fresh { store: palaver::store::connect(&url, Default::default()).await.unwrap(), _dir: Some(dir) }
    }

    /// A new database on the server of `TEST_DATABASE_URL`; `None` when it is not set.
    /// Names start with `palaver_t_`: the test script drops them after the run.
    async fn postgres() -> Option<Fresh> {
        use sqlx::Connection;
        let admin_url = std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty())?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!(
            "palaver_t_store_{}_{}_{nanos:x}",
            std::process::id(),
            DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but Postgres is not reachable: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
        admin.close().await.unwrap();
        let (base, _) = admin_url.rsplit_once('/').expect("TEST_DATABASE_URL ends with /DBNAME");
        let store = palaver::store::connect(
            &format!("{base}/{name}"),
            ConnectOptions { max_connections: 4, ..Default::default() },
        )
        .await
        .unwrap();
        Some(Fresh { store, _dir: None })
    }
}

// ---------------------------------------------------------------------------------------
// Agents

async fn a_healthy_store_answers_a_ping(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

async fn a_created_agent_reads_back_whole_as_its_active_version_zero(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    let config = full_config("Ada");

    let created = store.create_agent(write(&ws, &id, 0), &config).await.unwrap();

    let expected = AgentRecord::first(id.clone(), config, at(0));
    assert_eq!(created, expected);
    assert_eq!(store.agent(&ws, &id, &VersionSelector::Active).await.unwrap(), expected);
    assert_eq!(store.agent(&ws, &id, &VersionSelector::Number(0)).await.unwrap(), expected);
}

async fn creating_an_agent_whose_id_is_taken_conflicts_and_keeps_the_first(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &id, 0), &config("first")).await.unwrap();

    let again = store.create_agent(write(&ws, &id, 1), &config("second")).await;

    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    assert_eq!(active(&store, &ws, &id).await.config.name, "first");
    assert_eq!(versions(&store, &ws, &id).await, [0]);
}

async fn appended_versions_are_numbered_in_order_and_the_newest_becomes_active(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &id, 0), &config("v0")).await.unwrap();

    let first = store.append_agent_version(write(&ws, &id, 1), version(0, &config("v1"))).await.unwrap();
    let second = store.append_agent_version(write(&ws, &id, 2), version(1, &config("v2"))).await.unwrap();

    let expected = AgentRecord {
        id: id.clone(),
        version: 1,
        active_version: 1,
        latest_version: 1,
        revision: 1,
        created_at: at(0),
        updated_at: at(1),
        config: config("v1"),
    };
    assert_eq!(first, expected);
    assert_eq!((second.version, second.active_version, second.revision, second.updated_at), (2, 2, 2, at(2)));
    assert_eq!(active(&store, &ws, &id).await, second);
    let all = store.list_agent_versions(&ws, &id, page(0, 10)).await.unwrap();
    let listed: Vec<(i64, i64, &str)> =
        all.iter().map(|r| (r.version, r.active_version, r.config.name.as_str())).collect();
    assert_eq!(listed, [(0, 2, "v0"), (1, 2, "v1"), (2, 2, "v2")]);
    let middle = store.list_agent_versions(&ws, &id, page(1, 1)).await.unwrap();
    assert_eq!(middle.iter().map(|r| r.version).collect::<Vec<_>>(), [1]);
}

async fn an_append_on_a_stale_revision_conflicts_and_writes_no_version(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &id, 0), &config("v0")).await.unwrap();
    store.append_agent_version(write(&ws, &id, 1), version(0, &config("v1"))).await.unwrap();

    let late = store.append_agent_version(write(&ws, &id, 2), version(0, &config("late"))).await;

    assert!(matches!(late, Err(StoreError::Conflict)), "{late:?}");
    let current = active(&store, &ws, &id).await;
    assert_eq!((current.version, current.revision, current.config.name.as_str()), (1, 1, "v1"));
    assert_eq!(versions(&store, &ws, &id).await, [0, 1]);
}

async fn activating_a_version_moves_only_the_active_pointer(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &id, 0), &config("v0")).await.unwrap();
    store.append_agent_version(write(&ws, &id, 1), version(0, &config("v1"))).await.unwrap();

    let activated = store.activate_agent_version(write(&ws, &id, 2), 0).await.unwrap();
    let missing = store.activate_agent_version(write(&ws, &id, 3), 9).await;
    let next =
        store.append_agent_version(write(&ws, &id, 4), version(activated.revision, &config("v2"))).await.unwrap();

    let expected = AgentRecord {
        id: id.clone(),
        version: 0,
        active_version: 0,
        latest_version: 1,
        revision: 2,
        created_at: at(0),
        updated_at: at(2),
        config: config("v0"),
    };
    assert_eq!(activated, expected);
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    // The next version follows the latest one, not the active one.
    assert_eq!((next.version, next.active_version, next.latest_version), (2, 2, 2));
    assert_eq!(versions(&store, &ws, &id).await, [0, 1, 2]);
}

async fn versions_resolve_as_active_by_number_and_by_alias(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &id, 0), &config("v0")).await.unwrap();
    store.append_agent_version(write(&ws, &id, 1), version(0, &config("v1"))).await.unwrap();
    let name = |selector: VersionSelector| {
        let (store, ws, id) = (store.clone(), ws.clone(), id.clone());
        async move { store.agent(&ws, &id, &selector).await.map(|r| (r.version, r.config.name)) }
    };
    let alias = |name: &str| VersionSelector::Alias(name.to_owned());

    let stable = store.put_alias(write(&ws, &id, 2), "stable", 0).await.unwrap();
    assert_eq!(stable, AliasRecord { alias: "stable".into(), version: 0, created_at: at(2), updated_at: at(2) });
    assert_eq!(name(VersionSelector::Active).await.unwrap(), (1, "v1".into()));
    assert_eq!(name(VersionSelector::Number(0)).await.unwrap(), (0, "v0".into()));
    assert_eq!(name(alias("stable")).await.unwrap(), (0, "v0".into()));
    assert!(matches!(name(VersionSelector::Number(5)).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(name(alias("nope")).await, Err(StoreError::NotFound { .. })));

    // Moving an alias keeps when it was created.
    let moved = store.put_alias(write(&ws, &id, 3), "stable", 1).await.unwrap();
    store.put_alias(write(&ws, &id, 4), "beta", 0).await.unwrap();
    assert_eq!(moved, AliasRecord { alias: "stable".into(), version: 1, created_at: at(2), updated_at: at(3) });
    assert_eq!(name(alias("stable")).await.unwrap(), (1, "v1".into()));
    let aliases = store.list_aliases(&ws, &id).await.unwrap();
    assert_eq!(aliases.iter().map(|a| (a.alias.as_str(), a.version)).collect::<Vec<_>>(), [("stable", 1), ("beta", 0)]);

    store.delete_alias(&ws, &id, "stable").await.unwrap();
    assert!(matches!(name(alias("stable")).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete_alias(&ws, &id, "stable").await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.list_aliases(&ws, &id).await.unwrap().len(), 1);
}

async fn agents_are_listed_newest_id_first_and_paged(store: Arc<dyn Store>) {
    let ws = home();
    for (id, name) in [("ag_b", "b"), ("ag_c", "c"), ("ag_a", "a")] {
        store.create_agent(write(&ws, &AgentId(id.into()), 0), &config(name)).await.unwrap();
    }
    store.append_agent_version(write(&ws, &AgentId("ag_b".into()), 1), version(0, &config("b1"))).await.unwrap();
    let list = |filter: AgentFilter, page: Page| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            let records = store.list_agents(&ws, &filter, page).await.unwrap();
            records.into_iter().map(|r| format!("{}@{}", r.id, r.version)).collect::<Vec<_>>()
        }
    };
    let before = |id: &str| AgentFilter { before_id: Some(id.into()), ..AgentFilter::default() };

    assert_eq!(list(AgentFilter::default(), page(0, 10)).await, ["ag_c@0", "ag_b@1", "ag_a@0"]);
    assert_eq!(list(AgentFilter::default(), page(0, 2)).await, ["ag_c@0", "ag_b@1"]);
    assert_eq!(list(AgentFilter::default(), page(2, 2)).await, ["ag_a@0"]);
    assert_eq!(list(before("ag_c"), page(0, 10)).await, ["ag_b@1", "ag_a@0"]);
    assert_eq!(list(before("ag_c"), page(1, 10)).await, ["ag_a@0"]);
}

async fn agent_filters_match_the_active_version(store: Arc<dyn Store>) {
    let ws = home();
    let mut support = config("Support Bot");
    support.deployment_chat = true;
    support.metadata = Some(object(json!({"team": "a", "tier": 1, "tags": ["x"]})));
    let mut sales = config("sales_bot");
    sales.metadata = Some(object(json!({"team": "b"})));
    for (id, config) in [("ag_1", support), ("ag_2", sales), ("ag_3", config("salesXbot"))] {
        store.create_agent(write(&ws, &AgentId(id.into()), 0), &config).await.unwrap();
    }
    let ids = |filter: AgentFilter| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            let records = store.list_agents(&ws, &filter, page(0, 10)).await.unwrap();
            records.into_iter().map(|r| r.id.0).collect::<Vec<_>>()
        }
    };
    let metadata = |value: Value| AgentFilter { metadata: Some(object(value)), ..AgentFilter::default() };
    let search = |text: &str| AgentFilter { search: Some(text.into()), ..AgentFilter::default() };
    let named = |name: &str| AgentFilter { name: Some(name.into()), ..AgentFilter::default() };

    assert_eq!(ids(named("Support Bot")).await, ["ag_1"]);
    assert_eq!(ids(AgentFilter { id: Some("ag_3".into()), ..AgentFilter::default() }).await, ["ag_3"]);
    assert_eq!(ids(AgentFilter { deployment_chat: Some(true), ..AgentFilter::default() }).await, ["ag_1"]);
    assert_eq!(ids(AgentFilter { deployment_chat: Some(false), ..AgentFilter::default() }).await, ["ag_3", "ag_2"]);
    // Case-insensitive, over the name or the id, and `_` is no wildcard.
    assert_eq!(ids(search("SUPPORT")).await, ["ag_1"]);
    assert_eq!(ids(search("S_B")).await, ["ag_2"]);
    assert_eq!(ids(search("G_3")).await, ["ag_3"]);
    // Every key, with a value equal in JSON type too.
    assert_eq!(ids(metadata(json!({"team": "a"}))).await, ["ag_1"]);
    assert_eq!(ids(metadata(json!({"team": "a", "tier": 1, "tags": ["x"]}))).await, ["ag_1"]);
    assert!(ids(metadata(json!({"tier": "1"}))).await.is_empty());
    assert!(ids(metadata(json!({"team": "a", "tier": 2}))).await.is_empty());

    store.append_agent_version(write(&ws, &AgentId("ag_1".into()), 1), version(0, &config("Renamed"))).await.unwrap();
    assert!(ids(named("Support Bot")).await.is_empty());
    assert_eq!(ids(named("Renamed")).await, ["ag_1"]);
    assert!(ids(metadata(json!({"team": "a"}))).await.is_empty());
}

async fn deleting_an_agent_deletes_its_versions_and_aliases(store: Arc<dyn Store>) {
    let (ws, id) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &id, 0), &config("v0")).await.unwrap();
    store.append_agent_version(write(&ws, &id, 1), version(0, &config("v1"))).await.unwrap();
    store.put_alias(write(&ws, &id, 2), "stable", 0).await.unwrap();

    store.delete_agent(&ws, &id).await.unwrap();

    for selector in [VersionSelector::Active, VersionSelector::Number(0), VersionSelector::Alias("stable".into())] {
        let read = store.agent(&ws, &id, &selector).await;
        assert!(matches!(read, Err(StoreError::NotFound { .. })), "{selector:?}: {read:?}");
    }
    assert!(store.list_agents(&ws, &AgentFilter::default(), page(0, 10)).await.unwrap().is_empty());
    assert!(store.list_aliases(&ws, &id).await.unwrap().is_empty());
    assert!(versions(&store, &ws, &id).await.is_empty());
    assert!(matches!(store.delete_agent(&ws, &id).await, Err(StoreError::NotFound { .. })));
    // Nothing of it lingers: the id starts over at version 0.
    store.create_agent(write(&ws, &id, 3), &config("again")).await.unwrap();
    assert_eq!(versions(&store, &ws, &id).await, [0]);
}

async fn several_agents_are_read_at_their_active_versions_at_once(store: Arc<dyn Store>) {
    let (ws, other) = (home(), WorkspaceId("elsewhere".into()));
    let (a, b, foreign) = (AgentId::generate(), AgentId::generate(), AgentId::generate());
    store.create_agent(write(&ws, &a, 0), &config("a0")).await.unwrap();
    store.create_agent(write(&ws, &b, 1), &config("b0")).await.unwrap();
    store.append_agent_version(write(&ws, &b, 2), version(0, &config("b1"))).await.unwrap();
    store.create_agent(write(&other, &foreign, 3), &config("theirs")).await.unwrap();
    let ids = [a.0.clone(), "ag_missing".to_owned(), b.0.clone(), foreign.0.clone()];

    let mut found = store.active_agents(&ws, &ids).await.unwrap();

    found.sort_by(|x, y| x.id.0.cmp(&y.id.0));
    let mut expected = vec![(a.0.clone(), 0, "a0"), (b.0.clone(), 1, "b1")];
    expected.sort();
    let read: Vec<(String, i64, &str)> =
        found.iter().map(|r| (r.id.0.clone(), r.version, r.config.name.as_str())).collect();
    assert_eq!(read, expected, "missing ids and other workspaces' agents are left out");
    assert!(store.active_agents(&ws, &[]).await.unwrap().is_empty());
}

async fn another_workspace_sees_none_of_an_agent(store: Arc<dyn Store>) {
    let (ws, other, id) = (home(), WorkspaceId("elsewhere".into()), AgentId::generate());
    let original = store.create_agent(write(&ws, &id, 0), &config("mine")).await.unwrap();
    store.put_alias(write(&ws, &id, 1), "stable", 0).await.unwrap();
    let not_found = |result: Result<(), StoreError>| matches!(result, Err(StoreError::NotFound { .. }));

    for selector in [VersionSelector::Active, VersionSelector::Number(0), VersionSelector::Alias("stable".into())] {
        assert!(not_found(store.agent(&other, &id, &selector).await.map(drop)), "{selector:?}");
    }
    assert!(store.list_agents(&other, &AgentFilter::default(), page(0, 10)).await.unwrap().is_empty());
    assert_eq!(store.agents_exist(&other, std::slice::from_ref(&id.0)).await.unwrap(), [false]);
    assert_eq!(store.agents_exist(&ws, &["ag_missing".into(), id.0.clone()]).await.unwrap(), [false, true]);
    assert!(versions(&store, &other, &id).await.is_empty());
    assert!(store.list_aliases(&other, &id).await.unwrap().is_empty());
    assert!(store.append_agent_version(write(&other, &id, 2), version(0, &config("theirs"))).await.is_err());
    assert!(not_found(store.activate_agent_version(write(&other, &id, 2), 0).await.map(drop)));
    assert!(not_found(store.delete_alias(&other, &id, "stable").await));
    assert!(not_found(store.delete_agent(&other, &id).await));

    // The same id is free in another workspace, and stays apart.
    store.create_agent(write(&other, &id, 3), &config("theirs")).await.unwrap();
    assert_eq!(active(&store, &ws, &id).await, original);
    assert_eq!(active(&store, &other, &id).await.config.name, "theirs");
    assert_eq!(store.agent(&ws, &id, &VersionSelector::Alias("stable".into())).await.unwrap(), original);
}

// ---------------------------------------------------------------------------------------
// Conversations and entries

async fn a_started_conversation_reads_back_with_every_setting_and_its_entries(store: Arc<dyn Store>) {
    let ws = home();
    let mut with_agent = conversation("conv_agent", Some("ag_any"), at(0));
    with_agent.agent_version = Some(AgentVersionRef::Alias("stable".into()));
    with_agent.name = Some("Support".into());
    with_agent.description = Some("A support chat".into());
    with_agent.metadata = Some(object(json!({"team": "a", "n": 1})));
    with_agent.guardrails = Some(vec![serde_json::from_value(json!({"block_on_error": true})).unwrap()]);
    let mut with_model = conversation("conv_model", None, at(1));
    with_model.model = Some("mistral-small-latest".into());
    with_model.instructions = Some("Answer briefly.".into());
    with_model.tools = Some(full_config("tools").tools);
    with_model.completion_args = Some(full_config("args").completion_args);
    let entries = [vec![user("hello"), assistant("hi")], vec![user("bonjour"), assistant("salut")]];

    for (record, entries) in [(&with_agent, &entries[0]), (&with_model, &entries[1])] {
        store.commit_turn(&ws, &start(record, entries.clone())).await.unwrap();
    }

    for (record, entries) in [(&with_agent, &entries[0]), (&with_model, &entries[1])] {
        let stored = store.conversation(&ws, &record.id).await.unwrap();
        assert_eq!(stored, ConversationRecord { head: Some(entries[1].id().clone()), ..record.clone() });
        assert_eq!(&store.history(&ws, entries[1].id()).await.unwrap(), entries);
    }
}

async fn an_append_moves_the_head_only_from_the_head_it_was_built_on(store: Arc<dyn Store>) {
    let ws = home();
    let record = conversation("conv_1", None, at(0));
    let (u1, a1, u2, a2) = (user("one"), assistant("1"), user("two"), assistant("2"));
    store.commit_turn(&ws, &start(&record, vec![u1.clone(), a1.clone()])).await.unwrap();
    store.commit_turn(&ws, &append(&record, a1.id(), 1, vec![u2, a2.clone()], at(5))).await.unwrap();

    let (u3, a3) = (user("three"), assistant("3"));
    let stale = store.commit_turn(&ws, &append(&record, a1.id(), 1, vec![u3.clone(), a3.clone()], at(6))).await;

    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let stored = store.conversation(&ws, &record.id).await.unwrap();
    assert_eq!((stored.head.as_ref(), stored.created_at, stored.updated_at), (Some(a2.id()), at(0), at(5)));
    assert_eq!(texts(&store.history(&ws, a2.id()).await.unwrap()), ["one", "1", "two", "2"]);
    // The losing turn wrote none of its entries.
    assert!(store.history(&ws, u3.id()).await.unwrap().is_empty());
    assert!(store.history(&ws, a3.id()).await.unwrap().is_empty());
}

async fn history_is_the_path_from_the_root_to_the_given_entry_oldest_first(store: Arc<dyn Store>) {
    let ws = home();
    let record = conversation("conv_1", None, at(0));
    let turns = [[user("u1"), assistant("a1")], [user("u2"), assistant("a2")], [user("u3"), assistant("a3")]];
    store.commit_turn(&ws, &start(&record, turns[0].to_vec())).await.unwrap();
    store.commit_turn(&ws, &append(&record, turns[0][1].id(), 1, turns[1].to_vec(), at(1))).await.unwrap();
    store.commit_turn(&ws, &append(&record, turns[1][1].id(), 3, turns[2].to_vec(), at(2))).await.unwrap();
    let path = |entry: &Entry| {
        let (store, ws, head) = (store.clone(), ws.clone(), entry.id().clone());
        async move { texts(&store.history(&ws, &head).await.unwrap()) }
    };

    assert_eq!(path(&turns[2][1]).await, ["u1", "a1", "u2", "a2", "u3", "a3"]);
    assert_eq!(path(&turns[1][0]).await, ["u1", "a1", "u2"]);
    assert_eq!(path(&turns[0][0]).await, ["u1"]);
    assert!(store.history(&ws, &EntryId("msg_missing".into())).await.unwrap().is_empty());
}

async fn a_restart_branches_from_a_shared_prefix_and_both_heads_keep_their_paths(store: Arc<dyn Store>) {
    let ws = home();
    let original = conversation("conv_original", None, at(0));
    let (u1, a1) = (user("u1"), assistant("a1"));
    store.commit_turn(&ws, &start(&original, vec![u1.clone(), a1.clone()])).await.unwrap();
    let (u2, a2) = (user("u2"), assistant("a2"));
    store.commit_turn(&ws, &append(&original, a1.id(), 1, vec![u2, a2.clone()], at(1))).await.unwrap();

    // Restarting from `a1`: a new conversation whose first turn hangs from it.
    let branch = conversation("conv_branch", None, at(2));
    let (b2, b3) = (user("b2"), assistant("b3"));
    let mut restart = start(&branch, vec![b2, b3.clone()]);
    restart.parent = Some((a1.id().clone(), 1));
    store.commit_turn(&ws, &restart).await.unwrap();

    assert_eq!(store.conversation(&ws, &branch.id).await.unwrap().head.as_ref(), Some(b3.id()));
    assert_eq!(texts(&store.history(&ws, b3.id()).await.unwrap()), ["u1", "a1", "b2", "b3"]);
    assert_eq!(texts(&store.history(&ws, a2.id()).await.unwrap()), ["u1", "a1", "u2", "a2"]);
    let (b4, b5) = (user("b4"), assistant("b5"));
    store.commit_turn(&ws, &append(&branch, b3.id(), 3, vec![b4, b5.clone()], at(3))).await.unwrap();
    assert_eq!(texts(&store.history(&ws, b5.id()).await.unwrap()), ["u1", "a1", "b2", "b3", "b4", "b5"]);
    assert_eq!(texts(&store.history(&ws, a2.id()).await.unwrap()), ["u1", "a1", "u2", "a2"]);
}

async fn starting_a_conversation_whose_id_is_taken_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    let ws = home();
    let record = conversation("conv_1", None, at(0));
    let first = user("first");
    store.commit_turn(&ws, &start(&record, vec![first.clone()])).await.unwrap();

    let second = user("second");
    let again = store.commit_turn(&ws, &start(&record, vec![second.clone()])).await;

    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    assert_eq!(store.conversation(&ws, &record.id).await.unwrap().head.as_ref(), Some(first.id()));
    assert!(store.history(&ws, second.id()).await.unwrap().is_empty());
}

async fn the_conversation_for_a_turn_comes_with_the_agent_version_it_follows(store: Arc<dyn Store>) {
    let (ws, agent) = (home(), AgentId::generate());
    store.create_agent(write(&ws, &agent, 0), &config("v0")).await.unwrap();
    store.append_agent_version(write(&ws, &agent, 1), version(0, &config("v1"))).await.unwrap();
    store.put_alias(write(&ws, &agent, 2), "stable", 0).await.unwrap();
    let follows = [
        ("conv_active", None),
        ("conv_pinned", Some(AgentVersionRef::Number(0))),
        ("conv_aliased", Some(AgentVersionRef::Alias("stable".into()))),
        ("conv_pinned_missing", Some(AgentVersionRef::Number(7))),
        ("conv_aliased_missing", Some(AgentVersionRef::Alias("nope".into()))),
    ];
    for (id, version) in follows {
        let mut record = conversation(id, Some(agent.as_str()), at(3));
        record.agent_version = version;
        store.commit_turn(&ws, &start(&record, vec![user(id)])).await.unwrap();
    }
    let mut model = conversation("conv_model", None, at(3));
    model.model = Some("echo".into());
    store.commit_turn(&ws, &start(&model, vec![user("model")])).await.unwrap();
    let joined = |id: &str| {
        let (store, ws, id) = (store.clone(), ws.clone(), ConversationId(id.into()));
        async move {
            let (conversation, agent) = store.conversation_for_turn(&ws, &id).await.unwrap();
            assert_eq!(conversation, store.conversation(&ws, &id).await.unwrap());
            agent
        }
    };
    let version = |selector: VersionSelector| {
        let (store, ws, agent) = (store.clone(), ws.clone(), agent.clone());
        async move { store.agent(&ws, &agent, &selector).await.unwrap() }
    };

    assert_eq!(joined("conv_active").await, Some(version(VersionSelector::Number(1)).await));
    assert_eq!(joined("conv_pinned").await, Some(version(VersionSelector::Number(0)).await));
    assert_eq!(joined("conv_aliased").await, Some(version(VersionSelector::Number(0)).await));
    assert_eq!(joined("conv_pinned_missing").await, None);
    assert_eq!(joined("conv_aliased_missing").await, None);
    assert_eq!(joined("conv_model").await, None);

    // The join follows the pointers as they are now.
    store.activate_agent_version(write(&ws, &agent, 4), 0).await.unwrap();
    store.put_alias(write(&ws, &agent, 5), "stable", 1).await.unwrap();
    assert_eq!(joined("conv_active").await, Some(version(VersionSelector::Number(0)).await));
    assert_eq!(joined("conv_aliased").await, Some(version(VersionSelector::Number(1)).await));

    // Without its agent, a conversation still reads, with no version.
    store.delete_agent(&ws, &agent).await.unwrap();
    for id in ["conv_active", "conv_pinned", "conv_aliased"] {
        assert_eq!(joined(id).await, None, "{id}");
    }
    let missing = store.conversation_for_turn(&ws, &ConversationId("conv_missing".into())).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
}

async fn conversations_are_listed_newest_first_and_paged(store: Arc<dyn Store>) {
    let ws = home();
    // Two created at the same moment come by id, descending.
    let records: Vec<ConversationRecord> = [("conv_1", 1), ("conv_2", 2), ("conv_3", 3), ("conv_4", 3)]
        .into_iter()
        .map(|(id, second)| conversation(id, None, at(second)))
        .collect();
    let mut heads = Vec::new();
    for record in &records {
        let entry = user(record.id.as_str());
        store.commit_turn(&ws, &start(record, vec![entry.clone()])).await.unwrap();
        heads.push(entry);
    }
    // An append does not bring a conversation forward: the order is by creation.
    store.commit_turn(&ws, &append(&records[0], heads[0].id(), 0, vec![assistant("later")], at(9))).await.unwrap();
    let list = |page: Page| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            let records = store.list_conversations(&ws, None, page).await.unwrap();
            records.into_iter().map(|r| r.id.0).collect::<Vec<_>>()
        }
    };

    assert_eq!(list(page(0, 10)).await, ["conv_4", "conv_3", "conv_2", "conv_1"]);
    assert_eq!(list(page(1, 2)).await, ["conv_3", "conv_2"]);
    assert_eq!(list(page(3, 2)).await, ["conv_1"]);
    assert!(list(page(4, 2)).await.is_empty());
    let listed = store.list_conversations(&ws, None, page(3, 1)).await.unwrap();
    assert_eq!(listed, [store.conversation(&ws, &records[0].id).await.unwrap()]);
}

async fn conversations_are_filtered_by_every_metadata_key(store: Arc<dyn Store>) {
    let ws = home();
    let tagged = [
        ("conv_a", Some(json!({"team": "a", "n": 1, "tags": ["x"]}))),
        ("conv_b", Some(json!({"team": "b", "flag": true}))),
        ("conv_c", None),
    ];
    for (second, (id, metadata)) in tagged.into_iter().enumerate() {
        let mut record = conversation(id, None, at(second as i64));
        record.metadata = metadata.map(object);
        store.commit_turn(&ws, &start(&record, vec![user(id)])).await.unwrap();
    }
    let matching = |filter: Value| {
        let (store, ws, filter) = (store.clone(), ws.clone(), object(filter));
        async move {
            let records = store.list_conversations(&ws, Some(&filter), page(0, 10)).await.unwrap();
            records.into_iter().map(|r| r.id.0).collect::<Vec<_>>()
        }
    };

    assert_eq!(matching(json!({"team": "a"})).await, ["conv_a"]);
    assert_eq!(matching(json!({"n": 1, "tags": ["x"]})).await, ["conv_a"]);
    assert_eq!(matching(json!({"flag": true})).await, ["conv_b"]);
    // Equal in JSON type too (SQLite's `json_each` gives `true` the value 1).
    assert!(matching(json!({"n": "1"})).await.is_empty());
    assert!(matching(json!({"flag": 1})).await.is_empty());
    assert!(matching(json!({"team": "a", "n": 2})).await.is_empty());
    assert!(matching(json!({"missing": null})).await.is_empty());
    assert_eq!(matching(json!({})).await, ["conv_c", "conv_b", "conv_a"]);
}

async fn deleting_a_conversation_keeps_its_entries_for_the_branches_sharing_them(store: Arc<dyn Store>) {
    let ws = home();
    let original = conversation("conv_original", None, at(0));
    let (u1, a1) = (user("u1"), assistant("a1"));
    store.commit_turn(&ws, &start(&original, vec![u1, a1.clone()])).await.unwrap();
    let branch = conversation("conv_branch", None, at(1));
    let b2 = user("b2");
    let mut restart = start(&branch, vec![b2.clone()]);
    restart.parent = Some((a1.id().clone(), 1));
    store.commit_turn(&ws, &restart).await.unwrap();

    store.delete_conversation(&ws, &original.id).await.unwrap();

    // A missing row says what and which, so callers need not re-map it.
    for missing in [
        store.conversation(&ws, &original.id).await.map(|_| ()),
        store.conversation_for_turn(&ws, &original.id).await.map(|_| ()),
        store.delete_conversation(&ws, &original.id).await,
    ] {
        match missing {
            Err(StoreError::NotFound { what, id }) => {
                assert_eq!((what, id.as_str()), ("Conversation", "conv_original"))
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    let listed = store.list_conversations(&ws, None, page(0, 10)).await.unwrap();
    assert_eq!(listed.into_iter().map(|r| r.id.0).collect::<Vec<_>>(), ["conv_branch"]);
    let late = store.commit_turn(&ws, &append(&original, a1.id(), 1, vec![user("late")], at(2))).await;
    assert!(matches!(late, Err(StoreError::Conflict)), "{late:?}");
    assert_eq!(texts(&store.history(&ws, b2.id()).await.unwrap()), ["u1", "a1", "b2"]);
}

async fn another_workspace_sees_none_of_a_conversation(store: Arc<dyn Store>) {
    let (ws, other) = (home(), WorkspaceId("elsewhere".into()));
    let record = conversation("conv_1", None, at(0));
    let (u1, a1) = (user("mine"), assistant("mine too"));
    store.commit_turn(&ws, &start(&record, vec![u1.clone(), a1.clone()])).await.unwrap();
    let before = store.conversation(&ws, &record.id).await.unwrap();

    assert!(matches!(store.conversation(&other, &record.id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.conversation_for_turn(&other, &record.id).await, Err(StoreError::NotFound { .. })));
    assert!(store.list_conversations(&other, None, page(0, 10)).await.unwrap().is_empty());
    assert!(store.history(&other, a1.id()).await.unwrap().is_empty());
    let intruding = store.commit_turn(&other, &append(&record, a1.id(), 1, vec![user("theirs")], at(1))).await;
    assert!(matches!(intruding, Err(StoreError::Conflict)), "{intruding:?}");
    assert!(matches!(store.delete_conversation(&other, &record.id).await, Err(StoreError::NotFound { .. })));

    // The same ids are free in another workspace, and stay apart.
    let (t1, t2) = (theirs(&u1, "theirs"), theirs(&a1, "theirs too"));
    store.commit_turn(&other, &start(&record, vec![t1, t2.clone()])).await.unwrap();
    assert_eq!(store.conversation(&ws, &record.id).await.unwrap(), before);
    assert_eq!(texts(&store.history(&ws, a1.id()).await.unwrap()), ["mine", "mine too"]);
    assert_eq!(texts(&store.history(&other, t2.id()).await.unwrap()), ["theirs", "theirs too"]);
}

// ---------------------------------------------------------------------------------------
// Helpers

// ---------------------------------------------------------------------------------------
// Files

fn file(id: &str, created: Timestamp) -> FileRecord {
    FileRecord {
        id: FileId(id.to_owned()),
        filename: format!("{id}.png"),
        bytes: 42,
        purpose: "ocr".into(),
        sample_type: "instruct".into(),
        source: "upload".into(),
        mimetype: Some("image/png".into()),
        num_lines: None,
        visibility: Some("workspace".into()),
        expires_at: Some(1_900_000_000),
        created_at: created,
    }
}

async fn a_stored_file_reads_back_whole_and_files_are_listed_newest_first_with_the_total(store: Arc<dyn Store>) {
    let ws = home();
    for (id, second) in [("f-old", 1), ("f-mid", 2), ("f-new", 3)] {
        store.insert_file(&ws, &file(id, at(second))).await.unwrap();
    }

    let read = store.file(&ws, &FileId("f-mid".into()), at(9)).await.unwrap();
    let (first, total) = store.list_files(&ws, &FileFilter::default(), page(0, 2), at(9)).await.unwrap();
    let (second, again) = store.list_files(&ws, &FileFilter::default(), page(2, 2), at(9)).await.unwrap();

    assert_eq!(read, file("f-mid", at(2)));
    let ids = |files: &[FileRecord]| files.iter().map(|f| f.id.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&first), vec!["f-new", "f-mid"]);
    assert_eq!(ids(&second), vec!["f-old"]);
    assert_eq!((total, again), (3, 3));
    let taken = store.insert_file(&ws, &file("f-mid", at(9))).await;
    assert!(matches!(taken, Err(StoreError::Conflict)), "{taken:?}");
}

async fn files_are_filtered_by_purpose_name_source_sample_type_and_mimetype_and_counted_so(store: Arc<dyn Store>) {
    let ws = home();
    let mut batch = file("Batch_Input", at(1));
    (batch.purpose, batch.sample_type) = ("batch".into(), "batch_request".into());
    let mut chart = file("chart", at(2));
    (chart.source, chart.mimetype) = ("mistral".into(), Some("image/svg+xml".into()));
    for f in [&batch, &chart, &file("scan_1", at(3))] {
        store.insert_file(&ws, f).await.unwrap();
    }
    let ids = |(files, total): (Vec<FileRecord>, i64)| {
        (files.iter().map(|f| f.id.as_str().to_owned()).collect::<Vec<_>>(), total)
    };
    let listed = |filter: FileFilter| {
        let store = store.clone();
        let ws = ws.clone();
        async move { ids(store.list_files(&ws, &filter, page(0, 10), at(9)).await.unwrap()) }
    };

    let by_purpose = listed(FileFilter { purpose: Some("batch".into()), ..Default::default() }).await;
    let by_name = listed(FileFilter { search: Some("input".into()), ..Default::default() }).await;
    let by_sources =
        listed(FileFilter { sources: vec!["mistral".into(), "repository".into()], ..Default::default() }).await;
    let by_sample_type = listed(FileFilter { sample_types: vec!["instruct".into()], ..Default::default() }).await;
    let by_mimetype =
        listed(FileFilter { mimetypes: vec!["image/svg+xml".into(), "text/plain".into()], ..Default::default() }).await;
    let paged = ids(store
        .list_files(&ws, &FileFilter { sample_types: vec!["instruct".into()], ..Default::default() }, page(0, 1), at(9))
        .await
        .unwrap());

    assert_eq!(by_purpose, (vec!["Batch_Input".to_owned()], 1));
    assert_eq!(by_name, (vec!["Batch_Input".to_owned()], 1), "case-insensitive");
    assert_eq!(by_sources, (vec!["chart".to_owned()], 1));
    assert_eq!(by_sample_type, (vec!["scan_1".to_owned(), "chart".to_owned()], 2));
    assert_eq!(by_mimetype, (vec!["chart".to_owned()], 1));
    assert_eq!(paged, (vec!["scan_1".to_owned()], 2), "the total counts every match, not the page");
}

async fn a_deleted_file_is_gone_and_another_workspace_sees_none(store: Arc<dyn Store>) {
    let (ws, other) = (home(), WorkspaceId("ws_other".into()));
    store.insert_file(&ws, &file("f-1", at(1))).await.unwrap();
    let id = FileId("f-1".into());

    assert!(matches!(store.file(&other, &id, at(9)).await, Err(StoreError::NotFound { what: "File", .. })));
    assert_eq!(store.list_files(&other, &FileFilter::default(), page(0, 10), at(9)).await.unwrap(), (vec![], 0));
    assert!(matches!(store.delete_file(&other, &id, at(9)).await, Err(StoreError::NotFound { .. })));

    store.delete_file(&ws, &id, at(9)).await.unwrap();

    assert!(matches!(store.file(&ws, &id, at(9)).await, Err(StoreError::NotFound { what: "File", .. })));
    assert_eq!(store.list_files(&ws, &FileFilter::default(), page(0, 10), at(9)).await.unwrap().1, 0);
}

async fn a_file_is_gone_from_its_expiry_on_and_purged_soonest_expired_first(store: Arc<dyn Store>) {
    let ws = home();
    let expiring = |id: &str, expires_at: Option<i64>| FileRecord { expires_at, ..file(id, at(1)) };
    for f in
        [expiring("f-keep", None), expiring("f-soon", Some(1_900_000_000)), expiring("f-later", Some(1_900_000_100))]
    {
        store.insert_file(&ws, &f).await.unwrap();
    }
    let (before, expiry) = (seconds(1_899_999_999), seconds(1_900_000_000));
    let soon = FileId("f-soon".into());
    let listed = |now: Timestamp| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            let (files, total) = store.list_files(&ws, &FileFilter::default(), page(0, 10), now).await.unwrap();
            (files.into_iter().map(|f| f.id.0).collect::<Vec<_>>(), total)
        }
    };

    assert!(store.file(&ws, &soon, before).await.is_ok());
    assert!(matches!(store.file(&ws, &soon, expiry).await, Err(StoreError::NotFound { what: "File", .. })));
    assert_eq!(listed(before).await.1, 3);
    assert_eq!(listed(expiry).await.1, 2, "the expired file is not listed or counted");
    assert!(matches!(store.delete_file(&ws, &soon, expiry).await, Err(StoreError::NotFound { .. })));
    assert!(store.file(&ws, &soon, before).await.is_ok(), "the row stays until the purge");

    let purged = store.purge_expired_files(expiry, 10).await.unwrap();
    let again = store.purge_expired_files(expiry, 10).await.unwrap();

    assert_eq!(purged, vec![(ws.clone(), soon.clone())]);
    assert_eq!(again, vec![]);
    assert!(matches!(store.file(&ws, &soon, before).await, Err(StoreError::NotFound { .. })));
    let much_later = seconds(2_000_000_000);
    let one = store.purge_expired_files(much_later, 1).await.unwrap();
    assert_eq!(one, vec![(ws.clone(), FileId("f-later".into()))]);
    assert_eq!(listed(much_later).await, (vec!["f-keep".to_owned()], 1), "a file without expiry stays");
}

fn body(pieces: Vec<Vec<u8>>) -> ByteStream<'static> {
    Box::pin(futures::stream::iter(pieces.into_iter().map(|p| Ok(bytes::Bytes::from(p)))))
}

async fn read_blob(store: &Arc<dyn Store>, key: &BlobKey) -> Result<Vec<u8>, StoreError> {
    use futures::TryStreamExt;
    let stream = store.blob(key).await?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    Ok(chunks.concat())
}

async fn a_blob_in_the_database_streams_back_in_order_and_is_deleted(store: Arc<dyn Store>) {
    let key = BlobKey::new(&home(), &FileId("blob-1".into()));
    let other = BlobKey::new(&WorkspaceId("ws_other".into()), &FileId("blob-1".into()));
    let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let pieces = bytes.chunks(300_000).map(<[u8]>::to_vec).collect();

    let written = store.put_blob(&key, body(pieces)).await.unwrap();

    assert_eq!(written, bytes.len() as u64);
    assert!(read_blob(&store, &key).await.unwrap() == bytes, "the blob reads back whole, in order");
    assert!(matches!(read_blob(&store, &other).await, Err(StoreError::NotFound { .. })));
    store.delete_blob(&key).await.unwrap();
    assert!(matches!(read_blob(&store, &key).await, Err(StoreError::NotFound { .. })));
    store.delete_blob(&key).await.unwrap();
}

async fn a_failed_blob_write_leaves_nothing(store: Arc<dyn Store>) {
    let key = BlobKey::new(&home(), &FileId("blob-broken".into()));
    let failing: ByteStream<'static> = Box::pin(futures::stream::iter(vec![
        Ok(bytes::Bytes::from(vec![1u8; 1_500_000])),
        Err(std::io::Error::other("the client went away")),
    ]));

    let written = store.put_blob(&key, failing).await;

    assert!(written.is_err());
    assert!(matches!(read_blob(&store, &key).await, Err(StoreError::NotFound { .. })));
}

async fn blobs_no_file_names_are_listed_once_written_before_the_time_asked(store: Arc<dyn Store>) {
    let ws = home();
    let (named, unnamed) = (FileId("f-named".into()), FileId("f-unnamed".into()));
    for id in [&named, &unnamed] {
        store.put_blob(&BlobKey::new(&ws, id), body(vec![b"bytes".to_vec()])).await.unwrap();
    }
    store.insert_file(&ws, &file("f-named", at(1))).await.unwrap();
    let listed = |before: Timestamp| {
        use futures::TryStreamExt;
        let store = store.clone();
        async move { store.blobs_before(before).try_collect::<Vec<BlobKey>>().await.unwrap() }
    };
    let now = Timestamp::now();

    assert_eq!(listed(now.plus(std::time::Duration::from_secs(60))).await, vec![BlobKey::new(&ws, &unnamed)]);
    assert_eq!(listed(now.minus(std::time::Duration::from_secs(60))).await, vec![], "written since");
}

async fn a_setting_keeps_the_first_value_written(store: Arc<dyn Store>) {
    let first = store.setting("test.key", "one").await.unwrap();
    let second = store.setting("test.key", "two").await.unwrap();

    assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
}

fn home() -> WorkspaceId {
    WorkspaceId::default_workspace()
}

/// Whole seconds from a fixed moment, so orders by time are unambiguous.
fn at(seconds: i64) -> Timestamp {
    Timestamp::from_micros(1_750_000_000_123_456 + seconds * 1_000_000)
}

fn page(offset: i64, limit: i64) -> Page {
    Page { offset, limit }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

fn config(name: &str) -> AgentConfig {
    serde_json::from_value(json!({
        "name": name, "model": "echo", "instructions": null, "description": null, "tools": [],
        "completion_args": {}, "handoffs": null, "guardrails": null, "metadata": null,
        "version_message": null, "deployment_chat": false
    }))
    .unwrap()
}

/// A config with every member set, so a round trip shows any that is lost.
fn full_config(name: &str) -> AgentConfig {
    serde_json::from_value(json!({
        "name": name, "model": "mistral-small-latest", "instructions": "Be brief.",
        "description": "Answers questions.",
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Finds things.",
                   "strict": true, "parameters": {"type": "object", "properties": {}}}},
                  {"type": "web_search"}],
        "completion_args": {"temperature": 0.3, "max_tokens": 64, "stop": ["\n\n"], "random_seed": 7},
        "handoffs": ["ag_other"],
        "guardrails": [{"block_on_error": true, "moderation_llm_v1": {"action": "block"}}],
        "metadata": {"team": "a", "nested": {"n": 1.5}},
        "version_message": "First.", "deployment_chat": true
    }))
    .unwrap()
}

async fn active(store: &Arc<dyn Store>, ws: &WorkspaceId, id: &AgentId) -> AgentRecord {
    store.agent(ws, id, &VersionSelector::Active).await.unwrap()
}

async fn versions(store: &Arc<dyn Store>, ws: &WorkspaceId, id: &AgentId) -> Vec<i64> {
    store.list_agent_versions(ws, id, page(0, 100)).await.unwrap().into_iter().map(|r| r.version).collect()
}

/// A conversation with its agent (else a model conversation) and nothing else set.
fn conversation(id: &str, agent: Option<&str>, created: Timestamp) -> ConversationRecord {
    ConversationRecord {
        id: ConversationId(id.into()),
        head: None,
        agent_id: agent.map(str::to_owned),
        agent_version: None,
        model: None,
        instructions: None,
        tools: None,
        completion_args: None,
        guardrails: None,
        name: None,
        description: None,
        metadata: None,
        created_at: created,
        updated_at: created,
    }
}

fn user(text: &str) -> Entry {
    Entry::MessageInput(MessageInput {
        object: EntryObject,
        id: EntryId::generate("msg_"),
        created_at: at(0),
        completed_at: None,
        role: "user".into(),
        content: Content::Text(text.into()),
        prefix: false,
    })
}

fn assistant(text: &str) -> Entry {
    Entry::MessageOutput(MessageOutput {
        object: EntryObject,
        id: EntryId::generate("msg_"),
        created_at: at(0),
        completed_at: Some(at(0)),
        role: "assistant".into(),
        content: Content::Chunks(vec![json!({"type": "text", "text": text})]),
        agent_id: None,
        model: Some("echo".into()),
    })
}

/// `entry` with the same id and another text (as another workspace might store it).
fn theirs(entry: &Entry, text: &str) -> Entry {
    match entry {
        Entry::MessageInput(m) => {
            Entry::MessageInput(MessageInput { content: Content::Text(text.into()), ..m.clone() })
        }
        Entry::MessageOutput(m) => {
            Entry::MessageOutput(MessageOutput { content: Content::Text(text.into()), ..m.clone() })
        }
        other => other.clone(),
    }
}

fn texts(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| match entry {
            Entry::MessageInput(m) => m.content.text(),
            Entry::MessageOutput(m) => m.content.text(),
            other => other.kind().to_owned(),
        })
        .collect()
}

/// The first turn of `conversation`: creates its row with `entries` as a new root.
fn start(conversation: &ConversationRecord, entries: Vec<Entry>) -> TurnWrite {
    let head = entries.last().map(|e| e.id().clone());
    TurnWrite {
        conversation: ConversationRecord { head, ..conversation.clone() },
        create: true,
        expected_head: None,
        parent: None,
        entries,
        // Starts take the batching path, appends the one a lone turn takes (SQLite writes
        // those on the caller's thread): the contract holds on both.
        alone: false,
    }
}

/// A turn appended to `conversation` as the engine builds it: on `head` (at `depth` in the
/// tree), expecting the head still to be there.
fn append(
    conversation: &ConversationRecord,
    head: &EntryId,
    depth: i64,
    entries: Vec<Entry>,
    now: Timestamp,
) -> TurnWrite {
    let new_head = entries.last().map(|e| e.id().clone());
    TurnWrite {
        conversation: ConversationRecord { head: new_head, updated_at: now, ..conversation.clone() },
        create: false,
        expected_head: Some(head.clone()),
        parent: Some((head.clone(), depth)),
        entries,
        alone: true,
    }
}

// ---------------------------------------------------------------------------------------
// Idempotency keys

/// A write to agent `id` at time `n`.
fn write<'a>(ws: &'a WorkspaceId, id: &'a AgentId, n: i64) -> AgentWrite<'a> {
    AgentWrite { ws, id, now: at(n) }
}

fn version(expected_revision: i64, config: &AgentConfig) -> NewVersion<'_> {
    NewVersion { expected_revision, config }
}

fn seconds(at: i64) -> Timestamp {
    Timestamp::from_micros(at * 1_000_000)
}

fn key_use<'a>(ws: &'a WorkspaceId, key: &'a str, fingerprint: &'a str) -> KeyUse<'a> {
    KeyUse { ws, key, fingerprint }
}

/// Claims `key` at `[now, expires_at, abandoned_before]` (in seconds).
async fn claim(store: &Arc<dyn Store>, ws: &WorkspaceId, key: &str, fingerprint: &str, times: [i64; 3]) -> KeyClaim {
    let [now, expires, abandoned] = times.map(seconds);
    let times = ClaimTimes { now, expires_at: expires, abandoned_before: abandoned };
    store.claim_key(key_use(ws, key, fingerprint), times).await.unwrap()
}

async fn an_idempotency_key_is_claimed_once_answered_then_replayed(store: Arc<dyn Store>) {
    let (ws, other) = (WorkspaceId("ws_a".into()), WorkspaceId("ws_b".into()));
    let times = [100, 200, 50];

    assert_eq!(claim(&store, &ws, "key", "f1", times).await, KeyClaim::Claimed);
    assert_eq!(claim(&store, &ws, "key", "f1", times).await, KeyClaim::Running);
    assert_eq!(claim(&store, &ws, "key", "f2", times).await, KeyClaim::Mismatch);
    assert_eq!(claim(&store, &other, "key", "f2", times).await, KeyClaim::Claimed, "each workspace has its own keys");

    let answer =
        StoredAnswer { status: 200, content_type: "text/event-stream".into(), body: b"event: x\n\n\0\xff".to_vec() };
    store.finish_key(key_use(&ws, "key", "f1"), &answer).await.unwrap();

    assert_eq!(claim(&store, &ws, "key", "f1", times).await, KeyClaim::Answered(answer));
    assert_eq!(claim(&store, &ws, "key", "f2", times).await, KeyClaim::Mismatch);
}

async fn a_released_or_expired_or_abandoned_key_can_be_claimed_again(store: Arc<dyn Store>) {
    let ws = WorkspaceId("ws_a".into());
    let answer = StoredAnswer { status: 200, content_type: "application/json".into(), body: b"{}".to_vec() };

    claim(&store, &ws, "released", "f", [100, 200, 50]).await;
    store.release_key(key_use(&ws, "released", "f")).await.unwrap();
    let again = claim(&store, &ws, "released", "g", [101, 201, 51]).await;
    assert_eq!(again, KeyClaim::Claimed, "a released key is free for any request");

    claim(&store, &ws, "expired", "f", [100, 200, 50]).await;
    store.finish_key(key_use(&ws, "expired", "f"), &answer).await.unwrap();
    let after_expiry = claim(&store, &ws, "expired", "g", [200, 300, 150]).await;
    assert_eq!(after_expiry, KeyClaim::Claimed);

    claim(&store, &ws, "abandoned", "f", [100, 200, 50]).await;
    let still_running = claim(&store, &ws, "abandoned", "f", [120, 220, 99]).await;
    assert_eq!(still_running, KeyClaim::Running);
    let taken_over = claim(&store, &ws, "abandoned", "f", [160, 260, 101]).await;
    assert_eq!(taken_over, KeyClaim::Claimed, "a claim older than the lease was left by a dead process");

    // Releasing never forgets an answer.
    store.finish_key(key_use(&ws, "expired", "g"), &answer).await.unwrap();
    store.release_key(key_use(&ws, "expired", "g")).await.unwrap();
    let kept = claim(&store, &ws, "expired", "g", [210, 310, 160]).await;
    assert_eq!(kept, KeyClaim::Answered(answer));

    assert_eq!(store.purge_keys(seconds(100_000)).await.unwrap(), 3);
    assert_eq!(claim(&store, &ws, "expired", "h", [100_001, 100_002, 0]).await, KeyClaim::Claimed);
}

async fn a_claim_kept_alive_is_not_taken_over(store: Arc<dyn Store>) {
    let ws = WorkspaceId("ws_a".into());
    claim(&store, &ws, "alive", "f", [100, 10_000, 50]).await;

    store.touch_key(key_use(&ws, "alive", "f"), seconds(150)).await.unwrap();

    assert_eq!(claim(&store, &ws, "alive", "f", [160, 10_000, 140]).await, KeyClaim::Running);
    assert_eq!(claim(&store, &ws, "alive", "f", [200, 10_000, 155]).await, KeyClaim::Claimed);
}

async fn a_conversations_latest_run_keeps_its_events_until_purged(store: Arc<dyn Store>) {
    let ws = WorkspaceId("ws_a".into());
    let event = |seq: i64| StoredEvent { seq, name: format!("e{seq}"), data: format!("{{\"n\":{seq}}}") };
    let batch = |run_id, started: i64, events: &'static [i64], finished: Option<i64>| {
        let store = store.clone();
        let ws = ws.clone();
        async move {
            let events: Vec<StoredEvent> = events.iter().map(|&n| event(n)).collect();
            let run = RunWrite {
                ws: &ws,
                conversation_id: "conv_1",
                run_id,
                started_at: seconds(started),
                events: &events,
                finished_at: finished.map(seconds),
            };
            store.write_runs(&[run]).await.unwrap();
        }
    };
    assert_eq!(store.run_events(&ws, "conv_1", -1).await.unwrap(), None);

    batch("run_a", 10, &[0, 1], None).await;
    batch("run_a", 10, &[2], Some(20)).await;

    let after = store.run_events(&ws, "conv_1", 0).await.unwrap().unwrap();
    assert_eq!((after.run_id.as_str(), after.finished_at), ("run_a", Some(seconds(20))));
    assert_eq!(after.events, [event(1), event(2)]);
    let other = WorkspaceId("ws_b".into());
    assert_eq!(store.run_events(&other, "conv_1", -1).await.unwrap(), None, "another workspace sees nothing");

    // A newer run replaces it (a late batch of the older one does not take it back); what
    // it replaced goes at the next purge.
    batch("run_b", 30, &[], None).await;
    batch("run_a", 10, &[3], Some(31)).await;
    let newer = store.run_events(&ws, "conv_1", -1).await.unwrap().unwrap();
    assert_eq!((newer.run_id.as_str(), newer.finished_at, newer.events.len()), ("run_b", None, 0));
    assert_eq!(store.purge_runs(seconds(25)).await.unwrap(), 4);
    batch("run_b", 30, &[0], Some(40)).await;
    assert_eq!(store.purge_runs(seconds(35)).await.unwrap(), 0, "a run that ended after the bound is kept");
    assert_eq!(store.purge_runs(seconds(50)).await.unwrap(), 1);
    assert_eq!(store.run_events(&ws, "conv_1", -1).await.unwrap(), None);

    // Several conversations' runs in one batch, across workspaces, each where it belongs.
    let other_ws = WorkspaceId("ws_b".into());
    let (first, second) = ([event(0), event(1)], [event(0)]);
    let run = |ws, conversation_id, run_id, events| RunWrite {
        ws,
        conversation_id,
        run_id,
        started_at: seconds(60),
        events,
        finished_at: None,
    };
    let runs = [run(&other_ws, "conv_9", "run_c", &second[..]), run(&ws, "conv_2", "run_d", &first[..])];
    store.write_runs(&runs).await.unwrap();
    let (d, c) = (
        store.run_events(&ws, "conv_2", -1).await.unwrap().unwrap(),
        store.run_events(&other_ws, "conv_9", -1).await.unwrap().unwrap(),
    );
    assert_eq!((d.run_id.as_str(), d.events.len()), ("run_d", 2));
    assert_eq!((c.run_id.as_str(), c.events.len()), ("run_c", 1));
    assert_eq!(store.run_events(&ws, "conv_9", -1).await.unwrap(), None, "each run stays in its workspace");
}
