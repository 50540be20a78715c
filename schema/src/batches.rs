//! Batches in the schema: `enqueueBatch` and one `<action>Batch` per handler, the
//! `BatchProgress` type, and the `parent`, `children` and `batch` fields of `AsyncRequest`.
//!
//! A batch is validated whole before anything is stored: the first bad item refuses it,
//! named by its index. Its children are ordinary requests of the same action, tenant, owner
//! and priority; the processor counts each child's moves into the batch
//! ([`streamer_core::batch`]).

use std::sync::Arc;

use async_graphql::ErrorExtensions;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};
use serde_json::{Value, json};
use streamer_core::{AsyncRequest, Error as CoreError, LimitExceeded, Principal, batch};

use crate::bridge::json_field;
use crate::schema::{
    EnqueueOptions, Services, check_key, check_rate, client_error, from_core, keyed_id,
    keyed_repeat, limit_error, list_page, page_filter, payloads_digest, principal, quota_error,
    registered, request_of,
};
use crate::{Handlers, Registered};

/// `BatchProgress`: a batch's counts of its children.
pub(crate) fn batch_progress_type() -> Object {
    let mut object = Object::new("BatchProgress")
        .description("A batch's children by where they are; `total` is their number.");
    for name in [
        "total",
        "queued",
        "running",
        "completed",
        "failed",
        "cancelled",
    ] {
        object = object.field(json_field(name, TypeRef::named_nn(TypeRef::INT)));
    }
    object
}

/// The fields of `AsyncRequest` that follow the batch relation: `parent`, `children` and
/// `batch`.
pub(crate) fn request_fields(object: Object) -> Object {
    let parent = Field::new("parent", TypeRef::named("AsyncRequest"), |ctx| {
        FieldFuture::new(async move {
            let request = request_of(&ctx)?;
            let Some(link) = &request.parent else {
                return Ok(None);
            };
            let services = ctx.data::<Services>()?;
            let parent = services
                .store
                .get_request(&link.id)
                .await
                .map_err(from_core)?;
            // The parent shares its child's tenant; under owner access it is still checked.
            Ok(parent
                .filter(|parent| {
                    ctx.data_opt::<Principal>()
                        .is_none_or(|caller| services.access.allows(caller, parent))
                })
                .map(FieldValue::owned_any))
        })
    })
    .description("The batch or workflow that started this request.");
    let children = Field::new(
        "children",
        TypeRef::named_nn("AsyncRequestConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let request = request_of(&ctx)?;
                let services = ctx.data::<Services>()?;
                let caller = match ctx.data_opt::<Principal>() {
                    Some(caller) => caller.clone(),
                    // A stored document resolved for a push: its subscriber's view.
                    None => Principal::new(request.tenant.clone(), request.owner.clone()),
                };
                let mut filter = page_filter(&ctx, &caller, services)?;
                if !services.access.allows(&caller, request) {
                    filter.limit = 0;
                }
                filter.parent = Some(request.id.clone());
                list_page(services, &filter).await.map(Some)
            })
        },
    )
    .description("The requests this batch or workflow started, in their order.")
    .argument(InputValue::new("status", TypeRef::named("RequestStatus")))
    .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
    .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)));
    let progress = Field::new("batch", TypeRef::named("BatchProgress"), |ctx| {
        FieldFuture::new(async move {
            let request = request_of(&ctx)?;
            Ok(request.batch.map(|counts| {
                FieldValue::value(crate::schema::json(
                    &serde_json::to_value(counts).unwrap_or(Value::Null),
                ))
            }))
        })
    })
    .description("Set on a batch: its children's counts.");
    object.field(parent).field(children).field(progress)
}

/// `enqueueBatch` and one `<action>Batch` per handler.
pub(crate) fn mutation_fields(handlers: &Handlers) -> Vec<Field> {
    let generic = Field::new("enqueueBatch", TypeRef::named_nn("AsyncRequest"), |ctx| {
        FieldFuture::new(async move {
            let services = ctx.data::<Services>()?;
            let handlers = ctx.data::<Arc<Handlers>>()?;
            let handler = registered(handlers, ctx.args.try_get("action")?.string()?)?;
            let items = ctx.args.try_get("payloads")?.list()?;
            check_count(services, items.len())?;
            let mut payloads = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let payload = item.as_value().clone().into_json()?;
                payloads.push(validated(
                    services,
                    handler,
                    index,
                    payload,
                    Registered::validate,
                )?);
            }
            let options = EnqueueOptions::read(&ctx)?;
            let caller = principal(&ctx)?;
            let batch = enqueue_batch(services, caller, handler, payloads, options).await?;
            Ok(Some(FieldValue::owned_any(batch)))
        })
    })
    .description("Enqueues a batch: one request per payload, followed as one.")
    .argument(InputValue::new(
        "action",
        TypeRef::named_nn(TypeRef::STRING),
    ))
    .argument(InputValue::new(
        "payloads",
        TypeRef::named_nn_list_nn("JSON"),
    ));
    let mut fields = vec![EnqueueOptions::arguments(generic)];
    for handler in handlers.iter() {
        fields.push(typed_batch(Arc::clone(handler)));
    }
    fields
}

