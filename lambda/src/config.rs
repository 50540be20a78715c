//! [`Config`]: what a function needs to know, read once from its environment.

use std::sync::Arc;
use std::time::Duration;

use streamer_aws::SenderOptions;
use streamer_core::{Access, Authenticator, DevMode, Limits};
use streamer_gateway::{AuthorizerContext, Claims, JwtAuthenticator};
use streamer_processor::{SweepOptions, WorkerSettings};

/// A setting that must not be printed: its `Debug` says only whether it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How the gateway authenticates connections (`STREAMER_AUTH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// `dev`: one anonymous tenant; never for real data.
    Dev,
    /// `jwt-hs256`: JWTs signed with `STREAMER_JWT_SECRET`.
    JwtHs256,
    /// `jwt-rs256`: JWTs signed by a key of the JWKS document in `STREAMER_JWKS`.
    JwtRs256,
    /// `authorizer`: the context of a Lambda authorizer on `$connect`.
    Authorizer,
}

/// A setting that is missing or unreadable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable does not parse.
    #[error("environment variable {name} is not {expected}: {value:?}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What it should be.
        expected: &'static str,
        /// What it is.
        value: String,
    },
}

/// The functions' settings (the deployment template sets them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `STREAMER_TABLE_PREFIX`: tables are `{prefix}-connections`, `-subscriptions`,
    /// `-requests`.
    pub table_prefix: String,
    /// `STREAMER_WEBSOCKET_ENDPOINT`: the Management API endpoint of the WebSocket stage,
    /// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}` (gateway, processor,
    /// sweeper).
    pub websocket_endpoint: Option<String>,
    /// `STREAMER_WORKER_FUNCTION`: the worker function's name or ARN (processor, sweeper).
    pub worker_function: Option<String>,
    /// `STREAMER_PRIORITY_WORKER_FUNCTION` (optional): a second worker function, with its own
    /// reserved concurrency, for requests of priority above 0 (processor, sweeper).
    pub priority_worker_function: Option<String>,
    /// `STREAMER_METRICS_NAMESPACE` (default `Streamer`): the CloudWatch namespace.
    pub metrics_namespace: String,
    /// How the worker runs jobs, each field from its own variable, the default where it is
    /// unset: `STREAMER_LEASE_MS`, `STREAMER_JOB_TIME_LIMIT_MS` (the function's own timeout
    /// still applies), `STREAMER_PROGRESS_INTERVAL_MS`, `STREAMER_CANCEL_GRACE_MS`,
    /// `STREAMER_MAX_RESULT_BYTES`.
    pub worker: WorkerSettings,
    /// What the sweeper looks for: `STREAMER_INIT_TIMEOUT_MS` (default 3000), how long a
    /// connection may wait before `connection_init`; `STREAMER_QUEUED_GRACE_MS` (default
    /// 60000), how long a request may stay QUEUED before it is dispatched again;
    /// `STREAMER_SWEEP_LIMIT` (default 500), the most items of each kind per sweep.
    pub sweep: SweepOptions,
    /// How pushes through the Management API are retried (gateway, processor, sweeper):
    /// `STREAMER_SENDER_MAX_IN_FLIGHT` (default 128), `STREAMER_SENDER_MAX_ATTEMPTS`
    /// (default 6), `STREAMER_SENDER_ATTEMPT_TIMEOUT_MS` (default 3000).
    pub sender: SenderOptions,
    /// `STREAMER_TENANT_JOB_SHARE` (optional): at most this many jobs of one tenant run at
    /// once; the others wait QUEUED (processor, sweeper). Unset: no share.
    pub tenant_job_share: Option<usize>,
    /// `STREAMER_AUTH`: `dev`, `jwt-hs256`, `jwt-rs256` or `authorizer` (gateway; required
    /// there, so that no deployment runs in development mode by omission).
    pub auth: Option<AuthMode>,
    /// `STREAMER_JWT_SECRET`: the HS256 secret (`jwt-hs256`).
    pub jwt_secret: Option<Secret>,
    /// `STREAMER_JWKS`: the JWKS document, JSON text (`jwt-rs256`).
    pub jwks: Option<String>,
    /// `STREAMER_TENANT_CLAIM` (default `tenant`): the JWT claim, or authorizer context key,
    /// naming the tenant.
    pub tenant_claim: String,
    /// `STREAMER_ACCESS` (default `tenant`): `tenant` (anyone of a request's tenant may act
    /// on it) or `owner` (only who enqueued it).
    pub access: Access,
    /// What one client may ask (gateway, processor), each field from its own variable, the
    /// default where it is unset: `STREAMER_MAX_MESSAGE_BYTES`, `STREAMER_MAX_DEPTH`,
    /// `STREAMER_MAX_COMPLEXITY`, `STREAMER_MAX_ALIASES`, `STREAMER_MAX_SUBSCRIPTIONS`,
    /// `STREAMER_MAX_OPERATION_ID`, `STREAMER_MAX_DOCUMENT_BYTES`,
    /// `STREAMER_MAX_INIT_PAYLOAD_BYTES`, `STREAMER_MAX_PAYLOAD_BYTES`,
    /// `STREAMER_MAX_BATCH_ITEMS`; and the per-tenant
    /// quotas, none unless set: `STREAMER_TENANT_CONNECTIONS`,
    /// `STREAMER_TENANT_ACTIVE_REQUESTS`, `STREAMER_TENANT_ENQUEUES_PER_SECOND`.
    pub limits: Limits,
}

