//! [`LaggingIndexes`]: a store whose index queries answer from a view of the tables as they
//! were a while ago, as DynamoDB's global secondary indexes do (they are eventually
//! consistent; a write typically reaches them within a second, longer under load). Reads by
//! key, subscriptions and history stay strongly consistent, as on DynamoDB. For tests: code
//! that acts on an index result must re-check it on the table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{Finish, Page, RequestFilter, Store};
use crate::{
    AsyncRequest, Connection, MemoryStore, Principal, RequestTemplate, Result, Subscription,
    SubscriptionKey,
};

/// A copy of one item, to be applied to the lagging view.
#[derive(Debug)]
enum Copy {
    Connection(String, Option<Connection>),
    Request(Box<AsyncRequest>),
}

/// Wraps a store; its index queries (connections awaiting init, request listings and the
/// connections quota's count) see every write `lag` late. See the [module](self).
#[derive(Debug, Clone)]
pub struct LaggingIndexes {
    inner: Arc<dyn Store>,
    view: Arc<MemoryStore>,
    copies: mpsc::UnboundedSender<(tokio::time::Instant, Copy)>,
    /// The task that applies copies to the view, started by the first write (so that the
    /// store can be built outside a runtime).
    applier: Arc<std::sync::Mutex<Option<Applier>>>,
}

/// What the applying task needs before it starts.
#[derive(Debug)]
struct Applier {
    arriving: mpsc::UnboundedReceiver<(tokio::time::Instant, Copy)>,
    lag: Duration,
}

impl LaggingIndexes {
    /// `inner`, with index queries `lag` behind its writes.
    pub fn new(inner: Arc<dyn Store>, lag: Duration) -> Self {
        let (copies, arriving) = mpsc::unbounded_channel::<(tokio::time::Instant, Copy)>();
        Self {
            inner,
            view: Arc::new(MemoryStore::new()),
            copies,
            applier: Arc::new(std::sync::Mutex::new(Some(Applier { arriving, lag }))),
        }
    }

    /// Sends a copy to the view, due `lag` from now; copies are applied in the order sent.
    fn send(&self, copy: Copy) {
        if let Some(Applier { mut arriving, lag }) =
            self.applier.lock().expect("applier lock").take()
        {
            let view = Arc::clone(&self.view);
            tokio::spawn(async move {
                while let Some((due, copy)) = arriving.recv().await {
                    tokio::time::sleep_until(due + lag).await;
                    let _ = apply(&view, copy).await;
                }
            });
        }
        let _ = self.copies.send((tokio::time::Instant::now(), copy));
    }

    /// Copies the item as it is on the table now.
    async fn copy_connection(&self, id: &str) {
        if let Ok(connection) = self.inner.get_connection(id).await {
            self.send(Copy::Connection(id.to_owned(), connection));
        }
    }

    async fn copy_request(&self, id: &str) {
        if let Ok(Some(request)) = self.inner.get_request(id).await {
            self.send(Copy::Request(Box::new(request)));
        }
    }
}

/// Puts a copy into the view; a request's copy never replaces a newer revision.
async fn apply(view: &MemoryStore, copy: Copy) -> Result<()> {
    match copy {
        Copy::Connection(id, None) => {
            view.delete_connection(&id).await?;
        }
        Copy::Connection(_, Some(connection)) => view.put_connection(&connection).await?,
        Copy::Request(request) => match view.get_request(&request.id).await? {
            None => view.create_request(&request).await?,
            Some(seen) if seen.revision <= request.revision => {
                view.update_request(&request, seen.revision).await?;
            }
            Some(_) => {}
        },
    }
    Ok(())
}

