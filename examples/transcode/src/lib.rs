//! Video transcoding as a Streamer app: one job turns a source video into a list of
//! renditions, reporting progress per rendition, and returns where each one is.
//!
//! The transcoding itself is simulated (segments of a fixed duration, each taking
//! `segmentDelayMs`); what the example shows is the shape of such a handler: a typed input
//! with a list, validation that fails for good, progress messages per part, cancellation
//! between segments, and a typed output.

use std::time::Duration;

use streamer::async_graphql::{InputObject, SimpleObject};
use streamer::{App, Handler, JobContext, JobError};

/// One rendition to produce.
#[derive(Debug, Clone, InputObject)]
#[graphql(crate = "streamer::async_graphql")]
pub struct RenditionInput {
    /// Its name, unique within the job: `1080p`, `720p`, …
    pub name: String,
    /// Frame width, in pixels.
    pub width: i32,
    /// Frame height, in pixels.
    pub height: i32,
    /// Target bitrate, in kbit/s.
    pub bitrate_kbps: i32,
}

/// A video to transcode, and into what.
#[derive(Debug, InputObject)]
#[graphql(crate = "streamer::async_graphql")]
pub struct TranscodeInput {
    /// Where the source is.
    pub source_url: String,
    /// Its length, in seconds.
    pub duration_seconds: i32,
    /// The renditions to produce, in order.
    pub renditions: Vec<RenditionInput>,
    /// How long each ten-second segment takes to transcode, in milliseconds.
    #[graphql(default = 50)]
    pub segment_delay_ms: i32,
}

/// A rendition produced.
#[derive(Debug, Clone, PartialEq, SimpleObject, serde::Serialize)]
#[graphql(crate = "streamer::async_graphql")]
#[serde(rename_all = "camelCase")]
pub struct Rendition {
    /// Its name, as asked.
    pub name: String,
    /// Where it is.
    pub url: String,
    /// Frame width, in pixels.
    pub width: i32,
    /// Frame height, in pixels.
    pub height: i32,
    /// Its size.
    pub size_bytes: i32,
}

/// Everything a job produced.
#[derive(Debug, SimpleObject, serde::Serialize)]
#[graphql(crate = "streamer::async_graphql")]
#[serde(rename_all = "camelCase")]
pub struct Transcoded {
    /// The renditions, in the order asked.
    pub renditions: Vec<Rendition>,
    /// Segments transcoded in all.
    pub segments: i32,
}

/// The seconds of video in one segment.
const SEGMENT_SECONDS: i32 = 10;
/// The longest video (three hours), the most renditions and the longest segment delay.
const MAX_DURATION_SECONDS: i32 = 3 * 60 * 60;
const MAX_RENDITIONS: usize = 8;
const MAX_SEGMENT_DELAY_MS: i32 = 10_000;

/// Transcodes a video into its renditions, one after the other.
#[derive(Debug)]
pub struct Transcode;

impl Transcode {
    fn validate(input: &TranscodeInput) -> Result<(), JobError> {
        let bad = |message: String| Err(JobError::permanent("BAD_INPUT", message));
        if input.renditions.is_empty() || input.renditions.len() > MAX_RENDITIONS {
            return bad(format!("1 to {MAX_RENDITIONS} renditions"));
        }
        if !(1..=MAX_DURATION_SECONDS).contains(&input.duration_seconds) {
            return bad(format!("durationSeconds is 1 to {MAX_DURATION_SECONDS}"));
        }
        if !(0..=MAX_SEGMENT_DELAY_MS).contains(&input.segment_delay_ms) {
            return bad(format!("segmentDelayMs is 0 to {MAX_SEGMENT_DELAY_MS}"));
        }
        for (n, rendition) in input.renditions.iter().enumerate() {
            if input.renditions[..n]
                .iter()
                .any(|r| r.name == rendition.name)
            {
                return bad(format!("rendition {:?} is named twice", rendition.name));
            }
            let dimensions = 16..=7680;
            if !dimensions.contains(&rendition.width)
                || !dimensions.contains(&rendition.height)
                || !(100..=100_000).contains(&rendition.bitrate_kbps)
            {
                return bad(format!("rendition {:?} is out of range", rendition.name));
            }
        }
        Ok(())
    }
}

impl Handler for Transcode {
    const ACTION: &'static str = "transcode";
    type Input = TranscodeInput;
    type Output = Transcoded;

    async fn process(
        &self,
        input: TranscodeInput,
        job: JobContext,
    ) -> Result<Transcoded, JobError> {
        Self::validate(&input)?;
        let segments = (input.duration_seconds + SEGMENT_SECONDS - 1) / SEGMENT_SECONDS;
        let delay = Duration::from_millis(u64::from(input.segment_delay_ms.unsigned_abs()));
        let parts = input.renditions.len() as f64;
        let mut produced = Vec::new();
        for (n, rendition) in input.renditions.iter().enumerate() {
            for segment in 1..=segments {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = job.cancelled() => return Err(JobError::cancelled()),
                }
                let done = (n as f64 + f64::from(segment) / f64::from(segments)) / parts;
                let percent = segment * 100 / segments;
                job.progress(done, format!("{}: {percent}%", rendition.name))
                    .await?;
            }
            // kbit/s × seconds / 8 = bytes (×1000 / 8).
            let size = i64::from(rendition.bitrate_kbps) * 125 * i64::from(input.duration_seconds);
            produced.push(Rendition {
                name: rendition.name.clone(),
                url: format!(
                    "{}/{}.mp4",
                    input.source_url.trim_end_matches('/'),
                    rendition.name
                ),
                width: rendition.width,
                height: rendition.height,
                size_bytes: i32::try_from(size).unwrap_or(i32::MAX),
            });
        }
        Ok(Transcoded {
            renditions: produced,
            segments: segments * input.renditions.len() as i32,
        })
    }

    fn max_attempts(&self) -> u32 {
        3
    }
}

/// The app.
pub fn app() -> App {
    App::new().register(Transcode)
}
