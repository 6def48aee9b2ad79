//! `herald recipients show|erase EMAIL`: what herald keeps about a parent's address, and
//! erasing it, as `GET` and `DELETE /admin/recipients/{email}` do.

use std::process::ExitCode;

use super::{at, current_store, parse_email};
use crate::config::Config;
use crate::reports::week::display_name;
use crate::store::erased::OptOuts;
use crate::store::recipients;

pub(super) async fn show(config: Config, raw: &str) -> anyhow::Result<ExitCode> {
    let email = parse_email(raw)?;
    let store = current_store(&config).await?;
    let record = recipients::record(
        &store,
        email.as_str(),
        chrono::Utc::now().timestamp_millis(),
    )
    .await;
    store.close().await;
    let record = record?;
    let on = |enabled: bool| if enabled { "on" } else { "off" };
    let p = &record.preferences;
    let suppressed = || -> std::io::Result<()> {
        if let Some((reason, since)) = &p.suppressed {
            out!("suppressed: {reason} since {} (UTC)", at(*since))?;
        }
        Ok(())
    };
    // Read with the address's hash: an erasure of any spelling of it.
    let kept = record.kept_from_erasure.map(|(kept, erased_at)| {
        format!(
            "its opt-out of {}, kept under a one-way hash of the address since an erasure at {} (UTC)",
            opt_outs(kept),
            at(erased_at)
        )
    });
    if record.is_empty() {
        match &kept {
            Some(kept) => out!("herald keeps nothing about {} but {kept}", email.as_str())?,
            None => out!("herald keeps nothing about {}", email.as_str())?,
        }
        // What is off beyond what the erasure kept is another spelling's doing.
        let erased = record
            .kept_from_erasure
            .map(|(kept, _)| kept)
            .unwrap_or_default();
        if p.suppressed.is_some()
            || (!p.weekly_digest_enabled && !erased.weekly_digest)
            || (!p.session_reports_enabled && !erased.session_reports)
        {
            out!(
                "its other spellings stop its mail too: weekly digest {}, session reports {}",
                on(p.weekly_digest_enabled),
                on(p.session_reports_enabled),
            )?;
            suppressed()?;
        }
        return spellings(&record.other_spellings).map(|()| ExitCode::SUCCESS);
    }
    out!(
        "weekly digest {}, session reports {}, time zone {}, language {}",
        on(p.weekly_digest_enabled),
        on(p.session_reports_enabled),
        p.timezone.as_deref().unwrap_or("the service's"),
        p.locale.as_deref().unwrap_or("the service's"),
    )?;
    suppressed()?;
    if let Some(kept) = &kept {
        out!("{kept}")?;
    }
    out!("\nPREFERENCE CHANGES (UTC)")?;
    for c in &record.changes {
        out!(
            "{}  {:<16} {}: {} -> {}",
            at(c.at_ms),
            c.source,
            c.field,
            c.old_value,
            c.new_value
        )?;
    }
    out!("\nSESSIONS (UTC)")?;
    for s in &record.sessions {
        out!(
            "{}  {}  {:<9} {} events  {} — {}",
            s.session_id,
            at(s.started_at.timestamp_millis()),
            if s.completed { "completed" } else { "open" },
            s.events_total,
            // As the emails show them: no controls that would reorder the terminal's line.
            s.learner_name.as_deref().map_or("-".into(), display_name),
            s.subject.as_deref().map_or("-".into(), display_name),
        )?;
    }
    out!("\nEMAILS (UTC)")?;
    for e in &record.emails {
        out!(
            "{}  {}  {:<16} {:<10} {}",
            e.id,
            at(e.created_at_ms),
            e.email_type,
            e.status,
            super::why(e),
        )?;
    }
    spellings(&record.other_spellings)?;
    Ok(ExitCode::SUCCESS)
}

