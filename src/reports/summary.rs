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

/// The chart's lanes, top to bottom: steps, hints, answers, and any other kind.
pub const LANES: usize = 4;

/// The lane an event of this kind is drawn in.
fn lane(kind: &str) -> usize {
    match kind {
        "step" => 0,
        "hint" => 1,
        "answer" => 2,
        _ => 3,
    }
}

/// How many ways a mark is drawn: one a lane, and a right answer apart from the rest.
const LOOKS: usize = LANES + 1;

fn look(kind: &str, correct: Option<bool>) -> usize {
    match (lane(kind), correct) {
        (2, Some(true)) => LANES,
        (lane, _) => lane,
    }
}

impl Mark {
    /// The lane this mark is drawn in.
    pub fn lane(&self) -> usize {
        lane(&self.kind)
    }
}

/// How many columns the timeline's axis is cut into. A mark is about three columns wide, so
/// marks drawn alike in one column would cover one another: the timeline keeps the last of
/// them. A session of any length is charted whole, in at most `TIMELINE_COLUMNS` marks of
/// each look.
pub const TIMELINE_COLUMNS: usize = 144;

/// How long the chart's axis is, in milliseconds: the session's length, or up to its last
/// event when that comes later (a session shorter than a second counts as zero seconds, and
/// a backend may time an event after the completion), so marks never pile up on the edge.
pub fn chart_span_ms(duration_seconds: i64, last_at_ms: i64) -> i64 {
    duration_seconds.saturating_mul(1000).max(last_at_ms).max(1)
}

/// The events as marks on the chart's axis, in order: of the marks drawn alike that fall in
/// one column, the last only, so the last event keeps its own and the axis its span.
fn timeline(events: &[EventRecord], started_at_ms: i64, duration_seconds: i64) -> Vec<Mark> {
    let at = |event: &EventRecord| event.at_ms - started_at_ms;
    let span_ms = chart_span_ms(duration_seconds, events.iter().map(at).max().unwrap_or(0));
    let column = |at_ms: i64| {
        let at = i128::from(at_ms.clamp(0, span_ms));
        let column = at * TIMELINE_COLUMNS as i128 / i128::from(span_ms);
        usize::try_from(column).map_or(0, |c| c.min(TIMELINE_COLUMNS - 1))
    };
    let mut last = vec![None; TIMELINE_COLUMNS * LOOKS];
    for (i, event) in events.iter().enumerate() {
        last[column(at(event)) * LOOKS + look(&event.kind, event.correct)] = Some(i);
    }
    let mut kept: Vec<usize> = last.into_iter().flatten().collect();
    kept.sort_unstable();
    kept.into_iter()
        .map(|i| Mark {
            kind: events[i].kind.clone(),
            correct: events[i].correct,
            at_ms: at(&events[i]),
        })
        .collect()
}

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
    let duration_seconds = (end - session.started_at_ms).max(0) / 1000;
    SessionSummary {
        session_id: session.id.clone(),
        learner_name: session.learner_name.clone(),
        subject: session.subject.clone(),
        started_at: instant(session.started_at_ms),
        completed_at: session.completed_at_ms.map(instant),
        completed: session.completed_at_ms.is_some(),
        duration_seconds,
        events_total: events.len() as i64,
        steps: events_by_kind.get("step").copied().unwrap_or(0),
        hints_used: events_by_kind.get("hint").copied().unwrap_or(0),
        events_by_kind,
        answers_total,
        answers_correct,
        accuracy: (answers_total > 0).then(|| answers_correct as f64 / answers_total as f64),
        timeline: timeline(events, session.started_at_ms, duration_seconds),
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
        // All at one instant: one mark of each look (a step, a hint, a wrong and a right
        // answer), in the order of the last events drawn alike.
        let marks: Vec<_> = summary
            .timeline
            .iter()
            .map(|m| (m.kind.as_str(), m.correct, m.at_ms))
            .collect();
        assert_eq!(
            marks,
            [
                ("step", None, 500),
                ("hint", None, 500),
                ("answer", Some(false), 500),
                ("answer", Some(true), 500),
            ]
        );
    }

    /// An answer nobody marked counts as not right, as the API documents, and is drawn as a
    /// wrong one; a mark on another kind is not an answer.
    #[test]
    fn an_unmarked_answer_counts_as_not_right() {
        let session = SessionRecord {
            id: "s".into(),
            learner_name: None,
            subject: None,
            started_at_ms: 1_000_000,
            completed_at_ms: Some(1_060_000),
        };
        let events = [
            event("answer", None),
            event("answer", Some(true)),
            event("response", Some(true)),
        ];
        let summary = summarize(&session, &events, 0);
        assert_eq!((summary.answers_correct, summary.answers_total), (1, 2));
        assert_eq!(summary.accuracy, Some(0.5));
        let looks: Vec<_> = summary
            .timeline
            .iter()
            .map(|m| look(&m.kind, m.correct))
            .collect();
        assert_eq!(looks, [2, LANES, 3]);
    }

    /// A session of ten thousand events is charted whole: every column of the axis where
    /// something happened has its mark, right and wrong answers both, and the last event
    /// its own; at most one mark of each look a column.
    #[test]
    fn a_long_session_is_charted_whole_in_a_bounded_number_of_marks() {
        let session = SessionRecord {
            id: "s".into(),
            learner_name: None,
            subject: None,
            started_at_ms: 0,
            completed_at_ms: Some(3_600_000),
        };
        let events: Vec<EventRecord> = (0..10_000)
            .map(|i| EventRecord {
                kind: if i % 3 == 0 { "step" } else { "answer" }.into(),
                correct: (i % 3 != 0).then_some(i % 3 == 1),
                at_ms: i * 360 + 180,
            })
            .collect();
        let summary = summarize(&session, &events, 0);
        assert_eq!(summary.timeline.len(), TIMELINE_COLUMNS * 3);
        assert_eq!(summary.timeline.last().unwrap().at_ms, 9_999 * 360 + 180);
        let column_ms = 3_600_000 / TIMELINE_COLUMNS as i64;
        for column in 0..TIMELINE_COLUMNS as i64 {
            let here: Vec<_> = summary
                .timeline
                .iter()
                .filter(|m| m.at_ms / column_ms == column)
                .map(|m| (m.lane(), m.correct))
                .collect();
            for look in [(0, None), (2, Some(true)), (2, Some(false))] {
                assert_eq!(
                    here.iter().filter(|&&l| l == look).count(),
                    1,
                    "column {column}: {here:?}"
                );
            }
        }
        assert!(
            summary
                .timeline
                .windows(2)
                .all(|w| w[0].at_ms <= w[1].at_ms)
        );
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
