use herald::store::{Backend as StoreBackend, Store};

use crate::helpers::{Backend, TABLES, TestDatabase};
use crate::on_both_backends;

/// A migrated store on a database of its own, which lives as long as the first value.
async fn migrated(backend: Backend) -> (TestDatabase, Store) {
    let db = TestDatabase::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    (db, store)
}

async fn migrations_create_every_table_and_record_when(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    let expected = match backend {
        Backend::Sqlite => StoreBackend::Sqlite,
        Backend::Postgres => StoreBackend::Postgres,
    };
    assert_eq!(store.backend(), expected);

    let before = store.migration_status().await.unwrap();
    assert!(before.iter().all(|m| m.applied_at_ms.is_none()));
    assert!(!store.migrations_current().await.unwrap());

    let started = chrono::Utc::now().timestamp_millis();
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrating twice is a no-op");

    let after = store.migration_status().await.unwrap();
    assert_eq!(after.len(), herald::store::expected_migrations());
    let applied = after[0].applied_at_ms.expect("applied");
    assert!(
        (applied - started).abs() < 60_000,
        "applied_at {applied} vs {started}"
    );
    for table in TABLES {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(store.reader())
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(count, 0);
    }
    store.close().await;
}

async fn the_same_sql_round_trips_on_both_backends(backend: Backend) {
    let (_db, store) = migrated(backend).await;
    let now = herald::store::now_ms();
    sqlx::query(
        "INSERT INTO rate_limit_policies (group_name, tier, max_requests, window_seconds, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (group_name, tier) DO UPDATE SET max_requests = excluded.max_requests",
    )
    .bind("stats")
    .bind("default")
    .bind(20i64)
    .bind(60i64)
    .bind(now)
    .execute(store.writer())
    .await
    .unwrap();
    let (max, at): (i64, i64) = sqlx::query_as(
        "SELECT max_requests, updated_at FROM rate_limit_policies WHERE group_name = $1",
    )
    .bind("stats")
    .fetch_one(store.reader())
    .await
    .unwrap();
    assert_eq!((max, at), (20, now));

    // Constraints hold on both: a non-positive limit is refused.
    let refused = sqlx::query(
        "INSERT INTO rate_limit_policies (group_name, tier, max_requests, window_seconds, updated_at) \
         VALUES ('reports', 'default', 0, 60, 0)",
    )
    .execute(store.writer())
    .await;
    assert!(refused.is_err());
    store.close().await;
}

async fn foreign_keys_are_enforced(backend: Backend) {
    let (_db, store) = migrated(backend).await;
    let orphan = sqlx::query(
        "INSERT INTO session_events (id, session_id, kind, created_at) VALUES ('e1', 'missing', 'step', 0)",
    )
    .execute(store.writer())
    .await;
    assert!(
        orphan.is_err(),
        "an event for a missing session must be refused"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.writer())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.writer())
        .await
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    store.close().await;
}

/// The ledger's unsettled occurrences, which every replica sweeps for: running, or failed
/// and not yet run again five times, their last run recent; of every job.
async fn the_ledger_lists_the_runs_that_are_not_settled(backend: Backend) {
    use herald::store::jobs::{finish, try_start, unsettled};
    use herald_actors::scheduler::Claim;

    let (_db, store) = migrated(backend).await;
    let now = herald::store::now_ms();
    let day = 86_400_000;
    let start = |job: &'static str, occurrence: i64, at: i64, claim: Claim| {
        let store = store.clone();
        async move {
            try_start(&store, job, occurrence, at, 60_000, "replica-a", claim)
                .await
                .unwrap()
                .expect("started")
        }
    };
    let ended = |run: String, well: bool| {
        let store = store.clone();
        async move { finish(&store, &run, well, "{}", now).await.unwrap() }
    };
    ended(start("weekly_digest", 1, now, Claim::Start).await, true).await;
    ended(start("weekly_digest", 2, now, Claim::Start).await, false).await;
    start("weekly_digest", 3, now, Claim::Start).await;
    // Failed, but its run started before the sweep's horizon.
    ended(
        start("weekly_digest", 4, now - 2 * day, Claim::Start).await,
        false,
    )
    .await;
    // Failed six times: left for an operator.
    ended(start("weekly_digest", 5, now, Claim::Start).await, false).await;
    for attempts in 1..=5 {
        ended(
            start("weekly_digest", 5, now, Claim::Rerun { attempts }).await,
            false,
        )
        .await;
    }
    ended(start("purge_old", 2, now, Claim::Start).await, false).await;

    let listed = unsettled(&store, now - day, 5).await.unwrap();
    assert_eq!(
        listed,
        [
            ("purge_old".to_owned(), 2),
            ("weekly_digest".to_owned(), 2),
            ("weekly_digest".to_owned(), 3),
        ]
    );
    store.close().await;
}