/// The types an erasure kept stopped, in words.
fn opt_outs(kept: OptOuts) -> &'static str {
    match (kept.weekly_digest, kept.session_reports) {
        (true, true) => "the weekly digest and session reports",
        (true, false) => "the weekly digest",
        _ => "session reports",
    }
}

/// Names the addresses herald keeps apart from the one asked for only by their capitals,
/// which the command did not show.
pub(super) fn spellings(others: &[String]) -> anyhow::Result<()> {
    if !others.is_empty() {
        out!(
            "\nherald also keeps {}: the same address with other capitals, most likely the same \
             parent's, kept apart and not shown here; name it to see it",
            others.join(", ")
        )?;
    }
    Ok(())
}

/// What was (or would be) deleted, table by table.
pub(super) async fn erase(config: Config, raw: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    let email = parse_email(raw)?;
    let store = current_store(&config).await?;
    let erased = recipients::erase(
        &store,
        email.as_str(),
        &super::actor(&config),
        dry_run,
        chrono::Utc::now().timestamp_millis(),
    )
    .await;
    let others = recipients::other_spellings(&store, email.as_str()).await;
    store.close().await;
    let (erased, kept) = erased?;
    let erased = serde_json::to_value(erased)?;
    let verb = if dry_run {
        "would be deleted"
    } else {
        "deleted"
    };
    out!("rows {verb} for {}:", email.masked())?;
    if let Some(tables) = erased.as_object() {
        for (table, rows) in tables {
            out!("{rows:>8}  {table}")?;
        }
    }
    if kept.any() {
        out!(
            "\n{}: its opt-out of {}, under a one-way hash of the address and nothing else, so \
             that it is not mailed again what it had stopped; turning a type back on for the \
             address lifts it",
            if dry_run { "would be kept" } else { "kept" },
            opt_outs(kept),
        )?;
    }
    // Named by count only: the erasure's output names no address in full.
    let others = others?;
    if !others.is_empty() {
        out!(
            "\nnot erased: {} more address(es) herald keeps that differ from this one only in \
             capitals, most likely the same parent's; `herald recipients show` with this \
             address names them, and each is erased by its own name",
            others.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald recipients unsubscribe`: turns emails off for the addresses named and those of a
/// file, as their links would, recorded as the operator's doing.
pub(super) async fn unsubscribe(
    config: Config,
    emails: Vec<String>,
    file: Option<&std::path::Path>,
    kind: &str,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    use crate::store::preferences::{self, Unsubscribe};
    let what = Unsubscribe::parse(kind)
        .ok_or_else(|| anyhow::anyhow!("--type is all, session_reports or weekly_digest"))?;
    let emails: Vec<String> = super::addresses(emails, file)?
        .into_iter()
        .map(|email| email.as_str().to_owned())
        .collect();
    let store = current_store(&config).await?;
    let done = preferences::unsubscribe_by_operator(
        &store,
        &emails,
        what,
        &super::actor(&config),
        crate::store::now_ms(),
        dry_run,
    )
    .await;
    store.close().await;
    let (changed, already) = done?;
    if dry_run {
        out!(
            "would unsubscribe from {}: {changed} would change, {already} have it off already (dry run: nothing changed)",
            what.as_str()
        )?;
    } else {
        out!(
            "unsubscribed from {}: {changed} changed, {already} had it off already",
            what.as_str()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald recipients unsubscribed`: the addresses with `kind` turned off, one a line.
pub(super) async fn unsubscribed(config: Config, kind: &str) -> anyhow::Result<ExitCode> {
    use crate::store::preferences::{self, Unsubscribe};
    let what = Unsubscribe::parse(kind)
        .ok_or_else(|| anyhow::anyhow!("--type is all, session_reports or weekly_digest"))?;
    let store = current_store(&config).await?;
    let store = &store;
    let printed = super::print_pages(|after| async move {
        preferences::turned_off(store, what, after.as_deref(), super::PAGE).await
    })
    .await;
    store.close().await;
    printed?;
    Ok(ExitCode::SUCCESS)
}
