//! The digest's week: which seven days an occurrence reports, where a local day starts,
//! and one recipient's numbers for those days. Pure.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub const WEEK_MS: i64 = 7 * 86_400_000;

/// One recipient's week.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecipientWeek {
    pub email: String,
    pub sessions: i64,
    pub total_seconds: i64,
    pub longest_seconds: i64,
    pub events_by_kind: BTreeMap<String, i64>,
    pub answers_correct: i64,
    pub answers_total: i64,
    /// The most practised subjects, most sessions first (at most three).
    pub top_subjects: Vec<String>,
}

/// The week that the occurrence at `scheduled_for` reports: the seven days before the
/// occurrence's local date.
pub fn week_before(scheduled_for_ms: i64, tz: Tz) -> NaiveDate {
    let local = Utc
        .timestamp_millis_opt(scheduled_for_ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz);
    local.date_naive() - chrono::Duration::days(7)
}

/// The first instant of `date` in `timezone`, as epoch milliseconds: its midnight, or, where
/// the clocks go forward at midnight that day (Chile, Cuba, Lebanon, Egypt), the instant
/// they do, which is midnight in the offset in force before.
pub fn day_start_ms(date: NaiveDate, tz: Tz) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight).earliest().map_or_else(
        || {
            let day_before = midnight - chrono::Duration::days(1);
            let before = tz.offset_from_utc_datetime(&day_before).fix();
            (midnight - before).and_utc().timestamp_millis()
        },
        |t| t.timestamp_millis(),
    )
}

/// A date given on the command line or in an admin request, `YYYY-MM-DD` with a year of
/// four digits: a week around it can always be counted (chrono's own years reach far
/// enough that a week before the first of them cannot).
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    let shaped = raw.len() == 10 && raw.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    shaped
        .then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok())
        .flatten()
}

/// One completed session of a recipient, as the digest reads it.
#[derive(Debug, Clone)]
pub struct SessionFact {
    pub learner: Option<String>,
    pub subject: Option<String>,
    pub started_at_ms: i64,
    pub completed_at_ms: i64,
    pub answers_total: i64,
    pub answers_correct: i64,
}

/// What a recipient's weekly digest shows: a section per learner with the week day by day,
/// the totals, and the change against the week before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub week_start: String,
    pub week_end: String,
    /// At most [`LEARNERS_SHOWN`] sections, by name.
    pub learners: Vec<LearnerWeek>,
    /// The learners beyond those shown, summed; none when every learner has a section.
    pub more_learners: Option<MoreLearners>,
    pub totals: Totals,
    pub previous: Totals,
    pub changes: Changes,
}

/// The most learners a digest gives a section each. A section weighs about 3 kB of HTML, and
/// Gmail clips an email's HTML past 102 kB, footer and unsubscribe link with it: an address
/// that receives for a whole class (a teacher's, or a backend's that names each session's
/// learner differently) still gets a digest that is read whole.
pub const LEARNERS_SHOWN: usize = 10;

/// The learners a digest has no section for (the least active of the week), in one line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MoreLearners {
    pub learners: i64,
    pub sessions: i64,
    pub minutes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnerWeek {
    pub name: String,
    pub sessions: i64,
    pub minutes: i64,
    /// Percent of answers right; none without answers.
    pub accuracy: Option<i64>,
    /// Most sessions first.
    pub subjects: Vec<String>,
    pub days: Vec<Day>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// `Mon`, `Tue`, …
    pub label: String,
    /// The day's date, `YYYY-MM-DD`, and its place in the week, 1 (Monday) to 7 (Sunday):
    /// a template in another language names the day from them.
    pub date: String,
    pub weekday: u32,
    /// Sessions completed that day.
    pub sessions: i64,
    pub minutes: i64,
    /// The bar's height in the HTML part: 2 pixels for a day without a session, else 4 to
    /// 60, the learner's busiest day 60 (a day of sessions shorter than half a minute, shown
    /// as 0 minutes, still gets a bar).
    pub bar_px: i64,
    /// The same bar in the text part, in `#`s: at least one on a day with a session.
    pub text_bar: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub sessions: i64,
    pub minutes: i64,
    pub accuracy: Option<i64>,
}

/// Against the week before, as shown: `+2`, `−15`, `+5 pts`, `same`, or `new` when the week
/// before had nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changes {
    pub sessions: String,
    pub minutes: String,
    pub accuracy: String,
}

/// The longest a name is shown; longer ones end in `…`.
pub const NAME_MAX: usize = 60;

