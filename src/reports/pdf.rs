//! A one-page PDF of a session summary: a title, the learner and subject, a table of the
//! numbers beside a chart of the session's timeline, and a table of events by kind.
//!
//! Written with `pdf-writer`; the Go fonts are embedded as CID fonts (Type 0, Identity-H),
//! subset per document with `subsetter` to the glyphs the page uses, with a ToUnicode map so
//! the text stays selectable and searchable. Any script the fonts cover (Latin with its
//! accents, Greek, Cyrillic) prints as sent; a character they lack is drawn as the font's
//! replacement box and reads back as U+FFFD, never as a silent `?`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str, TextStr};
use subsetter::GlyphRemapper;

use super::summary::{Mark, SessionSummary};

const REGULAR_TTF: &[u8] = include_bytes!("../../assets/fonts/Go-Regular.ttf");
const BOLD_TTF: &[u8] = include_bytes!("../../assets/fonts/Go-Bold.ttf");

/// A4 in points.
const PAGE: (f32, f32) = (595.0, 842.0);
const LEFT: f32 = 56.0;
const RIGHT: f32 = 539.0;

/// What is read from a font once per process.
struct Face {
    name: &'static str,
    data: &'static [u8],
    face: ttf_parser::Face<'static>,
    units: f32,
}

impl Face {
    fn load(name: &'static str, data: &'static [u8]) -> Self {
        let face = ttf_parser::Face::parse(data, 0).expect("the embedded font parses");
        let units = f32::from(face.units_per_em());
        Self {
            name,
            data,
            face,
            units,
        }
    }

    /// In 1/1000 em, as PDF widths are.
    fn advance(&self, glyph: u16) -> f32 {
        let advance = self
            .face
            .glyph_hor_advance(ttf_parser::GlyphId(glyph))
            .unwrap_or(0);
        f32::from(advance) * 1000.0 / self.units
    }

    fn scaled(&self, value: i16) -> f32 {
        f32::from(value) * 1000.0 / self.units
    }
}

fn faces() -> &'static [Face; 2] {
    static FACES: OnceLock<[Face; 2]> = OnceLock::new();
    FACES.get_or_init(|| {
        [
            Face::load("Go-Regular", REGULAR_TTF),
            Face::load("Go-Bold", BOLD_TTF),
        ]
    })
}

/// Parses the fonts now, so the first report is not slower than the rest.
pub fn warm_up() {
    faces();
}

#[derive(Clone, Copy)]
enum Weight {
    Regular = 0,
    Bold = 1,
}

/// The glyphs one font has drawn in this document: their new ids in the subset, and the text
/// each stands for.
#[derive(Default)]
struct Used {
    remapper: GlyphRemapper,
    text: BTreeMap<u16, char>,
}

/// The page being drawn, and what its text needs from each font.
struct Page {
    content: Content,
    used: [Used; 2],
}

impl Page {
    fn new() -> Self {
        Self {
            content: Content::new(),
            used: Default::default(),
        }
    }

    /// The glyph of `c` in `weight` (the replacement box, glyph 0, when the font lacks it),
    /// remapped into the subset.
    fn glyph(&mut self, weight: Weight, c: char) -> u16 {
        let face = &faces()[weight as usize];
        let (glyph, stands_for) = match face.face.glyph_index(c) {
            Some(g) => (g.0, c),
            None => (0, char::REPLACEMENT_CHARACTER),
        };
        let used = &mut self.used[weight as usize];
        let new = used.remapper.remap(glyph);
        used.text.entry(new).or_insert(stands_for);
        new
    }

    /// The width of `text` at `size`, in points.
    fn width(weight: Weight, size: f32, text: &str) -> f32 {
        let face = &faces()[weight as usize];
        text.chars()
            .map(|c| face.advance(face.face.glyph_index(c).map_or(0, |g| g.0)))
            .sum::<f32>()
            * size
            / 1000.0
    }

    /// `text` cut to fit `max` points, with an ellipsis when it was cut.
    fn fit(weight: Weight, size: f32, text: &str, max: f32) -> String {
        if Self::width(weight, size, text) <= max {
            return text.to_owned();
        }
        let ellipsis = Self::width(weight, size, "…");
        let mut out = String::new();
        let mut used = 0.0;
        let face = &faces()[weight as usize];
        for c in text.chars() {
            let w = face.advance(face.face.glyph_index(c).map_or(0, |g| g.0)) * size / 1000.0;
            if used + w + ellipsis > max {
                break;
            }
            used += w;
            out.push(c);
        }
        out.push('…');
        out
    }

