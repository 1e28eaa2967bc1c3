//! The one AWS SDK configuration every function and the CLI build their
//! clients from: the SDK's own defaults (region, credentials,
//! `AWS_ENDPOINT_URL`) plus timeouts, so that no SDK call — S3, STS, Secrets
//! Manager, SES — waits forever on an endpoint that accepts a connection and
//! never answers (docs/design.md, "Delivery rules": such a failure is quick, named and retried).
//! Every client built from the [`SdkConfig`] (`Client::new(&config)`,
//! `Builder::from(&config)`, `AssumeRoleProvider::configure(&config)`)
//! inherits these timeouts. This module must not read the environment
//! beyond what `aws_config` itself reads, and must not pick timeouts per
//! caller: the bounds live in [`SdkTimeouts::default`], once.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};

/// How long one SDK call may take, at each stage. The defaults are well
/// inside the shortest function timeout (fanout's 600 s; the others have
/// 900 s): a dead endpoint costs at most [`operation`](Self::operation)
/// per call, and the invocation then fails and is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTimeouts {
    /// Establishing a TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending a request (its body included: an 8 MiB part) to the
    /// first byte of the response's headers. A streamed response body is
    /// guarded by [`stalled_stream_grace`](Self::stalled_stream_grace)
    /// instead.
    pub read: Duration,
    /// One attempt of an operation, signing and credentials included.
    pub operation_attempt: Duration,
    /// An operation with all its retries.
    pub operation: Duration,
    /// A streamed body (download or upload) that moves no bytes for this
    /// long fails.
    pub stalled_stream_grace: Duration,
}

impl Default for SdkTimeouts {
    /// 5 s to connect, 30 s to the response (an 8 MiB part at 280 kB/s),
    /// 60 s an attempt, 150 s an operation with its retries (three attempts
    /// of a dead endpoint, with backoff, end near 95 s), 20 s of a stalled
    /// stream (the SDK's own default, made explicit).
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
            operation_attempt: Duration::from_secs(60),
            operation: Duration::from_secs(150),
            stalled_stream_grace: Duration::from_secs(20),
        }
    }
}

impl SdkTimeouts {
    /// The timeouts as the SDK takes them.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.read)
            .operation_attempt_timeout(self.operation_attempt)
            .operation_timeout(self.operation)
            .build()
    }

    /// `loader` with these timeouts and stalled-stream protection; tests
    /// pass a loader aimed at an emulator.
    pub fn apply(&self, loader: ConfigLoader) -> ConfigLoader {
        loader.timeout_config(self.timeout_config()).stalled_stream_protection(
            StalledStreamProtectionConfig::enabled().grace_period(self.stalled_stream_grace).build(),
        )
    }
}

/// The SDK configuration of a function or the CLI: the SDK's defaults with
/// [`SdkTimeouts::default`].
pub async fn load_sdk_config() -> SdkConfig {
    SdkTimeouts::default().apply(aws_config::defaults(BehaviorVersion::latest())).load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timeout_is_set_and_well_inside_the_shortest_function_timeout() {
        let timeouts = SdkTimeouts::default();
        let config = timeouts.timeout_config();
        assert_eq!(config.connect_timeout(), Some(timeouts.connect));
        assert_eq!(config.read_timeout(), Some(timeouts.read));
        assert_eq!(config.operation_attempt_timeout(), Some(timeouts.operation_attempt));
        assert_eq!(config.operation_timeout(), Some(timeouts.operation));
        // fanout's Timeout in template.yaml; the deliverers and rank have 900 s.
        let shortest_function_timeout = Duration::from_secs(600);
        assert!(timeouts.operation * 3 <= shortest_function_timeout, "{timeouts:?}");
        assert!(timeouts.connect < timeouts.read && timeouts.read < timeouts.operation_attempt);
        assert!(timeouts.operation_attempt < timeouts.operation);
    }

    #[tokio::test]
    async fn the_loaded_configuration_carries_the_timeouts_to_every_client() {
        let loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9");
        let config = SdkTimeouts::default().apply(loader).load().await;
        let timeouts = SdkTimeouts::default();
        let loaded = config.timeout_config().expect("a timeout config");
        assert_eq!(loaded.read_timeout(), Some(timeouts.read));
        assert_eq!(loaded.operation_timeout(), Some(timeouts.operation));
        let stall = config.stalled_stream_protection().expect("stalled-stream protection");
        assert!(stall.is_enabled() && stall.grace_period() == timeouts.stalled_stream_grace);
        // Clients built the ways this crate builds them keep them.
        let s3 = aws_sdk_s3::config::Builder::from(&config).build();
        assert_eq!(s3.timeout_config().and_then(|t| t.read_timeout()), Some(timeouts.read));
        let ses = aws_sdk_ses::Config::from(&config);
        assert_eq!(ses.timeout_config().and_then(|t| t.operation_timeout()), Some(timeouts.operation));
    }
}
