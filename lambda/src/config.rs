//! [`Config`]: what a function needs to know, read once from its environment.

use std::time::Duration;

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
    /// `STREAMER_METRICS_NAMESPACE` (default `Streamer`): the CloudWatch namespace.
    pub metrics_namespace: String,
    /// `STREAMER_INIT_TIMEOUT_MS` (default 3000): how long a connection may wait before
    /// `connection_init` (sweeper).
    pub init_timeout: Duration,
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
        Ok(Self {
            table_prefix: get("STREAMER_TABLE_PREFIX")
                .ok_or(ConfigError::Missing("STREAMER_TABLE_PREFIX"))?,
            websocket_endpoint: get("STREAMER_WEBSOCKET_ENDPOINT"),
            worker_function: get("STREAMER_WORKER_FUNCTION"),
            metrics_namespace: get("STREAMER_METRICS_NAMESPACE")
                .unwrap_or_else(|| "Streamer".to_owned()),
            init_timeout,
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
        assert_eq!(config.init_timeout, Duration::from_secs(3));
        assert_eq!(
            config.websocket_endpoint(),
            Err(ConfigError::Missing("STREAMER_WEBSOCKET_ENDPOINT"))
        );
        assert_eq!(
            from(&[]),
            Err(ConfigError::Missing("STREAMER_TABLE_PREFIX"))
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
}
