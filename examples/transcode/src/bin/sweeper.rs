//! The transcode app's sweeper function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_sweeper(transcode::app().handlers()).await
}
