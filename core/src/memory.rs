//! The embedded store: everything in memory, behaving as DynamoDB does where it matters
//! (conditional writes, consistent reads, TTL attributes kept, a change feed of the requests
//! table ordered per item), so that the local stack runs the production code paths.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::connection::Phase;
use crate::protocol::Close;
use crate::store::{Change, ChangeKind, Finish, Page, RequestFilter, Store};
use crate::{
    AsyncRequest, Checkpoint, Connection, Error, RequestStatus, RequestTemplate, Result, Sender,
    Subscription, SubscriptionKey,
};

#[derive(Debug, Default)]
struct Tables {
    // Items are shared so that a read copies them after the lock is released.
    connections: HashMap<String, Arc<Connection>>,
    // Keyed like the DynamoDB table: request id, then connection and operation.
    subscriptions: BTreeMap<SubscriptionKey, Arc<Subscription>>,
    // Requests with their position in creation order.
    requests: HashMap<String, (u64, Arc<AsyncRequest>)>,
    // Request ids by position, for listing in creation order.
    request_order: BTreeMap<u64, String>,
    // Every position, for listings of every tenant.
    all_positions: BTreeSet<u64>,
    created: u64,
    // Positions by status and by tenant: listings read only what they can return.
    by_status: HashMap<RequestStatus, BTreeSet<u64>>,
    by_tenant: HashMap<String, BTreeSet<u64>>,
    // Acknowledged connections by tenant: what the connections quota counts.
    tenant_connections: HashMap<String, HashSet<String>>,
    // Kept states by request, then version.
    history: HashMap<String, BTreeMap<u64, Arc<AsyncRequest>>>,
    sequence: u64,
    feeds: Vec<mpsc::UnboundedSender<Change>>,
    // Requests not yet ended, by tenant: what the active-requests quota counts.
    active: HashMap<String, HashSet<String>>,
    // Workflow checkpoints by request, then index.
    checkpoints: HashMap<String, BTreeMap<u32, Checkpoint>>,
    // Children by batch, then index.
    children: HashMap<String, BTreeMap<u32, String>>,
    // Templates by tenant, then name.
    templates: BTreeMap<(String, String), RequestTemplate>,
    // Enqueues taken by tenant and one-second window.
    enqueues: HashMap<(String, i64), u32>,
}

impl Tables {
    /// Stores `request`, keeping the indexes in step. Returns the request it replaced.
    fn put_request(&mut self, request: Arc<AsyncRequest>) -> Option<Arc<AsyncRequest>> {
        let active = self.active.entry(request.tenant.clone()).or_default();
        if request.status.is_terminal() {
            active.remove(&request.id);
        } else {
            active.insert(request.id.clone());
        }
        let position = match self.requests.get(&request.id) {
            Some((position, old)) => {
                let position = *position;
                if old.status != request.status
                    && let Some(listed) = self.by_status.get_mut(&old.status)
                {
                    listed.remove(&position);
                }
                position
            }
            None => {
                self.created += 1;
                let position = self.created;
                self.request_order.insert(position, request.id.clone());
                self.all_positions.insert(position);
                self.by_tenant
                    .entry(request.tenant.clone())
                    .or_default()
                    .insert(position);
                position
            }
        };
        self.by_status
            .entry(request.status)
            .or_default()
            .insert(position);
        if let Some(parent) = &request.parent {
            self.children
                .entry(parent.id.clone())
                .or_default()
                .insert(parent.index, request.id.clone());
        }
        self.requests
            .insert(request.id.clone(), (position, request))
            .map(|(_, old)| old)
    }

    fn remove_request(&mut self, id: &str) -> Option<Arc<AsyncRequest>> {
        let (position, request) = self.requests.remove(id)?;
        if let Some(active) = self.active.get_mut(&request.tenant) {
            active.remove(id);
        }
        self.request_order.remove(&position);
        self.all_positions.remove(&position);
        // Its history goes with it: on DynamoDB the history items carry the same TTL.
        self.history.remove(id);
        self.checkpoints.remove(id);
        if let Some(listed) = self.by_status.get_mut(&request.status) {
            listed.remove(&position);
        }
        if let Some(listed) = self.by_tenant.get_mut(&request.tenant) {
            listed.remove(&position);
        }
        if let Some(parent) = &request.parent
            && let Some(children) = self.children.get_mut(&parent.id)
        {
            children.remove(&parent.index);
            if children.is_empty() {
                self.children.remove(&parent.id);
            }
        }
        Some(request)
    }

