//! Bounces that stop the mail: an SMTP refusal is classified by its enhanced status code
//! (RFC 3463); a hard bounce suppresses the address for every email type, checked when a
//! report is decided and again when it is sent; operators list and lift suppressions
//! through the admin API (audited).

use serde_json::Value;

use crate::email::{complete_for, ledger, spawn_mail_app_with, wait_ledger};
use crate::helpers::{API_KEY, Backend, TestApp};
use crate::smtp::SmtpServer;

const GONE: &str = "gone.parent@example.com";
const POLICY: &str = "policy.parent@example.com";
const BARE: &str = "bare.parent@example.com";
const LONG: &str = "long.reply@example.com";

async fn suppressions(app: &TestApp, email: &str) -> Value {
    let response = app
        .get_admin(&format!("/admin/suppressions?email={email}"))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `email` suppressed for `reason` as `source` records it; whether this added it.
async fn suppress(
    app: &TestApp,
    email: &str,
    reason: herald::store::suppressions::Reason,
    source: &str,
) -> bool {
    herald::store::suppressions::suppress(&app.state.store, email, reason, source, None, 0)
        .await
        .unwrap()
}

/// A complaint about `email`, as a provider's webhook records it.
async fn complained(app: &TestApp, email: &str) {
    suppress(
        app,
        email,
        herald::store::suppressions::Reason::Complained,
        "webhook",
    )
    .await;
}

/// What `POST /admin/suppressions` answered to `body`, which it took.
async fn added(app: &TestApp, body: &Value) -> Value {
    let response = app.post_admin("/admin/suppressions", Some(body)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn report_email(app: &TestApp, parent: &str) -> Value {
    let (_, response) = complete_for(app, parent).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["report_email"].clone()
}

async fn refusals_are_classified_and_a_hard_bounce_stops_the_mail(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    // One at a time, so each gets its scripted reply.
    for (parent, reply) in [
        (GONE, "550 5.1.1 <gone.parent@example.com>: no such user"),
        (POLICY, "554 5.7.1 Message rejected due to local policy"),
        (BARE, "550 mailbox unavailable"),
    ] {
        smtp.script_replies(&[reply.to_owned()]);
        assert_eq!(report_email(&app, parent).await, "queued");
        let rows = wait_ledger(&app, parent, "failed", |rows| rows[0]["status"] == "failed").await;
        let words = reply.split(' ').nth(1).unwrap();
        assert!(
            rows[0]["last_error"].as_str().unwrap().contains(words),
            "{rows:?}"
        );
    }

    // A server may answer with a hundred kilobytes of reply lines: herald keeps the first
    // thousand characters of them, in the ledger and the suppression list alike.
    let line = "x".repeat(900);
    let mut long: Vec<String> = (0..100).map(|i| format!("550-5.1.1 {i} {line}")).collect();
    long.push("550 5.1.1 the end".to_owned());
    smtp.script_replies(&[long.join("\r\n")]);
    assert_eq!(report_email(&app, LONG).await, "queued");
    let rows = wait_ledger(&app, LONG, "failed", |rows| rows[0]["status"] == "failed").await;
    let kept = rows[0]["last_error"].as_str().unwrap();
    assert!(
        kept.contains("5.1.1 0 xxx") && kept.ends_with('…') && kept.chars().count() <= 1_001,
        "{} characters: {}",
        kept.chars().count(),
        &kept[..80]
    );
    let detail = suppressions(&app, LONG).await["suppressions"][0]["detail"].clone();
    let detail = detail.as_str().unwrap();
    assert!(
        detail.ends_with('…') && detail.chars().count() <= 1_001,
        "{}",
        detail.chars().count()
    );

    // Only the hard bounce is suppressed, with why, since when and from where.
    let listed = suppressions(&app, GONE).await;
    assert_eq!(listed["total"], 1, "{listed}");
    let entry = &listed["suppressions"][0];
    assert_eq!(entry["reason"], "bounced");
    assert_eq!(entry["source"], "smtp");
    assert!(
        entry["detail"].as_str().unwrap().contains("5.1.1"),
        "{entry}"
    );
    assert!(
        !entry["detail"].as_str().unwrap().contains(GONE),
        "the address is masked in the detail"
    );
    for kept in [POLICY, BARE] {
        assert_eq!(suppressions(&app, kept).await["total"], 0, "{kept}");
    }
    let metrics = app.metrics().await;
    for counter in [
        "email_bounces_total{kind=\"hard\"}",
        "email_policy_refusals_total",
    ] {
        let value = crate::helpers::metric_value(&metrics, counter)
            .unwrap_or_else(|| panic!("{counter} in:\n{metrics}"));
        assert!(value >= 1.0, "{counter} = {value}");
    }

    // The next report for the bounced address is suppressed when it is decided, and the
    // ledger says why; the others are sent.
    assert_eq!(report_email(&app, GONE).await, "suppressed");
    let rows = ledger(&app, GONE).await;
    assert_eq!(rows[0]["status"], "suppressed");
    assert_eq!(rows[0]["reason"], "bounced", "{rows:?}");
    for kept in [POLICY, BARE] {
        assert_eq!(report_email(&app, kept).await, "queued");
        wait_ledger(&app, kept, "sent", |rows| rows[0]["status"] == "sent").await;
    }

    // Lifting needs the admin key, is audited, and lets the mail through again.
    let url = app.url(&format!("/admin/suppressions/{GONE}"));
    for key in [None, Some("wrong-key")] {
        let mut request = app.client.delete(&url);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let lift = || app.client.delete(&url).header("X-API-Key", API_KEY).send();
    let lifted = lift().await.unwrap();
    assert_eq!(lifted.status(), 200);
    let lifted: Value = lifted.json().await.unwrap();
    assert_eq!(lifted["reason"], "bounced");
    assert_eq!(lift().await.unwrap().status(), 404, "already lifted");
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'suppression.lift'")
            .fetch_one(app.state.store.reader())
            .await
            .unwrap();
    assert_eq!(audited, 1);
    assert_eq!(report_email(&app, GONE).await, "queued");
    wait_ledger(&app, GONE, "sent", |rows| rows[0]["status"] == "sent").await;
}

/// A suppression made while a report waits in the outbox for a retry stops it at send time.
async fn a_suppression_stops_a_queued_email_at_send_time(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.script(&[451]);
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    assert_eq!(report_email(&app, GONE).await, "queued");
    wait_ledger(&app, GONE, "a retry", |rows| {
        rows[0]["status"] == "pending" && rows[0]["attempts"] == 1
    })
    .await;
    complained(&app, GONE).await;
    // The retry falls due; its claim reads the suppression.
    app.clock.advance_ms(10_000);
    app.state.dispatcher.wake();
    let rows = wait_ledger(&app, GONE, "suppressed", |rows| {
        rows[0]["status"] == "suppressed"
    })
    .await;
    assert_eq!(rows[0]["reason"], "complained");
    assert!(smtp.received().is_empty());
}

async fn the_list_pages_and_refuses_bad_queries(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    for i in 0..5 {
        herald::store::suppressions::suppress(
            &app.state.store,
            &format!("p{i}@example.com"),
            herald::store::suppressions::Reason::Bounced,
            "smtp",
            None,
            i,
        )
        .await
        .unwrap();
    }
    let page: Value = app
        .get_admin("/admin/suppressions?limit=2&offset=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 5);
    let emails: Vec<&str> = page["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["p3@example.com", "p2@example.com"], "newest first");
    for bad in ["limit=0", "limit=501", "offset=-1", "email=not-an-address"] {
        let response = app.get_admin(&format!("/admin/suppressions?{bad}")).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    let anonymous = app
        .client
        .get(app.url("/admin/suppressions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// A complaint can come for an address herald keeps no preferences for (posted by a bounce
/// processor, or kept after its preferences went): the address's preferences and its record
/// still show it suppressed.
async fn an_address_with_no_preferences_shows_its_suppression(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    complained(&app, BARE).await;
    let preferences = app
        .admin_json(&format!("/api/v1/email/preferences/{BARE}"))
        .await;
    assert_eq!(
        preferences["suppressed"]["reason"], "complained",
        "{preferences}"
    );
    assert_eq!(preferences["session_reports_enabled"], true);
    let record = app.admin_json(&format!("/admin/recipients/{BARE}")).await;
    assert_eq!(
        record["preferences"]["suppressed"]["reason"], "complained",
        "{record}"
    );
}

/// Moving to herald from another sender: its bounces and complaints are added by hand, all
/// or none, audited without the addresses, and stop the mail to every spelling of each.
async fn an_operator_adds_another_senders_bounces_and_complaints(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    complained(&app, BARE).await;
    let entry = |email: &str, reason: &str| serde_json::json!({"email": email, "reason": reason});

    // One wrong entry, and nothing is added; the answer names it.
    let wrong = serde_json::json!({"suppressions": [
        entry(GONE, "bounced"), entry("not-an-address", "bounced"),
    ]});
    let refused = crate::helpers::assert_error(
        app.post_admin("/admin/suppressions", Some(&wrong)).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(refused["field"], "suppressions[1].email", "{refused}");
    for (body, field) in [
        (
            serde_json::json!({"suppressions": [entry(GONE, "unsubscribed")]}),
            "suppressions[0].reason",
        ),
        (
            serde_json::json!({"suppressions": [{"email": GONE, "reason": "bounced", "detail": "a\nb"}]}),
            "suppressions[0].detail",
        ),
        (serde_json::json!({"suppressions": []}), "suppressions"),
    ] {
        let refused = app.post_admin("/admin/suppressions", Some(&body)).await;
        let refused = crate::helpers::assert_error(refused, 422, "VALIDATION_ERROR").await;
        assert_eq!(refused["field"], field, "{refused}");
    }
    let too_long = serde_json::json!({"suppressions": vec![entry(GONE, "bounced"); 2000]});
    let refused = app.post_admin("/admin/suppressions", Some(&too_long)).await;
    crate::helpers::assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(
        suppressions(&app, GONE).await["total"],
        0,
        "nothing was added"
    );

    // A dry run counts (an address named twice once) and adds nothing.
    let mut body = serde_json::json!({"suppressions": [
        {"email": "Gone.Parent@EXAMPLE.com", "reason": "bounced", "detail": "from the old sender"},
        entry(POLICY, "complained"),
        entry(BARE, "bounced"),
        entry(POLICY, "bounced"),
    ], "dry_run": true});
    assert_eq!(
        added(&app, &body).await,
        serde_json::json!({"added": 2, "already_suppressed": 1, "dry_run": true})
    );
    assert_eq!(suppressions(&app, POLICY).await["total"], 0, "a dry run");

    body["dry_run"] = Value::Bool(false);
    assert_eq!(
        added(&app, &body).await,
        serde_json::json!({"added": 2, "already_suppressed": 1, "dry_run": false})
    );
    let listed = suppressions(&app, "Gone.Parent@example.com").await;
    let gone = &listed["suppressions"][0];
    assert_eq!(
        (&gone["reason"], &gone["source"], &gone["detail"]),
        (
            &Value::from("bounced"),
            &Value::from("operator"),
            &Value::from("from the old sender")
        ),
        "{listed}"
    );
    let bare = &suppressions(&app, BARE).await["suppressions"][0];
    assert_eq!(bare["reason"], "complained", "the first reason stays");

    // Audited once, without the addresses.
    let audit = app.admin_json("/admin/audit?action=suppression.add").await;
    assert_eq!(audit["total"], 1, "{audit}");
    assert_eq!(audit["entries"][0]["target"], "3 addresses");
    assert_eq!(
        audit["entries"][0]["new_value"],
        "2 added, 1 already suppressed"
    );
    assert!(!audit.to_string().contains("example.com"), "{audit}");

    // What was brought over is listed apart from what herald learnt itself, by source and by
    // reason; a source or reason herald does not have is refused, naming it.
    let app = &app;
    let listed = |query: &'static str| async move {
        let response = app.get_admin(&format!("/admin/suppressions?{query}")).await;
        assert_eq!(response.status(), 200, "{query}");
        let list: Value = response.json().await.unwrap();
        let mut emails: Vec<String> = list["suppressions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["email"].as_str().unwrap().to_owned())
            .collect();
        emails.sort();
        assert_eq!(list["total"], emails.len(), "{list}");
        emails
    };
    assert_eq!(
        listed("source=operator").await,
        ["Gone.Parent@example.com", POLICY]
    );
    assert_eq!(listed("source=webhook").await, [BARE]);
    assert_eq!(listed("reason=complained").await, [BARE, POLICY]);
    assert_eq!(
        listed("reason=bounced&source=operator").await,
        ["Gone.Parent@example.com"]
    );
    assert!(listed("reason=bounced&source=sendgrid").await.is_empty());
    for (query, field) in [
        ("source=mailchimp", "source"),
        ("reason=unsubscribed", "reason"),
    ] {
        let refused = app.get_admin(&format!("/admin/suppressions?{query}")).await;
        let refused = crate::helpers::assert_error(refused, 422, "VALIDATION_ERROR").await;
        assert_eq!(refused["field"], field, "{refused}");
    }

    // An export reads the list a page at a time, after the last address it read: each
    // address once, whatever order the database sorts them in.
    let exported = |reason| async move {
        use herald::store::suppressions::{Filter, addresses};
        let filter = Filter {
            reason,
            ..Filter::default()
        };
        let mut read = Vec::new();
        loop {
            let after = read.last().cloned();
            let page = addresses(&app.state.store, filter, after.as_deref(), 1)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            read.extend(page);
        }
        read.sort();
        read
    };
    let mut everyone = vec!["Gone.Parent@example.com", BARE, POLICY];
    everyone.sort_unstable();
    assert_eq!(exported(None).await, everyone);
    assert_eq!(
        exported(Some(herald::store::suppressions::Reason::Complained)).await,
        [BARE, POLICY]
    );

    // The address, under the spelling the application uses, is not mailed.
    assert_eq!(report_email(app, GONE).await, "suppressed");
    assert_eq!(report_email(app, POLICY).await, "suppressed");
    let rows = ledger(app, GONE).await;
    assert_eq!(rows[0]["reason"], "bounced", "{rows:?}");
    assert!(smtp.received().is_empty());
}

/// A suppression stops mail to every spelling of its address, so the operator who looks it
/// up, or lifts it, under the spelling the ledger shows finds it and lifts it.
async fn a_suppression_is_found_and_lifted_under_any_spelling(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(backend, &smtp, &[]).await;
    // The provider reported the address as the parent typed it once.
    complained(&app, "Gone.Parent@example.com").await;
    assert_eq!(report_email(&app, GONE).await, "suppressed");

    // Added again under other spellings, by hand or by a bounce, it is suppressed
    // already: the list holds it once, with its first reason.
    let again = serde_json::json!({"suppressions": [
        {"email": GONE, "reason": "bounced"},
        {"email": "GONE.PARENT@example.com", "reason": "bounced"},
    ]});
    assert_eq!(
        added(&app, &again).await,
        serde_json::json!({"added": 0, "already_suppressed": 1, "dry_run": false})
    );
    let bounced = suppress(
        &app,
        "gone.parent@EXAMPLE.COM",
        herald::store::suppressions::Reason::Bounced,
        "smtp",
    )
    .await;
    assert!(!bounced, "suppressed already under another spelling");
    let listed = suppressions(&app, GONE).await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(
        (
            &listed["suppressions"][0]["email"],
            &listed["suppressions"][0]["reason"]
        ),
        (
            &Value::from("Gone.Parent@example.com"),
            &Value::from("complained")
        ),
        "{listed}"
    );
    let lifted = app
        .delete_admin(&format!("/admin/suppressions/{GONE}"))
        .await;
    assert_eq!(lifted.status(), 200);
    let lifted: Value = lifted.json().await.unwrap();
    assert_eq!(lifted["email"], "Gone.Parent@example.com", "{lifted}");
    assert_eq!(suppressions(&app, GONE).await["total"], 0);
    let again = app
        .delete_admin(&format!("/admin/suppressions/{GONE}"))
        .await;
    assert_eq!(again.status(), 404);

    // Mailed again, under the spelling it was stopped for.
    let (_, response) = complete_for(&app, GONE).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["report_email"], "queued", "{body}");
    smtp.wait_for(1).await;
    let audit = app.admin_json("/admin/audit?action=suppression.lift").await;
    assert_eq!(audit["total"], 1, "{audit}");
}

crate::on_both_backends!(
    a_suppression_is_found_and_lifted_under_any_spelling,
    an_operator_adds_another_senders_bounces_and_complaints,
    an_address_with_no_preferences_shows_its_suppression,
    the_list_pages_and_refuses_bad_queries,
    refusals_are_classified_and_a_hard_bounce_stops_the_mail,
    a_suppression_stops_a_queued_email_at_send_time,
);
