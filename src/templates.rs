//! The subject, text and HTML of each email, as minijinja templates: shipped in the binary
//! (`templates/email/`), any of them replaceable by a file of the same name in
//! `EMAIL_TEMPLATES_DIR`. HTML templates escape every value (auto-escaping by the `.html`
//! name); an unknown variable is an error, and every template is parsed and rendered once
//! with sample values at start, so a broken one stops the start naming its file and line.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::reports::SessionSummary;
use crate::reports::pdf::{self, LABELS_FILE, Labels};
use crate::reports::week::{Digest, display_name};

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Every template, with the text it ships with.
const SHIPPED: [(&str, &str); 8] = [
    (
        "layout.html",
        include_str!("../templates/email/layout.html"),
    ),
    (
        "link_page.html",
        include_str!("../templates/email/link_page.html"),
    ),
    (
        "session_report.subject.txt",
        include_str!("../templates/email/session_report.subject.txt"),
    ),
    (
        "session_report.txt",
        include_str!("../templates/email/session_report.txt"),
    ),
    (
        "session_report.html",
        include_str!("../templates/email/session_report.html"),
    ),
    (
        "weekly_digest.subject.txt",
        include_str!("../templates/email/weekly_digest.subject.txt"),
    ),
    (
        "weekly_digest.txt",
        include_str!("../templates/email/weekly_digest.txt"),
    ),
    (
        "weekly_digest.html",
        include_str!("../templates/email/weekly_digest.html"),
    ),
];

/// The email templates in force, with the brand they sign with and the words of the
/// report's PDF.
pub struct Templates {
    env: Environment<'static>,
    brand: String,
    footer_address: String,
    pdf_labels: Labels,
    /// A language's own templates (`EMAIL_TEMPLATES_DIR/pl/`), each over these.
    locales: std::collections::BTreeMap<String, Templates>,
    /// The language these are of, for a language's own; none for the deployment's.
    language: Option<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("brand", &self.brand)
            .finish_non_exhaustive()
    }
}

/// The links every email carries: where to unsubscribe from its type, and the page where a
/// recipient sees and changes everything they receive.
#[derive(Clone, Copy)]
pub struct Links<'a> {
    pub unsubscribe: &'a str,
    pub preferences: &'a str,
}

/// Which page an email's link opens (see `templates/email/link_page.html`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    UnsubscribeConfirm,
    Unsubscribed,
    TryAgain,
    Preferences,
    PreferencesSaved,
    OutOfDate,
    InvalidLink,
    AlteredLink,
}

impl PageKind {
    const ALL: [Self; 8] = [
        Self::UnsubscribeConfirm,
        Self::Unsubscribed,
        Self::TryAgain,
        Self::Preferences,
        Self::PreferencesSaved,
        Self::OutOfDate,
        Self::InvalidLink,
        Self::AlteredLink,
    ];
}

/// What a page an email's link opens shows; every value the template may name, blank where
/// the page has none.
#[derive(Debug, Clone, Serialize)]
pub struct LinkPage {
    pub page: PageKind,
    /// What an unsubscribe link stops: `weekly_digest`, `session_reports` or `all`.
    pub what: &'static str,
    /// Where the page's form posts (relative to the page).
    pub action: String,
    /// The preference page, relative to an unsubscribe page.
    pub preferences_url: String,
    /// The recipient's address, masked.
    pub masked: String,
    pub nonce: String,
    pub session_reports: bool,
    pub weekly_digest: bool,
    /// `bounced` or `complained` when the address is suppressed.
    pub suppressed: Option<String>,
}

impl LinkPage {
    /// A page showing `page` and nothing else.
    pub fn bare(page: PageKind) -> Self {
        Self {
            page,
            what: "all",
            action: String::new(),
            preferences_url: String::new(),
            masked: String::new(),
            nonce: String::new(),
            session_reports: false,
            weekly_digest: false,
            suppressed: None,
        }
    }
}

#[derive(Serialize)]
struct PageContext<'a> {
    #[serde(flatten)]
    page: &'a LinkPage,
    brand: &'a str,
}

/// A row of the report's table.
#[derive(Serialize)]
struct Row {
    label: &'static str,
    value: String,
}

#[derive(Serialize)]
struct ReportContext<'a> {
    learner: String,
    subject: String,
    rows: Vec<Row>,
    /// The numbers of `rows`, for a template that words them itself (in another language).
    duration_seconds: i64,
    steps: i64,
    hints_used: i64,
    answers_correct: i64,
    answers_total: i64,
    /// A whole percentage; none before any answer.
    accuracy: Option<i64>,
    unsubscribe_url: &'a str,
    preferences_url: &'a str,
    brand: &'a str,
    footer_address: &'a str,
    /// The language of the words (`en`, `pl`): the layout's `lang`.
    lang: &'a str,
}

