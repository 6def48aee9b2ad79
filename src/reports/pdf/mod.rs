//! A one-page PDF of a session summary: a title, the learner and subject, a table of the
//! numbers beside a chart of the session's timeline, and a table of events by kind.
//!
//! Written with `pdf-writer`; the Go fonts are embedded as CID fonts (Type 0, Identity-H),
//! subset per document with `subsetter` to the glyphs the page uses, with a ToUnicode map so
//! the text stays selectable and searchable. Any script the fonts cover (Latin with its
//! accents, Greek, Cyrillic) prints as sent; a character they lack is drawn as the font's
//! replacement box and reads back as U+FFFD, never as a silent `?`.

mod chart;
mod fonts;
mod labels;
mod page;

use pdf_writer::{Filter, Pdf, Rect, Ref, TextStr};

use super::summary::SessionSummary;
use fonts::Weight;
use page::Page;

pub use fonts::warm_up;
pub use labels::{FILE as LABELS_FILE, Labels, SHIPPED as SHIPPED_LABELS};

/// A4 in points.
const PAGE: (f32, f32) = (595.0, 842.0);
const LEFT: f32 = 56.0;
const RIGHT: f32 = 539.0;

/// The learner, and the line under the title: the learner and the subject, as the emails
/// show names (no reordering marks, at most 60 characters); a session without a subject
/// names the learner alone (`learner`: the word for a learner without a name).
fn heading(summary: &SessionSummary, learner: &str) -> (String, String) {
    let named = |name: Option<&str>| {
        name.map(super::week::display_name)
            .filter(|n| !n.is_empty())
    };
    let learner = named(summary.learner_name.as_deref()).unwrap_or_else(|| learner.to_owned());
    let heading = match named(summary.subject.as_deref()) {
        Some(subject) => format!("{learner} — {subject}"),
        None => learner.clone(),
    };
    (learner, heading)
}

/// Renders `summary` as a one-page A4 PDF, its times in `zone` (the recipient's), in the
/// words of `labels`.
pub fn render(summary: &SessionSummary, zone: chrono_tz::Tz, labels: &Labels) -> Vec<u8> {
    let word = |key: &str| labels.get(key, &[]);
    let mut page = Page::new();
    page.content.set_line_width(0.5);
    let title = Page::fit(Weight::Bold, 22.0, &word("title"), RIGHT - LEFT);
    page.text(Weight::Bold, 22.0, LEFT, 780.0, &title);
    let (learner, heading) = heading(summary, &word("learner"));
    let heading = Page::fit(Weight::Regular, 13.0, &heading, RIGHT - LEFT);
    page.text(Weight::Regular, 13.0, LEFT, 756.0, &heading);
    let when = labels.date(&summary.started_at.with_timezone(&zone));
    let started = labels.get("started", &[("when", &when)]);
    let started = Page::fit(Weight::Regular, 10.0, &started, RIGHT - LEFT);
    page.text(Weight::Regular, 10.0, LEFT, 738.0, &started);

    let accuracy = summary.accuracy.map_or_else(
        || "–".to_owned(),
        |a| labels.get("percent", &[("value", &format!("{:.0}", a * 100.0))]),
    );
    let status = if summary.completed {
        "completed"
    } else {
        "in_progress"
    };
    let (correct, total) = (
        summary.answers_correct.to_string(),
        summary.answers_total.to_string(),
    );
    let rows = [
        ("status", word(status)),
        ("time_spent", labels.duration(summary.duration_seconds)),
        ("steps", summary.steps.to_string()),
        ("hints", summary.hints_used.to_string()),
        (
            "answers_correct",
            labels.get("answers_of", &[("correct", &correct), ("total", &total)]),
        ),
        ("accuracy", accuracy),
        ("events", summary.events_total.to_string()),
    ]
    .map(|(key, value)| {
        (
            Page::fit(Weight::Regular, 11.0, &word(key), 200.0 - LEFT - 12.0),
            Page::fit(Weight::Regular, 11.0, &value, 100.0 - 12.0),
        )
    });
    // The numbers on the left, the timeline beside them.
    let table_bottom = page.table((LEFT, 200.0, 300.0), 716.0, (&word("summary"), ""), &rows);
    let chart_bottom = page.timeline((318.0, RIGHT), 700.0, summary, labels);
    let y = table_bottom.min(chart_bottom);

    let kinds: Vec<(String, String)> = summary
        .events_by_kind
        .iter()
        .map(|(kind, count)| (kind.clone(), count.to_string()))
        .collect();
    let y = if kinds.is_empty() {
        y
    } else {
        page.text(Weight::Bold, 13.0, LEFT, y - 30.0, &word("activity"));
        page.table(
            (LEFT, 330.0, RIGHT),
            y - 40.0,
            (&word("kind"), &word("count")),
            &kinds[..kinds.len().min(20)],
        )
    };
    let session = labels.get("session", &[("id", &summary.session_id)]);
    page.text(
        Weight::Regular,
        8.0,
        LEFT,
        (y - 30.0).max(40.0),
        &Page::fit(Weight::Regular, 8.0, &session, RIGHT - LEFT),
    );
    document(
        page,
        &labels.get("document_title", &[("learner", &learner)]),
        labels.language(),
    )
}

