//! The audit log read without SQL: `GET /admin/audit` lists who changed what, newest first.

use serde_json::{Value, json};

use crate::helpers::{API_KEY, Backend, assert_error, spawn_app};
use crate::on_both_backends;

const PARENT: &str = "audited.parent@example.com";

/// Five changes an operator makes through the admin API; each is listed with the key that
/// made it, never the parent's address.
async fn the_audit_log_lists_who_changed_what_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let policy = json!({"stats": {"max_requests": 40, "window_seconds": 60}});
    assert_eq!(app.put_rate_limits(policy).await.status(), 200);
    let throttle = app
        .delete_admin(&format!("/admin/throttles/{PARENT}"))
        .await;
    assert_eq!(throttle.status(), 200);
    let reset = app.reset_rate_limits(json!({"group": "stats"})).await;
    assert_eq!(reset.status(), 200);
    herald::store::suppressions::suppress(
        &app.state.store,
        PARENT,
        herald::store::suppressions::Reason::Bounced,
        "smtp",
        None,
        0,
    )
    .await
    .unwrap();
    let lifted = app
        .delete_admin(&format!("/admin/suppressions/{PARENT}"))
        .await;
    assert_eq!(lifted.status(), 200);
    // A job run by hand: the job ledger names the replica; the audit log, the key.
    let started: Value = app
        .post_admin("/admin/jobs/purge_old/run", None)
        .await
        .json()
        .await
        .unwrap();
    let run_id = started["run_id"].as_str().unwrap();

    let response = app.get_admin("/admin/audit").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(PARENT), "{text}");
    let log: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(log["total"], 5);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "job.run",
            "suppression.lift",
            "rate_limit.reset",
            "email_throttle.reset",
            "rate_limit_policy.update"
        ]
    );
    let fingerprint = herald::secret::fingerprint(API_KEY);
    for entry in log["entries"].as_array().unwrap() {
        assert_eq!(entry["actor"], fingerprint.as_str(), "{entry}");
        assert!(entry["at"].as_str().unwrap().ends_with('Z'), "{entry}");
    }
    assert_eq!(
        log["entries"][0]["target"],
        format!("purge_old run {run_id}").as_str()
    );
    let update = &log["entries"][4];
    assert_eq!(update["target"], "stats/default");
    assert!(
        update["new_value"]
            .as_str()
            .unwrap()
            .contains("\"max_requests\":40")
    );
    assert_eq!(log["entries"][1]["old_value"], "bounced (smtp)");

    // One kind, a page, a time.
    let only: Value = app.admin_json("/admin/audit?action=rate_limit.reset").await;
    assert_eq!(only["total"], 1);
    assert_eq!(only["entries"][0]["target"], "stats/*");
    let page: Value = app.admin_json("/admin/audit?limit=2&offset=1").await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page["entries"][0]["action"], "suppression.lift");
    let later: Value = app
        .admin_json("/admin/audit?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(later["total"], 0);
    let since = log["entries"][1]["at"].as_str().unwrap();
    let recent: Value = app
        .admin_json(&format!("/admin/audit?since={}", since.replace('+', "%2B")))
        .await;
    assert!(recent["total"].as_i64().unwrap() >= 2, "{recent}");

    // A value out of range is a 422, one of the wrong type a 400; each names its parameter.
    for (query, status, field) in [
        ("since=yesterday", 422, "since"),
        ("action=drop_tables", 422, "action"),
        ("limit=0", 422, "limit"),
        ("offset=-1", 422, "offset"),
        ("limit=ten", 400, "limit"),
        ("offset=99999999999999999999", 400, "offset"),
    ] {
        let refused = assert_error(
            app.get_admin(&format!("/admin/audit?{query}")).await,
            status,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(refused["field"], field, "{query}");
    }
}

/// A throttle reset the audit log cannot record is not made (and one made is never answered
/// with an error).
#[tokio::test]
async fn a_reset_the_audit_log_cannot_record_is_not_made() {
    let smtp = crate::smtp::SmtpServer::start().await;
    let app = crate::email::spawn_mail_app_with(Backend::Sqlite, &smtp, &[]).await;
    crate::email::complete_for(&app, PARENT).await;
    smtp.wait_for(1).await;
    let used = |state: &Value| state["throttles"][0]["used"].clone();
    let throttle = format!("/admin/throttles/{PARENT}");
    assert_eq!(used(&app.admin_json(&throttle).await), 1);
    let rename = async |from: &str, to: &str| {
        sqlx::query(&format!("ALTER TABLE {from} RENAME TO {to}"))
            .execute(app.state.store.writer())
            .await
    };
    rename("audit_log", "audit_log_away").await.unwrap();
    assert_eq!(app.delete_admin(&throttle).await.status(), 500);
    assert_eq!(used(&app.admin_json(&throttle).await), 1, "not reset");
    rename("audit_log_away", "audit_log").await.unwrap();
    assert_eq!(app.delete_admin(&throttle).await.status(), 200);
    assert_eq!(used(&app.admin_json(&throttle).await), 0);
}

on_both_backends!(the_audit_log_lists_who_changed_what_newest_first);
