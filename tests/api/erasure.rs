//! Erasing a recipient on request: `DELETE /admin/recipients/{email}` deletes every row that
//! names the address and the sessions reported to it, and nothing of anyone else.

use serde_json::{Value, json};

use crate::email::{complete_for, ledger, spawn_mail_app_with, wait_ledger};
use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;
use crate::smtp::SmtpServer;

const PARENT: &str = "erase.me@example.com";
const OTHER: &str = "stays@example.com";

async fn erase(app: &TestApp, email: &str, dry_run: bool) -> reqwest::Response {
    let query = if dry_run { "?dry_run=true" } else { "" };
    app.delete_admin(&format!("/admin/recipients/{email}{query}"))
        .await
}

async fn erasing_a_recipient_deletes_what_names_them_and_nothing_else(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    // A reported session, an open one, preferences changed, a suppression; and another
    // parent's reported session.
    let (reported, _) = complete_for(&app, PARENT).await;
    wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    let open = app
        .new_session(json!({"learner_name": "Zoë", "parent_email": PARENT}))
        .await;
    app.add_event(&open.id, Some(&open.token), json!({"kind": "step"}))
        .await;
    let (kept, _) = complete_for(&app, OTHER).await;
    wait_ledger(&app, OTHER, "sent", |rows| rows[0]["status"] == "sent").await;
    let changed = app
        .put_preferences(
            PARENT,
            &json!({"weekly_digest_enabled": false, "timezone": "Europe/Warsaw"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    herald::store::suppressions::suppress(
        &app.state.store,
        PARENT,
        herald::store::suppressions::Reason::Complained,
        "webhook",
        None,
        0,
    )
    .await
    .unwrap();

    // What herald keeps about the address, as the parent may ask to see it.
    let record = app.admin_json(&format!("/admin/recipients/{PARENT}")).await;
    let learners: Vec<&str> = record["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["learner_name"].as_str().unwrap())
        .collect();
    assert_eq!(learners, ["Ada", "Zoë"], "{record}");
    assert_eq!(record["emails"][0]["status"], "sent", "{record}");
    assert_eq!(record["emails"].as_array().unwrap().len(), 1);
    assert_eq!(record["preferences"]["weekly_digest_enabled"], false);
    assert_eq!(record["preferences"]["timezone"], "Europe/Warsaw");
    assert_eq!(record["preferences"]["suppressed"]["reason"], "complained");
    assert!(
        record["preference_changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "weekly_digest_enabled" && c["source"] == "api"),
        "{record}"
    );
    assert!(!record.to_string().contains(OTHER), "{record}");

    // A dry run counts and changes nothing.
    let dry: Value = erase(&app, PARENT, true).await.json().await.unwrap();
    assert_eq!(dry["dry_run"], true);
    let counted = dry["erased"].clone();
    assert_eq!(counted["sessions"], 2, "{counted}");
    assert_eq!(counted["session_events"], 4, "{counted}");
    assert_eq!(counted["email_send_logs"], 1, "{counted}");
    assert_eq!(counted["email_throttles"], 1, "{counted}");
    assert_eq!(counted["email_preferences"], 1, "{counted}");
    assert!(
        counted["preference_changes"].as_u64().unwrap() >= 1,
        "{counted}"
    );
    assert_eq!(counted["email_suppressions"], 1, "{counted}");
    assert_eq!(ledger(&app, PARENT).await.len(), 1);

    let token = app.link_token(PARENT).await;
    let response = erase(&app, PARENT, false).await;
    assert_eq!(response.status(), 200);
    let done: Value = response.json().await.unwrap();
    assert_eq!(done["dry_run"], false);
    // The links of the emails it was sent before have expired, and say so.
    let old_link = app.unsubscribe(&token, "all").await;
    assert_eq!(old_link.status(), 403);
    assert!(old_link.text().await.unwrap().contains("expired"));
    let old_page = app
        .get(&format!("/api/v1/email/preferences/page/{token}"))
        .await;
    assert_eq!(old_page.status(), 403);
    assert!(old_page.text().await.unwrap().contains("expired"));
    assert_eq!(done["erased"], counted, "the dry run's counts were exact");

    assert!(ledger(&app, PARENT).await.is_empty());
    assert_eq!(app.report_summary(&reported).await.status(), 404);
    assert_eq!(app.report_summary(&open.id).await.status(), 404);
    // What it had stopped is kept (the complaint stopped both types), and nothing else.
    let both = json!({"weekly_digest": true, "session_reports": true});
    assert_eq!(done["opt_outs_kept"], both, "{done}");
    assert_eq!(dry["opt_outs_kept"], both, "{dry}");
    let preferences: Value = app
        .admin_json(&format!("/api/v1/email/preferences/{PARENT}"))
        .await;
    assert_eq!(preferences["weekly_digest_enabled"], false, "{preferences}");
    assert_eq!(preferences["timezone"], Value::Null, "{preferences}");
    let suppressed: Value = app
        .admin_json(&format!("/admin/suppressions?email={PARENT}"))
        .await;
    assert_eq!(suppressed["total"], 0);
    let throttle: Value = app.admin_json(&format!("/admin/throttles/{PARENT}")).await;
    assert!(!throttle.to_string().contains("\"used\":1"), "{throttle}");
    let record = app.admin_json(&format!("/admin/recipients/{PARENT}")).await;
    for part in ["sessions", "emails", "preference_changes"] {
        assert_eq!(record[part], json!([]), "{record}");
    }
    assert_eq!(record["preferences"]["suppressed"], Value::Null, "{record}");
    assert_eq!(record["kept_from_erasure"]["opt_outs"], both, "{record}");
    // The other parent's data stays whole.
    assert_eq!(ledger(&app, OTHER).await.len(), 1);
    assert_eq!(app.report_summary(&kept).await.status(), 200);

    // Audited once (the dry run is not), the address masked.
    let audit = app.get_admin("/admin/audit?action=recipient.erase").await;
    let text = audit.text().await.unwrap();
    assert!(!text.contains(PARENT), "{text}");
    let audit: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(audit["total"], 1);
    assert_eq!(audit["entries"][0]["target"], "er***@example.com");
    let audited = audit["entries"][0]["new_value"].as_str().unwrap();
    assert!(audited.contains("\"sessions\":2"), "{audited}");
    assert!(audited.contains("\"opt_outs_kept\""), "{audited}");

    // Again: nothing is left to delete.
    let again: Value = erase(&app, PARENT, false).await.json().await.unwrap();
    assert!(
        again["erased"]
            .as_object()
            .unwrap()
            .values()
            .all(|rows| rows == 0),
        "{again}"
    );
    let refused = assert_error(
        erase(&app, "not-an-address", false).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(refused["field"], "email");
}

/// The backend gave an address with capitals, the parent asks with none: herald keeps the
/// two apart (the part before the `@` may be case-sensitive), and points the operator who
/// looks one up, or erases it, at the other instead of answering as for a stranger.
async fn an_address_kept_with_other_capitals_is_pointed_out(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    let given = "Erase.Me@example.com";
    complete_for(&app, given).await;
    wait_ledger(&app, given, "sent", |rows| rows[0]["status"] == "sent").await;
    herald::store::suppressions::suppress(
        &app.state.store,
        "ERASE.ME@example.com",
        herald::store::suppressions::Reason::Bounced,
        "smtp",
        None,
        0,
    )
    .await
    .unwrap();
    let others = json!(["ERASE.ME@example.com", given]);

    let record = app.admin_json(&format!("/admin/recipients/{PARENT}")).await;
    assert_eq!(record["other_spellings"], others, "{record}");
    assert_eq!(
        (&record["sessions"], &record["emails"]),
        (&json!([]), &json!([]))
    );
    let logs = app
        .admin_json(&format!("/admin/email/logs?email={PARENT}"))
        .await;
    assert_eq!(logs["other_spellings"], others, "{logs}");
    let dry: Value = erase(&app, PARENT, true).await.json().await.unwrap();
    assert_eq!(dry["other_spellings"], others, "{dry}");
    assert!(
        dry["erased"]
            .as_object()
            .unwrap()
            .values()
            .all(|rows| rows == 0),
        "{dry}"
    );
    // Looked up as given, the record is there, and the other two are pointed out.
    let record = app.admin_json(&format!("/admin/recipients/{given}")).await;
    assert_eq!(record["emails"].as_array().unwrap().len(), 1, "{record}");
    assert_eq!(
        record["other_spellings"],
        json!(["ERASE.ME@example.com"]),
        "{record}"
    );
    // A stranger has no other spellings.
    let stranger = app.admin_json("/admin/recipients/nobody@example.com").await;
    assert_eq!(stranger["other_spellings"], json!([]));
}

async fn report_email(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["report_email"].clone()
}

/// A parent who turned session reports off and then asked to be forgotten is not mailed a
/// report when a backend names the address again, under any spelling; the kept opt-out names
/// no address, and a backend turning reports back on lifts it.
async fn an_erased_parents_opt_out_outlives_the_erasure(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    complete_for(&app, PARENT).await;
    wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    let off = app
        .put_preferences(PARENT, &json!({"session_reports_enabled": false}))
        .await;
    assert_eq!(off.status(), 200);
    // Another parent with nothing turned off leaves nothing behind.
    complete_for(&app, OTHER).await;
    let nothing: Value = erase(&app, OTHER, false).await.json().await.unwrap();
    assert_eq!(
        nothing["opt_outs_kept"],
        json!({"weekly_digest": false, "session_reports": false})
    );

    let done: Value = erase(&app, PARENT, false).await.json().await.unwrap();
    assert_eq!(
        done["opt_outs_kept"],
        json!({"weekly_digest": false, "session_reports": true}),
        "{done}"
    );
    let kept: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT address_hash, weekly_digest_off, session_reports_off FROM erased_opt_outs",
    )
    .fetch_all(app.state.store.reader())
    .await
    .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let (hash, digest_off, reports_off) = &kept[0];
    assert_eq!((*digest_off, *reports_off), (0, 1));
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");

    // Named again, with other capitals: the report is not sent, the digest still wanted.
    let again = "Erase.Me@Example.com";
    let (_, completed) = complete_for(&app, again).await;
    assert_eq!(report_email(completed).await, "suppressed");
    let rows = ledger(&app, again).await;
    assert_eq!(rows[0]["status"], "suppressed", "{rows:?}");
    let preferences: Value = app
        .admin_json(&format!("/api/v1/email/preferences/{again}"))
        .await;
    assert_eq!(
        preferences["session_reports_enabled"], false,
        "{preferences}"
    );
    assert_eq!(preferences["weekly_digest_enabled"], true, "{preferences}");
    let record = app.admin_json(&format!("/admin/recipients/{PARENT}")).await;
    assert_eq!(
        record["kept_from_erasure"]["opt_outs"],
        json!({"weekly_digest": false, "session_reports": true}),
        "{record}"
    );

    // The backend turns reports back on for the parent: the kept opt-out is lifted.
    let on = app
        .put_preferences(again, &json!({"session_reports_enabled": true}))
        .await;
    assert_eq!(on.status(), 200);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM erased_opt_outs")
        .fetch_one(app.state.store.reader())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let (_, completed) = complete_for(&app, PARENT).await;
    assert_eq!(report_email(completed).await, "queued");
    wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
}

on_both_backends!(
    erasing_a_recipient_deletes_what_names_them_and_nothing_else,
    an_address_kept_with_other_capitals_is_pointed_out,
    an_erased_parents_opt_out_outlives_the_erasure,
);
