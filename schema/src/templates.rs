//! Request templates in the schema: `saveTemplate`, `deleteTemplate` and `enqueueTemplate`,
//! the `templates` and `template` queries, and the `RequestTemplate` type. A template belongs
//! to its tenant; another tenant's does not exist for a caller.

use std::sync::Arc;

use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};
use serde_json::{Value, json};
use streamer_core::template::merge;
use streamer_core::{Principal, RequestTemplate};

use crate::Handlers;
use crate::bridge::json_field;
use crate::schema::{
    EnqueueOptions, Services, check_payload_size, client_error, enqueue, from_core, json,
    principal, registered,
};

/// The most templates a tenant keeps, and so what `templates` reads at most (each payload
/// within `max_payload_bytes`).
pub(crate) const MAX_TEMPLATES: usize = 100;
/// The longest template name.
const MAX_NAME: usize = 100;
/// The longest template description.
const MAX_DESCRIPTION: usize = 1_000;

/// `RequestTemplate`: read from the JSON object [`as_value`] makes.
pub(crate) fn template_type() -> Object {
    Object::new("RequestTemplate")
        .description("A saved request: an action and a payload, started by `enqueueTemplate`.")
        .field(json_field("name", TypeRef::named_nn(TypeRef::STRING)))
        .field(json_field("action", TypeRef::named_nn(TypeRef::STRING)))
        .field(json_field("payload", TypeRef::named_nn("JSON")))
        .field(json_field("description", TypeRef::named(TypeRef::STRING)))
        .field(json_field("version", TypeRef::named_nn(TypeRef::INT)))
        .field(json_field("updatedAt", TypeRef::named_nn("DateTime")))
}

fn as_value(template: &RequestTemplate) -> FieldValue<'static> {
    FieldValue::value(json(&json!({
        "name": template.name,
        "action": template.action,
        "payload": template.payload,
        "description": template.description,
        "version": template.version,
        "updatedAt": template
            .updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })))
}

fn name_arg(ctx: &async_graphql::dynamic::ResolverContext<'_>) -> async_graphql::Result<String> {
    let name = ctx.args.try_get("name")?.string()?.to_owned();
    let valid = (1..=MAX_NAME).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(client_error(
            "BAD_USER_INPUT",
            format!("a template name has 1 to {MAX_NAME} letters, digits, `-`, `_` or `.`"),
        ));
    }
    Ok(name)
}

/// What every resolver of one template starts from: the services, the caller, and the
/// `name` argument, checked.
fn named<'a>(
    ctx: &async_graphql::dynamic::ResolverContext<'a>,
) -> async_graphql::Result<(&'a Services, &'a Principal, String)> {
    Ok((ctx.data::<Services>()?, principal(ctx)?, name_arg(ctx)?))
}

fn not_found() -> async_graphql::Error {
    client_error("NOT_FOUND", "no template with this name")
}

/// `template(name)`: the caller's tenant's template, or null.
pub(crate) fn template_query() -> Field {
    Field::new("template", TypeRef::named("RequestTemplate"), |ctx| {
        FieldFuture::new(async move {
            let (services, caller, name) = named(&ctx)?;
            let template = services
                .store
                .get_template(&caller.tenant, &name)
                .await
                .map_err(from_core)?;
            Ok(template.as_ref().map(as_value))
        })
    })
    .argument(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING)))
}

/// `templates`: the caller's tenant's templates, by name.
pub(crate) fn templates_query() -> Field {
    Field::new(
        "templates",
        TypeRef::named_nn_list_nn("RequestTemplate"),
        |ctx| {
            FieldFuture::new(async move {
                let services = ctx.data::<Services>()?;
                let caller = principal(&ctx)?;
                let templates = services
                    .store
                    .templates(&caller.tenant, MAX_TEMPLATES)
                    .await
                    .map_err(from_core)?;
                Ok(Some(FieldValue::list(templates.iter().map(as_value))))
            })
        },
    )
}

/// `saveTemplate`, `deleteTemplate` and `enqueueTemplate`.
pub(crate) fn mutation_fields() -> [Field; 3] {
    [save(), delete(), enqueue_template()]
}

