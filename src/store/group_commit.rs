//! Group commit: writes that arrive while the writer is busy share one transaction, so a
//! burst costs one durable flush instead of one per write. A job that fails is rolled back
//! alone and the others still commit: the batch first runs as it is, and only if a statement
//! fails is it rolled back and run again with a savepoint around each job. A caller returns
//! only once its job is committed.

use sqlx::Executor;

use super::{Store, StoreError};

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

    async fn execute(&self, conn: &mut sqlx::AnyConnection) -> Result<u64, sqlx::Error> {
        let mut query = sqlx::query(self.sql);
        for arg in &self.args {
            query = match arg {
                Arg::Text(text) => query.bind(text.as_deref()),
                Arg::Int(int) => query.bind(*int),
            };
        }
        Ok(query.execute(conn).await?.rows_affected())
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
    let mut results = Vec::with_capacity(batch.len());
    for (statements, _) in batch {
        let mut affected = Vec::with_capacity(statements.len());
        for statement in statements {
            match statement.execute(&mut tx).await {
                Ok(rows) => affected.push(rows),
                Err(_) => {
                    tx.rollback().await?;
                    return write_isolated(store, batch).await;
                }
            }
        }
        results.push(Ok(affected));
    }
    tx.commit().await?;
    Ok(results)
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
        let mut outcome = Ok(Vec::with_capacity(statements.len()));
        for statement in statements {
            match statement.execute(&mut tx).await {
                Ok(rows) => {
                    if let Ok(affected) = outcome.as_mut() {
                        affected.push(rows);
                    }
                }
                Err(err) => {
                    outcome = Err(err.to_string());
                    break;
                }
            }
        }
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

    async fn ids(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM sessions ORDER BY id")
            .fetch_all(store.reader())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_failing_job_is_rolled_back_alone_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let job = |statements| (statements, tokio::sync::oneshot::channel().0);
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
