//! Dispatching jobs to tokio tasks, bounded: the local stand-in for invoking the worker
//! function asynchronously.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use streamer_core::{AsyncRequest, Result};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use crate::{Dispatcher, Outcome, Worker};

/// Runs each job in its own task, at most `limit` at once. Jobs waiting for a slot start
/// highest priority first, in dispatch order within a priority; retries are re-dispatched
/// after their backoff, with their priority.
#[derive(Debug, Clone)]
pub struct TaskDispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    worker: Worker,
    permits: Arc<Semaphore>,
    waiting: Mutex<Waiting>,
    /// Signalled when a job joins `waiting`.
    queued: Arc<Notify>,
    running: Mutex<HashMap<String, AbortHandle>>,
    /// Started on the first dispatch, so that the dispatcher can be built outside a runtime.
    scheduler: std::sync::OnceLock<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.get() {
            scheduler.abort();
        }
    }
}

/// Jobs waiting for a slot.
#[derive(Debug, Default)]
struct Waiting {
    jobs: BinaryHeap<Waiter>,
    /// Dispatches so far: the tie-break that keeps one priority first in, first out.
    dispatched: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Waiter {
    priority: i32,
    sequence: u64,
    request_id: String,
}

impl Ord for Waiter {
    /// The greatest waiter starts next: the highest priority, then the earliest dispatch.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl TaskDispatcher {
    /// At most `limit` jobs run at once; the others wait for a slot.
    pub fn new(worker: Worker, limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                worker,
                permits: Arc::new(Semaphore::new(limit.max(1))),
                waiting: Mutex::default(),
                queued: Arc::new(Notify::new()),
                running: Mutex::default(),
                scheduler: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Kills the task running `request_id`'s job, as a crashed worker would stop: no
    /// outcome is written and its lease runs out. `true` when there was one. For fault
    /// injection.
    pub fn kill(&self, request_id: &str) -> bool {
        let task = self
            .inner
            .running
            .lock()
            .expect("tasks lock")
            .remove(request_id);
        task.map(|task| task.abort()).is_some()
    }

    /// The ids of the jobs running now.
    pub fn running(&self) -> Vec<String> {
        let running = self.inner.running.lock().expect("tasks lock");
        running.keys().cloned().collect()
    }

    fn enqueue(&self, request_id: String, priority: i32) {
        self.inner.scheduler.get_or_init(|| {
            // The scheduler holds only a weak reference: dropping the last dispatcher stops it.
            let inner = Arc::downgrade(&self.inner);
            let queued = Arc::clone(&self.inner.queued);
            let permits = Arc::clone(&self.inner.permits);
            tokio::spawn(schedule(inner, queued, permits)).abort_handle()
        });
        {
            let mut waiting = self.inner.waiting.lock().expect("queue lock");
            waiting.dispatched += 1;
            let sequence = waiting.dispatched;
            waiting.jobs.push(Waiter {
                priority,
                sequence,
                request_id,
            });
        }
        self.inner.queued.notify_one();
    }
}

/// Takes a slot, then the best waiting job, and runs it; forever.
async fn schedule(inner: std::sync::Weak<Inner>, queued: Arc<Notify>, permits: Arc<Semaphore>) {
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let waiter = loop {
            // Registered before the queue is read, so that no notification is missed.
            let notified = queued.notified();
            let next = {
                let Some(this) = inner.upgrade() else { return };
                this.waiting.lock().expect("queue lock").jobs.pop()
            };
            if let Some(waiter) = next {
                break waiter;
            }
            notified.await;
        };
        let Some(this) = inner.upgrade() else { return };
        start(TaskDispatcher { inner: this }, waiter, permit);
    }
}

/// Runs one job in its own task, holding `permit` until it ends (or is killed).
fn start(dispatcher: TaskDispatcher, waiter: Waiter, permit: OwnedSemaphorePermit) {
    let Waiter {
        priority,
        request_id,
        ..
    } = waiter;
    // The task waits until its handle is registered, so that it can unregister itself.
    let (registered, ready) = tokio::sync::oneshot::channel::<()>();
    let this = dispatcher.clone();
    let id = request_id.clone();
    let task = tokio::spawn(async move {
        let _ = ready.await;
        let outcome = this.inner.worker.run(&request_id).await;
        drop(permit);
        {
            let mut running = this.inner.running.lock().expect("tasks lock");
            if running
                .get(&request_id)
                .is_some_and(|task| task.id() == tokio::task::id())
            {
                running.remove(&request_id);
            }
        }
        match outcome {
            Ok(Outcome::RetryAfter(delay)) => {
                tokio::time::sleep(delay).await;
                this.enqueue(request_id, priority);
            }
            Err(error) => tracing::error!(%request_id, %error, "job run failed"),
            Ok(_) => {}
        }
    });
    dispatcher
        .inner
        .running
        .lock()
        .expect("tasks lock")
        .insert(id, task.abort_handle());
    let _ = registered.send(());
}

#[async_trait]
impl Dispatcher for TaskDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        self.enqueue(request.id.clone(), request.priority);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(priority: i32, sequence: u64) -> Waiter {
        Waiter {
            priority,
            sequence,
            request_id: format!("{priority}/{sequence}"),
        }
    }

    #[test]
    fn waiters_leave_by_priority_then_dispatch_order() {
        let mut jobs: BinaryHeap<Waiter> = [
            waiter(0, 1),
            waiter(-5, 2),
            waiter(10, 3),
            waiter(0, 4),
            waiter(10, 5),
        ]
        .into_iter()
        .collect();
        let order: Vec<String> = std::iter::from_fn(|| jobs.pop().map(|w| w.request_id)).collect();
        assert_eq!(order, ["10/3", "10/5", "0/1", "0/4", "-5/2"]);
    }
}
