//! The `email` connector and the `deliver-email` deliverer (docs/design.md, "Delivery rules"): one
//! email per run per feed, listing each report with its rows, size and
//! presigned links. Links point at the canonical `reports/…` parts (for a
//! delta delivery, at the staged `deltas/…` files against the base run) —
//! each checked against the run manifest (or the delta's) for bytes and
//! SHA-256 before the message goes out, so no link serves a file that
//! changed or vanished — or, when the feed asks for another format or
//! compression, at converted copies written under
//! `downloads/<tenantId>/<runId>/<data_type>/` (Parquet in a `zstd/` or
//! `snappy/` folder below) in the staging bucket (kept
//! at least 8 days by the lifecycle rules), which the conversion itself
//! checks. The links themselves point at the tenant's own copies of those
//! files under `links/<tenantId>/` ([`link_copies`]), which revoking the
//! tenant's links deletes. Its submodules are the message
//! ([`message`]: text, HTML, MIME, the SES adapter), the links
//! ([`links`]: the signer) and the copies ([`link_copies`]).

pub mod link_copies;
pub mod links;
pub mod message;

pub use links::{LinkError, LinkSigner, S3LinkSigner, SignedLinks};
pub use message::{EmailMessage, LinkedPart, LinkedReport, MailError, MailSender, ReportEmail, SesMailer};

use crate::connector_registry::JobKind;
use crate::delivery::connection_probe::{ConnectionTestReport, ConnectionTestRequest};
use crate::delivery::deliverer::Deliverer;
use crate::delivery::destination_files::ReportSource;
use crate::delivery::error::DeliveryError;
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::PartLedger;
use crate::delivery::status::DeliveredObject;
use crate::delta::FileKind;
use crate::domain::{Encoding, ReportKind, RunId};
use crate::manifest::RunManifest;
use crate::report_writer::PartSummary;
use crate::store::ObjectStore;
use crate::tenant::{Connector, TenantConfig};
use crate::transfer::{transfer_part, verify_part, PartTransfer};

pub const DOWNLOADS_PREFIX: &str = "downloads/";

/// `downloads/<tenantId>/<runId>/<data_type>/part-NNN.<ext>`, and for a
/// delta `downloads/<tenantId>/<runId>/<data_type>/delta-<baseRunId>/{part,removed}-NNN.<ext>`
/// (two feeds of one tenant may have different bases). Parquet files go one
/// folder further down, `zstd/` or `snappy/`: the extension does not tell
/// the two apart, and two feeds of one tenant may ask for both.
pub fn download_key(
    tenant_id: &str,
    run: RunId,
    kind: ReportKind,
    base: Option<RunId>,
    file: FileKind,
    number: usize,
    encoding: Encoding,
) -> String {
    let delta = base.map(|base| format!("delta-{base}/")).unwrap_or_default();
    let columns = if encoding.format.is_text() { String::new() } else { format!("{}/", encoding.compression) };
    format!(
        "{DOWNLOADS_PREFIX}{tenant_id}/{run}/{}/{delta}{columns}{}-{number:03}.{}",
        kind.data_type(),
        file.stem(),
        encoding.extension()
    )
}

/// Delivers `jobs/email/` jobs and tests email connectors.
pub struct EmailDeliverer<S, L, M> {
    pub staging: S,
    pub signer: L,
    pub mailer: M,
    /// `SES_SENDER`.
    pub sender: String,
    /// The clock; tests pin it.
    pub now: fn() -> chrono::DateTime<chrono::Utc>,
}

fn recipients_of<'c>(connector_name: &str, connector: &'c Connector) -> Result<&'c [String], DeliveryError> {
    match connector {
        Connector::Email(email) => Ok(&email.recipients),
        other => Err(DeliveryError::InvalidConnector {
            connector: connector_name.to_owned(),
            reason: format!("type {} is not an email connector", other.kind()),
        }),
    }
}

impl<S: ObjectStore, L: LinkSigner, M: MailSender> EmailDeliverer<S, L, M> {
    /// The objects the links point at, each report's files checked against
    /// the run manifest (or the delta's): the staged files themselves, or
    /// converted copies.
    async fn linked_parts(
        &self,
        job: &DeliveryJob,
        manifest: &RunManifest,
    ) -> Result<Vec<(ReportSource, Vec<PartSummary>)>, DeliveryError> {
        let wanted = job.encoding();
        let mut reports = Vec::with_capacity(job.reports.len());
        for &kind in &job.reports {
            let source = ReportSource::resolve(&self.staging, job, manifest, kind).await?;
            let mut parts = Vec::with_capacity(source.files.len());
            for (number, file) in source.numbered() {
                if wanted == source.encoding {
                    verify_part(&self.staging, &file.part).await?;
                    parts.push(file.part.clone());
                    continue;
                }
                let target_key =
                    download_key(&job.tenant_id, job.run_id, kind, source.base_run_id, file.kind, number, wanted);
                let converted = transfer_part(
                    &self.staging,
                    &self.staging,
                    PartTransfer {
                        kind,
                        columns: file.kind.columns(),
                        source: &file.part,
                        source_encoding: source.encoding,
                        target_key: &target_key,
                        target_encoding: wanted,
                    },
                )
                .await?;
                parts.push(converted.summary);
            }
            reports.push((source, parts));
        }
        Ok(reports)
    }
}

