//! `deploy/template.yaml` against the code: the tables have the keys, indexes, stream and TTL
//! of `streamer_aws::tables` under the names the functions derive from
//! `STREAMER_TABLE_PREFIX`, and every function builds a binary of this package.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;
use streamer_aws::tables::{self, TableShape};

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The string under a `!Sub`, `!Ref` or other short-form function, or the plain string.
fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Tagged(tagged) => text(&tagged.value),
        _ => None,
    }
}

fn key_schema(schema: &Value) -> (String, Option<String>) {
    let named = |kind: &str| {
        schema
            .as_sequence()
            .unwrap()
            .iter()
            .find(|k| k["KeyType"] == kind)
            .map(|k| text(&k["AttributeName"]).unwrap().to_owned())
    };
    (named("HASH").unwrap_or_default(), named("RANGE"))
}

/// The shape of a table resource, as the code would see the deployed table.
fn shape(properties: &Value) -> TableShape {
    let indexes = properties["GlobalSecondaryIndexes"]
        .as_sequence()
        .map(|indexes| {
            indexes
                .iter()
                .map(|i| {
                    let (partition, sort) = key_schema(&i["KeySchema"]);
                    let projection = &i["Projection"];
                    let mut include: Vec<String> = match projection["ProjectionType"].as_str() {
                        Some("KEYS_ONLY") => Vec::new(),
                        Some("INCLUDE") => projection["NonKeyAttributes"]
                            .as_sequence()
                            .unwrap()
                            .iter()
                            .map(|a| text(a).unwrap().to_owned())
                            .collect(),
                        _ => vec!["*".to_owned()],
                    };
                    include.sort();
                    (
                        text(&i["IndexName"]).unwrap().to_owned(),
                        partition,
                        sort.unwrap_or_default(),
                        include,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ttl = &properties["TimeToLiveSpecification"];
    TableShape {
        key: key_schema(&properties["KeySchema"]),
        indexes,
        stream: properties["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES",
        ttl: (ttl["Enabled"] == true).then(|| text(&ttl["AttributeName"]).unwrap().to_owned()),
    }
}

#[test]
fn the_template_tables_are_the_code_tables() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let deployed: Vec<(&str, &Value)> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::DynamoDB::Table")
        .map(|r| {
            (
                text(&r["Properties"]["TableName"]).unwrap(),
                &r["Properties"],
            )
        })
        .collect();
    assert_eq!(deployed.len(), tables::ALL.len(), "one resource per table");
    for spec in tables::ALL {
        // The functions name tables `{STREAMER_TABLE_PREFIX}-{suffix}`, the prefix being the
        // stack name.
        let name = format!("${{AWS::StackName}}-{}", spec.suffix);
        let (_, properties) = deployed
            .iter()
            .find(|(table, _)| *table == name)
            .unwrap_or_else(|| panic!("no table named {name}"));
        assert_eq!(shape(properties), spec.shape(), "{name}");
        // Every key attribute is declared, as a string, and nothing else is.
        let declared: BTreeSet<(String, String)> = properties["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    text(&a["AttributeName"]).unwrap().to_owned(),
                    text(&a["AttributeType"]).unwrap().to_owned(),
                )
            })
            .collect();
        let shape = spec.shape();
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        keys.insert((shape.key.0.clone(), "S".into()));
        keys.extend(shape.key.1.iter().map(|k| (k.clone(), "S".into())));
        for (_, partition, sort, _) in &shape.indexes {
            keys.insert((partition.clone(), "S".into()));
            keys.insert((sort.clone(), "S".into()));
        }
        assert_eq!(declared, keys, "{name}: attribute definitions");
    }
    let prefix =
        &template["Globals"]["Function"]["Environment"]["Variables"]["STREAMER_TABLE_PREFIX"];
    assert_eq!(text(prefix), Some("AWS::StackName"));
}

#[test]
fn every_function_builds_a_binary_of_this_package() {
    let template = template();
    let binaries: BTreeSet<&str> = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .map(|r| {
            assert_eq!(r["Metadata"]["BuildMethod"], "rust-cargolambda");
            text(&r["Metadata"]["BuildProperties"]["Binary"]).unwrap()
        })
        .collect();
    let package =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let bins = bins(&package);
    assert_eq!(binaries, bins.iter().map(String::as_str).collect());
    assert_eq!(
        text(&template["Globals"]["Function"]["CodeUri"]),
        Some("../examples/report-lambda")
    );
}

/// The `[[bin]]` names of a Cargo manifest (this package lists each).
fn bins(manifest: &str) -> Vec<String> {
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
            bins.push(name.trim_matches('"').to_owned());
        }
    }
    bins
}

/// A stream record is given up only once no connection that could receive its state is open:
/// the template's record age is at least API Gateway's connection lifetime, as a parameter
/// bound, so that no deployment can set it lower.
#[test]
fn failing_records_outlive_every_connection() {
    let template = template();
    let age = &template["Parameters"]["ProcessorMaximumRecordAgeSeconds"];
    let lifetime = streamer::core::MAX_CONNECTION_LIFETIME.num_seconds();
    assert!(age["MinValue"].as_i64().unwrap() >= lifetime, "{age:?}");
    assert!(age["Default"].as_i64().unwrap() >= lifetime, "{age:?}");
    let mapping = &template["Resources"]["ProcessorFunction"]["Properties"]["Events"]["RequestChanges"]
        ["Properties"];
    assert_eq!(
        text(&mapping["MaximumRecordAgeInSeconds"]),
        Some("ProcessorMaximumRecordAgeSeconds")
    );
    assert_eq!(mapping["MaximumRetryAttempts"].as_i64(), Some(-1));
}
