//! Group commit: writes that arrive while the writer is busy share one transaction, so a
//! burst costs one durable flush instead of one per write. Each job runs inside its own
//! savepoint, so a job that fails is rolled back alone and the others still commit. A caller
//! returns only once its job is committed.

use sqlx::Executor;

use super::{Store, StoreError};

/// One statement of a job, owning its arguments.
pub type Statement = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

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
                match write(&store, &mut batch).await {
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

async fn write(
    store: &Store,
    batch: &mut [Job],
) -> Result<Vec<Result<Affected, String>>, StoreError> {
    let started = std::time::Instant::now();
    let results = write_batch(store, batch).await;
    crate::metrics::db_query("group_commit", started.elapsed());
    results
}

async fn write_batch(
    store: &Store,
    batch: &mut [Job],
) -> Result<Vec<Result<Affected, String>>, StoreError> {
    let mut tx = store.writer().begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (statements, _) in batch.iter_mut() {
        (&mut *tx).execute("SAVEPOINT job").await?;
        let mut outcome = Ok(Vec::with_capacity(statements.len()));
        for statement in std::mem::take(statements) {
            match statement.execute(&mut *tx).await {
                Ok(done) => {
                    if let Ok(affected) = outcome.as_mut() {
                        affected.push(done.rows_affected());
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
