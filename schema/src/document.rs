//! A client's document, measured before any work is done on it: its size first, then one
//! parse, then its depth, complexity and aliases, in time linear in its size.
//!
//! Fragments can multiply a document (a fragment that spreads another twice, forty deep, is
//! 2^40 fields in 1.6 KB), so each fragment is measured once and its measure reused wherever
//! it is spread; counts saturate instead of growing. A list field counts its selection once
//! per item it may return (`first`, or its default page), so that `requests(first: 100)` with
//! thirty fields weighs 3,000 rather than 30.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::parser::types::{
    ExecutableDocument, Field, FragmentDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, Value as GqlValue};
use serde_json::{Map, Value};
use streamer_core::{LimitExceeded, Limits};

use crate::execute::{self, OperationKind};

/// List fields that page without `first`, with their default page size.
const PAGED_FIELDS: &[(&str, usize)] = &[
    ("requests", crate::schema::DEFAULT_PAGE),
    ("children", crate::schema::DEFAULT_PAGE),
];

/// A page is at most this large, whatever `first` asks for (the resolvers refuse more).
const MAX_PAGE: usize = crate::schema::MAX_PAGE;

/// Introspection has a fixed shape (graphql-js' `getIntrospectionQuery()` nests `ofType`
/// nine deep) and its size is the schema's, not the client's: an operation that selects only
/// introspection fields is held to these bounds instead of the document limits.
const INTROSPECTION_DEPTH: usize = 24;
const INTROSPECTION_COMPLEXITY: usize = 2_000;

/// Selection sets nested deeper than this (fragments included) are not followed: the
/// document is over any depth limit long before, and the walk keeps a bounded stack.
const MAX_NESTING: usize = 256;

/// Why a document was refused before it ran.
#[derive(Debug)]
pub enum Refusal {
    /// Over a limit (`documentBytes`, `depth`, `complexity`, `aliases`).
    Limit(LimitExceeded),
    /// It does not parse.
    Syntax(ServerError),
}

/// A document that passed its checks, parsed once.
#[derive(Debug, Clone)]
pub struct Document {
    parsed: Arc<ExecutableDocument>,
    kind: Option<OperationKind>,
}

/// What a selection asks for.
#[derive(Debug, Default, Clone, Copy)]
struct Measure {
    depth: usize,
    fields: usize,
    aliases: usize,
}

impl Measure {
    fn add(&mut self, other: Measure) {
        self.depth = self.depth.max(other.depth);
        self.fields = self.fields.saturating_add(other.fields);
        self.aliases = self.aliases.saturating_add(other.aliases);
    }
}

/// One walk over a document: each fragment measured once.
struct Analysis<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    variables: Option<&'a Map<String, Value>>,
    /// `None` while the fragment is being measured (a cycle, which validation reports).
    measured: HashMap<&'a str, Option<Measure>>,
    /// Whether a spread named a fragment the document does not define.
    unknown_fragment: bool,
}

impl<'a> Analysis<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet, nesting: usize) -> Measure {
        let mut measure = Measure::default();
        if nesting > MAX_NESTING {
            measure.depth = usize::MAX;
            return measure;
        }
        for item in &set.items {
            let inner = match &item.node {
                Selection::Field(field) => self.field(&field.node, nesting),
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node, nesting + 1)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), nesting)
                }
            };
            measure.add(inner);
        }
        measure
    }

    fn field(&mut self, field: &'a Field, nesting: usize) -> Measure {
        let inner = self.selection_set(&field.selection_set.node, nesting + 1);
        let items = self.page_size(field);
        Measure {
            depth: inner.depth.saturating_add(1),
            fields: items.saturating_mul(inner.fields).saturating_add(1),
            aliases: inner
                .aliases
                .saturating_add(usize::from(field.alias.is_some())),
        }
    }

    fn fragment(&mut self, name: &'a str, nesting: usize) -> Measure {
        match self.measured.get(name) {
            Some(Some(measure)) => return *measure,
            Some(None) => return Measure::default(),
            None => {}
        }
        let Some(fragment) = self.fragments.get(name) else {
            self.unknown_fragment = true;
            return Measure::default();
        };
        self.measured.insert(name, None);
        let measure = self.selection_set(&fragment.node.selection_set.node, nesting + 1);
        self.measured.insert(name, Some(measure));
        measure
    }

    /// How many items a field may return: its `first` (a literal or a variable), its default
    /// page when it is a paged list, else one.
    fn page_size(&self, field: &Field) -> usize {
        let first = field.get_argument("first").map(|value| {
            let value = value.node.clone().into_const_with(|name| {
                self.variables
                    .and_then(|variables| variables.get(name.as_str()))
                    .and_then(|value| GqlValue::from_json(value.clone()).ok())
                    .ok_or(())
            });
            match value {
                Ok(GqlValue::Number(n)) => n.as_u64(),
                _ => None,
            }
        });
        match first {
            Some(Some(first)) => usize::try_from(first)
                .unwrap_or(MAX_PAGE)
                .clamp(1, MAX_PAGE),
            // A value the resolver will refuse: counted as the largest page.
            Some(None) => MAX_PAGE,
            None => PAGED_FIELDS
                .iter()
                .find(|(name, _)| *name == field.name.node.as_str())
                .map_or(1, |(_, page)| *page),
        }
    }

    /// Whether every root field of `set` is an introspection field (`__schema`, `__type`,
    /// `__typename`), fragments followed once each.
    fn introspection_only(&self, set: &'a SelectionSet, seen: &mut Vec<&'a str>) -> bool {
        set.items.iter().all(|item| match &item.node {
            Selection::Field(field) => field.node.name.node.starts_with("__"),
            Selection::InlineFragment(fragment) => {
                self.introspection_only(&fragment.node.selection_set.node, seen)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if seen.contains(&name) {
                    return true;
                }
                seen.push(name);
                self.fragments
                    .get(name)
                    .is_some_and(|f| self.introspection_only(&f.node.selection_set.node, seen))
            }
        })
    }
}

