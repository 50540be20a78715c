//! The greeter's worker function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_worker(greeter::app().handlers()).await
}
