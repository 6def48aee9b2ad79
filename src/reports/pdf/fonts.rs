//! The embedded Go fonts: read once per process, subset per document to the glyphs its page
//! uses (`subsetter`), and written as Type 0 fonts over CIDFontType2 programs with a
//! ToUnicode map, so the text stays selectable and searchable. A subset once made is kept.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Filter, Name, Pdf, Rect, Ref, Str};
use subsetter::GlyphRemapper;

const REGULAR_TTF: &[u8] = include_bytes!("../../../assets/fonts/Go-Regular.ttf");
const BOLD_TTF: &[u8] = include_bytes!("../../../assets/fonts/Go-Bold.ttf");

/// What is read from a font once per process.
pub(super) struct Face {
    name: &'static str,
    data: &'static [u8],
    face: ttf_parser::Face<'static>,
    units: f32,
    /// The glyph and advance of each ASCII character, looked up once: most of a report's
    /// text is ASCII, and every word is measured to fit before it is drawn.
    ascii: [(Option<u16>, f32); 128],
}

impl Face {
    fn load(name: &'static str, data: &'static [u8]) -> Self {
        let face = ttf_parser::Face::parse(data, 0).expect("the embedded font parses");
        let units = f32::from(face.units_per_em());
        let mut loaded = Self {
            name,
            data,
            face,
            units,
            ascii: [(None, 0.0); 128],
        };
        for code in 0..128u8 {
            let glyph = loaded.face.glyph_index(char::from(code)).map(|g| g.0);
            loaded.ascii[usize::from(code)] = (glyph, loaded.advance(glyph.unwrap_or(0)));
        }
        loaded
    }

    /// The glyph of `c`, if the font has one.
    pub(super) fn glyph(&self, c: char) -> Option<u16> {
        match self.ascii.get(c as usize) {
            Some((glyph, _)) => *glyph,
            None => self.face.glyph_index(c).map(|g| g.0),
        }
    }

    /// The advance of `c` (of the replacement box when the font lacks it), in 1/1000 em.
    pub(super) fn char_advance(&self, c: char) -> f32 {
        match self.ascii.get(c as usize) {
            Some((_, advance)) => *advance,
            None => self.advance(self.glyph(c).unwrap_or(0)),
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
pub(super) enum Weight {
    Regular = 0,
    Bold = 1,
}

impl Weight {
    pub(super) fn face(self) -> &'static Face {
        &faces()[self as usize]
    }

    /// The font's resource name on the page.
    pub(super) fn resource(self) -> Name<'static> {
        [Name(b"F1"), Name(b"F2")][self as usize]
    }
}

/// The glyphs one font has drawn in this document: their new ids in the subset, and the text
/// each stands for.
#[derive(Default)]
pub(super) struct Used {
    pub(super) remapper: GlyphRemapper,
    pub(super) text: BTreeMap<u16, char>,
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
pub(super) fn write_font(
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
