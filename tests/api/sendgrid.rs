//! The `sendgrid` provider against a stand-in for SendGrid's v3 Mail Send API that checks
//! every request against the documented contract (bearer key, JSON, the required fields,
//! attachments in base64, no reserved headers) and answers as SendGrid does: 202 with
//! `X-Message-Id`, or its error bodies; scripted 429, 500, 400 and 401 in between.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use herald_actors::clock::Clock;
use serde_json::{Value, json};

use crate::email::{complete_for, ledger, wait_ledger};
use crate::helpers::{Backend, TestApp, spawn_app_with};

const KEY: &str = "SG.test-key.0123456789";
/// A key SendGrid knows that may read alerts but not send mail (a restricted key).
const READ_ONLY_KEY: &str = "SG.read-only.0123456789";
const RESERVED: [&str; 12] = [
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
];

/// A scripted reply: its status and extra headers.
type Scripted = (u16, Vec<(&'static str, String)>);

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Value>>,
    /// Replies to give instead of accepting: status and extra headers.
    script: Mutex<VecDeque<Scripted>>,
    sent_ids: Mutex<Vec<String>>,
}

#[derive(Clone)]
pub struct StandIn {
    shared: Arc<Shared>,
    pub url: String,
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = json!({"errors": [{
        "message": message,
        "field": field,
        "help": field.map(|f| format!("http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.{f}")),
    }]});
    (status, axum::Json(body)).into_response()
}

fn valid_email(value: &Value) -> bool {
    value.as_str().is_some_and(|e| {
        e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
    })
}

/// What SendGrid's documentation requires of a Mail Send body; the first problem found.
fn check(body: &Value) -> Result<(), (String, String)> {
    let problem = |message: &str, field: &str| Err((message.to_owned(), field.to_owned()));
    let Some(personalizations) = body["personalizations"]
        .as_array()
        .filter(|p| !p.is_empty())
    else {
        return problem(
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
        );
    };
    for (i, p) in personalizations.iter().enumerate() {
        let Some(to) = p["to"].as_array().filter(|t| !t.is_empty()) else {
            return problem(
                "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
                &format!("personalizations.{i}.to"),
            );
        };
        if !to.iter().all(|t| valid_email(&t["email"])) {
            return problem(
                "Does not contain a valid address.",
                &format!("personalizations.{i}.to"),
            );
        }
    }
    if !valid_email(&body["from"]["email"]) {
        return problem(
            "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
            "from.email",
        );
    }
    if !body["reply_to"].is_null()
        && (!valid_email(&body["reply_to"]["email"])
            || !(body["reply_to"]["name"].is_null() || body["reply_to"]["name"].is_string()))
    {
        return problem(
            "The reply_to email does not contain a valid address.",
            "reply_to.email",
        );
    }
    if body["subject"].as_str().is_none_or(str::is_empty) {
        return problem(
            "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
            "subject",
        );
    }
    let Some(content) = body["content"].as_array().filter(|c| !c.is_empty()) else {
        return problem(
            "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",
            "content",
        );
    };
    for (i, c) in content.iter().enumerate() {
        if c["type"].as_str().is_none_or(str::is_empty)
            || c["value"].as_str().is_none_or(str::is_empty)
        {
            return problem(
                "The content value must be a string at least one character in length.",
                &format!("content.{i}.value"),
            );
        }
    }
    let types: Vec<&str> = content.iter().filter_map(|c| c["type"].as_str()).collect();
    if types.contains(&"text/plain") && types.first() != Some(&"text/plain") {
        return problem(
            "If present, text/plain content must be first, followed by any other content types.",
            "content",
        );
    }
    for (i, a) in body["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let decodes = a["content"]
            .as_str()
            .is_some_and(|c| base64::engine::general_purpose::STANDARD.decode(c).is_ok());
        if !decodes {
            return problem(
                "The attachment content must be base64 encoded.",
                &format!("attachments.{i}.content"),
            );
        }
        if a["filename"].as_str().is_none_or(str::is_empty) {
            return problem(
                "The attachment filename parameter is required.",
                &format!("attachments.{i}.filename"),
            );
        }
        if !matches!(
            a["disposition"].as_str(),
            None | Some("inline" | "attachment")
        ) {
            return problem(
                "The disposition of your attachment can be either \"inline\" or \"attachment\".",
                &format!("attachments.{i}.disposition"),
            );
        }
    }
    if let Some(headers) = body["headers"].as_object() {
        for (name, value) in headers {
            if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
                return problem(
                    &format!("The header {name} is reserved and cannot be set."),
                    "headers",
                );
            }
            if !value.is_string() {
                return problem("Invalid type. Expected: string, given: other.", "headers");
            }
        }
    }
    if let Some(args) = body["custom_args"].as_object()
        && (!args.values().all(Value::is_string) || body["custom_args"].to_string().len() > 10_000)
    {
        return problem(
            "Custom args must be strings and total less than 10,000 bytes.",
            "custom_args",
        );
    }
    Ok(())
}

