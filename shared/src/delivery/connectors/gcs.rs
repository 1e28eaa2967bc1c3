//! The `gcs` connector and the `deliver-gcs` deliverer (docs/design.md,
//! "Reports and layouts", "Tenants" and "Delivery rules"): each report's
//! parts are streamed from staging into the customer's Google Cloud Storage
//! bucket, then `_manifest.json` last. A keyless connector writes as the
//! tenant's own Google identity of ours ([`crate::google_identity`]: short
//! tokens by federation and impersonation, no key anywhere); one with a key
//! file in the tenant secret writes as the customer's service account.
//!
//! Either account holds only "Storage Object Creator" (`storage.objects.create`)
//! on the bucket, so nothing here reads, lists, deletes or overwrites an
//! object or reads bucket metadata: every upload — a multi-gigabyte part or
//! the small manifest — is a JSON-API resumable upload with
//! `ifGenerationMatch=0`, streamed in [`UPLOAD_CHUNK_BYTES`] chunks. A 412
//! means an earlier attempt of the same run already finalized that object
//! (names are deterministic and a published run never changes), so it counts
//! as written and the status says so. Requests go to Google, or, when
//! `STORAGE_EMULATOR_HOST` is set, to that address over plain HTTP; nothing
//! else differs. The client is Google's own `google-cloud-storage` crate;
//! with a key, tokens are the self-signed JWTs `google-cloud-auth` makes
//! from it, so no token endpoint is contacted and a key's `token_uri`
//! (validated to be Google's) is never followed.
//!
//! The crate retries a chunk that failed in transport (a cut connection)
//! without asking the session where it stands, which can finalize an object
//! with a chunk missing (seen against the emulator, and nothing on Google's
//! side would refuse it). So transport errors are not retried here: the
//! upload fails, nothing is finalized, and the next attempt starts afresh.

use std::time::Duration;

use bytes::Bytes;
use google_cloud_auth::credentials::service_account::{AccessSpecifier, Builder as ServiceAccountBuilder};
use google_cloud_gax::retry_policy::{RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model::Object;
use google_cloud_storage::streaming_source::StreamingSource;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::aws_errors::cut;
use crate::connector_registry::JobKind;
use crate::delivery::connection_probe::{ConnectionTestReport, ConnectionTestRequest};
use crate::delivery::deliverer::Deliverer;
use crate::delivery::destination_files::deliver_report_files;
use crate::delivery::error::{ConnectorFailure, DeliveryError};
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::{NoResume, PartLedger};
use crate::delivery::status::DeliveredObject;
use crate::google_identity::{TenantIdentities, TENANT_IDENTITY_REFUSED};
use crate::manifest::RunManifest;
use crate::store::{
    normalise_prefix, ObjectSink, ObjectStore, ObjectUpload, StoreError, UploadReceipt, UPLOAD_CHUNK_BYTES,
};
use crate::tenant::{Connector, GcsConnector, TenantConfig};

/// Google's Cloud Storage endpoint.
pub const GOOGLE_STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";
/// The OAuth scope of the tokens: create objects (read-write is the
/// narrowest scope that allows it; the account's IAM role is what limits it).
pub const STORAGE_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Where connection-test probes write, under the connector's prefix.
pub const CONNECTION_TEST_FOLDER: &str = "_connection-test/";
/// Chunks waiting between the producer and the upload task; with the
/// crate's own buffer of one chunk, memory stays at a few chunks.
const CHUNKS_IN_FLIGHT: usize = 2;
/// How long one upload keeps retrying throttling and server errors.
const RETRY_TIME_LIMIT: Duration = Duration::from_secs(120);
const RETRY_ATTEMPT_LIMIT: u32 = 8;

/// The JSON API's name of a bucket.
fn bucket_path(bucket: &str) -> String {
    format!("projects/_/buckets/{bucket}")
}

/// Where GCS requests go: Google, or the emulator `STORAGE_EMULATOR_HOST`
/// names (Google's convention: `host:port` or a URL; plain HTTP).
pub fn storage_endpoint(emulator_host: Option<&str>) -> String {
    match emulator_host.map(str::trim).filter(|host| !host.is_empty()) {
        None => GOOGLE_STORAGE_ENDPOINT.to_owned(),
        Some(host) if host.starts_with("http://") || host.starts_with("https://") => {
            host.trim_end_matches('/').to_owned()
        }
        Some(host) => format!("http://{}", host.trim_end_matches('/')),
    }
}

/// Retries what the crate's default retries — throttling and server errors —
/// but not transport errors, which the crate could resume wrongly (see the
/// module documentation).
#[derive(Debug)]
struct NoTransportRetries;

impl RetryPolicy for NoTransportRetries {
    fn on_error(&self, state: &RetryState, error: google_cloud_storage::Error) -> RetryResult {
        if error.http_status_code().is_none() && (error.is_io() || error.is_transport() || error.is_timeout()) {
            return RetryResult::Permanent(error);
        }
        google_cloud_storage::retry_policy::RetryableErrors.on_error(state, error)
    }
}

/// A failed GCS call as a [`StoreError`]: the HTTP status when Google
/// answered, what it means for the customer, and Google's message (which
/// names a missing permission).
fn gcs_error(
    operation: &'static str,
    location: String,
    writer: &Writer,
    error: &google_cloud_storage::Error,
) -> StoreError {
    let status = error.http_status_code();
    let hint = match (status, writer) {
        (Some(401), Writer::CustomerKey) => {
            "the key was refused (deleted or disabled? create a new key and update the secret): ".to_owned()
        }
        (Some(401), Writer::TenantIdentity(_)) => format!("{TENANT_IDENTITY_REFUSED}: "),
        (Some(403), Writer::CustomerKey) => {
            "the service account may not create objects here (grant it Storage Object Creator on the bucket): "
                .to_owned()
        }
        (Some(403), Writer::TenantIdentity(address)) => format!(
            "{address} may not create objects here: grant it roles/storage.objectCreator on the bucket (if your \
             organization restricts IAM members to its own domains with iam.allowedPolicyMemberDomains, your \
             administrator must allow our address's domain or use a key file instead): "
        ),
        (Some(404), _) => "the bucket does not exist (check its name): ".to_owned(),
        _ => String::new(),
    };
    StoreError::Gcs { operation, location, status, detail: format!("{hint}{}", cut(&error.to_string())) }
}

/// Who a [`GcsStore`] writes as, for error messages.
#[derive(Debug, Clone)]
enum Writer {
    /// The customer's service account, from the key file in the secret.
    CustomerKey,
    /// The tenant's Google identity of ours, by this address.
    TenantIdentity(String),
}

/// Google's own base64 of a CRC32C (big-endian bytes) and of an MD5.
fn receipt_of(object: &Object) -> UploadReceipt {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let checksums = object.checksums.as_ref();
    UploadReceipt {
        already_existed: false,
        crc32c: checksums.and_then(|c| c.crc32c).map(|crc| encode(&crc.to_be_bytes())),
        md5: checksums.map(|c| &c.md5_hash).filter(|md5| !md5.is_empty()).map(|md5| encode(md5)),
    }
}

/// The bytes of one upload, as the crate reads them.
struct ChannelSource(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl StreamingSource for ChannelSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        self.0.recv().await
    }
}

