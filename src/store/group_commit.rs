//! Group commit: writes that arrive while the writer is busy share one transaction, so a
//! burst costs one durable flush instead of one per write.
//!
//! On SQLite a batch goes to the connection's thread as raw SQL texts of many statements
//! (`sqlx::raw_sql`, sqlx's supported way to run several statements at once), each value
//! written into the text as a literal that cannot be anything else: an integer in decimal,
//! text as a hex blob cast to text, so only digits and hex digits come from the values. One
//! round trip per text instead of one per statement: measured, a statement at a time cost 6%
//! of the email throughput and twice the context switches (BENCHMARKS.md). On PostgreSQL every statement is a
//! prepared query with bound arguments, one after another.
//!
//! A job that fails is rolled back alone and the others still commit: the batch first runs
//! as it is, and only if a statement fails is it rolled back and run again with a savepoint
//! around each job, a statement at a time. A caller returns only once its job is committed.

use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::Executor;

use super::{Backend, Store};

/// One statement of a job: SQL and owned arguments, so that it can run again.
#[derive(Debug, Clone)]
pub struct Statement {
    sql: &'static str,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<String> for Arg {
    fn from(value: String) -> Self {
        Self::Text(Some(value))
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Self::Text(Some(value.to_owned()))
    }
}

impl From<Option<String>> for Arg {
    fn from(value: Option<String>) -> Self {
        Self::Text(value)
    }
}

impl From<Option<&str>> for Arg {
    fn from(value: Option<&str>) -> Self {
        Self::Text(value.map(str::to_owned))
    }
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Self::Int(Some(value))
    }
}

impl From<Option<i64>> for Arg {
    fn from(value: Option<i64>) -> Self {
        Self::Int(value)
    }
}

impl Statement {
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql,
            args: Vec::new(),
        }
    }

    /// Binds the next `$n` argument: text or an integer, either possibly NULL.
    #[allow(private_bounds)]
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    pub(crate) async fn execute(&self, conn: &mut sqlx::AnyConnection) -> Result<u64, sqlx::Error> {
        let query = bind_all(sqlx::query(self.sql), &self.args);
        Ok(query.execute(conn).await?.rows_affected())
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_all<'q>(mut query: Query<'q>, args: impl IntoIterator<Item = &'q Arg>) -> Query<'q> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_deref()),
            Arg::Int(int) => query.bind(*int),
        };
    }
    query
}

/// Where a statement's `$n` names no argument it was given.
fn bad_placeholder(sql: &str, n: usize, args: usize) -> sqlx::Error {
    sqlx::Error::Protocol(format!("${n} in a statement given {args} arguments: {sql}"))
}

/// Appends `sql` with every `$n` outside string literals replaced by the literal of the
/// `n`th argument: an integer in decimal, text as `CAST(X'…' AS TEXT)` (its UTF-8 bytes in
/// hex), NULL as `NULL`. The statements are herald's own constants, whose only quoted parts
/// are `'…'` literals.
fn inline(statement: &Statement, out: &mut String) -> Result<(), sqlx::Error> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut in_literal = false;
    let mut chars = statement.sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' || in_literal {
            in_literal ^= c == '\'';
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + digit as usize;
            chars.next();
        }
        let arg = n
            .checked_sub(1)
            .and_then(|i| statement.args.get(i))
            .ok_or_else(|| bad_placeholder(statement.sql, n, statement.args.len()))?;
        match arg {
            Arg::Int(Some(value)) => out.push_str(itoa::Buffer::new().format(*value)),
            Arg::Text(Some(text)) => {
                out.push_str("CAST(X'");
                for byte in text.bytes() {
                    out.push(char::from(HEX[usize::from(byte >> 4)]));
                    out.push(char::from(HEX[usize::from(byte & 15)]));
                }
                out.push_str("' AS TEXT)");
            }
            Arg::Int(None) | Arg::Text(None) => out.push_str("NULL"),
        }
    }
    Ok(())
}

/// The longest SQL text sent to SQLite at once, well under its 1,000,000-byte limit.
const TEXT_MAX: usize = 256 * 1024;

