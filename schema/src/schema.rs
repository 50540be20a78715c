//! The public GraphQL surface (the SDL snapshot in `tests/snapshots/schema__sdl.snap`),
//! built as a dynamic schema so that every
//! registered handler adds its own typed mutation field and output type.

use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Scalar, Schema,
    SchemaBuilder, SchemaError, Subscription, SubscriptionField, SubscriptionFieldFuture, TypeRef,
    Union,
};
use async_graphql::{ErrorExtensions, Value as GqlValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream;
use serde_json::Value;
use streamer_core::store::{RequestFilter, modify_request};
use streamer_core::{
    Access, AsyncRequest, Clock, Error as CoreError, IdGenerator, LimitExceeded, Limits,
    PRIORITIES, Principal, RequestStatus, Store,
};

use crate::bridge::json_field;
use crate::execute::{Capture, Event, Target};
use crate::{Handlers, Registered, batches, templates};

/// What resolvers need to reach: the store, the clock and the id source.
#[derive(Clone, Debug)]
pub struct Services {
    /// Where requests live.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Request ids.
    pub ids: Arc<dyn IdGenerator>,
    /// What one client may ask, and one tenant.
    pub limits: Limits,
    /// Who may act on a request: its tenant, or only its owner.
    pub access: Access,
}

/// The caller, as the gateway authenticated it (request data). Without one, nothing that
/// touches requests runs.
pub(crate) fn principal<'a>(ctx: &ResolverContext<'a>) -> async_graphql::Result<&'a Principal> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| client_error("UNAUTHENTICATED", "authentication required"))
}

/// A quota of the caller's tenant that is used up: `QUOTA_EXCEEDED`, naming it.
pub(crate) fn quota_error(
    quota: &'static str,
    message: String,
    max: usize,
) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| {
        e.set("code", "QUOTA_EXCEEDED");
        e.set("quota", quota);
        e.set("max", max);
    })
}

/// The default page size of `requests`, and its maximum.
pub(crate) const DEFAULT_PAGE: usize = 20;
pub(crate) const MAX_PAGE: usize = 100;

/// A GraphQL error a client may see: a message and `extensions.code`, nothing internal.
pub(crate) fn client_error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

/// Maps a core error to what a client may see; internal detail goes to the log only.
pub(crate) fn from_core(error: CoreError) -> async_graphql::Error {
    match error {
        CoreError::NotFound(_) => client_error("NOT_FOUND", "no request with this id"),
        CoreError::Transition { status, action, .. } => client_error(
            "INVALID_STATE",
            format!("a {status} request cannot {action}"),
        ),
        other => {
            tracing::error!(error = ?other.to_string(), source = ?std::error::Error::source(&other), "store failed");
            client_error("INTERNAL", "internal error")
        }
    }
}

pub(crate) fn datetime(at: DateTime<Utc>) -> GqlValue {
    GqlValue::String(at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub(crate) fn json(value: &Value) -> GqlValue {
    GqlValue::from_json(value.clone()).unwrap_or(GqlValue::Null)
}

fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

fn decode_cursor(cursor: &str) -> Result<String, async_graphql::Error> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            client_error(
                "BAD_USER_INPUT",
                "`after` is not a cursor this API returned",
            )
        })
}

/// The `id: ID!` argument. The spec coerces an Int literal or variable to ID, so `5` is the
/// id "5" (a client never sees "not a string").
fn id_arg(ctx: &ResolverContext<'_>) -> async_graphql::Result<String> {
    match ctx.args.try_get("id")?.as_value() {
        GqlValue::String(id) => Ok(id.clone()),
        GqlValue::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(client_error("BAD_USER_INPUT", "`id` is not an ID")),
    }
}

/// An argument, unless it is absent or null (a variable left out arrives as null).
pub(crate) fn arg<'a>(
    ctx: &'a ResolverContext<'_>,
    name: &str,
) -> Option<async_graphql::dynamic::ValueAccessor<'a>> {
    ctx.args.get(name).filter(|v| !v.is_null())
}