impl Document {
    /// Checks `query` against `limits` and parses it, once: its size before anything else,
    /// then, parsed, the depth, complexity and aliases of each of its operations.
    ///
    /// # Errors
    ///
    /// [`Refusal::Limit`] naming the limit, or [`Refusal::Syntax`] when it does not parse.
    pub fn prepare(
        query: &str,
        operation_name: Option<&str>,
        variables: Option<&Map<String, Value>>,
        limits: &Limits,
    ) -> Result<Self, Refusal> {
        LimitExceeded::check(
            "documentBytes",
            "the document size in bytes",
            query.len(),
            limits.max_document_bytes,
        )
        .map_err(Refusal::Limit)?;
        let parsed = execute::parse(query).map_err(Refusal::Syntax)?;
        check(&parsed, variables, limits).map_err(Refusal::Limit)?;
        let kind = kind(&parsed, operation_name);
        Ok(Self { parsed, kind })
    }

    /// The kind of the operation it runs, `None` when it names none it holds (execution then
    /// says why).
    pub fn kind(&self) -> Option<OperationKind> {
        self.kind
    }

    /// The GraphQL request that runs it, without parsing it again.
    pub fn request(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: Option<&Map<String, Value>>,
    ) -> async_graphql::Request {
        execute::request_parsed(query, &self.parsed, operation_name, variables)
    }
}

/// Checks a parsed document against the depth, complexity and alias limits, in one walk.
fn check(
    document: &ExecutableDocument,
    variables: Option<&Map<String, Value>>,
    limits: &Limits,
) -> Result<(), LimitExceeded> {
    let mut analysis = Analysis {
        fragments: &document.fragments,
        variables,
        measured: HashMap::new(),
        unknown_fragment: false,
    };
    for (_, operation) in document.operations.iter() {
        let set = &operation.node.selection_set.node;
        let measure = analysis.selection_set(set, 0);
        let (max_depth, max_complexity) = if analysis.introspection_only(set, &mut Vec::new()) {
            (INTROSPECTION_DEPTH, INTROSPECTION_COMPLEXITY)
        } else {
            (limits.max_depth, limits.max_complexity)
        };
        LimitExceeded::check("depth", "the query depth", measure.depth, max_depth)?;
        LimitExceeded::check(
            "complexity",
            "the number of fields selected, lists counted by their size",
            measure.fields,
            max_complexity,
        )?;
        LimitExceeded::check(
            "aliases",
            "the number of aliases",
            measure.aliases,
            limits.max_aliases,
        )?;
    }
    Ok(())
}

fn kind(document: &ExecutableDocument, operation_name: Option<&str>) -> Option<OperationKind> {
    let mut operations = document.operations.iter();
    let operation = match operation_name {
        Some(name) => {
            operations
                .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))?
                .1
        }
        None => {
            let (_, only) = operations.next()?;
            if operations.next().is_some() {
                return None;
            }
            only
        }
    };
    Some(match operation.node.ty {
        OperationType::Query => OperationKind::Query,
        OperationType::Mutation => OperationKind::Mutation,
        OperationType::Subscription => OperationKind::Subscription,
    })
}

