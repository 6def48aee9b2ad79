//! Digests at each recipient's local time (`DIGEST_DELIVERY=local`, the default): a digest
//! job per zone in use, each at `DIGEST_SCHEDULE`'s time in its zone and reporting that
//! zone's seven local days; one digest per recipient and week, also when the recipient
//! moves to another zone during the week. Driven by the hand-set clock and the scheduler's
//! wake (no waiting for timers).

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use herald_actors::clock::Clock;
use serde_json::{Value, json};

use crate::email::ledger;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_at};
use crate::on_both_backends;

/// The first Sunday after tomorrow (UTC date), from the app's clock: every instant the test
/// sets lies ahead of where the clock started.
fn next_sunday(app: &TestApp) -> NaiveDate {
    let now = Utc
        .timestamp_millis_opt(app.clock.now_ms() as i64)
        .unwrap()
        .date_naive()
        + Duration::days(1);
    let ahead = (7 - now.weekday().num_days_from_sunday()) % 7;
    now + Duration::days(i64::from(if ahead == 0 { 7 } else { ahead }))
}

fn at(date: NaiveDate, hour: u32, minute: u32) -> u64 {
    date.and_hms_opt(hour, minute, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis() as u64
}

async fn set_zone(app: &TestApp, email: &str, zone: &str) {
    app.set_preferences(email, json!({"timezone": zone})).await;
}

async fn complete_one(app: &TestApp, email: &str) {
    let session = app
        .new_session(json!({"parent_email": email, "learner_name": "Ada", "subject": "Fractions"}))
        .await;
    app.clock.advance_ms(10 * 60_000);
    assert_eq!(
        app.complete(&session.id, Some(&session.token), None)
            .await
            .status(),
        200
    );
}

/// The clock to `instant`, and the scheduler woken; returns once it has acted (it answers
/// messages in order).
async fn move_to(app: &TestApp, instant: u64) {
    app.clock.set_ms(instant);
    app.wake_scheduler().await;
    // A digest run queues in its own task: give it the time to write.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let jobs = app.state.scheduler.list().await.unwrap();
        if jobs.iter().all(|j| j.running.is_none()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a digest run did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A job's dry run: its report.
async fn dry_run(app: &TestApp, job: &str) -> Value {
    let answer = app
        .post_admin(
            &format!("/admin/jobs/{job}/run"),
            Some(&json!({"dry_run": true})),
        )
        .await;
    assert_eq!(answer.status(), 200);
    answer.json::<Value>().await.unwrap()
}

async fn digests(app: &TestApp, email: &str) -> Vec<Value> {
    ledger(app, email)
        .await
        .into_iter()
        .filter(|row| row["email_type"] == "weekly_digest")
        .collect()
}

async fn each_recipient_gets_the_digest_at_the_schedules_time_in_their_own_zone(backend: Backend) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    // (recipient, zone, the UTC hour and minute of its Sunday 09:00 on that day, or the
    // day before for a zone ahead of UTC by more than nine hours)
    let zones: [(&str, Option<&str>, i64, u32, u32); 6] = [
        (
            "kiritimati@example.com",
            Some("Pacific/Kiritimati"),
            -1,
            19,
            0,
        ),
        ("kolkata@example.com", Some("Asia/Kolkata"), 0, 3, 30),
        ("utc@example.com", None, 0, 9, 0),
        ("london@example.com", Some("Europe/London"), 0, 9, 0),
        ("ny@example.com", Some("America/New_York"), 0, 14, 0),
        ("pago@example.com", Some("Pacific/Pago_Pago"), 0, 20, 0),
    ];
    // Their zones were set well before the week (a move inside the week is the next test).
    app.clock.set_ms(at(sunday - Duration::days(10), 12, 0));
    for (email, zone, ..) in &zones {
        if let Some(zone) = zone {
            set_zone(&app, email, zone).await;
        }
    }
    // The jobs list names each zone's digest with how many recipients it covers.
    let jobs: Value = app.get_admin("/admin/jobs").await.json().await.unwrap();
    let kolkata = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "weekly_digest@Asia/Kolkata")
        .expect("Kolkata's digest job");
    assert_eq!(kolkata["recipients"], 1, "{kolkata}");
    // Active on the Wednesday before (a Wednesday in every one of these zones).
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    for (email, ..) in &zones {
        complete_one(&app, email).await;
    }

    // Through the day, zone after zone: each digest at its zone's Sunday 09:00, not before.
    for (i, (email, _, day, hour, minute)) in zones.iter().enumerate() {
        move_to(
            &app,
            at(sunday + Duration::days(*day), *hour, *minute) + 1_000,
        )
        .await;
        assert_eq!(digests(&app, email).await.len(), 1, "{email}");
        for (later, ..) in &zones[i + 1..] {
            let (_, _, d, h, m) = zones.iter().find(|z| z.0 == *later).unwrap();
            if (d, h, m) != (day, hour, minute) {
                assert!(digests(&app, later).await.is_empty(), "{later} too early");
            }
        }
    }
    // Woken again: nothing more.
    move_to(&app, at(sunday, 23, 0)).await;
    for (email, ..) in &zones {
        let rows = digests(&app, email).await;
        assert_eq!(rows.len(), 1, "{email}: {rows:?}");
        // Each reports the seven local days before its Sunday.
        assert_eq!(
            rows[0]["week_start"],
            (sunday - Duration::days(7)).format("%Y-%m-%d").to_string(),
            "{email}"
        );
    }
    // One run per zone occurrence, in the job ledger (the clock was set back before the
    // zones were, so the Sunday before is there too, caught up with nothing to send).
    let runs = app.job_runs("weekly_digest@Asia%2FKolkata").await;
    let this_sunday = chrono::DateTime::from_timestamp_millis(at(sunday, 3, 30) as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let of_this_sunday = runs
        .iter()
        .filter(|r| r["scheduled_for"] == this_sunday.as_str())
        .count();
    assert_eq!(of_this_sunday, 1, "{runs:?}");
}

/// Two recipients move from New York to Tokyo in the week: one before Tokyo's Sunday 09:00
/// (15:00 UTC on Saturday... 00:00 UTC on Sunday), one after it but before New York's. Each
/// gets exactly one digest.
async fn a_recipient_who_moves_zone_in_the_week_gets_one_digest(backend: Backend) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    let (early, late) = ("early@example.com", "late@example.com");
    app.clock.set_ms(at(sunday - Duration::days(10), 12, 0));
    for email in [early, late] {
        set_zone(&app, email, "America/New_York").await;
    }
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    for email in [early, late] {
        complete_one(&app, email).await;
    }
    // Saturday noon UTC: the early one moves to Tokyo.
    app.clock.set_ms(at(sunday - Duration::days(1), 12, 0));
    set_zone(&app, early, "Asia/Tokyo").await;
    // Tokyo's Sunday 09:00 is 00:00 UTC.
    move_to(&app, at(sunday, 0, 0) + 1_000).await;
    assert_eq!(digests(&app, early).await.len(), 1);
    assert!(digests(&app, late).await.is_empty());
    // Then the late one moves, after Tokyo's occurrence and before New York's.
    app.clock.set_ms(at(sunday, 1, 0));
    set_zone(&app, late, "Asia/Tokyo").await;
    move_to(&app, at(sunday, 15, 0)).await;
    assert_eq!(digests(&app, early).await.len(), 1, "not twice");
    assert_eq!(digests(&app, late).await.len(), 1, "not skipped");
}

/// A digest queued by the zone a recipient has just left reports that zone's week, also
/// when it goes out after the move: a session early on Kiritimati's Sunday (UTC+14) lies in
/// the week before by Pago Pago's calendar (UTC-11), where the recipient now lives; the
/// digest still goes out, once, with that session in it.
async fn a_digest_queued_before_a_move_reports_the_week_of_the_zone_that_queued_it(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    let email = "traveller@example.com";
    app.clock.set_ms(at(sunday - Duration::days(10), 12, 0));
    set_zone(&app, email, "Pacific/Kiritimati").await;
    // Kiritimati's week starts on Saturday at 10:00 UTC; this session ends at 12:10.
    app.clock.set_ms(at(sunday - Duration::days(1), 12, 0));
    complete_one(&app, email).await;
    app.clock.set_ms(at(sunday + Duration::days(3), 12, 0));
    set_zone(&app, email, "Pacific/Pago_Pago").await;
    // Kiritimati's Sunday 09:00 (Saturday 19:00 UTC) takes the recipient who moved away.
    move_to(&app, at(sunday + Duration::days(6), 19, 0) + 1_000).await;
    let rows = crate::email::wait_ledger(&app, email, "the digest decided", |rows| {
        rows.iter().any(|r| {
            r["email_type"] == "weekly_digest"
                && ["sent", "failed"].contains(&r["status"].as_str().unwrap_or(""))
        })
    })
    .await;
    let digest: Vec<_> = rows
        .iter()
        .filter(|r| r["email_type"] == "weekly_digest")
        .collect();
    assert_eq!(digest.len(), 1, "{rows:?}");
    assert_eq!(digest[0]["status"], "sent", "{rows:?}");
    assert_eq!(digest[0]["week_start"], sunday.to_string());
    assert_eq!(digest[0]["zone"], "Pacific/Kiritimati");
    // Pago Pago's Sunday 09:00: nothing more that week.
    move_to(&app, at(sunday + Duration::days(7), 20, 0) + 1_000).await;
    assert_eq!(digests(&app, email).await.len(), 1);
}

/// A zone chosen a minute before its first Sunday 09:00, read by a scheduler busy until
/// after it: the zone's job exists from when the request chose the zone, so that occurrence
/// runs. (PostgreSQL: a lock on the job ledger keeps the scheduler busy for as long as the
/// test wants.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_chosen_just_before_its_occurrence_gets_it_when_the_scheduler_reads_it_late() {
    if !crate::helpers::postgres_available(
        "a_zone_chosen_just_before_its_occurrence_gets_it_when_the_scheduler_reads_it_late",
    )
    .await
    {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let sunday = next_sunday(&app);
    let email = "tokyo@example.com";
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    complete_one(&app, email).await;
    // Tokyo's Sunday 09:00 is 00:00 UTC: the zone is chosen at 08:59 there.
    app.clock.set_ms(at(sunday - Duration::days(1), 23, 59));
    let mut lock = app.state.store.writer().begin().await.unwrap();
    sqlx::query("LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // The scheduler reads the ledger on a wake, and waits on the lock with the zone's
    // message queued behind.
    app.state.scheduler.wake();
    set_zone(&app, email, "Asia/Tokyo").await;
    app.clock.set_ms(at(sunday, 0, 0) + 1_000);
    lock.rollback().await.unwrap();
    move_to(&app, at(sunday, 0, 0) + 1_000).await;
    assert_eq!(digests(&app, email).await.len(), 1);
}

/// herald is down over two zones' Sunday 09:00 (Kolkata's and New York's): started again
/// after both, it runs each zone's missed occurrence once (the missed-run policy, per zone).
async fn downtime_over_two_zones_occurrences_runs_each_once_at_the_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    let (kolkata, new_york) = ("kolkata@example.com", "ny@example.com");
    app.clock.set_ms(at(sunday - Duration::days(17), 12, 0));
    set_zone(&app, kolkata, "Asia/Kolkata").await;
    set_zone(&app, new_york, "America/New_York").await;
    // A first week served as usual: each zone's job has run.
    app.clock.set_ms(at(sunday - Duration::days(11), 12, 0));
    for email in [kolkata, new_york] {
        complete_one(&app, email).await;
    }
    move_to(&app, at(sunday - Duration::days(7), 15, 0)).await;
    for email in [kolkata, new_york] {
        assert_eq!(digests(&app, email).await.len(), 1, "{email}");
    }
    // Active in the second week; herald goes down on Saturday and comes back on Sunday
    // evening, after both zones' 09:00.
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    for email in [kolkata, new_york] {
        complete_one(&app, email).await;
    }
    // (Nothing wakes the scheduler between the clock's move and the restart: its timers run
    // on real time.)
    app.clock.set_ms(at(sunday, 20, 0));
    let app = app.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (a, b) = (
            digests(&app, kolkata).await.len(),
            digests(&app, new_york).await.len(),
        );
        if (a, b) == (2, 2) {
            break;
        }
        assert!(a <= 2 && b <= 2, "{a} and {b}");
        assert!(std::time::Instant::now() < deadline, "{a} and {b} digests");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Woken again: still one each for the week.
    move_to(&app, at(sunday, 21, 0)).await;
    for email in [kolkata, new_york] {
        assert_eq!(digests(&app, email).await.len(), 2, "{email}");
    }
}

/// A zone chosen on Wednesday, and herald down over that zone's first Sunday 09:00: started
/// again, it runs the occurrence it missed (the zone's job existed from Wednesday, though no
/// serving process had it then).
async fn a_zone_first_chosen_before_a_downtime_has_its_missed_occurrence_caught_up(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    let tokyo = "tokyo@example.com";
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    set_zone(&app, tokyo, "Asia/Tokyo").await;
    complete_one(&app, tokyo).await;
    // Down from Saturday; back on Sunday evening, after Tokyo's 09:00 (00:00 UTC).
    app.clock.set_ms(at(sunday, 20, 0));
    let app = app.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while digests(&app, tokyo).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the missed occurrence was not caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    move_to(&app, at(sunday, 21, 0)).await;
    let rows = digests(&app, tokyo).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0]["week_start"],
        (sunday - Duration::days(7)).format("%Y-%m-%d").to_string()
    );
}

