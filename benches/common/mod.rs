//! Start-up shared by the benchmarks: herald built from a configuration on top of the
//! benchmarks' own base (admin key, secret, quiet logs), served on 127.0.0.1.

// Each benchmark uses the part it needs.
#![allow(dead_code)]

use std::collections::HashMap;

use herald::startup::Application;

/// herald configured by `vars` over the benchmark base.
pub async fn build(vars: &[(&str, String)]) -> Application {
    herald::install_tls_provider();
    let mut all: HashMap<String, String> = [
        ("PORT", "0"),
        ("API_ACCESS_KEY", "bench-admin-key"),
        ("SECRET_KEY", "bench"),
        ("LOG_LEVEL", "error"),
        // One client starts every session of a run.
        ("RATE_LIMIT_SESSIONS_MAX_REQUESTS", "1000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let config = herald::config::Config::from_lookup(&move |k| all.get(k).cloned()).unwrap();
    Application::build(config).await.unwrap()
}

/// A herald serving in the background until [`Serving::stop`].
pub struct Serving {
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<herald::startup::Stopped>>,
}

impl Serving {
    pub fn start(app: Application) -> Self {
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self { base, stop, server }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}
