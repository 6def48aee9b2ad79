//! `spawn_app()` and a client with one helper per endpoint.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::Arc;

use herald::config::Config;
use herald::http::AppState;
use herald::startup::{Application, Stopped};
use herald_actors::clock::ManualClock;
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every table the migrations create.
pub const TABLES: &[&str] = &[
    "sessions",
    "session_events",
    "email_preferences",
    "email_send_logs",
    "email_throttles",
    "job_runs",
    "rate_limit_policies",
    "audit_log",
    "replicas",
];

pub const API_KEY: &str = "test-admin-key-0123456789abcdef0123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per backend, as `sqlite::name` and
/// `postgres::name`. The PostgreSQL run is skipped, with a note, only outside CI.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::postgres_available(stringify!($name)).await {
                        super::$name($crate::helpers::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

fn postgres_base_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether PostgreSQL answers. In CI an unreachable server fails the test instead.
pub async fn postgres_available(test: &str) -> bool {
    static REACHABLE: OnceLock<bool> = OnceLock::new();
    if REACHABLE.get().is_none() {
        let url = postgres_base_url();
        let ok = tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&url))
            .await
            .is_ok_and(|c| c.is_ok());
        let _ = REACHABLE.set(ok);
    }
    let ok = REACHABLE.get().copied().unwrap_or(false);
    if !ok {
        assert!(
            !in_ci(),
            "CI=true but PostgreSQL is not reachable at {}",
            postgres_base_url()
        );
        eprintln!(
            "skipped postgres::{test}: PostgreSQL not reachable (set HERALD_TEST_POSTGRES_URL)"
        );
    }
    ok
}

/// A fresh database: a temporary SQLite file, or a new PostgreSQL database.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}/herald.db?mode=rwc", dir.path().display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let base = postgres_base_url();
                let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .expect("PostgreSQL connection");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = match base.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => panic!("HERALD_TEST_POSTGRES_URL must name a database"),
                };
                Self {
                    url,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Dropping needs async I/O, and Drop is sync: use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_base_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The herald binary, with nothing of the test's environment but `PATH`.
pub fn herald() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// Runs `command` to its end; it must succeed (what it printed is shown when it does not).
pub fn run_ok(command: &mut std::process::Command) -> std::process::Output {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Whether a tool a test drives is here. Without it the test says it skipped, naming
/// `install`; in CI (`CI` set) a missing tool fails the test instead, since `.ci/run`
/// installs every one.
pub fn tool_present(found: bool, tool: &str, install: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {tool} ({install})"
        );
        eprintln!("skipped: {tool} not installed ({install})");
    }
    found
}

pub fn config_vars(database_url: &str) -> HashMap<String, String> {
    [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", database_url),
        ("API_ACCESS_KEY", API_KEY),
        ("SECRET_KEY", "test-signing-secret"),
        ("LOG_LEVEL", "warn"),
        // A loaded CI machine must not turn slow checks into fail-open admissions.
        ("RATE_LIMIT_CHECK_TIMEOUT_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The value of `series` (its name and labels, exactly as rendered) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn config_from(vars: HashMap<String, String>) -> Config {
    Config::from_lookup(&move |k| vars.get(k).cloned()).expect("valid test configuration")
}

pub struct TestApp {
    pub address: String,
    /// The clock the app's time-based rules read; moves only when a test moves it.
    pub clock: ManualClock,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<Stopped>>>,
    vars: HashMap<String, String>,
    /// Kept alive so the database outlives the app.
    _db: TestDatabase,
    /// The templates directory the app reads, kept as long as the app.
    _templates: Option<tempfile::TempDir>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}, None).await
}

/// Spawns the app with configuration changes and, optionally, extra routes.
pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut HashMap<String, String>),
    extra_routes: Option<axum::Router<AppState>>,
) -> TestApp {
    herald::install_tls_provider();
    let db = TestDatabase::new(backend).await;
    let mut vars = config_vars(&db.url);
    configure(&mut vars);
    start(db, vars, extra_routes, None).await
}

