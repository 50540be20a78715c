//! The built-in authenticators: JWT (HS256 with a shared secret, RS256 with the keys of a
//! JWKS document) and the context of an API Gateway Lambda authorizer. Development mode is
//! [`streamer_core::DevMode`].

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use streamer_core::{AuthError, Authenticator, Credentials, Principal};

/// Which claims name the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The claim holding the tenant: `tenant` by default.
    pub tenant: String,
    /// The claim holding the user: `sub` by default.
    pub user: String,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            tenant: "tenant".to_owned(),
            user: "sub".to_owned(),
        }
    }
}

impl Claims {
    /// The principal named by `claims`, valid until `exp` if there is one.
    fn principal(&self, claims: &serde_json::Map<String, Value>) -> Result<Principal, AuthError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| AuthError::Invalid(format!("no `{name}` claim")))
        };
        let expires_at = claims.get("exp").map(numeric_date).transpose()?;
        Ok(Principal {
            tenant: text(&self.tenant)?,
            user: text(&self.user)?,
            expires_at,
        })
    }
}

/// A NumericDate claim (RFC 7519: seconds since the epoch, possibly fractional) as a time.
/// A claim that is present but not a number is a refusal, never a claim left unchecked.
fn numeric_date(value: &Value) -> Result<DateTime<Utc>, AuthError> {
    let seconds = value
        .as_f64()
        .filter(|seconds| seconds.is_finite())
        .ok_or_else(|| AuthError::Invalid("a time claim is not a number".to_owned()))?;
    // Beyond chrono's range either way: the earliest or the latest time it has.
    let millis = (seconds * 1000.0).floor();
    let at = if millis >= i64::MAX as f64 {
        None
    } else {
        Utc.timestamp_millis_opt(millis as i64).single()
    };
    Ok(at.unwrap_or(if seconds > 0.0 {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    }))
}

/// How a [`JwtAuthenticator`] checks signatures.
enum Keys {
    /// HS256 with one shared secret.
    Secret(DecodingKey),
    /// RS256 with the keys of a JWKS document, chosen by the token's `kid`.
    Jwks(HashMap<String, DecodingKey>),
}

/// Authenticates bearer tokens that are JWTs: the signature, `exp` (required) and `nbf` are
/// checked, and the principal is read from the configured claims.
pub struct JwtAuthenticator {
    keys: Keys,
    claims: Claims,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtAuthenticator {
    /// Never prints a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::Secret(_) => "HS256 secret".to_owned(),
            Keys::Jwks(keys) => format!("RS256, {} keys", keys.len()),
        };
        f.debug_struct("JwtAuthenticator")
            .field("keys", &keys)
            .field("claims", &self.claims)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Why a JWKS document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// It is not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Malformed(#[from] serde_json::Error),
    /// It holds no RSA signing key with a `kid`.
    #[error("the JWKS document holds no RSA key with a kid")]
    NoKeys,
}

impl JwtAuthenticator {
    /// HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_keys(Keys::Secret(DecodingKey::from_secret(secret)))
    }

    /// RS256 tokens signed by one of the RSA keys of the JWKS document `jwks` (JSON text).
    ///
    /// # Errors
    ///
    /// When it is not a JWKS document or holds no usable key.
    pub fn rs256_jwks(jwks: &str) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_str(jwks)?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoKeys);
        }
        Ok(Self::with_keys(Keys::Jwks(keys)))
    }

    fn with_keys(keys: Keys) -> Self {
        Self {
            keys,
            claims: Claims::default(),
            issuer: None,
            audience: None,
        }
    }

    /// Reads the principal from these claims.
    #[must_use]
    pub fn with_claims(mut self, claims: Claims) -> Self {
        self.claims = claims;
        self
    }

    /// Requires `iss` to be `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to hold `audience`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("not a JWT".to_owned()))?;
        let (algorithm, key) = match &self.keys {
            Keys::Secret(key) => (Algorithm::HS256, key),
            Keys::Jwks(keys) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Invalid("no key id".to_owned()))?;
                let key = keys
                    .get(kid)
                    .ok_or_else(|| AuthError::Invalid("unknown key id".to_owned()))?;
                (Algorithm::RS256, key)
            }
        };
        if header.alg != algorithm {
            return Err(AuthError::Invalid(format!(
                "{:?} is not accepted",
                header.alg
            )));
        }
        let mut validation = Validation::new(algorithm);
        // Time is checked below against the injected clock.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp".to_owned()].into();
        validation.validate_aud = self.audience.is_some();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".to_owned()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("no `{claim}` claim"))
                }
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".to_owned()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".to_owned()),
                _ => AuthError::Invalid("malformed token".to_owned()),
            })?;
        let claims = data.claims;
        let principal = self.claims.principal(&claims)?;
        if principal.is_expired(now) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").map(numeric_date).transpose()?
            && nbf > now
        {
            return Err(AuthError::Invalid("not valid yet".to_owned()));
        }
        Ok(principal)
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(
        &self,
        credentials: &Credentials,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        let token = credentials.token.as_deref().ok_or(AuthError::Missing)?;
        self.verify(token, now)
    }
}

