//! The `deliver-email` function's delivery (DESIGN §7): one email per run
//! per feed, listing each report with its rows, size and presigned links.
//! Links point at the canonical `reports/…` parts, or, when the feed asks
//! for another format or compression, at converted copies written once to
//! `downloads/<tenantId>/<runId>/<data_type>/part-NNN.<ext>` in the
//! staging bucket (kept at least 8 days by the lifecycle rules).

use crate::delivery::{DeliveredObject, DeliveryJob, JobKind};
use crate::domain::{Encoding, ReportKind, RunId};
use crate::email::{LinkedPart, LinkedReport, MailSender, ReportEmail};
use crate::handlers::deliver::Deliverer;
use crate::links::LinkSigner;
use crate::manifest::RunManifest;
use crate::report_writer::PartSummary;
use crate::store::ObjectStore;
use crate::tenant::{Connector, TenantConfig};
use crate::transfer::{transfer_part, PartTransfer};

pub const DOWNLOADS_PREFIX: &str = "downloads/";

/// `downloads/<tenantId>/<runId>/<data_type>/part-NNN.<ext>`.
pub fn download_key(tenant_id: &str, run: RunId, kind: ReportKind, number: usize, encoding: Encoding) -> String {
    format!("{DOWNLOADS_PREFIX}{tenant_id}/{run}/{}/part-{number:03}.{}", kind.data_type(), encoding.extension())
}

/// Delivers `jobs/email/` jobs.
pub struct EmailDeliverer<S, L, M> {
    pub staging: S,
    pub signer: L,
    pub mailer: M,
    /// `SES_SENDER`.
    pub sender: String,
    /// The clock; tests pin it.
    pub now: fn() -> chrono::DateTime<chrono::Utc>,
}

impl<S: ObjectStore, L: LinkSigner, M: MailSender> EmailDeliverer<S, L, M> {
    /// The objects the links point at: the canonical parts, or converted copies.
    async fn linked_parts(
        &self,
        job: &DeliveryJob,
        manifest: &RunManifest,
    ) -> Result<Vec<(ReportKind, Vec<PartSummary>)>, String> {
        let canonical = Encoding { format: manifest.format, compression: manifest.compression };
        let wanted = Encoding { format: job.format, compression: job.compression };
        let mut reports = Vec::with_capacity(job.reports.len());
        for &kind in &job.reports {
            let report = manifest
                .report(kind)
                .ok_or_else(|| format!("the run manifest {} has no {} report", job.manifest_key, kind.data_type()))?;
            if wanted == canonical {
                reports.push((kind, report.parts.clone()));
                continue;
            }
            let mut parts = Vec::with_capacity(report.parts.len());
            for (index, source) in report.parts.iter().enumerate() {
                let target_key = download_key(&job.tenant_id, job.run_id, kind, index + 1, wanted);
                let converted = transfer_part(
                    &self.staging,
                    &self.staging,
                    PartTransfer {
                        kind,
                        source,
                        source_encoding: canonical,
                        target_key: &target_key,
                        target_encoding: wanted,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                parts.push(converted);
            }
            reports.push((kind, parts));
        }
        Ok(reports)
    }
}

impl<S: ObjectStore, L: LinkSigner, M: MailSender> Deliverer for EmailDeliverer<S, L, M> {
    fn kind(&self) -> JobKind {
        JobKind::Email
    }

    async fn deliver(
        &self,
        job: &DeliveryJob,
        tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
    ) -> Result<Vec<DeliveredObject>, String> {
        let Connector::Email(email) = connector else {
            return Err(format!(
                "connector {:?} of type {} is not an email connector",
                job.connector,
                connector.kind()
            ));
        };
        let reports = self.linked_parts(job, manifest).await?;
        let keys: Vec<String> = reports.iter().flat_map(|(_, parts)| parts.iter().map(|p| p.key.clone())).collect();
        let now = (self.now)();
        let signed = self.signer.sign(&keys, now).await?;
        let mut urls = signed.urls.into_iter();
        let linked = reports
            .iter()
            .map(|(kind, parts)| LinkedReport {
                kind: *kind,
                rows: parts.iter().map(|p| p.rows).sum(),
                parts: parts
                    .iter()
                    .map(|p| LinkedPart { url: urls.next().unwrap_or_default(), rows: p.rows, bytes: p.bytes })
                    .collect(),
            })
            .collect();
        let email_content = ReportEmail {
            tenant_id: &tenant.tenant_id,
            feed_id: &job.feed_id,
            run_id: job.run_id,
            encoding: Encoding { format: job.format, compression: job.compression },
            reports: linked,
            sent_at: now,
            links_expire_at: signed.expires_at,
            shortened_expiry: signed.shortened,
        };
        let message = email_content.message(&self.sender, &email.recipients);
        let message_id = self.mailer.send(&message).await?;
        tracing::info!(%message_id, recipients = email.recipients.len(), links = keys.len(), expires_at = %signed.expires_at, "email sent");
        Ok(reports
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .map(|p| DeliveredObject { key: self.staging.describe(&p.key), bytes: p.bytes, sha256: p.sha256.clone() })
            .collect())
    }
}