/// Spawns the app on SQLite with `files` (name, text) in its `EMAIL_TEMPLATES_DIR`, which
/// is kept as long as the app.
pub async fn spawn_app_with_templates(files: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().to_str().unwrap().to_owned();
    let mut app = spawn_app_with(
        Backend::Sqlite,
        |vars| {
            vars.insert("EMAIL_TEMPLATES_DIR".into(), path);
        },
        None,
    )
    .await;
    app._templates = Some(dir);
    app
}

/// Spawns the app with configuration changes and its clock starting at `start_ms` (a date
/// before today, for a test that walks through a given day).
pub async fn spawn_app_at(
    backend: Backend,
    configure: impl FnOnce(&mut HashMap<String, String>),
    start_ms: u64,
) -> TestApp {
    herald::install_tls_provider();
    let db = TestDatabase::new(backend).await;
    let mut vars = config_vars(&db.url);
    configure(&mut vars);
    start(db, vars, None, Some(ManualClock::new(start_ms))).await
}

/// Spawns the app on a database the test prepared.
pub async fn spawn_app_on(
    db: TestDatabase,
    configure: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let mut vars = config_vars(&db.url);
    configure(&mut vars);
    start(db, vars, None, None).await
}

async fn start(
    db: TestDatabase,
    vars: HashMap<String, String>,
    extra_routes: Option<axum::Router<AppState>>,
    clock: Option<ManualClock>,
) -> TestApp {
    let clock =
        clock.unwrap_or_else(|| ManualClock::new(chrono::Utc::now().timestamp_millis() as u64));
    let mut app = Application::build_with_clock(config_from(vars.clone()), Arc::new(clock.clone()))
        .await
        .expect("application builds");
    if let Some(routes) = extra_routes {
        app = app.with_routes(routes);
    }
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        clock,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        state,
        stop: Some(stop),
        server: Some(server),
        vars,
        _db: db,
        _templates: None,
    }
}

impl TestApp {
    pub fn database_url(&self) -> String {
        self._db.url.clone()
    }

    /// The runs of the job `name` (a zone's job with its `/` escaped), newest first.
    pub async fn job_runs(&self, name: &str) -> Vec<serde_json::Value> {
        let body: serde_json::Value = self
            .get_admin(&format!("/admin/jobs/{name}/runs"))
            .await
            .json()
            .await
            .unwrap();
        body["runs"].as_array().unwrap().clone()
    }

    /// Wakes the scheduler (after the clock moved) and returns once it has acted: it handles
    /// its messages in order, so once it answers a later one, the wake's catch-up (which
    /// claims in the ledger before it answers) is done.
    pub async fn wake_scheduler(&self) {
        self.state.scheduler.wake();
        self.state
            .scheduler
            .list()
            .await
            .expect("the scheduler answers");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_admin(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("X-API-Key", API_KEY)
            .send()
            .await
            .expect("request sent")
    }

    /// A DELETE to an admin route with the admin key.
    pub async fn delete_admin(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .header("X-API-Key", API_KEY)
            .send()
            .await
            .expect("request sent")
    }

    /// An admin GET's JSON answer.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.get_admin(path)
            .await
            .json()
            .await
            .expect("a JSON answer")
    }

    /// The token of `email`'s unsubscribe and preference links (its preferences row made
    /// first, if there is none).
    pub async fn link_token(&self, email: &str) -> String {
        let store = &self.state.store;
        let change = herald::store::preferences::Change::default();
        let source = herald::store::preferences::Source::Api;
        herald::store::preferences::change(store, email, &change, source, 0)
            .await
            .unwrap();
        let key = herald::store::preferences::get(store, email)
            .await
            .unwrap()
            .and_then(|p| p.recipient_key)
            .unwrap();
        self.state.signer.token(&key)
    }

    /// A parent's one-click unsubscribe (`POST`) from a link naming `token`, for `what`
    /// (`weekly_digest`, `session_reports`, `all`).
    pub async fn unsubscribe(&self, token: &str, what: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/email/unsubscribe/{token}?type={what}")))
            .send()
            .await
            .unwrap()
    }

