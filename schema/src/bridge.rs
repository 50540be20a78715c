//! A handler's input and output are ordinary static async-graphql types
//! (`#[derive(InputObject)]`, `#[derive(SimpleObject)]`), but the schema is dynamic, because
//! handlers are registered at run time. async-graphql 7 has no bridge between the two, so
//! this module reads the static types' registry entries and rebuilds them as dynamic types.
//!
//! Output objects are resolved from the stored JSON output: each field reads its own name
//! from the parent JSON object.

use async_graphql::dynamic::{
    self, Enum, EnumItem, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, Scalar,
    TypeRef,
};
use async_graphql::registry::{MetaInputValue, MetaType, Registry};
use async_graphql::{InputType, OutputType, Value};
use serde_json::Value as Json;

/// Names the base schema defines itself, or GraphQL does.
const RESERVED: &[&str] = &[
    "Int", "Float", "String", "Boolean", "ID", "JSON", "DateTime",
];

/// Parses a type string such as `[Int!]!` into a [`TypeRef`].
pub(crate) fn type_ref(ty: &str) -> TypeRef {
    if let Some(inner) = ty.strip_suffix('!') {
        TypeRef::NonNull(Box::new(type_ref(inner)))
    } else if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        TypeRef::List(Box::new(type_ref(inner)))
    } else {
        TypeRef::Named(ty.to_owned().into())
    }
}

/// A GraphQL literal (as the static registry stores default values) as a value.
fn literal(text: &str) -> Option<Value> {
    let document =
        async_graphql::parser::parse_query(format!("query($v: Int = {text}) {{ __typename }}"))
            .ok()?;
    let (_, operation) = document.operations.iter().next()?;
    let variable = operation.node.variable_definitions.first()?;
    variable.node.default_value.as_ref().map(|v| v.node.clone())
}

fn input_value(meta: &MetaInputValue) -> InputValue {
    let mut value = InputValue::new(&meta.name, type_ref(&meta.ty));
    if let Some(description) = &meta.description {
        value = value.description(description);
    }
    if let Some(default) = meta.default_value.as_deref().and_then(literal) {
        value = value.default_value(default);
    }
    value
}

/// `sizeBytes` → `size_bytes`, for outputs serialized without `rename_all`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A field that reads its own name from the parent JSON object.
pub(crate) fn json_field(name: &str, ty: TypeRef) -> Field {
    let key = name.to_owned();
    Field::new(name, ty, move |ctx| {
        let value = match ctx.parent_value.as_value() {
            Some(Value::Object(object)) => object
                .get(key.as_str())
                .or_else(|| object.get(snake_case(&key).as_str()))
                .cloned(),
            _ => None,
        };
        FieldFuture::new(async move {
            Ok(match value {
                None | Some(Value::Null) => None,
                Some(value) => Some(FieldValue::value(value)),
            })
        })
    })
}

fn convert(meta: &MetaType) -> Option<dynamic::Type> {
    match meta {
        MetaType::InputObject {
            name,
            description,
            input_fields,
            ..
        } => {
            let mut object = InputObject::new(name);
            if let Some(description) = description {
                object = object.description(description);
            }
            for field in input_fields.values() {
                object = object.field(input_value(field));
            }
            Some(object.into())
        }
        MetaType::Object {
            name,
            description,
            fields,
            ..
        } => {
            let mut object = Object::new(name);
            if let Some(description) = description {
                object = object.description(description);
            }
            for field in fields.values().filter(|f| !f.name.starts_with("__")) {
                let mut dynamic_field = json_field(&field.name, type_ref(&field.ty));
                if let Some(description) = &field.description {
                    dynamic_field = dynamic_field.description(description);
                }
                object = object.field(dynamic_field);
            }
            Some(object.into())
        }
        MetaType::Enum {
            name,
            description,
            enum_values,
            ..
        } => {
            let mut e = Enum::new(name);
            if let Some(description) = description {
                e = e.description(description);
            }
            for value in enum_values.values() {
                e = e.item(EnumItem::new(&value.name));
            }
            Some(e.into())
        }
        MetaType::Scalar {
            name, description, ..
        } => {
            let mut scalar = Scalar::new(name);
            if let Some(description) = description {
                scalar = scalar.description(description);
            }
            Some(scalar.into())
        }
        MetaType::Interface { .. } | MetaType::Union { .. } => None,
    }
}

