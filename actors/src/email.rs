//! Validated value types that actor messages carry: [`Email`], [`EmailType`] and the
//! [`IdempotencyKey`] of one email.
//!
//! An [`Email`] is parsed once at the HTTP edge: RFC 5321 lengths, no whitespace, control
//! characters (so no CR/LF can ever reach a header) or marks that reorder text, one `@`, a
//! dotted domain (one that is not ASCII with an ASCII form), the domain's ASCII letters
//! lower-cased. Its `Debug` and `Display` mask the address so it cannot leak into logs.

use std::fmt;

/// A character that changes how a line shows rather than showing itself: a control
/// character (an escape sequence's start, a bell, a carriage return or line break) or a mark
/// that reorders text (the bidirectional marks, embeddings, overrides and isolates).
pub fn acts_on_the_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("an email address is at most 254 characters")]
    TooLong,
    #[error("the part before @ is 1 to 64 characters")]
    LocalPart,
    #[error("the domain must be a valid dotted host name")]
    Domain,
    #[error("an email address has exactly one @")]
    Shape,
    #[error(
        "an email address cannot contain spaces, control characters or marks that reorder text"
    )]
    Forbidden,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        // Surrounding spaces are forgiven; a CR, LF or other control character anywhere is
        // not, nor a mark that reorders text: an address is shown to operators, where such a
        // mark could make it read as another.
        let raw = raw.trim_matches(' ');
        if raw
            .chars()
            .any(|c| acts_on_the_line(c) || c.is_whitespace())
        {
            return Err(EmailError::Forbidden);
        }
        if raw.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = raw.split_once('@').ok_or(EmailError::Shape)?;
        if domain.contains('@') {
            return Err(EmailError::Shape);
        }
        if local.is_empty()
            || local.len() > 64
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(EmailError::LocalPart);
        }
        if local.chars().any(|c| "<>()[]\\,;:\"".contains(c)) {
            return Err(EmailError::LocalPart);
        }
        let domain = domain.to_ascii_lowercase();
        if !host_name(&domain) {
            return Err(EmailError::Domain);
        }
        // A domain that is not ASCII is kept as given (but for ASCII capitals, as any other:
        // addresses stored before are found as they were) and must have the ASCII form every
        // mail server and DNS resolves, the form it is mailed at; the check runs on what IDNA
        // maps it to, which may hold what the domain as given did not (a ligature maps to a
        // space and marks).
        if !domain.is_ascii() {
            let (mapped, valid) = idna::domain_to_unicode(&domain);
            if valid.is_err()
                || !host_name(&mapped)
                || mapped
                    .chars()
                    .any(|c| acts_on_the_line(c) || c.is_whitespace())
                || idna::domain_to_ascii_strict(&mapped).is_err()
            {
                return Err(EmailError::Domain);
            }
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The address itself, for the one place that needs it (the envelope, the ledger).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `pa***@example.com`, for logs.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or((&self.0, ""));
        let keep: String = local.chars().take(2).collect();
        format!("{keep}***@{domain}")
    }
}

/// Whether `domain` (lower-cased) has the shape of a host name: dotted, each label 1 to 63
/// bytes of letters, digits and inner hyphens (or letters that are not ASCII), at most 253
/// bytes in all.
fn host_name(domain: &str) -> bool {
    domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

/// `address` as any mail server takes it: a domain that is not ASCII (an internationalised
/// domain name, `bücher.de`) in its ASCII form (`xn--bcher-kva.de`, IDNA), which needs
/// nothing of the server; the part before `@` as it is (one that is not ASCII needs a server
/// that offers SMTPUTF8). An address is kept and known in the form it was given in
/// ([`Email::parse`]); this is the form it is mailed at.
pub fn deliverable(address: &str) -> std::borrow::Cow<'_, str> {
    match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii(domain) {
            Ok(ascii) => format!("{local}@{ascii}").into(),
            Err(_) => address.into(),
        },
        _ => address.into(),
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The kinds of email herald sends; each has its own throttle and unsubscribe switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailType {
    SessionReport,
    WeeklyDigest,
}

impl EmailType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionReport => "session_reports",
            Self::WeeklyDigest => "weekly_digest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown email type '{0}' (session_reports or weekly_digest)")]
pub struct UnknownEmailType(pub String);

