//! The example app's processor function.

#[tokio::main]
async fn main() -> Result<(), streamer_lambda::Error> {
    streamer_lambda::run_processor(report_lambda::handlers()).await
}
