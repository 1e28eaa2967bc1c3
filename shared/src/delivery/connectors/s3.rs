//! The S3 connectors (`s3-role`, `s3-keys`, `s3-bucket-policy`) and the
//! `deliver-s3` deliverer (docs/design.md, "Reports and layouts", "Tenants"
//! and "Delivery rules"): each report's parts are streamed from staging (read
//! with our credentials) into the customer's bucket (written with theirs: an
//! assumed role with the tenant's external id, the tenant's own keys, or our
//! role where their bucket policy trusts us), then `_manifest.json` last; a
//! retry skips the parts an earlier attempt of the job recorded as delivered
//! ([`crate::delivery::resume`]), since nothing here can look at what the
//! bucket holds. Customers grant only `s3:PutObject`,
//! `s3:ListBucketMultipartUploads` and `s3:AbortMultipartUpload`: nothing
//! here reads their bucket, and only `s3:PutObject` is required. Every call
//! carries `ExpectedBucketOwner` when the connector names the owner.
//!
//! Every assumed session is scoped to its destination by an inline session
//! policy ([`destination_session_policy`]): whatever the customer's role
//! grants, the session can only put, list uploads of and abort uploads in
//! that bucket under that prefix, and, when the stack knows its AWS
//! organization, nothing in it (`aws:ResourceOrgID`). `s3-bucket-policy`
//! deliveries write through a session of our bucket-policy writer role
//! tagged `popularity-tenant=<tenantId>`, on which the customer's bucket
//! policy conditions, so a tenant can never make us write into another
//! tenant's bucket: the tag would not match.

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use tracing::warn;

use crate::aws_errors::{code, one_line};
use crate::connector_registry::JobKind;
use crate::delivery::connection_probe::{ConnectionTestReport, ConnectionTestRequest};
use crate::delivery::deliverer::Deliverer;
use crate::delivery::destination_files::deliver_report_files;
use crate::delivery::error::DeliveryError;
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::PartLedger;
use crate::delivery::status::DeliveredObject;
use crate::domain::report_run_prefix;
use crate::manifest::RunManifest;
use crate::store::{ObjectSink, ObjectStore, S3Store};
use crate::tenant::conflicts::own_bucket_refusal;
use crate::tenant::{Connector, S3Destination, TenantConfig};

/// Where connection-test probes write, under the connector's prefix.
pub const CONNECTION_TEST_FOLDER: &str = "_connection-test/";

/// The session tag of `s3-bucket-policy` writes: its value is the tenant id,
/// and customers' bucket policies condition on `aws:PrincipalTag/<this>`.
pub const TENANT_SESSION_TAG: &str = "popularity-tenant";

/// `text` as literal characters of an IAM resource ARN: `*`, `?` and `$`
/// would otherwise be wildcards or a policy variable.
fn iam_literal(text: &str) -> String {
    let mut literal = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '*' | '?' | '$' => {
                literal.push_str("${");
                literal.push(c);
                literal.push('}');
            }
            c => literal.push(c),
        }
    }
    literal
}

/// The inline session policy of every session deliver-s3 assumes: only
/// `s3:PutObject` and `s3:AbortMultipartUpload` under the destination's
/// prefix and `s3:ListBucketMultipartUploads` on its bucket; with
/// `own_organization`, a Deny of anything in a bucket of that AWS
/// organization (`aws:ResourceOrgID`), so a role or bucket that trusts our
/// whole organization is still never written. The effective permissions are
/// the intersection with the role's own, so this can only narrow them.
pub fn destination_session_policy(destination: &S3Destination, own_organization: Option<&str>) -> String {
    let bucket = iam_literal(&destination.bucket_arn);
    let objects = format!("{bucket}/{}*", iam_literal(&destination.prefix));
    let mut statements = vec![
        serde_json::json!({"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": objects}),
        serde_json::json!({"Effect": "Allow", "Action": "s3:ListBucketMultipartUploads", "Resource": bucket}),
    ];
    if let Some(organization) = own_organization {
        statements.push(serde_json::json!({"Effect": "Deny", "Action": "s3:*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceOrgID": organization}}}));
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// `popularity-<tenantId>`, cut to STS's 64-character limit. Shows in the
/// customer's CloudTrail, so they can tell which tenant a session served.
pub fn role_session_name(tenant_id: &str) -> String {
    let mut name = format!("popularity-{tenant_id}");
    name.truncate(64);
    name
}