impl<S: ObjectStore, L: LinkSigner, M: MailSender> Deliverer for EmailDeliverer<S, L, M> {
    fn kind(&self) -> JobKind {
        JobKind::Email
    }

    async fn deliver<P: PartLedger>(
        &self,
        job: &DeliveryJob,
        tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
        _ledger: &P,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let recipients = recipients_of(&job.connector, connector)?;
        let reports = self.linked_parts(job, manifest).await?;
        let sources: Vec<(String, u64)> =
            reports.iter().flat_map(|(_, parts)| parts.iter().map(|p| (p.key.clone(), p.bytes))).collect();
        let base_run_id = job.plan.base_run_id;
        // Whole seconds, as links are signed: a first attempt's links then
        // last exactly the TTL from the time the message states.
        let now = (self.now)();
        let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        // Links point at the tenant's own copies, which revocation deletes.
        let folder = link_copies::link_folder(&job.tenant_id, job.run_id, &job.feed_id);
        let copies = link_copies::prepare_link_copies(&self.staging, &folder, &sources, now).await?;
        let keys = copies.keys;
        let signed = self.signer.sign(&keys, copies.signed_at).await?;
        let mut urls = signed.urls.into_iter();
        let linked = reports
            .iter()
            .map(|(source, parts)| LinkedReport {
                kind: source.kind,
                rows: source.rows,
                parts: parts
                    .iter()
                    .zip(&source.files)
                    .map(|(p, file)| LinkedPart {
                        kind: file.kind,
                        url: urls.next().unwrap_or_default(),
                        rows: p.rows,
                        bytes: p.bytes,
                    })
                    .collect(),
            })
            .collect();
        let email_content = ReportEmail {
            tenant_id: &tenant.tenant_id,
            feed_id: &job.feed_id,
            run_id: job.run_id,
            encoding: job.encoding(),
            base_run_id,
            reports: linked,
            sent_at: now,
            links_expire_at: signed.expires_at,
            shortened_expiry: signed.shortened,
        };
        let message = email_content.message(&self.sender, recipients);
        let message_id = self.mailer.send(&message).await?;
        tracing::info!(%message_id, recipients = recipients.len(), links = keys.len(), expires_at = %signed.expires_at, "email sent");
        Ok(reports
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .map(|p| DeliveredObject::new(self.staging.describe(&p.key), p.bytes, p.sha256.clone()).with_rows(p.rows))
            .collect())
    }

    /// One short message saying it is a connection test (docs/design.md, "Connection tests").
    async fn test_connection(
        &self,
        request: &ConnectionTestRequest,
        tenant: &TenantConfig,
        connector: &Connector,
    ) -> ConnectionTestReport {
        let recipients = match recipients_of(&request.connector, connector) {
            Ok(recipients) => recipients,
            Err(error) => return ConnectionTestReport::failing("connector", error.to_string()),
        };
        let text = format!(
            "This is a connection test of the popularity reports delivery to tenant {tenant} (connector {connector}, \
             request {request_id}).\n\nNothing needs to be done: this address will receive the reports by email.\n",
            tenant = tenant.tenant_id,
            connector = request.connector,
            request_id = request.request_id,
        );
        let message = EmailMessage {
            from: self.sender.clone(),
            to: recipients.to_vec(),
            subject: format!("Popularity reports: connection test ({})", tenant.tenant_id),
            html: format!("<p>{}</p>", message::html_escape(&text).replace("\n\n", "</p><p>")),
            text,
        };
        let mut report = ConnectionTestReport::default();
        match self.mailer.send(&message).await {
            Ok(message_id) => {
                report.passed(
                    "ses:SendRawEmail",
                    format!("a test message was sent from {} to {} recipient(s)", self.sender, recipients.len()),
                );
                report.left(format!("one test email (message id {message_id}) to each recipient"));
            }
            Err(error) => report.failed("ses:SendRawEmail", error.to_string()),
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Compression, Format};

    #[test]
    fn download_keys_differ_for_every_encoding_two_feeds_may_ask_for() {
        let run: RunId = "20261119030000".parse().unwrap();
        let base: RunId = "20261116030000".parse().unwrap();
        let key = |format, compression, base| {
            let encoding = Encoding { format, compression };
            download_key("acme", run, ReportKind::Track, base, FileKind::Removed, 1, encoding)
        };
        assert_eq!(
            key(Format::Tsv, Compression::Gzip, Some(base)),
            "downloads/acme/20261119030000/track_popularity/delta-20261116030000/removed-001.tsv.gz"
        );
        assert_eq!(
            key(Format::Parquet, Compression::Snappy, None),
            "downloads/acme/20261119030000/track_popularity/snappy/removed-001.parquet"
        );
        let mut all = std::collections::BTreeSet::new();
        for format in Format::ALL {
            for &compression in format.compressions() {
                assert!(all.insert(key(format, compression, None)), "{format} {compression}");
            }
        }
        assert_eq!(all.len(), 8);
    }
}
