//! How the console's writes reach a deliverer, and how it waits for a
//! connection test's answer. A connection-test request or a re-written job
//! in the staging bucket starts the deliverer of its kind: in AWS through
//! the bucket's S3 notification ([`DeployedDeliverers`] does nothing more),
//! locally by running that deliverer in this process (the CLI's
//! implementation). Either way the console only writes the object and
//! reads the result: it never holds a connector's permissions itself.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::connector_registry::JobKind;
use crate::delivery::connection_probe::{ConnectionTestRequest, ConnectionTestResult};
use crate::delivery::keys::{connection_test_key, connection_test_result_key};
use crate::store::{ObjectStore, StoreError, CONTROL_OBJECT_MAX_BYTES};

/// What happens after the console writes an object that starts a deliverer.
pub trait StagingEvents: Send + Sync {
    /// `key`, under `jobs/<kind>/` or `connection-tests/<kind>/`, was written.
    fn written(&self, kind: JobKind, key: &str) -> impl Future<Output = ()> + Send;
}

/// In AWS: the staging bucket's notifications start the deliverers.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployedDeliverers;

impl StagingEvents for DeployedDeliverers {
    async fn written(&self, _: JobKind, _: &str) {}
}

/// Why a connection test gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("could not write the connection-test request {key}: {source}")]
    Request {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("could not read the connection-test result {key}: {source}")]
    Result {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("the connection-test result {key} is unreadable: {reason}")]
    Unreadable { key: String, reason: String },
    #[error(
        "the connection test {request_id} did not answer within {seconds} s (the deliverer may be busy or failing); \
         nothing was stored"
    )]
    TimedOut { request_id: String, seconds: u64 },
}

/// A connection test to run.
#[derive(Debug, Clone)]
pub struct ProbeRequest<'a> {
    pub kind: JobKind,
    pub request_id: &'a str,
    pub tenant_id: &'a str,
    pub connector: &'a str,
    /// The draft version of the tenant secret to test, by its label.
    pub secret_version_stage: Option<&'a str>,
    pub requested_at: DateTime<Utc>,
}

/// Writes the request, lets it reach the deliverer, and waits up to `wait`
/// for its result, looking every `poll`.
pub async fn run_probe<S: ObjectStore, E: StagingEvents>(
    staging: &S,
    events: &E,
    request: ProbeRequest<'_>,
    wait: Duration,
    poll: Duration,
) -> Result<ConnectionTestResult, ProbeError> {
    let key = connection_test_key(request.kind, request.request_id, request.tenant_id, request.connector);
    let body = ConnectionTestRequest {
        request_id: request.request_id.to_owned(),
        tenant_id: request.tenant_id.to_owned(),
        connector: request.connector.to_owned(),
        requested_at: request.requested_at,
        secret_version_stage: request.secret_version_stage.map(str::to_owned),
    };
    let body = Bytes::from(serde_json::to_vec(&body).expect("a request serialises"));
    staging
        .put_if_absent(&key, body, "application/json")
        .await
        .map_err(|source| ProbeError::Request { key: key.clone(), source })?;
    events.written(request.kind, &key).await;
    let result_key = connection_test_result_key(request.request_id, request.tenant_id, request.connector);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match staging.get_at_most(&result_key, CONTROL_OBJECT_MAX_BYTES).await {
            Ok(body) => {
                return serde_json::from_slice(&body)
                    .map_err(|error| ProbeError::Unreadable { key: result_key, reason: error.to_string() })
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(source) => return Err(ProbeError::Result { key: result_key, source }),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProbeError::TimedOut { request_id: request.request_id.to_owned(), seconds: wait.as_secs() });
        }
        tokio::time::sleep(poll).await;
    }
}
