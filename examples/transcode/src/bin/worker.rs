//! The transcode app's worker function.

#[tokio::main]
async fn main() -> Result<(), streamer::lambda::Error> {
    streamer::lambda::run_worker(transcode::app().handlers()).await
}
