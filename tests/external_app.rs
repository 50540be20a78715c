//! An application of its own, outside this workspace, that depends on `streamer` alone
//! (`tests/external-app`, the greeter): it builds, with its four Lambda binaries through the
//! `lambda` feature, and completes a job on the local stack through the real graphql-ws
//! client. Ignored by default, since a cold build takes minutes: the test command runs it
//! on its own after the other tests (`cargo test --test external_app -- --ignored`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The greeter copied out of the repository, its dependency on `streamer` pointing back at
/// this checkout, and this workspace's lock file beside it (the same versions, built once).
fn greeter_outside(root: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamer-greeter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&root.join("tests/external-app"), &dir);
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let pointed = manifest.replace(
        r#"path = "../..""#,
        &format!("path = {:?}", root.display().to_string()),
    );
    assert_ne!(manifest, pointed, "the greeter depends on streamer by path");
    std::fs::write(dir.join("Cargo.toml"), pointed).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    dir
}

#[tokio::test]
#[ignore = "builds a crate of its own; the test command runs it after the other tests"]
async fn an_app_depending_on_streamer_alone_runs_a_job_and_builds_its_lambda_functions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = greeter_outside(root);
    let target = root.join("target/external-app");

    // Of this repository's crates the app names only `streamer`, and no `async-graphql`.
    let tree = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--depth",
            "1",
            "--edges",
            "normal",
            "--features",
            "lambda",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(&dir)
        .output()
        .expect("cargo tree runs");
    assert!(
        tree.status.success(),
        "{}",
        String::from_utf8_lossy(&tree.stderr)
    );
    let direct: Vec<String> = String::from_utf8_lossy(&tree.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(
        direct,
        ["serde", "streamer", "tokio"],
        "the app's dependencies"
    );

    let build = std::process::Command::new(env!("CARGO"))
        .args(["build", "--features", "lambda", "--bins"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&dir)
        .status()
        .expect("cargo runs");
    assert!(build.success(), "the greeter builds");
    for binary in ["greeter", "gateway", "processor", "worker", "sweeper"] {
        assert!(
            target.join("debug").join(binary).is_file(),
            "{binary} built"
        );
    }

    // The app on its local stack; it stops when its standard input closes.
    let mut app = tokio::process::Command::new(target.join("debug/greeter"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the greeter starts");
    let mut lines = BufReader::new(app.stdout.take().unwrap()).lines();
    let url = lines
        .next_line()
        .await
        .unwrap()
        .expect("the greeter prints its URL");
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");

    let output = tokio::process::Command::new("node")
        .arg("greeter.mjs")
        .arg(&url)
        .current_dir(root.join("tests/js"))
        .output()
        .await
        .expect("node runs (Node 20; scripts/setup installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "greeter.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    let states = summary["states"].as_array().unwrap();
    let messages: Vec<&str> = states.iter().filter_map(|s| s[1].as_str()).collect();
    for n in 1..=3 {
        assert!(
            messages.contains(&format!("greeting {n}").as_str()),
            "{states:?}"
        );
    }

    drop(app.stdin.take());
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), app.wait())
        .await
        .expect("the greeter stops when its input closes")
        .unwrap();
    assert!(stopped.success());
    let _ = std::fs::remove_dir_all(&dir);
}