/// The request a field of `AsyncRequest` is resolved on: owned, or a shared state being
/// pushed.
pub(crate) fn request_of<'a>(ctx: &ResolverContext<'a>) -> async_graphql::Result<&'a AsyncRequest> {
    match ctx.parent_value.downcast_ref::<Arc<AsyncRequest>>() {
        Some(shared) => Ok(shared),
        None => ctx.parent_value.try_downcast_ref::<AsyncRequest>(),
    }
}

/// A field of `AsyncRequest` computed from the request alone.
fn request_field(name: &str, ty: TypeRef, get: fn(&AsyncRequest) -> Option<GqlValue>) -> Field {
    let budgeted = name == "result";
    Field::new(name, ty, move |ctx| {
        FieldFuture::new(async move {
            let request = request_of(&ctx)?;
            if budgeted {
                spend_on_result(&ctx, request)?;
            }
            Ok(get(request).map(FieldValue::value))
        })
    })
}

/// How many bytes of request results (`result`, `output`) one execution may still build.
/// An answer is held to the message size limit only once it is built; a few hundred bytes
/// of query asking for a hundred requests' results under many aliases would build far more
/// than that first. With a budget in the request's data (`Arc<ResultBudget>`), each result
/// is weighed before it is built; once the budget is spent the field is an error instead,
/// and the caller, which kept the budget, refuses the answer with [`ResultBudget::exceeded`].
#[derive(Debug)]
pub struct ResultBudget {
    max: usize,
    spent: std::sync::atomic::AtomicUsize,
    exceeded: std::sync::OnceLock<LimitExceeded>,
}

impl ResultBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            spent: std::sync::atomic::AtomicUsize::new(0),
            exceeded: std::sync::OnceLock::new(),
        }
    }

    /// The limit, as it was first exceeded, when the results selected went over it.
    pub fn exceeded(&self) -> Option<&LimitExceeded> {
        self.exceeded.get()
    }

    /// Adds `bytes` to what was spent; the limit exceeded once that is over the budget.
    fn spend(&self, bytes: usize) -> Result<(), LimitExceeded> {
        let spent = self
            .spent
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(bytes);
        LimitExceeded::check(
            "messageBytes",
            "the size in bytes of the results selected",
            spent,
            self.max,
        )
        .inspect_err(|exceeded| {
            let _ = self.exceeded.set(exceeded.clone());
        })
    }
}

/// Charges `request`'s result to the execution's [`ResultBudget`], if it has one.
fn spend_on_result(ctx: &ResolverContext<'_>, request: &AsyncRequest) -> async_graphql::Result<()> {
    let (Some(budget), Some(result)) = (ctx.data_opt::<Arc<ResultBudget>>(), &request.result)
    else {
        return Ok(());
    };
    budget
        .spend(streamer_core::json_len(result))
        .map_err(|exceeded| async_graphql::Error::new(exceeded.to_string()))
}

/// A field of `AsyncRequest` computed from the request alone. The same table serves the
/// schema and [`crate::projection`], which resolves simple stored documents without the
/// executor: both give a field the same value.
#[derive(Debug)]
pub(crate) struct RequestScalar {
    pub(crate) name: &'static str,
    ty: &'static str,
    pub(crate) non_null: bool,
    pub(crate) get: fn(&AsyncRequest) -> Option<GqlValue>,
}