/// A database a newer herald migrated (a rolling update, a rollback): this build migrates
/// it (a no-op), says which migrations it does not know, and serves it.
async fn a_database_a_newer_herald_migrated_is_served(backend: Backend) {
    let (db, store) = migrated(backend).await;
    let checksum = match backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    sqlx::query(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, {checksum}, 0)"
    ))
    .execute(store.writer())
    .await
    .unwrap();
    store
        .migrate()
        .await
        .expect("a newer migration is no error");
    assert_eq!(
        store.newer_migrations().await.unwrap(),
        [(999, "from the future".to_owned())]
    );
    assert!(store.migrations_current().await.unwrap());
    store.close().await;

    herald::install_tls_provider();
    let app = crate::helpers::spawn_app_on(db, |_| {}).await;
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

/// The replicas' rows: renewed in place, listed while fresh, removed as a replica stops
/// along with the rows of replicas long gone.
async fn replicas_are_listed_while_they_renew_their_rows(backend: Backend) {
    use herald::store::replicas::{ReplicaRow, announce, live, withdraw};

    let (_db, store) = migrated(backend).await;
    let row = |instance: &str, seen_at_ms: i64| ReplicaRow {
        instance: instance.to_owned(),
        settings: format!("{{\"SMTP_HOST\":\"{instance}\"}}"),
        started_at_ms: 1_000,
        seen_at_ms,
    };
    announce(&store, &row("a", 10_000)).await.unwrap();
    announce(&store, &row("b", 5_000)).await.unwrap();
    announce(&store, &row("c", 1_000)).await.unwrap();
    announce(&store, &row("b", 20_000)).await.unwrap();
    let names = |rows: Vec<ReplicaRow>| rows.into_iter().map(|r| r.instance).collect::<Vec<_>>();
    assert_eq!(names(live(&store, 10_000).await.unwrap()), ["a", "b"]);
    assert_eq!(live(&store, 20_000).await.unwrap(), [row("b", 20_000)]);

    withdraw(&store, "a", 2_000).await.unwrap();
    assert_eq!(
        names(live(&store, 0).await.unwrap()),
        ["b"],
        "a stopped, c long gone"
    );
    store.close().await;
}

async fn claimed_rows_carry_the_preference_and_can_be_handed_back(backend: Backend) {
    use herald::store::group_commit::GroupCommit;
    use herald::store::outbox::{self, LedgerKey};

    let (_db, store) = migrated(backend).await;
    let writes = GroupCommit::spawn(store.clone());
    for i in 0..3 {
        let key = LedgerKey {
            idempotency_key: &format!("key{i}"),
            email: &format!("parent{i}@example.com"),
            email_type: "session_reports",
            session_id: Some("session"),
            week_start: None,
            zone: None,
        };
        writes
            .run(outbox::enqueue_statements(&key, 1_000 + i, 1_000 + i))
            .await
            .unwrap();
    }
    sqlx::query("UPDATE email_preferences SET session_reports_enabled = 0 WHERE email = $1")
        .bind("parent1@example.com")
        .execute(store.writer())
        .await
        .unwrap();

    let claimed = outbox::claim(&store, 10, 2_000, 60_000, "test")
        .await
        .unwrap();
    let mut seen: Vec<(String, bool)> = claimed
        .iter()
        .map(|row| {
            let (enabled, key) = row.delivery.preference.clone().expect("a preferences row");
            assert!(key.is_some_and(|k| !k.is_empty()), "an unsubscribe key");
            (row.delivery.email.clone(), enabled)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("parent0@example.com".to_owned(), true),
            ("parent1@example.com".to_owned(), false),
            ("parent2@example.com".to_owned(), true),
        ]
    );
    assert!(
        outbox::claim(&store, 10, 2_001, 60_000, "test")
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not claimed twice"
    );

    let back: Vec<(&str, i64)> = claimed
        .iter()
        .filter(|row| row.delivery.email != "parent1@example.com")
        .map(|row| (row.id.as_str(), row.lease_until))
        .collect();
    // A lease that is not the row's (it ran out and the row was claimed again) changes nothing.
    let parent1 = claimed
        .iter()
        .find(|row| row.delivery.email == "parent1@example.com")
        .unwrap();
    outbox::release(&store, &[(parent1.id.as_str(), parent1.lease_until - 1)])
        .await
        .unwrap();
    outbox::release(&store, &back).await.unwrap();
    let mut again: Vec<String> = outbox::claim(&store, 10, 2_002, 60_000, "test")
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.delivery.email)
        .collect();
    again.sort();
    assert_eq!(again, ["parent0@example.com", "parent2@example.com"]);
    store.close().await;
}

