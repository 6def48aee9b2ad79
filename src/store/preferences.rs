//! Email preferences: what each recipient wants, and the opaque key their unsubscribe
//! links name.

use sqlx::Row;

use super::{Store, StoreError};

/// What an unsubscribe link turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribe {
    WeeklyDigest,
    SessionReports,
    All,
}

impl Unsubscribe {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "weekly_digest" => Some(Self::WeeklyDigest),
            "session_reports" => Some(Self::SessionReports),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// The change that turns off what this stops, and leaves the rest.
    pub fn change(self) -> Change {
        let off = |on: bool| on.then_some(false);
        let (digest, reports) = match self {
            Self::WeeklyDigest => (true, false),
            Self::SessionReports => (false, true),
            Self::All => (true, true),
        };
        Change {
            weekly_digest: off(digest),
            session_reports: off(reports),
            ..Change::default()
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WeeklyDigest => "weekly_digest",
            Self::SessionReports => "session_reports",
            Self::All => "all",
        }
    }
}

/// Applies an unsubscribe from a link naming `recipient_key`; returns the preferences now
/// and whether anything changed, or `None` when the key names no one. Each type turns its
/// switch off and stamps its time; `all` does both. Recorded as the link's doing.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn unsubscribe(
    store: &Store,
    recipient_key: &str,
    what: Unsubscribe,
    at_ms: i64,
) -> Result<Option<(Preferences, bool)>, StoreError> {
    let Some(email) = email_of(store, recipient_key).await? else {
        return Ok(None);
    };
    change(
        store,
        &email,
        &what.change(),
        Source::UnsubscribeLink,
        at_ms,
    )
    .await
    .map(Some)
}

/// How many addresses an operator's unsubscribe changes in one transaction: a list of a
/// hundred thousand commits five hundred times rather than a hundred thousand, and each
/// transaction is short (about 60 ms on SQLite, whose one writer the serving process waits
/// for meanwhile, and 150 ms on PostgreSQL, holding only its addresses' locks).
const OPERATOR_BATCH: usize = 200;

/// Turns off what `what` stops for each of `emails` (an address named twice counts once), as
/// an operator's doing (the parents who unsubscribed from another sender), in transactions of
/// [`OPERATOR_BATCH`] addresses, and audits it once (`recipient.unsubscribe`); how many it
/// changed, and how many had it off already. With `dry_run` each transaction is rolled back
/// and nothing is audited: the counts are those the change would give.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn unsubscribe_by_operator(
    store: &Store,
    emails: &[String],
    what: Unsubscribe,
    actor: &str,
    at_ms: i64,
    dry_run: bool,
) -> Result<(u64, u64), StoreError> {
    let wanted = what.change();
    // In the order of their locks (the address in lower case), so that two operators' lists
    // that share addresses wait for each other rather than deadlock.
    let mut emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    emails.sort_by_cached_key(|email| (email.to_lowercase(), *email));
    emails.dedup();
    let mut changed = 0;
    for batch in emails.chunks(OPERATOR_BATCH) {
        let mut tx = store.writer().begin().await?;
        for email in batch {
            let (_, did) = change_in(
                &mut tx,
                store.backend(),
                email,
                &wanted,
                Source::Operator,
                at_ms,
            )
            .await?;
            changed += u64::from(did);
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
    }
    let already = emails.len() as u64 - changed;
    if dry_run {
        return Ok((changed, already));
    }
    let mut tx = store.writer().begin().await?;
    super::audit::record(
        &mut tx,
        super::audit::AuditEntry {
            actor,
            action: "recipient.unsubscribe",
            target: &super::audit::addresses_target(&emails),
            old_value: None,
            new_value: Some(format!(
                "{} off: {changed} changed, {already} had it off already",
                what.as_str()
            )),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((changed, already))
}

/// The language of the recipient a key stands for (none when they have none of their own),
/// or `None` when no recipient has the key (erased on request).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn locale_of(
    store: &Store,
    recipient_key: &str,
) -> Result<Option<Option<String>>, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<String>>(
        "SELECT locale FROM email_preferences WHERE recipient_key = $1",
    )
    .bind(recipient_key)
    .fetch_optional(store.reader())
    .await?)
}