pub(crate) const REQUEST_SCALARS: &[RequestScalar] = &[
    RequestScalar {
        name: "id",
        ty: TypeRef::ID,
        non_null: true,
        get: |r| Some(r.id.clone().into()),
    },
    RequestScalar {
        name: "action",
        ty: TypeRef::STRING,
        non_null: true,
        get: |r| Some(r.action.clone().into()),
    },
    RequestScalar {
        name: "status",
        ty: "RequestStatus",
        non_null: true,
        get: |r| Some(GqlValue::Enum(async_graphql::Name::new(r.status.as_str()))),
    },
    RequestScalar {
        name: "progress",
        ty: TypeRef::FLOAT,
        non_null: true,
        get: |r| Some(r.progress.into()),
    },
    RequestScalar {
        name: "message",
        ty: TypeRef::STRING,
        non_null: false,
        get: |r| r.message.clone().map(Into::into),
    },
    RequestScalar {
        name: "version",
        ty: TypeRef::INT,
        non_null: true,
        get: |r| Some(r.version.into()),
    },
    RequestScalar {
        name: "attempts",
        ty: TypeRef::INT,
        non_null: true,
        get: |r| Some(r.attempts.into()),
    },
    RequestScalar {
        name: "priority",
        ty: TypeRef::INT,
        non_null: true,
        get: |r| Some(r.priority.into()),
    },
    RequestScalar {
        name: "createdAt",
        ty: "DateTime",
        non_null: true,
        get: |r| Some(datetime(r.created_at)),
    },
    RequestScalar {
        name: "updatedAt",
        ty: "DateTime",
        non_null: true,
        get: |r| Some(datetime(r.updated_at)),
    },
    RequestScalar {
        name: "nextAttemptAt",
        ty: "DateTime",
        non_null: false,
        get: |r| r.next_attempt_at.map(datetime),
    },
    RequestScalar {
        name: "wakeAt",
        ty: "DateTime",
        non_null: false,
        get: |r| r.wake_at.map(datetime),
    },
    RequestScalar {
        name: "template",
        ty: TypeRef::STRING,
        non_null: false,
        get: |r| r.template.clone().map(Into::into),
    },
    RequestScalar {
        name: "result",
        ty: "JSON",
        non_null: false,
        get: |r| r.result.as_ref().map(json),
    },
];

/// The `error` of a request as the JSON object `RequestError`'s fields read.
pub(crate) fn request_error(request: &AsyncRequest) -> Option<Value> {
    request
        .error
        .as_ref()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
}

fn async_request_type() -> Object {
    let mut object = Object::new("AsyncRequest");
    for scalar in REQUEST_SCALARS {
        let ty = if scalar.non_null {
            TypeRef::named_nn(scalar.ty)
        } else {
            TypeRef::named(scalar.ty)
        };
        object = object.field(request_field(scalar.name, ty, scalar.get));
    }
    let object = object
        .field(Field::new(
            "output",
            TypeRef::named("RequestOutput"),
            |ctx| {
                FieldFuture::new(async move {
                    let request = request_of(&ctx)?;
                    spend_on_result(&ctx, request)?;
                    let handlers = ctx.data::<Arc<Handlers>>()?;
                    let (Some(result), Some(handler)) =
                        (&request.result, handlers.get(&request.action))
                    else {
                        return Ok(None);
                    };
                    Ok(Some(
                        FieldValue::value(json(result)).with_type(handler.output_type().to_owned()),
                    ))
                })
            },
        ))
        .field(request_field(
            "error",
            TypeRef::named("RequestError"),
            |r| request_error(r).as_ref().map(json),
        ))
        .field(request_field(
            "waitingFor",
            TypeRef::named_nn_list(TypeRef::ID),
            |r| {
                (!r.waiting_for.is_empty()).then(|| {
                    GqlValue::List(r.waiting_for.iter().cloned().map(Into::into).collect())
                })
            },
        ));
    batches::request_fields(object)
}

/// One page of a listing, as `AsyncRequestConnection` resolves it.
#[derive(Default)]
pub(crate) struct Edges {
    items: Vec<AsyncRequest>,
    has_next_page: bool,
}

/// The filter a paged listing's arguments ask for (`status`, `first`, `after`), within the
/// caller's tenant (and its own requests where only owners may act).
pub(crate) fn page_filter(
    ctx: &ResolverContext<'_>,
    caller: &Principal,
    services: &Services,
) -> async_graphql::Result<RequestFilter> {
    let status = match arg(ctx, "status") {
        Some(status) => RequestStatus::parse(status.enum_name()?),
        None => None,
    };
    let limit = match arg(ctx, "first") {
        Some(first) => {
            let first = first.i64()?;
            if !(0..=MAX_PAGE as i64).contains(&first) {
                return Err(client_error(
                    "BAD_USER_INPUT",
                    format!("`first` must be 0..={MAX_PAGE}"),
                ));
            }
            first as usize
        }
        None => DEFAULT_PAGE,
    };
    let after = match arg(ctx, "after") {
        Some(after) => Some(decode_cursor(after.string()?)?),
        None => None,
    };
    let newest_first = match arg(ctx, "newestFirst") {
        Some(newest) => newest.boolean()?,
        None => false,
    };
    Ok(RequestFilter {
        tenant: Some(caller.tenant.clone()),
        owner: services.access.owner_filter(caller),
        status,
        parent: None,
        newest_first,
        limit,
        after,
    })
}

