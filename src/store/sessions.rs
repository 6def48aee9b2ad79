//! Sessions and their events.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::group_commit::{GroupCommit, Statement};
use super::{Store, StoreError};
use crate::reports::{EventRecord, SessionRecord, SessionSummary, summarize};

/// A session row, with the hash of its access token.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub record: SessionRecord,
    pub token_hash: String,
    pub parent_email: Option<String>,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub token_hash: &'a str,
    pub learner_name: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub parent_email: Option<&'a str>,
    pub started_at_ms: i64,
}

pub struct NewEvent<'a> {
    pub id: &'a str,
    pub session_id: &'a str,
    pub kind: &'a str,
    pub detail: Option<&'a str>,
    pub correct: Option<bool>,
    pub at_ms: i64,
}

/// What happened to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    Recorded,
    /// An event with this id was recorded before (a request sent again with its
    /// `Idempotency-Key`): nothing was written, and this is the one recorded.
    AlreadyRecorded(StoredEvent),
    SessionCompleted,
    SessionMissing,
    /// The session holds [`MAX_EVENTS`] already.
    SessionFull,
}

/// An event as it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub kind: String,
    pub detail: Option<String>,
    pub correct: Option<bool>,
    pub at_ms: i64,
}

/// The most events one session takes. A session is read whole to be summarised (at its
/// completion, for its report): without a bound, one client could make that read as large
/// as it liked. No learning session comes near it.
pub const MAX_EVENTS: i64 = 10_000;

/// Inserts the session; `false` when one with its id is there already (a start sent again
/// with its `Idempotency-Key`), which is left as it was.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn insert(store: &Store, session: &NewSession<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO sessions (id, access_token_hash, learner_name, subject, parent_email, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(session.id)
    .bind(session.token_hash)
    .bind(session.learner_name)
    .bind(session.subject)
    .bind(session.parent_email)
    .bind(session.started_at_ms)
    .execute(store.writer())
    .await?;
    Ok(done.rows_affected() == 1)
}

fn session_row(row: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        record: SessionRecord {
            id: row.try_get("id")?,
            learner_name: row.try_get("learner_name")?,
            subject: row.try_get("subject")?,
            started_at_ms: row.try_get("started_at")?,
            completed_at_ms: row.try_get("completed_at")?,
        },
        token_hash: row.try_get("access_token_hash")?,
        parent_email: row.try_get("parent_email")?,
    })
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(store: &Store, id: &str) -> Result<Option<SessionRow>, StoreError> {
    let started = std::time::Instant::now();
    let row = sqlx::query(
        "SELECT id, access_token_hash, learner_name, subject, parent_email, started_at, completed_at \
         FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    crate::metrics::db_query("session_get", started.elapsed());
    Ok(row.as_ref().map(session_row).transpose()?)
}

/// A session with its events in order, in one read.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn with_events(
    store: &Store,
    id: &str,
) -> Result<Option<(SessionRow, Vec<EventRecord>)>, StoreError> {
    let started = std::time::Instant::now();
    let query = sqlx::query(
        "SELECT s.id, s.access_token_hash, s.learner_name, s.subject, s.parent_email, s.started_at, \
                s.completed_at, e.kind, e.correct, e.created_at AS event_at \
         FROM sessions s LEFT JOIN session_events e ON e.session_id = s.id \
         WHERE s.id = $1 ORDER BY e.created_at, e.id",
    )
    .bind(id);
    let rows = match store.kept().await {
        Some(mut conn) => query.fetch_all(&mut *conn).await?,
        None => query.fetch_all(store.reader()).await?,
    };
    crate::metrics::db_query("session_with_events", started.elapsed());
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let session = session_row(first)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(kind) = row.try_get::<Option<String>, _>("kind")? {
            events.push(EventRecord {
                kind,
                correct: row.try_get::<Option<i64>, _>("correct")?.map(|v| v != 0),
                at_ms: row.try_get::<Option<i64>, _>("event_at")?.unwrap_or(0),
            });
        }
    }
    Ok(Some((session, events)))
}

/// A session's summary as the database has it, `now_ms` timing a session still open.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn summary(
    store: &Store,
    id: &str,
    now_ms: i64,
) -> Result<Option<SessionSummary>, StoreError> {
    Ok(with_events(store, id)
        .await?
        .map(|(session, events)| summarize(&session.record, &events, now_ms)))
}