/// Customer buckets on S3, reached through the shared SDK configuration
/// (which carries `AWS_ENDPOINT_URL` for emulators).
#[derive(Debug, Clone)]
pub struct S3Destinations {
    base: SdkConfig,
    /// The stack's own buckets (staging, data): never opened as a destination.
    own_buckets: Vec<String>,
    /// Our role for `s3-bucket-policy` writes (`BUCKET_POLICY_WRITER_ROLE_ARN`),
    /// assumed with the tenant's session tag. `None` (local runs): such
    /// writes use our own credentials, untagged.
    bucket_policy_writer: Option<String>,
    /// Our AWS organization (`OWN_ORGANIZATION_ID`), whose buckets no
    /// session may touch.
    own_organization: Option<String>,
}

/// A customer's bucket opened with the connector's credentials.
struct OpenedBucket<'c> {
    store: S3Store,
    destination: &'c S3Destination,
    /// For an assumed role, its credentials provider, so a probe can check
    /// the role on its own.
    role: Option<SharedCredentialsProvider>,
}

impl S3Destinations {
    /// Destinations reached through `base`, refusing `own_buckets`.
    pub fn new(base: SdkConfig, own_buckets: Vec<String>) -> Self {
        Self { base, own_buckets, bucket_policy_writer: None, own_organization: None }
    }

    /// `s3-bucket-policy` writes go through sessions of `role` tagged with
    /// the tenant, and every session denies `organization`'s buckets.
    pub fn with_writer_settings(mut self, settings: &crate::config::S3WriterConfig) -> Self {
        self.bucket_policy_writer = settings.bucket_policy_writer_role_arn.clone();
        self.own_organization = settings.own_organization_id.clone();
        self
    }

    /// A store rooted at the connector's bucket and prefix, with the
    /// connector's credentials. Errors name the connector, never a credential.
    async fn open<'c>(
        &self,
        tenant_id: &str,
        connector_name: &str,
        connector: &'c Connector,
    ) -> Result<OpenedBucket<'c>, DeliveryError> {
        let Some(destination) = connector.s3_destination() else {
            return Err(DeliveryError::InvalidConnector {
                connector: connector_name.to_owned(),
                reason: format!("type {} is not an S3 connector type", connector.kind()),
            });
        };
        if let Some(reason) = own_bucket_refusal(&destination.bucket, &self.own_buckets) {
            return Err(DeliveryError::InvalidConnector { connector: connector_name.to_owned(), reason });
        }
        let region = Region::new(destination.region.clone());
        let session_policy = destination_session_policy(destination, self.own_organization.as_deref());
        // The session to open, if any: a customer's role with its external
        // id, or our writer with the tenant's tag; both scoped by the policy.
        let session = match connector {
            Connector::S3Role(role_connector) => Some(
                AssumeRoleProvider::builder(role_connector.role_arn.clone())
                    .external_id(role_connector.external_id.expose_secret()),
            ),
            Connector::S3BucketPolicy(_) => self
                .bucket_policy_writer
                .as_ref()
                .map(|writer| AssumeRoleProvider::builder(writer.clone()).tags([(TENANT_SESSION_TAG, tenant_id)])),
            _ => None,
        };
        let role = match session {
            Some(builder) => Some(SharedCredentialsProvider::new(
                builder
                    .session_name(role_session_name(tenant_id))
                    .policy(session_policy)
                    .region(region.clone())
                    .configure(&self.base)
                    .build()
                    .await,
            )),
            None => None,
        };
        let credentials = match connector {
            Connector::S3Role(_) | Connector::S3BucketPolicy(_) => role.clone(),
            Connector::S3Keys(keys) => Some(SharedCredentialsProvider::new(Credentials::new(
                keys.access_key_id.expose_secret(),
                keys.secret_access_key.expose_secret(),
                None,
                None,
                "tenant-s3-keys",
            ))),
            _ => None,
        };
        let mut builder = aws_sdk_s3::config::Builder::from(&self.base).region(region);
        if let Some(credentials) = credentials {
            builder = builder.credentials_provider(credentials);
        }
        if self.base.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        let client = aws_sdk_s3::Client::from_conf(builder.build());
        let store = S3Store::new(client, destination.bucket.clone(), &destination.prefix)
            .with_expected_owner(destination.bucket_owner.clone());
        Ok(OpenedBucket { store, destination, role })
    }
}