/// The dynamic types for a handler's input and output, and every type they reference. An
/// error names an interface or a union among them: handler outputs are stored as JSON,
/// which cannot say which member a value is.
pub(crate) fn dynamic_types<I: InputType, O: OutputType>() -> Result<Vec<dynamic::Type>, String> {
    let mut registry = Registry::default();
    I::create_type_info(&mut registry);
    O::create_type_info(&mut registry);
    registry
        .types
        .values()
        .filter(|meta| {
            let name = meta.name();
            !name.starts_with("__") && !RESERVED.contains(&name)
        })
        .map(|meta| {
            convert(meta).ok_or_else(|| {
                format!(
                    "handler type {} is an interface or union, which handler outputs cannot be",
                    meta.name()
                )
            })
        })
        .collect()
}

/// `value` with a stand-in for every required field it leaves out (one without a default),
/// at every depth of input object `I`: what lets a template be checked against the input type
/// for mistyped fields while its required fields are left to the overrides. A stand-in fits
/// the field's type (an empty string or list, zero, false, the first enum value, an object
/// filled the same way); a field of another scalar type gets `null`, so a template must set
/// those. A field the type does not have is an error naming it (parsing an input object
/// would drop it without a word).
pub(crate) fn with_required_stand_ins<I: InputType>(value: &mut Json) -> Result<(), String> {
    let mut registry = Registry::default();
    I::create_type_info(&mut registry);
    fill(&registry, &I::type_name(), value, "")
}

fn fill(registry: &Registry, type_name: &str, value: &mut Json, path: &str) -> Result<(), String> {
    let (Some(MetaType::InputObject { input_fields, .. }), Json::Object(fields)) =
        (registry.types.get(type_name), value)
    else {
        return Ok(());
    };
    if let Some(unknown) = fields
        .keys()
        .find(|key| !input_fields.contains_key(key.as_str()))
    {
        return Err(format!("{type_name} has no field \"{path}{unknown}\""));
    }
    for field in input_fields.values() {
        let base = field.ty.trim_end_matches('!');
        match fields.get_mut(&field.name) {
            Some(present) if !base.starts_with('[') => {
                fill(registry, base, present, &format!("{path}{}.", field.name))?;
            }
            Some(_) => {}
            None if field.ty.ends_with('!') && field.default_value.is_none() => {
                fields.insert(field.name.clone(), stand_in(registry, base));
            }
            None => {}
        }
    }
    Ok(())
}

fn stand_in(registry: &Registry, base: &str) -> Json {
    if base.starts_with('[') {
        return Json::Array(Vec::new());
    }
    match base {
        "String" | "ID" => Json::String(String::new()),
        "Int" => Json::from(0),
        "Float" => Json::from(0.0),
        "Boolean" => Json::Bool(false),
        _ => match registry.types.get(base) {
            Some(MetaType::Enum { enum_values, .. }) => enum_values
                .keys()
                .next()
                .map_or(Json::Null, |name| Json::String(name.clone())),
            Some(MetaType::InputObject { .. }) => {
                let mut object = Json::Object(serde_json::Map::new());
                // An empty object has no unknown field.
                let _ = fill(registry, base, &mut object, "");
                object
            }
            _ => Json::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_strings_round_trip() {
        for ty in ["Int", "Int!", "[Int]", "[Int!]!", "[[String]!]"] {
            assert_eq!(type_ref(ty).to_string(), ty);
        }
    }

    #[test]
    fn literals_parse() {
        assert_eq!(literal("1000"), Some(Value::from(1000)));
        assert_eq!(literal("\"a\""), Some(Value::from("a")));
        assert_eq!(
            literal("[1, 2]"),
            Some(Value::List(vec![1.into(), 2.into()]))
        );
    }

    #[test]
    fn a_union_among_a_handler_s_types_is_an_error_not_a_panic() {
        #[derive(async_graphql::InputObject)]
        struct In {
            n: i32,
        }
        #[derive(async_graphql::SimpleObject)]
        struct A {
            a: i32,
        }
        #[derive(async_graphql::SimpleObject)]
        struct B {
            b: i32,
        }
        #[derive(async_graphql::SimpleObject)]
        struct Out {
            either: Either,
        }
        #[derive(async_graphql::Union)]
        enum Either {
            A(A),
            B(B),
        }
        let Err(error) = dynamic_types::<In, Out>() else {
            panic!("a union is refused")
        };
        assert!(error.contains("Either is an interface or union"), "{error}");
        assert!(dynamic_types::<In, A>().is_ok());
    }

    #[test]
    fn camel_case_to_snake_case() {
        assert_eq!(snake_case("sizeBytes"), "size_bytes");
        assert_eq!(snake_case("url"), "url");
    }
}
