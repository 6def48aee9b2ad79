//! The words of the report PDF, so a deployment that writes its emails in another language
//! writes its reports in it too: shipped in `templates/email/session_report.pdf.json`, and
//! any of them replaced by the same file in `EMAIL_TEMPLATES_DIR` (keys left out keep the
//! shipped words). A key the PDF does not have, a value that is not text, a placeholder its
//! label does not take, or a date format chrono cannot read is a configuration error. The
//! names of the days and months a date is written with are lists of their own, so a date
//! reads in the deployment's language too (`7 grudnia 2026`).

use chrono::format::{Fixed, Item, StrftimeItems};
use chrono::{Datelike, TimeZone};

/// Each label's key and the placeholders it takes.
const KEYS: [(&str, &[&str]); 32] = [
    ("language", &[]),
    ("title", &[]),
    ("started", &["when"]),
    ("date_format", &[]),
    ("learner", &[]),
    ("summary", &[]),
    ("status", &[]),
    ("completed", &[]),
    ("in_progress", &[]),
    ("time_spent", &[]),
    ("steps", &[]),
    ("hints", &[]),
    ("answers_correct", &[]),
    ("answers_of", &["correct", "total"]),
    ("accuracy", &[]),
    ("events", &[]),
    ("activity", &[]),
    ("kind", &[]),
    ("count", &[]),
    ("timeline", &[]),
    ("lane_steps", &[]),
    ("lane_hints", &[]),
    ("lane_answers", &[]),
    ("lane_other", &[]),
    ("right_answer", &[]),
    ("wrong_answer", &[]),
    ("session", &["id"]),
    ("document_title", &["learner"]),
    ("duration_hours", &["h", "m", "s"]),
    ("duration_minutes", &["m", "s"]),
    ("duration_seconds", &["s"]),
    ("percent", &["value"]),
];

/// The lists of names a date is written with (`date_format`'s `%A`, `%a`, `%B`, `%b`), and
/// how many names each holds: Monday first, January first.
const NAMES: [(&str, usize); 4] = [
    ("weekdays", 7),
    ("weekdays_short", 7),
    ("months", 12),
    ("months_short", 12),
];

/// The words of the report PDF, by key (see `templates/email/session_report.pdf.json`), and
/// the names of the days and months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    words: std::collections::BTreeMap<&'static str, String>,
    names: std::collections::BTreeMap<&'static str, Vec<String>>,
}

impl Labels {
    /// The shipped words.
    pub fn shipped() -> Self {
        let none = Self {
            words: Default::default(),
            names: Default::default(),
        };
        Self::parse(SHIPPED, none).expect("the shipped PDF labels are complete and valid")
    }