/// Records an event only while its session is open and holds fewer than [`MAX_EVENTS`]: one
/// statement, so a completion racing with it cannot let an event in after the session
/// closed. An event whose id was recorded before (the id a repeated request's
/// `Idempotency-Key` gives) is not recorded again, whatever the session's state since.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn add_event(store: &Store, event: &NewEvent<'_>) -> Result<EventOutcome, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO session_events (id, session_id, kind, detail, correct, created_at) \
         SELECT $1, $2, $3, $4, $5, $6 \
         WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $2 AND completed_at IS NULL) \
         AND (SELECT COUNT(*) FROM session_events WHERE session_id = $2) < $7 \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(event.id)
    .bind(event.session_id)
    .bind(event.kind)
    .bind(event.detail)
    .bind(event.correct.map(i64::from))
    .bind(event.at_ms)
    .bind(MAX_EVENTS)
    .execute(store.writer())
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(EventOutcome::Recorded);
    }
    if let Some(recorded) = recorded_event(store, event).await? {
        return Ok(EventOutcome::AlreadyRecorded(recorded));
    }
    Ok(match get(store, event.session_id).await? {
        Some(session) if session.record.completed_at_ms.is_some() => EventOutcome::SessionCompleted,
        Some(_) => EventOutcome::SessionFull,
        None => EventOutcome::SessionMissing,
    })
}

/// The event of this session recorded under `event`'s id, if any (read from the writer, which
/// the insert that found it just used).
async fn recorded_event(
    store: &Store,
    event: &NewEvent<'_>,
) -> Result<Option<StoredEvent>, StoreError> {
    let row = sqlx::query(
        "SELECT kind, detail, correct, created_at FROM session_events \
         WHERE id = $1 AND session_id = $2",
    )
    .bind(event.id)
    .bind(event.session_id)
    .fetch_optional(store.writer())
    .await?;
    row.map(|row| {
        Ok(StoredEvent {
            kind: row.try_get(0)?,
            detail: row.try_get(1)?,
            correct: row.try_get::<Option<i64>, _>(2)?.map(|v| v != 0),
            at_ms: row.try_get(3)?,
        })
    })
    .transpose()
    .map_err(|e: sqlx::Error| StoreError::from(e))
}

/// Completes the session once; returns whether this call completed it. A later call
/// changes nothing, the parent's address included. Given `events_seen`, completes it only
/// if it still has that many events, so that a summary computed from them is the whole
/// session. Written through group commit, since completions come in bursts.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn complete(
    writes: &GroupCommit,
    id: &str,
    parent_email: Option<&str>,
    at_ms: i64,
    events_seen: Option<usize>,
) -> Result<bool, StoreError> {
    macro_rules! complete {
        () => {
            "UPDATE sessions SET completed_at = $2, parent_email = COALESCE($3, parent_email) \
             WHERE id = $1 AND completed_at IS NULL"
        };
    }
    let statement = match events_seen {
        None => Statement::new(complete!()),
        Some(_) => Statement::new(concat!(
            complete!(),
            " AND (SELECT COUNT(*) FROM session_events WHERE session_id = $1) = $4"
        )),
    }
    .bind(id)
    .bind(at_ms)
    .bind(parent_email);
    let statement = match events_seen {
        None => statement,
        Some(n) => statement.bind(i64::try_from(n).unwrap_or(i64::MAX)),
    };
    let affected = writes
        .run(vec![statement])
        .await
        .map_err(StoreError::from)?;
    Ok(affected.first() == Some(&1))
}

/// The sessions whose report goes to `email`, oldest first.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn of_parent(store: &Store, email: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM sessions WHERE parent_email = $1 ORDER BY started_at, id",
    )
    .bind(email)
    .fetch_all(store.reader())
    .await?)
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn events(store: &Store, session_id: &str) -> Result<Vec<EventRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT kind, correct, created_at FROM session_events WHERE session_id = $1 ORDER BY created_at, id",
    )
    .bind(session_id)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(EventRecord {
                kind: row.try_get(0)?,
                correct: row.try_get::<Option<i64>, _>(1)?.map(|v| v != 0),
                at_ms: row.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
