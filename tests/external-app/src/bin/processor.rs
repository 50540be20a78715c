//! The greeter's processor function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_processor(greeter::app().handlers()).await
}