fn save() -> Field {
    Field::new(
        "saveTemplate",
        TypeRef::named_nn("RequestTemplate"),
        |ctx| {
            FieldFuture::new(async move {
                let (services, caller, name) = named(&ctx)?;
                let handlers = ctx.data::<Arc<Handlers>>()?;
                let action = ctx.args.try_get("action")?.string()?.to_owned();
                let payload = ctx
                    .args
                    .try_get("payload")?
                    .as_value()
                    .clone()
                    .into_json()?;
                let description = match ctx.args.get("description") {
                    Some(value) if !value.is_null() => Some(value.string()?.to_owned()),
                    _ => None,
                };
                if description
                    .as_ref()
                    .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
                {
                    return Err(client_error(
                        "BAD_USER_INPUT",
                        format!("a description has at most {MAX_DESCRIPTION} characters"),
                    ));
                }
                let handler = registered(handlers, &action)?;
                check_payload_size(services, &payload)?;
                handler
                    .validate_partial(&payload)
                    .map_err(|e| client_error("BAD_USER_INPUT", e))?;
                let store = &services.store;
                let existing = store
                    .get_template(&caller.tenant, &name)
                    .await
                    .map_err(from_core)?;
                if existing.is_none()
                    && store
                        .count_templates(&caller.tenant, MAX_TEMPLATES)
                        .await
                        .map_err(from_core)?
                        >= MAX_TEMPLATES
                {
                    return Err(client_error(
                        "LIMIT_EXCEEDED",
                        format!("a tenant keeps at most {MAX_TEMPLATES} templates"),
                    ));
                }
                let template = RequestTemplate {
                    tenant: caller.tenant.clone(),
                    name,
                    action,
                    payload,
                    description,
                    version: 0,
                    updated_at: services.clock.now(),
                };
                let saved = store.save_template(&template).await.map_err(from_core)?;
                tracing::info!(template = %saved.reference(), "template saved");
                Ok(Some(as_value(&saved)))
            })
        },
    )
    .description(
        "Saves a template of the caller's tenant: the payload is checked against the \
         action's input type, and may leave required fields to `enqueueTemplate`'s \
         overrides. Saving an existing name replaces it and raises its `version`.",
    )
    .argument(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING)))
    .argument(InputValue::new(
        "action",
        TypeRef::named_nn(TypeRef::STRING),
    ))
    .argument(InputValue::new("payload", TypeRef::named_nn("JSON")))
    .argument(InputValue::new(
        "description",
        TypeRef::named(TypeRef::STRING),
    ))
}

fn delete() -> Field {
    Field::new(
        "deleteTemplate",
        TypeRef::named_nn(TypeRef::BOOLEAN),
        |ctx| {
            FieldFuture::new(async move {
                let (services, caller, name) = named(&ctx)?;
                let deleted = services
                    .store
                    .delete_template(&caller.tenant, &name)
                    .await
                    .map_err(from_core)?;
                Ok(Some(FieldValue::value(deleted)))
            })
        },
    )
    .description("Deletes a template of the caller's tenant: whether it existed.")
    .argument(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING)))
}

fn enqueue_template() -> Field {
    let field = Field::new(
        "enqueueTemplate",
        TypeRef::named_nn("AsyncRequest"),
        |ctx| {
            FieldFuture::new(async move {
                let (services, caller, name) = named(&ctx)?;
                let handlers = ctx.data::<Arc<Handlers>>()?;
                let overrides = match ctx.args.get("overrides") {
                    Some(value) if !value.is_null() => Some(value.as_value().clone().into_json()?),
                    _ => None,
                };
                let template = services
                    .store
                    .get_template(&caller.tenant, &name)
                    .await
                    .map_err(from_core)?
                    .ok_or_else(not_found)?;
                let handler = registered(handlers, &template.action)?;
                let mut payload: Value = template.payload.clone();
                if let Some(overrides) = overrides {
                    merge(&mut payload, overrides);
                }
                let payload = handler
                    .validate(payload)
                    .map_err(|e| client_error("BAD_USER_INPUT", e))?;
                let mut options = EnqueueOptions::read(&ctx)?;
                options.template = Some(template.reference());
                Ok(Some(FieldValue::owned_any(
                    enqueue(services, caller, handler, payload, options).await?,
                )))
            })
        },
    )
    .description(
        "Enqueues the caller's tenant's template: `overrides` merged into its payload \
         (objects key by key, anything else replaced), checked as any enqueue is. The request \
         records `template: \"name@version\"`.",
    )
    .argument(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING)))
    .argument(InputValue::new("overrides", TypeRef::named("JSON")));
    EnqueueOptions::arguments(field)
}
