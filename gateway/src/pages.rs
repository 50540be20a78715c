//! The pages the server serves besides the API: GraphiQL at `/` and the run dashboard at
//! `/dashboard`, with every asset they load, bundled into the binary (`assets/`: GraphiQL,
//! React and graphql-ws from npm at pinned versions, with their licences; the dashboard
//! built from `dashboard/`). Nothing is loaded from anywhere else. The local server and
//! the gateway function's HTTP route serve the same bytes.

/// A page or asset: its content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The `content-type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: std::borrow::Cow<'static, [u8]>,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every path served, with its content type and bytes.
const PAGES: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../assets/graphiql.html")),
    (
        "/dashboard",
        HTML,
        include_bytes!("../assets/dashboard/index.html"),
    ),
    (
        "/assets/graphiql.js",
        JS,
        include_bytes!("../assets/graphiql.js"),
    ),
    (
        "/assets/dashboard/dashboard.js",
        JS,
        include_bytes!("../assets/dashboard/dashboard.js"),
    ),
    (
        "/assets/dashboard/dashboard.css",
        CSS,
        include_bytes!("../assets/dashboard/dashboard.css"),
    ),
    (
        "/assets/graphiql/graphiql.min.js",
        JS,
        include_bytes!("../assets/graphiql/graphiql.min.js"),
    ),
    (
        "/assets/graphiql/graphiql.min.css",
        CSS,
        include_bytes!("../assets/graphiql/graphiql.min.css"),
    ),
    (
        "/assets/graphiql/react.production.min.js",
        JS,
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    (
        "/assets/graphiql/react-dom.production.min.js",
        JS,
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "/assets/graphiql/graphql-ws.min.js",
        JS,
        include_bytes!("../assets/graphiql/graphql-ws.min.js"),
    ),
    (
        "/assets/graphiql/NOTICE.md",
        TEXT,
        include_bytes!("../assets/graphiql/NOTICE.md"),
    ),
    (
        "/assets/graphiql/LICENSE.graphiql",
        TEXT,
        include_bytes!("../assets/graphiql/LICENSE.graphiql"),
    ),
    (
        "/assets/graphiql/LICENSE.react",
        TEXT,
        include_bytes!("../assets/graphiql/LICENSE.react"),
    ),
    (
        "/assets/graphiql/LICENSE.react-dom",
        TEXT,
        include_bytes!("../assets/graphiql/LICENSE.react-dom"),
    ),
    (
        "/assets/graphiql/LICENSE.graphql-ws",
        TEXT,
        include_bytes!("../assets/graphiql/LICENSE.graphql-ws"),
    ),
];

/// Every path served.
pub fn paths() -> impl Iterator<Item = &'static str> {
    PAGES.iter().map(|(path, _, _)| *path)
}

/// The page at `path`, if there is one. `websocket_url` is where the pages open their
/// socket, when it is not this server's own `/graphql` (on AWS, the WebSocket API's URL).
pub fn page(path: &str, websocket_url: Option<&str>) -> Option<Page> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let (_, content_type, body) = PAGES.iter().find(|(p, _, _)| *p == path)?;
    let body = match (websocket_url, *content_type == HTML) {
        (Some(url), true) => {
            let html = String::from_utf8_lossy(body).replace("%WEBSOCKET_URL%", &escape(url));
            std::borrow::Cow::Owned(html.into_bytes())
        }
        _ => std::borrow::Cow::Borrowed(*body),
    };
    Some(Page { content_type, body })
}

/// `text` safe inside an HTML attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_served_and_the_socket_url_goes_into_the_html() {
        for path in paths() {
            let page = page(path, None).unwrap();
            assert!(!page.body.is_empty(), "{path}");
        }
        assert!(page("/nothing", None).is_none());
        let html = page("/dashboard/", Some("wss://x.example/prod\"")).unwrap();
        let html = String::from_utf8(html.body.into_owned()).unwrap();
        assert!(
            html.contains("content=\"wss://x.example/prod&quot;\""),
            "{html}"
        );
    }
}
