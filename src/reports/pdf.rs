//! A one-page PDF of a session summary, written directly: a title, the learner and subject,
//! a table of the numbers and a table of events by kind, in the Go fonts (embedded, so the
//! report reads the same everywhere).
//!
//! The fonts are embedded whole, compressed once per process; text uses WinAnsiEncoding,
//! which covers Latin-1, and anything outside it is written as `?`.

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::summary::SessionSummary;

const REGULAR_TTF: &[u8] = include_bytes!("../../assets/fonts/Go-Regular.ttf");
const BOLD_TTF: &[u8] = include_bytes!("../../assets/fonts/Go-Bold.ttf");

/// What a PDF needs to know about one embedded font.
struct Font {
    base_name: &'static str,
    /// Advance widths of codes 32..=255 in 1/1000 em.
    widths: Vec<u16>,
    bbox: [i32; 4],
    ascent: i32,
    descent: i32,
    cap_height: i32,
    compressed: Vec<u8>,
    original_len: usize,
}

fn scaled(value: i32, units: u16) -> i32 {
    value * 1000 / i32::from(units)
}

/// The Unicode character for WinAnsi code `code` (codes 128-159 beyond the ones used here
/// are left blank).
fn win_ansi_char(code: u8) -> Option<char> {
    match code {
        32..=126 | 160..=255 => Some(char::from(code)),
        0x80 => Some('€'),
        0x96 => Some('–'),
        0x97 => Some('—'),
        0x95 => Some('•'),
        _ => None,
    }
}

fn load(base_name: &'static str, ttf: &'static [u8]) -> Font {
    let face = ttf_parser::Face::parse(ttf, 0).expect("the embedded font parses");
    let units = face.units_per_em();
    let widths = (32u8..=255)
        .map(|code| {
            win_ansi_char(code)
                .and_then(|c| face.glyph_index(c))
                .and_then(|g| face.glyph_hor_advance(g))
                .map_or(0, |w| (u32::from(w) * 1000 / u32::from(units)) as u16)
        })
        .collect();
    let b = face.global_bounding_box();
    Font {
        base_name,
        widths,
        bbox: [
            scaled(b.x_min.into(), units),
            scaled(b.y_min.into(), units),
            scaled(b.x_max.into(), units),
            scaled(b.y_max.into(), units),
        ],
        ascent: scaled(face.ascender().into(), units),
        descent: scaled(face.descender().into(), units),
        cap_height: scaled(face.capital_height().unwrap_or(700).into(), units),
        compressed: miniz_oxide::deflate::compress_to_vec_zlib(ttf, 6),
        original_len: ttf.len(),
    }
}

fn fonts() -> &'static [Font; 2] {
    static FONTS: OnceLock<[Font; 2]> = OnceLock::new();
    FONTS.get_or_init(|| [load("Go-Regular", REGULAR_TTF), load("Go-Bold", BOLD_TTF)])
}

/// Loads and compresses the fonts now, so the first report is not slower than the rest.
pub fn warm_up() {
    fonts();
}

/// Text as a PDF literal string in WinAnsiEncoding.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('(');
    for c in text.chars() {
        let code = match c {
            '€' => 0x80,
            '–' => 0x96,
            '—' => 0x97,
            '•' => 0x95,
            c if (' '..='~').contains(&c) || ('\u{a0}'..='\u{ff}').contains(&c) => c as u32 as u8,
            _ => b'?',
        };
        match code {
            b'(' | b')' | b'\\' => {
                out.push('\\');
                out.push(code as char);
            }
            32..=126 => out.push(code as char),
            _ => {
                let _ = write!(out, "\\{code:03o}");
            }
        }
    }
    out.push(')');
    out
}

struct Page {
    content: String,
}

impl Page {
    fn text(&mut self, font: usize, size: f32, x: f32, y: f32, text: &str) {
        let _ = writeln!(
            self.content,
            "BT /F{} {size} Tf {x} {y} Td {} Tj ET",
            font + 1,
            literal(text)
        );
    }

    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32) {
        let _ = writeln!(self.content, "{x1} {y1} m {x2} {y2} l S");
    }

    fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, gray: f32) {
        let _ = writeln!(self.content, "q {gray} g {x} {y} {w} {h} re f Q");
    }

    /// A two-column table with a shaded header row; returns the y below it.
    fn table(&mut self, top: f32, header: (&str, &str), rows: &[(String, String)]) -> f32 {
        let (left, right, split, row_h) = (56.0, 539.0, 330.0, 22.0);
        let mut y = top;
        self.fill_rect(left, y - row_h, right - left, row_h, 0.9);
        self.text(1, 11.0, left + 8.0, y - 15.0, header.0);
        self.text(1, 11.0, split + 8.0, y - 15.0, header.1);
        y -= row_h;
        for (label, value) in rows {
            self.text(0, 11.0, left + 8.0, y - 15.0, label);
            self.text(0, 11.0, split + 8.0, y - 15.0, value);
            y -= row_h;
            self.line(left, y, right, y);
        }
        self.line(left, top, right, top);
        self.line(left, top, left, y);
        self.line(split, top, split, y);
        self.line(right, top, right, y);
        y
    }
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
    let mut page = Page {
        content: String::with_capacity(4096),
    };
    page.content.push_str("0.5 w\n");
    page.text(1, 22.0, 56.0, 780.0, "Learning session report");
    let learner = summary.learner_name.as_deref().unwrap_or("Learner");
    let subject = summary.subject.as_deref().unwrap_or("General practice");
    page.text(0, 13.0, 56.0, 756.0, &format!("{learner} — {subject}"));
    let when = summary
        .started_at
        .format("%A %-d %B %Y, %H:%M UTC")
        .to_string();
    page.text(0, 10.0, 56.0, 738.0, &format!("Started {when}"));

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
    let y = page.table(716.0, ("Summary", ""), &rows);

    let kinds: Vec<(String, String)> = summary
        .events_by_kind
        .iter()
        .map(|(kind, count)| (kind.clone(), count.to_string()))
        .collect();
    let y = if kinds.is_empty() {
        y
    } else {
        page.text(1, 13.0, 56.0, y - 30.0, "Activity by kind");
        page.table(y - 40.0, ("Kind", "Count"), &kinds)
    };
    page.text(
        0,
        8.0,
        56.0,
        (y - 30.0).max(40.0),
        &format!("Session {}", summary.session_id),
    );
    document(&page.content, &format!("Session report: {learner}"))
}

