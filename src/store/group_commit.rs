//! Group commit: writes that arrive while the writer is busy share one transaction, so a
//! burst costs one durable flush instead of one per write. On SQLite the jobs of a batch go
//! to the database in runs of the same kind, one text per run, so a batch costs a few round
//! trips to the connection's thread rather than one per job. A job that fails is rolled back
//! alone and the others still commit: the batch first runs as it is, and only if a statement
//! fails is it rolled back and run again with a savepoint around each job. A caller returns
//! only once its job is committed.

use futures_util::TryStreamExt;
use sqlx::Executor;

use super::{Backend, Store, StoreError};

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

/// Rows affected by each statement of a job. On SQLite the job goes to the database as one
/// text, each `$n` moved past the arguments of the statements before it: one round trip to
/// the connection's thread instead of one per statement, and the same text (so the same
/// cached statements) as a run of one job of its kind. PostgreSQL does not take several
/// statements with arguments at once.
async fn run_job(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    statements: &[Statement],
) -> Result<Affected, sqlx::Error> {
    if backend == Backend::Sqlite {
        return run_joined(conn, statements.iter()).await;
    }
    let mut affected = Vec::with_capacity(statements.len());
    for statement in statements {
        affected.push(statement.execute(conn).await?);
    }
    Ok(affected)
}

/// Rows affected by each of `statements`, sent to SQLite as one text: one round trip.
async fn run_joined<'s>(
    conn: &mut sqlx::AnyConnection,
    statements: impl Iterator<Item = &'s Statement>,
) -> Result<Affected, sqlx::Error> {
    let mut sql = String::new();
    let mut args = Vec::new();
    let mut count = 0;
    for statement in statements {
        renumber(statement.sql, args.len(), &mut sql);
        sql.push_str(";\n");
        args.extend(&statement.args);
        count += 1;
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut results = conn.fetch_many(bind_all(sqlx::query(&sql), args));
    let mut affected = Vec::with_capacity(count);
    while let Some(item) = results.try_next().await? {
        if let sqlx::Either::Left(done) = item {
            affected.push(done.rows_affected());
        }
    }
    if affected.len() != count {
        return Err(sqlx::Error::Protocol(format!(
            "{} results for {count} statements",
            affected.len()
        )));
    }
    Ok(affected)
}

/// Most jobs of one kind sent to SQLite in one text.
const RUN: usize = 8;

/// On SQLite, the jobs of `batch` in runs of the same kind (the same statements), each run
/// one text of 1, 2, 4 or 8 jobs: a few round trips per batch instead of one per job, and
/// few enough different texts that their prepared statements stay cached. Jobs of a kind
/// keep their order; the callers' jobs were concurrent, so no order between kinds is owed.
async fn run_runs(
    conn: &mut sqlx::AnyConnection,
    batch: &[Job],
) -> Result<Vec<Affected>, sqlx::Error> {
    let kinds: Vec<Vec<&'static str>> = batch
        .iter()
        .map(|(statements, _)| statements.iter().map(|s| s.sql).collect())
        .collect();
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| kinds[a].cmp(&kinds[b]));
    let mut results = vec![Vec::new(); batch.len()];
    let mut rest = order.as_slice();
    while let Some(&first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|&&job| kinds[job] == kinds[first])
            .count();
        // The largest power of two that fits, so a kind has at most four texts.
        let take = 1 << same.min(RUN).ilog2();
        let (run, after) = rest.split_at(take);
        let statements = run.iter().flat_map(|&job| &batch[job].0);
        let mut affected = run_joined(conn, statements).await?.into_iter();
        for &job in run {
            results[job] = affected.by_ref().take(batch[job].0.len()).collect();
        }
        rest = after;
    }
    Ok(results)
}

/// Appends `sql` with every `$n` outside string literals turned into `$(n + offset)`.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut in_literal = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\'' => in_literal = !in_literal,
            '$' if !in_literal => {
                let mut n = 0usize;
                while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + digit as usize;
                    chars.next();
                }
                out.push_str(itoa::Buffer::new().format(n + offset));
            }
            _ => {}
        }
    }
}

/// Rows affected by each statement of a job.
pub type Affected = Vec<u64>;

type Job = (
    Vec<Statement>,
    tokio::sync::oneshot::Sender<Result<Affected, String>>,
);

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
                        let err = err.to_string();
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
    pub async fn run(&self, statements: Vec<Statement>) -> Result<Affected, String> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.tx
            .send((statements, reply))
            .await
            .map_err(|_| "the ledger writer has stopped".to_owned())?;
        done.await
            .map_err(|_| "the ledger writer has stopped".to_owned())?
    }
}

async fn write(store: &Store, batch: &[Job]) -> Result<Vec<Result<Affected, String>>, StoreError> {
    let started = std::time::Instant::now();
    let results = write_batch(store, batch).await;
    crate::metrics::db_query("group_commit", started.elapsed());
    results
}

async fn write_batch(
    store: &Store,
    batch: &[Job],
) -> Result<Vec<Result<Affected, String>>, StoreError> {
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

/// Every job of `batch` on one connection: on SQLite in runs of a kind ([`run_runs`]), on
/// PostgreSQL one job after another.
async fn run_all(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    batch: &[Job],
) -> Result<Vec<Affected>, sqlx::Error> {
    if backend == Backend::Sqlite {
        return run_runs(conn, batch).await;
    }
    let mut all = Vec::with_capacity(batch.len());
    for (statements, _) in batch {
        all.push(run_job(conn, backend, statements).await?);
    }
    Ok(all)
}

/// Runs each job of `batch` inside its own savepoint, so a failing job is rolled back alone.
async fn write_isolated(
    store: &Store,
    batch: &[Job],
) -> Result<Vec<Result<Affected, String>>, StoreError> {
    let mut tx = store.writer().begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (statements, _) in batch {
        (&mut *tx).execute("SAVEPOINT job").await?;
        let outcome = run_job(&mut tx, store.backend(), statements)
            .await
            .map_err(|err| err.to_string());
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
    fn a_joined_job_moves_each_statements_arguments_past_the_ones_before() {
        let mut out = String::new();
        renumber("a = $1 AND b = '$2' AND c = $12", 3, &mut out);
        assert_eq!(out, "a = $4 AND b = '$2' AND c = $15");
    }

    #[tokio::test]
    async fn each_job_hears_the_counts_of_its_own_statements() {
        let (_dir, store) = migrated().await;
        let touch =
            |id: &str| Statement::new("UPDATE sessions SET subject = 's' WHERE id = $1").bind(id);
        // The second job runs as one text of three statements.
        let batch = vec![
            job(vec![insert_session("a")]),
            job(vec![touch("nobody"), insert_session("b"), touch("a")]),
        ];
        let results = write_batch(&store, &batch).await.unwrap();
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
    async fn jobs_of_mixed_kinds_in_long_runs_each_hear_their_own_counts_in_order() {
        let (_dir, store) = migrated().await;
        let touch =
            |id: &str| Statement::new("UPDATE sessions SET subject = $2 WHERE id = $1").bind(id);
        write_batch(&store, &[job(vec![insert_session("base")])])
            .await
            .unwrap();
        // Thirteen inserts (runs of 8, 4 and 1) between which come two-statement jobs
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
        let results = write_batch(&store, &batch).await.unwrap();
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
        assert_eq!(ok, Ok(vec![1]));
        assert!(err.is_err());
        assert_eq!(ids(&store).await, ["a", "c", "d", "e"]);
        store.close().await;
    }
}
