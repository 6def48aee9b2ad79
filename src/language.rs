//! Language tags: the language a recipient's emails and pages are worded in, and the one a
//! deployment's templates and report labels are written in.

/// A language tag (`pl`, `pt-BR`, `zh-Hant-TW`: BCP 47's language, then up to three script,
/// region or variant subtags) in its usual case: the language in lower case, a script in
/// title case, a region in upper case. `None` for anything else.
pub fn tag(raw: &str) -> Option<String> {
    let mut parts = raw.trim().split('-');
    let language = parts.next()?;
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut written = language.to_ascii_lowercase();
    for (i, part) in parts.enumerate() {
        if i >= 3
            || !(2..=8).contains(&part.len())
            || !part.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return None;
        }
        written.push('-');
        let letters = part.bytes().all(|b| b.is_ascii_alphabetic());
        match part.len() {
            2 if letters => written.push_str(&part.to_ascii_uppercase()),
            4 if letters => {
                written.push_str(&part[..1].to_ascii_uppercase());
                written.push_str(&part[1..].to_ascii_lowercase());
            }
            _ => written.push_str(&part.to_ascii_lowercase()),
        }
    }
    Some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_language_tag_is_kept_in_its_usual_case() {
        for (raw, expected) in [
            ("pl", Some("pl")),
            (" PL-pl ", Some("pl-PL")),
            ("zh-hant-tw", Some("zh-Hant-TW")),
            ("es-419", Some("es-419")),
            ("english!", None),
            ("p", None),
            ("pl-", None),
            ("a-b-c-d-e", None),
            ("pl-PL-x-y-z", None),
        ] {
            assert_eq!(tag(raw).as_deref(), expected, "{raw:?}");
        }
    }
}