/// One page of the requests `filter` asks for, as an `AsyncRequestConnection`.
pub(crate) async fn list_page(
    services: &Services,
    filter: &RequestFilter,
) -> async_graphql::Result<FieldValue<'static>> {
    let page = services
        .store
        .list_requests(filter)
        .await
        .map_err(from_core)?;
    Ok(FieldValue::owned_any(Edges {
        items: page.items,
        has_next_page: page.next.is_some(),
    }))
}

fn connection_types() -> [Object; 3] {
    let connection = Object::new("AsyncRequestConnection")
        .field(Field::new("edges", TypeRef::named_nn_list_nn("AsyncRequestEdge"), |ctx| {
            FieldFuture::new(async move {
                let edges = ctx.parent_value.try_downcast_ref::<Edges>()?;
                Ok(Some(FieldValue::list(edges.items.iter().cloned().map(FieldValue::owned_any))))
            })
        }))
        .field(Field::new("pageInfo", TypeRef::named_nn("PageInfo"), |ctx| {
            FieldFuture::new(async move {
                let edges = ctx.parent_value.try_downcast_ref::<Edges>()?;
                let end_cursor = edges.items.last().map(|r| encode_cursor(&r.id));
                let info = serde_json::json!({ "hasNextPage": edges.has_next_page, "endCursor": end_cursor });
                Ok(Some(FieldValue::value(json(&info))))
            })
        }));
    let edge = Object::new("AsyncRequestEdge")
        .field(Field::new(
            "node",
            TypeRef::named_nn("AsyncRequest"),
            |ctx| {
                FieldFuture::new(async move {
                    Ok(Some(FieldValue::owned_any(request_of(&ctx)?.clone())))
                })
            },
        ))
        .field(request_field(
            "cursor",
            TypeRef::named_nn(TypeRef::STRING),
            |r| Some(encode_cursor(&r.id).into()),
        ));
    let page_info = Object::new("PageInfo")
        .field(json_field(
            "hasNextPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
        ))
        .field(json_field("endCursor", TypeRef::named(TypeRef::STRING)));
    [connection, edge, page_info]
}

fn query_type() -> Object {
    Object::new("Query")
        .field(
            Field::new("request", TypeRef::named("AsyncRequest"), |ctx| {
                FieldFuture::new(async move {
                    let services = ctx.data::<Services>()?;
                    let caller = principal(&ctx)?;
                    let id = &id_arg(&ctx)?;
                    let request = services.store.get_request(id).await.map_err(from_core)?;
                    // Another tenant's request is answered as an unknown one: null.
                    Ok(request
                        .filter(|r| services.access.allows(caller, r))
                        .map(FieldValue::owned_any))
                })
            })
            .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
        )
        .field(
            Field::new(
                "requests",
                TypeRef::named_nn("AsyncRequestConnection"),
                |ctx| {
                    FieldFuture::new(async move {
                        let services = ctx.data::<Services>()?;
                        let caller = principal(&ctx)?;
                        let mut filter = page_filter(&ctx, caller, services)?;
                        if let Some(parent) = arg(&ctx, "parent") {
                            let parent = parent.string()?;
                            // Another tenant's batch has no children for the caller.
                            let visible = services
                                .store
                                .get_request(parent)
                                .await
                                .map_err(from_core)?
                                .is_some_and(|batch| services.access.allows(caller, &batch));
                            if !visible {
                                return Ok(Some(FieldValue::owned_any(Edges::default())));
                            }
                            filter.parent = Some(parent.to_owned());
                        }
                        Ok(Some(list_page(services, &filter).await?))
                    })
                },
            )
            .argument(InputValue::new("status", TypeRef::named("RequestStatus")))
            .argument(InputValue::new("parent", TypeRef::named(TypeRef::ID)))
            .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
            .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
            .argument(InputValue::new(
                "newestFirst",
                TypeRef::named(TypeRef::BOOLEAN),
            )),
        )
        .field(Field::new(
            "actions",
            TypeRef::named_nn_list_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    let handlers = ctx.data::<Arc<Handlers>>()?;
                    Ok(Some(FieldValue::value(GqlValue::List(
                        handlers.actions().into_iter().map(Into::into).collect(),
                    ))))
                })
            },
        ))
        .field(templates::template_query())
        .field(templates::templates_query())
}

