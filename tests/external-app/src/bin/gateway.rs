//! The greeter's gateway function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_gateway(greeter::app().handlers()).await
}