impl std::str::FromStr for EmailType {
    type Err = UnknownEmailType;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        [Self::SessionReport, Self::WeeklyDigest]
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| UnknownEmailType(raw.to_owned()))
    }
}

/// Where an email stands in the send ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Queued, waiting for a send slot or a retry.
    Pending,
    /// Claimed by a dispatcher under a lease.
    Sending,
    Sent,
    Failed,
    /// Not sent: the recipient does not want this type.
    Suppressed,
    /// Not sent: the recipient's window was spent.
    Throttled,
}

impl OutboxStatus {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Sending,
        Self::Sent,
        Self::Failed,
        Self::Suppressed,
        Self::Throttled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
            Self::Throttled => "throttled",
        }
    }

    /// Whether a new request for the same key is a duplicate: the email is on its way or
    /// gone. Otherwise (suppressed, throttled, failed) a new request is decided afresh.
    pub fn in_flight_or_sent(self) -> bool {
        matches!(self, Self::Pending | Self::Sending | Self::Sent)
    }
}

impl std::str::FromStr for OutboxStatus {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| format!("unknown outbox status '{raw}'"))
    }
}

/// Whether a stored status (as text) makes a new request a duplicate.
pub fn in_flight_or_sent(status: Option<&str>) -> bool {
    status
        .and_then(|s| s.parse::<OutboxStatus>().ok())
        .is_some_and(OutboxStatus::in_flight_or_sent)
}

/// A learning session's id: a UUID, kept in its hyphenated lower-case form (the form the
/// store holds), parsed once where it enters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

/// A text that cannot name a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is a UUID")]
pub struct NotASessionId;

impl SessionId {
    /// Any form of UUID; anything else names no session.
    pub fn parse(raw: &str) -> Result<Self, NotASessionId> {
        uuid::Uuid::parse_str(raw)
            .map(|id| Self(id.hyphenated().to_string()))
            .map_err(|_| NotASessionId)
    }

    /// A fresh random id, for a new session.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The send ledger's key of one email: at most one email per (recipient, type, session or
/// week). Built only by its constructors, from the address itself (an [`Email`]'s `Display`
/// is masked, so a key formatted from it would be wrong). Keys are stored: the format may
/// never change, or stored keys stop matching.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The report of one session to one recipient.
    pub fn session_report(email: &Email, session_id: &SessionId) -> Self {
        Self(format!(
            "{}:{}:{session_id}",
            email.as_str(),
            EmailType::SessionReport.as_str()
        ))
    }

