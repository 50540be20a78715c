//! Streamer's gateway: the code behind API Gateway's `$connect`, `$default` and
//! `$disconnect` routes (and GraphQL over HTTP), the same in Lambda and in the local server.
//!
//! # Layout
//!
//! - [`auth`]: the built-in authenticators: JWT (HS256, RS256 from a JWKS document) and the
//!   API Gateway authorizer context.
//! - [`event`]: the loose API Gateway event parsed once into a strict [`WsEvent`].
//! - [`gateway`]: [`Gateway::handle`]: subprotocol negotiation on `$connect`, the protocol
//!   session on `$default` (queries and mutations run here; subscriptions are stored and
//!   answered with their current state), cleanup on `$disconnect`.

pub mod auth;
pub mod event;
pub mod gateway;
pub mod pages;

pub use auth::{AuthorizerContext, Claims, JwksError, JwtAuthenticator};
pub use event::{MalformedEvent, WsEvent};
pub use gateway::Gateway;
