//! Field rules for request bodies, each failure a 422 that names its field.

use herald_actors::email::{Email, SessionId};

use super::error::ApiError;

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        field: field.into(),
        message: message.into(),
    }
}

/// A page of a list: `limit` rows (1 to 500, default 100) after `offset` (0 or more,
/// default 0).
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit", "limit must be from 1 to 500"));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(invalid("offset", "offset must be 0 or more"));
    }
    Ok((limit, offset))
}

/// Optional free text: trimmed, empty becomes absent, at most `max` characters, no control
/// characters (newlines and tabs allowed only where `multiline`).
pub fn text(
    field: &str,
    value: Option<String>,
    max: usize,
    multiline: bool,
) -> Result<Option<String>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max {
        return Err(invalid(
            field,
            format!("{field} is at most {max} characters"),
        ));
    }
    let allowed = |c: char| !c.is_control() || (multiline && (c == '\n' || c == '\t'));
    if !value.chars().all(allowed) {
        return Err(invalid(
            field,
            format!("{field} cannot contain control characters"),
        ));
    }
    Ok(Some(value))
}

/// An address an admin route names (in its path or query), as the ledger keeps it.
pub fn address(field: &str, raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|e| invalid(field, e.to_string()))
}

pub fn email(field: &str, value: Option<String>) -> Result<Option<Email>, ApiError> {
    match value {
        None => Ok(None),
        Some(raw) if raw.trim().is_empty() => Ok(None),
        Some(raw) => {
            let email = Email::parse(&raw).map_err(|e| invalid(field, format!("{field}: {e}")))?;
            // The mail library must take it too, or it would be accepted here and fail at
            // every send.
            if email.as_str().parse::<lettre::Address>().is_err() {
                return Err(invalid(
                    field,
                    format!("{field}: not an address mail can be sent to"),
                ));
            }
            Ok(Some(email))
        }
    }
}

/// A session id: anything that is not a UUID cannot name a session.
pub fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|_| session_not_found())
}

/// A reporting period in days: 1 to 365, 7 when absent.
pub fn days(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(7),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| invalid("days", "days must be a whole number from 1 to 365")),
    }
}

pub fn session_not_found() -> ApiError {
    ApiError::not_found("SESSION_NOT_FOUND", "Session not found.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(
            text("f", Some("  a ".into()), 5, false).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(text("f", Some("   ".into()), 5, false).unwrap(), None);
        assert!(text("f", Some("abcdef".into()), 5, false).is_err());
        assert!(text("f", Some("a\nb".into()), 5, false).is_err());
        assert!(text("f", Some("a\nb".into()), 5, true).is_ok());
        assert_eq!(
            text("f", Some("ééééé".into()), 5, false)
                .unwrap()
                .as_deref(),
            Some("ééééé")
        );
    }

    #[test]
    fn an_address_the_mail_library_refuses_is_refused_here() {
        // Found by the header fuzz target: herald's rules took it, lettre did not.
        assert!(email("parent_email", Some("ㅺ/\u{fffd}J.#^𐕽/$@ﹲ.T𑏅".into())).is_err());
        let ok = email("parent_email", Some("łukasz@example.pl".into())).unwrap();
        assert_eq!(ok.unwrap().as_str(), "łukasz@example.pl");
    }

    #[test]
    fn session_ids_must_be_uuids() {
        assert!(session_id("not-a-uuid").is_err());
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(session_id(&id.to_uppercase()).unwrap().as_str(), id);
    }
}
