//! The listener's loop: accepts connections and serves each over HTTP/1.1, within limits a
//! client cannot lift. A connection that sends no complete request head within
//! `HTTP_IDLE_TIMEOUT_SECONDS` (idle between requests, or sending its headers a byte at a
//! time) is closed; a head is at most [`MAX_HEAD_BYTES`]; no more than `HTTP_MAX_CONNECTIONS`
//! are open at once, and the next waits in the listen queue until one closes, so connections
//! never take the file descriptors the database, the mail server and Redis need.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The largest request head (its request line and headers) herald reads, where a request to
/// herald needs a few hundred bytes: past it a request is answered 431, so each connection
/// holds at most this much of a head in memory, not hyper's default of about 400 kB.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How often, at most, reaching the connection limit is logged.
const FULL_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// What one client connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a connection may go without a complete request head.
    pub idle: Duration,
    /// Connections open at once.
    pub connections: usize,
    /// How long, after the stop, connections get to finish: a request in flight ends within
    /// it (`REQUEST_TIMEOUT_SECONDS`). A connection still sending its first request's head
    /// is one hyper would wait on until the idle timeout; it is closed then.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets each
/// connection finish the request it is serving (an idle one closes at once) and returns
/// once all have closed, or once `limits.drain` has passed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut full_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_logged.is_none_or(|at| at.elapsed() >= FULL_LOGGED_EVERY) {
                    full_logged = Some(Instant::now());
                    tracing::warn!(
                        limit = limits.connections,
                        "HTTP connections at HTTP_MAX_CONNECTIONS: new ones wait until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !gone_before_accepted(&err) {
                        // Out of file descriptors or memory: wait, rather than spin on it.
                        tracing::error!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits.idle,
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Serves one connection until it closes, or until the stop is given and its request in
/// flight (if any) is answered.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(request).await.unwrap_or_else(|e| match e {})) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = stop.wait_for(|stop| *stop) => served.as_mut().graceful_shutdown(),
    }
    let _ = served.await;
}

/// An error of one connection that went away before it was accepted: nothing to wait for.
fn gone_before_accepted(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
