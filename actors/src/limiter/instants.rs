//! A window's admitted instants: a ring kept inline while it is small, spilled to the heap
//! when it grows.
//!
//! Most clients have a few requests in their window; keeping those instants inside the
//! window (and so inside the shard's table entry) saves a pointer chase, and a cache miss,
//! on every check. Clients with more than [`INLINE`] instants get a `VecDeque`.

use std::collections::VecDeque;

/// Instants kept inline: a whole window of the default policy (20 per 60 s).
pub const INLINE: usize = 20;

#[derive(Debug, Clone)]
pub enum Instants {
    Inline {
        ring: [u32; INLINE],
        head: u8,
        len: u8,
    },
    Spilled(VecDeque<u32>),
}

impl Default for Instants {
    fn default() -> Self {
        Self::Inline {
            ring: [0; INLINE],
            head: 0,
            len: 0,
        }
    }
}

impl Instants {
    pub fn len(&self) -> usize {
        match self {
            Self::Inline { len, .. } => usize::from(*len),
            Self::Spilled(deque) => deque.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th instant, oldest first.
    pub fn get(&self, i: usize) -> Option<u32> {
        match self {
            Self::Inline { ring, head, len } => {
                (i < usize::from(*len)).then(|| ring[(usize::from(*head) + i) % INLINE])
            }
            Self::Spilled(deque) => deque.get(i).copied(),
        }
    }

    pub fn front(&self) -> Option<u32> {
        self.get(0)
    }

    pub fn back(&self) -> Option<u32> {
        self.len().checked_sub(1).and_then(|last| self.get(last))
    }

    pub fn push_back(&mut self, instant: u32) {
        match self {
            Self::Inline { ring, head, len } if usize::from(*len) < INLINE => {
                ring[(usize::from(*head) + usize::from(*len)) % INLINE] = instant;
                *len += 1;
            }
            Self::Inline { .. } => {
                let mut deque = VecDeque::with_capacity(2 * INLINE);
                deque.extend((0..self.len()).filter_map(|i| self.get(i)));
                deque.push_back(instant);
                *self = Self::Spilled(deque);
            }
            Self::Spilled(deque) => deque.push_back(instant),
        }
    }

    pub fn pop_front(&mut self) -> Option<u32> {
        match self {
            Self::Inline { ring, head, len } => {
                if *len == 0 {
                    return None;
                }
                let oldest = ring[usize::from(*head)];
                *head = ((usize::from(*head) + 1) % INLINE) as u8;
                *len -= 1;
                Some(oldest)
            }
            Self::Spilled(deque) => deque.pop_front(),
        }
    }

    /// Applies `f` to every instant.
    pub fn update(&mut self, f: impl Fn(u32) -> u32) {
        match self {
            Self::Inline { ring, .. } => ring.iter_mut().for_each(|i| *i = f(*i)),
            Self::Spilled(deque) => deque.iter_mut().for_each(|i| *i = f(*i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_queue_across_the_spill() {
        let mut ours = Instants::default();
        let mut model = VecDeque::new();
        // Push and pop in a pattern that wraps the inline ring, then spills it.
        for step in 0..200u32 {
            if step % 3 == 2 || step > 100 && step % 7 == 0 {
                assert_eq!(ours.pop_front(), model.pop_front());
            } else {
                ours.push_back(step);
                model.push_back(step);
            }
            assert_eq!(ours.len(), model.len());
            assert_eq!(ours.front(), model.front().copied());
            assert_eq!(ours.back(), model.back().copied());
            for i in 0..=model.len() {
                assert_eq!(ours.get(i), model.get(i).copied());
            }
        }
        assert!(matches!(ours, Instants::Spilled(_)), "grew past {INLINE}");
    }

    #[test]
    fn stays_small() {
        // 20 × 4 bytes, head, length and the variant: smaller than the ring it replaces
        // (a `VecDeque` header plus its heap buffer).
        assert!(std::mem::size_of::<Instants>() <= 88);
    }
}