/// A customer's bucket, under the connector's prefix, as its service
/// account sees it: write-only.
#[derive(Debug, Clone)]
pub struct GcsStore {
    client: Storage,
    bucket: String,
    prefix: String,
    writer: Writer,
}

/// A keyless connector in a deployment without keyless Google.
#[derive(Debug, thiserror::Error)]
#[error(
    "connector {connector} is keyless (no serviceAccountJson), but keyless Google is not configured in this \
     deployment (GOOGLE_EXTERNAL_ACCOUNT_CONFIG and GOOGLE_PROJECT_ID; our side to fix)"
)]
pub struct KeylessNotConfigured {
    pub connector: String,
}

impl GcsStore {
    /// The client for a connector, talking to `endpoint`: as the customer's
    /// key when the connector has one, otherwise as `tenant_id`'s identity
    /// of ours. A key the library refuses is a permanent error naming the
    /// connector.
    pub async fn open(
        connector_name: &str,
        connector: &GcsConnector,
        endpoint: &str,
        tenant_id: &str,
        identities: Option<&TenantIdentities>,
    ) -> Result<GcsStore, DeliveryError> {
        let invalid = |reason: String| DeliveryError::InvalidConnector { connector: connector_name.to_owned(), reason };
        let (credentials, writer) = match (&connector.service_account, identities) {
            (Some(key), _) => {
                let key: serde_json::Value = serde_json::from_str(key.key_json.expose_secret())
                    .map_err(|_| invalid("serviceAccountJson is not JSON".to_owned()))?;
                let credentials = ServiceAccountBuilder::new(key)
                    .with_access_specifier(AccessSpecifier::from_scopes([STORAGE_SCOPE]))
                    .build()
                    // The error names the field the library refused, never the key.
                    .map_err(|e| invalid(format!("the service account key cannot be used: {}", cut(&e.to_string()))))?;
                (credentials, Writer::CustomerKey)
            }
            (None, Some(identities)) => (
                identities.credentials(tenant_id, &[STORAGE_SCOPE]),
                Writer::TenantIdentity(identities.address(tenant_id)),
            ),
            (None, None) => {
                return Err(DeliveryError::Connector(ConnectorFailure::permanent(KeylessNotConfigured {
                    connector: connector_name.to_owned(),
                })))
            }
        };
        let client = Storage::builder()
            .with_endpoint(endpoint)
            .with_credentials(credentials)
            .with_retry_policy(
                NoTransportRetries.with_time_limit(RETRY_TIME_LIMIT).with_attempt_limit(RETRY_ATTEMPT_LIMIT),
            )
            .build()
            .await
            .map_err(|e| DeliveryError::Destination {
                connector: connector_name.to_owned(),
                source: StoreError::Gcs {
                    operation: "client",
                    location: format!("gs://{}", connector.bucket),
                    status: None,
                    detail: cut(&e.to_string()),
                },
            })?;
        Ok(GcsStore { client, bucket: connector.bucket.clone(), prefix: normalise_prefix(&connector.prefix), writer })
    }
}