/// Assembles the objects and the cross-reference table.
fn document(content: &str, title: &str) -> Vec<u8> {
    let [regular, bold] = fonts();
    let mut objects: Vec<Vec<u8>> = Vec::with_capacity(11);
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec());
    objects.push(
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> /Contents 4 0 R >>"
            .to_vec(),
    );
    objects.push(stream(
        &format!("<< /Length {} >>", content.len()),
        content.as_bytes(),
    ));
    for (font, descriptor) in [(regular, 7), (bold, 8)] {
        let widths: Vec<String> = font.widths.iter().map(u16::to_string).collect();
        objects.push(
            format!(
                "<< /Type /Font /Subtype /TrueType /BaseFont /{} /FirstChar 32 /LastChar 255 /Widths [{}] /Encoding /WinAnsiEncoding /FontDescriptor {descriptor} 0 R >>",
                font.base_name,
                widths.join(" ")
            )
            .into_bytes(),
        );
    }
    for (font, file) in [(regular, 9), (bold, 10)] {
        let [x0, y0, x1, y1] = font.bbox;
        objects.push(
            format!(
                "<< /Type /FontDescriptor /FontName /{} /Flags 32 /FontBBox [{x0} {y0} {x1} {y1}] /ItalicAngle 0 /Ascent {} /Descent {} /CapHeight {} /StemV 80 /FontFile2 {file} 0 R >>",
                font.base_name, font.ascent, font.descent, font.cap_height
            )
            .into_bytes(),
        );
    }
    for font in [regular, bold] {
        objects.push(stream(
            &format!(
                "<< /Length {} /Length1 {} /Filter /FlateDecode >>",
                font.compressed.len(),
                font.original_len
            ),
            &font.compressed,
        ));
    }
    objects.push(format!("<< /Title {} /Producer (herald) >>", literal(title)).into_bytes());

    let size: usize = objects.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(size + 1024);
    out.extend_from_slice(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n");
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        let _ = writeln!(table, "{offset:010} 00000 n ");
    }
    let _ = write!(
        table,
        "trailer\n<< /Size {} /Root 1 0 R /Info {} 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1,
        objects.len()
    );
    out.extend_from_slice(table.as_bytes());
    out
}

fn stream(dictionary: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dictionary.len() + data.len() + 32);
    out.extend_from_slice(dictionary.as_bytes());
    out.extend_from_slice(b"\nstream\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\nendstream");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::summary::{EventRecord, SessionRecord, summarize};

    #[test]
    fn escapes_pdf_string_syntax_and_encodes_latin_1() {
        assert_eq!(literal("a(b)c\\"), "(a\\(b\\)c\\\\)");
        assert_eq!(literal("Zoë"), "(Zo\\353)");
        assert_eq!(literal("日本"), "(??)");
    }

    #[test]
    fn renders_a_well_formed_document() {
        let session = SessionRecord {
            id: "abc".into(),
            learner_name: Some("Ada (7)".into()),
            subject: Some("Fractions".into()),
            started_at_ms: 0,
            completed_at_ms: Some(90_000),
        };
        let summary = summarize(
            &session,
            &[EventRecord {
                kind: "hint".into(),
                correct: None,
            }],
            0,
        );
        let pdf = render(&summary);
        assert!(pdf.starts_with(b"%PDF-1.4"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        let find = |needle: &[u8]| pdf.windows(needle.len()).rposition(|w| w == needle);
        assert!(find(b"/FontFile2").is_some());
        // Every xref offset points at its object.
        let tail = String::from_utf8_lossy(&pdf[find(b"startxref\n").unwrap()..]).to_string();
        let xref_at: usize = tail.lines().nth(1).unwrap().parse().unwrap();
        let table = String::from_utf8_lossy(&pdf[xref_at..]).to_string();
        for (i, line) in table.lines().skip(3).take(11).enumerate() {
            let offset: usize = line[..10].parse().unwrap();
            assert!(
                pdf[offset..].starts_with(format!("{} 0 obj", i + 1).as_bytes()),
                "object {}",
                i + 1
            );
        }
    }
}
