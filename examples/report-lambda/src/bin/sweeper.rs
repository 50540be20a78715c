//! The example app's sweeper function.

#[tokio::main]
async fn main() -> Result<(), streamer_lambda::Error> {
    streamer_lambda::run_sweeper(report_lambda::handlers()).await
}
