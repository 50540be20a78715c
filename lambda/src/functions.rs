//! The four functions. Each reads its [`Config`] and builds its clients once, then serves
//! invocations through the Lambda Runtime API; every invocation runs in a span with its
//! request and trace ids and ends with a flush of its metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpResponse, ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::encodings::Body;
use lambda_runtime::{Context, LambdaEvent, service_fn};
use serde_json::Value;
use streamer_aws::stream::{self, StreamEvent};
use streamer_aws::{ApiGatewaySender, Aws, Tables, WorkerEvent};
use streamer_core::{RandomIds, Store, SystemClock};
use streamer_gateway::Gateway;
use streamer_processor::{
    CancelSignal, Dispatcher, FairDispatcher, Outcome, Processor, Sweeper, Worker,
};
use streamer_schema::{Handlers, Services};
use tracing::Instrument;

use crate::emf::EmfRecorder;
use crate::{Config, ConfigError, Error, logging};

/// A retry is waited out inside the invocation only when this much time would be left after
/// it; otherwise the sweeper dispatches it when it is due.
const RETRY_MARGIN: Duration = Duration::from_secs(10);

/// What every function sets up first.
struct Function {
    name: &'static str,
    config: Config,
    aws: Aws,
    metrics: EmfRecorder,
}

impl Function {
    async fn setup(name: &'static str) -> Result<Self, Error> {
        logging::init();
        let metrics = EmfRecorder::default();
        // Only the first recorder of a process counts; a second setup keeps it.
        let _ = metrics::set_global_recorder(metrics.clone());
        let config = Config::from_env()?;
        let aws = Aws::from_env().await;
        tracing::info!(function = name, tables = %config.table_prefix, "initialised");
        Ok(Self {
            name,
            config,
            aws,
            metrics,
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(
            self.aws
                .store(Tables::with_prefix(&self.config.table_prefix)),
        )
    }

    /// The Management API sender of the configured WebSocket stage.
    fn sender(&self) -> Result<ApiGatewaySender, ConfigError> {
        Ok(self
            .aws
            .sender(self.config.websocket_endpoint()?, self.config.sender))
    }

    /// The dispatcher to the configured worker function(s), holding back the jobs of a
    /// tenant that runs its share of them when a share is configured.
    fn dispatcher(&self, store: &Arc<dyn Store>) -> Result<Arc<dyn Dispatcher>, ConfigError> {
        let lambda: Arc<dyn Dispatcher> = Arc::new(self.aws.dispatcher(
            self.config.worker_function()?,
            self.config.priority_worker_function.as_deref(),
        ));
        Ok(match self.config.tenant_job_share {
            Some(share) => Arc::new(FairDispatcher::new(lambda, Arc::clone(store), share)),
            None => lambda,
        })
    }

    fn services(&self, store: Arc<dyn Store>) -> Services {
        Services {
            store,
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            limits: self.config.limits,
            access: self.config.access,
        }
    }

    /// Runs one invocation in its span, then flushes its metrics.
    async fn observe<T>(&self, context: &Context, work: impl Future<Output = T>) -> T {
        let trace = context.xray_trace_id.as_deref().unwrap_or_default();
        let span = tracing::info_span!(
            "invocation",
            function = self.name,
            aws_request_id = %context.request_id,
            xray_trace_id = trace
        );
        let output = work.instrument(span).await;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let lines = self.metrics.flush(
            &self.config.metrics_namespace,
            &[("Function", self.name)],
            &[("RequestId", &context.request_id), ("TraceId", trace)],
            i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
        );
        for line in lines {
            println!("{line}");
        }
        output
    }
}

/// The gateway: WebSocket route events and GraphQL over HTTP.
///
/// # Errors
///
/// When the configuration is incomplete or the schema cannot be built; or when the runtime
/// fails.
pub async fn run_gateway(handlers: Arc<Handlers>) -> Result<(), Error> {
    let function = Function::setup("gateway").await?;
    let services = function.services(function.store());
    let sender = Arc::new(function.sender()?);
    let gateway = Gateway::for_app(
        handlers,
        &services,
        sender,
        function.config.authenticator()?,
    )?;
    // Where the pages open their socket: the WebSocket API, another host than the HTTP API.
    let websocket_url = std::env::var("STREAMER_WEBSOCKET_URL").ok();
    let (function, gateway, websocket_url) = (&function, &gateway, &websocket_url);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        function
            .observe(
                &event.context,
                gateway_event(gateway, websocket_url, event.payload),
            )
            .await
    }))
    .await
}

