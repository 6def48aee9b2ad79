//! The page being drawn: text in the embedded fonts (each glyph recorded for its font's
//! subset), lines, shaded boxes and tables, and the marks the chart is drawn with.

use pdf_writer::{Content, Str};

use super::fonts::{Used, Weight};

/// The page being drawn, and what its text needs from each font.
pub(super) struct Page {
    pub(super) content: Content,
    pub(super) used: [Used; 2],
}

impl Page {
    pub(super) fn new() -> Self {
        Self {
            content: Content::new(),
            used: Default::default(),
        }
    }

    /// The glyph of `c` in `weight` (the replacement box, glyph 0, when the font lacks it),
    /// remapped into the subset.
    pub(super) fn glyph(&mut self, weight: Weight, c: char) -> u16 {
        let (glyph, stands_for) = match weight.face().glyph(c) {
            Some(g) => (g, c),
            None => (0, char::REPLACEMENT_CHARACTER),
        };
        let used = &mut self.used[weight as usize];
        let new = used.remapper.remap(glyph);
        used.text.entry(new).or_insert(stands_for);
        new
    }

    /// The width of `text` at `size`, in points.
    pub(super) fn width(weight: Weight, size: f32, text: &str) -> f32 {
        let face = weight.face();
        text.chars().map(|c| face.char_advance(c)).sum::<f32>() * size / 1000.0
    }

    /// `text` cut to fit `max` points, with an ellipsis when it was cut.
    pub(super) fn fit(weight: Weight, size: f32, text: &str, max: f32) -> String {
        if Self::width(weight, size, text) <= max {
            return text.to_owned();
        }
        let ellipsis = Self::width(weight, size, "…");
        let mut out = String::new();
        let mut used = 0.0;
        let face = weight.face();
        for c in text.chars() {
            let w = face.char_advance(c) * size / 1000.0;
            if used + w + ellipsis > max {
                break;
            }
            used += w;
            out.push(c);
        }
        out.push('…');
        out
    }

    pub(super) fn text(&mut self, weight: Weight, size: f32, x: f32, y: f32, text: &str) {
        let mut encoded = Vec::with_capacity(text.len() * 2);
        for c in text.chars().filter(|c| !c.is_control()) {
            encoded.extend_from_slice(&self.glyph(weight, c).to_be_bytes());
        }
        self.content
            .begin_text()
            .set_font(weight.resource(), size)
            .next_line(x, y)
            .show(Str(&encoded))
            .end_text();
    }

    pub(super) fn line(&mut self, (x1, y1): (f32, f32), (x2, y2): (f32, f32)) {
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
    pub(super) fn table(
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

    pub(super) fn dot(&mut self, x: f32, y: f32, r: f32) {
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

    pub(super) fn cross(&mut self, x: f32, y: f32, r: f32) {
        self.content.save_state().set_line_width(1.2);
        self.line((x - r, y - r), (x + r, y + r));
        self.line((x - r, y + r), (x + r, y - r));
        self.content.restore_state();
    }
}
