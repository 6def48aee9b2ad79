//! The replicas serving one database, and whether they agree on the settings they must
//! share ([`SharedSettings`]). Each replica renews its row every [`RENEW_EVERY`] and
//! compares its settings with those of every replica seen lately: a disagreement is logged
//! once per replica and settings, and counted in `replica_settings_differ`, so a replica
//! started with another throttle rule or signing key is noticed before parents are. Nothing
//! here changes what a replica does: it only says.

use std::collections::HashMap;
use std::time::Duration;

use herald_actors::clock::SharedClock;

use crate::config::SharedSettings;
use crate::store::replicas::{self, ReplicaRow};
use crate::store::{Store, StoreError};

/// How often a replica renews its row.
pub const RENEW_EVERY: Duration = Duration::from_secs(30);

/// How long a replica counts as serving after its last renewal: three renewals missed.
pub const LIVE_FOR_MS: i64 = 90_000;

/// How long the row of a replica that stopped without removing it is kept.
const FORGET_AFTER_MS: i64 = 24 * 3_600_000;

/// A replica seen lately, as this one sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub instance: String,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
    /// This replica's own row.
    pub this: bool,
    /// The shared settings it has otherwise than this replica.
    pub differing: Vec<String>,
}

/// This replica: its name, its settings and when it started.
#[derive(Debug, Clone)]
pub struct Me {
    pub instance: String,
    pub settings: SharedSettings,
    pub started_at_ms: i64,
}

impl Me {
    /// The replicas seen within [`LIVE_FOR_MS`] of `now_ms`, this one among them.
    pub async fn peers(&self, store: &Store, now_ms: i64) -> Result<Vec<Peer>, StoreError> {
        let rows = replicas::live(store, now_ms - LIVE_FOR_MS).await?;
        Ok(rows
            .into_iter()
            .map(|row| Peer {
                this: row.instance == self.instance,
                differing: self
                    .settings
                    .differing(&SharedSettings::from_json(&row.settings)),
                instance: row.instance,
                started_at_ms: row.started_at_ms,
                seen_at_ms: row.seen_at_ms,
            })
            .collect())
    }

    async fn announce(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let row = ReplicaRow {
            instance: self.instance.clone(),
            settings: self.settings.to_json(),
            started_at_ms: self.started_at_ms,
            seen_at_ms: now_ms,
        };
        replicas::announce(store, &row).await
    }

    /// Removes this replica's row as it stops (and rows long stale), so the others stop
    /// comparing with it at once. A database that does not answer within a second does not
    /// hold the stop up: the row is then left to go stale.
    pub async fn withdraw(&self, store: &Store, now_ms: i64) {
        let withdrawn = tokio::time::timeout(
            Duration::from_secs(1),
            replicas::withdraw(store, &self.instance, now_ms - FORGET_AFTER_MS),
        )
        .await;
        if !matches!(withdrawn, Ok(Ok(()))) {
            tracing::debug!("could not remove this replica's row; it goes stale in 90 s");
        }
    }

    /// Writes this replica's row and compares with the others before it serves, then renews
    /// and compares again every [`RENEW_EVERY`] until the store closes.
    pub async fn start_renewal(self, store: Store, clock: SharedClock) {
        let mut told: HashMap<String, Vec<String>> = HashMap::new();
        self.renew(&store, &clock, &mut told).await;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // The first tick is at once: renewed just now.
            loop {
                tick.tick().await;
                if store.is_closed() {
                    return;
                }
                self.renew(&store, &clock, &mut told).await;
            }
        });
    }

    async fn renew(
        &self,
        store: &Store,
        clock: &SharedClock,
        told: &mut HashMap<String, Vec<String>>,
    ) {
        let now = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        let peers = match self.announce(store, now).await {
            Ok(()) => self.peers(store, now).await,
            Err(err) => Err(err),
        };
        match peers {
            Ok(peers) => self.tell(&peers, told),
            Err(err) => {
                tracing::debug!(error = %err, "could not compare settings with the other replicas");
            }
        }
    }

    /// Says each disagreement once (and when it ends), and counts the replicas that differ.
    fn tell(&self, peers: &[Peer], told: &mut HashMap<String, Vec<String>>) {
        let differ = peers
            .iter()
            .filter(|p| !p.this && !p.differing.is_empty())
            .count();
        crate::metrics::replica_settings_differ(differ);
        for (replica, differing) in news(peers, told) {
            if differing.is_empty() {
                tracing::info!(%replica, "another replica's shared settings agree with this one's again");
            } else {
                tracing::warn!(
                    %replica,
                    settings = %differing.join(", "),
                    "another replica runs with other values of settings every replica must share \
                     (expected only while a rolling update changes them)"
                );
            }
        }
    }
}

/// The other replicas whose disagreement with this one changed since `told` (which it
/// updates): a new one that differs, one that differs otherwise, one that agrees again.
/// Replicas no longer listed are forgotten.
fn news(peers: &[Peer], told: &mut HashMap<String, Vec<String>>) -> Vec<(String, Vec<String>)> {
    let others: Vec<&Peer> = peers.iter().filter(|p| !p.this).collect();
    told.retain(|instance, _| others.iter().any(|p| &p.instance == instance));
    let mut news = Vec::new();
    for peer in others {
        let before = told.get(&peer.instance).map_or(&[][..], Vec::as_slice);
        if before != peer.differing.as_slice() {
            told.insert(peer.instance.clone(), peer.differing.clone());
            news.push((peer.instance.clone(), peer.differing.clone()));
        }
    }
    news
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(instance: &str, this: bool, differing: &[&str]) -> Peer {
        Peer {
            instance: instance.to_owned(),
            started_at_ms: 0,
            seen_at_ms: 0,
            this,
            differing: differing.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn each_disagreement_is_told_once_and_so_is_its_end() {
        let mut told = HashMap::new();
        let me = peer("a", true, &[]);
        let agreeing = peer("c", false, &[]);
        let limit = peer("b", false, &["SESSION_REPORT_LIMIT"]);
        let said = news(&[me.clone(), limit.clone(), agreeing.clone()], &mut told);
        assert_eq!(
            said,
            [("b".to_owned(), vec!["SESSION_REPORT_LIMIT".to_owned()])]
        );
        assert!(news(&[me.clone(), limit.clone(), agreeing.clone()], &mut told).is_empty());

        let more = peer("b", false, &["DIGEST_SCHEDULE", "SESSION_REPORT_LIMIT"]);
        assert_eq!(news(&[me.clone(), more], &mut told).len(), 1);
        let said = news(&[me.clone(), peer("b", false, &[])], &mut told);
        assert_eq!(said, [("b".to_owned(), vec![])], "agreeing again is said");

        // A replica that left and comes back differing is told again.
        news(&[me.clone(), limit.clone()], &mut told);
        assert!(news(std::slice::from_ref(&me), &mut told).is_empty());
        assert_eq!(news(&[me, limit], &mut told).len(), 1);
    }
}
