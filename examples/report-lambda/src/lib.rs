//! The example app (`generateReport`, `flakyImport`) as four Lambda functions: each binary
//! in `src/bin` is one line around `streamer::lambda`. `deploy/template.yaml` builds them with
//! cargo-lambda.

use std::sync::Arc;

/// The example app's handlers.
pub fn handlers() -> Arc<streamer::Handlers> {
    report_handlers::app().handlers()
}