#[derive(Serialize)]
struct DigestContext<'a> {
    #[serde(flatten)]
    digest: &'a Digest,
    unsubscribe_url: &'a str,
    preferences_url: &'a str,
    brand: &'a str,
    footer_address: &'a str,
    lang: &'a str,
}

fn minutes(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} seconds"),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

/// A subject as one line: every run of white space (line breaks included) a single space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Each problem once, in the order first found: a file of the deployment's at fault is
/// found again under every language that keeps it.
fn once_each(problems: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    problems
        .into_iter()
        .filter(|problem| seen.insert(problem.clone()))
        .collect()
}

/// The subdirectories of `dir` named by a language tag in its usual case (`pl`, `pt-BR`):
/// each holds a language's own templates. Hidden entries (a mounted ConfigMap's `..data`)
/// are left alone; any other subdirectory is a problem, as a misspelt file is.
fn locale_dirs(dir: &Path, problems: &mut Vec<String>) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, std::path::PathBuf)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        match crate::language::tag(&name) {
            Some(tag) if tag == name => found.push((tag, entry.path())),
            Some(tag) => problems.push(format!(
                "EMAIL_TEMPLATES_DIR: {}: name a language's directory as its tag is written: {tag}",
                entry.path().display()
            )),
            None => problems.push(format!(
                "EMAIL_TEMPLATES_DIR: {}: a directory here holds a language's templates and is \
                 named by its tag (pl, pt-BR)",
                entry.path().display()
            )),
        }
    }
    found.sort();
    found
}

/// The files in `dir` that look like templates (`.html`, `.txt`, `.json`) but replace none: a
/// misspelt name would otherwise leave the shipped template in use without a word. Hidden
/// entries (a mounted ConfigMap's `..data`) and other files are left alone.
fn strays(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            !name.starts_with('.')
                && (name.ends_with(".html") || name.ends_with(".txt") || name.ends_with(".json"))
                && !SHIPPED.iter().any(|(shipped, _)| shipped == name)
                && name != LABELS_FILE
        })
        .collect();
    found.sort();
    let names: Vec<&str> = Templates::files().collect();
    found
        .into_iter()
        .map(|name| {
            format!(
                "EMAIL_TEMPLATES_DIR: {}: replaces no template (their names: {})",
                dir.join(name).display(),
                names.join(", ")
            )
        })
        .collect()
}

impl Templates {
    /// The shipped templates, each replaced by the file of its name in `dir` when there is
    /// one; every problem found, one line each, naming the file and line.
    pub fn load(
        dir: Option<&Path>,
        brand: &str,
        footer_address: &str,
    ) -> Result<Self, Vec<String>> {
        let Some(dir) = dir else {
            return Self::load_layers(&[], brand, footer_address);
        };
        let mut problems = Vec::new();
        let mut locales = std::collections::BTreeMap::new();
        for (tag, sub) in locale_dirs(dir, &mut problems) {
            match Self::load_layers(&[dir, &sub], brand, footer_address) {
                Ok(mut templates) => {
                    templates.language = Some(tag.clone());
                    // A language's directory is in that language, whatever its words say.
                    templates.pdf_labels = templates.pdf_labels.in_language(&tag);
                    locales.insert(tag, templates);
                }
                Err(found) => problems.extend(found),
            }
        }
        match Self::load_layers(&[dir], brand, footer_address) {
            Ok(mut templates) if problems.is_empty() => {
                templates.locales = locales;
                Ok(templates)
            }
            Ok(_) => Err(once_each(problems)),
            Err(mut found) => {
                found.extend(problems);
                Err(once_each(found))
            }
        }
    }

    /// The templates a recipient of `locale` (a language tag) reads: its language's own when
    /// the deployment has them (`pt-BR`'s, else `pt`'s), else the deployment's.
    pub fn for_locale(&self, locale: Option<&str>) -> &Self {
        let Some(locale) = locale else {
            return self;
        };
        let language = locale.split('-').next().unwrap_or(locale);
        self.locales
            .get(locale)
            .or_else(|| self.locales.get(language))
            .unwrap_or(self)
    }

    /// The language of a language's own templates (`pl` for `EMAIL_TEMPLATES_DIR/pl/`); none
    /// for the deployment's.
    pub fn language(&self) -> Option<&str> {
        self.language.as_deref()
    }

    /// The languages the deployment has templates of.
    pub fn locales(&self) -> impl Iterator<Item = &str> {
        self.locales.keys().map(String::as_str)
    }

