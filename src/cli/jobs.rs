//! The job commands: `herald digest` and `herald jobs list|run`, run through the same job
//! ledger and code as the scheduler's.

use std::process::ExitCode;

use super::current_store;
use crate::config::Config;

pub(super) async fn digest(
    config: Config,
    dry_run: bool,
    start_date: Option<String>,
    zone: Option<String>,
) -> anyhow::Result<ExitCode> {
    let zone = match zone.as_deref().map(|z| z.trim().parse::<chrono_tz::Tz>()) {
        None => config.jobs.timezone,
        Some(Ok(zone)) => zone,
        Some(Err(_)) => {
            eprintln!(
                "--zone: expected an IANA time zone name (e.g. Asia/Tokyo), got '{}'",
                zone.unwrap_or_default()
            );
            return Ok(ExitCode::from(2));
        }
    };
    if zone != config.jobs.timezone && !config.jobs.local_delivery {
        eprintln!(
            "--zone: with DIGEST_DELIVERY=global every digest goes out at once, in {}; a zone has \
             a digest of its own only with DIGEST_DELIVERY=local",
            config.jobs.timezone
        );
        return Ok(ExitCode::from(2));
    }
    let job = crate::jobs::digest_job(zone, config.jobs.timezone);
    let week = match start_date.as_deref() {
        None => None,
        Some(raw) => match crate::jobs::digest::parse_date(raw) {
            Some(date) => Some(date),
            None => {
                eprintln!("--start-date: expected YYYY-MM-DD, got '{raw}'");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let now = chrono::Utc::now().timestamp_millis();
    let send_log_days = config.jobs.retention.send_log_days;
    let scheduled_for = match week
        .map(|week| crate::jobs::digest::chosen_occurrence(week, zone, send_log_days, now))
        .transpose()
    {
        Ok(scheduled_for) => scheduled_for,
        Err(problem) => {
            eprintln!("--start-date: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    if !dry_run {
        return jobs_run(config, &job, scheduled_for, week).await;
    }
    let (context, root) =
        crate::startup::offline_jobs(&config, current_store(&config).await?).await?;
    let report = context.run(&job, context.now_ms(), week, true).await;
    root.shutdown(std::time::Duration::from_secs(5)).await;
    let report = report?;
    let pretty: serde_json::Value = serde_json::from_str(&report)?;
    out!("{}", serde_json::to_string_pretty(&pretty)?)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn jobs_list(config: Config) -> anyhow::Result<ExitCode> {
    let store = current_store(&config).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let default = config.jobs.timezone;
    // With local delivery, a digest job per zone in use, as the scheduler keeps them, with
    // how many recipients each covers.
    let recipients = crate::jobs::digest_recipients(&store, &config.jobs).await?;
    let mut specs = crate::jobs::job_specs(&config.jobs);
    specs.extend(
        recipients
            .keys()
            .filter_map(|job| crate::jobs::digest_zone(job, default))
            .filter(|zone| *zone != default)
            .map(|zone| crate::jobs::zone_digest_job(&config.jobs, zone)),
    );
    let mut rows = vec![[
        "JOB".to_owned(),
        "SCHEDULE".to_owned(),
        "TIMEZONE".to_owned(),
        "NEXT RUN (UTC)".to_owned(),
        "RECIPIENTS".to_owned(),
        "LAST RUN".to_owned(),
    ]];
    for spec in &specs {
        let next = spec
            .schedule
            .next_after(now)
            .map_or_else(|| "-".to_owned(), crate::jobs::digest::format_instant);
        let covered = match crate::jobs::digest_zone(&spec.name, default) {
            Some(_) if config.jobs.local_delivery => {
                recipients.get(&spec.name).copied().unwrap_or(0).to_string()
            }
            _ => "-".to_owned(),
        };
        let last = crate::store::jobs::runs(&store, &spec.name, 1)
            .await
            .unwrap_or_default();
        let last = last.first().map_or_else(
            || "never".to_owned(),
            |r| {
                // A run that went through only on a rerun says so.
                let attempt = match r.attempts {
                    1 => String::new(),
                    n => format!(" (attempt {n})"),
                };
                // Which replica (or shell) ran it: the owner up to its process.
                let by = r
                    .owner
                    .as_deref()
                    .and_then(|owner| owner.rsplit_once('/'))
                    .map_or_else(String::new, |(place, _)| format!(" by {place}"));
                format!(
                    "{} at {}{by}{attempt} {}",
                    r.status,
                    crate::jobs::digest::format_instant(r.started_at_ms),
                    crate::redact::for_terminal(r.error.as_deref().unwrap_or_default())
                )
            },
        );
        rows.push([
            spec.name.clone(),
            spec.schedule.expression().to_owned(),
            spec.schedule.timezone().to_string(),
            next,
            covered,
            last,
        ]);
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[5]);
        out!("{}", line.trim_end())?;
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Runs a job through the occurrence ledger, by the scheduler's own path (claim, lease
/// heartbeat, panic capture, outcome).
pub(super) async fn jobs_run(
    config: Config,
    name: &str,
    scheduled_for: Option<i64>,
    week: Option<chrono::NaiveDate>,
) -> anyhow::Result<ExitCode> {
    use herald_actors::scheduler::{RunOutcome, run_occurrence};
    let (context, root) =
        crate::startup::offline_jobs(&config, current_store(&config).await?).await?;
    let port = std::sync::Arc::new(crate::jobs::JobsPort {
        context: context.clone(),
    });
    let occurrence = scheduled_for.unwrap_or_else(|| context.now_ms());
    let lease = i64::try_from(config.jobs.lease.as_millis()).unwrap_or(i64::MAX);
    let ran = run_occurrence(port, context.clock.clone(), lease, name, occurrence)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if let Some((run_id, _)) = &ran {
        let target = crate::store::audit::job_target(name, week, run_id);
        // The run is done: an audit row the database refuses does not make it fail.
        if let Err(err) = crate::store::audit::record_alone(
            &context.store,
            &super::actor(&config),
            "job.run",
            &target,
        )
        .await
        {
            eprintln!("warning: the run was not audited: {err}");
        }
    }
    let code = match ran {
        None => {
            eprintln!("{name}: that occurrence already succeeded or is running");
            ExitCode::from(3)
        }
        Some((run_id, RunOutcome::Succeeded(stats))) => {
            out!("{name} succeeded (run {run_id}): {stats}")?;
            ExitCode::SUCCESS
        }
        Some((run_id, RunOutcome::Failed(error))) => {
            eprintln!(
                "{name} failed (run {run_id}): {}",
                crate::redact::mask_emails_in(&error)
            );
            ExitCode::FAILURE
        }
    };
    root.shutdown(std::time::Duration::from_secs(5)).await;
    context.store.close().await;
    Ok(code)
}