/// The kind of the operation a document would run, or `None` when it does not parse or
/// names no operation it holds.
pub fn operation_kind(query: &str, operation_name: Option<&str>) -> Option<OperationKind> {
    kind(&*execute::parse(query).ok()?, operation_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_depth: 3,
            max_complexity: 5,
            max_aliases: 2,
            ..Limits::default()
        }
    }

    fn refused(query: &str, limits: &Limits) -> Option<(&'static str, usize)> {
        match Document::prepare(query, None, None, limits) {
            Ok(_) => None,
            Err(Refusal::Limit(exceeded)) => Some((exceeded.limit, exceeded.actual)),
            Err(Refusal::Syntax(error)) => panic!("{query}: {}", error.message),
        }
    }

    #[test]
    fn depth_fields_and_aliases_are_counted_through_fragments() {
        let limits = limits();
        assert_eq!(
            refused("{ request(id: \"a\") { id status } }", &limits),
            None
        );
        let deep = "{ request(id: \"a\") { error { code { x } } } }";
        assert_eq!(refused(deep, &limits).map(|r| r.0), Some("depth"));
        let wide = "query { a: actions b: actions c: actions }";
        assert_eq!(refused(wide, &limits).map(|r| r.0), Some("aliases"));
        // A fragment spread twice counts each time (1 + 2 + 1 + 2).
        let spread = "fragment F on AsyncRequest { id status } { a: request(id: \"1\") { ...F } b: request(id: \"2\") { ...F } }";
        assert_eq!(refused(spread, &limits), Some(("complexity", 6)));
        // Cycles do not hang the count; validation reports them.
        assert_eq!(
            refused("fragment A on Query { ...A } { ...A }", &limits),
            None
        );
    }

    #[test]
    fn a_fragment_dag_is_measured_once_per_fragment() {
        let mut query = String::new();
        for i in 0..40 {
            query += &format!(
                "fragment F{i} on Query {{ ...F{next} ...F{next} }} ",
                next = i + 1
            );
        }
        query += "fragment F40 on Query { ...Missing } { ...F0 }";
        let started = std::time::Instant::now();
        assert_eq!(refused(&query, &Limits::default()), None);
        // With a field at the bottom the count saturates rather than overflowing.
        let query = query.replace("...Missing", "actions");
        assert_eq!(
            refused(&query, &Limits::default()),
            Some(("complexity", 1 << 40))
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }

    #[test]
    fn lists_count_their_page_size() {
        let limits = Limits {
            max_complexity: 250,
            ..Limits::default()
        };
        // 1 + 100 × (edges + node + id + status).
        let query = "{ requests(first: 100) { edges { node { id status } } } }";
        assert_eq!(refused(query, &limits), Some(("complexity", 401)));
        // Without `first`, the default page of 20.
        let query = "{ requests { edges { node { id status } } } }";
        assert_eq!(refused(query, &limits), None);
        let query = "query($n: Int) { requests(first: $n) { edges { node { id status } } } }";
        let variables = serde_json::json!({ "n": 100 });
        let refusal = Document::prepare(query, None, variables.as_object(), &limits);
        assert!(matches!(refusal, Err(Refusal::Limit(e)) if e.actual == 401));
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let limits = Limits {
            max_document_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(refused("{ actions }", &limits), Some(("documentBytes", 11)));
        assert!(matches!(
            Document::prepare("{", None, None, &limits),
            Err(Refusal::Syntax(_))
        ));
    }

    #[test]
    fn deep_nesting_keeps_a_bounded_stack() {
        let query = format!("{}{}", "{ a ".repeat(5_000), "}".repeat(5_000));
        match Document::prepare(&query, None, None, &Limits::default()) {
            Err(Refusal::Limit(exceeded)) => assert_eq!(exceeded.limit, "depth"),
            Err(Refusal::Syntax(_)) => {}
            Ok(_) => panic!("a document 5,000 deep passed"),
        }
    }

    #[test]
    fn operation_kinds() {
        assert_eq!(
            operation_kind("{ actions }", None),
            Some(OperationKind::Query)
        );
        assert_eq!(
            operation_kind("subscription S { a }", Some("S")),
            Some(OperationKind::Subscription)
        );
        assert_eq!(operation_kind("subscription S { a }", Some("T")), None);
        assert_eq!(
            operation_kind("query A { a } mutation B { b }", Some("B")),
            Some(OperationKind::Mutation)
        );
        assert_eq!(operation_kind("query A { a } mutation B { b }", None), None);
        assert_eq!(operation_kind("{", None), None);
    }
}
