//! The durable calls of a handler: [`JobContext::step`], [`JobContext::child`],
//! [`JobContext::children`], [`JobContext::sleep`] and [`JobContext::sleep_until`]
//! (`streamer_core::workflow` says how they replay).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::InputType;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use streamer_core::batch::child_id;
use streamer_core::workflow::NON_DETERMINISTIC;
use streamer_core::{
    AsyncRequest, Checkpoint, Clock, Error, ParentLink, RequestStatus, Store, Wait,
};

use crate::{Handler, Handlers, JobContext, JobError};

/// Numbers of children kept for one durable call: a child's number in its workflow is
/// `call × this + position`.
const CHILD_NUMBERS_PER_CALL: u32 = 10_000;
/// The most children one durable call starts: the ids of those it waits for are kept in the
/// workflow's item (`waitingFor`), well within its 400 KB at this count, and each child that
/// ends reads the others to count what is left.
const MAX_CHILDREN_PER_CALL: usize = 1_000;
/// Children created or read at once.
const CONCURRENT_CHILDREN: usize = 16;

/// How long a workflow whose children the tenant's quota refused waits before it tries to
/// start them again (the sweeper wakes it: at its next sweep after that).
const QUOTA_WAIT: chrono::Duration = chrono::Duration::seconds(1);

/// What a workflow's attempt needs for its durable calls: the store that keeps its
/// checkpoints, and where it is in them.
pub(crate) struct Durable {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    handlers: Arc<Handlers>,
    /// The request, as its attempt started.
    request: AsyncRequest,
    /// The checkpoints kept so far, read at the first durable call.
    kept: tokio::sync::OnceCell<Vec<Checkpoint>>,
    /// The number of the next durable call.
    next: AtomicU32,
    /// What the attempt suspended on, if it did.
    wait: Mutex<Option<Wait>>,
    /// Whether this attempt kept a checkpoint.
    kept_one: AtomicBool,
    /// The children this attempt started or replayed, in call order.
    children: Mutex<Vec<String>>,
    /// The largest checkpoint value, as JSON.
    max_bytes: usize,
    /// The tenant's active-requests quota, which children count against.
    max_active: Option<usize>,
}

impl JobContext {
    /// Durable calls for this attempt of `request`: its checkpoints are kept in `store`,
    /// each within `max_bytes` of JSON; children are checked against `handlers`.
    #[must_use]
    pub fn with_checkpoints(
        mut self,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        handlers: Arc<Handlers>,
        request: &AsyncRequest,
        max_bytes: usize,
    ) -> Self {
        self.durable = Some(Arc::new(Durable {
            store,
            clock,
            handlers,
            request: request.clone(),
            kept: tokio::sync::OnceCell::new(),
            next: AtomicU32::new(0),
            wait: Mutex::new(None),
            kept_one: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
            max_bytes,
            max_active: None,
        }));
        self
    }

    /// The children this attempt's durable calls start count against the tenant's quota of
    /// requests queued, running or retrying: past it, the request waits (WAITING, `wakeAt`
    /// a second on) and starts the rest when it wakes; the ones started stay. Set after
    /// [`JobContext::with_checkpoints`].
    #[must_use]
    pub fn with_tenant_active_requests(mut self, max: Option<usize>) -> Self {
        if let Some(durable) = self.durable.as_mut().and_then(Arc::get_mut) {
            durable.max_active = max;
        }
        self
    }

    /// What this attempt suspended on: the worker ends it WAITING for that.
    pub fn suspension(&self) -> Option<Wait> {
        self.durable
            .as_ref()
            .and_then(|durable| durable.wait.lock().expect("wait lock").clone())
    }