/// Writes the page, its fonts (subset to the glyphs used) and the document around them.
fn document(page: Page, title: &str, language: &str) -> Vec<u8> {
    let catalog = Ref::new(1);
    let pages = Ref::new(2);
    let page_id = Ref::new(3);
    let content_id = Ref::new(4);
    let info = Ref::new(5);
    let mut next = 6;
    let mut alloc = || {
        next += 1;
        Ref::new(next - 1)
    };

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages).lang(TextStr(language));
    pdf.pages(pages).kids([page_id]).count(1);
    let Page { content, used } = page;
    let font_refs: Vec<(Ref, Weight)> = [Weight::Regular, Weight::Bold]
        .into_iter()
        .map(|w| (alloc(), w))
        .collect();
    {
        let mut page_writer = pdf.page(page_id);
        page_writer
            .parent(pages)
            .media_box(Rect::new(0.0, 0.0, PAGE.0, PAGE.1))
            .contents(content_id);
        let mut resources = page_writer.resources();
        let mut font_dict = resources.fonts();
        for (id, weight) in &font_refs {
            font_dict.pair(weight.resource(), *id);
        }
    }
    let content = miniz_oxide::deflate::compress_to_vec_zlib(&content.finish(), 6);
    pdf.stream(content_id, &content).filter(Filter::FlateDecode);

    for ((type0, weight), used) in font_refs.into_iter().zip(used) {
        fonts::write_font(&mut pdf, type0, weight.face(), &used, &mut alloc);
    }
    pdf.document_info(info)
        .title(TextStr(title))
        .producer(TextStr("herald"));
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::chart::chart_span_ms;
    use super::*;
    use crate::reports::summary::{EventRecord, SessionRecord, summarize};

    fn summary(name: &str) -> SessionSummary {
        let session = SessionRecord {
            id: "abc".into(),
            learner_name: Some(name.into()),
            subject: Some("Fractions".into()),
            started_at_ms: 0,
            completed_at_ms: Some(90_000),
        };
        let events = [
            ("step", None, 1_000),
            ("hint", None, 20_000),
            ("answer", Some(true), 40_000),
            ("answer", Some(false), 60_000),
        ]
        .map(|(kind, correct, at_ms)| EventRecord {
            kind: kind.into(),
            correct,
            at_ms,
        });
        summarize(&session, &events, 0)
    }

    #[test]
    fn the_chart_spans_the_session_or_its_last_event_whichever_is_later() {
        assert_eq!(chart_span_ms(&summary("Ada")), 90_000);
        // Shorter than a second: the marks spread over the time they took.
        let session = SessionRecord {
            id: "quick".into(),
            learner_name: None,
            subject: None,
            started_at_ms: 1_000,
            completed_at_ms: Some(1_800),
        };
        let events = [300, 600, 750].map(|at| EventRecord {
            kind: "answer".into(),
            correct: Some(true),
            at_ms: 1_000 + at,
        });
        let quick = summarize(&session, &events, 0);
        assert_eq!(quick.duration_seconds, 0);
        assert_eq!(chart_span_ms(&quick), 750);
        // Nothing to draw: still a length to divide by.
        assert_eq!(chart_span_ms(&summarize(&session, &[], 0)), 1);
    }

    #[test]
    fn the_heading_names_the_subject_only_when_the_session_has_one() {
        assert_eq!(heading(&summary("Ada"), "Learner").1, "Ada — Fractions");
        let session = SessionRecord {
            id: "bare".into(),
            learner_name: None,
            subject: Some(" \u{202e} ".into()),
            started_at_ms: 0,
            completed_at_ms: Some(1_000),
        };
        let bare = summarize(&session, &[], 0);
        assert_eq!(
            heading(&bare, "Learner"),
            ("Learner".to_owned(), "Learner".to_owned())
        );
    }

    #[test]
    fn renders_a_small_well_formed_document() {
        let pdf = render(&summary("Ada (7)"), chrono_tz::UTC, &Labels::shipped());
        assert!(pdf.starts_with(b"%PDF-"));
        let find = |needle: &[u8]| pdf.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"/FontFile2") && find(b"/ToUnicode") && find(b"/Identity-H"));
        assert!(pdf.len() < 40_000, "{} bytes", pdf.len());
    }

    /// The most events a session takes, answers right and wrong over an hour: the chart
    /// draws a bounded number of marks, so the report stays small.
    #[test]
    fn a_full_session_still_renders_a_small_document() {
        let session = SessionRecord {
            id: "full".into(),
            learner_name: Some("Ada".into()),
            subject: None,
            started_at_ms: 0,
            completed_at_ms: Some(3_600_000),
        };
        let events: Vec<EventRecord> = (0..crate::store::sessions::MAX_EVENTS)
            .map(|i| EventRecord {
                kind: ["step", "hint", "answer", "answer", "note"][i as usize % 5].into(),
                correct: Some(i % 5 == 2),
                at_ms: i * 360,
            })
            .collect();
        let pdf = render(
            &summarize(&session, &events, 0),
            chrono_tz::UTC,
            &Labels::shipped(),
        );
        assert!(pdf.len() < 40_000, "{} bytes", pdf.len());
    }

    #[test]
    fn a_missing_glyph_is_the_replacement_box_and_reads_as_u_fffd() {
        let mut page = Page::new();
        let known = page.glyph(Weight::Regular, 'Ł');
        let missing = page.glyph(Weight::Regular, '日');
        assert_ne!(known, missing);
        assert_eq!(page.used[0].text[&missing], char::REPLACEMENT_CHARACTER);
        assert_eq!(page.used[0].text[&known], 'Ł');
    }

    #[test]
    fn a_name_loses_its_reordering_marks_in_the_pdf_as_in_the_emails() {
        // The ToUnicode maps are plain text: a replacement box would show as FFFD there.
        let has_replacement = |pdf: &[u8]| pdf.windows(4).any(|w| w == b"FFFD");
        assert!(!has_replacement(&render(
            &summary("\u{202e}Ada\u{202c}"),
            chrono_tz::UTC,
            &Labels::shipped()
        )));
        assert!(has_replacement(&render(
            &summary("Ada 日"),
            chrono_tz::UTC,
            &Labels::shipped()
        )));
    }

    #[test]
    fn a_kept_font_program_gives_the_same_document() {
        let first = render(&summary("Zoë"), chrono_tz::UTC, &Labels::shipped());
        let again = render(&summary("Zoë"), chrono_tz::UTC, &Labels::shipped());
        assert_eq!(first, again);
        assert_ne!(
            first,
            render(&summary("Ζωή"), chrono_tz::UTC, &Labels::shipped())
        );
    }

    #[test]
    fn long_text_is_shortened_to_fit_with_an_ellipsis() {
        let long = "W".repeat(1000);
        let fitted = Page::fit(Weight::Regular, 11.0, &long, 100.0);
        assert!(fitted.ends_with('…') && fitted.chars().count() < 20);
        assert!(Page::width(Weight::Regular, 11.0, &fitted) <= 100.0);
        assert_eq!(Page::fit(Weight::Regular, 11.0, "Ada", 100.0), "Ada");
    }
}
