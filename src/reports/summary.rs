//! The learning summary of one session, computed from its row and its events. Pure: no
//! I/O, no clock (the caller passes `now` for sessions still running).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A session as stored.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub learner_name: Option<String>,
    pub subject: Option<String>,
    pub started_at_ms: i64,
    pub completed_at_ms: Option<i64>,
}

/// One event as stored.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub kind: String,
    pub correct: Option<bool>,
    /// When it was recorded, epoch milliseconds.
    pub at_ms: i64,
}

/// One event on the session's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub kind: String,
    pub correct: Option<bool>,
    /// Milliseconds since the session started.
    pub at_ms: i64,
}

/// The most events a timeline draws; a longer session shows its first ones.
pub const TIMELINE_MAX: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SessionSummary {
    pub session_id: String,
    pub learner_name: Option<String>,
    pub subject: Option<String>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub completed: bool,
    /// Until completion, or until now for a session still running.
    pub duration_seconds: i64,
    pub events_total: i64,
    pub events_by_kind: BTreeMap<String, i64>,
    pub steps: i64,
    pub hints_used: i64,
    pub answers_total: i64,
    pub answers_correct: i64,
    /// `answers_correct / answers_total`, absent when nothing was answered.
    pub accuracy: Option<f64>,
    /// The events in order, for the report's chart (not part of the JSON summary).
    #[serde(skip)]
    pub timeline: Vec<Mark>,
}

/// An instant kept as epoch milliseconds, as a UTC time.
fn instant(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub fn summarize(session: &SessionRecord, events: &[EventRecord], now_ms: i64) -> SessionSummary {
    let mut events_by_kind = BTreeMap::new();
    let (mut answers_total, mut answers_correct) = (0, 0);
    for event in events {
        *events_by_kind.entry(event.kind.clone()).or_insert(0) += 1;
        if event.kind == "answer" {
            answers_total += 1;
            if event.correct == Some(true) {
                answers_correct += 1;
            }
        }
    }
    let end = session.completed_at_ms.unwrap_or(now_ms);
    SessionSummary {
        session_id: session.id.clone(),
        learner_name: session.learner_name.clone(),
        subject: session.subject.clone(),
        started_at: instant(session.started_at_ms),
        completed_at: session.completed_at_ms.map(instant),
        completed: session.completed_at_ms.is_some(),
        duration_seconds: (end - session.started_at_ms).max(0) / 1000,
        events_total: events.len() as i64,
        steps: events_by_kind.get("step").copied().unwrap_or(0),
        hints_used: events_by_kind.get("hint").copied().unwrap_or(0),
        events_by_kind,
        answers_total,
        answers_correct,
        accuracy: (answers_total > 0).then(|| answers_correct as f64 / answers_total as f64),
        timeline: events
            .iter()
            .take(TIMELINE_MAX)
            .map(|event| Mark {
                kind: event.kind.clone(),
                correct: event.correct,
                at_ms: event.at_ms - session.started_at_ms,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, correct: Option<bool>) -> EventRecord {
        EventRecord {
            kind: kind.into(),
            correct,
            at_ms: 1_000_500,
        }
    }

    #[test]
    fn counts_kinds_hints_and_answers() {
        let session = SessionRecord {
            id: "s".into(),
            learner_name: Some("Ada".into()),
            subject: Some("Fractions".into()),
            started_at_ms: 1_000_000,
            completed_at_ms: Some(1_000_000 + 754_000),
        };
        let events = [
            event("step", None),
            event("step", None),
            event("hint", None),
            event("answer", Some(true)),
            event("answer", Some(false)),
            event("answer", Some(true)),
        ];
        let summary = summarize(&session, &events, 0);
        assert_eq!(summary.duration_seconds, 754);
        assert_eq!(summary.events_total, 6);
        assert_eq!(summary.steps, 2);
        assert_eq!(summary.hints_used, 1);
        assert_eq!((summary.answers_correct, summary.answers_total), (2, 3));
        assert_eq!(summary.events_by_kind["answer"], 3);
        assert!((summary.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!(summary.completed);
        assert_eq!(summary.timeline.len(), 6);
        assert_eq!(summary.timeline[0].at_ms, 500);
    }

    #[test]
    fn a_running_session_lasts_until_now_and_has_no_accuracy_without_answers() {
        let session = SessionRecord {
            id: "s".into(),
            learner_name: None,
            subject: None,
            started_at_ms: 10_000,
            completed_at_ms: None,
        };
        let summary = summarize(&session, &[], 70_000);
        assert_eq!(summary.duration_seconds, 60);
        assert!(!summary.completed && summary.accuracy.is_none());
    }
}