/// A dry run lists every zone's next digest with how many recipients it covers, soonest
/// first; a zone's dry run counts only that zone's recipients.
async fn a_dry_run_lists_the_next_local_occurrences_and_takes_a_zone(backend: Backend) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    for (email, zone) in [
        ("t1@example.com", "Asia/Tokyo"),
        ("t2@example.com", "Asia/Tokyo"),
        ("ny@example.com", "America/New_York"),
    ] {
        set_zone(&app, email, zone).await;
    }
    // Known, with no zone of their own: the service's (UTC).
    app.set_preferences("utc@example.com", json!({"weekly_digest_enabled": true}))
        .await;
    complete_one(&app, "t1@example.com").await;
    complete_one(&app, "ny@example.com").await;

    let report = dry_run(&app, "weekly_digest").await;
    let upcoming: Vec<(String, String, i64)> = report["upcoming"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|u| {
            (
                u["job"].as_str().unwrap().to_owned(),
                u["at"].as_str().unwrap().to_owned(),
                u["recipients"].as_i64().unwrap(),
            )
        })
        .collect();
    let utc = |hour| {
        chrono::DateTime::from_timestamp_millis(at(sunday, hour, 0) as i64)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    assert_eq!(
        upcoming,
        [
            ("weekly_digest@Asia/Tokyo".to_owned(), utc(0), 2),
            ("weekly_digest".to_owned(), utc(9), 1),
            ("weekly_digest@America/New_York".to_owned(), utc(14), 1),
        ],
        "{report}"
    );
    // Tokyo's dry run: its two recipients, one active, one not; nothing of New York's.
    app.clock.set_ms(at(sunday, 0, 30));
    let tokyo = dry_run(&app, "weekly_digest@Asia%2FTokyo").await;
    assert_eq!(
        (
            tokyo["recipients_with_activity"].as_i64(),
            tokyo["skipped_no_activity"].as_i64(),
            tokyo["queued"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{tokyo}"
    );
    assert!(
        digests(&app, "t1@example.com").await.is_empty(),
        "a dry run sends nothing"
    );
}

/// The month and day of a UTC instant, at a minute of it.
fn utc_ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> u64 {
    at(NaiveDate::from_ymd_opt(y, m, d).unwrap(), h, min)
}

/// New York's 2026 daylight-saving changes, walked through in 15-minute steps: on 8 March
/// 02:30 does not exist, on 1 November 01:30 happens twice. A recipient active every week
/// gets exactly one digest a week, each reporting the seven local days before it.
async fn one_digest_a_week_across_both_daylight_saving_changes(backend: Backend) {
    // (DIGEST_SCHEDULE, the Sunday before the change, the Sunday of the change)
    for (schedule, before, change) in [
        (
            "30 2 * * SUN",
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(),
        ),
        (
            "30 1 * * SUN",
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        ),
    ] {
        let start = before - Duration::days(3);
        let app = spawn_app_at(
            backend,
            |vars| {
                vars.insert("DIGEST_SCHEDULE".into(), schedule.into());
            },
            utc_ms(start.year(), start.month(), start.day(), 12, 0),
        )
        .await;
        let ny = "ny@example.com";
        set_zone(&app, ny, "America/New_York").await;
        // The digest of `before`'s Sunday covers the week before it: let it pass first.
        move_to(&app, at(before, 12, 0)).await;
        let mut weeks = Vec::new();
        for sunday in [change, change + Duration::days(7)] {
            // Active on the Wednesday of the week the digest reports.
            app.clock.set_ms(at(sunday - Duration::days(4), 15, 0));
            complete_one(&app, ny).await;
            let mut step = at(sunday, 0, 0);
            while step <= at(sunday, 12, 0) {
                move_to(&app, step).await;
                step += 15 * 60_000;
            }
            weeks.push((sunday - Duration::days(7)).format("%Y-%m-%d").to_string());
            let rows = digests(&app, ny).await;
            let mut reported: Vec<&str> = rows
                .iter()
                .filter_map(|r| r["week_start"].as_str())
                .collect();
            reported.sort_unstable();
            assert_eq!(reported, weeks, "{schedule}: {rows:?}");
        }
        // One run per occurrence in the zone's job ledger, one on the day of the change.
        let runs = app.job_runs("weekly_digest@America%2FNew_York").await;
        let on_the_day = runs
            .iter()
            .filter(|r| {
                r["scheduled_for"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&change.format("%Y-%m-%d").to_string()))
            })
            .count();
        assert_eq!(on_the_day, 1, "{schedule}: {runs:?}");
    }
}

/// A digest's throttle slot is dated at the start of the week it reports, a week before it
/// goes out: retention keeps it two windows, so a run for an overlapping week still sees it.
async fn retention_keeps_a_digests_throttle_slot_for_two_windows(backend: Backend) {
    let app = spawn_app(backend).await;
    let sunday = next_sunday(&app);
    let email = "utc@example.com";
    app.clock.set_ms(at(sunday - Duration::days(4), 12, 0));
    complete_one(&app, email).await;
    move_to(&app, at(sunday, 9, 0) + 1_000).await;
    assert_eq!(digests(&app, email).await.len(), 1);
    let purged_slots = |days: i64| {
        let app = &app;
        async move {
            app.clock.set_ms(at(sunday + Duration::days(days), 12, 0));
            dry_run(app, "purge_old").await["email_throttles"].clone()
        }
    };
    // (Throttle rows share one cutoff: two digest windows.) A day on, the digest's slot,
    // dated eight days back, stays; eight days on (fifteen from its week's start) it goes;
    // eleven days on, the report's slot (of the Wednesday before) goes too.
    assert_eq!(purged_slots(1).await, 0);
    assert_eq!(purged_slots(8).await, 1);
    assert_eq!(purged_slots(11).await, 2);
}

on_both_backends!(
    retention_keeps_a_digests_throttle_slot_for_two_windows,
    one_digest_a_week_across_both_daylight_saving_changes,
    a_dry_run_lists_the_next_local_occurrences_and_takes_a_zone,
    a_zone_first_chosen_before_a_downtime_has_its_missed_occurrence_caught_up,
    downtime_over_two_zones_occurrences_runs_each_once_at_the_restart,
    each_recipient_gets_the_digest_at_the_schedules_time_in_their_own_zone,
    a_recipient_who_moves_zone_in_the_week_gets_one_digest,
    a_digest_queued_before_a_move_reports_the_week_of_the_zone_that_queued_it,
);