/// A name as emails and the PDF show it: without the invisible characters that reorder
/// text (bidirectional controls), shortened to [`NAME_MAX`] characters.
pub fn display_name(name: &str) -> String {
    let visible: String = name
        .chars()
        .filter(|&c| !crate::redact::acts_on_the_line(c))
        .collect();
    let visible = visible.trim();
    if visible.chars().count() <= NAME_MAX {
        return visible.to_owned();
    }
    let mut short: String = visible.chars().take(NAME_MAX - 1).collect();
    short.push('…');
    short
}

fn percent(correct: i64, total: i64) -> Option<i64> {
    (total > 0).then(|| (correct * 100 + total / 2) / total)
}

fn totals(facts: &[&SessionFact]) -> Totals {
    let seconds: i64 = facts
        .iter()
        .map(|f| (f.completed_at_ms - f.started_at_ms).max(0) / 1000)
        .sum();
    let (correct, total) = facts.iter().fold((0, 0), |(c, t), f| {
        (c + f.answers_correct, t + f.answers_total)
    });
    Totals {
        sessions: facts.len() as i64,
        minutes: (seconds + 30) / 60,
        accuracy: percent(correct, total),
    }
}

fn signed(delta: i64, unit: &str) -> String {
    match delta {
        0 => "same".to_owned(),
        d if d > 0 => format!("+{d}{unit}"),
        d => format!("\u{2212}{}{unit}", -d),
    }
}