    fn text(&mut self, weight: Weight, size: f32, x: f32, y: f32, text: &str) {
        let mut encoded = Vec::with_capacity(text.len() * 2);
        for c in text.chars().filter(|c| !c.is_control()) {
            encoded.extend_from_slice(&self.glyph(weight, c).to_be_bytes());
        }
        let font = [Name(b"F1"), Name(b"F2")][weight as usize];
        self.content
            .begin_text()
            .set_font(font, size)
            .next_line(x, y)
            .show(Str(&encoded))
            .end_text();
    }

    fn line(&mut self, (x1, y1): (f32, f32), (x2, y2): (f32, f32)) {
        self.content.move_to(x1, y1).line_to(x2, y2).stroke();
    }

    fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, gray: f32) {
        self.content
            .save_state()
            .set_fill_gray(gray)
            .rect(x, y, w, h)
            .fill_nonzero()
            .restore_state();
    }

    /// A two-column table with a shaded header row from `left` to `right`; returns the y
    /// below it. Values too long for their cell are shortened.
    fn table(
        &mut self,
        (left, split, right): (f32, f32, f32),
        top: f32,
        header: (&str, &str),
        rows: &[(String, String)],
    ) -> f32 {
        let row_h = 22.0;
        let mut y = top;
        self.fill_rect(left, y - row_h, right - left, row_h, 0.9);
        self.text(Weight::Bold, 11.0, left + 8.0, y - 15.0, header.0);
        self.text(Weight::Bold, 11.0, split + 8.0, y - 15.0, header.1);
        y -= row_h;
        for (label, value) in rows {
            let label = Self::fit(Weight::Regular, 11.0, label, split - left - 16.0);
            let value = Self::fit(Weight::Regular, 11.0, value, right - split - 16.0);
            self.text(Weight::Regular, 11.0, left + 8.0, y - 15.0, &label);
            self.text(Weight::Regular, 11.0, split + 8.0, y - 15.0, &value);
            y -= row_h;
            self.line((left, y), (right, y));
        }
        self.line((left, top), (right, top));
        self.line((left, top), (left, y));
        self.line((split, top), (split, y));
        self.line((right, top), (right, y));
        y
    }

    /// The session's timeline: one lane each for steps, hints, answers and anything else,
    /// each event a mark at its time. A right answer is a filled dot, a wrong one a cross, so
    /// the two stay apart in black and white. Returns the y below the chart.
    fn timeline(&mut self, (left, right): (f32, f32), top: f32, summary: &SessionSummary) -> f32 {
        let lanes = ["Steps", "Hints", "Answers", "Other"];
        let (label_w, lane_h) = (52.0, 26.0);
        let (x0, x1) = (left + label_w, right);
        let bottom = top - lane_h * lanes.len() as f32;
        self.text(Weight::Bold, 11.0, left, top + 8.0, "Timeline");
        for (i, lane) in lanes.iter().enumerate() {
            let y = top - lane_h * (i as f32 + 0.5);
            self.text(Weight::Regular, 9.0, left, y - 3.0, lane);
            self.content.save_state().set_stroke_gray(0.8);
            self.line((x0, y), (x1, y));
            self.content.restore_state();
        }
        self.line((x0, bottom), (x1, bottom));
        let span_ms = chart_span_ms(summary);
        let span = span_ms as f32;
        let x_of = |mark: &Mark| x0 + (mark.at_ms.clamp(0, span_ms) as f32 / span) * (x1 - x0);
        for mark in &summary.timeline {
            let lane = match mark.kind.as_str() {
                "step" => 0,
                "hint" => 1,
                "answer" => 2,
                _ => 3,
            };
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
        self.text(Weight::Regular, 8.0, x0, bottom - 11.0, "0 s");
        let end = if span_ms < 1000 {
            format!("{:.1} s", span_ms as f64 / 1000.0)
        } else {
            duration_text(span_ms / 1000)
        };
        let end_w = Self::width(Weight::Regular, 8.0, &end);
        self.text(Weight::Regular, 8.0, x1 - end_w, bottom - 11.0, &end);
        // The legend.
        let y = bottom - 26.0;
        self.dot(x0 + 3.0, y + 3.0, 3.2);
        self.text(Weight::Regular, 8.0, x0 + 10.0, y, "right answer");
        self.cross(x0 + 73.0, y + 3.0, 3.2);
        self.text(Weight::Regular, 8.0, x0 + 80.0, y, "wrong answer");
        y - 8.0
    }

    fn dot(&mut self, x: f32, y: f32, r: f32) {
        // Four Bézier quarters.
        let k = r * 0.552_284_8;
        self.content
            .move_to(x + r, y)
            .cubic_to(x + r, y + k, x + k, y + r, x, y + r)
            .cubic_to(x - k, y + r, x - r, y + k, x - r, y)
            .cubic_to(x - r, y - k, x - k, y - r, x, y - r)
            .cubic_to(x + k, y - r, x + r, y - k, x + r, y)
            .fill_nonzero();
    }

    fn cross(&mut self, x: f32, y: f32, r: f32) {
        self.content.save_state().set_line_width(1.2);
        self.line((x - r, y - r), (x + r, y + r));
        self.line((x - r, y + r), (x + r, y - r));
        self.content.restore_state();
    }
}

