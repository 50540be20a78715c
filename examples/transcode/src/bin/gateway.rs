//! The transcode app's gateway function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_gateway(transcode::app().handlers()).await
}
