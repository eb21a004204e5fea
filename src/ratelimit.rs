//! Rate limits, with time passed in: logging for events that can repeat per
//! frame or per request, and a token bucket for what a peer may ask for.

use std::time::{Duration, Instant};

/// Allows one log line per `interval`, counting what it suppressed.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Up to `burst` at once, then one per `every`.
#[derive(Debug)]
pub struct TokenBucket {
    burst: u32,
    every: Duration,
    tokens: u32,
    /// When the next token is due (while not full).
    next: Option<Instant>,
}

impl TokenBucket {
    pub const fn new(burst: u32, every: Duration) -> Self {
        TokenBucket {
            burst,
            every,
            tokens: burst,
            next: None,
        }
    }

    /// Takes a token if one is left at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        while let Some(due) = self.next
            && due <= now
        {
            self.tokens += 1;
            self.next = (self.tokens < self.burst).then(|| due + self.every);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        if self.next.is_none() {
            self.next = Some(now + self.every);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_its_rate() {
        let mut b = TokenBucket::new(2, Duration::from_millis(500));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(b.take(t0));
        assert!(b.take(ms(1)));
        assert!(!b.take(ms(2)));
        assert!(!b.take(ms(499)));
        // One token back 500 ms after the first was taken.
        assert!(b.take(ms(500)));
        assert!(!b.take(ms(501)));
        assert!(b.take(ms(1000)));
        // Idle for a long time: full again, but no more than the burst.
        assert!(b.take(ms(60_000)));
        assert!(b.take(ms(60_000)));
        assert!(!b.take(ms(60_000)));
        // 100 asks over 10 s get the burst plus one per interval.
        let mut b = TokenBucket::new(2, Duration::from_millis(500));
        let granted = (0..100).filter(|i| b.take(ms(100 * i))).count();
        assert_eq!(granted, 2 + 19);
    }

    #[test]
    fn limits_and_counts() {
        let mut l = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(l.check(t0), Some(0));
        assert_eq!(l.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.check(t0 + Duration::from_secs(6)), Some(2));
    }
}