    /// The digest of the week starting `week_start` (YYYY-MM-DD) to one recipient.
    pub fn weekly_digest(email: &Email, week_start: &str) -> Self {
        Self(format!(
            "{}:{}:{week_start}",
            email.as_str(),
            EmailType::WeeklyDigest.as_str()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key holds the address: mask it as an `Email` is masked.
        let (address, rest) = self.0.split_once(':').unwrap_or((&self.0, ""));
        let masked = Email::parse(address).map_or_else(|_| "***".to_owned(), |e| e.masked());
        write!(f, "IdempotencyKey({masked}:{rest})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn types_and_statuses_round_trip_through_their_stored_names() {
        for t in [EmailType::SessionReport, EmailType::WeeklyDigest] {
            assert_eq!(t.as_str().parse::<EmailType>(), Ok(t));
        }
        assert!("reports".parse::<EmailType>().is_err());
        for s in OutboxStatus::ALL {
            assert_eq!(s.as_str().parse::<OutboxStatus>(), Ok(s));
        }
        assert!(in_flight_or_sent(Some("sending")));
        assert!(!in_flight_or_sent(Some("throttled")));
        assert!(!in_flight_or_sent(None));
    }

    #[test]
    fn idempotency_keys_keep_the_stored_format() {
        let email = Email::parse("Parent@Example.com").unwrap();
        let session = SessionId::parse("{3F2A0000-0000-4000-8000-00000000000A}").unwrap();
        assert_eq!(
            IdempotencyKey::session_report(&email, &session).as_str(),
            "Parent@example.com:session_reports:3f2a0000-0000-4000-8000-00000000000a"
        );
        assert_eq!(
            IdempotencyKey::weekly_digest(&email, "2026-11-23").as_str(),
            "Parent@example.com:weekly_digest:2026-11-23"
        );
        let debug = format!("{:?}", IdempotencyKey::session_report(&email, &session));
        assert!(!debug.contains("Parent@"), "{debug}");
    }

    #[test]
    fn a_session_id_is_a_uuid_in_its_stored_form() {
        let id = SessionId::parse("3F2A0000000040008000000000000000").unwrap();
        assert_eq!(id.as_str(), "3f2a0000-0000-4000-8000-000000000000");
        assert_eq!(id.to_string(), id.as_str());
        for bad in [
            "",
            "0",
            "3f2a",
            "../etc/passwd",
            "3f2a0000-0000-4000-8000-00000000000g",
        ] {
            assert_eq!(SessionId::parse(bad), Err(NotASessionId), "{bad}");
        }
        assert_ne!(SessionId::random(), SessionId::random());
    }

    #[test]
    fn accepts_ordinary_addresses_and_lowercases_the_domain() {
        assert_eq!(
            Email::parse("Parent.One+x@Example.COM").unwrap().as_str(),
            "Parent.One+x@example.com"
        );
        assert_eq!(Email::parse("  a@b.co ").unwrap().as_str(), "a@b.co");
    }

    #[test]
    fn refuses_what_could_break_a_header_or_is_malformed() {
        for bad in [
            "a@b.com\r\nBcc: x@y.com",
            "a@b.com\n",
            "a b@c.com",
            "no-at-sign",
            "a@@b.com",
            "a@b@c.com",
            "@b.com",
            "a@",
            "a@localhost",
            "a@-b.com",
            "a..b@c.com",
            ".a@c.com",
            "a@b..com",
            "parent\u{202e}moc.elpmaxe@example.com",
            "parent\u{2066}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Email::parse(&format!("{}@b.com", "a".repeat(65))),
            Err(EmailError::LocalPart)
        );
        assert_eq!(
            Email::parse(&format!("a@{}.com", "b".repeat(250))),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn an_international_domain_is_mailed_at_its_ascii_form() {
        let email = Email::parse("J\u{fc}rgen@B\u{fc}cher.DE").unwrap();
        assert_eq!(
            email.as_str(),
            "J\u{fc}rgen@b\u{fc}cher.de",
            "kept as given, the domain's ASCII capitals lowered"
        );
        assert_eq!(
            deliverable(email.as_str()),
            "J\u{fc}rgen@xn--bcher-kva.de",
            "the part before @ is left to the server's SMTPUTF8"
        );
        assert_eq!(
            deliverable("parent@B\u{dc}CHER.de"),
            "parent@xn--bcher-kva.de"
        );

        // A ligature IDNA maps to a space and two marks.
        assert_eq!(Email::parse("a@\u{fc5e}.example"), Err(EmailError::Domain));
        assert_eq!(deliverable("parent@example.com"), "parent@example.com");
        // A joiner between two Latin letters has no ASCII form (IDNA's CONTEXTJ rule).
        assert_eq!(
            Email::parse("parent@exa\u{200d}mple.com"),
            Err(EmailError::Domain)
        );
    }

    #[test]
    fn debug_and_display_mask_the_address() {
        let email = Email::parse("parent@example.com").unwrap();
        assert_eq!(format!("{email}"), "pa***@example.com");
        assert!(!format!("{email:?}").contains("parent@"));
    }

    proptest! {
        /// Control characters included: nothing that parses can carry one into a header.
        #[test]
        fn hostile_text_never_parses_into_an_address_with_a_control_character(
            raw in "(\\PC|[\r\n\t\u{0}\u{7f} @<>,;:\"])*"
        ) {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert!(!email.as_str().chars().any(char::is_control), "{:?}", email.as_str());
                prop_assert!(!email.as_str().contains([' ', '<', '>', ',', ';']));
            }
        }

        #[test]
        fn a_parsed_address_never_holds_cr_lf_or_exceeds_rfc_5321(raw in "\\PC{0,300}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert!(!email.as_str().contains(['\r', '\n']));
                prop_assert!(email.as_str().len() <= 254);
                let (local, domain) = email.as_str().split_once('@').unwrap();
                prop_assert!(local.len() <= 64);
                prop_assert_eq!(domain.to_ascii_lowercase(), domain);
            }
        }

        #[test]
        fn valid_shapes_parse_and_round_trip(local in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,10})?", domain in "[a-z]{1,20}\\.[a-z]{2,6}") {
            let raw = format!("{local}@{domain}");
            let email = Email::parse(&raw).unwrap();
            prop_assert_eq!(email.as_str(), raw.as_str());
            prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email);
        }
    }
}
