//! Where a shard keeps its windows. [`MemoryWindows`] is the in-process store; a shared
//! store (Redis, for several replicas) implements the same trait without the layer or the
//! actor changing.

use std::collections::{HashMap, VecDeque};

use super::window::{Decision, Policy, Window};

/// Which windows a reset clears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetScope {
    All,
    Group(u8),
    Keys(Vec<u64>),
}

/// What a check does for a new key when the store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCapacity {
    /// Admit the request without tracking it.
    Admit,
    /// Refuse the request.
    Refuse,
}

/// A check's outcome, with whether it could be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub decision: Decision,
    /// False when the store was full and the key was not tracked.
    pub tracked: bool,
}

pub trait WindowStore: Send + 'static {
    fn check(&mut self, key: u64, policy: Policy, now_ms: u64) -> Checked;
    /// Forgets the windows whose key satisfies `matches` (all when `None`); returns how many.
    fn reset(&mut self, matches: Option<&dyn Fn(u64) -> bool>) -> usize;
    /// Evicts idle windows, examining at most `budget` keys; returns how many it evicted.
    fn sweep(&mut self, now_ms: u64, budget: usize) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Windows in this process's memory, at most `capacity` keys.
pub struct MemoryWindows {
    windows: HashMap<u64, (Window, u32)>,
    /// Keys in insertion order, visited round-robin by the sweep.
    sweep_queue: VecDeque<u64>,
    capacity: usize,
    at_capacity: AtCapacity,
    /// Instants are stored relative to this, in `u32` milliseconds.
    epoch_ms: u64,
}

/// Move the epoch forward when instants approach the end of `u32` range (~49 days).
const REBASE_AFTER_MS: u64 = 30 * 24 * 3600 * 1000;

impl MemoryWindows {
    pub fn new(capacity: usize, at_capacity: AtCapacity, now_ms: u64) -> Self {
        Self {
            windows: HashMap::new(),
            sweep_queue: VecDeque::new(),
            capacity,
            at_capacity,
            epoch_ms: now_ms.saturating_sub(1),
        }
    }

    fn relative(&mut self, now_ms: u64) -> u32 {
        let mut offset = now_ms.saturating_sub(self.epoch_ms);
        if offset > REBASE_AFTER_MS {
            let by = (offset - 24 * 3600 * 1000) as u32;
            for (window, _) in self.windows.values_mut() {
                window.rebase(by);
            }
            self.epoch_ms += u64::from(by);
            offset = now_ms - self.epoch_ms;
        }
        offset as u32
    }
}

impl WindowStore for MemoryWindows {
    fn check(&mut self, key: u64, policy: Policy, now_ms: u64) -> Checked {
        let now = self.relative(now_ms);
        let window_ms = u32::try_from(policy.window_ms).unwrap_or(u32::MAX);
        if let Some((window, longest)) = self.windows.get_mut(&key) {
            *longest = (*longest).max(window_ms);
            return Checked {
                decision: window.check(now, policy),
                tracked: true,
            };
        }
        if self.windows.len() >= self.capacity {
            // Make room from idle windows first, with bounded work.
            self.sweep(now_ms, 64);
        }
        if self.windows.len() >= self.capacity {
            let admitted = self.at_capacity == AtCapacity::Admit;
            return Checked {
                decision: Decision {
                    admitted,
                    limit: policy.max_requests,
                    remaining: 0,
                    retry_after_ms: if admitted { 0 } else { policy.window_ms },
                    reset_ms: policy.window_ms,
                },
                tracked: false,
            };
        }
        let mut window = Window::new();
        let decision = window.check(now, policy);
        self.windows.insert(key, (window, window_ms));
        self.sweep_queue.push_back(key);
        Checked {
            decision,
            tracked: true,
        }
    }

    fn reset(&mut self, matches: Option<&dyn Fn(u64) -> bool>) -> usize {
        let before = self.windows.len();
        match matches {
            None => {
                self.windows.clear();
                self.sweep_queue.clear();
            }
            Some(matches) => {
                self.windows.retain(|key, _| !matches(*key));
                let windows = &self.windows;
                self.sweep_queue.retain(|key| windows.contains_key(key));
            }
        }
        before - self.windows.len()
    }

    fn sweep(&mut self, now_ms: u64, budget: usize) -> usize {
        let now = self.relative(now_ms);
        let mut evicted = 0;
        for _ in 0..budget.min(self.sweep_queue.len()) {
            let Some(key) = self.sweep_queue.pop_front() else {
                break;
            };
            match self.windows.get(&key) {
                Some((window, longest)) if window.is_idle(now, *longest) => {
                    self.windows.remove(&key);
                    evicted += 1;
                }
                Some(_) => self.sweep_queue.push_back(key),
                None => {}
            }
        }
        self.sweep_queue.shrink_to(self.windows.len() * 2);
        evicted
    }

    fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        max_requests: 2,
        window_ms: 1000,
    };

    #[test]
    fn idle_windows_are_swept_with_bounded_work() {
        let mut store = MemoryWindows::new(100, AtCapacity::Admit, 0);
        for key in 0..50 {
            store.check(key, POLICY, 10);
        }
        assert_eq!(store.sweep(500, 100), 0, "nothing idle yet");
        assert_eq!(store.sweep(1011, 20), 20, "at most the budget");
        assert_eq!(store.sweep(1011, 100), 30);
        assert!(store.is_empty());
    }

    #[test]
    fn at_capacity_new_keys_follow_the_configured_behaviour() {
        let mut open = MemoryWindows::new(2, AtCapacity::Admit, 0);
        open.check(1, POLICY, 1);
        open.check(2, POLICY, 1);
        let overflow = open.check(3, POLICY, 2);
        assert!(overflow.decision.admitted && !overflow.tracked);
        assert_eq!(open.len(), 2);

        let mut closed = MemoryWindows::new(2, AtCapacity::Refuse, 0);
        closed.check(1, POLICY, 1);
        closed.check(2, POLICY, 1);
        assert!(!closed.check(3, POLICY, 2).decision.admitted);
        // Known keys are still served, and idle ones make room.
        assert!(closed.check(1, POLICY, 3).decision.admitted);
        assert!(closed.check(3, POLICY, 5000).tracked);
    }

    #[test]
    fn a_million_distinct_clients_never_grow_past_the_cap() {
        let cap = 10_000;
        let mut store = MemoryWindows::new(cap, AtCapacity::Admit, 0);
        for key in 0..1_000_000u64 {
            store.check(key, POLICY, key / 100);
            assert!(store.len() <= cap);
        }
        assert_eq!(store.len(), cap);
        assert!(store.sweep_queue.len() <= 2 * cap);
    }

    #[test]
    fn reset_forgets_matching_windows_only() {
        let mut store = MemoryWindows::new(10, AtCapacity::Admit, 0);
        for key in 0..4 {
            store.check(key, POLICY, 1);
        }
        assert_eq!(store.reset(Some(&|k| k % 2 == 0)), 2);
        assert_eq!(store.len(), 2);
        assert_eq!(store.reset(None), 2);
    }

    #[test]
    fn instants_survive_an_epoch_rebase() {
        let mut store = MemoryWindows::new(10, AtCapacity::Admit, 0);
        let late = REBASE_AFTER_MS + 5_000;
        store.check(7, POLICY, late);
        store.check(7, POLICY, late + 1);
        assert!(!store.check(7, POLICY, late + 2).decision.admitted);
        assert!(store.check(7, POLICY, late + 1000).decision.admitted);
    }
}