/// The address a recipient key stands for.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn email_of(store: &Store, recipient_key: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT email FROM email_preferences WHERE recipient_key = $1")
            .bind(recipient_key)
            .fetch_optional(store.reader())
            .await?,
    )
}

/// The addresses that have what `what` stops turned off (for `all`, both types), in the
/// order of the addresses, the first `limit` of those after `after` (from the first when
/// `None`): the file `herald recipients unsubscribe --file` takes, for another deployment or
/// sender.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn turned_off(
    store: &Store,
    what: Unsubscribe,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let off = match what {
        Unsubscribe::WeeklyDigest => "weekly_digest_enabled = 0",
        Unsubscribe::SessionReports => "session_reports_enabled = 0",
        Unsubscribe::All => "weekly_digest_enabled = 0 AND session_reports_enabled = 0",
    };
    Ok(sqlx::query_scalar(&format!(
        "SELECT email FROM email_preferences WHERE {off} \
         AND ($1 IS NULL OR email > $1) ORDER BY email LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(store.reader())
    .await?)
}

/// The two switches of a recipient, for tests and the admin view.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn switches(store: &Store, email: &str) -> Result<Option<(bool, bool)>, StoreError> {
    let row = sqlx::query("SELECT weekly_digest_enabled, session_reports_enabled FROM email_preferences WHERE email = $1")
        .bind(email)
        .fetch_optional(store.reader())
        .await?;
    row.map(|row| {
        Ok((
            row.try_get::<i64, _>(0)? != 0,
            row.try_get::<i64, _>(1)? != 0,
        ))
    })
    .transpose()
    .map_err(|e: sqlx::Error| StoreError::from(e))
}

/// A recipient's preferences, and whether the address is suppressed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    pub weekly_digest_enabled: bool,
    pub session_reports_enabled: bool,
    /// IANA name; the digest's zone (`DIGEST_TIMEZONE`) when absent.
    pub timezone: Option<String>,
    /// A BCP 47 tag (`pl`, `pt-BR`); the deployment's own templates when absent.
    pub locale: Option<String>,
    pub weekly_digest_unsubscribed_at: Option<i64>,
    pub weekly_digest_resubscribed_at: Option<i64>,
    pub session_reports_unsubscribed_at: Option<i64>,
    pub session_reports_resubscribed_at: Option<i64>,
    /// The suppression list's reason (`bounced`, `complained`) and since when: it stops the
    /// mail whatever the switches say, and only an operator lifts it.
    pub suppressed: Option<(String, i64)>,
    /// When the preferences last changed: a form shown before then is out of date.
    pub version: i64,
    /// The random key the recipient's unsubscribe links name.
    pub recipient_key: Option<String>,
}

/// Where a change of preferences came from, as `preference_changes` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The calling backend, through `PUT /api/v1/email/preferences/{email}` or a session's
    /// `parent_timezone`.
    Api,
    /// An unsubscribe link in an email.
    UnsubscribeLink,
    /// The preference page an email links to.
    PreferencePage,
    /// The erasure of another spelling of the address, whose opt-out this one now carries.
    Erasure,
    /// An operator, from the shell (`herald recipients unsubscribe`).
    Operator,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::UnsubscribeLink => "unsubscribe_link",
            Self::PreferencePage => "preference_page",
            Self::Erasure => "erasure",
            Self::Operator => "operator",
        }
    }
}

/// What to change; `None` leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub weekly_digest: Option<bool>,
    pub session_reports: Option<bool>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
}