impl ObjectSink for GcsStore {
    type Upload = GcsUpload;

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
        let mut upload = self.start_upload(key, content_type).await?;
        upload.write(body).await?;
        upload.finish().await
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<GcsUpload, StoreError> {
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let request = self
            .client
            .write_object(bucket_path(&self.bucket), format!("{}{key}", self.prefix), ChannelSource(receiver))
            .set_if_generation_match(0)
            .set_content_type(content_type)
            .with_resumable_upload_threshold(0_usize)
            .with_resumable_upload_buffer_size(UPLOAD_CHUNK_BYTES);
        let task = tokio::spawn(async move { request.send_buffered().await });
        Ok(GcsUpload {
            sender: Some(sender),
            task: Some(task),
            location: self.describe(key),
            writer: self.writer.clone(),
            already_existed: false,
        })
    }

    fn describe(&self, key: &str) -> String {
        format!("gs://{}/{}{key}", self.bucket, self.prefix)
    }
}

/// One resumable upload, run by a task of its own that reads the chunks
/// written here. Nothing is finalized until [`ObjectUpload::finish`] ends
/// the stream; an abort, a drop or an error cancels the task, which leaves
/// the session unfinalized (invisible; Google expires it after a week).
pub struct GcsUpload {
    sender: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    task: Option<JoinHandle<google_cloud_storage::Result<Object>>>,
    location: String,
    writer: Writer,
    /// The object already exists (412): the rest of the bytes are discarded.
    already_existed: bool,
}

impl GcsUpload {
    /// The upload task ended before the stream did: its outcome.
    async fn settle_early(&mut self) -> Result<(), StoreError> {
        self.sender = None;
        let Some(task) = self.task.take() else { return Ok(()) };
        match task.await {
            Ok(Err(error)) if error.http_status_code() == Some(412) => {
                self.already_existed = true;
                Ok(())
            }
            Ok(Err(error)) => Err(gcs_error("upload", self.location.clone(), &self.writer, &error)),
            Ok(Ok(_)) => Err(StoreError::Gcs {
                operation: "upload",
                location: self.location.clone(),
                status: None,
                detail: "the upload was finalized before all its bytes were written".to_owned(),
            }),
            Err(join) => Err(StoreError::Gcs {
                operation: "upload",
                location: self.location.clone(),
                status: None,
                detail: format!("the upload task ended: {join}"),
            }),
        }
    }

