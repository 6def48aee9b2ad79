//! What a replica does about an occurrence it watches through the ledger: a pure function
//! of what the ledger holds of it, the time, and what the previous look saw, so the rules
//! (when a failed run is run again, when a run whose lease ran out is taken over) are
//! tested without actors or timers. The scheduler actor reads the ledger, asks [`Rules`]
//! and carries the step out; nothing here reads or writes anything.

use super::port::{Claim, Occurrence};

/// How many times a failed run of an occurrence is run again (after 10 s, 20 s, 40 s, 80 s
/// and 160 s with the default `retry_every`: through a database restart, say). A run taken
/// over from a process that stopped counts as one.
pub const MAX_RERUNS: u32 = 5;

/// How long after a lease runs out its run is looked at again: the renewal may be late.
pub const LEASE_GRACE_MS: i64 = 500;

/// The watch's rules, from the scheduler's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How long a run is vouched for without a renewal; a live process renews it every
    /// third of that.
    pub lease_ms: i64,
    /// How long after its first failure a run is run again (doubling after each next one).
    pub retry_every_ms: i64,
}

/// What to do about a watched occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Settled (it succeeded, or the ledger no longer holds it): no longer watched.
    Done,
    /// Look at it again at this time.
    LookAt(i64),
    /// Its lease was seen run out: look again at `look_at`, and take the run over if the
    /// lease is still `lease_until_ms` then (not renewed meanwhile).
    Lapsed { lease_until_ms: i64, look_at: i64 },
    /// Claim it in the ledger now, to take it over or to run it again.
    Claim(Claim),
    /// It failed again after [`MAX_RERUNS`] reruns: left for an operator.
    GiveUp { attempts: u32 },
}

impl Rules {
    /// When a run that failed after `attempts` runs in all, the last ending at `finished`,
    /// is run again: `retry_every` after the first, twice as long after each next one;
    /// `None` once it has been run again [`MAX_RERUNS`] times.
    pub fn rerun_at(&self, finished: i64, attempts: u32) -> Option<i64> {
        let doublings = attempts.clamp(1, 16) - 1;
        let wait = self.retry_every_ms.saturating_mul(1 << doublings);
        (attempts <= MAX_RERUNS).then(|| finished.saturating_add(wait))
    }

    /// The step for `occurrence` as the ledger holds it at `now`; `lapsed` is the lease the
    /// previous look saw run out, if it did.
    pub fn step(&self, occurrence: Option<Occurrence>, lapsed: Option<i64>, now: i64) -> Step {
        match occurrence {
            None | Some(Occurrence::Succeeded) => Step::Done,
            Some(Occurrence::Running { lease_until_ms }) if lease_until_ms >= now => {
                Step::LookAt(lease_until_ms + LEASE_GRACE_MS)
            }
            // One look is not enough: a clock that jumped ahead of a live run's renewals
            // makes its lease look run out until the next renewal lands.
            Some(Occurrence::Running { lease_until_ms }) if lapsed != Some(lease_until_ms) => {
                Step::Lapsed {
                    lease_until_ms,
                    look_at: now + self.lease_ms / 3 + LEASE_GRACE_MS,
                }
            }
            Some(Occurrence::Running { .. }) => Step::Claim(Claim::Start),
            Some(Occurrence::Failed {
                finished_at_ms,
                attempts,
            }) => match self.rerun_at(finished_at_ms, attempts) {
                None => Step::GiveUp { attempts },
                Some(turn) if turn > now => Step::LookAt(turn),
                Some(_) => Step::Claim(Claim::Rerun { attempts }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        lease_ms: 60_000,
        retry_every_ms: 10_000,
    };

    fn failed(attempts: u32) -> Option<Occurrence> {
        Some(Occurrence::Failed {
            finished_at_ms: 1_000_000,
            attempts,
        })
    }

    #[test]
    fn a_failed_run_is_run_again_on_its_turn_and_not_a_millisecond_sooner() {
        for (attempts, wait) in [
            (1, 10_000),
            (2, 20_000),
            (3, 40_000),
            (4, 80_000),
            (5, 160_000),
        ] {
            let turn = 1_000_000 + wait;
            assert_eq!(
                RULES.step(failed(attempts), None, turn - 1),
                Step::LookAt(turn)
            );
            assert_eq!(
                RULES.step(failed(attempts), None, turn),
                Step::Claim(Claim::Rerun { attempts })
            );
        }
    }

    #[test]
    fn after_five_reruns_a_failed_run_is_left_for_an_operator() {
        assert_eq!(
            RULES.step(failed(6), None, i64::MAX / 2),
            Step::GiveUp { attempts: 6 }
        );
        assert_eq!(RULES.rerun_at(0, 6), None);
        assert_eq!(RULES.rerun_at(0, u32::MAX), None);
    }

    #[test]
    fn a_live_run_is_looked_at_again_once_its_lease_could_have_run_out() {
        let running = Some(Occurrence::Running {
            lease_until_ms: 5_000,
        });
        assert_eq!(RULES.step(running, None, 5_000), Step::LookAt(5_500));
    }

    #[test]
    fn a_run_is_taken_over_only_when_a_second_look_finds_the_same_lease_run_out() {
        let running = |lease_until_ms| Some(Occurrence::Running { lease_until_ms });
        let first = RULES.step(running(5_000), None, 9_000);
        assert_eq!(
            first,
            Step::Lapsed {
                lease_until_ms: 5_000,
                look_at: 9_000 + 20_000 + 500
            }
        );
        // Renewed since, though the clock still says it ran out: looked at again.
        assert!(matches!(
            RULES.step(running(6_000), Some(5_000), 29_500),
            Step::Lapsed {
                lease_until_ms: 6_000,
                ..
            }
        ));
        // Not renewed: taken over.
        assert_eq!(
            RULES.step(running(5_000), Some(5_000), 29_500),
            Step::Claim(Claim::Start)
        );
    }

    #[test]
    fn a_settled_occurrence_is_no_longer_watched() {
        assert_eq!(RULES.step(None, None, 0), Step::Done);
        assert_eq!(
            RULES.step(Some(Occurrence::Succeeded), Some(5), 0),
            Step::Done
        );
    }
}
