//! Rate-limiter figures (see BENCHMARKS.md).
//!
//! `cargo bench --bench limiter -- micro`   one check through the limiter client (the shard's lent store) vs the bare window store
//! `cargo bench --bench limiter -- layer`   the layer's own cost per request, in process
//! `cargo bench --bench limiter -- memory N`  bytes per tracked client with N requests in its window
//! `cargo bench --bench limiter -- refused`  a refused request against an admitted one and a
//!     plain one, through the whole router with its edge (request context, access log at
//!     `info` in JSON to a sink), in process
//! `cargo bench --bench limiter -- serve PORT`  herald with /bench/plain and /bench/limited,
//!     the same trivial handler without and with the limiter layer, for wrk
//!     (scripts/bench_limiter.sh drives it)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use herald::http::RateLimitLayer;
use herald::ratelimit::Group;
use herald::startup::Application;
use herald_actors::clock::{Clock, SystemClock};
use herald_actors::limiter::store::{MemoryWindows, WindowStore};
use herald_actors::limiter::{self, AtCapacity, LimiterConfig, Policy};
use herald_supervision::{Supervisor, SupervisorSpec};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn micro() {
    let policy = Policy::per_seconds(1_000_000, 60);
    let (spec, client) = limiter::limiter(LimiterConfig {
        shards: 4,
        keys_per_shard: 1_000_000,
        at_capacity: AtCapacity::Admit,
        check_timeout: Duration::from_secs(1),
        clock: Arc::new(SystemClock),
        observer: None,
        shared: None,
    });
    let (root, _join) = Supervisor::spawn("bench", SupervisorSpec::one_for_one(vec![spec]), None)
        .await
        .unwrap();
    let mut direct = MemoryWindows::new(1_000_000, AtCapacity::Admit, SystemClock.now_ms());
    let n = 50_000u64;
    let (mut through_actor, mut bare) = (Vec::new(), Vec::new());
    for round in 0..7 {
        let started = Instant::now();
        for i in 0..n {
            let limiter::Check::Ready(checked) =
                client.check(limiter::key(1, &format!("c{}", i % 10_000)), policy)
            else {
                unreachable!("in memory a check is decided at once")
            };
            checked.unwrap();
        }
        through_actor.push(started.elapsed().as_nanos() as f64 / n as f64);
        let started = Instant::now();
        for i in 0..n {
            direct.check(
                limiter::key(1, &format!("c{}", i % 10_000)),
                policy,
                SystemClock.now_ms(),
            );
        }
        bare.push(started.elapsed().as_nanos() as f64 / n as f64);
        let _ = round;
    }
    println!(
        "one check, median of 7 rounds of {n}: through the limiter client {:.0} ns; bare window store {:.0} ns (same key mix, same process)",
        median(through_actor),
        median(bare)
    );
    root.shutdown(Duration::from_secs(5)).await;
}

/// Run once per process (`memory 1`, `memory 20`) so freed memory cannot hide growth.
fn memory(per_client: usize) {
    let policy = Policy::per_seconds(20, 60);
    {
        let clients = 1_000_000u64;
        let before = rss_bytes();
        let mut store = MemoryWindows::new(clients as usize, AtCapacity::Admit, 0);
        for client in 0..clients {
            for r in 0..per_client as u64 {
                store.check(client.wrapping_mul(0x9E37_79B9_7F4A_7C15), policy, 10 + r);
            }
        }
        let after = rss_bytes();
        println!(
            "{clients} tracked clients with {per_client} request(s) each in the window: {:.0} bytes per client (RSS delta {:.1} MB)",
            (after - before) as f64 / clients as f64,
            (after - before) as f64 / 1e6
        );
        drop(store);
    }
}

