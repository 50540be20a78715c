//! The tables, defined once: the local stack creates them from here, and the
//! deployment template is checked against here.
//!
//! - `connections`: key `id`. A connection lists its active operations, so `$disconnect`
//!   deletes its subscriptions without a scan; a sparse GSI (`awaitingInit`, sharded) finds
//!   those that never sent `connection_init`, another (`byTenant`) counts a tenant's
//!   connections.
//!   It also holds the per-tenant enqueue counters (`quota#enqueue#{tenant}#{second}`).
//! - `subscriptions`: key `requestId` + `sk` (`connectionId#operationId`): fan-out for one
//!   request is one strongly consistent Query on the base table (no GSI on the hot path).
//! - `requests`: key `id`; stream NEW_AND_OLD_IMAGES feeds the processor; two GSIs list
//!   a tenant's requests oldest first, all of them (`byCreation`) or by status (`byStatus`);
//!   a sparse one (`active`, sharded) every tenant's unfinished requests by status, for the
//!   sweeper; another (`byParent`) a batch's children in order.
//!
//! The indexes hold keys only, and what their queries filter on (`owner` for the tenant
//! listings, `expiresAt` for `byTenant`), which never changes with progress: a
//! progress report or a lease renewal, which changes no index key, writes no index, and a
//! listing reads the keys and then the items (`BatchGetItem`).
//!
//! - `history`: key `id` + `versionKey` (the version, zero-padded): each visible state of a
//!   request, written by the processor, read by subscribers that resume.
//!
//! Every table has the TTL attribute `expiresAt` (epoch seconds).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};

/// The TTL attribute of every table.
pub const TTL_ATTRIBUTE: &str = "expiresAt";

/// One global secondary index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index name.
    pub name: &'static str,
    /// Its partition key (a string).
    pub partition_key: &'static str,
    /// Its sort key (a string).
    pub sort_key: &'static str,
    /// The attributes it holds besides the table's and its own keys. None: a write to an
    /// item writes the index only when one of its keys changes (a progress report or a
    /// lease renewal writes no index), and a query reads keys, then the items it needs.
    pub include: &'static [&'static str],
}

/// How many shards the indexes whose partition key would otherwise be shared by every
/// tenant (`active`, `awaitingInit`) spread their items over: `{value}#{shard}`, the shard
/// from the item's id. A query reads every shard.
pub const INDEX_SHARDS: u32 = 8;

/// One table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// The name, after the deployment's prefix.
    pub suffix: &'static str,
    /// The partition key (a string).
    pub partition_key: &'static str,
    /// The sort key (a string), if any.
    pub sort_key: Option<&'static str>,
    /// Its global secondary indexes.
    pub indexes: &'static [IndexSpec],
    /// Whether it has a NEW_AND_OLD_IMAGES stream.
    pub stream: bool,
}

/// The sparse `connections` GSI of connections still waiting for `connection_init`, oldest
/// first: only those carry its partition key.
pub const AWAITING_INIT: IndexSpec = IndexSpec {
    name: "awaitingInit",
    partition_key: "initPartition",
    sort_key: "connectedAt",
    include: &[],
};

/// The sparse `connections` GSI of authenticated connections by tenant: counts them for the
/// tenant's connection quota.
pub const CONNECTIONS_BY_TENANT: IndexSpec = IndexSpec {
    name: "byTenant",
    partition_key: "tenantPartition",
    sort_key: "connectedAt",
    include: &[TTL_ATTRIBUTE],
};

/// The connections table.
pub const CONNECTIONS: TableSpec = TableSpec {
    suffix: "connections",
    partition_key: "id",
    sort_key: None,
    indexes: &[AWAITING_INIT, CONNECTIONS_BY_TENANT],
    stream: false,
};

/// The subscriptions table.
pub const SUBSCRIPTIONS: TableSpec = TableSpec {
    suffix: "subscriptions",
    partition_key: "requestId",
    sort_key: Some("sk"),
    indexes: &[],
    stream: false,
};

/// The `requests` GSI listing every request, oldest first.
pub const BY_CREATION: IndexSpec = IndexSpec {
    name: "byCreation",
    partition_key: "listPartition",
    sort_key: "createdKey",
    include: &["owner"],
};
/// The `requests` GSI listing requests of one status, oldest first.
pub const BY_STATUS: IndexSpec = IndexSpec {
    name: "byStatus",
    partition_key: "statusPartition",
    sort_key: "createdKey",
    include: &["owner"],
};

/// The sparse `requests` GSI of every tenant's requests that are not finished, by status,
/// oldest first: what the sweeper looks after. Finished requests leave it.
pub const ACTIVE: IndexSpec = IndexSpec {
    name: "active",
    partition_key: "activeStatus",
    sort_key: "createdKey",
    include: &[],
};

/// The sparse `requests` GSI of a batch's children, in their order in it: only children
/// carry its partition key. It holds `status`, which a listing of the children in one status
/// filters on.
pub const BY_PARENT: IndexSpec = IndexSpec {
    name: "byParent",
    partition_key: "parentId",
    sort_key: "childKey",
    include: &["owner", "status"],
};

/// The requests table.
pub const REQUESTS: TableSpec = TableSpec {
    suffix: "requests",
    partition_key: "id",
    sort_key: None,
    indexes: &[BY_CREATION, BY_STATUS, ACTIVE, BY_PARENT],
    stream: true,
};

