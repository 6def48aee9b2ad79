//! Liveness, health and readiness.
//!
//! `/healthz` never touches a dependency (an orchestrator restarts on its failure);
//! `/health` and `/health/ready` check the database with a bounded query and the actors
//! through the supervision snapshot.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use herald_supervision::{ChildState, ChildStatus};
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::state::AppState;

const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is serving", body = String, content_type = "text/plain")))]
#[tracing::instrument(skip_all)]
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize, ToSchema)]
pub struct MigrationsHealth {
    pub status: &'static str,
    pub applied: usize,
    pub expected: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `ok` or `error`.
    pub db: &'static str,
    pub db_latency_ms: Option<f64>,
    /// With `REDIS_URL`: `ok`, or `error` while the shared rate-limit windows are
    /// unreachable (the fail mode applies). Absent when the windows are in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    /// The configured email provider.
    pub email: &'static str,
    /// The job scheduler: `ok` or `down`.
    pub scheduler: &'static str,
    /// `ok`, or `degraded` when a supervised actor is not running.
    pub actors: &'static str,
    pub uptime_seconds: u64,
    pub version: &'static str,
    pub migrations: MigrationsHealth,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

struct Checks {
    db_latency: Option<Duration>,
    migrations_applied: Option<usize>,
    actors_down: Vec<String>,
}

async fn run_checks(state: &AppState) -> Checks {
    let db_latency = state.store.ping(DB_CHECK_TIMEOUT).await.ok();
    if let Some(latency) = db_latency {
        crate::metrics::db_query("health_check", latency);
    }
    let migrations_applied = match db_latency {
        Some(_) => state
            .store
            .migration_status()
            .await
            .ok()
            .map(|all| all.iter().filter(|m| m.applied_at_ms.is_some()).count()),
        None => None,
    };
    let actors_down = match state.root.status().await {
        Ok(children) if state.root.is_alive() => {
            let mut down = Vec::new();
            collect_down("", &children, &mut down);
            down
        }
        _ => vec!["root".to_owned()],
    };
    Checks {
        db_latency,
        migrations_applied,
        actors_down,
    }
}

fn collect_down(prefix: &str, children: &[ChildStatus], down: &mut Vec<String>) {
    for child in children {
        let path = format!("{prefix}{}", child.id);
        // A temporary child that finished is not a fault; a permanent one shows up as
        // restarting, or takes its supervisor down with it.
        if child.state == ChildState::Restarting {
            down.push(path.clone());
        }
        collect_down(&format!("{path}/"), &child.children, down);
    }
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Everything works", body = Health),
        (status = 503, description = "The database or a supervised actor is down", body = Health)))]
#[tracing::instrument(skip_all)]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let checks = run_checks(&state).await;
    let expected = crate::store::expected_migrations();
    let applied = checks.migrations_applied.unwrap_or(0);
    let db_ok = checks.db_latency.is_some();
    let actors_ok = checks.actors_down.is_empty();
    let redis_up = state.limiter.shared_up();
    let healthy = db_ok && actors_ok && applied == expected && redis_up != Some(false);
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        db: if db_ok { "ok" } else { "error" },
        db_latency_ms: checks.db_latency.map(|d| d.as_secs_f64() * 1000.0),
        redis: redis_up.map(|up| if up { "ok" } else { "error" }),
        email: state.config.email.provider.as_str(),
        scheduler: if state.scheduler.is_running() {
            "ok"
        } else {
            "down"
        },
        actors: if actors_ok { "ok" } else { "degraded" },
        uptime_seconds: state.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
        migrations: MigrationsHealth {
            status: if applied == expected { "ok" } else { "pending" },
            applied,
            expected,
        },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "Not ready, with the reasons", body = Readiness)))]
#[tracing::instrument(skip_all)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let checks = run_checks(&state).await;
    let mut reasons = Vec::new();
    if checks.db_latency.is_none() {
        reasons.push("database unreachable".to_owned());
    }
    match checks.migrations_applied {
        Some(n) if n == crate::store::expected_migrations() => {}
        Some(n) => reasons.push(format!(
            "migrations pending: {n} of {} applied",
            crate::store::expected_migrations()
        )),
        None if checks.db_latency.is_some() => reasons.push("migration state unknown".to_owned()),
        None => {}
    }
    for actor in checks.actors_down {
        reasons.push(format!("actor not running: {actor}"));
    }
    if reasons.is_empty() {
        (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                reasons,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "not_ready",
                reasons,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(id: &str, state: ChildState, children: Vec<ChildStatus>) -> ChildStatus {
        ChildStatus {
            id: id.to_owned(),
            state,
            restarts: 0,
            last_failure: None,
            children,
        }
    }

    #[test]
    fn a_child_waiting_to_restart_anywhere_in_the_tree_is_reported_down() {
        let tree = vec![
            child(
                "rate_limiter",
                ChildState::Running,
                vec![
                    child("shard-0", ChildState::Running, vec![]),
                    child("shard-1", ChildState::Restarting, vec![]),
                ],
            ),
            child("email_dispatcher", ChildState::Restarting, vec![]),
            child("finished", ChildState::Stopped, vec![]),
        ];
        let mut down = Vec::new();
        collect_down("", &tree, &mut down);
        assert_eq!(down, vec!["rate_limiter/shard-1", "email_dispatcher"]);
    }
}
