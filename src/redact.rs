//! Masking of personal data before it reaches a log line or an error report.
//!
//! Addresses become `pa***@example.com`: enough to tell two recipients apart during an
//! incident, not enough to read the address.

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
