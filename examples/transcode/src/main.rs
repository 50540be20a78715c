//! The transcode app on the local stack: `cargo run -p transcode [-- PORT]` (default 4001),
//! then `mutation { transcode(input: {…}) { id } }` and follow it with `requestProgress`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().map_err(std::io::Error::other)?,
        None => 4001,
    };
    let stack = transcode::app()
        .local()
        .build()
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on ws://{}/graphql", listener.local_addr()?);
    stack
        .run(listener, async {
            tokio::signal::ctrl_c().await.unwrap_or_default();
        })
        .await
}
