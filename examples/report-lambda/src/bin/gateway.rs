//! The example app's gateway function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_gateway(report_lambda::handlers()).await
}
