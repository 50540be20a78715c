//! Request templates: a named action and payload a tenant saves once and enqueues many
//! times, with overrides merged into the payload.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A saved request: what `enqueueTemplate` starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestTemplate {
    /// The tenant it belongs to: no other tenant sees it.
    pub tenant: String,
    /// Its name, unique within the tenant.
    pub name: String,
    /// The registered handler's action.
    pub action: String,
    /// The payload, which may leave required fields to the overrides.
    pub payload: Value,
    /// What it is for.
    pub description: Option<String>,
    /// 1 when first saved, +1 on every save.
    pub version: u64,
    /// When it was last saved.
    pub updated_at: DateTime<Utc>,
}

impl RequestTemplate {
    /// What a request started from this template records: `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// `overrides` merged into `base`: objects key by key, recursively; anything else (a
/// string, a number, a list, null) replaces what was there.
pub fn merge(base: &mut Value, overrides: Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (key, value) in overrides {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overrides) => *base = overrides,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_merge_key_by_key_and_the_rest_is_replaced() {
        let mut base = json!({ "a": 1, "nested": { "x": 1, "y": [1, 2] }, "list": [1, 2] });
        merge(
            &mut base,
            json!({ "b": 2, "nested": { "y": [3], "z": null }, "list": [9] }),
        );
        assert_eq!(
            base,
            json!({ "a": 1, "b": 2, "nested": { "x": 1, "y": [3], "z": null }, "list": [9] })
        );
        let mut scalar = json!({ "a": 1 });
        merge(&mut scalar, json!("text"));
        assert_eq!(scalar, json!("text"));
    }
}