fn typed_batch(handler: Arc<Registered>) -> Field {
    let input_type = handler.input_type().to_owned();
    let description = format!(
        "Enqueues a batch of `{}` requests, one per input, followed as one.",
        handler.action()
    );
    let field = Field::new(
        format!("{}Batch", handler.action()),
        TypeRef::named_nn("AsyncRequest"),
        move |ctx| {
            let handler = Arc::clone(&handler);
            FieldFuture::new(async move {
                let services = ctx.data::<Services>()?;
                let items = ctx.args.try_get("inputs")?.list()?;
                check_count(services, items.len())?;
                let mut payloads = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let value = item.as_value().clone();
                    payloads.push(validated(
                        services,
                        &handler,
                        index,
                        value,
                        Registered::validate_value,
                    )?);
                }
                let options = EnqueueOptions::read(&ctx)?;
                let caller = principal(&ctx)?;
                let batch = enqueue_batch(services, caller, &handler, payloads, options).await?;
                Ok(Some(FieldValue::owned_any(batch)))
            })
        },
    )
    .description(description)
    .argument(InputValue::new(
        "inputs",
        TypeRef::named_nn_list_nn(input_type),
    ));
    EnqueueOptions::arguments(field)
}

/// Refuses an empty batch, or one over `Limits::max_batch_items`.
fn check_count(services: &Services, count: usize) -> async_graphql::Result<()> {
    if count == 0 {
        return Err(client_error(
            "BAD_USER_INPUT",
            "a batch has at least one item",
        ));
    }
    let max = services.limits.max_batch_items.min(batch::MAX_BATCH_ITEMS);
    LimitExceeded::check("batchItems", "the number of items in a batch", count, max)
        .map_err(|exceeded| limit_error(&exceeded))
}

/// One item checked as any enqueue checks its payload; an error names the item's index, in
/// its message and as `extensions.index`.
fn validated<T>(
    services: &Services,
    handler: &Registered,
    index: usize,
    item: T,
    validate: fn(&Registered, T) -> Result<Value, String>,
) -> async_graphql::Result<Value> {
    let payload = validate(handler, item).map_err(|message| {
        async_graphql::Error::new(format!("item {index}: {message}")).extend_with(|_, e| {
            e.set("code", "BAD_USER_INPUT");
            e.set("index", index);
        })
    })?;
    let size = streamer_core::json_len(&payload);
    let max = services.limits.max_payload_bytes;
    LimitExceeded::check("payloadBytes", "the payload size in bytes", size, max).map_err(
        |exceeded| {
            async_graphql::Error::new(format!("item {index}: {exceeded}")).extend_with(|_, e| {
                e.set("code", "LIMIT_EXCEEDED");
                e.set("limit", exceeded.limit);
                e.set("max", exceeded.max);
                e.set("actual", exceeded.actual);
                e.set("index", index);
            })
        },
    )?;
    Ok(payload)
}

/// Stores a batch of validated payloads and its children. With an idempotency key, a repeat
/// with the same items returns the batch the first one made.
async fn enqueue_batch(
    services: &Services,
    caller: &Principal,
    handler: &Registered,
    payloads: Vec<Value>,
    options: EnqueueOptions,
) -> async_graphql::Result<AsyncRequest> {
    let key = options.key.as_deref();
    check_key(key)?;
    let now = services.clock.now();
    // Each item is an enqueue: a batch is no way around the rate quota.
    let total = u32::try_from(payloads.len()).unwrap_or(u32::MAX);
    check_rate(services, caller, now, total).await?;
    let id = match key {
        Some(key) => keyed_id(
            caller,
            services.access,
            &format!("batch:{}", handler.action()),
            key,
        ),
        None => services.ids.next_id(),
    };
    let mut parent = AsyncRequest::new_batch(id, handler.action(), total, now)
        .with_priority(options.priority)
        .owned_by(caller);
    // The digest of its items is its payload: a repeat with the same key must bring them.
    parent.payload = json!({ "items": payloads.len(), "digest": payloads_digest(&payloads) });
    let children: Vec<AsyncRequest> = (0u32..)
        .zip(payloads)
        .map(|(index, payload)| parent.child(index, payload))
        .collect();
    let max_active = services.limits.max_tenant_active_requests;
    match services
        .store
        .create_batch(&parent, &children, max_active)
        .await
    {
        Ok(()) => {}
        Err(CoreError::QuotaFull(_)) => {
            let max = max_active.unwrap_or_default();
            return Err(quota_error(
                "activeRequests",
                format!(
                    "a batch of {total} needs {} requests queued or running, over the tenant's quota of {max}",
                    children.len() + 1
                ),
                max,
            ));
        }
        // The digest of its items is the batch's payload: the same items, the same batch.
        Err(CoreError::Conflict(_)) if key.is_some() => {
            return keyed_repeat(services, caller, &parent).await;
        }
        Err(error) => return Err(from_core(error)),
    }
    tracing::info!(request_id = %parent.id, action = %parent.action, total, "batch enqueued");
    Ok(parent)
}