/// How long the chart's axis is, in milliseconds: the session's length, or up to its last
/// event when that comes later (a session shorter than a second counts as zero seconds, and
/// a backend may time an event after the completion), so marks never pile up on the edge.
fn chart_span_ms(summary: &SessionSummary) -> i64 {
    let last = summary.timeline.iter().map(|m| m.at_ms).max().unwrap_or(0);
    (summary.duration_seconds * 1000).max(last).max(1)
}

fn duration_text(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if h > 0 {
        format!("{h} h {m} min {s} s")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    }
}

/// Renders `summary` as a one-page A4 PDF.
pub fn render(summary: &SessionSummary) -> Vec<u8> {
    let mut page = Page::new();
    page.content.set_line_width(0.5);
    page.text(Weight::Bold, 22.0, LEFT, 780.0, "Learning session report");
    // Names as the emails show them: no reordering marks, at most 60 characters.
    let named = |name: Option<&str>, or: &str| {
        name.map(super::week::display_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| or.to_owned())
    };
    let learner = named(summary.learner_name.as_deref(), "Learner");
    let subject = named(summary.subject.as_deref(), "General practice");
    let heading = Page::fit(
        Weight::Regular,
        13.0,
        &format!("{learner} — {subject}"),
        RIGHT - LEFT,
    );
    page.text(Weight::Regular, 13.0, LEFT, 756.0, &heading);
    let when = summary
        .started_at
        .format("%A %-d %B %Y, %H:%M UTC")
        .to_string();
    page.text(
        Weight::Regular,
        10.0,
        LEFT,
        738.0,
        &format!("Started {when}"),
    );

    let accuracy = summary
        .accuracy
        .map_or_else(|| "–".to_owned(), |a| format!("{:.0}%", a * 100.0));
    let rows = vec![
        (
            "Status".to_owned(),
            if summary.completed {
                "Completed"
            } else {
                "In progress"
            }
            .to_owned(),
        ),
        (
            "Time spent".to_owned(),
            duration_text(summary.duration_seconds),
        ),
        ("Steps worked through".to_owned(), summary.steps.to_string()),
        ("Hints used".to_owned(), summary.hints_used.to_string()),
        (
            "Answers correct".to_owned(),
            format!("{} of {}", summary.answers_correct, summary.answers_total),
        ),
        ("Accuracy".to_owned(), accuracy),
        (
            "Events recorded".to_owned(),
            summary.events_total.to_string(),
        ),
    ];
    // The numbers on the left, the timeline beside them.
    let table_bottom = page.table((LEFT, 200.0, 300.0), 716.0, ("Summary", ""), &rows);
    let chart_bottom = page.timeline((318.0, RIGHT), 700.0, summary);
    let y = table_bottom.min(chart_bottom);

    let kinds: Vec<(String, String)> = summary
        .events_by_kind
        .iter()
        .map(|(kind, count)| (kind.clone(), count.to_string()))
        .collect();
    let y = if kinds.is_empty() {
        y
    } else {
        page.text(Weight::Bold, 13.0, LEFT, y - 30.0, "Activity by kind");
        page.table(
            (LEFT, 330.0, RIGHT),
            y - 40.0,
            ("Kind", "Count"),
            &kinds[..kinds.len().min(20)],
        )
    };
    page.text(
        Weight::Regular,
        8.0,
        LEFT,
        (y - 30.0).max(40.0),
        &format!("Session {}", summary.session_id),
    );
    document(page, &format!("Session report: {learner}"))
}

/// Writes the page, its fonts (subset to the glyphs used) and the document around them.
fn document(page: Page, title: &str) -> Vec<u8> {
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
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page_id]).count(1);
    let Page { content, used } = page;
    let fonts: Vec<(Ref, Weight)> = [Weight::Regular, Weight::Bold]
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
        for (id, weight) in &fonts {
            font_dict.pair([Name(b"F1"), Name(b"F2")][*weight as usize], *id);
        }
    }
    let content = miniz_oxide::deflate::compress_to_vec_zlib(&content.finish(), 6);
    pdf.stream(content_id, &content).filter(Filter::FlateDecode);

    for ((type0, weight), used) in fonts.into_iter().zip(used) {
        write_font(
            &mut pdf,
            type0,
            &faces()[weight as usize],
            &used,
            &mut alloc,
        );
    }
    pdf.document_info(info)
        .title(TextStr(title))
        .producer(TextStr("herald"));
    pdf.finish()
}

