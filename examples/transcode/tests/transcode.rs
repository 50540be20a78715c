//! The transcode app, tested with the test kit alone: the handler on its own, then the whole
//! app in process.

use streamer::RequestStatus;
use streamer::testing::{AppTest, HandlerTest};
use transcode::{RenditionInput, Transcode, TranscodeInput};

fn rendition(name: &str, width: i32, height: i32, bitrate_kbps: i32) -> RenditionInput {
    RenditionInput {
        name: name.to_owned(),
        width,
        height,
        bitrate_kbps,
    }
}

fn video(renditions: Vec<RenditionInput>, segment_delay_ms: i32) -> TranscodeInput {
    TranscodeInput {
        source_url: "s3://videos/talk".to_owned(),
        duration_seconds: 30,
        renditions,
        segment_delay_ms,
    }
}

#[tokio::test]
async fn progress_is_reported_per_rendition_and_the_output_lists_each() {
    let input = video(
        vec![
            rendition("720p", 1280, 720, 3000),
            rendition("360p", 640, 360, 800),
        ],
        1,
    );
    let run = HandlerTest::new(Transcode).run(input).await;
    assert_eq!(
        run.messages(),
        [
            "720p: 33%",
            "720p: 66%",
            "720p: 100%",
            "360p: 33%",
            "360p: 66%",
            "360p: 100%"
        ]
    );
    let fractions: Vec<f64> = run.reports.iter().map(|r| r.progress).collect();
    assert!(fractions.windows(2).all(|w| w[0] < w[1]), "{fractions:?}");
    assert!((fractions.last().unwrap() - 1.0).abs() < 1e-9);
    let output = run.outcome.unwrap();
    assert_eq!(output.segments, 6);
    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "360p"]);
    assert_eq!(output.renditions[0].url, "s3://videos/talk/720p.mp4");
    // 3,000 kbit/s for 30 s.
    assert_eq!(output.renditions[0].size_bytes, 11_250_000);
}

#[tokio::test]
async fn bad_renditions_fail_for_good() {
    for renditions in [
        vec![],
        vec![rendition("a", 640, 360, 800), rendition("a", 320, 180, 400)],
        vec![rendition("huge", 100_000, 360, 800)],
    ] {
        let run = HandlerTest::new(Transcode).run(video(renditions, 1)).await;
        let error = run.outcome.unwrap_err();
        assert_eq!(error.code, "BAD_INPUT");
        assert!(!error.retryable);
        assert!(run.reports.is_empty());
    }
}

#[tokio::test]
async fn a_cancel_stops_the_job_between_segments() {
    let input = video(vec![rendition("1080p", 1920, 1080, 6000)], 1);
    let run = HandlerTest::new(Transcode)
        .cancel_after_reports(1)
        .run(input)
        .await;
    assert_eq!(run.messages(), ["1080p: 33%"]);
    assert!(run.outcome.unwrap_err().is_cancellation());
}

#[tokio::test]
async fn the_app_runs_a_job_end_to_end_in_process() {
    let app = AppTest::start(transcode::app());
    let input = video(
        vec![
            rendition("720p", 1280, 720, 3000),
            rendition("360p", 640, 360, 800),
        ],
        150,
    );
    let id = app.enqueue::<Transcode>(input).await.unwrap();
    let states = app.follow(&id).await;
    let last = states.last().unwrap();
    assert_eq!(last.status, RequestStatus::Completed);
    let output = last.output.as_ref().unwrap();
    assert_eq!(output["segments"], 6);
    assert_eq!(output["renditions"][1]["url"], "s3://videos/talk/360p.mp4");
    // Reports 150 ms apart each make a state of their own.
    let messages: Vec<&str> = states.iter().filter_map(|s| s.message.as_deref()).collect();
    assert!(messages.contains(&"720p: 100%"), "{messages:?}");
    assert!(messages.contains(&"360p: 33%"), "{messages:?}");

    // An attempt that fails retryably: the job runs again and still completes.
    app.fail_next_attempts::<Transcode>(1);
    let id = app
        .enqueue::<Transcode>(video(vec![rendition("240p", 426, 240, 400)], 1))
        .await
        .unwrap();
    let last = app.follow(&id).await.pop().unwrap();
    assert_eq!((last.status, last.attempts), (RequestStatus::Completed, 2));
}

#[tokio::test]
async fn a_cancel_through_the_api_ends_a_running_transcode() {
    let app = AppTest::start(transcode::app());
    let input = video(vec![rendition("4k", 3840, 2160, 20_000)], 5_000);
    let id = app.enqueue::<Transcode>(input).await.unwrap();
    app.wait_for(&id, |s| s.status == RequestStatus::Running)
        .await;
    app.cancel(&id).await.unwrap();
    let last = app.follow(&id).await.pop().unwrap();
    assert_eq!(last.status, RequestStatus::Cancelled);
}
