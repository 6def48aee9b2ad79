//! The words of the report PDF, so a deployment that writes its emails in another language
//! writes its reports in it too: shipped in `templates/email/session_report.pdf.json`, and
//! any of them replaced by the same file in `EMAIL_TEMPLATES_DIR` (keys left out keep the
//! shipped words). A key the PDF does not have, a value that is not text, a placeholder its
//! label does not take, or a date format chrono cannot read is a configuration error.

use chrono::format::{Item, StrftimeItems};

/// Each label's key and the placeholders it takes.
const KEYS: [(&str, &[&str]); 27] = [
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
];

/// The words of the report PDF, by key (see `templates/email/session_report.pdf.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(std::collections::BTreeMap<&'static str, String>);

impl Labels {
    /// The shipped words.
    pub fn shipped() -> Self {
        Self::parse(SHIPPED, Self(Default::default()))
            .expect("the shipped PDF labels are complete and valid")
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
            let Some(&(known, takes)) = KEYS.iter().find(|(k, _)| *k == key) else {
                problems.push(format!(
                    "`{key}` is no label of the report PDF (they are: {})",
                    KEYS.map(|(k, _)| k).join(", ")
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
            labels.0.insert(known, value.to_owned());
        }
        for (key, _) in KEYS {
            if !labels.0.contains_key(key) {
                problems.push(format!("`{key}` is missing"));
            }
        }
        if problems.is_empty() {
            Ok(labels)
        } else {
            Err(problems)
        }
    }

    /// The label of `key`, its placeholders filled from `values`.
    pub fn get(&self, key: &str, values: &[(&str, &str)]) -> String {
        let text = self.0.get(key).map_or("", String::as_str);
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
}

/// The placeholders of `value` are among `takes`; a date format is one chrono reads.
fn check(key: &str, value: &str, takes: &[&str]) -> Result<(), String> {
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
                "date_format": "%Q", "started": "Start {when"}"#,
            Labels::shipped(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        for word in ["`titel`", "`steps`", "`{session}`", "`%Q`", "`started`"] {
            assert!(
                problems.iter().any(|p| p.contains(word)),
                "{word}: {problems:?}"
            );
        }
        assert!(Labels::parse("[1]", Labels::shipped()).is_err());
    }
}
