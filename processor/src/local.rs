//! Dispatching jobs to tokio tasks, bounded: the local stand-in for invoking the worker
//! function asynchronously.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use streamer_core::{AsyncRequest, Result};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use crate::{CancelSignal, Dispatcher, Outcome, Worker};

/// Runs each job in its own task, at most `limit` at once, and at most a tenant's share of
/// them for one tenant, so that one tenant's backlog never holds every slot. Jobs waiting for
/// a slot start highest priority first, in dispatch order within a priority, skipping
/// tenants at their share; retries are re-dispatched after their backoff, with their
/// priority. A cancelled job is signalled at once ([`CancelSignal`]).
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
    running: Mutex<HashMap<String, Running>>,
    /// Most jobs of one tenant at once.
    tenant_share: usize,
    /// Jobs whose every attempt is killed this long after it starts (fault injection).
    doomed: Mutex<HashMap<String, std::time::Duration>>,
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

/// A job running in its task.
#[derive(Debug)]
struct Running {
    task: AbortHandle,
    cancel: CancelSignal,
}

/// Jobs waiting for a slot, by tenant, so that picking the next one costs one look at
/// each waiting tenant however long any tenant's backlog is.
#[derive(Debug, Default)]
struct Waiting {
    jobs: HashMap<String, BinaryHeap<Waiter>>,
    /// The ids in `jobs`: a job is waiting at most once, however often it is dispatched.
    ids: HashSet<String>,
    /// Dispatches so far: the tie-break that keeps one priority first in, first out.
    dispatched: u64,
    /// Jobs running now, by tenant.
    running: HashMap<String, usize>,
    /// Each waiting tenant's rounds, which share its turns among its groups.
    rounds: HashMap<String, Rounds>,
    /// The state a waiting job was dispatched with, for its claim
    /// ([`Worker::run_signalled`]); kept for at most [`KNOWN_STATES`] jobs.
    known: HashMap<String, AsyncRequest>,
}

/// At most this many waiting jobs keep the state they were dispatched with: the others'
/// claims read the request.
const KNOWN_STATES: usize = 1_024;

/// Fair turns among one tenant's groups of jobs (a batch's children are a group; any other
/// job is a group of its own): a group's jobs take successive rounds from the round being
/// started now, and of one priority the lowest round starts first. A batch of a thousand
/// children takes one turn in each round, so that a job enqueued after it starts next
/// instead of after the thousand, and two batches take turns.
#[derive(Debug, Default)]
struct Rounds {
    /// The round of the last job started.
    now: u64,
    /// The next round of each group with jobs past `now`.
    next: HashMap<String, u64>,
}

impl Rounds {
    fn take(&mut self, group: &str) -> u64 {
        let round = self.next.get(group).copied().unwrap_or(0).max(self.now);
        self.next.insert(group.to_owned(), round + 1);
        round
    }

    fn started(&mut self, round: u64) {
        self.now = self.now.max(round);
        // A group whose next round is not ahead of `now` starts from `now` anyway.
        if self.next.len() > 64 {
            let now = self.now;
            self.next.retain(|_, next| *next > now);
        }
    }
}

impl Waiting {
    /// Queues a job of `group` unless it is waiting already; `false` when it was.
    fn push(&mut self, request_id: String, priority: i32, tenant: String, group: String) -> bool {
        if !self.ids.insert(request_id.clone()) {
            return false;
        }
        self.dispatched += 1;
        let sequence = self.dispatched;
        let round = self.rounds.entry(tenant.clone()).or_default().take(&group);
        self.jobs.entry(tenant.clone()).or_default().push(Waiter {
            priority,
            round,
            sequence,
            request_id,
            tenant,
            group,
        });
        true
    }

    /// The best waiting job whose tenant is under its share, taken off the queue and
    /// counted as running.
    fn next(&mut self, share: usize) -> Option<(Waiter, Option<AsyncRequest>)> {
        let tenant = self
            .jobs
            .iter()
            .filter(|(tenant, _)| self.running.get(*tenant).copied().unwrap_or(0) < share)
            .filter_map(|(tenant, jobs)| Some((tenant, jobs.peek()?)))
            .max_by(|(_, a), (_, b)| a.cmp(b))
            .map(|(tenant, _)| tenant.clone())?;
        let jobs = self.jobs.get_mut(&tenant)?;
        let waiter = jobs.pop()?;
        if jobs.is_empty() {
            self.jobs.remove(&tenant);
            self.rounds.remove(&tenant);
        } else if let Some(rounds) = self.rounds.get_mut(&tenant) {
            rounds.started(waiter.round);
        }
        self.ids.remove(&waiter.request_id);
        *self.running.entry(tenant).or_default() += 1;
        let known = self.known.remove(&waiter.request_id);
        Some((waiter, known))
    }