/// What every spelling of an address (the same address but for capitals) decides together,
/// read for the address `$email` (an SQL expression) whose hash ([`super::erased::address_hash`])
/// is `$hash`: each switch, off (0) when any spelling has it off or an erasure of the address
/// kept it off, else on (1), and the suppression of any spelling (the oldest: its reason and
/// time). An opt-out or a suppression is for the mailbox. The spellings are read through the
/// index of the recipients who turned something off, whose condition is repeated here.
macro_rules! for_every_spelling {
    ($email:literal, $hash:literal) => {
        concat!(
            "CASE WHEN EXISTS (SELECT 1 FROM email_preferences o WHERE lower(o.email) = lower(",
            $email,
            ") AND (o.weekly_digest_enabled = 0 OR o.session_reports_enabled = 0) \
             AND o.weekly_digest_enabled = 0) OR EXISTS (SELECT 1 FROM erased_opt_outs e WHERE e.address_hash = ",
            $hash,
            " AND e.weekly_digest_off = 1) THEN 0 ELSE 1 END, \
             CASE WHEN EXISTS (SELECT 1 FROM email_preferences o WHERE lower(o.email) = lower(",
            $email,
            ") AND (o.weekly_digest_enabled = 0 OR o.session_reports_enabled = 0) \
             AND o.session_reports_enabled = 0) OR EXISTS (SELECT 1 FROM erased_opt_outs e WHERE e.address_hash = ",
            $hash,
            " AND e.session_reports_off = 1) THEN 0 ELSE 1 END, \
             (SELECT s.reason FROM email_suppressions s WHERE lower(s.email) = lower(",
            $email,
            ") ORDER BY s.created_at LIMIT 1), (SELECT s.created_at FROM email_suppressions s WHERE lower(s.email) = lower(",
            $email,
            ") ORDER BY s.created_at LIMIT 1)"
        )
    };
}

/// A recipient's preferences: those of the address itself, with the switches and the
/// suppression of all its spellings.
const SELECT: &str = concat!(
    "SELECT ",
    for_every_spelling!("p.email", "$2"),
    ", p.timezone, p.weekly_digest_unsubscribed_at, p.weekly_digest_resubscribed_at, \
     p.session_reports_unsubscribed_at, p.session_reports_resubscribed_at, \
     p.updated_at, p.recipient_key, p.locale, p.weekly_digest_enabled, p.session_reports_enabled \
     FROM email_preferences p WHERE p.email = $1"
);

/// The columns [`SELECT`] reads after the four of [`for_every_spelling`]; the last two are
/// the address's own switches, which a change leaves as they are unless it changes them.
const OWN: usize = 4;

/// The preferences [`SELECT`] reads.
fn preferences(row: &sqlx::any::AnyRow) -> Result<Preferences, sqlx::Error> {
    let shared = shared(row)?;
    Ok(Preferences {
        timezone: row.try_get(OWN)?,
        weekly_digest_unsubscribed_at: row.try_get(OWN + 1)?,
        weekly_digest_resubscribed_at: row.try_get(OWN + 2)?,
        session_reports_unsubscribed_at: row.try_get(OWN + 3)?,
        session_reports_resubscribed_at: row.try_get(OWN + 4)?,
        version: row.try_get(OWN + 5)?,
        recipient_key: row.try_get(OWN + 6)?,
        locale: row.try_get(OWN + 7)?,
        ..shared
    })
}

/// What [`for_every_spelling`] reads, in a row's first four columns: both switches and the
/// suppression.
fn shared(row: &sqlx::any::AnyRow) -> Result<Preferences, sqlx::Error> {
    let on =
        |column: usize| -> Result<bool, sqlx::Error> { Ok(row.try_get::<i64, _>(column)? != 0) };
    let reason: Option<String> = row.try_get(2)?;
    Ok(Preferences {
        weekly_digest_enabled: on(0)?,
        session_reports_enabled: on(1)?,
        suppressed: match reason {
            Some(reason) => Some((reason, row.try_get::<Option<i64>, _>(3)?.unwrap_or(0))),
            None => None,
        },
        ..Default::default()
    })
}

/// A recipient's preferences; `None` for an address herald has never mailed or been told of.
/// Its switches and suppression are those of all its spellings (see [`for_every_spelling`]).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(store: &Store, email: &str) -> Result<Option<Preferences>, StoreError> {
    let row = sqlx::query(SELECT)
        .bind(email)
        .bind(super::erased::address_hash(email))
        .fetch_optional(store.reader())
        .await?;
    Ok(row.as_ref().map(preferences).transpose()?)
}