async fn mail_send(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {KEY}")) {
        return error(
            StatusCode::UNAUTHORIZED,
            "The provided authorization grant is invalid, expired, or revoked",
            None,
        );
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type should be application/json.",
            None,
        );
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Bad Request", None);
    };
    if let Err((message, field)) = check(&parsed) {
        return error(StatusCode::BAD_REQUEST, &message, Some(&field));
    }
    if let Some((status, extra)) = shared.script.lock().unwrap().pop_front() {
        let status = StatusCode::from_u16(status).unwrap();
        let mut response = match status.as_u16() {
            401 => error(
                status,
                "The provided authorization grant is invalid, expired, or revoked",
                None,
            ),
            // SendGrid's 429 says when its rate-limit period ends (a Unix time), two
            // minutes on here.
            429 => {
                let reset = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 120;
                let mut response = error(status, "too many requests", None);
                for (name, value) in [
                    ("x-ratelimit-limit", "600".to_owned()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset.to_string()),
                ] {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
            400 => error(
                status,
                "The from address does not match a verified Sender Identity.",
                Some("from"),
            ),
            _ => error(status, "Internal server error", None),
        };
        for (name, value) in extra {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    let id = format!("sg-{}", shared.sent_ids.lock().unwrap().len());
    shared.sent_ids.lock().unwrap().push(id.clone());
    shared.accepted.lock().unwrap().push(parsed);
    let mut response = StatusCode::ACCEPTED.into_response();
    response
        .headers_mut()
        .insert("x-message-id", id.parse().unwrap());
    response
}

/// `GET /v3/scopes`: the scopes of the key it is called with; 401 with SendGrid's body for
/// a key it does not know.
async fn scopes(headers: HeaderMap) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    let granted = match bearer.and_then(|b| b.strip_prefix("Bearer ")) {
        Some(KEY) => json!(["mail.send", "alerts.create", "alerts.read"]),
        Some(READ_ONLY_KEY) => json!(["alerts.read"]),
        _ => {
            let body = json!({"errors": [{"field": null, "message": "authorization required"}]});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    };
    axum::Json(json!({ "scopes": granted })).into_response()
}

impl StandIn {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v3/mail/send", post(mail_send))
            .route("/v3/scopes", axum::routing::get(scopes))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { shared, url }
    }

    pub fn script(&self, status: u16, headers: Vec<(&'static str, String)>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .push_back((status, headers));
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.shared.accepted.lock().unwrap().clone()
    }
}

async fn spawn_sendgrid_app(backend: Backend, standin: &StandIn, key: &str) -> TestApp {
    let (url, key) = (standin.url.clone(), key.to_owned());
    spawn_app_with(
        backend,
        move |vars: &mut HashMap<String, String>| {
            for (k, v) in [
                ("EMAIL_PROVIDER", "sendgrid".to_owned()),
                ("SENDGRID_API_KEY", key),
                ("SENDGRID_API_URL", url),
                (
                    "EMAIL_FROM",
                    "Herald Reports <reports@herald.example.org>".to_owned(),
                ),
                ("API_BASE_URL", "https://herald.example.org".to_owned()),
                (
                    "EMAIL_REPLY_TO",
                    "Herald Support <help@herald.example.org>".to_owned(),
                ),
                ("EMAIL_FEEDBACK_ID", "herald-example".to_owned()),
                ("EMAIL_POLL_INTERVAL_MS", "50".to_owned()),
                ("EMAIL_RETRY_BASE_MS", "2000".to_owned()),
                ("EMAIL_BREAKER_COOLDOWN_MS", "1000".to_owned()),
            ] {
                vars.insert(k.to_owned(), v);
            }
        },
        None,
    )
    .await
}

async fn a_report_goes_out_through_sendgrid_as_its_api_documents(backend: Backend) {
    let standin = StandIn::start().await;
    let app = spawn_sendgrid_app(backend, &standin, KEY).await;
    complete_for(&app, "parent@example.com").await;
    let rows = wait_ledger(&app, "parent@example.com", "sent", |rows| {
        rows[0]["status"] == "sent"
    })
    .await;
    assert_eq!(
        rows[0]["message_id"], "sg-0",
        "SendGrid's X-Message-Id is recorded"
    );
    let request = standin.accepted().remove(0);
    assert_eq!(
        request["personalizations"][0]["to"][0]["email"],
        "parent@example.com"
    );
    assert_eq!(
        request["from"],
        json!({"email": "reports@herald.example.org", "name": "Herald Reports"})
    );
    assert_eq!(request["content"][0]["type"], "text/plain");
    assert_eq!(request["content"][1]["type"], "text/html");
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(request["attachments"][0]["content"].as_str().unwrap())
        .unwrap();
    assert!(pdf.starts_with(b"%PDF"), "the report is attached");
    assert!(
        request["headers"]["List-Unsubscribe"]
            .as_str()
            .unwrap()
            .starts_with("<https://herald.example.org/api/v1/email/unsubscribe/")
    );
    assert_eq!(
        request["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(
        request["reply_to"],
        json!({"email": "help@herald.example.org", "name": "Herald Support"}),
        "Reply-To goes as SendGrid's field, the header being reserved"
    );
    assert_eq!(request["headers"]["Auto-Submitted"], "auto-generated");
    assert_eq!(
        request["headers"]["Feedback-ID"],
        "session_reports:herald-example"
    );
    assert_eq!(
        request["headers"]["X-Auto-Response-Suppress"],
        "OOF, AutoReply"
    );
    let reference = request["custom_args"]["herald_ref"].as_str().unwrap();
    assert_eq!(
        app.state.signer.verify_reference(reference).as_deref(),
        rows[0]["id"].as_str(),
        "herald's reference names the ledger row"
    );

    // A domain that is not ASCII goes in its ASCII form.
    let idn = "parent@b\u{fc}cher.de";
    complete_for(&app, idn).await;
    wait_ledger(&app, idn, "sent", |rows| rows[0]["status"] == "sent").await;
    let request = standin.accepted().remove(1);
    assert_eq!(
        request["personalizations"][0]["to"][0]["email"],
        "parent@xn--bcher-kva.de"
    );
}

async fn sendgrid_answers_decide_retry_failure_or_pause(backend: Backend) {
    let standin = StandIn::start().await;
    let app = spawn_sendgrid_app(backend, &standin, KEY).await;
    let parent = "parent@example.com";

    // 429, whose X-RateLimit-Reset is two minutes on: retried, not before then (the
    // backoff alone would try again within a minute).
    standin.script(429, vec![]);
    complete_for(&app, parent).await;
    let rows = wait_ledger(&app, parent, "a retry", |rows| rows[0]["attempts"] == 1).await;
    assert_eq!(rows[0]["status"], "pending");
    let now = app.clock.now_ms() as i64;
    assert!(
        rows[0]["next_attempt_at_ms"].as_i64().unwrap() >= now + 119_000,
        "{rows:?}"
    );
    assert!(rows[0]["last_error"].as_str().unwrap().contains("429"));

    // 503 with Retry-After: retried, not sooner than it says; then 400: failed with
    // SendGrid's words.
    standin.script(503, vec![("retry-after", "90".to_owned())]);
    standin.script(400, vec![]);
    app.clock.advance_ms(121_000);
    app.state.dispatcher.wake();
    let rows = wait_ledger(&app, parent, "a second retry", |rows| {
        rows[0]["attempts"] == 2
    })
    .await;
    let now = app.clock.now_ms() as i64;
    assert!(
        rows[0]["next_attempt_at_ms"].as_i64().unwrap() >= now + 90_000,
        "{rows:?}"
    );
    app.clock.advance_ms(91_000);
    app.state.dispatcher.wake();
    let rows = wait_ledger(&app, parent, "failed", |rows| rows[0]["status"] == "failed").await;
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("verified Sender Identity"),
        "{rows:?}"
    );
    assert!(standin.accepted().is_empty());

    // A refused key pauses sending and burns nothing.
    let other = "other@example.com";
    standin.script(401, vec![]);
    complete_for(&app, other).await;
    let rows = wait_ledger(&app, other, "a paused retry", |rows| {
        rows[0]["status"] == "pending"
            && rows[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("401"))
    })
    .await;
    assert_eq!(rows[0]["attempts"], 0, "a refused key burns no attempt");
    // Once SendGrid takes the key again, the email goes out.
    app.clock.advance_ms(5_000);
    app.state.dispatcher.wake();
    wait_ledger(&app, other, "sent", |rows| rows[0]["status"] == "sent").await;
    assert_eq!(ledger(&app, other).await[0]["message_id"], "sg-0");
}

#[tokio::test]
async fn the_stand_in_refuses_what_sendgrid_refuses() {
    let standin = StandIn::start().await;
    let client = reqwest::Client::new();
    let send = |body: Value, key: &'static str| {
        client
            .post(format!("{}/v3/mail/send", standin.url))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let good = json!({
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "b@example.org"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}, {"type": "text/html", "value": "<p>t</p>"}],
    });
    assert_eq!(send(good.clone(), KEY).await.unwrap().status(), 202);
    assert_eq!(send(good.clone(), "SG.wrong").await.unwrap().status(), 401);
    for (field, bad) in [
        ("personalizations", json!([])),
        ("subject", json!("")),
        (
            "content",
            json!([{"type": "text/html", "value": "<p>t</p>"}, {"type": "text/plain", "value": "t"}]),
        ),
        (
            "attachments",
            json!([{"content": "not base64!", "filename": "r.pdf"}]),
        ),
        ("headers", json!({"Subject": "x"})),
        ("headers", json!({"Reply-To": "help@example.org"})),
        ("reply_to", json!({"email": "not an address"})),
    ] {
        let mut body = good.clone();
        body[field] = bad;
        let response = send(body, KEY).await.unwrap();
        assert_eq!(response.status(), 400, "{field}");
        let errors: Value = response.json().await.unwrap();
        assert!(
            errors["errors"][0]["field"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{errors}"
        );
    }
}

/// `herald check` asks SendGrid what its key may do, and sends nothing: a key that may send
/// mail passes, one SendGrid does not know or that may not send fails with why.
#[tokio::test]
async fn check_asks_sendgrid_whether_the_key_may_send_mail() {
    use crate::check::{check, line};
    let standin = StandIn::start().await;
    for (key, code, said) in [
        (KEY, 0, "ok    sendgrid: the key may send mail"),
        (
            "SG.revoked.0123456789",
            1,
            "FAIL  sendgrid: SendGrid 401: authorization required",
        ),
        (READ_ONLY_KEY, 1, "FAIL  sendgrid: the key cannot send mail"),
    ] {
        let vars = HashMap::from([
            ("EMAIL_PROVIDER".to_owned(), "sendgrid".to_owned()),
            ("SENDGRID_API_KEY".to_owned(), key.to_owned()),
            ("SENDGRID_API_URL".to_owned(), standin.url.clone()),
        ]);
        let (exit, lines) = check("sqlite::memory:", &vars).await;
        assert_eq!(exit, Some(code), "{key}: {lines:#?}");
        assert!(line(&lines, "email").contains(said), "{key}: {lines:#?}");
    }
    assert!(standin.accepted().is_empty(), "nothing was sent");
}

#[test]
fn the_sendgrid_provider_needs_its_key() {
    let errors = herald::config::Config::from_lookup(&|k| match k {
        "API_ACCESS_KEY" => Some("k".into()),
        "SECRET_KEY" => Some("s".into()),
        "EMAIL_PROVIDER" => Some("sendgrid".into()),
        _ => None,
    })
    .unwrap_err()
    .0;
    assert_eq!(
        errors,
        ["SENDGRID_API_KEY: required when EMAIL_PROVIDER=sendgrid"]
    );
}

crate::on_both_backends!(
    a_report_goes_out_through_sendgrid_as_its_api_documents,
    sendgrid_answers_decide_retry_failure_or_pause,
);