    /// Whether this attempt kept a checkpoint: an attempt that runs out of time after one
    /// goes on from there instead of counting as a failure.
    pub fn checkpointed(&self) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|durable| durable.kept_one.load(Ordering::Relaxed))
    }

    /// The children this attempt started or replayed (also those whose start a crash or a
    /// dropped handler cut short): when the attempt ends CANCELLED, the worker cancels those
    /// that have not ended. It knows them exactly; an index listing could miss the newest.
    pub fn children_started(&self) -> Vec<String> {
        self.durable.as_ref().map_or_else(Vec::new, |durable| {
            durable.children.lock().expect("children lock").clone()
        })
    }

    fn durable(&self) -> Result<&Durable, JobError> {
        self.durable.as_deref().ok_or_else(|| {
            JobError::permanent(
                "NOT_DURABLE",
                "durable calls need a context with checkpoints (`JobContext::with_checkpoints`: the worker's, or the test kit's)",
            )
        })
    }

    /// Runs `f` once: its result is checkpointed before `step` returns, and a later attempt
    /// of this request (after a retryable failure, a crashed worker, a deadline, a wake)
    /// gets it back without running `f` again. Durable calls are made one after another, in
    /// the same order on every attempt: a step that comes back under another name fails the
    /// request `NON_DETERMINISTIC`. A result over the checkpoint size fails the step
    /// `LIMIT_EXCEEDED`.
    pub async fn step<T, F, Fut>(&self, name: &str, f: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, JobError>>,
    {
        let durable = self.durable()?;
        let (index, kept) = durable.take(&format!("step:{name}")).await?;
        if let Some(kept) = kept {
            return serde_json::from_value(kept.value).map_err(|e| {
                JobError::permanent(
                    NON_DETERMINISTIC,
                    format!("step \"{name}\" kept a result of another type: {e}"),
                )
            });
        }
        let result = f().await?;
        let value = serde_json::to_value(&result)
            .map_err(|e| JobError::permanent("STEP_RESULT", format!("step \"{name}\": {e}")))?;
        durable.keep(index, &format!("step:{name}"), value).await?;
        Ok(result)
    }

    /// Starts a child request of `H` with `input` (the same child on every replay, never
    /// twice) and suspends this request until it ends: then its typed output, or its error
    /// (code and message) as a permanent [`JobError`], which fails this request too unless
    /// the handler handles it.
    pub async fn child<H: Handler>(&self, input: H::Input) -> Result<H::Output, JobError>
    where
        H::Output: DeserializeOwned,
    {
        let mut outputs = self.children::<H>([input]).await?;
        outputs
            .pop()
            .ok_or_else(|| JobError::permanent("NO_CHILD", "the child was not started"))
    }

    /// Starts one child request of `H` per input, in parallel, and suspends this request
    /// until every one has ended: then their typed outputs in input order, or the first
    /// failed child's error (see [`JobContext::child`]). The same inputs must come at the
    /// same place on every replay (`NON_DETERMINISTIC` otherwise). At most 1,000 children a
    /// call (`LIMIT_EXCEEDED`); more are more calls.
    pub async fn children<H: Handler>(
        &self,
        inputs: impl IntoIterator<Item = H::Input>,
    ) -> Result<Vec<H::Output>, JobError>
    where
        H::Output: DeserializeOwned,
    {
        let inputs: Vec<H::Input> = inputs.into_iter().take(MAX_CHILDREN_PER_CALL + 1).collect();
        if inputs.len() > MAX_CHILDREN_PER_CALL {
            return Err(JobError::permanent(
                "LIMIT_EXCEEDED",
                format!("at most {MAX_CHILDREN_PER_CALL} children a call"),
            ));
        }
        let durable = self.durable()?;
        let handler = durable.handlers.get(H::ACTION).ok_or_else(|| {
            JobError::permanent(
                "UNKNOWN_ACTION",
                format!("no handler for action \"{}\"", H::ACTION),
            )
        })?;
        let payloads = inputs
            .into_iter()
            .map(|input| {
                let value = input.to_value().into_json().map_err(|e| e.to_string())?;
                handler.validate(value)
            })
            .collect::<Result<Vec<Value>, String>>()
            .map_err(|e| JobError::permanent("BAD_CHILD_INPUT", e))?;
        let name = format!("children:{}", H::ACTION);
        let digest = Value::String(crate::schema::payloads_digest(&payloads));
        let (index, kept) = durable.take(&name).await?;
        let ids: Vec<String> = match kept {
            Some(kept) => {
                if kept.value["digest"] != digest {
                    return Err(JobError::permanent(
                        NON_DETERMINISTIC,
                        format!("call {index} ({name}) started children with other inputs"),
                    ));
                }
                let ids: Vec<String> =
                    serde_json::from_value(kept.value["ids"].clone()).map_err(|e| {
                        JobError::permanent(NON_DETERMINISTIC, format!("call {index}: {e}"))
                    })?;
                durable.started(&ids);
                ids
            }
            None => {
                let Some(ids) = durable.start_children(index, H::ACTION, payloads).await? else {
                    // Over the tenant's quota: waits, holding no worker, and starts the
                    // rest when it wakes (the ones started keep their ids).
                    let wake = durable.clock.now() + QUOTA_WAIT;
                    return Err(durable.suspend(Wait::Until(wake)));
                };
                durable
                    .keep(index, &name, json!({ "ids": ids, "digest": digest }))
                    .await?;
                ids
            }
        };
        let children = durable.read(&ids).await?;
        let open: Vec<String> = children
            .iter()
            .filter(|child| !child.status.is_terminal())
            .map(|child| child.id.clone())
            .collect();
        if !open.is_empty() {
            return Err(durable.suspend(Wait::Children(open)));
        }
        children
            .into_iter()
            .map(|child| match child.status {
                RequestStatus::Completed => {
                    serde_json::from_value(child.result.unwrap_or_default()).map_err(|e| {
                        JobError::permanent(
                            "CHILD_OUTPUT",
                            format!("child {}: its output does not read back: {e}", child.id),
                        )
                    })
                }
                RequestStatus::Failed => {
                    let error = child.error.unwrap_or_else(|| streamer_core::RequestError {
                        code: "CHILD_FAILED".into(),
                        message: String::new(),
                        retryable: false,
                    });
                    Err(JobError::permanent(
                        error.code,
                        format!("child {}: {}", child.id, error.message),
                    ))
                }
                _ => Err(JobError::permanent(
                    "CHILD_CANCELLED",
                    format!("child {} was cancelled", child.id),
                )),
            })
            .collect()
    }

    /// Suspends this request for `duration`, with no worker running it, then goes on.
    pub async fn sleep(&self, duration: Duration) -> Result<(), JobError> {
        let durable = self.durable()?;
        let wake = durable.clock.now() + chrono::Duration::from_std(duration).unwrap_or_default();
        self.sleep_until(wake).await
    }

    /// Suspends this request until `at` (the first attempt's `at` holds on every replay),
    /// with no worker running it, then goes on.
    pub async fn sleep_until(&self, at: DateTime<Utc>) -> Result<(), JobError> {
        let durable = self.durable()?;
        let (index, kept) = durable.take("sleep").await?;
        let wake = match kept {
            Some(kept) => serde_json::from_value(kept.value).map_err(|e| {
                JobError::permanent(NON_DETERMINISTIC, format!("call {index}: {e}"))
            })?,
            None => {
                durable.keep(index, "sleep", json!(at)).await?;
                at
            }
        };
        if durable.clock.now() >= wake {
            return Ok(());
        }
        Err(durable.suspend(Wait::Until(wake)))
    }
}

