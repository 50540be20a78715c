//! The example app's processor function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_processor(report_lambda::handlers()).await
}
