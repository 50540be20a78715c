//! The greeter on the local stack, on a free port: prints `ws://…/graphql`, serves until its
//! standard input closes.

use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let stack = greeter::app().local().build().expect("a valid schema");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("ws://{}/graphql", listener.local_addr()?);
    stack
        .run(listener, async {
            let _ = tokio::io::stdin().read_to_end(&mut Vec::new()).await;
        })
        .await
}