    /// `text` (a JSON object of labels) over `base`: every problem, one line each.
    pub fn parse(text: &str, base: Self) -> Result<Self, Vec<String>> {
        let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(object) => object,
            Err(err) => return Err(vec![format!("not a JSON object of labels: {err}")]),
        };
        let mut labels = base;
        let mut problems = Vec::new();
        for (key, value) in object {
            if let Some(&(known, count)) = NAMES.iter().find(|(k, _)| *k == key) {
                match names(&value, count) {
                    Some(names) => {
                        labels.names.insert(known, names);
                    }
                    None => problems.push(format!(
                        "`{key}` is not a list of {count} names, each a text that is not empty"
                    )),
                }
                continue;
            }
            let Some(&(known, takes)) = KEYS.iter().find(|(k, _)| *k == key) else {
                problems.push(format!(
                    "`{key}` is no label of the report PDF (they are: {}, {})",
                    KEYS.map(|(k, _)| k).join(", "),
                    NAMES.map(|(k, _)| k).join(", ")
                ));
                continue;
            };
            let Some(value) = value.as_str() else {
                problems.push(format!("`{key}` is not text"));
                continue;
            };
            if let Err(problem) = check(known, value, takes) {
                problems.push(problem);
                continue;
            }
            labels.words.insert(known, value.to_owned());
        }
        let missing = KEYS
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| !labels.words.contains_key(key));
        let missing_names = NAMES
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| !labels.names.contains_key(key));
        for key in missing.chain(missing_names) {
            problems.push(format!("`{key}` is missing"));
        }
        if problems.is_empty() {
            Ok(labels)
        } else {
            Err(problems)
        }
    }

    /// The language the words are in (a tag: `en`, `pl`), for a reader that speaks them.
    pub fn language(&self) -> &str {
        self.words.get("language").map_or("en", String::as_str)
    }

    /// The same words, said to be in `tag`'s language.
    pub fn in_language(mut self, tag: &str) -> Self {
        self.words.insert("language", tag.to_owned());
        self
    }

    /// The label of `key`, its placeholders filled from `values`.
    pub fn get(&self, key: &str, values: &[(&str, &str)]) -> String {
        let text = self.words.get(key).map_or("", String::as_str);
        if values.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}').map(|close| (&after[..close], close)) {
                Some((name, close)) if values.iter().any(|(n, _)| *n == name) => {
                    let (_, value) = values.iter().find(|(n, _)| *n == name).expect("found");
                    out.push_str(value);
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// `at` written by `date_format`, its days and months named by the lists.
    pub fn date<Tz: TimeZone>(&self, at: &chrono::DateTime<Tz>) -> String
    where
        Tz::Offset: std::fmt::Display,
    {
        let name = |list: &str, index: u32| -> Item<'static> {
            let name = self
                .names
                .get(list)
                .and_then(|names| names.get(index as usize));
            Item::OwnedLiteral(name.map_or("", String::as_str).into())
        };
        let (weekday, month) = (at.weekday().num_days_from_monday(), at.month0());
        let format = self.words.get("date_format").map_or("", String::as_str);
        let items = StrftimeItems::new(format).map(|item| match item {
            Item::Fixed(Fixed::LongWeekdayName) => name("weekdays", weekday),
            Item::Fixed(Fixed::ShortWeekdayName) => name("weekdays_short", weekday),
            Item::Fixed(Fixed::LongMonthName) => name("months", month),
            Item::Fixed(Fixed::ShortMonthName) => name("months_short", month),
            other => other,
        });
        at.format_with_items(items).to_string()
    }

    /// A length of time: "1 h 2 min 3 s", "2 min 3 s", "3 s", in the labels' words.
    pub fn duration(&self, seconds: i64) -> String {
        let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
        let (h, m, s) = (h.to_string(), m.to_string(), s.to_string());
        if seconds >= 3600 {
            self.get("duration_hours", &[("h", &h), ("m", &m), ("s", &s)])
        } else if seconds >= 60 {
            self.get("duration_minutes", &[("m", &m), ("s", &s)])
        } else {
            self.get("duration_seconds", &[("s", &s)])
        }
    }
}

