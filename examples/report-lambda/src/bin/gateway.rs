//! The example app's gateway function.

#[tokio::main]
async fn main() -> Result<(), streamer_lambda::Error> {
    streamer_lambda::run_gateway(report_lambda::handlers()).await
}