/// What a recipient receives now: their preferences, or, for an address herald keeps none
/// for, what its other spellings decided (everything, when there are none), with the
/// suppression of any spelling either way (a bounce or complaint can come for an address
/// herald never kept preferences for).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn in_force(store: &Store, email: &str) -> Result<Preferences, StoreError> {
    if let Some(kept) = get(store, email).await? {
        return Ok(kept);
    }
    let row = sqlx::query(concat!("SELECT ", for_every_spelling!("$1", "$2")))
        .bind(email)
        .bind(super::erased::address_hash(email))
        .fetch_one(store.reader())
        .await?;
    Ok(shared(&row)?)
}

/// Whose calendar a recipient's digest counts its days in: with local delivery their own
/// zone (the service's for one without), with global delivery the service's zone
/// (`DIGEST_TIMEZONE`) for everyone, the week the run chose them for.
#[derive(Debug, Clone, Copy)]
pub struct DigestZones {
    pub service: chrono_tz::Tz,
    pub local: bool,
}

impl From<&crate::config::JobsConfig> for DigestZones {
    fn from(jobs: &crate::config::JobsConfig) -> Self {
        Self {
            service: jobs.timezone,
            local: jobs.local_delivery,
        }
    }
}

impl DigestZones {
    pub async fn of(self, store: &Store, email: &str) -> Result<chrono_tz::Tz, StoreError> {
        if !self.local {
            return Ok(self.service);
        }
        Ok(self.of_read(get(store, email).await?.as_ref()))
    }

    /// [`DigestZones::of`] for a recipient whose preferences were read already.
    pub fn of_read(self, preferences: Option<&Preferences>) -> chrono_tz::Tz {
        if self.local {
            self.reading(preferences.and_then(|p| p.timezone.as_deref()))
        } else {
            self.service
        }
    }

    /// The zone a recipient reads an email's times in (a report's start): their own when
    /// they gave one, else the service's. With global delivery too: it only shows a time.
    pub fn reading(self, timezone: Option<&str>) -> chrono_tz::Tz {
        timezone
            .and_then(|zone| zone.parse().ok())
            .unwrap_or(self.service)
    }
}

/// Applies `change` to `email`'s preferences (creating them when herald has none yet), stamps
/// an unsubscribe or a re-subscribe with its time, and records each changed value with its
/// `source`; all in one transaction. A switch is changed against what all the address's
/// spellings decide together (off when any has it off, or an erasure of the address kept it
/// off); one turned back on is turned on under every spelling that had it off (each recorded
/// under its own) and lifted from what an erasure kept, so that a parent who opted out under
/// one spelling, or was erased, and comes back is mailed again.
/// Returns the preferences as they now are, and whether anything changed.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn change(
    store: &Store,
    email: &str,
    change: &Change,
    source: Source,
    at_ms: i64,
) -> Result<(Preferences, bool), StoreError> {
    let mut tx = store.writer().begin().await?;
    let done = change_in(&mut tx, store.backend(), email, change, source, at_ms).await?;
    tx.commit().await?;
    Ok(done)
}