    fn ended(&mut self, tenant: &str) {
        if let Some(count) = self.running.get_mut(tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running.remove(tenant);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Waiter {
    priority: i32,
    /// Its group's turn among the tenant's groups ([`Rounds`]).
    round: u64,
    sequence: u64,
    request_id: String,
    tenant: String,
    /// Its batch, or the request itself.
    group: String,
}

impl Ord for Waiter {
    /// The greatest waiter starts next: the highest priority, then the earliest round, then
    /// the earliest dispatch.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.round.cmp(&self.round))
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The share of the job slots one tenant may hold by default: three quarters of them, so
/// that a quarter is always left for the others.
pub fn default_tenant_share(limit: usize) -> usize {
    (limit * 3 / 4).max(1)
}

impl TaskDispatcher {
    /// At most `limit` jobs run at once, at most [`default_tenant_share`] of them one
    /// tenant's; the others wait for a slot.
    pub fn new(worker: Worker, limit: usize) -> Self {
        Self::with_tenant_share(worker, limit, default_tenant_share(limit))
    }

    /// At most `limit` jobs run at once, at most `share` of them one tenant's.
    pub fn with_tenant_share(worker: Worker, limit: usize, share: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                worker,
                permits: Arc::new(Semaphore::new(limit.max(1))),
                waiting: Mutex::default(),
                queued: Arc::new(Notify::new()),
                running: Mutex::default(),
                tenant_share: share.max(1),
                doomed: Mutex::default(),
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
        let killed = task.map(|running| running.task.abort()).is_some();
        if killed {
            tracing::info!(request_id, "worker killed (fault injection)");
        }
        killed
    }

    /// Kills every later attempt of `request_id`'s job `after` it starts, and the one
    /// running now at once, as a worker that runs out of memory or time on that job would
    /// stop: no outcome is ever written. For fault injection.
    pub fn kill_every_attempt(&self, request_id: &str, after: std::time::Duration) {
        self.inner
            .doomed
            .lock()
            .expect("doomed lock")
            .insert(request_id.to_owned(), after);
        self.kill(request_id);
    }

    /// Fails the next `attempts` attempts of `target` (a request id or an action); see
    /// [`Worker::fail_next_attempts`]. For fault injection.
    pub fn fail_next_attempts(&self, target: &str, attempts: u32) {
        self.inner.worker.fail_next_attempts(target, attempts);
    }

    /// The ids of the jobs running now.
    pub fn running(&self) -> Vec<String> {
        let running = self.inner.running.lock().expect("tasks lock");
        running.keys().cloned().collect()
    }

    fn enqueue(
        &self,
        request_id: String,
        known: Option<&AsyncRequest>,
        priority: i32,
        tenant: String,
        group: String,
    ) {
        self.inner.scheduler.get_or_init(|| {
            // The scheduler holds only a weak reference: dropping the last dispatcher stops it.
            let inner = Arc::downgrade(&self.inner);
            let queued = Arc::clone(&self.inner.queued);
            let permits = Arc::clone(&self.inner.permits);
            tokio::spawn(schedule(inner, queued, permits)).abort_handle()
        });
        // A job already waiting or running is not queued twice: the sweeper dispatches what
        // it finds due on every sweep, and the worker's claim would only refuse the copy
        // after it had taken a slot.
        if self
            .inner
            .running
            .lock()
            .expect("tasks lock")
            .contains_key(&request_id)
        {
            return;
        }
        {
            let mut waiting = self.inner.waiting.lock().expect("queue lock");
            if !waiting.push(request_id.clone(), priority, tenant, group) {
                return;
            }
            if let Some(known) = known
                && waiting.known.len() < KNOWN_STATES
            {
                waiting.known.insert(request_id, known.clone());
            }
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
            // Registered before the queue is read, so that no notification is missed: a job
            // that joins the queue or ends (its tenant under its share again) notifies.
            let notified = queued.notified();
            let next = {
                let Some(this) = inner.upgrade() else { return };
                let share = this.tenant_share;
                this.waiting.lock().expect("queue lock").next(share)
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
fn start(
    dispatcher: TaskDispatcher,
    (waiter, known): (Waiter, Option<AsyncRequest>),
    permit: OwnedSemaphorePermit,
) {
    let Waiter {
        priority,
        request_id,
        tenant,
        group,
        ..
    } = waiter;
    let cancel = CancelSignal::default();
    // The task waits until its handle is registered, so that it can unregister itself.
    let (registered, ready) = tokio::sync::oneshot::channel::<()>();
    let this = dispatcher.clone();
    let id = request_id.clone();
    let signal = cancel.clone();
    // The slot and the tenant's share are given back however the task ends, killed too.
    let slot = Slot {
        dispatcher: dispatcher.clone(),
        tenant: tenant.clone(),
        _permit: permit,
    };
    let task = tokio::spawn(async move {
        let _ = ready.await;
        let doomed = this
            .inner
            .doomed
            .lock()
            .expect("doomed lock")
            .get(&request_id)
            .copied();
        let run = this
            .inner
            .worker
            .run_signalled(&request_id, known, None, signal);
        let outcome = match doomed {
            None => run.await,
            Some(after) => {
                let Ok(outcome) = tokio::time::timeout(after, run).await else {
                    tracing::warn!(%request_id, "attempt killed (fault injection)");
                    this.unregister(&request_id);
                    return;
                };
                outcome
            }
        };
        drop(slot);
        this.unregister(&request_id);
        match outcome {
            Ok(Outcome::RetryAfter(delay)) => {
                tokio::time::sleep(delay).await;
                this.enqueue(request_id, None, priority, tenant, group);
            }
            Err(error) => {
                tracing::error!(%request_id, error = ?error.to_string(), "job run failed")
            }
            Ok(_) => {}
        }
    });
    dispatcher.inner.running.lock().expect("tasks lock").insert(
        id,
        Running {
            task: task.abort_handle(),
            cancel,
        },
    );
    let _ = registered.send(());
}

impl TaskDispatcher {
    /// Forgets the running task of `request_id` if it is the current task.
    fn unregister(&self, request_id: &str) {
        let mut running = self.inner.running.lock().expect("tasks lock");
        if running
            .get(request_id)
            .is_some_and(|running| running.task.id() == tokio::task::id())
        {
            running.remove(request_id);
        }
    }
}

/// A running job's slot: dropping it frees the slot and the tenant's share, and wakes the
/// scheduler, which may have jobs of that tenant waiting.
struct Slot {
    dispatcher: TaskDispatcher,
    tenant: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &self.dispatcher.inner;
        inner
            .waiting
            .lock()
            .expect("queue lock")
            .ended(&self.tenant);
        inner.queued.notify_one();
    }
}

#[async_trait]
impl Dispatcher for TaskDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        let group = request
            .parent
            .as_ref()
            .map_or(&request.id, |parent| &parent.id);
        self.enqueue(
            request.id.clone(),
            Some(request),
            request.priority,
            request.tenant.clone(),
            group.clone(),
        );
        Ok(())
    }

    async fn cancel(&self, request: &AsyncRequest) -> Result<()> {
        let running = self.inner.running.lock().expect("tasks lock");
        if let Some(running) = running.get(&request.id) {
            running.cancel.cancel();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(priority: i32, sequence: u64) -> Waiter {
        Waiter {
            priority,
            round: 0,
            sequence,
            request_id: format!("{priority}/{sequence}"),
            tenant: String::new(),
            group: String::new(),
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

    #[test]
    fn a_tenant_at_its_share_waits_while_others_start() {
        let mut waiting = Waiting::default();
        for n in 0..100 {
            assert!(waiting.push(format!("a{n}"), 100, "a".into(), format!("a{n}")));
        }
        assert!(waiting.push("b0".into(), 0, "b".into(), "b0".into()));
        let started: Vec<String> =
            std::iter::from_fn(|| waiting.next(2).map(|(w, _)| w.request_id)).collect();
        // a's priority is higher, but it may hold only two slots.
        assert_eq!(started, ["a0", "a1", "b0"]);
        waiting.ended("a");
        assert_eq!(
            waiting.next(2).map(|(w, _)| w.request_id).as_deref(),
            Some("a2")
        );
        assert!(waiting.next(2).is_none());
    }

    #[test]
    fn a_job_waits_once_however_often_it_is_dispatched() {
        let mut waiting = Waiting::default();
        assert!(waiting.push("x".into(), 0, "t".into(), "x".into()));
        assert!(!waiting.push("x".into(), 0, "t".into(), "x".into()));
        assert_eq!(
            waiting.next(8).map(|(w, _)| w.request_id).as_deref(),
            Some("x")
        );
        assert!(waiting.next(8).is_none());
        // Once started it may be queued again (a retry).
        assert!(waiting.push("x".into(), 0, "t".into(), "x".into()));
    }

    #[test]
    fn a_batch_takes_turns_with_the_tenants_other_jobs() {
        let mut waiting = Waiting::default();
        let push = |waiting: &mut Waiting, id: &str, group: &str| {
            assert!(waiting.push(id.into(), 0, "t".into(), group.into()));
        };
        for n in 0..4 {
            push(&mut waiting, &format!("b.{n}"), "b");
        }
        let mut started = vec![waiting.next(8).unwrap().0.request_id];
        waiting.ended("t");
        // Enqueued after the batch: starts next, not after its three other children.
        push(&mut waiting, "single", "single");
        for n in 0..2 {
            push(&mut waiting, &format!("c.{n}"), "c");
        }
        started.extend(std::iter::from_fn(|| {
            let next = waiting.next(8).map(|(w, _)| w.request_id);
            waiting.ended("t");
            next
        }));
        assert_eq!(
            started,
            ["b.0", "single", "c.0", "b.1", "c.1", "b.2", "b.3"]
        );
    }
}