/// A JSON list of exactly `count` texts, none empty.
fn names(value: &serde_json::Value, count: usize) -> Option<Vec<String>> {
    let list = value.as_array().filter(|list| list.len() == count)?;
    list.iter()
        .map(|name| {
            name.as_str()
                .filter(|n| !n.trim().is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// The placeholders of `value` are among `takes`; a date format is one chrono reads.
fn check(key: &str, value: &str, takes: &[&str]) -> Result<(), String> {
    if key == "language" {
        return match crate::language::tag(value) {
            Some(tag) if tag == value => Ok(()),
            _ => Err(format!(
                "`language`: `{value}` is not a language tag as it is written (en, pl, pt-BR)"
            )),
        };
    }
    if key == "date_format" {
        return if StrftimeItems::new(value).any(|item| item == Item::Error) {
            Err(format!(
                "`date_format`: `{value}` is not a date format (strftime: %d.%m.%Y %H:%M %Z)"
            ))
        } else {
            Ok(())
        };
    }
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{key}`: a `{{` without its `}}`"));
        };
        let name = &after[..close];
        if !takes.contains(&name) {
            return Err(if takes.is_empty() {
                format!("`{key}` takes no placeholder, not `{{{name}}}`")
            } else {
                format!(
                    "`{key}` takes {}, not `{{{name}}}`",
                    takes
                        .iter()
                        .map(|t| format!("`{{{t}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// The file of the shipped labels, and its name in `EMAIL_TEMPLATES_DIR`.
pub const FILE: &str = "session_report.pdf.json";
/// The shipped words, as the file reads.
pub const SHIPPED: &str = include_str!("../../../templates/email/session_report.pdf.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_other_braces_kept() {
        let labels = Labels::shipped();
        assert_eq!(
            labels.get("answers_of", &[("correct", "3"), ("total", "4")]),
            "3 of 4"
        );
        let polish = Labels::parse(
            r#"{"answers_of": "{correct} z {total} {x}", "title": "Raport"}"#,
            labels.clone(),
        );
        assert!(polish.is_err(), "{{x}} is no placeholder of answers_of");
        let polish = Labels::parse(
            r#"{"answers_of": "{correct} z {total}", "title": "Raport z sesji"}"#,
            labels,
        )
        .unwrap();
        assert_eq!(
            polish.get("answers_of", &[("correct", "3"), ("total", "4")]),
            "3 z 4"
        );
        assert_eq!(polish.get("title", &[]), "Raport z sesji");
        assert_eq!(polish.get("steps", &[]), "Steps worked through", "kept");
    }

    #[test]
    fn every_bad_label_is_reported() {
        let problems = Labels::parse(
            r#"{"titel": "x", "steps": 3, "session": "Sesja {session}",
                "date_format": "%Q", "started": "Start {when",
                "months": ["styczeń"], "weekdays_short": ["pn", "wt", "śr", "cz", "pt", "sb", ""],
                "weekdays": "poniedziałek", "language": "Polish"}"#,
            Labels::shipped(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 9, "{problems:?}");
        for word in [
            "`language`: `Polish` is not a language tag",
            "`titel`",
            "`steps`",
            "`{session}`",
            "`%Q`",
            "`started`",
            "`months` is not a list of 12",
            "`weekdays_short` is not a list of 7",
            "`weekdays` is not a list of 7",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(word)),
                "{word}: {problems:?}"
            );
        }
        assert!(Labels::parse("[1]", Labels::shipped()).is_err());
    }

    #[test]
    fn a_date_and_a_length_of_time_are_written_in_the_labels_words() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T09:05:00+01:00").unwrap();
        let shipped = Labels::shipped();
        assert_eq!(shipped.date(&at), "Monday 7 December 2026, 09:05 +01:00");
        let polish = Labels::parse(
            r#"{"date_format": "%A, %-d %B %Y (%a %-d %b), %H:%M",
                "weekdays": ["poniedziałek", "wtorek", "środa", "czwartek", "piątek", "sobota", "niedziela"],
                "weekdays_short": ["pon.", "wt.", "śr.", "czw.", "pt.", "sob.", "niedz."],
                "months": ["stycznia", "lutego", "marca", "kwietnia", "maja", "czerwca", "lipca",
                           "sierpnia", "września", "października", "listopada", "grudnia"],
                "months_short": ["sty", "lut", "mar", "kwi", "maj", "cze", "lip", "sie", "wrz",
                                 "paź", "lis", "gru"],
                "duration_hours": "{h} godz. {m} min {s} s", "percent": "{value} %"}"#,
            shipped.clone(),
        )
        .unwrap();
        assert_eq!(
            polish.date(&at),
            "poniedziałek, 7 grudnia 2026 (pon. 7 gru), 09:05"
        );
        assert_eq!(polish.duration(3723), "1 godz. 2 min 3 s");
        assert_eq!(
            polish.duration(123),
            "2 min 3 s",
            "kept from the shipped words"
        );
        assert_eq!(shipped.duration(3), "3 s");
        assert_eq!(polish.get("percent", &[("value", "50")]), "50 %");
    }
}
