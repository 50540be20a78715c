//! Checking an AWS Signature Version 4 on a Management API call, as API Gateway checks the
//! IAM signature of every `@connections` call: the signature is computed again from the
//! request as received and the stack's secret key, and must match. A call signed with
//! another key, an altered body or path, or a signature more than 15 minutes old is
//! refused.
//!
//! The canonical request follows AWS's specification for services other than S3: the path
//! as sent is percent-encoded once more, the signed headers are taken in the order the
//! signature lists them, and the payload hash is that of the body received.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{KeyInit, Mac};
use http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

/// The credentials a Management API call must be signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementCredentials {
    /// The access key id, in the signature's `Credential`.
    pub access_key_id: String,
    /// The secret key the signature is made with; never sent, never logged.
    pub secret_access_key: String,
}

impl std::fmt::Debug for ManagementCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a call's signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// No `Authorization` header of the form `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
    /// Signature=…`, or no `x-amz-date`.
    #[error("missing or malformed SigV4 authorization")]
    Malformed,
    /// Signed with another access key id.
    #[error("unknown access key id")]
    UnknownKey,
    /// `x-amz-date` more than 15 minutes away from now.
    #[error("signature expired")]
    Expired,
    /// The signature does not match the request.
    #[error("signature does not match")]
    Mismatch,
}

/// How far a signature's time may be from now, as AWS allows.
const SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `/`.
fn encode_path(path: &str) -> String {
    use std::fmt::Write;
    path.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// The parts of `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
struct Authorization<'a> {
    key: &'a str,
    scope: &'a str,
    date: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn authorization(headers: &HeaderMap) -> Option<Authorization<'_>> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let fields = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('='))
    };
    let credential = field("Credential")?;
    let (key, scope) = credential.split_once('/')?;
    let date = scope.split('/').next()?;
    if scope.split('/').count() != 4 || !scope.ends_with("/aws4_request") {
        return None;
    }
    Some(Authorization {
        key,
        scope,
        date,
        signed_headers: field("SignedHeaders")?,
        signature: field("Signature")?,
    })
}

/// Checks the SigV4 signature of a call at `now` against `credentials`.
///
/// # Errors
///
/// [`Refused`] says why the call is not taken.
pub(crate) fn verify(
    credentials: &ManagementCredentials,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    let auth = authorization(headers).ok_or(Refused::Malformed)?;
    if auth.key != credentials.access_key_id {
        return Err(Refused::UnknownKey);
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(Refused::Malformed)?;
    let signed_at = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| Refused::Malformed)?
        .and_utc();
    if !amz_date.starts_with(auth.date) {
        return Err(Refused::Mismatch);
    }
    if (now - signed_at).abs() > SKEW {
        return Err(Refused::Expired);
    }
    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    if !signed.contains(&"host") {
        return Err(Refused::Mismatch);
    }
    let mut canonical_headers = String::new();
    for name in &signed {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(Refused::Mismatch);
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload_hash = hex(&Sha256::digest(body));
    if headers
        .get("x-amz-content-sha256")
        .is_some_and(|declared| declared.as_bytes() != payload_hash.as_bytes())
    {
        return Err(Refused::Mismatch);
    }
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    query.sort_unstable();
    let canonical_request = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}",
        path = encode_path(uri.path()),
        query = query.join("&"),
        signed = auth.signed_headers,
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hash}",
        scope = auth.scope,
        hash = hex(&Sha256::digest(canonical_request.as_bytes())),
    );
    let mut key = format!("AWS4{}", credentials.secret_access_key).into_bytes();
    for part in auth.scope.split('/') {
        key = hmac(&key, part);
    }
    let expected = hex(&hmac(&key, &string_to_sign));
    // Compared in constant time: a timing difference would leak the signature byte by byte.
    let matches = expected.len() == auth.signature.len()
        && expected
            .bytes()
            .zip(auth.signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if matches {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example (the `get-vanilla` case of the SigV4 test suite).
    #[test]
    fn the_aws_test_suite_vanilla_request_verifies() {
        let credentials = ManagementCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .unwrap(),
        );
        let at = "2015-08-30T12:40:00Z".parse().unwrap();
        let uri: Uri = "/".parse().unwrap();
        assert_eq!(
            verify(&credentials, &Method::GET, &uri, &headers, b"", at),
            Ok(())
        );
        // Another method, path, body, key or time: refused.
        assert_eq!(
            verify(&credentials, &Method::POST, &uri, &headers, b"", at),
            Err(Refused::Mismatch)
        );
        let other: Uri = "/x".parse().unwrap();
        assert_eq!(
            verify(&credentials, &Method::GET, &other, &headers, b"", at),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(&credentials, &Method::GET, &uri, &headers, b"{}", at),
            Err(Refused::Mismatch)
        );
        let wrong_secret = ManagementCredentials {
            secret_access_key: "another".into(),
            ..credentials.clone()
        };
        assert_eq!(
            verify(&wrong_secret, &Method::GET, &uri, &headers, b"", at),
            Err(Refused::Mismatch)
        );
        let later = "2015-08-30T13:00:00Z".parse().unwrap();
        assert_eq!(
            verify(&credentials, &Method::GET, &uri, &headers, b"", later),
            Err(Refused::Expired)
        );
        headers.remove("authorization");
        assert_eq!(
            verify(&credentials, &Method::GET, &uri, &headers, b"", at),
            Err(Refused::Malformed)
        );
    }
}