/// [`change`] inside `tx`, which the caller commits: several changes in one transaction.
async fn change_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    email: &str,
    change: &Change,
    source: Source,
    at_ms: i64,
) -> Result<(Preferences, bool), StoreError> {
    let hash = super::erased::address_hash(email);
    sqlx::query(super::erased::NEW_PREFERENCES)
        .bind(email)
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(at_ms)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    lock_spellings(backend, tx, email).await?;
    let row = sqlx::query(SELECT)
        .bind(email)
        .bind(&hash)
        .fetch_one(&mut **tx)
        .await?;
    let old = preferences(&row)?;
    // The address's own switches: written back as they are unless this change turns them
    // (one off under another spelling reads as off in `old`, and is not copied into this one).
    let own =
        |column: usize| -> Result<bool, sqlx::Error> { Ok(row.try_get::<i64, _>(column)? != 0) };
    let (mut own_digest, mut own_reports) = (own(OWN + 8)?, own(OWN + 9)?);
    let mut new = old.clone();
    let mut changes: Vec<(&str, String, String)> = Vec::new();
    let mut turned_on: Vec<&'static str> = Vec::new();
    // A switch is turned on when it is off for the address (under any spelling), and off
    // when it is on for this spelling: an unsubscribe through a spelling whose mail another
    // spelling's opt-out already stops is still kept, should that other one be erased.
    let mut switch = |field: &'static str,
                      wanted: Option<bool>,
                      own: &mut bool,
                      enabled: &mut bool,
                      unsubscribed: &mut Option<i64>,
                      resubscribed: &mut Option<i64>| {
        let was = if wanted == Some(false) {
            *own
        } else {
            *enabled
        };
        if let Some(wanted) = wanted
            && wanted != was
        {
            changes.push((field, was.to_string(), wanted.to_string()));
            *enabled = wanted;
            *own = wanted;
            if wanted {
                turned_on.push(field);
                *resubscribed = Some(at_ms);
            } else {
                *unsubscribed = Some(at_ms);
            }
        }
    };
    switch(
        "weekly_digest_enabled",
        change.weekly_digest,
        &mut own_digest,
        &mut new.weekly_digest_enabled,
        &mut new.weekly_digest_unsubscribed_at,
        &mut new.weekly_digest_resubscribed_at,
    );
    switch(
        "session_reports_enabled",
        change.session_reports,
        &mut own_reports,
        &mut new.session_reports_enabled,
        &mut new.session_reports_unsubscribed_at,
        &mut new.session_reports_resubscribed_at,
    );
    let mut set = |field: &'static str, wanted: &Option<String>, value: &mut Option<String>| {
        if let Some(wanted) = wanted
            && Some(wanted) != value.as_ref()
        {
            changes.push((field, value.clone().unwrap_or_default(), wanted.clone()));
            *value = Some(wanted.clone());
        }
    };
    set("timezone", &change.timezone, &mut new.timezone);
    set("locale", &change.locale, &mut new.locale);
    let changed = !changes.is_empty();
    if changed {
        new.version = at_ms.max(old.version + 1);
        sqlx::query(
            "UPDATE email_preferences SET weekly_digest_enabled = $2, session_reports_enabled = $3, timezone = $4, \
               weekly_digest_unsubscribed_at = $5, weekly_digest_resubscribed_at = $6, \
               session_reports_unsubscribed_at = $7, session_reports_resubscribed_at = $8, updated_at = $9, \
               locale = $10 \
             WHERE email = $1",
        )
        .bind(email)
        .bind(i64::from(own_digest))
        .bind(i64::from(own_reports))
        .bind(new.timezone.clone())
        .bind(new.weekly_digest_unsubscribed_at)
        .bind(new.weekly_digest_resubscribed_at)
        .bind(new.session_reports_unsubscribed_at)
        .bind(new.session_reports_resubscribed_at)
        .bind(new.version)
        .bind(new.locale.clone())
        .execute(&mut **tx)
        .await?;
        for (field, old_value, new_value) in changes {
            record_change(tx, email, at_ms, source, field, old_value, new_value).await?;
        }
        // A switch turned off needs no more: the other spellings read this one's. One turned
        // on is turned on under the others, and what an erasure kept of it is lifted.
        for field in turned_on {
            super::erased::lift(tx, email, field).await?;
            switch_other_spellings(tx, email, field, true, source, at_ms).await?;
        }
    }
    Ok((new, changed))
}

/// Turns `field` (`weekly_digest_enabled` or `session_reports_enabled`) to `on` in the
/// preferences of `email`'s other spellings that have it the other way, stamping the
/// re-subscribe or unsubscribe, and records each change as `source`'s.
pub(super) async fn switch_other_spellings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    email: &str,
    field: &'static str,
    on: bool,
    source: Source,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (stamp, was) = if on {
        (field.replace("enabled", "resubscribed_at"), 0)
    } else {
        (field.replace("enabled", "unsubscribed_at"), 1)
    };
    // Those turned off are read through the index of the recipients who turned something
    // off, whose condition is repeated for the planner.
    let indexed = if on {
        "AND (weekly_digest_enabled = 0 OR session_reports_enabled = 0)"
    } else {
        ""
    };
    let others: Vec<String> = sqlx::query_scalar(&format!(
        "UPDATE email_preferences SET {field} = {now}, {stamp} = $2, \
           updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END \
         WHERE lower(email) = lower($1) {indexed} AND email <> $1 AND {field} = {was} RETURNING email",
        now = 1 - was,
    ))
    .bind(email)
    .bind(at_ms)
    .fetch_all(&mut **tx)
    .await?;
    for other in others {
        let (old_value, new_value) = ((!on).to_string(), on.to_string());
        record_change(tx, &other, at_ms, source, field, old_value, new_value).await?;
    }
    Ok(())
}