    /// The shipped templates, each replaced by the file of its name in the last of `layers`
    /// that has one.
    fn load_layers(
        layers: &[&Path],
        brand: &str,
        footer_address: &str,
    ) -> Result<Self, Vec<String>> {
        let found_in = |name: &str| {
            layers
                .iter()
                .rev()
                .map(|d| d.join(name))
                .find(|p| p.exists())
        };
        let dir = layers.last().copied();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // HTML escaping of the five characters that matter, leaving `/` alone so links
        // read as written.
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == minijinja::AutoEscape::Html
                && !value.is_safe()
                && let Some(text) = value.as_str()
            {
                return out.write_str(&escape(text)).map_err(minijinja::Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        let mut problems = dir.map(strays).unwrap_or_default();
        for (name, shipped) in SHIPPED {
            let source = match found_in(name) {
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(err) => {
                        problems.push(format!("EMAIL_TEMPLATES_DIR: {}: {err}", path.display()));
                        continue;
                    }
                },
                None => shipped.to_owned(),
            };
            if let Err(err) = env.add_template_owned(name, source) {
                problems.push(describe(layers, &err));
            }
        }
        // The PDF's words stand apart from the templates: their problems are told after
        // the templates have been tried.
        let mut label_problems = Vec::new();
        // Each layer's words over the one before: a language's file may name only the
        // words it changes.
        let mut pdf_labels = Labels::shipped();
        for path in layers
            .iter()
            .map(|d| d.join(LABELS_FILE))
            .filter(|p| p.exists())
        {
            let read = std::fs::read_to_string(&path).map_err(|err| vec![err.to_string()]);
            match read.and_then(|text| Labels::parse(&text, pdf_labels.clone())) {
                Ok(labels) => pdf_labels = labels,
                Err(found) => {
                    label_problems.extend(found.into_iter().map(|problem| {
                        format!("EMAIL_TEMPLATES_DIR: {}: {problem}", path.display())
                    }));
                }
            }
        }
        let templates = Self {
            env,
            brand: brand.to_owned(),
            footer_address: footer_address.to_owned(),
            pdf_labels,
            locales: Default::default(),
            language: None,
        };
        if problems.is_empty() {
            // Rendered once with sample values: a variable the code does not provide is
            // found now, not at the first send.
            let url = Links {
                unsubscribe: "https://herald.example.org/u",
                preferences: "https://herald.example.org/p",
            };
            // With a learner, subject and answers, and without (a template's other branches).
            let answer = |correct: bool| crate::reports::EventRecord {
                kind: "answer".into(),
                correct: Some(correct),
                at_ms: 30_000,
            };
            let answers = [answer(true), answer(false)];
            for (learner_name, subject, events) in [
                (Some("Ada"), Some("Fractions"), &answers[..]),
                (None, None, &[]),
            ] {
                let summary = crate::reports::summarize(
                    &crate::reports::SessionRecord {
                        id: "00000000-0000-4000-8000-000000000000".into(),
                        learner_name: learner_name.map(str::to_owned),
                        subject: subject.map(str::to_owned),
                        started_at_ms: 0,
                        completed_at_ms: Some(60_000),
                    },
                    events,
                    0,
                );
                if let Err(err) = templates.try_session_report(&summary, url) {
                    problems.push(describe(layers, &err));
                    break;
                }
            }
            let week = chrono::NaiveDate::from_ymd_opt(2026, 11, 9).expect("a date");
            let start = crate::reports::week::day_start_ms(week, chrono_tz::UTC);
            let sample: Vec<_> = (0..=crate::reports::week::LEARNERS_SHOWN)
                .map(|n| crate::reports::week::SessionFact {
                    learner: Some(format!("Ada {n}")),
                    subject: Some("Fractions".into()),
                    started_at_ms: start,
                    completed_at_ms: start + 600_000,
                    answers_total: 2,
                    answers_correct: 1,
                })
                .collect();
            // One learner, and more than have a section each (the line for the rest).
            for learners in [1, sample.len()] {
                let digest =
                    crate::reports::week::digest(&sample[..learners], week, chrono_tz::UTC)
                        .expect("the sample has a session");
                if let Err(err) = templates.try_weekly_digest(&digest, url) {
                    problems.push(describe(layers, &err));
                    break;
                }
            }
            // Every page, with the values it is shown with (a suppressed address's form too).
            for page in PageKind::ALL {
                let sample = LinkPage {
                    action: "v1.x.y".into(),
                    preferences_url: "../preferences/page/v1.x.y".into(),
                    masked: "pa***@example.com".into(),
                    nonce: "0".into(),
                    session_reports: true,
                    suppressed: Some("bounced".into()),
                    ..LinkPage::bare(page)
                };
                if let Err(err) = templates.try_link_page(&sample) {
                    problems.push(describe(layers, &err));
                    break;
                }
            }
        }
        problems.extend(label_problems);
        if problems.is_empty() {
            Ok(templates)
        } else {
            Err(problems)
        }
    }

    /// The name of every file a deployment may replace.
    pub fn files() -> impl Iterator<Item = &'static str> {
        Self::shipped_files().map(|(name, _)| name)
    }