/// The longest idempotency key accepted.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request id of a keyed enqueue: the same scope (the tenant, and the user where only
/// owners may act), action and key always name the same request; any other scope names
/// another. A hash of the parts, each prefixed with its length so that no choice of names
/// makes two scopes meet, and so that the id reveals neither the tenant nor the key.
pub(crate) fn keyed_id(caller: &Principal, access: Access, action: &str, key: &str) -> String {
    let user = match access {
        Access::Tenant => "",
        Access::Owner => caller.user.as_str(),
    };
    let digest = digest_of([caller.tenant.as_str(), user, action, key]);
    format!("k{}", URL_SAFE_NO_PAD.encode(&digest[..24]))
}

/// The SHA-256 of `parts`, each prefixed with its length, so that no two lists of parts
/// hash the same text.
fn digest_of<T: AsRef<[u8]>>(parts: impl IntoIterator<Item = T>) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        let part = part.as_ref();
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// A digest of payloads, in order (URL-safe base64): what a repeat of a batch, or a replay
/// of a workflow's children, must bring again.
pub(crate) fn payloads_digest(payloads: &[Value]) -> String {
    URL_SAFE_NO_PAD.encode(digest_of(payloads.iter().map(Value::to_string)))
}

/// The handler of `action`, or `UNKNOWN_ACTION` naming the registered ones.
pub(crate) fn registered<'a>(
    handlers: &'a Handlers,
    action: &str,
) -> async_graphql::Result<&'a Arc<Registered>> {
    handlers.get(action).ok_or_else(|| {
        client_error(
            "UNKNOWN_ACTION",
            format!(
                "no handler for action \"{action}\"; registered: {}",
                handlers.actions().join(", ")
            ),
        )
    })
}

/// What the enqueueing mutations take besides the input.
#[derive(Debug, Default)]
pub(crate) struct EnqueueOptions {
    /// `idempotencyKey`.
    pub(crate) key: Option<String>,
    /// `priority`, 0 when not given.
    pub(crate) priority: i32,
    /// `name@version` of the template the payload came from.
    pub(crate) template: Option<String>,
}

impl EnqueueOptions {
    /// The enqueueing mutations' optional arguments: `idempotencyKey: String` (repeating a
    /// mutation with the same key and input returns the same request instead of starting a
    /// second job) and `priority: Int` (higher starts first when jobs wait for a worker).
    pub(crate) fn arguments(field: Field) -> Field {
        field
            .argument(InputValue::new(
                "idempotencyKey",
                TypeRef::named(TypeRef::STRING),
            ))
            .argument(InputValue::new("priority", TypeRef::named(TypeRef::INT)))
    }

    pub(crate) fn read(ctx: &ResolverContext<'_>) -> async_graphql::Result<Self> {
        let key = match ctx.args.get("idempotencyKey") {
            Some(value) if !value.is_null() => Some(value.string()?.to_owned()),
            _ => None,
        };
        let priority = match ctx.args.get("priority") {
            Some(value) if !value.is_null() => value.i64()?,
            _ => 0,
        };
        let priority = i32::try_from(priority)
            .ok()
            .filter(|p| PRIORITIES.contains(p))
            .ok_or_else(|| {
                client_error(
                    "BAD_USER_INPUT",
                    format!(
                        "a priority is from {} to {}, got {priority}",
                        PRIORITIES.start(),
                        PRIORITIES.end()
                    ),
                )
            })?;
        Ok(Self {
            key,
            priority,
            template: None,
        })
    }
}

