//! [`CountCalls`]: an SDK interceptor that counts every attempt a client sends, by service
//! and operation (`streamer_core::calls`, and the `AwsCalls` metric, which the Lambda
//! functions flush as EMF). Every client this crate builds carries it.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use streamer_core::metric;

/// Counts the attempts a client sends; see the [module](self).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountCalls;

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            streamer_core::calls::record(metadata.service(), metadata.name());
            metrics::counter!(
                metric::AWS_CALLS,
                "service" => metadata.service().to_owned(),
                "operation" => metadata.name().to_owned()
            )
            .increment(1);
        }
        Ok(())
    }
}