/// The digest of the week starting `week_start` (local days in `tz`) from a recipient's
/// sessions of that week and the one before; `None` when the week had no session.
pub fn digest(facts: &[SessionFact], week_start: NaiveDate, tz: Tz) -> Option<Digest> {
    let from = day_start_ms(week_start, tz);
    let to = day_start_ms(week_start + chrono::Duration::days(7), tz);
    let before = day_start_ms(week_start - chrono::Duration::days(7), tz);
    let this: Vec<&SessionFact> = facts
        .iter()
        .filter(|f| (from..to).contains(&f.completed_at_ms))
        .collect();
    if this.is_empty() {
        return None;
    }
    let last: Vec<&SessionFact> = facts
        .iter()
        .filter(|f| (before..from).contains(&f.completed_at_ms))
        .collect();

    let mut by_learner: BTreeMap<String, Vec<&SessionFact>> = BTreeMap::new();
    for fact in &this {
        let name = display_name(fact.learner.as_deref().unwrap_or(""));
        let name = if name.is_empty() {
            "Your learner".to_owned()
        } else {
            name
        };
        by_learner.entry(name).or_default().push(fact);
    }
    let mut learners: Vec<LearnerWeek> = by_learner
        .into_iter()
        .map(|(name, facts)| {
            let mut minutes_by_day = [0i64; 7];
            let mut sessions_by_day = [0i64; 7];
            for fact in &facts {
                let local = Utc
                    .timestamp_millis_opt(fact.completed_at_ms)
                    .single()
                    .unwrap_or_default()
                    .with_timezone(&tz)
                    .date_naive();
                let day = (local - week_start).num_days().clamp(0, 6) as usize;
                minutes_by_day[day] += (fact.completed_at_ms - fact.started_at_ms).max(0) / 1000;
                sessions_by_day[day] += 1;
            }
            let minutes_by_day = minutes_by_day.map(|s| (s + 30) / 60);
            let busiest = minutes_by_day.iter().copied().max().unwrap_or(0).max(1);
            let days = (0..7)
                .map(|i| {
                    let (sessions, minutes) = (sessions_by_day[i], minutes_by_day[i]);
                    let active = sessions > 0;
                    let date = week_start + chrono::Duration::days(i as i64);
                    Day {
                        label: date.format("%a").to_string(),
                        date: date.format("%Y-%m-%d").to_string(),
                        weekday: date.weekday().number_from_monday(),
                        sessions,
                        minutes,
                        bar_px: if active {
                            (minutes * 60 / busiest).max(4)
                        } else {
                            2
                        },
                        text_bar: "#".repeat(if active {
                            (minutes * 20 / busiest).max(1) as usize
                        } else {
                            0
                        }),
                    }
                })
                .collect();
            let mut subjects: BTreeMap<String, i64> = BTreeMap::new();
            for fact in &facts {
                if let Some(subject) = &fact.subject {
                    *subjects.entry(display_name(subject)).or_default() += 1;
                }
            }
            let mut subjects: Vec<(String, i64)> = subjects.into_iter().collect();
            subjects.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let total = totals(&facts);
            LearnerWeek {
                name,
                sessions: total.sessions,
                minutes: total.minutes,
                accuracy: total.accuracy,
                subjects: subjects.into_iter().take(5).map(|(s, _)| s).collect(),
                days,
            }
        })
        .collect();
    let more_learners = (learners.len() > LEARNERS_SHOWN).then(|| {
        // The week's most active keep their sections, shown by name as ever.
        learners.sort_by(|a, b| {
            (b.minutes, b.sessions)
                .cmp(&(a.minutes, a.sessions))
                .then_with(|| a.name.cmp(&b.name))
        });
        let rest = learners.split_off(LEARNERS_SHOWN);
        learners.sort_by(|a, b| a.name.cmp(&b.name));
        MoreLearners {
            learners: rest.len() as i64,
            sessions: rest.iter().map(|l| l.sessions).sum(),
            minutes: rest.iter().map(|l| l.minutes).sum(),
        }
    });
    let (now, previous) = (totals(&this), totals(&last));
    let changes = if previous.sessions == 0 {
        Changes {
            sessions: "new".to_owned(),
            minutes: "new".to_owned(),
            accuracy: "new".to_owned(),
        }
    } else {
        Changes {
            sessions: signed(now.sessions - previous.sessions, ""),
            minutes: signed(now.minutes - previous.minutes, ""),
            accuracy: match (now.accuracy, previous.accuracy) {
                (Some(a), Some(b)) => signed(a - b, " pts"),
                _ => "–".to_owned(),
            },
        }
    };
    Some(Digest {
        week_start: week_start.format("%Y-%m-%d").to_string(),
        week_end: (week_start + chrono::Duration::days(6))
            .format("%Y-%m-%d")
            .to_string(),
        learners,
        more_learners,
        totals: now,
        previous,
        changes,
    })
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    fn fact(
        learner: &str,
        subject: &str,
        day: u32,
        minutes: i64,
        answers: (i64, i64),
    ) -> SessionFact {
        let start = NaiveDate::from_ymd_opt(2026, 11, day)
            .unwrap()
            .and_hms_opt(16, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        SessionFact {
            learner: Some(learner.to_owned()),
            subject: Some(subject.to_owned()),
            started_at_ms: start,
            completed_at_ms: start + minutes * 60_000,
            answers_correct: answers.0,
            answers_total: answers.1,
        }
    }

    /// Where the clocks go forward at midnight, the day starts when they do: its sessions are
    /// its own, and the evening before stays in the day before.
    #[test]
    fn a_day_whose_midnight_is_skipped_starts_when_the_clocks_go_forward() {
        let at = |rfc3339: &str| {
            chrono::DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis()
        };
        let date = |raw: &str| parse_date(raw).unwrap();
        // Each day starts at its midnight in the offset given.
        for (zone, day, offset) in [
            // Saturday 24:00 becomes Sunday 01:00 (-04:00 to -03:00).
            ("America/Santiago", "2026-09-06", "-04:00"),
            // Sunday 00:00 becomes 01:00 (-05:00 to -04:00).
            ("America/Havana", "2026-03-08", "-05:00"),
            // Friday 00:00 becomes 01:00 (+02:00 to +03:00).
            ("Africa/Cairo", "2026-04-24", "+02:00"),
            // An ordinary midnight, and one in a zone whose clocks change at 02:00.
            ("America/Santiago", "2026-09-05", "-04:00"),
            ("Europe/Warsaw", "2026-03-29", "+01:00"),
        ] {
            let zone: Tz = zone.parse().unwrap();
            let start = at(&format!("{day}T00:00:00{offset}"));
            assert_eq!(day_start_ms(date(day), zone), start, "{zone} {day}");
        }
        // A session on the Saturday evening before the Chilean change is that week's.
        let sunday = date("2026-09-06");
        let saturday_evening = SessionFact {
            learner: Some("Ada".to_owned()),
            subject: Some("Maths".to_owned()),
            started_at_ms: at("2026-09-05T21:30:00-04:00"),
            completed_at_ms: at("2026-09-05T21:50:00-04:00"),
            answers_correct: 1,
            answers_total: 1,
        };
        let week = digest(
            std::slice::from_ref(&saturday_evening),
            sunday - chrono::Duration::days(7),
            chrono_tz::America::Santiago,
        )
        .expect("the week before the change holds it");
        assert_eq!(week.learners[0].sessions, 1);
        assert!(
            digest(&[saturday_evening], sunday, chrono_tz::America::Santiago).is_none(),
            "the week of the change does not"
        );
    }

    #[test]
    fn one_section_per_learner_day_by_day_against_the_week_before() {
        let week = NaiveDate::from_ymd_opt(2026, 11, 9).unwrap(); // a Monday
        let facts = [
            fact("Ada", "Fractions", 2, 20, (3, 4)),  // the week before
            fact("Ada", "Fractions", 9, 30, (4, 4)),  // Monday
            fact("Ada", "Decimals", 11, 15, (1, 2)),  // Wednesday
            fact("Bo", "Reading", 15, 10, (0, 0)),    // Sunday
            fact("Ada", "Fractions", 16, 99, (1, 1)), // the week after
        ];
        let digest = digest(&facts, week, chrono_tz::UTC).unwrap();
        assert_eq!(digest.week_end, "2026-11-15");
        let names: Vec<&str> = digest.learners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Ada", "Bo"]);
        let ada = &digest.learners[0];
        assert_eq!((ada.sessions, ada.minutes, ada.accuracy), (2, 45, Some(83)));
        assert_eq!(ada.subjects, ["Decimals", "Fractions"]);
        let minutes: Vec<i64> = ada.days.iter().map(|d| d.minutes).collect();
        assert_eq!(minutes, [30, 0, 15, 0, 0, 0, 0]);
        assert_eq!(ada.days[0].label, "Mon");
        assert_eq!((ada.days[0].weekday, ada.days[6].weekday), (1, 7));
        assert_eq!(
            (ada.days[0].date.as_str(), ada.days[6].date.as_str()),
            ("2026-11-09", "2026-11-15")
        );
        assert_eq!(
            (ada.days[0].bar_px, ada.days[2].bar_px, ada.days[1].bar_px),
            (60, 30, 2)
        );
        assert_eq!(digest.learners[1].accuracy, None);
        assert_eq!(digest.totals.sessions, 3);
        assert_eq!(digest.changes.sessions, "+2");
        assert_eq!(digest.changes.minutes, "+35");
        assert_eq!(digest.changes.accuracy, "+8 pts");
        assert!(super::digest(&facts[..1], week, chrono_tz::UTC).is_none());
    }

    #[test]
    fn a_class_of_learners_gets_sections_for_the_most_active_and_one_line_for_the_rest() {
        let week = NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
        // Learner n practised n minutes, on Tuesday; "L05" twice.
        let mut facts: Vec<SessionFact> = (1..=25)
            .map(|n| fact(&format!("L{n:02}"), "Maths", 10, n, (1, 1)))
            .collect();
        facts.push(fact("L05", "Maths", 11, 2, (0, 1)));
        let digest = digest(&facts, week, chrono_tz::UTC).unwrap();
        let names: Vec<&str> = digest.learners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "L16", "L17", "L18", "L19", "L20", "L21", "L22", "L23", "L24", "L25"
            ]
        );
        // L05's 7 minutes in two sessions count among the rest, as does everyone's below L16.
        let rest_minutes = (1..=15).sum::<i64>() + 2;
        assert_eq!(
            digest.more_learners,
            Some(MoreLearners {
                learners: 15,
                sessions: 16,
                minutes: rest_minutes
            })
        );
        assert_eq!(digest.totals.sessions, 26, "the totals count every learner");
        let shown = digest.learners.iter().map(|l| l.minutes).sum::<i64>();
        assert_eq!(digest.totals.minutes, shown + rest_minutes);

        let few = super::digest(&facts[..LEARNERS_SHOWN], week, chrono_tz::UTC).unwrap();
        assert_eq!(few.learners.len(), LEARNERS_SHOWN);
        assert_eq!(few.more_learners, None);
    }

    #[test]
    fn a_day_of_sessions_shorter_than_half_a_minute_still_shows_a_bar() {
        let week = NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
        let mut short = fact("Ada", "Fractions", 10, 0, (1, 1)); // Tuesday
        short.completed_at_ms += 20_000;
        let facts = [fact("Ada", "Fractions", 9, 30, (4, 4)), short];
        let ada = &digest(&facts, week, chrono_tz::UTC).unwrap().learners[0];
        let (monday, tuesday, wednesday) = (&ada.days[0], &ada.days[1], &ada.days[2]);
        assert_eq!((tuesday.sessions, tuesday.minutes), (1, 0));
        assert_eq!((tuesday.bar_px, tuesday.text_bar.as_str()), (4, "#"));
        assert_eq!((wednesday.sessions, wednesday.bar_px), (0, 2));
        assert_eq!(wednesday.text_bar, "");
        assert_eq!((monday.sessions, monday.bar_px), (1, 60));
    }

    #[test]
    fn names_lose_reordering_marks_and_are_shortened() {
        assert_eq!(display_name("\u{202e}Ada\u{202c}"), "Ada");
        let long = display_name(&"x".repeat(1000));
        assert_eq!(long.chars().count(), NAME_MAX);
        assert!(long.ends_with('…'));
    }
}