/// Trusts the context of an API Gateway Lambda authorizer on `$connect`: the tenant from a
/// context key (`tenant` by default) and the user from `principalId`. API Gateway runs the
/// authorizer; a connection it refused never reaches the gateway.
#[derive(Debug, Clone)]
pub struct AuthorizerContext {
    tenant_key: String,
}

impl Default for AuthorizerContext {
    fn default() -> Self {
        Self {
            tenant_key: "tenant".to_owned(),
        }
    }
}

impl AuthorizerContext {
    /// The tenant is read from the context key `key`.
    pub fn with_tenant_key(key: impl Into<String>) -> Self {
        Self {
            tenant_key: key.into(),
        }
    }
}

#[async_trait]
impl Authenticator for AuthorizerContext {
    async fn authenticate(
        &self,
        credentials: &Credentials,
        _: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        if credentials.authorizer.is_empty() {
            return Err(AuthError::Missing);
        }
        let text = |key: &str| {
            credentials
                .authorizer
                .get(key)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| AuthError::Invalid(format!("no `{key}` in the authorizer context")))
        };
        Ok(Principal::new(
            text(&self.tenant_key)?,
            text("principalId")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap()
    }

    fn hs256(claims: &Value, secret: &[u8]) -> Credentials {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        Credentials {
            token: Some(token),
            ..Credentials::default()
        }
    }

    #[tokio::test]
    async fn hs256_tokens() {
        let auth = JwtAuthenticator::hs256(b"s3cret");
        let exp = now().timestamp() + 60;
        let good = hs256(
            &json!({ "sub": "ann", "tenant": "acme", "exp": exp }),
            b"s3cret",
        );
        let principal = auth.authenticate(&good, now()).await.unwrap();
        assert_eq!(
            (principal.tenant.as_str(), principal.user.as_str()),
            ("acme", "ann")
        );
        assert_eq!(principal.expires_at.unwrap().timestamp(), exp);

        let forged = hs256(
            &json!({ "sub": "ann", "tenant": "acme", "exp": exp }),
            b"guess",
        );
        assert_eq!(
            auth.authenticate(&forged, now()).await,
            Err(AuthError::Invalid("bad signature".into()))
        );
        let expired = hs256(
            &json!({ "sub": "ann", "tenant": "acme", "exp": now().timestamp() - 1 }),
            b"s3cret",
        );
        assert_eq!(
            auth.authenticate(&expired, now()).await,
            Err(AuthError::Expired)
        );
        let no_exp = hs256(&json!({ "sub": "ann", "tenant": "acme" }), b"s3cret");
        assert_eq!(
            auth.authenticate(&no_exp, now()).await,
            Err(AuthError::Invalid("no `exp` claim".into()))
        );
        let no_tenant = hs256(&json!({ "sub": "ann", "exp": exp }), b"s3cret");
        assert_eq!(
            auth.authenticate(&no_tenant, now()).await,
            Err(AuthError::Invalid("no `tenant` claim".into()))
        );
        assert_eq!(
            auth.authenticate(&Credentials::default(), now()).await,
            Err(AuthError::Missing)
        );
        let garbage = Credentials {
            token: Some("not.a.jwt".into()),
            ..Credentials::default()
        };
        assert_eq!(
            auth.authenticate(&garbage, now()).await,
            Err(AuthError::Invalid("not a JWT".into()))
        );
    }

    #[tokio::test]
    async fn fractional_times_are_read_as_numbers_and_unreadable_ones_refused() {
        let auth = JwtAuthenticator::hs256(b"s3cret");
        let token = |exp: Value| {
            hs256(
                &json!({ "sub": "ann", "tenant": "acme", "exp": exp }),
                b"s3cret",
            )
        };
        let at = now().timestamp() as f64;
        for exp in [json!(1.5), json!(at - 3600.0 + 0.5), json!(at - 0.25)] {
            assert_eq!(
                auth.authenticate(&token(exp.clone()), now()).await,
                Err(AuthError::Expired),
                "exp {exp}"
            );
        }
        let principal = auth
            .authenticate(&token(json!(at + 0.5)), now())
            .await
            .unwrap();
        assert_eq!(
            principal.expires_at.unwrap().timestamp_millis(),
            now().timestamp_millis() + 500
        );
        // Expiry during the connection is the same reading.
        assert!(principal.is_expired(now() + chrono::Duration::milliseconds(500)));
        for exp in [json!("1900000000"), json!(null), json!({}), json!([1])] {
            assert!(
                matches!(
                    auth.authenticate(&token(exp.clone()), now()).await,
                    Err(AuthError::Invalid(_))
                ),
                "exp {exp}"
            );
        }
        let early = hs256(
            &json!({ "sub": "ann", "tenant": "acme", "exp": at + 60.0, "nbf": at + 0.5 }),
            b"s3cret",
        );
        assert!(auth.authenticate(&early, now()).await.is_err());
        let unreadable_nbf = hs256(
            &json!({ "sub": "ann", "tenant": "acme", "exp": at + 60.0, "nbf": "soon" }),
            b"s3cret",
        );
        assert!(auth.authenticate(&unreadable_nbf, now()).await.is_err());
    }

    /// A key made for these tests only, and the JWKS document of its public half.
    const TEST_KEY: &str = include_str!("../tests/fixtures/rs256-test-key.pem");
    const TEST_JWKS: &str = include_str!("../tests/fixtures/jwks.json");

    fn rs256(claims: &Value, kid: &str) -> Credentials {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_rsa_pem(TEST_KEY.as_bytes()).unwrap();
        Credentials {
            token: Some(jsonwebtoken::encode(&header, claims, &key).unwrap()),
            ..Credentials::default()
        }
    }

    #[tokio::test]
    async fn rs256_tokens_from_a_jwks_document() {
        let auth = JwtAuthenticator::rs256_jwks(TEST_JWKS).unwrap();
        let claims = json!({ "sub": "bo", "tenant": "globex", "exp": now().timestamp() + 60 });
        let principal = auth
            .authenticate(&rs256(&claims, "test-1"), now())
            .await
            .unwrap();
        assert_eq!(
            (principal.tenant.as_str(), principal.user.as_str()),
            ("globex", "bo")
        );
        assert_eq!(
            auth.authenticate(&rs256(&claims, "other"), now()).await,
            Err(AuthError::Invalid("unknown key id".into()))
        );
        // An HS256 token signed with the public key as a secret: the classic confusion.
        let confused = hs256(&claims, TEST_JWKS.as_bytes());
        assert!(auth.authenticate(&confused, now()).await.is_err());
        assert!(matches!(
            JwtAuthenticator::rs256_jwks("{\"keys\": []}"),
            Err(JwksError::NoKeys)
        ));
    }

    #[tokio::test]
    async fn authorizer_context() {
        let auth = AuthorizerContext::default();
        let mut credentials = Credentials::default();
        assert_eq!(
            auth.authenticate(&credentials, now()).await,
            Err(AuthError::Missing)
        );
        credentials
            .authorizer
            .insert("principalId".into(), json!("ann"));
        assert!(auth.authenticate(&credentials, now()).await.is_err());
        credentials
            .authorizer
            .insert("tenant".into(), json!("acme"));
        assert_eq!(
            auth.authenticate(&credentials, now()).await,
            Ok(Principal::new("acme", "ann"))
        );
    }
}