/// Every job of `batch` on SQLite, as few raw texts as fit: rows affected per statement.
async fn run_inlined(
    conn: &mut sqlx::AnyConnection,
    batch: &[Job],
) -> Result<Vec<Affected>, sqlx::Error> {
    let mut all = Vec::with_capacity(batch.len());
    let mut sql = String::new();
    let mut pending: Vec<usize> = Vec::new();
    for (statements, _) in batch {
        for statement in statements {
            inline(statement, &mut sql)?;
            sql.push_str(";\n");
        }
        pending.push(statements.len());
        if sql.len() >= TEXT_MAX {
            all.extend(run_text(conn, &sql, &pending).await?);
            sql.clear();
            pending.clear();
        }
    }
    all.extend(run_text(conn, &sql, &pending).await?);
    Ok(all)
}

/// Runs one text of jobs with `counts[i]` statements each: the rows each statement affected.
async fn run_text(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    counts: &[usize],
) -> Result<Vec<Affected>, sqlx::Error> {
    let expected: usize = counts.iter().sum();
    let mut affected = Vec::with_capacity(expected);
    if expected > 0 {
        let mut results = conn.fetch_many(sqlx::raw_sql(sql));
        while let Some(item) = results.try_next().await? {
            if let sqlx::Either::Left(done) = item {
                affected.push(done.rows_affected());
            }
        }
    }
    if affected.len() != expected {
        return Err(sqlx::Error::Protocol(format!(
            "{} results for {expected} statements",
            affected.len()
        )));
    }
    let mut affected = affected.into_iter();
    Ok(counts
        .iter()
        .map(|&count| affected.by_ref().take(count).collect())
        .collect())
}

/// Rows affected by each statement of a job, run one after the other.
async fn run_job(
    conn: &mut sqlx::AnyConnection,
    statements: &[Statement],
) -> Result<Affected, sqlx::Error> {
    let mut affected = Vec::with_capacity(statements.len());
    for statement in statements {
        affected.push(statement.execute(conn).await?);
    }
    Ok(affected)
}

/// Rows affected by each statement of a job.
pub type Affected = Vec<u64>;

/// Why a job was not committed. Cloned to every caller of a batch that failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the ledger writer has stopped")]
    Stopped,
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for WriteError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(Arc::new(err))
    }
}

type Outcome = Result<Affected, WriteError>;

type Job = (Vec<Statement>, tokio::sync::oneshot::Sender<Outcome>);

/// Most jobs in one transaction.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct GroupCommit {
    tx: tokio::sync::mpsc::Sender<Job>,
}