    /// A tenant's templates, by name.
    fn templates_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a RequestTemplate> {
        self.templates
            .range((tenant.to_owned(), String::new())..)
            .take_while(move |((t, _), _)| t == tenant)
            .map(|(_, template)| template)
    }

    /// A page of a batch's children, in their order in it.
    fn children_page(&self, parent: &str, filter: &RequestFilter) -> Page {
        let after = filter
            .after
            .as_ref()
            .and_then(|after| self.request(after))
            .and_then(|after| after.parent.as_ref())
            .map(|link| link.index);
        let Some(children) = self.children.get(parent) else {
            return Page::default();
        };
        let ids: Box<dyn Iterator<Item = (&u32, &String)>> = match (filter.newest_first, after) {
            (false, after) => Box::new(children.range(after.map_or(0, |a| a + 1)..)),
            (true, None) => Box::new(children.iter().rev()),
            (true, Some(after)) => Box::new(children.range(..after).rev()),
        };
        page_of(ids.filter_map(|(_, id)| self.request(id)), filter)
    }

    fn request(&self, id: &str) -> Option<&AsyncRequest> {
        self.requests.get(id).map(|(_, request)| &**request)
    }

    /// Stores `connection`, keeping the connections-by-tenant index in step.
    fn put_connection(&mut self, connection: Arc<Connection>) {
        self.unindex_connection(&connection.id);
        if let Some(principal) = &connection.principal {
            self.tenant_connections
                .entry(principal.tenant.clone())
                .or_default()
                .insert(connection.id.clone());
        }
        self.connections.insert(connection.id.clone(), connection);
    }

    fn remove_connection(&mut self, id: &str) -> Option<Arc<Connection>> {
        self.unindex_connection(id);
        self.connections.remove(id)
    }

    fn unindex_connection(&mut self, id: &str) {
        if let Some(principal) = self.connections.get(id).and_then(|c| c.principal.as_ref())
            && let Some(ids) = self.tenant_connections.get_mut(&principal.tenant)
        {
            ids.remove(id);
        }
    }

    // Called with the lock held, so the feed order is the write order.
    fn emit(
        &mut self,
        kind: ChangeKind,
        old: Option<Arc<AsyncRequest>>,
        new: Option<Arc<AsyncRequest>>,
    ) {
        if old == new {
            // DynamoDB emits no record for a write that changes nothing.
            return;
        }
        self.sequence += 1;
        let change = Change {
            sequence_number: format!("{:021}", self.sequence),
            kind,
            old,
            new,
        };
        // A copy is cheap: the images are shared.
        self.feeds.retain(|feed| feed.send(change.clone()).is_ok());
    }
}

/// The page of `listed` that `filter` asks for (tenant, owner, status; `limit` of them),
/// and whether more follow.
fn page_of<'a>(listed: impl Iterator<Item = &'a AsyncRequest>, filter: &RequestFilter) -> Page {
    let mut matching = listed
        .filter(|r| {
            filter
                .tenant
                .as_ref()
                .is_none_or(|tenant| r.tenant == *tenant)
        })
        .filter(|r| filter.owner.as_ref().is_none_or(|owner| r.owner == *owner))
        .filter(|r| filter.status.is_none_or(|status| r.status == status));
    let items: Vec<AsyncRequest> = matching.by_ref().take(filter.limit).cloned().collect();
    let next = match (items.last(), matching.next()) {
        (Some(last), Some(_)) => Some(last.id.clone()),
        _ => None,
    };
    Page { items, next }
}

/// DynamoDB's largest item, which the embedded store holds requests to as well.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Refuses an item over [`MAX_ITEM_BYTES`] (measured as its JSON), as DynamoDB refuses one:
/// nothing is written. `what` names it in the error.
fn within_item_size(item: &impl serde::Serialize, what: impl FnOnce() -> String) -> Result<()> {
    let bytes = crate::limits::json_len(item);
    if bytes > MAX_ITEM_BYTES {
        return Err(Error::backend(
            what(),
            std::io::Error::other(format!(
                "item size {bytes} bytes has exceeded the maximum allowed size of {MAX_ITEM_BYTES}"
            )),
        ));
    }
    Ok(())
}

