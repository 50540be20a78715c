//! The example app's worker function.

#[tokio::main]
async fn main() -> Result<(), streamer_lambda::Error> {
    streamer_lambda::run_worker(report_lambda::handlers()).await
}