/// Reads the number in `name`, if set; a value that is not a number above 0 is an error
/// naming the variable.
fn number<T: std::str::FromStr + PartialOrd + Default>(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    match get(name) {
        None => Ok(None),
        Some(value) => match value.trim().parse::<T>() {
            Ok(number) if number > T::default() => Ok(Some(number)),
            _ => Err(ConfigError::Invalid {
                name,
                expected: "a whole number above 0",
                value,
            }),
        },
    }
}

/// Reads the number of milliseconds in `name`, if set; see [`number`].
fn millis(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<Duration>, ConfigError> {
    Ok(number(get, name)?.map(Duration::from_millis))
}

/// The worker's settings (see [`Config::worker`]).
fn worker(get: &impl Fn(&'static str) -> Option<String>) -> Result<WorkerSettings, ConfigError> {
    let defaults = WorkerSettings::default();
    Ok(WorkerSettings {
        lease: millis(get, "STREAMER_LEASE_MS")?.unwrap_or(defaults.lease),
        time_limit: millis(get, "STREAMER_JOB_TIME_LIMIT_MS")?.unwrap_or(defaults.time_limit),
        progress_interval: millis(get, "STREAMER_PROGRESS_INTERVAL_MS")?
            .unwrap_or(defaults.progress_interval),
        cancel_grace: millis(get, "STREAMER_CANCEL_GRACE_MS")?.unwrap_or(defaults.cancel_grace),
        max_result_bytes: number(get, "STREAMER_MAX_RESULT_BYTES")?
            .unwrap_or(defaults.max_result_bytes),
    })
}

/// The sender's settings (see [`Config::sender`]).
fn sender(get: &impl Fn(&'static str) -> Option<String>) -> Result<SenderOptions, ConfigError> {
    let defaults = SenderOptions::default();
    Ok(SenderOptions {
        max_in_flight: number(get, "STREAMER_SENDER_MAX_IN_FLIGHT")?
            .unwrap_or(defaults.max_in_flight),
        max_attempts: number(get, "STREAMER_SENDER_MAX_ATTEMPTS")?.unwrap_or(defaults.max_attempts),
        attempt_timeout: millis(get, "STREAMER_SENDER_ATTEMPT_TIMEOUT_MS")?
            .unwrap_or(defaults.attempt_timeout),
        ..defaults
    })
}

/// The limits the `STREAMER_MAX_*` and `STREAMER_TENANT_*` variables set (see
/// [`Config::limits`]).
fn limits(get: &impl Fn(&'static str) -> Option<String>) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    Ok(Limits {
        max_message_bytes: number(get, "STREAMER_MAX_MESSAGE_BYTES")?
            .unwrap_or(defaults.max_message_bytes),
        max_depth: number(get, "STREAMER_MAX_DEPTH")?.unwrap_or(defaults.max_depth),
        max_complexity: number(get, "STREAMER_MAX_COMPLEXITY")?.unwrap_or(defaults.max_complexity),
        max_aliases: number(get, "STREAMER_MAX_ALIASES")?.unwrap_or(defaults.max_aliases),
        max_subscriptions: number(get, "STREAMER_MAX_SUBSCRIPTIONS")?
            .unwrap_or(defaults.max_subscriptions),
        max_operation_id: number(get, "STREAMER_MAX_OPERATION_ID")?
            .unwrap_or(defaults.max_operation_id),
        max_document_bytes: number(get, "STREAMER_MAX_DOCUMENT_BYTES")?
            .unwrap_or(defaults.max_document_bytes),
        max_init_payload_bytes: number(get, "STREAMER_MAX_INIT_PAYLOAD_BYTES")?
            .unwrap_or(defaults.max_init_payload_bytes),
        max_payload_bytes: number(get, "STREAMER_MAX_PAYLOAD_BYTES")?
            .unwrap_or(defaults.max_payload_bytes),
        max_batch_items: number(get, "STREAMER_MAX_BATCH_ITEMS")?
            .unwrap_or(defaults.max_batch_items),
        max_tenant_connections: number(get, "STREAMER_TENANT_CONNECTIONS")?,
        max_tenant_active_requests: number(get, "STREAMER_TENANT_ACTIVE_REQUESTS")?,
        max_tenant_enqueues_per_second: number(get, "STREAMER_TENANT_ENQUEUES_PER_SECOND")?,
    })
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    ///
    /// When a required variable is missing or one does not parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads settings through `var`.
    ///
    /// # Errors
    ///
    /// When a required variable is missing or one does not parse.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| var(name).filter(|v| !v.trim().is_empty());
        let init_timeout = match get("STREAMER_INIT_TIMEOUT_MS") {
            None => Duration::from_secs(3),
            Some(value) => value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| ConfigError::Invalid {
                    name: "STREAMER_INIT_TIMEOUT_MS",
                    expected: "a number of milliseconds",
                    value,
                })?,
        };
        let tenant_job_share = match get("STREAMER_TENANT_JOB_SHARE") {
            None => None,
            Some(value) => Some(
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|&share| share > 0)
                    .ok_or(ConfigError::Invalid {
                        name: "STREAMER_TENANT_JOB_SHARE",
                        expected: "a number of jobs above 0",
                        value,
                    })?,
            ),
        };
        let auth = match get("STREAMER_AUTH").as_deref() {
            None => None,
            Some("dev") => Some(AuthMode::Dev),
            Some("jwt-hs256") => Some(AuthMode::JwtHs256),
            Some("jwt-rs256") => Some(AuthMode::JwtRs256),
            Some("authorizer") => Some(AuthMode::Authorizer),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "STREAMER_AUTH",
                    expected: "dev, jwt-hs256, jwt-rs256 or authorizer",
                    value: other.to_owned(),
                });
            }
        };
        let access = match get("STREAMER_ACCESS").as_deref() {
            None | Some("tenant") => Access::Tenant,
            Some("owner") => Access::Owner,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "STREAMER_ACCESS",
                    expected: "tenant or owner",
                    value: other.to_owned(),
                });
            }
        };
        Ok(Self {
            limits: limits(&get)?,
            auth,
            jwt_secret: get("STREAMER_JWT_SECRET").map(Secret),
            jwks: get("STREAMER_JWKS"),
            tenant_claim: get("STREAMER_TENANT_CLAIM").unwrap_or_else(|| "tenant".to_owned()),
            access,
            table_prefix: get("STREAMER_TABLE_PREFIX")
                .ok_or(ConfigError::Missing("STREAMER_TABLE_PREFIX"))?,
            websocket_endpoint: get("STREAMER_WEBSOCKET_ENDPOINT"),
            worker_function: get("STREAMER_WORKER_FUNCTION"),
            priority_worker_function: get("STREAMER_PRIORITY_WORKER_FUNCTION"),
            metrics_namespace: get("STREAMER_METRICS_NAMESPACE")
                .unwrap_or_else(|| "Streamer".to_owned()),
            worker: worker(&get)?,
            sweep: SweepOptions {
                init_timeout,
                queued_grace: millis(&get, "STREAMER_QUEUED_GRACE_MS")?
                    .unwrap_or(SweepOptions::default().queued_grace),
                limit: number(&get, "STREAMER_SWEEP_LIMIT")?
                    .unwrap_or(SweepOptions::default().limit),
            },
            sender: sender(&get)?,
            tenant_job_share,
        })
    }

    /// The Management API endpoint, required by this function.
    ///
    /// # Errors
    ///
    /// When it is not set.
    pub fn websocket_endpoint(&self) -> Result<&str, ConfigError> {
        self.websocket_endpoint
            .as_deref()
            .ok_or(ConfigError::Missing("STREAMER_WEBSOCKET_ENDPOINT"))
    }

    /// The authenticator `STREAMER_AUTH` names, with its settings.
    ///
    /// # Errors
    ///
    /// When `STREAMER_AUTH` is not set, or the setting its mode needs is missing or invalid.
    pub fn authenticator(&self) -> Result<Arc<dyn Authenticator>, ConfigError> {
        let claims = Claims {
            tenant: self.tenant_claim.clone(),
            ..Claims::default()
        };
        Ok(
            match self
                .auth
                .as_ref()
                .ok_or(ConfigError::Missing("STREAMER_AUTH"))?
            {
                AuthMode::Dev => Arc::new(DevMode),
                AuthMode::JwtHs256 => {
                    let secret = self
                        .jwt_secret
                        .as_ref()
                        .ok_or(ConfigError::Missing("STREAMER_JWT_SECRET"))?;
                    Arc::new(
                        JwtAuthenticator::hs256(secret.expose().as_bytes()).with_claims(claims),
                    )
                }
                AuthMode::JwtRs256 => {
                    let jwks = self
                        .jwks
                        .as_deref()
                        .ok_or(ConfigError::Missing("STREAMER_JWKS"))?;
                    let auth = JwtAuthenticator::rs256_jwks(jwks).map_err(|error| {
                        ConfigError::Invalid {
                            name: "STREAMER_JWKS",
                            expected: "a JWKS document with an RSA key",
                            value: error.to_string(),
                        }
                    })?;
                    Arc::new(auth.with_claims(claims))
                }
                AuthMode::Authorizer => Arc::new(AuthorizerContext::with_tenant_key(claims.tenant)),
            },
        )
    }

    /// The worker function, required by this function.
    ///
    /// # Errors
    ///
    /// When it is not set.
    pub fn worker_function(&self) -> Result<&str, ConfigError> {
        self.worker_function
            .as_deref()
            .ok_or(ConfigError::Missing("STREAMER_WORKER_FUNCTION"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn settings_are_read_with_defaults_and_clear_errors() {
        let config = from(&[("STREAMER_TABLE_PREFIX", "prod")]).unwrap();
        assert_eq!(config.table_prefix, "prod");
        assert_eq!(config.metrics_namespace, "Streamer");
        assert_eq!(config.sweep.init_timeout, Duration::from_secs(3));
        assert_eq!(
            config.websocket_endpoint(),
            Err(ConfigError::Missing("STREAMER_WEBSOCKET_ENDPOINT"))
        );
        assert_eq!(
            from(&[]),
            Err(ConfigError::Missing("STREAMER_TABLE_PREFIX"))
        );
        assert_eq!(
            config.authenticator().err(),
            Some(ConfigError::Missing("STREAMER_AUTH")),
            "no development mode by omission"
        );
        let hs256 = from(&[
            ("STREAMER_TABLE_PREFIX", "p"),
            ("STREAMER_AUTH", "jwt-hs256"),
            ("STREAMER_JWT_SECRET", "s3cret-value"),
        ])
        .unwrap();
        assert!(hs256.authenticator().is_ok());
        assert!(
            !format!("{hs256:?}").contains("s3cret-value"),
            "the secret is not printed"
        );
        let missing = from(&[
            ("STREAMER_TABLE_PREFIX", "p"),
            ("STREAMER_AUTH", "jwt-rs256"),
        ]);
        assert_eq!(
            missing.unwrap().authenticator().err(),
            Some(ConfigError::Missing("STREAMER_JWKS"))
        );
        let error = from(&[
            ("STREAMER_TABLE_PREFIX", "p"),
            ("STREAMER_INIT_TIMEOUT_MS", "soon"),
        ])
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable STREAMER_INIT_TIMEOUT_MS is not a number of milliseconds: \"soon\""
        );
    }

    #[test]
    fn limits_and_quotas_are_read_from_their_variables() {
        let config = from(&[("STREAMER_TABLE_PREFIX", "p")]).unwrap();
        assert_eq!(config.limits, Limits::default(), "defaults, no quota");
        let config = from(&[
            ("STREAMER_TABLE_PREFIX", "p"),
            ("STREAMER_MAX_MESSAGE_BYTES", "65536"),
            ("STREAMER_MAX_DEPTH", "8"),
            ("STREAMER_TENANT_CONNECTIONS", "100"),
            ("STREAMER_TENANT_ACTIVE_REQUESTS", "5000"),
            ("STREAMER_TENANT_ENQUEUES_PER_SECOND", "200"),
        ])
        .unwrap();
        assert_eq!(config.limits.max_message_bytes, 65536);
        assert_eq!(config.limits.max_depth, 8);
        assert_eq!(
            config.limits.max_complexity,
            Limits::default().max_complexity
        );
        assert_eq!(config.limits.max_tenant_connections, Some(100));
        assert_eq!(config.limits.max_tenant_active_requests, Some(5000));
        assert_eq!(config.limits.max_tenant_enqueues_per_second, Some(200));
        for (name, value) in [
            ("STREAMER_MAX_DEPTH", "deep"),
            ("STREAMER_MAX_MESSAGE_BYTES", "0"),
            ("STREAMER_TENANT_ENQUEUES_PER_SECOND", "-1"),
            ("STREAMER_TENANT_CONNECTIONS", "1.5"),
        ] {
            let error = from(&[("STREAMER_TABLE_PREFIX", "p"), (name, value)]).unwrap_err();
            assert_eq!(
                error,
                ConfigError::Invalid {
                    name,
                    expected: "a whole number above 0",
                    value: value.to_owned(),
                },
                "{name}={value}"
            );
        }
    }

    #[test]
    fn worker_sweep_and_sender_settings_are_read_from_their_variables() {
        let config = from(&[("STREAMER_TABLE_PREFIX", "p")]).unwrap();
        assert_eq!(config.worker, WorkerSettings::default());
        assert_eq!(config.sweep, SweepOptions::default());
        assert_eq!(config.sender, SenderOptions::default());
        let config = from(&[
            ("STREAMER_TABLE_PREFIX", "p"),
            ("STREAMER_LEASE_MS", "10000"),
            ("STREAMER_JOB_TIME_LIMIT_MS", "60000"),
            ("STREAMER_PROGRESS_INTERVAL_MS", "250"),
            ("STREAMER_CANCEL_GRACE_MS", "1000"),
            ("STREAMER_MAX_RESULT_BYTES", "4096"),
            ("STREAMER_INIT_TIMEOUT_MS", "5000"),
            ("STREAMER_QUEUED_GRACE_MS", "30000"),
            ("STREAMER_SWEEP_LIMIT", "50"),
            ("STREAMER_SENDER_MAX_IN_FLIGHT", "16"),
            ("STREAMER_SENDER_MAX_ATTEMPTS", "3"),
            ("STREAMER_SENDER_ATTEMPT_TIMEOUT_MS", "1500"),
        ])
        .unwrap();
        assert_eq!(
            config.worker,
            WorkerSettings {
                lease: Duration::from_secs(10),
                time_limit: Duration::from_secs(60),
                progress_interval: Duration::from_millis(250),
                cancel_grace: Duration::from_secs(1),
                max_result_bytes: 4096,
            }
        );
        assert_eq!(
            config.sweep,
            SweepOptions {
                init_timeout: Duration::from_secs(5),
                queued_grace: Duration::from_secs(30),
                limit: 50,
            }
        );
        assert_eq!(
            (
                config.sender.max_in_flight,
                config.sender.max_attempts,
                config.sender.attempt_timeout
            ),
            (16, 3, Duration::from_millis(1500))
        );
        for name in [
            "STREAMER_LEASE_MS",
            "STREAMER_SWEEP_LIMIT",
            "STREAMER_SENDER_MAX_ATTEMPTS",
        ] {
            let error = from(&[("STREAMER_TABLE_PREFIX", "p"), (name, "soon")]).unwrap_err();
            assert!(
                matches!(error, ConfigError::Invalid { name: named, .. } if named == name),
                "{error}"
            );
        }
    }
}