/// Aborts the multipart uploads an earlier attempt left open under
/// `folder` when it was killed (a timeout) before it could abort them
/// itself, so the customer is not left paying for their parts. Best effort:
/// a customer policy without `s3:ListBucketMultipartUploads` makes this one
/// concise warning, not a failed delivery.
async fn clear_killed_attempt(destination: &S3Store, folder: &str) {
    match destination.abort_unfinished_uploads(folder).await {
        Ok(0) => {}
        Ok(aborted) => {
            warn!(folder = %destination.describe(folder), aborted, "aborted multipart uploads an earlier attempt left open")
        }
        Err(error) => warn!(
            folder = %destination.describe(folder),
            %error,
            "could not look for multipart uploads an earlier attempt left open (without s3:ListBucketMultipartUploads \
             the customer's lifecycle rule must clear them)"
        ),
    }
}

/// Delivers `jobs/s3/` jobs and tests S3 connectors.
pub struct S3Deliverer<S> {
    pub staging: S,
    pub destinations: S3Destinations,
}

impl<S: ObjectStore> Deliverer for S3Deliverer<S> {
    fn kind(&self) -> JobKind {
        JobKind::S3
    }

    async fn deliver<L: PartLedger>(
        &self,
        job: &DeliveryJob,
        tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
        ledger: &L,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let opened = self.destinations.open(&tenant.tenant_id, &job.connector, connector).await?;
        let mut delivered = Vec::new();
        for &kind in &job.reports {
            clear_killed_attempt(&opened.store, &report_run_prefix(kind, job.run_id)).await;
            let prefix = &opened.destination.prefix;
            delivered
                .extend(deliver_report_files(&self.staging, &opened.store, prefix, job, manifest, kind, ledger).await?);
        }
        Ok(delivered)
    }

    async fn test_connection(
        &self,
        request: &ConnectionTestRequest,
        tenant: &TenantConfig,
        connector: &Connector,
    ) -> ConnectionTestReport {
        let opened = match self.destinations.open(&tenant.tenant_id, &request.connector, connector).await {
            Ok(opened) => opened,
            Err(error) => return ConnectionTestReport::failing("connector", error.to_string()),
        };
        probe_bucket(&opened, connector, &request.request_id).await
    }
}