    /// How many rows `table` holds now.
    pub async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.state.store.reader())
            .await
            .unwrap()
    }

    pub async fn healthz(&self) -> reqwest::Response {
        self.get("/healthz").await
    }

    pub async fn health(&self) -> reqwest::Response {
        self.get("/health").await
    }

    pub async fn ready(&self) -> reqwest::Response {
        self.get("/health/ready").await
    }

    pub async fn dashboard(&self) -> reqwest::Response {
        self.get("/api/v1/stats/dashboard").await
    }

    pub async fn put_rate_limits(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .put(self.url("/api/v1/ops/rate_limits"))
            .header("X-API-Key", API_KEY)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn reset_rate_limits(&self, body: serde_json::Value) -> reqwest::Response {
        self.post_admin("/admin/rate_limits/reset", Some(&body))
            .await
    }

    /// A POST to an admin route with the admin key, with a JSON body when one is given.
    pub async fn post_admin(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let request = self
            .client
            .post(self.url(path))
            .header("X-API-Key", API_KEY);
        match body {
            Some(body) => request.json(body),
            None => request,
        }
        .send()
        .await
        .expect("request sent")
    }

    /// `PUT /api/v1/email/preferences/{email}`, as the calling backend sends it.
    pub async fn put_preferences(
        &self,
        email: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/api/v1/email/preferences/{email}")))
            .header("X-API-Key", API_KEY)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Changes a recipient's preferences, which must be accepted.
    pub async fn set_preferences(&self, email: &str, body: serde_json::Value) {
        let answer = self.put_preferences(email, &body).await;
        assert_eq!(answer.status(), 200, "preferences of {email}: {body}");
    }

    pub async fn actors(&self) -> reqwest::Response {
        self.get_admin("/admin/actors").await
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn openapi(&self) -> serde_json::Value {
        self.get("/openapi.json")
            .await
            .json()
            .await
            .expect("OpenAPI JSON")
    }

    /// Stops this app and starts a new one on the same database, configuration and clock.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// Stops this app and starts a new one on the same database and clock, with the
    /// configuration changed by `configure` (a deploy with new settings).
    pub async fn restart_with(
        mut self,
        configure: impl FnOnce(&mut HashMap<String, String>),
    ) -> TestApp {
        self.stop().await;
        let mut vars = std::mem::take(&mut self.vars);
        configure(&mut vars);
        start(self._db, vars, None, Some(self.clock.clone())).await
    }

    /// Sends the shutdown signal and waits for the server to finish.
    pub async fn stop(&mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = self.server.take().expect("server still running");
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server result")
    }
}

/// Asserts the error body of DESIGN.md: `{"error": code, "message": …}`.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], code, "error code in {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    body
}

/// A port on 127.0.0.1 for a test server that stops listening and listens again on the same
/// port (an outage). The port stays bound all the while, by a socket that does not listen,
/// so connections to it are refused as by a stopped server and no other socket of the test
/// run (an outgoing connection given it as its local port) takes it meanwhile.
pub struct HeldPort {
    pub port: u16,
    idle: std::sync::Mutex<Option<tokio::net::TcpSocket>>,
}

impl HeldPort {
    /// A free port, and its listener.
    pub fn listen_new() -> (Self, tokio::net::TcpListener) {
        let socket = Self::socket();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let held = Self {
            port,
            idle: std::sync::Mutex::new(None),
        };
        (held, socket.listen(1024).unwrap())
    }

    /// Holds the port before its listener is dropped (SO_REUSEPORT lets both be bound).
    pub fn hold(&self) {
        let socket = Self::socket();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
            .unwrap();
        *self.idle.lock().unwrap() = Some(socket);
    }

    /// Listens again on the held port.
    pub fn listen(&self) -> tokio::net::TcpListener {
        let socket = self.idle.lock().unwrap().take();
        socket
            .expect("the port is held: hold() before the listener goes")
            .listen(1024)
            .unwrap()
    }

    fn socket() -> tokio::net::TcpSocket {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.set_reuseport(true).unwrap();
        socket
    }
}
