//! The transcode app's processor function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_processor(transcode::app().handlers()).await
}