impl GroupCommit {
    pub fn spawn(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                match write(&store, &batch).await {
                    Ok(results) => {
                        for ((_, reply), result) in batch.drain(..).zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Err(err) => {
                        let err = WriteError::from(err);
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Runs `statements` atomically, in some transaction shared with other callers; returns
    /// the rows each affected.
    pub async fn run(&self, statements: Vec<Statement>) -> Outcome {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.tx
            .send((statements, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        done.await.map_err(|_| WriteError::Stopped)?
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(jobs = batch.len()))]
async fn write(store: &Store, batch: &[Job]) -> Result<Vec<Outcome>, sqlx::Error> {
    let started = std::time::Instant::now();
    let results = write_batch(store, batch).await;
    crate::metrics::db_query("group_commit", started.elapsed());
    results
}

async fn write_batch(store: &Store, batch: &[Job]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = store.writer().begin().await?;
    match run_all(&mut tx, store.backend(), batch).await {
        Ok(all) => {
            tx.commit().await?;
            Ok(all.into_iter().map(Ok).collect())
        }
        Err(_) => {
            tx.rollback().await?;
            write_isolated(store, batch).await
        }
    }
}

/// Every job of `batch` on one connection: on SQLite inlined into few texts, on PostgreSQL
/// a statement at a time.
async fn run_all(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    batch: &[Job],
) -> Result<Vec<Affected>, sqlx::Error> {
    if backend == Backend::Sqlite {
        return run_inlined(conn, batch).await;
    }
    let mut all = Vec::with_capacity(batch.len());
    for (statements, _) in batch {
        all.push(run_job(conn, statements).await?);
    }
    Ok(all)
}

/// Runs each job of `batch` inside its own savepoint, so a failing job is rolled back alone.
async fn write_isolated(store: &Store, batch: &[Job]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = store.writer().begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (statements, _) in batch {
        (&mut *tx).execute("SAVEPOINT job").await?;
        let outcome = run_job(&mut tx, statements).await.map_err(WriteError::from);
        if outcome.is_err() {
            (&mut *tx).execute("ROLLBACK TO SAVEPOINT job").await?;
        }
        (&mut *tx).execute("RELEASE SAVEPOINT job").await?;
        results.push(outcome);
    }
    tx.commit().await?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert_session(id: &str) -> Statement {
        Statement::new(
            "INSERT INTO sessions (id, access_token_hash, started_at) VALUES ($1, 'h', $2)",
        )
        .bind(id)
        .bind(0i64)
    }

    /// A migrated SQLite store in a directory that lives as long as the first value.
    async fn migrated() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    fn job(statements: Vec<Statement>) -> Job {
        (statements, tokio::sync::oneshot::channel().0)
    }

    async fn ids(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM sessions ORDER BY id")
            .fetch_all(store.reader())
            .await
            .unwrap()
    }

    #[test]
    fn values_are_inlined_as_literals_that_cannot_end_early() {
        let mut out = String::new();
        let statement =
            Statement::new("UPDATE t SET a = $2, b = '$1', c = $1, d = $3 WHERE e = $2")
                .bind("x'); DROP TABLE t; --")
                .bind(-7i64)
                .bind(None::<String>);
        inline(&statement, &mut out).unwrap();
        assert_eq!(
            out,
            "UPDATE t SET a = -7, b = '$1', c = CAST(X'7827293b2044524f50205441424c4520743b202d2d' AS TEXT), d = NULL WHERE e = -7"
        );
        let unbound = Statement::new("SELECT $2").bind(1i64);
        assert!(inline(&unbound, &mut String::new()).is_err());
        assert!(inline(&Statement::new("SELECT $"), &mut String::new()).is_err());
    }

    #[tokio::test]
    async fn inlined_text_comes_back_exactly_as_it_was_given() {
        let (_dir, store) = migrated().await;
        let hostile = [
            "O'Brien; DROP TABLE sessions; --",
            "Łukasz Dvořák \u{1F600}",
            "nul \u{0} inside",
            "",
            "$1 and '$2'",
        ];
        let batch: Vec<Job> = hostile
            .iter()
            .enumerate()
            .map(|(i, subject)| {
                job(vec![
                    insert_session(&format!("h{i}")),
                    Statement::new("UPDATE sessions SET subject = $1 WHERE id = $2")
                        .bind(*subject)
                        .bind(format!("h{i}")),
                ])
            })
            .collect();
        let results = texts(write_batch(&store, &batch).await.unwrap());
        assert!(results.iter().all(|r| r == &Ok(vec![1, 1])), "{results:?}");
        for (i, subject) in hostile.iter().enumerate() {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT subject FROM sessions WHERE id = $1")
                    .bind(format!("h{i}"))
                    .fetch_one(store.reader())
                    .await
                    .unwrap();
            assert_eq!(stored.as_deref(), Some(*subject));
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_batch_longer_than_one_text_keeps_every_count() {
        let (_dir, store) = migrated().await;
        // Long values push the batch over several texts.
        let long = "x".repeat(40_000);
        let batch: Vec<Job> = (0..BATCH)
            .map(|i| {
                job(vec![
                    insert_session(&format!("l{i:03}")),
                    Statement::new("UPDATE sessions SET subject = $1 WHERE id = $2")
                        .bind(long.as_str())
                        .bind(format!("l{i:03}")),
                ])
            })
            .collect();
        let results = texts(write_batch(&store, &batch).await.unwrap());
        assert_eq!(results.len(), BATCH);
        assert!(results.iter().all(|r| r == &Ok(vec![1, 1])));
        assert_eq!(ids(&store).await.len(), BATCH);
        store.close().await;
    }

    /// Outcomes with their errors as text, to compare.
    fn texts(outcomes: Vec<Outcome>) -> Vec<Result<Affected, String>> {
        outcomes
            .into_iter()
            .map(|outcome| outcome.map_err(|e| e.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn each_job_hears_the_counts_of_its_own_statements() {
        let (_dir, store) = migrated().await;
        let touch =
            |id: &str| Statement::new("UPDATE sessions SET subject = 's' WHERE id = $1").bind(id);
        let batch = vec![
            job(vec![insert_session("a")]),
            job(vec![touch("nobody"), insert_session("b"), touch("a")]),
        ];
        let results = texts(write_batch(&store, &batch).await.unwrap());
        assert_eq!(results, [Ok(vec![1]), Ok(vec![0, 1, 1])]);
        assert_eq!(ids(&store).await, ["a", "b"]);
        let subject: Option<String> =
            sqlx::query_scalar("SELECT subject FROM sessions WHERE id = 'a'")
                .fetch_one(store.reader())
                .await
                .unwrap();
        assert_eq!(
            subject.as_deref(),
            Some("s"),
            "the third statement had its own argument"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn jobs_of_mixed_kinds_each_hear_their_own_counts_in_order() {
        let (_dir, store) = migrated().await;
        let touch =
            |id: &str| Statement::new("UPDATE sessions SET subject = $2 WHERE id = $1").bind(id);
        write_batch(&store, &[job(vec![insert_session("base")])])
            .await
            .unwrap();
        // Thirteen inserts between which come two-statement jobs
        // touching one session that exists and one that does not.
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for i in 0..13 {
            batch.push(job(vec![insert_session(&format!("s{i:02}"))]));
            expected.push(vec![1]);
            if i % 4 == 0 {
                batch.push(job(vec![
                    touch("base").bind(format!("t{i}")),
                    touch("nobody").bind("x"),
                ]));
                expected.push(vec![1, 0]);
            }
        }
        // A job without statements commits nothing and hears as much.
        batch.push(job(Vec::new()));
        expected.push(Vec::new());
        let results = write_batch(&store, &batch).await.unwrap();
        let results: Vec<Affected> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, expected);
        assert_eq!(ids(&store).await.len(), 14);
        // Jobs of a kind run in their order: the last touch's subject stands.
        let subject: Option<String> =
            sqlx::query_scalar("SELECT subject FROM sessions WHERE id = 'base'")
                .fetch_one(store.reader())
                .await
                .unwrap();
        assert_eq!(subject.as_deref(), Some("t12"));
        store.close().await;
    }

    #[tokio::test]
    async fn a_failing_job_is_rolled_back_alone_and_the_rest_of_its_batch_commits() {
        let (_dir, store) = migrated().await;
        // The middle job writes a row, then breaks the primary key: neither of its rows stays.
        let batch = vec![
            job(vec![insert_session("a")]),
            job(vec![insert_session("b"), insert_session("a")]),
            job(vec![insert_session("c"), insert_session("d")]),
        ];
        let results = texts(write_batch(&store, &batch).await.unwrap());
        assert_eq!(results[0], Ok(vec![1]));
        assert!(
            results[1].as_ref().unwrap_err().contains("UNIQUE"),
            "{results:?}"
        );
        assert_eq!(results[2], Ok(vec![1, 1]));
        assert_eq!(ids(&store).await, ["a", "c", "d"]);

        // Through the writer task: every caller hears its own outcome.
        let writes = GroupCommit::spawn(store.clone());
        let (ok, err) = tokio::join!(
            writes.run(vec![insert_session("e")]),
            writes.run(vec![insert_session("f"), insert_session("e")]),
        );
        assert_eq!(ok.unwrap(), vec![1]);
        assert!(matches!(err, Err(WriteError::Database(_))), "{err:?}");
        assert_eq!(ids(&store).await, ["a", "c", "d", "e"]);
        store.close().await;
    }
}