/// The layer alone, in process: the same trivial route without and with it, called
/// through tower on one task, so the difference is the layer's own CPU per request.
async fn layer() {
    use tower::ServiceExt;
    let dir = std::env::temp_dir().join(format!("herald-bench-layer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = bench_app(0, &dir).await;
    let state = app.state().clone();
    let (plain, limited) = bench_routes(&state);
    let (plain, limited) = (plain.with_state(state.clone()), limited.with_state(state));
    let request = |path: &str, i: u32| bench_request(path, 0x0A00_0000 | (i % 131_072));
    let n = 200_000u32;
    let (mut bare, mut with_layer) = (Vec::new(), Vec::new());
    for round in 0..7u32 {
        for (router, path, out) in [
            (&plain, "/bench/plain", &mut bare),
            (&limited, "/bench/limited", &mut with_layer),
        ] {
            let started = Instant::now();
            for i in 0..n {
                let response = router
                    .clone()
                    .oneshot(request(path, round * n + i))
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            out.push(started.elapsed().as_nanos() as f64 / f64::from(n));
        }
    }
    let (bare, with_layer) = (median(bare), median(with_layer));
    println!(
        "one request through the router, median of 7 rounds of {n} (131,072 clients): without the layer {bare:.0} ns, with it {with_layer:.0} ns, the layer adds {:.0} ns",
        with_layer - bare
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A GET of `path` from the client at address `client`, as from a trusted proxy.
fn bench_request(path: &str, client: u32) -> http::Request<axum::body::Body> {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut request = http::Request::get(path)
        .header(
            "x-forwarded-for",
            std::net::Ipv4Addr::from(client).to_string(),
        )
        .body(axum::body::Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

/// What a refused request costs against an admitted one: each request through the whole
/// router and its edge layers, with the JSON access log on (written to a sink).
async fn refused() {
    use tower::ServiceExt;
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .init();
    let dir = std::env::temp_dir().join(format!("herald-bench-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = bench_app_with(0, &dir, "5".into()).await;
    let state = app.state().clone();
    let (plain, limited) = bench_routes(&state);
    let router = herald::http::router(state, Some(plain.merge(limited)));
    let request = bench_request;
    let n = 50_000u32;
    let refused_client = 0x0B00_0001;
    let (mut plain_ns, mut admitted_ns, mut refused_ns) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..7u32 {
        for (path, status, out) in [
            ("/bench/plain", 200, &mut plain_ns),
            ("/bench/limited", 200, &mut admitted_ns),
            ("/bench/limited", 429, &mut refused_ns),
        ] {
            let started = Instant::now();
            for i in 0..n {
                // Admitted: a client of its own each time. Refused: one client, over its
                // five requests a minute from the first round on.
                let client = if status == 429 {
                    refused_client
                } else {
                    0x0A00_0000 | (round * n + i)
                };
                let response = router.clone().oneshot(request(path, client)).await.unwrap();
                if status == 200 || round > 0 || i >= 5 {
                    assert_eq!(response.status(), status);
                }
            }
            out.push(started.elapsed().as_nanos() as f64 / f64::from(n));
        }
    }
    let (plain, admitted, refused) = (median(plain_ns), median(admitted_ns), median(refused_ns));
    println!(
        "one request through the whole router, median of 7 rounds of {n}: plain {plain:.0} ns, admitted by the limiter {admitted:.0} ns, refused (429) {refused:.0} ns; refused / admitted {:.2}",
        refused / admitted
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `BENCH_REDIS_URL` keeps the windows in that Redis (under a prefix of this run's own).
async fn bench_app(port: u16, dir: &std::path::Path) -> Application {
    let max = std::env::var("BENCH_MAX_REQUESTS").unwrap_or_else(|_| "1000000".into());
    bench_app_with(port, dir, max).await
}

async fn bench_app_with(port: u16, dir: &std::path::Path, max_requests: String) -> Application {
    let mut redis = Vec::new();
    if let Ok(url) = std::env::var("BENCH_REDIS_URL") {
        redis.push(("REDIS_URL", url));
        redis.push((
            "REDIS_KEY_PREFIX",
            format!("herald-bench-{}:", std::process::id()),
        ));
        // Generous, so an overloaded machine measures waiting, not failing open.
        redis.push(("RATE_LIMIT_REDIS_TIMEOUT_MS", "2000".into()));
    }
    common::build(
        &[
            redis,
            vec![
                ("PORT", port.to_string()),
                (
                    "DATABASE_URL",
                    format!("sqlite://{}/herald.db", dir.display()),
                ),
                ("TRUSTED_PROXIES", "127.0.0.1".into()),
                ("RATE_LIMIT_MAX_REQUESTS", max_requests),
            ],
        ]
        .concat(),
    )
    .await
}

/// The trivial handler without and with the limiter layer.
fn bench_routes(
    state: &herald::http::AppState,
) -> (
    Router<herald::http::AppState>,
    Router<herald::http::AppState>,
) {
    let plain = Router::new().route("/bench/plain", get(|| async { "ok" }));
    let limited = Router::new()
        .route("/bench/limited", get(|| async { "ok" }))
        .route_layer(RateLimitLayer::new(state.clone(), Group::Stats));
    (plain, limited)
}

async fn serve(port: u16) {
    let dir = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = bench_app(port, &dir).await;
    let (plain, limited) = bench_routes(app.state());
    let routes = plain.merge(limited);
    println!("serving on 127.0.0.1:{port}");
    app.with_routes(routes)
        .run_until_stopped(herald::startup::shutdown_signal())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "micro".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "micro" => runtime.block_on(micro()),
        "layer" => runtime.block_on(layer()),
        "refused" => runtime.block_on(refused()),
        "memory" => memory(
            args.iter()
                .filter_map(|a| a.parse().ok())
                .next()
                .unwrap_or(1),
        ),
        "serve" => {
            let port = args
                .iter()
                .filter_map(|a| a.parse().ok())
                .next()
                .unwrap_or(18080);
            runtime.block_on(serve(port));
        }
        other => eprintln!("unknown mode {other}; use micro, layer, refused, memory or serve PORT"),
    }
}