    /// Every file a deployment may replace, with the text it ships with.
    pub fn shipped_files() -> impl Iterator<Item = (&'static str, &'static str)> {
        SHIPPED
            .iter()
            .copied()
            .chain([(LABELS_FILE, pdf::SHIPPED_LABELS)])
    }

    /// The shipped templates alone.
    pub fn shipped(brand: &str, footer_address: &str) -> Self {
        Self::load(None, brand, footer_address).expect("the shipped templates are valid")
    }

    /// The page an email's link opens, as HTML.
    pub fn link_page(&self, page: &LinkPage) -> Result<String, String> {
        self.try_link_page(page)
            .map_err(|e| format!("rendering a link's page: {e:#}"))
    }

    fn try_link_page(&self, page: &LinkPage) -> Result<String, minijinja::Error> {
        self.env
            .get_template("link_page.html")?
            .render(PageContext {
                page,
                brand: &self.brand,
            })
    }

    /// The report of `summary` as a PDF, its times in `zone` (the recipient's), in the
    /// words of `session_report.pdf.json`.
    pub fn report_pdf(&self, summary: &SessionSummary, zone: chrono_tz::Tz) -> Vec<u8> {
        pdf::render(summary, zone, &self.pdf_labels)
    }

    fn render(&self, kind: &str, context: &impl Serialize) -> Result<Rendered, minijinja::Error> {
        let part = |ext: &str| {
            self.env
                .get_template(&format!("{kind}.{ext}"))
                .and_then(|t| t.render(context))
        };
        Ok(Rendered {
            subject: one_line(&part("subject.txt")?),
            text: part("txt")?,
            html: part("html")?,
        })
    }

    fn try_session_report(
        &self,
        summary: &SessionSummary,
        links: Links<'_>,
    ) -> Result<Rendered, minijinja::Error> {
        let learner = summary
            .learner_name
            .as_deref()
            .map(display_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Your learner".to_owned());
        // Empty when the session has none: the templates leave the subject out.
        let subject = summary
            .subject
            .as_deref()
            .map(display_name)
            .unwrap_or_default();
        let accuracy = summary.accuracy.map_or_else(
            || "no answers yet".to_owned(),
            |a| format!("{:.0}%", a * 100.0),
        );
        let rows = vec![
            Row {
                label: "Time spent",
                value: minutes(summary.duration_seconds),
            },
            Row {
                label: "Steps worked through",
                value: summary.steps.to_string(),
            },
            Row {
                label: "Hints used",
                value: summary.hints_used.to_string(),
            },
            Row {
                label: "Answers correct",
                value: format!("{} of {}", summary.answers_correct, summary.answers_total),
            },
            Row {
                label: "Accuracy",
                value: accuracy,
            },
        ];
        self.render(
            "session_report",
            &ReportContext {
                learner,
                subject,
                rows,
                duration_seconds: summary.duration_seconds,
                steps: summary.steps,
                hints_used: summary.hints_used,
                answers_correct: summary.answers_correct,
                answers_total: summary.answers_total,
                accuracy: summary.accuracy.map(|a| (a * 100.0).round() as i64),
                unsubscribe_url: links.unsubscribe,
                preferences_url: links.preferences,
                brand: &self.brand,
                footer_address: &self.footer_address,
                lang: self.pdf_labels.language(),
            },
        )
    }

    fn try_weekly_digest(
        &self,
        digest: &Digest,
        links: Links<'_>,
    ) -> Result<Rendered, minijinja::Error> {
        self.render(
            "weekly_digest",
            &DigestContext {
                digest,
                unsubscribe_url: links.unsubscribe,
                preferences_url: links.preferences,
                brand: &self.brand,
                footer_address: &self.footer_address,
                lang: self.pdf_labels.language(),
            },
        )
    }

    /// The report email of a session.
    pub fn session_report(
        &self,
        summary: &SessionSummary,
        links: Links<'_>,
    ) -> Result<Rendered, String> {
        self.try_session_report(summary, links)
            .map_err(|e| format!("rendering the session report: {e:#}"))
    }

    /// A recipient's weekly digest.
    pub fn weekly_digest(&self, digest: &Digest, links: Links<'_>) -> Result<Rendered, String> {
        self.try_weekly_digest(digest, links)
            .map_err(|e| format!("rendering the weekly digest: {e:#}"))
    }
}

/// A template problem as one configuration line: where (file and line) and what.
fn describe(layers: &[&Path], err: &minijinja::Error) -> String {
    let name = err.name().unwrap_or("a template");
    let file = match layers
        .iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.exists())
    {
        Some(path) => path.display().to_string(),
        None => format!("{name} (shipped)"),
    };
    let line = err.line().map_or_else(String::new, |l| format!(":{l}"));
    let what = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    // The words of the template the problem is in (`{{ nickname }}` names the unknown
    // variable), when the parser or the renderer says where.
    let at = err
        .range()
        .zip(err.template_source())
        .and_then(|(range, source)| source.get(range))
        .map(str::trim)
        .filter(|words| !words.is_empty())
        .map_or_else(String::new, |words| format!(" at `{words}`"));
    format!("EMAIL_TEMPLATES_DIR: {file}{line}: {what}{at}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_in_html() {
        assert_eq!(
            escape("<b>\"Tom & Jerry\"</b>"),
            "&lt;b&gt;&quot;Tom &amp; Jerry&quot;&lt;/b&gt;"
        );
    }

