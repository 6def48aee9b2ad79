//! `herald audit`: the changes operators made (a rate-limit policy, a throttle or limiter
//! reset, a suppression lifted, a failed email sent again), newest first, as
//! `GET /admin/audit` lists them.

use std::process::ExitCode;

use super::current_store;
use crate::config::Config;
use crate::store::audit::{self, AuditFilter};

pub(super) async fn audit(
    config: Config,
    since: Option<&str>,
    action: Option<&str>,
    limit: i64,
) -> anyhow::Result<ExitCode> {
    let filter = AuditFilter::parse(since, action, limit.clamp(1, 10_000), 0)
        .map_err(|(field, reason)| anyhow::anyhow!("--{field}: {reason}"))?;
    let store = current_store(&config).await?;
    let listed = audit::list(&store, &filter).await;
    store.close().await;
    let (rows, total) = listed?;
    out!(
        "{:<20} {:<28} {:<25} {:<32} CHANGE",
        "AT (UTC)",
        "BY",
        "ACTION",
        "TARGET"
    )?;
    for row in &rows {
        let change = match (&row.old_value, &row.new_value) {
            (None, None) => String::new(),
            (old, new) => format!(
                "{} -> {}",
                old.as_deref().unwrap_or("-"),
                new.as_deref().unwrap_or("-")
            ),
        };
        out!(
            "{:<20} {:<28} {:<25} {:<32} {}",
            super::at(row.at_ms),
            crate::redact::for_terminal(&row.actor),
            row.action,
            crate::redact::for_terminal(row.target.as_deref().unwrap_or("-")),
            crate::redact::for_terminal(&change),
        )?;
    }
    out!("{} of {total} shown", rows.len())?;
    Ok(ExitCode::SUCCESS)
}
