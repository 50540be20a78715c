//! Time, injected. Production code reads [`SystemClock`]; tests drive a [`ManualClock`] so
//! that every timestamp in a snapshot is the same on every run.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to: each reading advances it by a fixed tick, so that
/// successive writes get distinct, predictable timestamps.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(DateTime<Utc>, Duration)>>,
}

impl ManualClock {
    /// A clock standing at `start` that advances by `tick` on every reading.
    pub fn new(start: DateTime<Utc>, tick: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new((start, tick))),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut guard = self.inner.lock().expect("clock lock");
        guard.0 += by;
    }
}

impl Default for ManualClock {
    /// 2026-01-01T00:00:00Z, one millisecond per reading.
    fn default() -> Self {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("valid date");
        Self::new(start.with_timezone(&Utc), Duration::milliseconds(1))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        // A std Mutex: the critical section is two additions and never awaits.
        let mut guard = self.inner.lock().expect("clock lock");
        let (now, tick) = *guard;
        guard.0 = now + tick;
        now
    }
}