/// The S3 probe (docs/design.md, "Connection tests"): a multipart upload under
/// `<prefix>_connection-test/` is created (needs `s3:PutObject`, the one
/// required grant), listed (`s3:ListBucketMultipartUploads`) and aborted
/// (`s3:AbortMultipartUpload`) — the three grants, exercised the way
/// delivery uses them — and, for keys, whether they can also list every
/// bucket of their account.
async fn probe_bucket(opened: &OpenedBucket<'_>, connector: &Connector, request_id: &str) -> ConnectionTestReport {
    let mut report = ConnectionTestReport::default();
    if let Some(role) = &opened.role {
        let ours = matches!(connector, Connector::S3BucketPolicy(_));
        match role.provide_credentials().await {
            Ok(_) if ours => report.passed(
                "sts:AssumeRole",
                format!("our bucket-policy writer role was assumed with the session tag {TENANT_SESSION_TAG}"),
            ),
            Ok(_) => report.passed("sts:AssumeRole", "the role was assumed with the tenant's external id"),
            Err(error) => {
                let cause = crate::aws_errors::cut(&crate::aws_errors::display_chain(&error));
                let detail = if ours {
                    format!(
                        "our bucket-policy writer role could not be assumed: {cause}; this is on our side (the \
                         stack's BucketPolicyWriterRole must trust deliver-s3's role with sts:TagSession)"
                    )
                } else {
                    format!(
                        "the role could not be assumed: {cause}; check that its trust policy trusts our delivery \
                         role with sts:ExternalId equal to the connector's externalId"
                    )
                };
                report.failed("sts:AssumeRole", detail);
                return report;
            }
        }
    }
    let store = &opened.store;
    let client = store.client();
    let bucket = store.bucket();
    let owner = store.expected_owner().map(str::to_owned);
    let key = store.full_key_of(&format!("{CONNECTION_TEST_FOLDER}{request_id}"));
    let location = format!("s3://{bucket}/{key}");

    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .set_expected_bucket_owner(owner.clone())
        .key(&key)
        .content_type("text/plain")
        .send()
        .await;
    let upload_id = match created {
        Ok(output) => {
            report.passed("s3:PutObject", format!("a multipart upload was created at {location}"));
            output.upload_id().unwrap_or_default().to_owned()
        }
        Err(error) => {
            let reason = one_line(&error);
            let detail = if code(&error) == Some("AccessDenied") {
                format!("s3:PutObject is not granted on {location} ({reason}); delivery needs it")
            } else {
                format!("could not create a multipart upload at {location}: {reason}")
            };
            report.failed("s3:PutObject", detail);
            return report;
        }
    };

    let listed = client
        .list_multipart_uploads()
        .bucket(bucket)
        .set_expected_bucket_owner(owner.clone())
        .prefix(store.full_key_of(CONNECTION_TEST_FOLDER))
        .send()
        .await;
    match listed {
        Ok(output) if output.uploads().iter().any(|u| u.upload_id() == Some(upload_id.as_str())) => {
            report.optional_passed("s3:ListBucketMultipartUploads", "the probe's upload was listed");
        }
        Ok(_) => report.optional_failed(
            "s3:ListBucketMultipartUploads",
            "the listing answered but did not show the probe's upload",
        ),
        Err(error) => {
            report.optional_failed("s3:ListBucketMultipartUploads", format!("not granted: {}", one_line(&error)));
            report.warn(
                "s3:ListBucketMultipartUploads is not granted: if a delivery is killed mid-upload (a timeout), the \
                 next attempt cannot find its open multipart upload to abort it; a lifecycle rule that aborts \
                 incomplete multipart uploads must clear it (they are billed until then)",
            );
        }
    }

    let aborted = client
        .abort_multipart_upload()
        .bucket(bucket)
        .set_expected_bucket_owner(owner)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await;
    match aborted {
        Ok(_) => report.optional_passed("s3:AbortMultipartUpload", "the probe's upload was aborted; nothing is left"),
        Err(error) => {
            report.optional_failed("s3:AbortMultipartUpload", format!("not granted: {}", one_line(&error)));
            report.warn(
                "s3:AbortMultipartUpload is not granted: an upload that fails cannot be aborted by us; a lifecycle \
                 rule that aborts incomplete multipart uploads must clear it (its parts are billed until then)",
            );
            report.left(format!(
                "an open multipart upload at {location} (upload id {upload_id}), with no parts; a lifecycle rule that \
                 aborts incomplete multipart uploads clears it"
            ));
        }
    }

    if matches!(connector, Connector::S3Keys(_)) {
        match client.list_buckets().send().await {
            Ok(_) => report.warn(
                "the keys can also list every bucket of their account (s3:ListAllMyBuckets): broader than delivery \
                 needs; grant only s3:PutObject, s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on this \
                 bucket",
            ),
            Err(_) => {}
        }
    }
    report
}
