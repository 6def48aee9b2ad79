//! Masking of personal data before it reaches a log line or an error report, and of
//! characters that would act on a terminal rather than show.
//!
//! Addresses become `pa***@example.com`: enough to tell two recipients apart during an
//! incident, not enough to read the address.

pub use herald_actors::email::acts_on_the_line;

/// Text from outside herald (a mail server's reply, a provider's reason) as a terminal
/// shows it: each character that would act on the line written out as its escape
/// (`\u{1b}`), so a stored text can neither clear the screen nor forge or reorder a line.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(acts_on_the_line) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_the_line(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// `parent@example.com` → `pa***@example.com`.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let keep: String = local.chars().take(2).collect();
            format!("{keep}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Masks every email address found in free text (error messages, log lines).
pub fn mask_emails_in(text: &str) -> String {
    if !text.contains('@') {
        return text.to_owned();
    }
    let is_addr_char = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let local_start = rest[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_addr_char(*c))
            .last()
            .map_or(at, |(i, _)| i);
        let domain_len = rest[at + 1..]
            .char_indices()
            .take_while(|(_, c)| is_addr_char(*c))
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        let domain = &rest[at + 1..at + 1 + domain_len];
        if local_start < at && domain.contains('.') {
            out.push_str(&rest[..local_start]);
            out.push_str(&mask_email(&rest[local_start..at + 1 + domain_len]));
        } else {
            out.push_str(&rest[..at + 1 + domain_len]);
        }
        rest = &rest[at + 1 + domain_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_a_terminal_has_what_would_act_on_the_line_written_out() {
        let plain = "550 5.1.1 Łukasz's mailbox is full";
        assert!(matches!(for_terminal(plain), std::borrow::Cow::Borrowed(_)));
        assert_eq!(for_terminal(plain), plain);
        assert_eq!(
            for_terminal("a\u{1b}[2Jb\u{7}\r\n\tc\u{202e}d\u{85}"),
            r"a\u{1b}[2Jb\u{7}\u{d}\u{a}\u{9}c\u{202e}d\u{85}"
        );
    }

    #[test]
    fn masks_the_local_part_but_keeps_the_domain() {
        assert_eq!(mask_email("parent@example.com"), "pa***@example.com");
        assert_eq!(mask_email("p@example.com"), "p***@example.com");
        assert_eq!(mask_email("no-at-sign"), "***");
    }

    #[test]
    fn masks_every_address_in_free_text() {
        assert_eq!(
            mask_emails_in("send to parent@example.com failed; cc other.one@mail.example.org."),
            "send to pa***@example.com failed; cc ot***@mail.example.org."
        );
        assert_eq!(
            mask_emails_in("user@localhost stays"),
            "user@localhost stays"
        );
        assert_eq!(mask_emails_in("no addresses"), "no addresses");
    }
}
