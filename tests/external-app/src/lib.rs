//! A greeter: one typed handler that takes a while.

use std::time::Duration;

use streamer::async_graphql::{InputObject, SimpleObject};
use streamer::{App, Handler, JobContext, JobError};

/// Whom to greet, and how many times.
#[derive(Debug, InputObject)]
#[graphql(crate = "streamer::async_graphql")]
pub struct GreetInput {
    /// Who.
    pub name: String,
    /// How many greetings, one step each.
    #[graphql(default = 3)]
    pub times: i32,
}

/// The greetings.
#[derive(Debug, SimpleObject, serde::Serialize)]
#[graphql(crate = "streamer::async_graphql")]
pub struct Greeting {
    /// All of them, one line each.
    pub text: String,
    /// How many.
    pub count: i32,
}

/// Greets `times` times, 100 ms apart, reporting each.
#[derive(Debug)]
pub struct Greet;

impl Handler for Greet {
    const ACTION: &'static str = "greet";
    type Input = GreetInput;
    type Output = Greeting;

    async fn process(&self, input: GreetInput, job: JobContext) -> Result<Greeting, JobError> {
        if input.times < 1 {
            return Err(JobError::permanent(
                "NO_GREETINGS",
                "times must be at least 1",
            ));
        }
        let mut lines = Vec::new();
        for n in 1..=input.times {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lines.push(format!("hello, {}", input.name));
            job.progress(
                f64::from(n) / f64::from(input.times),
                format!("greeting {n}"),
            )
            .await?;
        }
        Ok(Greeting {
            text: lines.join("\n"),
            count: input.times,
        })
    }
}

/// The app.
pub fn app() -> App {
    App::new().register(Greet)
}