async fn a_completion_closes_only_over_the_events_it_saw(backend: Backend) {
    use herald::store::group_commit::GroupCommit;
    use herald::store::sessions::{self, NewEvent, NewSession};

    let (_db, store) = migrated(backend).await;
    let writes = GroupCommit::spawn(store.clone());
    let session = NewSession {
        id: "s1",
        token_hash: "hash",
        learner_name: Some("Ada"),
        subject: None,
        parent_email: None,
        started_at_ms: 1_000,
    };
    assert!(sessions::insert(&store, &session).await.unwrap());
    let again = NewSession {
        token_hash: "another",
        ..session
    };
    assert!(
        !sessions::insert(&store, &again).await.unwrap(),
        "a second session of the same id is not inserted"
    );
    let kept = sessions::get(&store, "s1").await.unwrap().unwrap();
    assert_eq!(kept.token_hash, "hash", "the first is left as it was");
    for (i, kind) in ["step", "answer"].iter().enumerate() {
        let event = NewEvent {
            id: &format!("e{i}"),
            session_id: "s1",
            kind,
            detail: None,
            correct: Some(true),
            at_ms: 2_000 + i as i64,
        };
        sessions::add_event(&store, &event).await.unwrap();
    }
    let (row, events) = sessions::with_events(&store, "s1").await.unwrap().unwrap();
    assert_eq!(row.record.learner_name.as_deref(), Some("Ada"));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["step", "answer"]);
    assert!(
        sessions::with_events(&store, "nope")
            .await
            .unwrap()
            .is_none()
    );

    // An event arrived after the read that saw one: no completion.
    assert!(
        !sessions::complete(&writes, "s1", None, 3_000, Some(1))
            .await
            .unwrap()
    );
    assert!(
        sessions::complete(&writes, "s1", Some("p@example.com"), 3_000, Some(2))
            .await
            .unwrap()
    );
    assert!(
        !sessions::complete(&writes, "s1", None, 4_000, None)
            .await
            .unwrap(),
        "once only"
    );
    let (row, _) = sessions::with_events(&store, "s1").await.unwrap().unwrap();
    assert_eq!(row.record.completed_at_ms, Some(3_000));
    assert_eq!(row.parent_email.as_deref(), Some("p@example.com"));
    store.close().await;
}

/// An operator's unsubscribe of a long list (another sender's, when moving to herald) goes
/// in transactions of several hundred: every address of every batch is changed, the last
/// partial batch too, each once however often the list names it; a dry run gives the same
/// counts and changes nothing.
async fn an_operator_unsubscribes_a_long_list_in_batches(backend: Backend) {
    use herald::store::preferences::{self, Change, Source, Unsubscribe};
    let (_db, store) = migrated(backend).await;
    let off = Change {
        weekly_digest: Some(false),
        ..Change::default()
    };
    preferences::change(&store, "parent7@example.com", &off, Source::Api, 0)
        .await
        .unwrap();
    let mut list: Vec<String> = (0..1_234)
        .map(|n| format!("parent{n}@example.com"))
        .collect();
    list.extend([
        "parent3@example.com".to_owned(),
        "parent1233@example.com".to_owned(),
    ]);
    let unsubscribe = |dry_run| {
        preferences::unsubscribe_by_operator(
            &store,
            &list,
            Unsubscribe::WeeklyDigest,
            "cli@test",
            1_000,
            dry_run,
        )
    };
    assert_eq!(unsubscribe(true).await.unwrap(), (1_233, 1));
    assert_eq!(
        preferences::switches(&store, "parent1233@example.com")
            .await
            .unwrap(),
        None,
        "a dry run changes nothing"
    );
    assert_eq!(unsubscribe(false).await.unwrap(), (1_233, 1));
    let count = async |sql: &str| -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(store.reader())
            .await
            .unwrap()
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM email_preferences WHERE weekly_digest_enabled = 0 AND session_reports_enabled = 1").await,
        1_234
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM preference_changes WHERE source = 'operator'").await,
        1_233,
        "each change recorded once"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_log WHERE action = 'recipient.unsubscribe'").await,
        1,
        "the real run only, once"
    );
    assert_eq!(unsubscribe(false).await.unwrap(), (0, 1_234));
    store.close().await;
}

on_both_backends!(
    an_operator_unsubscribes_a_long_list_in_batches,
    a_completion_closes_only_over_the_events_it_saw,
    the_ledger_lists_the_runs_that_are_not_settled,
    replicas_are_listed_while_they_renew_their_rows,
    a_database_a_newer_herald_migrated_is_served,
    claimed_rows_carry_the_preference_and_can_be_handed_back,
    migrations_create_every_table_and_record_when,
    the_same_sql_round_trips_on_both_backends,
    foreign_keys_are_enforced,
);