/// The history table: every visible state of a request, by version, for subscribers that
/// resume with `afterVersion`; and each tenant's request templates, by name, under the
/// partition `template#{tenant}`.
pub const HISTORY: TableSpec = TableSpec {
    suffix: "history",
    partition_key: "id",
    sort_key: Some("versionKey"),
    indexes: &[],
    stream: false,
};

/// Every table.
pub const ALL: [TableSpec; 4] = [CONNECTIONS, SUBSCRIPTIONS, REQUESTS, HISTORY];

/// What a table must look like, in a form that both a definition here and a description of a
/// deployed table (or a template) can be brought to, and compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// Partition key and sort key.
    pub key: (String, Option<String>),
    /// Global secondary indexes: name, partition key, sort key, and the attributes they
    /// include besides the keys (none: `KEYS_ONLY`).
    pub indexes: std::collections::BTreeSet<(String, String, String, Vec<String>)>,
    /// Whether a NEW_AND_OLD_IMAGES stream is on.
    pub stream: bool,
    /// The TTL attribute, when TTL is on.
    pub ttl: Option<String>,
}

impl TableSpec {
    /// The shape this definition asks for.
    pub fn shape(&self) -> TableShape {
        TableShape {
            key: (
                self.partition_key.to_owned(),
                self.sort_key.map(str::to_owned),
            ),
            indexes: self
                .indexes
                .iter()
                .map(|i| {
                    let mut include: Vec<String> =
                        i.include.iter().map(|&a| a.to_owned()).collect();
                    include.sort();
                    (
                        i.name.to_owned(),
                        i.partition_key.to_owned(),
                        i.sort_key.to_owned(),
                        include,
                    )
                })
                .collect(),
            stream: self.stream,
            ttl: Some(TTL_ATTRIBUTE.to_owned()),
        }
    }
}

/// The partition and sort key of a key schema.
fn keys(schema: &[KeySchemaElement]) -> (String, Option<String>) {
    let named = |kind: KeyType| {
        schema
            .iter()
            .find(|k| k.key_type == kind)
            .map(|k| k.attribute_name.clone())
    };
    (
        named(KeyType::Hash).unwrap_or_default(),
        named(KeyType::Range),
    )
}

/// The shape of a described table and its TTL.
pub(crate) fn described_shape(
    table: &aws_sdk_dynamodb::types::TableDescription,
    ttl: Option<&aws_sdk_dynamodb::types::TimeToLiveDescription>,
) -> TableShape {
    use aws_sdk_dynamodb::types::TimeToLiveStatus;
    TableShape {
        key: keys(table.key_schema()),
        indexes: table
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| {
                let projection = i.projection()?;
                let mut include = match projection.projection_type()? {
                    ProjectionType::KeysOnly => Vec::new(),
                    ProjectionType::Include => projection.non_key_attributes().to_vec(),
                    // Every attribute: not the shape any definition asks for.
                    _ => vec!["*".to_owned()],
                };
                include.sort();
                let (partition, sort) = keys(i.key_schema());
                Some((
                    i.index_name().unwrap_or_default().to_owned(),
                    partition,
                    sort.unwrap_or_default(),
                    include,
                ))
            })
            .collect(),
        stream: table.stream_specification().is_some_and(|s| {
            s.stream_enabled && s.stream_view_type == Some(StreamViewType::NewAndOldImages)
        }),
        ttl: ttl
            .filter(|t| {
                matches!(
                    t.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
            })
            .and_then(|t| t.attribute_name().map(str::to_owned)),
    }
}

/// The table names of one deployment: `{prefix}-{suffix}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    prefix: String,
}

impl Tables {
    /// Tables named `{prefix}-connections`, `{prefix}-subscriptions`, `{prefix}-requests`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The name of a table.
    pub fn name(&self, spec: &TableSpec) -> String {
        format!("{}-{}", self.prefix, spec.suffix)
    }
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("complete key")
}

fn string_attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("complete attribute")
}

impl TableSpec {
    /// The CreateTable request for this table under `name`.
    pub(crate) fn create(
        &self,
        client: &aws_sdk_dynamodb::Client,
        name: String,
    ) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
        let mut attributes = vec![self.partition_key];
        let mut request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(self.partition_key, KeyType::Hash));
        if let Some(sort_key) = self.sort_key {
            attributes.push(sort_key);
            request = request.key_schema(key(sort_key, KeyType::Range));
        }
        for index in self.indexes {
            attributes.extend([index.partition_key, index.sort_key]);
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .key_schema(key(index.partition_key, KeyType::Hash))
                    .key_schema(key(index.sort_key, KeyType::Range))
                    .projection(if index.include.is_empty() {
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build()
                    } else {
                        Projection::builder()
                            .projection_type(ProjectionType::Include)
                            .set_non_key_attributes(Some(
                                index.include.iter().map(|&a| a.to_owned()).collect(),
                            ))
                            .build()
                    })
                    .build()
                    .expect("complete index"),
            );
        }
        attributes.sort_unstable();
        attributes.dedup();
        for attribute in attributes {
            request = request.attribute_definitions(string_attribute(attribute));
        }
        if self.stream {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .expect("complete stream specification"),
            );
        }
        request
    }
}
