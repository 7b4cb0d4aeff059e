//! A min-heap of deadlines. Cancelling is lazy: the owner checks, when a timer fires,
//! whether it still means anything (a generation in the key makes that cheap).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug)]
pub struct Timers<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> Timers<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.next_deadline()? <= now {
            self.heap.pop().map(|Reverse((_, k))| k)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.insert(t0 + Duration::from_secs(2), "b");
        t.insert(t0 + Duration::from_secs(1), "a");
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(t.pop_due(later), Some("a"));
        assert_eq!(t.pop_due(later), Some("b"));
        assert!(t.is_empty());
    }
}
