//! Per-object exponential backoff: an object that keeps failing (an API error, an unreachable
//! host) is retried less and less often, and one that recovers is retried at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(5);
/// Longest delay between retries.
pub const MAX: Duration = Duration::from_secs(300);

/// The delay after `failures` consecutive failures: `base`, `2 base`, `4 base`, ... capped at `max`.
pub fn delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Consecutive failures per object key (`kind/namespace/name`).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records one more failure of `key` and returns how long to wait before the next attempt.
    pub fn failed(&self, key: &str, base: Duration) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n, base, MAX)
    }

    /// `key` succeeded: its next failure starts from the base delay again.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Objects currently backing off.
    pub fn len(&self) -> usize {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let s = |n| delay(n, Duration::from_secs(5), Duration::from_secs(300)).as_secs();
        assert_eq!([s(0), s(1), s(2), s(3), s(4), s(7), s(8), s(100)], [5, 5, 10, 20, 40, 300, 300, 300]);
    }

    #[test]
    fn per_object_and_reset_on_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("a", BASE), BASE);
        assert_eq!(b.failed("a", BASE), BASE * 2);
        assert_eq!(b.failed("b", BASE), BASE, "another object starts at the base");
        b.succeeded("a");
        assert_eq!(b.failed("a", BASE), BASE);
        b.succeeded("a");
        b.succeeded("b");
        assert!(b.is_empty(), "a recovered object leaves nothing behind");
    }
}
