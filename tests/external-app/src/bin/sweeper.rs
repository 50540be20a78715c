//! The greeter's sweeper function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_sweeper(greeter::app().handlers()).await
}
