//! Hostile input, target by target: request bodies over real HTTP, email addresses,
//! unsubscribe tokens and references, cron expressions, and every value that reaches an email
//! header. Each target first replays its kept corpus (`tests/corpus/<target>.jsonl`, one JSON
//! string per line: each input that once found a fault, and the shapes that matter), then
//! generated inputs: 256 by default, from a fixed seed, so `cargo test` is quick and
//! repeatable; with `HERALD_FUZZ_SECONDS=N` each target runs for N seconds from a random seed
//! instead (CI's fuzz step). A failure prints the input as a corpus line.
//!
//! The checks: no panic, no 5xx, errors in herald's format, and a CR or LF never reaching a
//! header.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::helpers::{API_KEY, Backend, spawn_app_with};

/// Any JSON, with the field names herald reads among the random ones.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "(\\PC|[\r\n\t\u{0}<>&\"'])*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                "learner_name|subject|parent_email|kind|detail|correct|dry_run|start_date|stats|reports|max_requests|window_seconds|tiers|failed_since|failed_until|type|suppressions|email|reason|[a-z_]{1,10}",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The kept corpus of `target`.
fn corpus(target: &str) -> Vec<String> {
    let path = format!("{}/tests/corpus/{target}.jsonl", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {l}: {e}")))
        .collect()
}

/// The corpus of `target`, then generated inputs while the budget lasts.
fn inputs(target: &str, strategy: impl Strategy<Value = String>) -> impl Iterator<Item = String> {
    let seconds = std::env::var("HERALD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let (mut runner, until) = match seconds {
        Some(s) => (
            TestRunner::default(),
            Some(Instant::now() + Duration::from_secs(s)),
        ),
        None => (TestRunner::deterministic(), None),
    };
    let mut generated = 0usize;
    let fresh = std::iter::from_fn(move || {
        generated += 1;
        let more = match until {
            Some(until) => Instant::now() < until,
            None => generated <= 256,
        };
        more.then(|| strategy.new_tree(&mut runner).unwrap().current())
    });
    corpus(target).into_iter().chain(fresh)
}

/// `check` on every input of `target`; a failure names the input as a corpus line.
fn fuzz(target: &str, strategy: impl Strategy<Value = String>, check: impl Fn(&str)) -> usize {
    let mut count = 0;
    for input in inputs(target, strategy) {
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = checked {
            eprintln!(
                "{target}: failed on {} (add it to tests/corpus/{target}.jsonl)",
                serde_json::to_string(&input).unwrap()
            );
            std::panic::resume_unwind(panic);
        }
        count += 1;
    }
    eprintln!("{target}: {count} inputs");
    count
}

/// Text with what breaks parsers and headers mixed in (CR, LF, NUL, DEL, NEL, the Unicode
/// line separator, and the characters of `extra`), or any printable text.
fn hostile_text(extra: &str) -> impl Strategy<Value = String> {
    let mixed = format!("(\\PC|[\\r\\n\\t\\x00\\x7f\\x{{85}}\\x{{2028}} @<>,;:\"{extra}])*");
    prop_oneof![
        proptest::string::string_regex(&mixed).unwrap(),
        proptest::string::string_regex("\\PC{0,300}").unwrap(),
    ]
}

#[test]
fn hostile_addresses_parse_only_into_addresses_that_are_safe_in_a_header() {
    use herald_actors::email::Email;
    fuzz("addresses", hostile_text(".-"), |raw| {
        if let Ok(email) = Email::parse(raw) {
            let address = email.as_str();
            assert!(
                !address.chars().any(|c| c.is_control() || c.is_whitespace()),
                "{address:?}"
            );
            assert!(!address.contains(['<', '>', ',', ';', '"']), "{address:?}");
            assert!(address.len() <= 254);
            let (local, domain) = address.split_once('@').unwrap();
            assert!(!local.is_empty() && local.len() <= 64 && !domain.contains('@'));
            assert_eq!(Email::parse(address).unwrap(), email, "parsing is stable");
            let _ = email.masked();
        }
    });
}

#[test]
fn hostile_tokens_and_references_name_no_one() {
    use herald::email::Signer;
    use herald::email::unsubscribe::well_formed;
    use herald::secret::Secret;
    let signer = Signer::new((1, Secret::new("k1")), vec![(0, Secret::new("k0"))]);
    let genuine = signer.token("0123456789abcdef0123456789abcdef");
    assert!(signer.verify(&genuine).is_some() && well_formed(&genuine));
    fuzz("tokens", hostile_text("v0-9a-fA-F"), |raw| {
        assert_eq!(signer.verify(raw), None, "{raw:?}");
        assert_eq!(signer.verify_reference(raw), None, "{raw:?}");
        let _ = well_formed(raw);
    });
}

#[test]
fn hostile_cron_text_is_parsed_or_refused_without_a_panic() {
    use herald_actors::scheduler::calendar::Schedule;
    let cron = prop_oneof![
        "([0-9*/,\\-#?LW ]|[A-Z]{3}|@[a-z]{3,8}){0,40}".prop_map(|s| s.to_owned()),
        hostile_text("0-9*/,#"),
    ];
    fuzz("cron", cron, |expression| {
        for zone in ["UTC", "America/New_York", "Pacific/Kiritimati"] {
            if let Ok(schedule) = Schedule::parse(expression, zone) {
                for at in [0, 1_800_000_000_000, i64::MAX / 4] {
                    let _ = schedule.next_after(at);
                    let _ = schedule.latest_at_or_before(at);
                }
            }
        }
    });
}

/// The header fields of a formatted message, folded lines joined.
fn header_names(formatted: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(formatted);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .filter(|line| !line.starts_with([' ', '\t']))
        .map(|line| line.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn no_value_reaches_an_email_header_as_a_new_field_or_a_bare_line_break() {
    use herald::email::message::{Parts, build};
    use herald::reports::{SessionRecord, summarize};
    let from = "reports@herald.example.org".parse().unwrap();
    let templates = herald::templates::Templates::shipped("herald", "");
    fuzz("headers", hostile_text(""), |value| {
        let summary = summarize(
            &SessionRecord {
                id: "3f2a0000-0000-4000-8000-00000000000a".into(),
                learner_name: Some(value.to_owned()),
                subject: Some(value.to_owned()),
                started_at_ms: 0,
                completed_at_ms: Some(60_000),
            },
            &[],
            0,
        );
        let url = "https://herald.example.org/api/v1/email/unsubscribe/v1.x.y?type=session_reports";
        // The recipient is whatever the value parses to as an address, if anything.
        let to = match herald::http::validate::email("parent_email", Some(value.to_owned())) {
            Ok(Some(email)) => email.as_str().to_owned(),
            _ => "parent@example.com".to_owned(),
        };
        let message = build(Parts {
            from: &from,
            reply_to: None,
            feedback_id: None,
            to: &to,
            message_id: "<id@herald.example.org>",
            unsubscribe_url: url,
            reference: "v1.0.0",
            rendered: templates
                .session_report(
                    &summary,
                    herald::templates::Links {
                        unsubscribe: url,
                        preferences: "https://herald.example.org/api/v1/email/preferences/page/v1.x.y",
                    },
                )
                .unwrap(),
            pdf: None,
        })
        .unwrap();
        let formatted = message.formatted();
        let mut names = header_names(&formatted);
        names.sort();
        assert_eq!(
            names,
            [
                "Auto-Submitted",
                "Content-Type",
                "Date",
                "From",
                "List-Unsubscribe",
                "List-Unsubscribe-Post",
                "MIME-Version",
                "Message-ID",
                "Subject",
                "To",
                "X-Auto-Response-Suppress",
                "X-Herald-Ref",
            ],
            "{value:?}"
        );
        let head_end = formatted.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        for (i, byte) in formatted[..head_end].iter().enumerate() {
            if *byte == b'\n' {
                assert_eq!(
                    formatted[i - 1],
                    b'\r',
                    "a bare LF in the headers: {value:?}"
                );
            }
            if *byte == b'\r' {
                assert_eq!(
                    formatted[i + 1],
                    b'\n',
                    "a bare CR in the headers: {value:?}"
                );
            }
        }
    });
}

/// An app on SQLite whose rate limits every input passes (both groups' defaults raised), and
/// a session of it.
async fn app_for_hostile_requests() -> (crate::helpers::TestApp, crate::sessions::Session) {
    let app = spawn_app_with(
        Backend::Sqlite,
        |vars| {
            vars.insert("RATE_LIMIT_SESSIONS_MAX_REQUESTS".into(), "1000000".into());
            vars.insert("RATE_LIMIT_MAX_REQUESTS".into(), "1000000".into());
        },
        None,
    )
    .await;
    let session = app.new_session(json!({})).await;
    (app, session)
}

/// `request` sent, and its answer: the status and the body's text.
async fn answer(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, String) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// What every answer to a hostile request must be: no 5xx, and an error in herald's format.
/// `what` names the request, as a corpus line where it can.
fn assert_answered_in_format(what: &str, status: reqwest::StatusCode, text: &str) {
    assert!(status.as_u16() < 500, "{what} answered {status}: {text}");
    if status.is_client_error() {
        let error: Value =
            serde_json::from_str(text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert!(
            error["error"].is_string() && error["message"].is_string(),
            "{what}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_never_get_a_5xx_and_errors_keep_their_format() {
    // Every body reaches the start's own checks, not the limit on starts.
    let (app, session) = app_for_hostile_requests().await;
    let targets: Vec<(reqwest::Method, String, bool)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/sessions/start".into(),
            false,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/sessions/{}/events", session.id),
            false,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/sessions/{}/complete", session.id),
            false,
        ),
        (reqwest::Method::PUT, "/api/v1/ops/rate_limits".into(), true),
        (
            reqwest::Method::POST,
            "/admin/jobs/weekly_digest/run".into(),
            true,
        ),
        (
            reqwest::Method::POST,
            "/admin/rate_limits/reset".into(),
            true,
        ),
        (reqwest::Method::POST, "/admin/email/retry".into(), true),
        (reqwest::Method::POST, "/admin/suppressions".into(), true),
    ];
    // Bytes no JSON parser takes, then the corpus and generated JSON, sent as they come so
    // the time budget bounds the whole run.
    let raw = [
        b"{".to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        b"[]]".to_vec(),
        b"{\"learner_name\": \"x\", \"learner_name\": 1}".to_vec(),
        br#"{"parent_email": "a@b.c\r\nBcc: victim@example.com"}"#.to_vec(),
        vec![b'['; 10_000],
    ];
    let json = any_json().prop_map(|v| serde_json::to_string(&v).unwrap());
    let bodies = raw
        .into_iter()
        .chain(inputs("bodies", json).map(String::into_bytes));
    let mut sent = 0;
    for body in bodies {
        for (method, path, admin) in &targets {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .header("Content-Type", "application/json")
                .header("X-Session-Access-Token", &session.token)
                .body(body.clone());
            if *admin {
                request = request.header("X-API-Key", API_KEY);
            }
            let (status, text) = answer(request).await;
            let what = format!(
                "{method} {path} with {} (a corpus line for tests/corpus/bodies.jsonl)",
                serde_json::to_string(&String::from_utf8_lossy(&body)).unwrap()
            );
            assert_answered_in_format(&what, status, &text);
        }
        sent += 1;
    }
    eprintln!("bodies: {sent} inputs, each to {} routes", targets.len());
    assert!(sent > 256);
}

/// A query's value: hostile text, a date or an instant of any year, any whole number, or a
/// word.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        hostile_text("&=%+#"),
        "[+-]?[0-9]{1,7}-[0-9]{1,2}-[0-9]{1,2}",
        "[+-]?[0-9]{1,7}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z_]{0,12}",
    ]
}

/// A query string: one to four pairs, named as herald's routes name theirs or otherwise,
/// encoded as a browser would.
fn hostile_query() -> impl Strategy<Value = String> {
    let name = "email|week|locale|session_id|since|action|limit|offset|reason|source|days|type|dry_run|[a-z_]{1,8}";
    prop::collection::vec((name, hostile_value()), 1..5).prop_map(|pairs| {
        let mut url = reqwest::Url::parse("http://herald/").unwrap();
        url.query_pairs_mut().extend_pairs(pairs);
        url.query().unwrap_or_default().to_owned()
    })
}

/// The routes that read a query or an address in their path, with hostile queries and
/// hostile addresses: never a 5xx, every error in herald's format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_and_paths_never_get_a_5xx() {
    let (app, session) = app_for_hostile_requests().await;
    let reads = [
        "/admin/email/preview/weekly_digest",
        "/admin/email/preview/session_reports",
        "/admin/audit",
        "/admin/suppressions",
        "/admin/email/logs",
        "/admin/jobs/weekly_digest/runs",
        "/api/v1/stats/summary",
        "/api/v1/ops/metrics",
        "/api/v1/email/unsubscribe/v1.0.0",
        "/api/v1/email/preferences/page/v1.0.0",
    ];
    // Each takes an address as the last segment of its path.
    let by_address = [
        "/admin/throttles/",
        "/admin/recipients/",
        "/api/v1/email/preferences/",
        "/admin/suppressions/",
    ];
    let mut sent = 0;
    for query in inputs("queries", hostile_query()) {
        for path in reads {
            let (status, text) = answer(
                app.client
                    .get(format!("{}?{query}", app.url(path)))
                    .header("X-API-Key", API_KEY)
                    .header("X-Session-Access-Token", &session.token),
            )
            .await;
            // An HTML page (the unsubscribe and preference pages) is no JSON error.
            let what = format!("GET {path}?{query} (a line for tests/corpus/queries.jsonl)");
            if text.starts_with('<') {
                assert!(status.as_u16() < 500, "{what}: {status}");
            } else {
                assert_answered_in_format(&what, status, &text);
            }
        }
        // The query's first value as an address in a path.
        let address = reqwest::Url::parse(&format!("http://herald/?{query}"))
            .unwrap()
            .query_pairs()
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        for prefix in by_address {
            let mut url = reqwest::Url::parse(&app.url(prefix)).unwrap();
            url.path_segments_mut()
                .unwrap()
                .pop_if_empty()
                .push(&address);
            for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
                let (status, text) = answer(
                    app.client
                        .request(method.clone(), url.clone())
                        .query(&[("dry_run", "true")])
                        .header("X-API-Key", API_KEY),
                )
                .await;
                let what = format!("{method} {url} (the address: {address:?})");
                assert_answered_in_format(&what, status, &text);
            }
        }
        sent += 1;
    }
    eprintln!(
        "queries: {sent} inputs, each to {} routes",
        reads.len() + 2 * by_address.len()
    );
    assert!(sent > 256);
}