/// A page or asset (`streamer_gateway::pages`) as an HTTP API response: text, or 404.
fn page_response(
    path: &str,
    websocket_url: Option<&str>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let mut response = ApiGatewayV2httpResponse::default();
    match streamer_gateway::pages::page(path, websocket_url) {
        Some(page) => {
            response.status_code = 200;
            response
                .headers
                .insert("content-type", page.content_type.parse()?);
            response.body = Some(Body::Text(String::from_utf8(page.body.into_owned())?));
        }
        None => response.status_code = 404,
    }
    Ok(response)
}

/// Tells WebSocket route events from HTTP requests (payload format 2.0) and answers each:
/// `POST /graphql`, or a page (`GET`).
async fn gateway_event(
    gateway: &Gateway,
    websocket_url: &Option<String>,
    payload: Value,
) -> Result<Value, Error> {
    let context = &payload["requestContext"];
    if context["connectionId"].is_string() {
        let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(payload)?;
        return Ok(serde_json::to_value(gateway.handle(event).await)?);
    }
    if context["http"].is_object() {
        let request: ApiGatewayV2httpRequest = serde_json::from_value(payload)?;
        if request.request_context.http.method.as_str() == "GET" {
            return Ok(serde_json::to_value(page_response(
                request.raw_path.as_deref().unwrap_or("/"),
                websocket_url.as_deref(),
            )?)?);
        }
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = match (request.body, request.is_base64_encoded) {
            (Some(body), true) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(body)?
            }
            (Some(body), false) => body.into_bytes(),
            (None, _) => Vec::new(),
        };
        let content_type = request
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let (status, answer) = gateway
            .execute_http(&body, authorization.as_deref(), content_type.as_deref())
            .await;
        let mut response = ApiGatewayV2httpResponse::default();
        response.status_code = i64::from(status);
        response
            .headers
            .insert("content-type", "application/json".parse()?);
        response.body = Some(Body::Text(answer));
        return Ok(serde_json::to_value(response)?);
    }
    Err("neither an API Gateway WebSocket event nor an HTTP request (payload format 2.0)".into())
}

/// The processor: stream batches in, `batchItemFailures` out.
///
/// # Errors
///
/// When the configuration is incomplete or the schema cannot be built; or when the runtime
/// fails.
pub async fn run_processor(handlers: Arc<Handlers>) -> Result<(), Error> {
    let function = Function::setup("processor").await?;
    let store = function.store();
    let services = function.services(Arc::clone(&store));
    let sender = Arc::new(function.sender()?);
    let dispatcher = function.dispatcher(&store)?;
    let processor = Processor::for_app(handlers, &services, sender, dispatcher)?;
    let (function, processor) = (&function, &processor);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move {
            let work = async { Ok::<_, Error>(stream::handle(processor, &event.payload).await) };
            function.observe(&event.context, work).await
        },
    ))
    .await
}

/// The worker: one job per invocation.
///
/// # Errors
///
/// When the configuration is incomplete; or when the runtime fails.
pub async fn run_worker(handlers: Arc<Handlers>) -> Result<(), Error> {
    let function = Function::setup("worker").await?;
    let worker = Worker::new(function.store(), Arc::new(SystemClock), handlers)
        .with_settings(function.config.worker)
        .with_tenant_active_requests(function.config.limits.max_tenant_active_requests);
    let (function, worker) = (&function, &worker);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<WorkerEvent>| async move {
            let WorkerEvent {
                request_id: id,
                state,
            } = event.payload;
            let mut known = state.map(|state| *state);
            let deadline = event.context.deadline();
            // The attempt ends before Lambda stops the function.
            let stop = tokio::time::Instant::now()
                + deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
            let work = async {
                loop {
                    let outcome = worker
                        .run_signalled(&id, known.take(), Some(stop), CancelSignal::default())
                        .await?;
                    if let Outcome::RetryAfter(delay) = outcome {
                        let left = deadline
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        if left > delay + RETRY_MARGIN {
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                    tracing::info!(request_id = %id, ?outcome, "worker done");
                    return Ok::<_, Error>(
                        serde_json::json!({ "requestId": id, "outcome": format!("{outcome:?}") }),
                    );
                }
            };
            function.observe(&event.context, work).await
        },
    ))
    .await
}

/// The sweeper: one sweep per (scheduled) invocation.
///
/// # Errors
///
/// When the configuration is incomplete; or when the runtime fails.
pub async fn run_sweeper(_handlers: Arc<Handlers>) -> Result<(), Error> {
    let function = Function::setup("sweeper").await?;
    let sender = function.sender()?;
    let store = function.store();
    let dispatcher = function.dispatcher(&store)?;
    let sweeper = Sweeper::new(
        store,
        Arc::new(sender),
        dispatcher,
        Arc::new(SystemClock),
        function.config.sweep,
    );
    let (function, sweeper) = (&function, &sweeper);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let work = async { Ok::<_, Error>(serde_json::to_value(sweeper.sweep().await?)?) };
        function.observe(&event.context, work).await
    }))
    .await
}