    const LINKS: Links<'static> = Links {
        unsubscribe: "https://h/u",
        preferences: "https://h/p",
    };

    fn summary(name: &str) -> SessionSummary {
        crate::reports::summarize(
            &crate::reports::SessionRecord {
                id: "s".into(),
                learner_name: Some(name.into()),
                subject: Some("Fractions".into()),
                started_at_ms: 0,
                completed_at_ms: Some(754_000),
            },
            &[],
            0,
        )
    }

    #[test]
    fn hostile_names_are_escaped_in_html_and_kept_to_one_line_in_the_subject() {
        let templates = Templates::shipped("Acme Learning", "1 Main St, Springfield");
        let shown = templates
            .session_report(&summary("<script>alert('x')</script>\n\"Bo\""), LINKS)
            .unwrap();
        assert!(!shown.html.contains("<script>"), "{}", shown.html);
        assert!(shown.html.contains("&lt;script&gt;"));
        assert!(!shown.subject.contains('\n'));
        assert!(shown.html.contains("Acme Learning, 1 Main St, Springfield"));
        assert!(shown.text.contains("1 Main St, Springfield"));
        let long = templates
            .session_report(&summary(&"x".repeat(1000)), LINKS)
            .unwrap();
        assert!(long.subject.len() < 200 && long.html.len() < 10_000);
    }

    #[test]
    fn a_session_without_a_subject_or_name_reads_as_a_session() {
        let templates = Templates::shipped("herald", "");
        let bare = crate::reports::summarize(
            &crate::reports::SessionRecord {
                id: "s".into(),
                learner_name: None,
                subject: None,
                started_at_ms: 0,
                completed_at_ms: Some(60_000),
            },
            &[],
            0,
        );
        let shown = templates.session_report(&bare, LINKS).unwrap();
        assert_eq!(shown.subject, "Your learner's session report");
        assert!(
            shown.text.starts_with("Your learner finished a session.\n"),
            "{}",
            shown.text
        );
        assert!(shown.html.contains("Your learner finished a session.</p>"));
        let named = templates.session_report(&summary("Ada"), LINKS).unwrap();
        assert_eq!(named.subject, "Ada's session report: Fractions");
        assert!(
            named
                .text
                .starts_with("Ada finished a session on Fractions.\n")
        );
    }

    /// The text of an email's hidden preheader, up to its filler, and the element it is in.
    fn preheader(html: &str) -> (&str, &str) {
        let start = html.find("<div class=\"preheader\"").expect("a preheader");
        let element = &html[start..];
        let text = &element[element.find('>').unwrap() + 1..];
        (element, &text[..text.find("&zwnj;").unwrap()])
    }

    /// The line an inbox shows after the subject is the email's own summary, not its first
    /// words (the brand and the heading the subject already says), and the reader of the
    /// email never sees it.
    #[test]
    fn the_inbox_preview_is_the_emails_summary() {
        let templates = Templates::shipped("Acme Learning", "");
        let report = templates.session_report(&summary("Ada"), LINKS).unwrap();
        let (element, text) = preheader(&report.html);
        assert_eq!(
            text,
            "Time spent: 12 min 34 s &middot; Steps worked through: 0 &middot; Hints used: 0 \
             &middot; Answers correct: 0 of 0 &middot; Accuracy: no answers yet"
        );
        assert!(element.starts_with("<div class=\"preheader\" style=\"display:none;"));
        assert!(
            report.html.find("preheader").unwrap() < report.html.find("Acme Learning").unwrap()
        );

        let week = chrono::NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
        let start = crate::reports::week::day_start_ms(week, chrono_tz::UTC);
        let fact = |learner: &str, minutes: i64, correct: i64| crate::reports::week::SessionFact {
            learner: Some(learner.into()),
            subject: None,
            started_at_ms: start,
            completed_at_ms: start + minutes * 60_000,
            answers_total: 4,
            answers_correct: correct,
        };
        let facts = [
            fact("Ada", 30, 3),
            fact("Ada", 12, 4),
            fact("<b>Bo</b>", 10, 2),
            fact("Cy", 5, 1),
            fact("Di", 1, 1),
        ];
        let digest = crate::reports::week::digest(&facts, week, chrono_tz::UTC).unwrap();
        let shown = templates.weekly_digest(&digest, LINKS).unwrap();
        // The first three learners, in the order of their sections (and of the subject).
        assert_eq!(
            preheader(&shown.html).1,
            "&lt;b&gt;Bo&lt;/b&gt;: 1 session, 10 min, 50% right &middot; Ada: 2 sessions, \
             42 min, 88% right &middot; Cy: 1 session, 5 min, 25% right"
        );

        // A deployment's own report made before the block has none, and its inbox preview
        // stays its first words rather than blank filler.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("session_report.html"),
            "{% extends \"layout.html\" %}{% block content %}<tr><td>{{ learner }}</td></tr>\
             {% endblock %}",
        )
        .unwrap();
        let own = Templates::load(Some(dir.path()), "herald", "").unwrap();
        let html = own.session_report(&summary("Ada"), LINKS).unwrap().html;
        assert!(
            !html.contains("preheader") && !html.contains("&zwnj;"),
            "{html}"
        );
    }

    /// Gmail shows an email's HTML only up to 102 kB and clips the rest, the footer with its
    /// unsubscribe link among it.
    const GMAIL_CLIPS_PAST: usize = 102 * 1024;

    #[test]
    fn a_digest_for_a_whole_class_is_read_whole_with_its_unsubscribe_link() {
        let templates = Templates::shipped("Acme Learning", "1 Main St, Springfield");
        let week = chrono::NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
        let start = crate::reports::week::day_start_ms(week, chrono_tz::UTC);
        let facts: Vec<_> = (0..200i64)
            .map(|n| crate::reports::week::SessionFact {
                learner: Some(format!("{} {n}", "Learner with a long name".repeat(2))),
                subject: Some("Fractions".into()),
                started_at_ms: start + n * 2_400_000,
                completed_at_ms: start + n * 2_400_000 + (n + 1) * 60_000,
                answers_total: 2,
                answers_correct: 1,
            })
            .collect();
        let digest = crate::reports::week::digest(&facts, week, chrono_tz::UTC).unwrap();
        let shown = templates.weekly_digest(&digest, LINKS).unwrap();
        assert!(
            shown.html.len() < GMAIL_CLIPS_PAST / 2,
            "{} bytes of HTML",
            shown.html.len()
        );
        assert!(shown.html.contains("href=\"https://h/u\""));
        assert!(shown.html.contains("And 190 more learners: 190 sessions"));
        assert!(
            shown.text.contains("And 190 more learners: 190 sessions, "),
            "{}",
            shown.text
        );
        assert!(shown.text.contains("https://h/u") && shown.text.len() < 20_000);
        // The inbox says whose week it was: the first two learners by name, and how many more.
        assert_eq!(
            shown.subject,
            "Weekly learning digest for Learner with a long nameLearner with a long name 190, \
             Learner with a long nameLearner with a long name 191 and 198 more: 200 sessions \
             (week of 2026-11-09)"
        );
        let two = crate::reports::week::digest(&facts[..2], week, chrono_tz::UTC).unwrap();
        let two = templates.weekly_digest(&two, LINKS).unwrap().subject;
        assert_eq!(
            two,
            "Weekly learning digest for Learner with a long nameLearner with a long name 0 and \
             Learner with a long nameLearner with a long name 1: 2 sessions (week of 2026-11-09)"
        );
        // The week's most active have their sections.
        assert!(shown.text.contains("Learner with a long name 199"));
        assert!(!shown.text.contains("Learner with a long name 189\n"));
    }

    #[test]
    fn an_override_is_checked_on_the_line_for_learners_beyond_the_sections_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("weekly_digest.txt"),
            "{% for l in learners %}{{ l.name }}\n{% endfor %}\
             {% if more_learners %}+{{ more_learners.children }}{% endif %}\n",
        )
        .unwrap();
        let problems = Templates::load(Some(dir.path()), "herald", "").unwrap_err();
        assert!(
            problems[0]
                .ends_with("weekly_digest.txt:2: undefined value at `more_learners.children`"),
            "{problems:?}"
        );
    }

    /// The templates with `text` as the override of the report's text part.
    fn with_report_text(text: &str) -> Result<Templates, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("session_report.txt"), text).unwrap();
        Templates::load(Some(dir.path()), "herald", "")
    }

    #[test]
    fn an_override_is_checked_on_the_branch_for_a_session_without_a_subject_too() {
        let problems =
            with_report_text("{% if subject %}{{ subject }}{% else %}{{ topic }}{% endif %}\n")
                .unwrap_err();
        assert!(
            problems[0].contains("session_report.txt:1") && problems[0].contains("undefined"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_override_is_checked_on_the_branch_for_a_session_with_answers_too() {
        let problems = with_report_text(
            "{% if answers_total %}{{ answers_correct }} {{ wrong_answers }}{% endif %}\n",
        )
        .unwrap_err();
        assert!(
            problems[0].contains("session_report.txt:1") && problems[0].contains("undefined"),
            "{problems:?}"
        );
    }

    /// The report's answers as a bar of table cells, right against wrong, with the numbers
    /// in words beside it (for a reader in black and white); none before any answer.
    #[test]
    fn the_report_shows_its_answers_as_a_bar() {
        let templates = Templates::shipped("herald", "");
        let session = crate::reports::SessionRecord {
            id: "s".into(),
            learner_name: Some("Ada".into()),
            subject: None,
            started_at_ms: 0,
            completed_at_ms: Some(60_000),
        };
        let answers = |right: usize, wrong: usize| {
            let events: Vec<_> = (0..right + wrong)
                .map(|n| crate::reports::EventRecord {
                    kind: "answer".into(),
                    correct: Some(n < right),
                    at_ms: 1_000,
                })
                .collect();
            let summary = crate::reports::summarize(&session, &events, 0);
            templates.session_report(&summary, LINKS).unwrap().html
        };
        let html = answers(3, 1);
        assert!(html.contains("<td width=\"75%\""), "{html}");
        assert!(html.contains("<td width=\"25%\""), "{html}");
        assert!(html.contains("3 right, 1 wrong"), "{html}");
        let all_right = answers(2, 0);
        assert!(
            all_right.contains("<td width=\"100%\" height=\"12\"")
                && all_right.contains("2 right, 0 wrong"),
            "{all_right}"
        );
        assert!(!all_right.contains("<td width=\"0%\""), "{all_right}");
        assert!(!answers(0, 0).contains("class=\"answers\""));
    }

    #[test]
    fn an_override_that_does_not_parse_or_names_an_unknown_variable_is_refused_with_its_line() {
        let problems = with_report_text("Hello\n{% if %}\n").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("session_report.txt:2"), "{problems:?}");

        let problems = with_report_text("Hi\n{{ learner }}\n{{ nickname }}\n").unwrap_err();
        assert!(
            problems[0].contains("session_report.txt:3: undefined value at `nickname`"),
            "{problems:?}"
        );

        let templates = with_report_text("Hi {{ learner }}, see {{ unsubscribe_url }}\n").unwrap();
        let shown = templates.session_report(&summary("Ada"), LINKS).unwrap();
        assert_eq!(shown.text, "Hi Ada, see https://h/u");
    }

    /// A deployment writing to parents in Polish words the report's rows, the digest's days
    /// and the PDF itself, from the numbers the templates get.
    #[test]
    fn every_word_of_both_emails_and_the_pdf_can_be_translated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("session_report.txt"),
            "{{ learner }}: {{ steps }} kroków, {{ answers_correct }} z {{ answers_total }} \
             poprawnych{% if accuracy is not none %} ({{ accuracy }}%){% endif %}, \
             {{ duration_seconds // 60 }} min\n{{ unsubscribe_url }}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("weekly_digest.txt"),
            "{% for l in learners %}{% for d in l.days %}\
             {{ ['pn', 'wt', 'śr', 'cz', 'pt', 'so', 'nd'][d.weekday - 1] }} {{ d.date }}\n\
             {% endfor %}{% endfor %}{{ unsubscribe_url }}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(LABELS_FILE),
            r#"{"title": "Raport z sesji", "answers_of": "{correct} z {total}"}"#,
        )
        .unwrap();
        let templates = Templates::load(Some(dir.path()), "herald", "").unwrap();
        let report = templates.session_report(&summary("Ada"), LINKS).unwrap();
        assert_eq!(
            report.text,
            "Ada: 0 kroków, 0 z 0 poprawnych, 12 min\nhttps://h/u"
        );
        assert_ne!(
            templates.report_pdf(&summary("Ada"), chrono_tz::UTC),
            Templates::shipped("herald", "").report_pdf(&summary("Ada"), chrono_tz::UTC),
            "the PDF takes the labels"
        );
        let week = chrono::NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
        let start = crate::reports::week::day_start_ms(week, chrono_tz::UTC);
        let facts = [crate::reports::week::SessionFact {
            learner: Some("Ada".into()),
            subject: None,
            started_at_ms: start,
            completed_at_ms: start + 600_000,
            answers_total: 0,
            answers_correct: 0,
        }];
        let digest = crate::reports::week::digest(&facts, week, chrono_tz::UTC).unwrap();
        let shown = templates.weekly_digest(&digest, LINKS).unwrap();
        assert!(
            shown.text.starts_with("pn 2026-11-09\nwt 2026-11-10\n")
                && shown.text.contains("nd 2026-11-15\n"),
            "{}",
            shown.text
        );

        std::fs::write(
            dir.path().join(LABELS_FILE),
            r#"{"title": "Raport", "tytul": "x", "date_format": "%Q"}"#,
        )
        .unwrap();
        let problems = Templates::load(Some(dir.path()), "herald", "").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .all(|p| p.starts_with("EMAIL_TEMPLATES_DIR: ") && p.contains(LABELS_FILE)),
            "{problems:?}"
        );
    }

    /// A deployment writing to parents in several languages: a directory per language tag,
    /// each file over the deployment's own; a recipient of a language it lacks reads the
    /// deployment's.
    #[test]
    fn a_language_directory_words_its_recipients_emails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("session_report.txt"), "Own {{ learner }}\n").unwrap();
        std::fs::create_dir(dir.path().join("pl")).unwrap();
        std::fs::write(
            dir.path().join("pl").join("session_report.txt"),
            "Polski {{ learner }}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pl").join(LABELS_FILE),
            r#"{"title": "Raport"}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let templates = Templates::load(Some(dir.path()), "herald", "").unwrap();
        assert_eq!(templates.locales().collect::<Vec<_>>(), ["pl"]);
        let text = |locale: Option<&str>| {
            templates
                .for_locale(locale)
                .session_report(&summary("Ada"), LINKS)
                .unwrap()
                .text
        };
        assert_eq!(text(None), "Own Ada");
        assert_eq!(text(Some("pl")), "Polski Ada");
        assert_eq!(
            text(Some("pl-PL")),
            "Polski Ada",
            "a region falls back to its language"
        );
        assert_eq!(text(Some("de")), "Own Ada");
        let polish = templates.for_locale(Some("pl"));
        assert_eq!(polish.pdf_labels.get("title", &[]), "Raport");
        assert_eq!(polish.pdf_labels.get("steps", &[]), "Steps worked through");
        // Each says the language it is in, to a screen reader: the email's `lang` and the
        // PDF's `/Lang`, the directory's tag for its own templates, else the labels' `en`.
        let has = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        for (templates, tag) in [(polish, "pl"), (&templates, "en")] {
            let html = templates
                .session_report(&summary("Ada"), LINKS)
                .unwrap()
                .html;
            assert!(html.contains(&format!("<html lang=\"{tag}\">")), "{html}");
            let pdf = templates.report_pdf(&summary("Ada"), chrono_tz::UTC);
            assert!(has(&pdf, format!("/Lang ({tag})").as_bytes()), "{tag}");
        }
        // The subject is the deployment's, as no Polish one is given.
        assert_eq!(
            polish
                .session_report(&summary("Ada"), LINKS)
                .unwrap()
                .subject,
            "Ada's session report: Fractions"
        );

        for bad in ["PL", "polish"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join(bad)).unwrap();
            let problems = Templates::load(Some(dir.path()), "herald", "").unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains(bad), "{problems:?}");
        }
        let broken = tempfile::tempdir().unwrap();
        std::fs::create_dir(broken.path().join("pl")).unwrap();
        std::fs::write(broken.path().join("session_report.txt"), "{% if %}").unwrap();
        let problems = Templates::load(Some(broken.path()), "herald", "").unwrap_err();
        assert_eq!(problems.len(), 1, "once, not again under pl/: {problems:?}");
        std::fs::remove_file(broken.path().join("session_report.txt")).unwrap();
        std::fs::write(
            broken.path().join("pl").join("weekly_digest.txt"),
            "{{ x }}",
        )
        .unwrap();
        let problems = Templates::load(Some(broken.path()), "herald", "").unwrap_err();
        assert!(
            problems[0].contains("pl/weekly_digest.txt:1: undefined value at `x`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_file_named_like_no_template_is_refused_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sesion_report.txt"), "Hi {{ learner }}\n").unwrap();
        for other in [
            "README.md",
            ".session_report.txt.swp",
            "session_report.html~",
        ] {
            std::fs::write(dir.path().join(other), "notes").unwrap();
        }
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let problems = Templates::load(Some(dir.path()), "herald", "").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("sesion_report.txt: replaces no template")
                && problems[0].contains("session_report.txt,"),
            "{problems:?}"
        );
        std::fs::remove_file(dir.path().join("sesion_report.txt")).unwrap();
        assert!(Templates::load(Some(dir.path()), "herald", "").is_ok());
    }
}
