//! The policies in force: defaults from configuration, overridden by rows of
//! `rate_limit_policies`, per endpoint group and per API-key tier. Read on every limited
//! request, so held in memory behind a `std` lock (never held across an await).

use std::collections::HashMap;
use std::sync::RwLock;

use herald_actors::limiter::Policy;

use crate::store::policies::PolicyRow;

/// The endpoint groups that are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `/api/v1/stats/*`
    Stats,
    /// `/api/v1/reports/*`
    Reports,
    /// `POST /api/v1/sessions/start`: it takes no credential, and every session it opens
    /// can mail a report to the address it names.
    Sessions,
}

pub const GROUPS: [Group; 3] = [Group::Stats, Group::Reports, Group::Sessions];
pub const DEFAULT_TIER: &str = "default";

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stats => "stats",
            Self::Reports => "reports",
            Self::Sessions => "sessions",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        GROUPS.into_iter().find(|g| g.as_str() == name)
    }

    /// The low byte of this group's limiter keys.
    pub fn index(self) -> u8 {
        match self {
            Self::Stats => 1,
            Self::Reports => 2,
            Self::Sessions => 3,
        }
    }
}

/// Stored policies by tier, then group: looked up by `&str` on every limited request,
/// without building a key.
type Overrides = HashMap<String, HashMap<Group, Policy>>;

pub struct Policies {
    /// The configured default of `stats` and `reports`.
    default: Policy,
    /// The configured default of `sessions`.
    sessions: Policy,
    overrides: RwLock<Overrides>,
}

impl Policies {
    pub fn new(default: Policy, sessions: Policy, rows: &[PolicyRow]) -> Self {
        let policies = Self {
            default,
            sessions,
            overrides: RwLock::new(HashMap::new()),
        };
        policies.replace(rows);
        policies
    }

    /// The policy for `tier` in `group`: the tier's own, else the group's default row, else
    /// the configured default.
    pub fn get(&self, group: Group, tier: &str) -> Policy {
        let overrides = self.overrides.read().unwrap_or_else(|e| e.into_inner());
        stored(&overrides, group, tier)
            .or_else(|| stored(&overrides, group, DEFAULT_TIER))
            .unwrap_or(self.configured(group))
    }

    /// The configured default of `group`, before any stored policy.
    fn configured(&self, group: Group) -> Policy {
        match group {
            Group::Sessions => self.sessions,
            Group::Stats | Group::Reports => self.default,
        }
    }

    /// Every policy in force, as rows: each group's default plus each tier override.
    pub fn rows(&self) -> Vec<PolicyRow> {
        let overrides = self.overrides.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<PolicyRow> = GROUPS
            .iter()
            .map(|&group| {
                let policy =
                    stored(&overrides, group, DEFAULT_TIER).unwrap_or(self.configured(group));
                to_row(group, DEFAULT_TIER, policy)
            })
            .collect();
        for (tier, groups) in overrides.iter().filter(|(tier, _)| *tier != DEFAULT_TIER) {
            for (group, policy) in groups {
                rows.push(to_row(*group, tier, *policy));
            }
        }
        rows.sort_by(|a, b| (&a.group, &a.tier).cmp(&(&b.group, &b.tier)));
        rows
    }

    /// The row currently stored for exactly (group, tier), if any.
    pub fn exact(&self, group: Group, tier: &str) -> Option<PolicyRow> {
        let overrides = self.overrides.read().unwrap_or_else(|e| e.into_inner());
        stored(&overrides, group, tier).map(|p| to_row(group, tier, p))
    }

    /// Replaces the overrides with `rows` (on start) or applies them (after an update).
    pub fn replace(&self, rows: &[PolicyRow]) {
        let mut overrides = self.overrides.write().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            if let Some(group) = Group::parse(&row.group) {
                overrides.entry(row.tier.clone()).or_default().insert(
                    group,
                    Policy::per_seconds(row.max_requests as u32, row.window_seconds as u64),
                );
            }
        }
    }
}

fn stored(overrides: &Overrides, group: Group, tier: &str) -> Option<Policy> {
    overrides.get(tier)?.get(&group).copied()
}

fn to_row(group: Group, tier: &str, policy: Policy) -> PolicyRow {
    PolicyRow {
        group: group.as_str().to_owned(),
        tier: tier.to_owned(),
        max_requests: i64::from(policy.max_requests),
        window_seconds: (policy.window_ms / 1000) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, tier: &str, max: i64) -> PolicyRow {
        PolicyRow {
            group: group.into(),
            tier: tier.into(),
            max_requests: max,
            window_seconds: 60,
        }
    }

    #[test]
    fn a_tier_falls_back_to_the_group_default_then_the_configured_default() {
        let policies = Policies::new(
            Policy::per_seconds(20, 60),
            Policy::per_seconds(600, 60),
            &[row("stats", "default", 30), row("stats", "pro", 100)],
        );
        assert_eq!(policies.get(Group::Stats, "pro").max_requests, 100);
        assert_eq!(policies.get(Group::Stats, "free").max_requests, 30);
        assert_eq!(policies.get(Group::Reports, "pro").max_requests, 20);
        assert_eq!(policies.get(Group::Sessions, "pro").max_requests, 600);
        let rows = policies.rows();
        assert_eq!(rows.len(), 4, "{rows:?}");
    }
}
