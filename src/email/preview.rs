//! An email rendered as it would be sent, without sending or writing anything: for
//! `GET /admin/email/preview/{type}` and `herald email preview`. The same templates and the
//! same PDF renderer the dispatcher uses.

use chrono::NaiveDate;
use herald_actors::email::EmailType;

use super::Signer;
use crate::reports::week;
use crate::store::{Store, StoreError, activity, preferences, sessions};
use crate::templates::{Rendered, Templates};

/// Which email to show.
pub enum Request {
    /// The report of a session.
    Report { session_id: String },
    /// The digest of a recipient for the week starting `week_start`; by default the seven
    /// days before today in the zone their digest counts its days in.
    Digest {
        email: String,
        week_start: Option<NaiveDate>,
    },
}

/// What a preview shows: the email's parts, and the report's PDF.
pub struct Preview {
    pub email_type: EmailType,
    pub rendered: Rendered,
    pub pdf: Option<Vec<u8>>,
    /// The language whose templates worded it; none for the deployment's own.
    pub language: Option<String>,
}

/// Why there is nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no session {0}")]
    NoSession(String),
    /// No session in the week that starts on `week`; `chosen` when the request named it.
    #[error(
        "no activity for that recipient in the week of {week}{}, so no digest would be sent",
        if *chosen { "" } else { " (the last whole week, which a digest sent now reports; name a week to see another)" }
    )]
    NoActivity { week: NaiveDate, chosen: bool },
    #[error("{0}")]
    Template(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a preview renders with: the templates, and what its links point at.
pub struct Links<'a> {
    pub templates: &'a Templates,
    pub signer: &'a Signer,
    pub api_base_url: &'a str,
}

impl Links<'_> {
    /// The templates a preview is worded by: `language`'s when given, else the
    /// recipient's own language's, as when the email is sent.
    fn worded_in(
        &self,
        language: Option<&str>,
        recipient: Option<&preferences::Preferences>,
    ) -> &Templates {
        self.templates
            .for_locale(language.or_else(|| recipient.and_then(|p| p.locale.as_deref())))
    }

    /// The unsubscribe and preference links the email would carry: the recipient's own when
    /// they have preferences, ones naming no one otherwise.
    fn urls(
        &self,
        recipient: Option<&preferences::Preferences>,
        email_type: EmailType,
    ) -> (String, String) {
        let key = recipient
            .and_then(|p| p.recipient_key.clone())
            .unwrap_or_else(|| "0".repeat(32));
        let token = self.signer.token(&key);
        (
            format!(
                "{}/api/v1/email/unsubscribe/{token}?type={}",
                self.api_base_url,
                email_type.as_str()
            ),
            format!(
                "{}/api/v1/email/preferences/page/{token}",
                self.api_base_url
            ),
        )
    }
}

/// Renders the email `request` names; writes nothing. A digest counts its days in the zone
/// `zones` gives the recipient, as when it is sent. It is worded in `language` when given
/// (a translation seen with real data), else in the recipient's, as when it is sent.
pub async fn render(
    store: &Store,
    links: &Links<'_>,
    zones: preferences::DigestZones,
    now_ms: i64,
    request: Request,
    language: Option<&str>,
) -> Result<Preview, PreviewError> {
    match request {
        Request::Report { session_id } => {
            let summary = sessions::summary(store, &session_id, now_ms)
                .await?
                .ok_or_else(|| PreviewError::NoSession(session_id.clone()))?;
            let row = sessions::get(store, &session_id)
                .await?
                .ok_or(PreviewError::NoSession(session_id))?;
            // A session without a parent address sends no report; its preview shows one
            // whose link names no one.
            let email = row.parent_email.unwrap_or_default();
            let recipient = preferences::get(store, &email).await?;
            let (unsubscribe, prefs) = links.urls(recipient.as_ref(), EmailType::SessionReport);
            let urls = crate::templates::Links {
                unsubscribe: &unsubscribe,
                preferences: &prefs,
            };
            let templates = links.worded_in(language, recipient.as_ref());
            let zone = zones.reading(recipient.as_ref().and_then(|p| p.timezone.as_deref()));
            Ok(Preview {
                email_type: EmailType::SessionReport,
                rendered: templates
                    .session_report(&summary, urls)
                    .map_err(PreviewError::Template)?,
                pdf: Some(templates.report_pdf(&summary, zone)),
                language: templates.language().map(str::to_owned),
            })
        }
        Request::Digest { email, week_start } => {
            let recipient = preferences::get(store, &email).await?;
            let zone = zones.of_read(recipient.as_ref());
            let chosen = week_start.is_some();
            let week_start = week_start.unwrap_or_else(|| week::week_before(now_ms, zone));
            let digest = activity::recipient_digest(store, &email, week_start, zone)
                .await?
                .ok_or(PreviewError::NoActivity {
                    week: week_start,
                    chosen,
                })?;
            let (unsubscribe, prefs) = links.urls(recipient.as_ref(), EmailType::WeeklyDigest);
            let urls = crate::templates::Links {
                unsubscribe: &unsubscribe,
                preferences: &prefs,
            };
            let templates = links.worded_in(language, recipient.as_ref());
            Ok(Preview {
                email_type: EmailType::WeeklyDigest,
                rendered: templates
                    .weekly_digest(&digest, urls)
                    .map_err(PreviewError::Template)?,
                pdf: None,
                language: templates.language().map(str::to_owned),
            })
        }
    }
}