    /// Makes sure the task finalizes nothing: the stream fails and the task
    /// is cancelled before the sender (whose drop would end the stream) goes.
    fn cancel(&mut self) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.try_send(Err(std::io::Error::other("the upload was aborted")));
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl ObjectUpload for GcsUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.already_existed {
            return Ok(());
        }
        let Some(sender) = self.sender.as_ref() else {
            return Err(StoreError::Gcs {
                operation: "upload",
                location: self.location.clone(),
                status: None,
                detail: "write after the upload ended".to_owned(),
            });
        };
        if sender.send(Ok(chunk)).await.is_err() {
            return self.settle_early().await;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<UploadReceipt, StoreError> {
        if self.already_existed {
            return Ok(UploadReceipt { already_existed: true, ..UploadReceipt::default() });
        }
        // The end of the stream is what finalizes the object.
        self.sender = None;
        let Some(task) = self.task.take() else {
            return Err(StoreError::Gcs {
                operation: "upload",
                location: self.location.clone(),
                status: None,
                detail: "finish after the upload ended".to_owned(),
            });
        };
        match task.await {
            Ok(Ok(object)) => Ok(receipt_of(&object)),
            Ok(Err(error)) if error.http_status_code() == Some(412) => {
                Ok(UploadReceipt { already_existed: true, ..UploadReceipt::default() })
            }
            Ok(Err(error)) => Err(gcs_error("upload", self.location.clone(), &self.writer, &error)),
            Err(join) => Err(StoreError::Gcs {
                operation: "upload",
                location: self.location.clone(),
                status: None,
                detail: format!("the upload task ended: {join}"),
            }),
        }
    }

    async fn abort(mut self) -> Result<(), StoreError> {
        self.cancel();
        Ok(())
    }
}

impl Drop for GcsUpload {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Delivers `jobs/gcs/` jobs and tests GCS connectors.
pub struct GcsDeliverer<S> {
    pub staging: S,
    /// [`storage_endpoint`] of the configuration.
    pub endpoint: String,
    /// The tenants' Google identities, when keyless Google is configured.
    pub identities: Option<TenantIdentities>,
}

fn gcs_connector<'c>(name: &str, connector: &'c Connector) -> Result<&'c GcsConnector, DeliveryError> {
    match connector {
        Connector::Gcs(gcs) => Ok(gcs),
        other => Err(DeliveryError::InvalidConnector {
            connector: name.to_owned(),
            reason: format!("type {} is not a gcs connector", other.kind()),
        }),
    }
}

impl<S: ObjectStore> Deliverer for GcsDeliverer<S> {
    fn kind(&self) -> JobKind {
        JobKind::Gcs
    }

    /// Uploads every part on every attempt (no [`PartLedger`]): an object an
    /// earlier attempt finalized answers 412 and counts as written.
    async fn deliver<L: PartLedger>(
        &self,
        job: &DeliveryJob,
        _tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
        _ledger: &L,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let gcs = gcs_connector(&job.connector, connector)?;
        let store =
            GcsStore::open(&job.connector, gcs, &self.endpoint, &job.tenant_id, self.identities.as_ref()).await?;
        let mut delivered = Vec::new();
        for &kind in &job.reports {
            delivered.extend(
                deliver_report_files(&self.staging, &store, &store.prefix, job, manifest, kind, &NoResume).await?,
            );
        }
        Ok(delivered)
    }

    /// One small object `<prefix>_connection-test/<requestId>.txt`, created
    /// with `ifGenerationMatch=0` (docs/design.md, "Reports and layouts"). An Object Creator cannot
    /// delete it: the result says it is left behind.
    async fn test_connection(
        &self,
        request: &ConnectionTestRequest,
        _tenant: &TenantConfig,
        connector: &Connector,
    ) -> ConnectionTestReport {
        let gcs = match gcs_connector(&request.connector, connector) {
            Ok(gcs) => gcs,
            Err(error) => return ConnectionTestReport::failing("connector", error.to_string()),
        };
        let identities = self.identities.as_ref();
        let store = match GcsStore::open(&request.connector, gcs, &self.endpoint, &request.tenant_id, identities).await
        {
            Ok(store) => store,
            Err(error) => return ConnectionTestReport::failing("credentials", error.to_string()),
        };
        let mut report = ConnectionTestReport::default();
        if let Writer::TenantIdentity(address) = &store.writer {
            report.passed("identity", format!("writing as {address}, the identity this tenant grants Object Creator"));
        }
        let key = format!("{CONNECTION_TEST_FOLDER}{}.txt", request.request_id);
        let body = format!(
            "Connection test {} of the popularity reports delivery to tenant {}. This object can be deleted.\n",
            request.request_id, request.tenant_id
        );
        match store.put(&key, Bytes::from(body), "text/plain").await {
            Ok(receipt) => {
                let what = if receipt.already_existed { "already existed (an earlier probe)" } else { "was created" };
                report.passed(
                    "storage.objects.create",
                    format!("{} {what} with ifGenerationMatch=0", store.describe(&key)),
                );
                report.left(format!(
                    "the object {} (Storage Object Creator cannot delete it: remove it, or let a lifecycle rule \
                     expire {CONNECTION_TEST_FOLDER})",
                    store.describe(&key)
                ));
            }
            Err(error) => report.failed("storage.objects.create", error.to_string()),
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulator_host_follows_googles_convention() {
        assert_eq!(storage_endpoint(None), "https://storage.googleapis.com");
        assert_eq!(storage_endpoint(Some("")), "https://storage.googleapis.com");
        assert_eq!(storage_endpoint(Some("127.0.0.1:4443")), "http://127.0.0.1:4443");
        assert_eq!(storage_endpoint(Some("http://127.0.0.1:4443/")), "http://127.0.0.1:4443");
    }
}
