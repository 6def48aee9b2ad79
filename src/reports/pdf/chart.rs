//! The session's timeline beside the summary table: steps, hints and answers over time,
//! right and wrong answers told apart by shape, so the chart reads in black and white.

use super::fonts::Weight;
use super::labels::Labels;
use super::page::Page;
use crate::reports::summary::{self, Mark, SessionSummary};

impl Page {
    /// The session's timeline: one lane each for steps, hints, answers and anything else,
    /// each event a mark at its time. A right answer is a filled dot, a wrong one a cross, so
    /// the two stay apart in black and white. Returns the y below the chart.
    pub(super) fn timeline(
        &mut self,
        (left, right): (f32, f32),
        top: f32,
        summary: &SessionSummary,
        labels: &Labels,
    ) -> f32 {
        let lanes: [&str; summary::LANES] =
            ["lane_steps", "lane_hints", "lane_answers", "lane_other"];
        let (label_w, lane_h) = (52.0, 26.0);
        let (x0, x1) = (left + label_w, right);
        let bottom = top - lane_h * lanes.len() as f32;
        let title = Self::fit(
            Weight::Bold,
            11.0,
            &labels.get("timeline", &[]),
            right - left,
        );
        self.text(Weight::Bold, 11.0, left, top + 8.0, &title);
        for (i, lane) in lanes.iter().enumerate() {
            let y = top - lane_h * (i as f32 + 0.5);
            let lane = Self::fit(Weight::Regular, 9.0, &labels.get(lane, &[]), label_w - 4.0);
            self.text(Weight::Regular, 9.0, left, y - 3.0, &lane);
            self.content.save_state().set_stroke_gray(0.8);
            self.line((x0, y), (x1, y));
            self.content.restore_state();
        }
        self.line((x0, bottom), (x1, bottom));
        let span_ms = chart_span_ms(summary);
        let span = span_ms as f32;
        let x_of = |mark: &Mark| x0 + (mark.at_ms.clamp(0, span_ms) as f32 / span) * (x1 - x0);
        for mark in &summary.timeline {
            let lane = mark.lane();
            let (x, y) = (x_of(mark), top - lane_h * (lane as f32 + 0.5));
            match (lane, mark.correct) {
                (2, Some(true)) => self.dot(x, y, 3.2),
                (2, _) => self.cross(x, y, 3.2),
                (1, _) => {
                    // A hollow triangle.
                    self.content
                        .move_to(x, y + 3.5)
                        .line_to(x - 3.5, y - 3.0)
                        .line_to(x + 3.5, y - 3.0)
                        .close_path()
                        .stroke();
                }
                _ => self.line((x, y - 4.0), (x, y + 4.0)),
            }
        }
        let start = labels.duration(0);
        self.text(Weight::Regular, 8.0, x0, bottom - 11.0, &start);
        let end = if span_ms < 1000 {
            let seconds = format!("{:.1}", span_ms as f64 / 1000.0);
            labels.get("duration_seconds", &[("s", &seconds)])
        } else {
            labels.duration(span_ms / 1000)
        };
        let end_w = Self::width(Weight::Regular, 8.0, &end);
        self.text(Weight::Regular, 8.0, x1 - end_w, bottom - 11.0, &end);
        // The legend: each sign before its words, the second after the first's.
        let y = bottom - 26.0;
        let half = (x1 - x0) / 2.0 - 20.0;
        let right_answer = Self::fit(Weight::Regular, 8.0, &labels.get("right_answer", &[]), half);
        let wrong_answer = Self::fit(Weight::Regular, 8.0, &labels.get("wrong_answer", &[]), half);
        self.dot(x0 + 3.0, y + 3.0, 3.2);
        self.text(Weight::Regular, 8.0, x0 + 10.0, y, &right_answer);
        let second = x0 + 10.0 + Self::width(Weight::Regular, 8.0, &right_answer) + 12.0;
        self.cross(second + 3.0, y + 3.0, 3.2);
        self.text(Weight::Regular, 8.0, second + 10.0, y, &wrong_answer);
        y - 8.0
    }
}

/// How long the chart's axis is, in milliseconds ([`summary::chart_span_ms`]).
pub(super) fn chart_span_ms(summary: &SessionSummary) -> i64 {
    let last = summary.timeline.iter().map(|m| m.at_ms).max().unwrap_or(0);
    summary::chart_span_ms(summary.duration_seconds, last)
}
