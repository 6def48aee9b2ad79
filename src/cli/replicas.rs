//! `herald replicas`: the replicas serving the database now, and the settings every replica
//! must share that each has otherwise than this shell's environment. Run with a deployment's
//! settings before starting a replica, or when the warning names one, it says which of them
//! would disagree; exit 1 when any does, so a deploy script can stop on it.

use std::process::ExitCode;

use super::current_store;
use crate::config::Config;
use crate::jobs::digest::format_instant;

pub(super) async fn replicas(config: Config) -> anyhow::Result<ExitCode> {
    let store = current_store(&config).await?;
    // Compared as a replica of its own that is none of those serving.
    let shell = crate::replicas::Me {
        instance: String::new(),
        settings: config.shared.clone(),
        started_at_ms: 0,
    };
    let peers = shell
        .peers(&store, chrono::Utc::now().timestamp_millis())
        .await;
    store.close().await;
    let peers = peers?;
    if peers.is_empty() {
        out!("no replica serves this database now")?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<32} {:<24} {:<24} SETTINGS OTHER THAN THIS ENVIRONMENT'S",
        "REPLICA",
        "STARTED (UTC)",
        "SEEN (UTC)"
    )?;
    for peer in &peers {
        let differing = if peer.differing.is_empty() {
            "-".to_owned()
        } else {
            peer.differing.join(", ")
        };
        out!(
            "{:<32} {:<24} {:<24} {differing}",
            peer.instance,
            format_instant(peer.started_at_ms),
            format_instant(peer.seen_at_ms),
        )?;
    }
    let differ = peers.iter().filter(|p| !p.differing.is_empty()).count();
    if differ == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{differ} of {} replicas run with other values of settings every replica must share \
         (compared without showing them: see DEPLOYMENT.md)",
        peers.len()
    );
    Ok(ExitCode::from(1))
}