/// Refuses `count` enqueues (one request, or a batch's items) over the tenant's rate quota
/// (enqueues per second). The quota of requests not yet ended is held by the store as it
/// creates the requests.
pub(crate) async fn check_rate(
    services: &Services,
    caller: &Principal,
    now: DateTime<Utc>,
    count: u32,
) -> async_graphql::Result<()> {
    let limits = &services.limits;
    let Some(rate) = limits.max_tenant_enqueues_per_second else {
        return Ok(());
    };
    let taken = services
        .store
        .take_enqueue_tokens(&caller.tenant, now.timestamp(), rate, count)
        .await
        .map_err(from_core)?;
    if !taken {
        return Err(quota_error(
            "enqueueRate",
            if count == 1 {
                format!("the tenant enqueued {rate} requests this second, its quota")
            } else {
                format!("{count} more requests this second would pass the tenant's quota of {rate}")
            },
            rate as usize,
        ));
    }
    Ok(())
}

/// Refuses an idempotency key that is empty or too long.
pub(crate) fn check_key(key: Option<&str>) -> async_graphql::Result<()> {
    if let Some(key) = key
        && (key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(client_error(
            "BAD_USER_INPUT",
            format!("an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    Ok(())
}

/// A limit exceeded, as a client sees it: `LIMIT_EXCEEDED`, with the limit, its maximum and
/// the value that passed it.
pub(crate) fn limit_error(exceeded: &LimitExceeded) -> async_graphql::Error {
    async_graphql::Error::new(exceeded.to_string()).extend_with(|_, e| {
        e.set("code", "LIMIT_EXCEEDED");
        e.set("limit", exceeded.limit);
        e.set("max", exceeded.max);
        e.set("actual", exceeded.actual);
    })
}

/// Refuses a payload over `Limits::max_payload_bytes` with `LIMIT_EXCEEDED`.
pub(crate) fn check_payload_size(
    services: &Services,
    payload: &Value,
) -> async_graphql::Result<()> {
    let size = serde_json::to_string(payload).map_or(0, |text| text.len());
    LimitExceeded::check(
        "payloadBytes",
        "the payload size in bytes",
        size,
        services.limits.max_payload_bytes,
    )
    .map_err(|exceeded| limit_error(&exceeded))
}

/// Enqueues a job. With an idempotency key, a repeated enqueue with the same input returns
/// the request the first one made instead of starting a second job; the same key with a
/// different input is refused.
pub(crate) async fn enqueue(
    services: &Services,
    caller: &Principal,
    handler: &Registered,
    payload: Value,
    options: EnqueueOptions,
) -> async_graphql::Result<AsyncRequest> {
    let key = options.key.as_deref();
    check_payload_size(services, &payload)?;
    check_key(key)?;
    let now = services.clock.now();
    check_rate(services, caller, now, 1).await?;
    let id = match key {
        Some(key) => keyed_id(caller, services.access, handler.action(), key),
        None => services.ids.next_id(),
    };
    let mut request = AsyncRequest::new(id, handler.action(), payload, now)
        .with_priority(options.priority)
        .owned_by(caller);
    request.template = options.template;
    let max_active = services.limits.max_tenant_active_requests;
    match services
        .store
        .create_request_within(&request, max_active)
        .await
    {
        Ok(()) => {}
        Err(CoreError::QuotaFull(_)) => {
            let max = max_active.unwrap_or_default();
            return Err(quota_error(
                "activeRequests",
                format!("the tenant has {max} requests queued or running, its quota"),
                max,
            ));
        }
        Err(CoreError::Conflict(_)) if key.is_some() => {
            return keyed_repeat(services, caller, &request).await;
        }
        Err(error) => return Err(from_core(error)),
    }
    tracing::info!(request_id = %request.id, action = %request.action, "enqueued");
    Ok(request)
}

/// The request a keyed enqueue made before `request`, returned when it was made with the
/// same payload; the key used with another one is refused. Only the scope that made it may
/// see it: the hash makes anything else a collision, answered as a reuse without a word
/// about the other request.
pub(crate) async fn keyed_repeat(
    services: &Services,
    caller: &Principal,
    request: &AsyncRequest,
) -> async_graphql::Result<AsyncRequest> {
    let existing = services
        .store
        .get_request(&request.id)
        .await
        .map_err(from_core)?
        .ok_or_else(|| client_error("INTERNAL", "the keyed request vanished"))?;
    if existing.payload != request.payload || !services.access.allows(caller, &existing) {
        return Err(client_error(
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotency key was used with a different input",
        ));
    }
    tracing::info!(request_id = %existing.id, "enqueue repeated: the first request stands");
    Ok(existing)
}

fn typed_mutation(handler: Arc<Registered>) -> Field {
    let input_type = handler.input_type().to_owned();
    // Clients generate their types from this line (`streamer-codegen`): keep its form.
    let description = format!(
        "Enqueues a `{}` request. Output: `{}`.",
        handler.action(),
        handler.output_type()
    );
    let field = Field::new(
        handler.action().to_owned(),
        TypeRef::named_nn("AsyncRequest"),
        move |ctx| {
            let handler = Arc::clone(&handler);
            FieldFuture::new(async move {
                let services = ctx.data::<Services>()?;
                let input = ctx.args.try_get("input")?.as_value().clone();
                let payload = handler
                    .validate_value(input)
                    .map_err(|e| client_error("BAD_USER_INPUT", e))?;
                let options = EnqueueOptions::read(&ctx)?;
                let caller = principal(&ctx)?;
                Ok(Some(FieldValue::owned_any(
                    enqueue(services, caller, &handler, payload, options).await?,
                )))
            })
        },
    )
    .description(description)
    .argument(InputValue::new("input", TypeRef::named_nn(input_type)));
    EnqueueOptions::arguments(field)
}

/// A mutation `name(id: ID!): AsyncRequest!` that applies one move of the status machine.
fn request_move(
    name: &str,
    apply: fn(&mut AsyncRequest, DateTime<Utc>) -> streamer_core::Result<()>,
) -> Field {
    Field::new(name, TypeRef::named_nn("AsyncRequest"), move |ctx| {
        FieldFuture::new(async move {
            let services = ctx.data::<Services>()?;
            let caller = principal(&ctx)?;
            let id = &id_arg(&ctx)?;
            let change = |request: &mut AsyncRequest, now| {
                // Another tenant's request is answered as an unknown one.
                if !services.access.allows(caller, request) {
                    return Err(CoreError::NotFound(format!("request {id}")));
                }
                apply(request, now)
            };
            let (request, ()) = modify_request(&*services.store, &*services.clock, id, change)
                .await
                .map_err(from_core)?;
            Ok(Some(FieldValue::owned_any(request)))
        })
    })
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
}

fn mutation_type(handlers: &Handlers) -> Object {
    let generic = Field::new("enqueue", TypeRef::named_nn("AsyncRequest"), |ctx| {
        FieldFuture::new(async move {
            let services = ctx.data::<Services>()?;
            let handlers = ctx.data::<Arc<Handlers>>()?;
            let handler = registered(handlers, ctx.args.try_get("action")?.string()?)?;
            let payload = ctx
                .args
                .try_get("payload")?
                .as_value()
                .clone()
                .into_json()?;
            let payload = handler
                .validate(payload)
                .map_err(|e| client_error("BAD_USER_INPUT", e))?;
            let options = EnqueueOptions::read(&ctx)?;
            let caller = principal(&ctx)?;
            Ok(Some(FieldValue::owned_any(
                enqueue(services, caller, handler, payload, options).await?,
            )))
        })
    })
    .argument(InputValue::new(
        "action",
        TypeRef::named_nn(TypeRef::STRING),
    ))
    .argument(InputValue::new("payload", TypeRef::named_nn("JSON")));
    let mut mutation = Object::new("Mutation").field(EnqueueOptions::arguments(generic));
    for handler in handlers.iter() {
        mutation = mutation.field(typed_mutation(Arc::clone(handler)));
    }
    mutation = mutation
        .field(request_move("cancelRequest", AsyncRequest::cancel))
        .field(request_move("retryRequest", AsyncRequest::redrive));
    for field in batches::mutation_fields(handlers) {
        mutation = mutation.field(field);
    }
    for field in templates::mutation_fields() {
        mutation = mutation.field(field);
    }
    mutation
}

fn subscription_type() -> Subscription {
    Subscription::new("Subscription").field(
        SubscriptionField::new(
            "requestProgress",
            TypeRef::named_nn("AsyncRequest"),
            |ctx| {
                SubscriptionFieldFuture::new(async move {
                    let id = id_arg(&ctx)?;
                    let after_version = match arg(&ctx, "afterVersion") {
                        Some(v) => Some(u64::try_from(v.i64()?).map_err(|_| {
                            client_error("BAD_USER_INPUT", "`afterVersion` must not be negative")
                        })?),
                        None => None,
                    };
                    if let Some(capture) = ctx.data_opt::<Arc<Capture>>() {
                        capture.0.lock().expect("capture lock").push(Target {
                            request_id: id,
                            after_version,
                        });
                        return Ok(stream::iter(Vec::<async_graphql::Result<FieldValue>>::new()));
                    }
                    // Resolving one stored document for one state: yield it if it is this
                    // subscription's request and newer than what the client asked to skip.
                    let state = ctx
                        .data_opt::<Event>()
                        .map(|event| &event.0)
                        .filter(|state| {
                            state.id == id && state.version > after_version.unwrap_or(0)
                        });
                    Ok(stream::iter(
                        state
                            .map(|s| Ok(FieldValue::owned_any(Arc::clone(s))))
                            .into_iter()
                            .collect::<Vec<_>>(),
                    ))
                })
            },
        )
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new(
            "afterVersion",
            TypeRef::named(TypeRef::INT),
        )),
    )
}

/// Builds the schema for these handlers over these services.
///
/// # Errors
///
/// When the types do not make a valid schema, or a handler's input or output uses an
/// interface or a union (outputs are stored as JSON, which cannot say which member a value
/// is).
pub fn build(handlers: Arc<Handlers>, services: Services) -> Result<Schema, SchemaError> {
    builder(handlers, services)?.finish()
}

/// The schema the processor resolves stored subscription documents with: the same types,
/// with only the validation rules that guard execution itself (fragment cycles). Every
/// stored document passed the full validation when it was subscribed; validating it again
/// on every push was most of a push's cost.
pub fn build_for_stored_documents(
    handlers: Arc<Handlers>,
    services: Services,
) -> Result<Schema, SchemaError> {
    builder(handlers, services)?
        .validation_mode(async_graphql::ValidationMode::Fast)
        .finish()
}

fn builder(handlers: Arc<Handlers>, services: Services) -> Result<SchemaBuilder, SchemaError> {
    let mut status = Enum::new("RequestStatus");
    for s in RequestStatus::ALL {
        status = status.item(s.as_str());
    }
    let mut output = Union::new("RequestOutput");
    for handler in handlers.iter() {
        output = output.possible_type(handler.output_type());
    }
    let request_error = Object::new("RequestError")
        .field(json_field("code", TypeRef::named_nn(TypeRef::STRING)))
        .field(json_field("message", TypeRef::named_nn(TypeRef::STRING)))
        .field(json_field("retryable", TypeRef::named_nn(TypeRef::BOOLEAN)));

    let mut builder = Schema::build("Query", Some("Mutation"), Some("Subscription"))
        .register(Scalar::new("JSON").description("Any JSON value."))
        .register(
            Scalar::new("DateTime")
                .description("An RFC 3339 timestamp in UTC.")
                .validator(
                    |v| matches!(v, GqlValue::String(s) if DateTime::parse_from_rfc3339(s).is_ok()),
                ),
        )
        .register(status)
        .register(async_request_type())
        .register(request_error)
        .register(output)
        .register(templates::template_type())
        .register(batches::batch_progress_type())
        .register(query_type())
        .register(mutation_type(&handlers))
        .register(subscription_type());
    for connection_type in connection_types() {
        builder = builder.register(connection_type);
    }
    for handler in handlers.iter() {
        for ty in handler.types().map_err(SchemaError)? {
            builder = builder.register(ty);
        }
    }
    Ok(builder.data(handlers).data(services))
}