impl Durable {
    /// The number of the next call, and what was kept at it, checked to be a call `name`.
    async fn take(&self, name: &str) -> Result<(u32, Option<Checkpoint>), JobError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let kept = self
            .kept
            .get_or_try_init(|| self.store.checkpoints(&self.request.id))
            .await
            .map_err(store_error)?;
        let Some(found) = kept.iter().find(|c| c.index == index) else {
            return Ok((index, None));
        };
        if found.name != name {
            return Err(JobError::permanent(
                NON_DETERMINISTIC,
                format!(
                    "call {index} was \"{}\" and is \"{name}\" now: the handler must make the same calls in the same order",
                    found.name
                ),
            ));
        }
        Ok((index, Some(found.clone())))
    }

    /// Keeps what call `index` did.
    async fn keep(&self, index: u32, name: &str, value: Value) -> Result<(), JobError> {
        let bytes = streamer_core::json_len(&value);
        if bytes > self.max_bytes {
            return Err(JobError::permanent(
                "LIMIT_EXCEEDED",
                format!(
                    "call {index} ({name}) has a result of {bytes} bytes, over the {} a checkpoint keeps",
                    self.max_bytes
                ),
            ));
        }
        let checkpoint = Checkpoint {
            index,
            name: name.to_owned(),
            value,
        };
        self.store
            .save_checkpoint(&self.request.id, &checkpoint, self.request.expires_at)
            .await
            .map_err(store_error)?;
        self.kept_one.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Creates the children of call `index` (again after a crash: an existing one stays).
    /// `None` when the tenant's active-requests quota left some of them unstarted.
    async fn start_children(
        &self,
        index: u32,
        action: &str,
        payloads: Vec<Value>,
    ) -> Result<Option<Vec<String>>, JobError> {
        let now = self.clock.now();
        let children: Vec<AsyncRequest> = (0u32..)
            .zip(payloads)
            .map(|(position, payload)| {
                let number = index * CHILD_NUMBERS_PER_CALL + position;
                let mut child =
                    AsyncRequest::new(child_id(&self.request.id, number), action, payload, now)
                        .with_priority(self.request.priority);
                child.tenant.clone_from(&self.request.tenant);
                child.owner.clone_from(&self.request.owner);
                child.parent = Some(ParentLink {
                    id: self.request.id.clone(),
                    index: number,
                });
                child
            })
            .collect();
        let ids: Vec<String> = children.iter().map(|child| child.id.clone()).collect();
        self.started(&ids);
        // Owned futures: a borrow inside the stream's closures defeats `Send` inference.
        let max_active = self.max_active;
        let created: Vec<bool> = futures::stream::iter(children)
            .map(|child| {
                let store = Arc::clone(&self.store);
                async move {
                    match store.create_request_within(&child, max_active).await {
                        Ok(()) | Err(Error::Conflict(_)) => Ok(true),
                        Err(Error::QuotaFull(_)) => Ok(false),
                        Err(error) => Err(store_error(error)),
                    }
                }
            })
            .buffer_unordered(CONCURRENT_CHILDREN)
            .try_collect()
            .await?;
        Ok(created.iter().all(|created| *created).then_some(ids))
    }

    /// Notes `ids` among the children of this attempt, before they are created.
    fn started(&self, ids: &[String]) {
        self.children
            .lock()
            .expect("children lock")
            .extend_from_slice(ids);
    }

    /// The children with these ids, in order.
    async fn read(&self, ids: &[String]) -> Result<Vec<AsyncRequest>, JobError> {
        futures::stream::iter(ids.to_vec())
            .map(|id| {
                let store = Arc::clone(&self.store);
                async move {
                    store
                        .get_request(&id)
                        .await
                        .map_err(store_error)?
                        .ok_or_else(|| {
                            JobError::permanent("CHILD_GONE", format!("child {id} is gone"))
                        })
                }
            })
            .buffered(CONCURRENT_CHILDREN)
            .try_collect()
            .await
    }

    /// Records what the attempt waits for; the error the handler returns with `?`.
    fn suspend(&self, wait: Wait) -> JobError {
        *self.wait.lock().expect("wait lock") = Some(wait);
        let mut error = JobError::permanent("SUSPENDED", "the request waits");
        error.suspension = true;
        error
    }
}

/// A store failure in a durable call: retryable, as any failure to reach the store.
fn store_error(error: Error) -> JobError {
    tracing::warn!(error = ?error.to_string(), "durable call: store failed");
    JobError::retryable(
        "STORE_UNAVAILABLE",
        "the store failed; the call is tried again",
    )
}
