//! The commands about the mail itself: `herald email preview` renders an email without
//! sending it, `herald email retry` sends a failed one again; `herald suppressions` lists
//! and lifts the addresses herald no longer mails.

use std::process::ExitCode;

use super::{PreviewWhich, SuppressionsAction, current_store, show};
use crate::config::Config;

pub(super) async fn preview(
    config: Config,
    which: PreviewWhich,
    out: Option<&std::path::Path>,
    locale: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::email::preview::{self, Links, Request};
    let store = current_store(&config).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let request = match which {
        PreviewWhich::Report { session_id } => Request::Report {
            session_id: herald_actors::email::SessionId::parse(&session_id)
                .map_err(|_| anyhow::anyhow!("{session_id:?} is not a session id"))?
                .to_string(),
        },
        PreviewWhich::Digest { email, week } => Request::Digest {
            email: super::parse_email(&email)?.as_str().to_owned(),
            week_start: match week {
                Some(raw) => Some(
                    crate::reports::week::parse_date(&raw)
                        .ok_or_else(|| anyhow::anyhow!("--week {raw:?}: expected YYYY-MM-DD"))?,
                ),
                None => None,
            },
        },
    };
    let signer = crate::email::Signer::from_config(&config);
    let links = Links {
        templates: &config.email.templates,
        signer: &signer,
        api_base_url: &config.email.api_base_url,
    };
    let locale = match locale {
        Some(raw) => Some(crate::language::tag(&raw).ok_or_else(|| {
            anyhow::anyhow!("--locale {raw:?}: expected a language tag such as pl or pt-BR")
        })?),
        None => None,
    };
    if let Some(tag) = &locale
        && config
            .email
            .templates
            .for_locale(Some(tag))
            .language()
            .is_none()
    {
        eprintln!("note: no templates of {tag} in EMAIL_TEMPLATES_DIR: the deployment's own words");
    }
    let shown = preview::render(
        &store,
        &links,
        (&config.jobs).into(),
        now,
        request,
        locale.as_deref(),
    )
    .await?;
    // The files first, then what is shown: a reader that stops early (`| head`) must not
    // stop the files being written, nor make the command fail.
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)?;
        let mut files = vec![("email.html", shown.rendered.html.as_bytes())];
        if let Some(pdf) = &shown.pdf {
            files.push(("report.pdf", pdf));
        }
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes)?;
        }
        for (name, _) in &files {
            show(
                &mut std::io::stderr(),
                &format!("wrote {}", dir.join(name).display()),
            )?;
        }
    }
    out!(
        "Subject: {}\n\n{}",
        shown.rendered.subject,
        shown.rendered.text
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn retry(config: Config, raw: &str) -> anyhow::Result<ExitCode> {
    use crate::store::ledger::{self, Retry};
    let id = ledger::parse_id(raw)
        .ok_or_else(|| anyhow::anyhow!("{raw:?} is not an email's id (a UUID)"))?;
    let store = current_store(&config).await?;
    let retried = ledger::retry(
        &store,
        &id,
        &super::actor(&config),
        chrono::Utc::now().timestamp_millis(),
    )
    .await;
    store.close().await;
    Ok(match retried? {
        Retry::Queued { email } => {
            out!(
                "queued again: {id} to {}; the running service sends it",
                crate::redact::mask_email(&email)
            )?;
            ExitCode::SUCCESS
        }
        Retry::NotFailed { status } => {
            eprintln!("{id} is {status}: only a failed email is sent again");
            ExitCode::from(1)
        }
        Retry::NotFound => {
            eprintln!("no email {id} in the ledger");
            ExitCode::from(1)
        }
    })
}

pub(super) async fn retry_failed(
    config: Config,
    since: &str,
    until: Option<&str>,
    kind: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    use crate::store::ledger::{self, FailedBetween};
    let now = chrono::Utc::now().timestamp_millis();
    let failed = FailedBetween::parse(since, until, kind, now)
        .map_err(|(field, reason)| anyhow::anyhow!("--{} {reason}", field.replace('_', "-")))?;
    let store = current_store(&config).await?;
    if dry_run {
        let summary = ledger::failed_between(&store, &failed).await;
        store.close().await;
        let summary = summary?;
        out!("{} failed emails would be queued again", summary.emails)?;
        for (error, emails) in &summary.errors {
            out!("{emails:>8}  {error}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let emails = ledger::retry_failed(&store, &failed, &super::actor(&config), now).await;
    store.close().await;
    out!(
        "{} failed emails queued again; the running service sends them",
        emails?
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn suppressions(
    config: Config,
    action: SuppressionsAction,
) -> anyhow::Result<ExitCode> {
    use crate::store::suppressions;
    let store = current_store(&config).await?;
    let code = match action {
        SuppressionsAction::List {
            email,
            reason,
            source,
            limit,
            offset,
            addresses,
        } => {
            let email = email.as_deref().map(super::parse_email).transpose()?;
            let filter = suppressions::Filter {
                email: email.as_ref().map(herald_actors::email::Email::as_str),
                // Both checked by the argument parser.
                reason: reason.as_deref().and_then(suppressions::Reason::parse),
                source: source.as_deref(),
            };
            if addresses {
                let store = &store;
                let printed = super::print_pages(|after| async move {
                    suppressions::addresses(store, filter, after.as_deref(), super::PAGE).await
                })
                .await;
                store.close().await;
                printed?;
                return Ok(ExitCode::SUCCESS);
            }
            let (list, total) =
                suppressions::list(&store, filter, limit.clamp(1, 10_000), offset.max(0)).await?;
            out!(
                "{:<40} {:<11} {:<9} {:<26} DETAIL",
                "EMAIL",
                "REASON",
                "SOURCE",
                "SINCE (UTC)"
            )?;
            for s in &list {
                out!(
                    "{:<40} {:<11} {:<9} {:<26} {}",
                    s.email,
                    s.reason,
                    s.source,
                    crate::jobs::digest::format_instant(s.created_at_ms),
                    crate::redact::for_terminal(s.detail.as_deref().unwrap_or(""))
                )?;
            }
            out!("{} of {total} shown", list.len())?;
            ExitCode::SUCCESS
        }
        SuppressionsAction::Add {
            emails,
            file,
            reason,
            detail,
            dry_run,
        } => {
            let additions = additions(emails, file.as_deref(), &reason, detail)?;
            let now = crate::store::now_ms();
            let actor = super::actor(&config);
            let done = suppressions::add(&store, &additions, &actor, now, dry_run).await?;
            let (added, already) = (done.added, done.already_suppressed);
            if dry_run {
                out!("would add {added}, already suppressed {already} (dry run: nothing changed)")?;
            } else {
                out!("added {added}, already suppressed {already}")?;
            }
            ExitCode::SUCCESS
        }
        SuppressionsAction::Remove {
            emails,
            file,
            dry_run,
        } => {
            lift(
                &store,
                emails,
                file.as_deref(),
                dry_run,
                &super::actor(&config),
            )
            .await?
        }
    };
    store.close().await;
    Ok(code)
}

/// `herald suppressions remove`: lifts each address's suppression under every spelling, or
/// with `dry_run` finds it; one address is answered with its suppression, several with
/// counts.
async fn lift(
    store: &crate::store::Store,
    emails: Vec<String>,
    file: Option<&std::path::Path>,
    dry_run: bool,
    actor: &str,
) -> anyhow::Result<ExitCode> {
    use crate::store::suppressions;
    let mut emails = super::addresses(emails, file)?;
    // A lift holds for every spelling: the list's second spelling of an address counts once.
    let mut seen = std::collections::HashSet::new();
    emails.retain(|email| seen.insert(email.as_str().to_lowercase()));
    let mut lifted = 0;
    for email in &emails {
        let found = if dry_run {
            let filter = suppressions::Filter {
                email: Some(email.as_str()),
                ..Default::default()
            };
            suppressions::list(store, filter, 1, 0).await?.0.pop()
        } else {
            suppressions::lift(store, email.as_str(), actor).await?
        };
        if let (Some(found), [_]) = (&found, emails.as_slice()) {
            let verb = if dry_run { "would lift" } else { "lifted" };
            out!(
                "{verb}: {} ({}, {})",
                email.as_str(),
                found.reason,
                found.source
            )?;
        }
        lifted += u64::from(found.is_some());
    }
    let not_suppressed = emails.len() as u64 - lifted;
    match emails.as_slice() {
        [one] if lifted == 0 => eprintln!("{} is not suppressed", one.as_str()),
        [_] => {}
        _ if dry_run => {
            out!("would lift {lifted}, not suppressed {not_suppressed} (dry run: nothing changed)")?
        }
        _ => out!("lifted {lifted}, not suppressed {not_suppressed}")?,
    }
    Ok(if lifted == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What `herald suppressions add` asks for: the addresses named and those of `file`, each
/// checked before anything is added.
fn additions(
    emails: Vec<String>,
    file: Option<&std::path::Path>,
    reason: &str,
    detail: Option<String>,
) -> anyhow::Result<Vec<crate::store::suppressions::Addition>> {
    use anyhow::Context;
    let reason = crate::store::suppressions::Reason::parse(reason)
        .context("--reason is bounced or complained")?;
    // The API's rule for the same field.
    let detail = crate::http::validate::text(
        "--detail",
        detail,
        crate::store::suppressions::DETAIL_MAX,
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(super::addresses(emails, file)?
        .into_iter()
        .map(|email| crate::store::suppressions::Addition {
            email: email.as_str().to_owned(),
            reason,
            detail: detail.clone(),
        })
        .collect())
}

/// `herald email logs EMAIL`: the recipient's ledger, newest first.
pub(super) async fn logs(config: Config, raw: &str, limit: i64) -> anyhow::Result<ExitCode> {
    use crate::store::ledger;
    let email = super::parse_email(raw)?;
    let store = current_store(&config).await?;
    let rows = ledger::for_email(&store, email.as_str(), limit.clamp(1, 10_000)).await;
    let others = crate::store::recipients::other_spellings(&store, email.as_str()).await;
    store.close().await;
    let rows = rows?;
    out!(
        "{:<36}  {:<19}  {:<15}  {:<10}  {:>8}  {:<20}  WHY",
        "ID",
        "CREATED (UTC)",
        "TYPE",
        "STATUS",
        "ATTEMPTS",
        "BY"
    )?;
    for row in &rows {
        out!(
            "{:<36}  {:<19}  {:<15}  {:<10}  {:>8}  {:<20}  {}",
            row.id,
            super::at(row.created_at_ms),
            row.email_type,
            row.status,
            row.attempts,
            row.claimed_by.as_deref().unwrap_or("-"),
            super::why(row)
        )?;
    }
    out!("{} shown", rows.len())?;
    super::recipients::spellings(&others?)?;
    Ok(ExitCode::SUCCESS)
}