#[async_trait]
impl Store for LaggingIndexes {
    async fn put_connection(&self, connection: &Connection) -> Result<()> {
        self.inner.put_connection(connection).await?;
        self.copy_connection(&connection.id).await;
        Ok(())
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>> {
        self.inner.get_connection(id).await
    }

    async fn acknowledge_connection(
        &self,
        id: &str,
        payload: Option<Value>,
        principal: &Principal,
    ) -> Result<()> {
        self.inner
            .acknowledge_connection(id, payload, principal)
            .await?;
        self.copy_connection(id).await;
        Ok(())
    }

    async fn delete_connection(&self, id: &str) -> Result<Option<Connection>> {
        let deleted = self.inner.delete_connection(id).await?;
        self.copy_connection(id).await;
        Ok(deleted)
    }

    async fn delete_connection_awaiting_init(&self, id: &str) -> Result<bool> {
        let deleted = self.inner.delete_connection_awaiting_init(id).await?;
        self.copy_connection(id).await;
        Ok(deleted)
    }

    async fn add_operation(
        &self,
        connection_id: &str,
        operation_id: &str,
        request_id: &str,
    ) -> Result<()> {
        self.inner
            .add_operation(connection_id, operation_id, request_id)
            .await
    }

    async fn remove_operation(&self, connection_id: &str, operation_id: &str) -> Result<()> {
        self.inner
            .remove_operation(connection_id, operation_id)
            .await
    }

    async fn connections_awaiting_init(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Connection>> {
        self.view.connections_awaiting_init(before, limit).await
    }

    async fn open_subscription(&self, subscription: &Subscription) -> Result<()> {
        self.inner.open_subscription(subscription).await
    }

    async fn put_subscription(&self, subscription: &Subscription) -> Result<()> {
        self.inner.put_subscription(subscription).await
    }

    async fn subscriptions(&self, request_id: &str) -> Result<Vec<Arc<Subscription>>> {
        self.inner.subscriptions(request_id).await
    }

    async fn subscription(&self, key: &SubscriptionKey) -> Result<Option<Arc<Subscription>>> {
        self.inner.subscription(key).await
    }

    async fn release_push(&self, key: &SubscriptionKey, version: u64) -> Result<()> {
        self.inner.release_push(key, version).await
    }

    async fn finish_subscription(&self, known: &Subscription, now: i64) -> Result<Finish> {
        self.inner.finish_subscription(known, now).await
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<Option<Subscription>> {
        self.inner.delete_subscription(key).await
    }

    async fn create_request_within(
        &self,
        request: &AsyncRequest,
        max_active: Option<usize>,
    ) -> Result<()> {
        self.inner
            .create_request_within(request, max_active)
            .await?;
        self.copy_request(&request.id).await;
        Ok(())
    }

    async fn create_batch(
        &self,
        batch: &AsyncRequest,
        children: &[AsyncRequest],
        max_active: Option<usize>,
    ) -> Result<()> {
        self.inner.create_batch(batch, children, max_active).await?;
        for request in std::iter::once(batch).chain(children) {
            self.copy_request(&request.id).await;
        }
        Ok(())
    }

    async fn get_request(&self, id: &str) -> Result<Option<AsyncRequest>> {
        self.inner.get_request(id).await
    }

    async fn get_requests(&self, ids: &[String]) -> Result<Vec<AsyncRequest>> {
        self.inner.get_requests(ids).await
    }

    async fn update_request(&self, request: &AsyncRequest, expected_revision: u64) -> Result<()> {
        self.inner
            .update_request(request, expected_revision)
            .await?;
        self.copy_request(&request.id).await;
        Ok(())
    }

    async fn list_requests(&self, filter: &RequestFilter) -> Result<Page> {
        self.view.list_requests(filter).await
    }

    async fn count_connections(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        up_to: usize,
    ) -> Result<usize> {
        self.view.count_connections(tenant, now, up_to).await
    }

    async fn count_active_requests(&self, tenant: &str, up_to: usize) -> Result<usize> {
        // A counter on the base table, not an index.
        self.inner.count_active_requests(tenant, up_to).await
    }

    async fn take_enqueue_tokens(
        &self,
        tenant: &str,
        window: i64,
        limit: u32,
        count: u32,
    ) -> Result<bool> {
        self.inner
            .take_enqueue_tokens(tenant, window, limit, count)
            .await
    }

    async fn save_template(&self, template: &RequestTemplate) -> Result<RequestTemplate> {
        self.inner.save_template(template).await
    }

    async fn get_template(&self, tenant: &str, name: &str) -> Result<Option<RequestTemplate>> {
        self.inner.get_template(tenant, name).await
    }

    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool> {
        self.inner.delete_template(tenant, name).await
    }

    async fn templates(&self, tenant: &str, limit: usize) -> Result<Vec<RequestTemplate>> {
        self.inner.templates(tenant, limit).await
    }

    async fn count_templates(&self, tenant: &str, up_to: usize) -> Result<usize> {
        self.inner.count_templates(tenant, up_to).await
    }

    async fn save_checkpoint(
        &self,
        request_id: &str,
        checkpoint: &crate::Checkpoint,
        expires_at: i64,
    ) -> Result<()> {
        self.inner
            .save_checkpoint(request_id, checkpoint, expires_at)
            .await
    }

    async fn checkpoints(&self, request_id: &str) -> Result<Vec<crate::Checkpoint>> {
        self.inner.checkpoints(request_id).await
    }

    async fn record_history(&self, states: &[Arc<AsyncRequest>]) -> Result<()> {
        self.inner.record_history(states).await
    }

    async fn request_history(
        &self,
        id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<AsyncRequest>> {
        self.inner.request_history(id, after_version, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    #[tokio::test(start_paused = true)]
    async fn index_queries_see_writes_late_and_reads_by_key_at_once() {
        let clock = ManualClock::default();
        let store = LaggingIndexes::new(Arc::new(MemoryStore::new()), Duration::from_secs(1));
        store
            .put_connection(&Connection::new("c", clock.now()))
            .await
            .unwrap();
        let later = clock.now() + chrono::Duration::seconds(10);
        assert!(
            store
                .connections_awaiting_init(later, 10)
                .await
                .unwrap()
                .is_empty(),
            "not yet"
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            store
                .connections_awaiting_init(later, 10)
                .await
                .unwrap()
                .len(),
            1
        );

        // Acknowledged: the table knows at once, the index a second later.
        store
            .acknowledge_connection("c", None, &Principal::new("t", "u"))
            .await
            .unwrap();
        assert!(
            store
                .get_connection("c")
                .await
                .unwrap()
                .unwrap()
                .principal
                .is_some()
        );
        assert_eq!(
            store
                .connections_awaiting_init(later, 10)
                .await
                .unwrap()
                .len(),
            1,
            "the index still lists it"
        );
        assert!(
            !store.delete_connection_awaiting_init("c").await.unwrap(),
            "a conditional delete on the table keeps it"
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(
            store
                .connections_awaiting_init(later, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
