use herald::store::{Backend as StoreBackend, Store};

use crate::helpers::{Backend, TABLES, TestDatabase};
use crate::on_both_backends;

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
    let db = TestDatabase::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
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
    let db = TestDatabase::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
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

on_both_backends!(
    migrations_create_every_table_and_record_when,
    the_same_sql_round_trips_on_both_backends,
    foreign_keys_are_enforced,
);
