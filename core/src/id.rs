//! Identifiers, injected: random in production, sequential in tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of unique identifiers.
pub trait IdGenerator: Send + Sync + std::fmt::Debug {
    /// A new identifier, unique for the life of the deployment.
    fn next_id(&self) -> String;
}

/// Random UUIDs (v4).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn next_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// `prefix-1`, `prefix-2`, …: predictable ids for tests and snapshots.
#[derive(Debug)]
pub struct SequentialIds {
    prefix: String,
    next: AtomicU64,
}

impl SequentialIds {
    /// Ids `prefix-1`, `prefix-2`, ….
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            next: AtomicU64::new(1),
        }
    }
}

impl IdGenerator for SequentialIds {
    fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}