/// [`within_item_size`] for a request.
fn request_within_item_size(request: &AsyncRequest) -> Result<()> {
    within_item_size(request, || format!("writing request {}", request.id))
}

/// The embedded store. Cheap operations under one std Mutex: no critical section awaits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().expect("memory store lock")
    }

    /// A new reader of the requests change feed, starting now. Every write to a request
    /// reaches every reader, in write order.
    pub fn changes(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tables().feeds.push(tx);
        rx
    }

    /// Deletes every item whose TTL attribute is before `now`, as DynamoDB's TTL does
    /// (expired requests reach the feed as [`ChangeKind::Expire`]). Returns how many went.
    pub fn expire(&self, now: DateTime<Utc>) -> usize {
        let now = now.timestamp();
        let mut tables = self.tables();
        let before = tables.connections.len() + tables.subscriptions.len() + tables.requests.len();
        let expired: Vec<String> = tables
            .connections
            .values()
            .filter(|c| c.expires_at < now)
            .map(|c| c.id.clone())
            .collect();
        for id in expired {
            tables.remove_connection(&id);
        }
        tables.subscriptions.retain(|_, s| s.expires_at >= now);
        let expired: Vec<String> = tables
            .requests
            .values()
            .filter(|(_, r)| r.expires_at < now)
            .map(|(_, r)| r.id.clone())
            .collect();
        for id in expired {
            if let Some(request) = tables.remove_request(&id) {
                tables.emit(ChangeKind::Expire, Some(request), None);
            }
        }
        before - (tables.connections.len() + tables.subscriptions.len() + tables.requests.len())
    }

    /// Deletes the requests that ended (COMPLETED, FAILED, CANCELLED) before `before`, with
    /// their history, as TTL deletions: a retention shorter than the TTL attribute's.
    /// Returns how many went.
    pub fn expire_ended(&self, before: DateTime<Utc>) -> usize {
        let mut tables = self.tables();
        let ended: Vec<String> = tables
            .requests
            .values()
            .filter(|(_, r)| r.status.is_terminal() && r.updated_at < before)
            .map(|(_, r)| r.id.clone())
            .collect();
        let count = ended.len();
        for id in ended {
            if let Some(request) = tables.remove_request(&id) {
                tables.emit(ChangeKind::Expire, Some(request), None);
            }
        }
        count
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_connection(&self, connection: &Connection) -> Result<()> {
        let connection = Arc::new(connection.clone());
        self.tables().put_connection(connection);
        Ok(())
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>> {
        let connection = self.tables().connections.get(id).cloned();
        Ok(connection.map(Arc::unwrap_or_clone))
    }

    async fn acknowledge_connection(
        &self,
        id: &str,
        payload: Option<Value>,
        principal: &crate::Principal,
    ) -> Result<()> {
        let mut tables = self.tables();
        let connection = tables
            .connections
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| Error::NotFound(format!("connection {id}")))?;
        if connection.phase != Phase::AwaitingInit {
            return Err(Error::Conflict(format!(
                "connection {id} already initialised"
            )));
        }
        connection.phase = Phase::Acknowledged;
        connection.init_payload = payload.map(Arc::new);
        connection.principal = Some(principal.clone());
        tables
            .tenant_connections
            .entry(principal.tenant.clone())
            .or_default()
            .insert(id.to_owned());
        Ok(())
    }

    async fn delete_connection(&self, id: &str) -> Result<Option<Connection>> {
        let connection = self.tables().remove_connection(id);
        Ok(connection.map(Arc::unwrap_or_clone))
    }

    async fn delete_connection_awaiting_init(&self, id: &str) -> Result<bool> {
        let mut tables = self.tables();
        let awaiting = tables
            .connections
            .get(id)
            .is_some_and(|c| c.phase == crate::connection::Phase::AwaitingInit);
        if awaiting {
            tables.remove_connection(id);
        }
        Ok(awaiting)
    }

    async fn connections_awaiting_init(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Connection>> {
        let mut waiting: Vec<Connection> = self
            .tables()
            .connections
            .values()
            .filter(|c| c.phase == Phase::AwaitingInit && c.connected_at < before)
            .map(|c| Connection::clone(c))
            .collect();
        waiting.sort_by_key(|c| c.connected_at);
        waiting.truncate(limit);
        Ok(waiting)
    }

    async fn add_operation(
        &self,
        connection_id: &str,
        operation_id: &str,
        request_id: &str,
    ) -> Result<()> {
        let mut tables = self.tables();
        let connection = tables
            .connections
            .get_mut(connection_id)
            .map(Arc::make_mut)
            .ok_or_else(|| Error::NotFound(format!("connection {connection_id}")))?;
        if connection.operations.contains_key(operation_id) {
            return Err(Error::Conflict(format!(
                "operation {operation_id} is active"
            )));
        }
        connection
            .operations
            .insert(operation_id.to_owned(), request_id.to_owned());
        Ok(())
    }

    async fn remove_operation(&self, connection_id: &str, operation_id: &str) -> Result<()> {
        if let Some(connection) = self.tables().connections.get_mut(connection_id) {
            Arc::make_mut(connection).operations.remove(operation_id);
        }
        Ok(())
    }

    async fn open_subscription(&self, subscription: &Subscription) -> Result<()> {
        let key = &subscription.key;
        let mut tables = self.tables();
        let connection = tables
            .connections
            .get_mut(&key.connection_id)
            .map(Arc::make_mut)
            .ok_or_else(|| Error::NotFound(format!("connection {}", key.connection_id)))?;
        if connection.operations.contains_key(&key.operation_id) {
            return Err(Error::Conflict(format!(
                "operation {} is active",
                key.operation_id
            )));
        }
        connection
            .operations
            .insert(key.operation_id.clone(), key.request_id.clone());
        tables
            .subscriptions
            .insert(key.clone(), Arc::new(subscription.clone()));
        Ok(())
    }

    async fn put_subscription(&self, subscription: &Subscription) -> Result<()> {
        let subscription = Arc::new(subscription.clone());
        self.tables()
            .subscriptions
            .insert(subscription.key.clone(), subscription);
        Ok(())
    }

    async fn subscriptions(&self, request_id: &str) -> Result<Vec<Arc<Subscription>>> {
        let from = SubscriptionKey {
            request_id: request_id.to_owned(),
            connection_id: String::new(),
            operation_id: String::new(),
        };
        Ok(self
            .tables()
            .subscriptions
            .range(from..)
            .take_while(|(key, _)| key.request_id == request_id)
            .map(|(_, s)| Arc::clone(s))
            .collect())
    }

    async fn subscription(&self, key: &SubscriptionKey) -> Result<Option<Arc<Subscription>>> {
        Ok(self.tables().subscriptions.get(key).map(Arc::clone))
    }

    async fn release_push(&self, key: &SubscriptionKey, version: u64) -> Result<()> {
        if let Some(subscription) = self.tables().subscriptions.get_mut(key)
            && subscription.last_version <= version
        {
            let subscription = Arc::make_mut(subscription);
            subscription.last_version = version;
            subscription.pushing_until = None;
        }
        Ok(())
    }

    async fn finish_subscription(&self, known: &Subscription, now: i64) -> Result<Finish> {
        let key = &known.key;
        let mut tables = self.tables();
        match tables.subscriptions.get(key) {
            None => Ok(Finish::Gone),
            Some(s) if s.pushing_until.is_some_and(|held| held >= now) => Ok(Finish::Busy),
            Some(_) => {
                let deleted = tables.subscriptions.remove(key);
                if let Some(connection) = tables.connections.get_mut(&key.connection_id)
                    && connection.operations.get(&key.operation_id) == Some(&key.request_id)
                {
                    Arc::make_mut(connection)
                        .operations
                        .remove(&key.operation_id);
                }
                drop(tables);
                Ok(deleted.map_or(Finish::Gone, |stored| {
                    let mut stored = Arc::unwrap_or_clone(stored);
                    stored.last_version = stored.last_version.max(known.last_version);
                    Finish::Deleted(Box::new(stored))
                }))
            }
        }
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<Option<Subscription>> {
        let deleted = self.tables().subscriptions.remove(key);
        Ok(deleted.map(Arc::unwrap_or_clone))
    }

    async fn create_request_within(
        &self,
        request: &AsyncRequest,
        max_active: Option<usize>,
    ) -> Result<()> {
        request_within_item_size(request)?;
        let request = Arc::new(request.clone());
        let mut tables = self.tables();
        if tables.requests.contains_key(&request.id) {
            return Err(Error::Conflict(format!("request {} exists", request.id)));
        }
        if let Some(max) = max_active {
            let active = tables.active.get(&request.tenant).map_or(0, HashSet::len);
            if active >= max && !request.status.is_terminal() {
                return Err(Error::QuotaFull(format!(
                    "tenant {} has {active} active requests",
                    request.tenant
                )));
            }
        }
        tables.put_request(Arc::clone(&request));
        tables.emit(ChangeKind::Insert, None, Some(request));
        Ok(())
    }

    async fn create_batch(
        &self,
        batch: &AsyncRequest,
        children: &[AsyncRequest],
        max_active: Option<usize>,
    ) -> Result<()> {
        request_within_item_size(batch)?;
        for child in children {
            request_within_item_size(child)?;
        }
        let mut tables = self.tables();
        if tables.requests.contains_key(&batch.id) {
            return Err(Error::Conflict(format!("request {} exists", batch.id)));
        }
        if let Some(max) = max_active {
            let active = tables.active.get(&batch.tenant).map_or(0, HashSet::len);
            if active + children.len() + 1 > max {
                return Err(Error::QuotaFull(format!(
                    "tenant {} has {active} active requests",
                    batch.tenant
                )));
            }
        }
        for request in std::iter::once(batch).chain(children) {
            let request = Arc::new(request.clone());
            tables.put_request(Arc::clone(&request));
            tables.emit(ChangeKind::Insert, None, Some(request));
        }
        Ok(())
    }

    async fn get_request(&self, id: &str) -> Result<Option<AsyncRequest>> {
        let request = self.tables().requests.get(id).map(|(_, r)| Arc::clone(r));
        Ok(request.map(Arc::unwrap_or_clone))
    }

    async fn update_request(&self, request: &AsyncRequest, expected_revision: u64) -> Result<()> {
        request_within_item_size(request)?;
        let request = Arc::new(request.clone());
        let mut tables = self.tables();
        match tables.request(&request.id) {
            Some(old) if old.revision == expected_revision => {}
            Some(old) => {
                return Err(Error::Conflict(format!(
                    "request {} is at revision {}, not {expected_revision}",
                    request.id, old.revision
                )));
            }
            None => {
                return Err(Error::Conflict(format!(
                    "request {} does not exist",
                    request.id
                )));
            }
        }
        let old = tables.put_request(Arc::clone(&request));
        tables.emit(ChangeKind::Modify, old, Some(request));
        Ok(())
    }

    async fn save_template(&self, template: &RequestTemplate) -> Result<RequestTemplate> {
        let mut tables = self.tables();
        let key = (template.tenant.clone(), template.name.clone());
        let version = tables.templates.get(&key).map_or(0, |t| t.version) + 1;
        let saved = RequestTemplate {
            version,
            ..template.clone()
        };
        tables.templates.insert(key, saved.clone());
        Ok(saved)
    }

    async fn get_template(&self, tenant: &str, name: &str) -> Result<Option<RequestTemplate>> {
        let key = (tenant.to_owned(), name.to_owned());
        Ok(self.tables().templates.get(&key).cloned())
    }

    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool> {
        let key = (tenant.to_owned(), name.to_owned());
        Ok(self.tables().templates.remove(&key).is_some())
    }

    async fn templates(&self, tenant: &str, limit: usize) -> Result<Vec<RequestTemplate>> {
        let tables = self.tables();
        Ok(tables.templates_of(tenant).take(limit).cloned().collect())
    }

    async fn count_templates(&self, tenant: &str, up_to: usize) -> Result<usize> {
        Ok(self.tables().templates_of(tenant).take(up_to).count())
    }

    async fn save_checkpoint(
        &self,
        request_id: &str,
        checkpoint: &Checkpoint,
        _expires_at: i64,
    ) -> Result<()> {
        within_item_size(checkpoint, || {
            format!("keeping a checkpoint of {request_id}")
        })?;
        self.tables()
            .checkpoints
            .entry(request_id.to_owned())
            .or_default()
            .entry(checkpoint.index)
            .or_insert_with(|| checkpoint.clone());
        Ok(())
    }

    async fn checkpoints(&self, request_id: &str) -> Result<Vec<Checkpoint>> {
        Ok(self
            .tables()
            .checkpoints
            .get(request_id)
            .map(|kept| kept.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn record_history(&self, states: &[Arc<AsyncRequest>]) -> Result<()> {
        let mut tables = self.tables();
        for state in states {
            tables
                .history
                .entry(state.id.clone())
                .or_default()
                .insert(state.version, Arc::clone(state));
        }
        Ok(())
    }

    async fn request_history(
        &self,
        id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<AsyncRequest>> {
        let shared: Vec<Arc<AsyncRequest>> = self
            .tables()
            .history
            .get(id)
            .map(|versions| {
                versions
                    .range(after_version + 1..)
                    .take(limit)
                    .map(|(_, state)| Arc::clone(state))
                    .collect()
            })
            .unwrap_or_default();
        Ok(shared.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    async fn list_requests(&self, filter: &RequestFilter) -> Result<Page> {
        let tables = self.tables();
        if let Some(parent) = &filter.parent {
            return Ok(tables.children_page(parent, filter));
        }
        let after = filter
            .after
            .as_ref()
            .and_then(|after| tables.requests.get(after))
            .map(|(position, _)| *position);
        // Listed from the narrowest index the filter allows, in creation order (or its
        // reverse), after the cursor.
        let empty = BTreeSet::new();
        let index: &BTreeSet<u64> = match (filter.status, &filter.tenant) {
            (Some(status), _) => tables.by_status.get(&status).unwrap_or(&empty),
            (None, Some(tenant)) => tables.by_tenant.get(tenant).unwrap_or(&empty),
            (None, None) => &tables.all_positions,
        };
        let positions: Box<dyn Iterator<Item = &u64>> = match (filter.newest_first, after) {
            (false, after) => Box::new(index.range(after.map_or(0, |a| a + 1)..)),
            (true, None) => Box::new(index.iter().rev()),
            (true, Some(after)) => Box::new(index.range(..after).rev()),
        };
        let listed = positions
            .filter_map(|position| tables.request_order.get(position))
            .filter_map(|id| tables.request(id));
        Ok(page_of(listed, filter))
    }

    async fn count_connections(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        up_to: usize,
    ) -> Result<usize> {
        let tables = self.tables();
        let now = now.timestamp();
        Ok(tables.tenant_connections.get(tenant).map_or(0, |ids| {
            ids.iter()
                .filter(|id| {
                    tables
                        .connections
                        .get(*id)
                        .is_some_and(|c| c.expires_at > now)
                })
                .take(up_to)
                .count()
        }))
    }

    async fn count_active_requests(&self, tenant: &str, up_to: usize) -> Result<usize> {
        let tables = self.tables();
        Ok(tables.active.get(tenant).map_or(0, HashSet::len).min(up_to))
    }

    async fn take_enqueue_tokens(
        &self,
        tenant: &str,
        window: i64,
        limit: u32,
        count: u32,
    ) -> Result<bool> {
        let mut tables = self.tables();
        tables.enqueues.retain(|(_, w), _| *w >= window);
        let taken = tables
            .enqueues
            .entry((tenant.to_owned(), window))
            .or_default();
        if taken.saturating_add(count) > limit {
            return Ok(false);
        }
        *taken += count;
        Ok(true)
    }
}

/// A sender that records what it is asked to send, for unit tests and benchmarks. Posting to
/// a connection marked gone fails with [`Error::Gone`], as the Management API does.
#[derive(Debug, Default)]
pub struct MemorySender {
    sent: Mutex<Vec<(String, String)>>,
    closed: Mutex<Vec<(String, Close)>>,
    gone: Mutex<Vec<String>>,
}

impl MemorySender {
    /// A sender with nothing sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later post to this connection fail with [`Error::Gone`].
    pub fn mark_gone(&self, connection_id: &str) {
        self.gone
            .lock()
            .expect("lock")
            .push(connection_id.to_owned());
    }

    /// Takes what was posted so far: `(connection id, frame)`.
    pub fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.sent.lock().expect("lock"))
    }

    /// What was closed so far.
    pub fn closed(&self) -> Vec<(String, Close)> {
        self.closed.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Sender for MemorySender {
    async fn post(&self, connection_id: &str, data: &str) -> Result<()> {
        if self
            .gone
            .lock()
            .expect("lock")
            .iter()
            .any(|id| id == connection_id)
        {
            return Err(Error::Gone(connection_id.to_owned()));
        }
        self.sent
            .lock()
            .expect("lock")
            .push((connection_id.to_owned(), data.to_owned()));
        Ok(())
    }

    async fn close(&self, connection_id: &str, close: &Close) -> Result<()> {
        self.closed
            .lock()
            .expect("lock")
            .push((connection_id.to_owned(), close.clone()));
        Ok(())
    }
}