/// Serialises the changes to any spelling of `email` (a change of preferences, an erasure)
/// until `tx` ends: a change reads what the others decided and may turn them on, so two at
/// once through two spellings would each wait for a row the other holds, and an erasure
/// keeps what a change may be lifting. On PostgreSQL, an advisory lock keyed by the address
/// in lower case, hashed by PostgreSQL with a seed of its own (a collision only serialises
/// two addresses' changes); on SQLite the one writer serialises them already.
pub(super) async fn lock_spellings(
    backend: super::Backend,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    email: &str,
) -> Result<(), StoreError> {
    if backend == super::Backend::Postgres {
        sqlx::query(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 1))) AS locked",
        )
        .bind(email)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Records one changed value of `email`'s preferences.
async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    email: &str,
    at_ms: i64,
    source: Source,
    field: &str,
    old_value: String,
    new_value: String,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO preference_changes (id, email, at, source, field, old_value, new_value) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(email)
    .bind(at_ms)
    .bind(source.as_str())
    .bind(field)
    .bind(old_value)
    .bind(new_value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One recorded change of a recipient's preferences.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub at_ms: i64,
    /// `api`, `unsubscribe_link`, `preference_page`, or `erasure` (another spelling's, whose
    /// opt-out this address now carries).
    pub source: String,
    pub field: String,
    pub old_value: String,
    pub new_value: String,
}

/// The recorded changes of `email`'s preferences, oldest first (those of one moment by
/// field).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn changes(store: &Store, email: &str) -> Result<Vec<Recorded>, StoreError> {
    let rows = sqlx::query(
        "SELECT at, source, field, old_value, new_value FROM preference_changes WHERE email = $1 ORDER BY at, field",
    )
    .bind(email)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Recorded {
                at_ms: row.try_get(0)?,
                source: row.try_get(1)?,
                field: row.try_get(2)?,
                old_value: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                new_value: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Every time zone a recipient has chosen (read through the index on the zone).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn zones(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT timezone FROM email_preferences WHERE timezone IS NOT NULL",
    )
    .fetch_all(store.reader())
    .await?)
}

/// When the latest change of anyone's preferences was made.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn latest_change(store: &Store) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT MAX(at) FROM preference_changes")
        .fetch_one(store.reader())
        .await?)
}

/// The zones chosen at or after `since_ms` (read through the index on the changes' time),
/// and the latest change's time.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn zones_chosen_since(
    store: &Store,
    since_ms: i64,
) -> Result<(Vec<String>, Option<i64>), StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT new_value, MAX(at) FROM preference_changes \
         WHERE at >= $1 AND field = 'timezone' AND new_value <> '' GROUP BY new_value",
    )
    .bind(since_ms)
    .fetch_all(store.reader())
    .await?;
    let latest = rows.iter().map(|(_, at)| *at).max();
    Ok((rows.into_iter().map(|(zone, _)| zone).collect(), latest))
}

/// When the first of `zone`'s recipients chose it: since then the zone's digest job exists,
/// whether or not a serving process scheduled it (herald may have been down).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn zone_chosen_since(store: &Store, zone: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(c.at) FROM email_preferences p JOIN preference_changes c ON c.email = p.email \
         WHERE p.timezone = $1 AND c.field = 'timezone' AND c.new_value = $1",
    )
    .bind(zone)
    .fetch_one(store.reader())
    .await?)
}

/// How many recipients each zone has (`default` for those without one of their own).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn recipients_by_zone(
    store: &Store,
    default: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(timezone, $1) AS zone, COUNT(*) FROM email_preferences \
         GROUP BY COALESCE(timezone, $1) ORDER BY zone",
    )
    .bind(default)
    .fetch_all(store.reader())
    .await?)
}