/// A font program subset to some glyphs, compressed, and its length before compression.
struct Program {
    compressed: Vec<u8>,
    length: usize,
}

/// The most subsets kept; reports of one learner and subject use the same glyphs, so most
/// reports find theirs.
const PROGRAMS_KEPT: usize = 256;

/// The subset of `face` to the glyphs of `remapper`, compressed: made once per font and
/// glyph set and kept (the subsetting and compressing are most of a report's rendering).
fn font_program(face: &Face, remapper: &GlyphRemapper) -> std::sync::Arc<Program> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, PoisonError};
    type Kept = HashMap<(&'static str, Vec<u16>), Arc<Program>>;
    static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
    let key = (face.name, remapper.remapped_gids().collect::<Vec<u16>>());
    let kept = KEPT.get_or_init(Default::default);
    if let Some(found) = kept
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return found.clone();
    }
    let subset = subsetter::subset(face.data, 0, remapper).expect("the embedded fonts subset");
    let made = Arc::new(Program {
        compressed: miniz_oxide::deflate::compress_to_vec_zlib(&subset, 6),
        length: subset.len(),
    });
    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() >= PROGRAMS_KEPT {
        kept.clear();
    }
    kept.insert(key, made.clone());
    made
}

/// One font as a Type 0 font over a CIDFontType2 whose program is the subset of `used`.
fn write_font(
    pdf: &mut Pdf,
    type0: Ref,
    face: &Face,
    used: &Used,
    alloc: &mut impl FnMut() -> Ref,
) {
    let (cid, descriptor, program, to_unicode) = (alloc(), alloc(), alloc(), alloc());
    // A subset is named with a tag of six capitals that differs with its glyphs.
    let tag: String = {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for glyph in used.remapper.remapped_gids() {
            hash = (hash ^ u64::from(glyph)).wrapping_mul(0x0100_0000_01b3);
        }
        (0..6)
            .map(|i| char::from(b'A' + ((hash >> (i * 8)) % 26) as u8))
            .collect()
    };
    let base = format!("{tag}+{}", face.name);
    let system = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    pdf.type0_font(type0)
        .base_font(Name(base.as_bytes()))
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid)
        .to_unicode(to_unicode);

    // Widths of the subset's glyphs, in their new order.
    let widths: Vec<f32> = used
        .remapper
        .remapped_gids()
        .map(|old| face.advance(old))
        .collect();
    {
        let mut font = pdf.cid_font(cid);
        font.subtype(CidFontType::Type2)
            .base_font(Name(base.as_bytes()))
            .system_info(system)
            .font_descriptor(descriptor)
            .cid_to_gid_map_predefined(Name(b"Identity"))
            .default_width(0.0);
        font.widths().consecutive(0, widths);
    }

    let b = face.face.global_bounding_box();
    pdf.font_descriptor(descriptor)
        .name(Name(base.as_bytes()))
        .flags(FontFlags::NON_SYMBOLIC)
        .bbox(Rect::new(
            face.scaled(b.x_min),
            face.scaled(b.y_min),
            face.scaled(b.x_max),
            face.scaled(b.y_max),
        ))
        .italic_angle(0.0)
        .ascent(face.scaled(face.face.ascender()))
        .descent(face.scaled(face.face.descender()))
        .cap_height(face.scaled(face.face.capital_height().unwrap_or(700)))
        .stem_v(80.0)
        .font_file2(program);

    let program_bytes = font_program(face, &used.remapper);
    pdf.stream(program, &program_bytes.compressed)
        .filter(Filter::FlateDecode)
        .pair(Name(b"Length1"), program_bytes.length as i32);

    let mut cmap = pdf_writer::types::UnicodeCmap::new(Name(b"Custom"), system);
    for (glyph, c) in &used.text {
        cmap.pair(*glyph, *c);
    }
    pdf.cmap(to_unicode, &cmap.finish());
}

#[cfg(test)]
mod tests {
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
    fn renders_a_small_well_formed_document() {
        let pdf = render(&summary("Ada (7)"));
        assert!(pdf.starts_with(b"%PDF-"));
        let find = |needle: &[u8]| pdf.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"/FontFile2") && find(b"/ToUnicode") && find(b"/Identity-H"));
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
        assert!(!has_replacement(&render(&summary("\u{202e}Ada\u{202c}"))));
        assert!(has_replacement(&render(&summary("Ada 日"))));
    }

    #[test]
    fn a_kept_font_program_gives_the_same_document() {
        let first = render(&summary("Zoë"));
        let again = render(&summary("Zoë"));
        assert_eq!(first, again);
        assert_ne!(first, render(&summary("Ζωή")));
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
