//! The words of herald's emails: subject, plain text and HTML, from a session summary.
//! Everything that comes from a user is HTML-escaped.

use crate::reports::SessionSummary;

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

fn minutes(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} seconds"),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

pub fn session_report(summary: &SessionSummary, unsubscribe_url: &str) -> Rendered {
    let learner = summary.learner_name.as_deref().unwrap_or("Your learner");
    let subject_line = summary.subject.as_deref().unwrap_or("a learning session");
    let subject = format!("{learner}'s session report: {subject_line}");
    let accuracy = summary.accuracy.map_or_else(
        || "no answers yet".to_owned(),
        |a| format!("{:.0}%", a * 100.0),
    );
    let rows = [
        ("Time spent", minutes(summary.duration_seconds)),
        ("Steps worked through", summary.steps.to_string()),
        ("Hints used", summary.hints_used.to_string()),
        (
            "Answers correct",
            format!("{} of {}", summary.answers_correct, summary.answers_total),
        ),
        ("Accuracy", accuracy),
    ];
    let mut text = format!("{learner} finished a session on {subject_line}.\n\n");
    for (label, value) in &rows {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text.push_str("\nThe full report is attached as a PDF.\n\n");
    text.push_str(&format!(
        "To stop session report emails, open: {unsubscribe_url}\n"
    ));

    let mut table = String::new();
    for (label, value) in &rows {
        table.push_str(&format!(
            "<tr><td style=\"padding:4px 12px 4px 0\">{}</td><td style=\"padding:4px 0\"><strong>{}</strong></td></tr>",
            escape(label),
            escape(value)
        ));
    }
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;color:#222\">\
         <h1 style=\"font-size:20px\">{title}</h1>\
         <p>{learner} finished a session on {subject_line}.</p>\
         <table>{table}</table>\
         <p>The full report is attached as a PDF.</p>\
         <p style=\"font-size:12px;color:#666\"><a href=\"{url}\">Unsubscribe from session reports</a></p>\
         </body></html>",
        title = escape(&subject),
        learner = escape(learner),
        subject_line = escape(subject_line),
        url = escape(unsubscribe_url),
    );
    Rendered {
        subject,
        text,
        html,
    }
}

/// The weekly digest of one recipient.
pub fn weekly_digest(
    week: &crate::reports::week::RecipientWeek,
    week_start: &str,
    unsubscribe_url: &str,
) -> Rendered {
    let plural = if week.sessions == 1 { "" } else { "s" };
    let subject = format!(
        "Weekly learning digest: {} session{plural} (week of {week_start})",
        week.sessions
    );
    let mut highlights = vec![
        format!(
            "{} session{plural} completed, {} in total",
            week.sessions,
            minutes(week.total_seconds)
        ),
        format!("Longest session: {}", minutes(week.longest_seconds)),
    ];
    if week.answers_total > 0 {
        highlights.push(format!(
            "Answers correct: {} of {}",
            week.answers_correct, week.answers_total
        ));
    }
    if !week.top_subjects.is_empty() {
        highlights.push(format!("Most practised: {}", week.top_subjects.join(", ")));
    }
    let kinds: Vec<String> = week
        .events_by_kind
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    if !kinds.is_empty() {
        highlights.push(format!("Activity: {}", kinds.join(", ")));
    }
    let mut text = format!("Here is the week starting {week_start}.\n\n");
    for line in &highlights {
        text.push_str(&format!("- {line}\n"));
    }
    text.push_str(&format!(
        "\nTo stop weekly digests, open: {unsubscribe_url}\n"
    ));
    let items: String = highlights
        .iter()
        .map(|h| format!("<li>{}</li>", escape(h)))
        .collect();
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;color:#222\"><h1 style=\"font-size:20px\">{title}</h1>\
         <ul>{items}</ul>\
         <p style=\"font-size:12px;color:#666\"><a href=\"{url}\">Unsubscribe from weekly digests</a></p></body></html>",
        title = escape(&subject),
        url = escape(unsubscribe_url),
    );
    Rendered {
        subject,
        text,
        html,
    }
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
}
