//! The `deliver-sheets` deliverer: a job's reports, each read from staging
//! up to the connector's `maxRows`, planned into tabs and written, the
//! `_popularity` tab last; and the probe of a google-sheets connector.
//! [`SheetsClients`] says who writes: with keyless Google, each tenant's own
//! identity (a client per tenant, kept across a warm function's
//! invocations, each paced to the per-user quota); otherwise, or for a
//! spreadsheet still shared only with it during the transition, our one
//! common account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::connector_registry::JobKind;
use crate::delivery::connection_probe::{ConnectionTestReport, ConnectionTestRequest};
use crate::delivery::deliverer::Deliverer;
use crate::delivery::error::{ConnectorFailure, DeliveryError};
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::PartLedger;
use crate::delivery::status::DeliveredObject;
use crate::domain::{Encoding, ReportKind};
use crate::manifest::{run_manifest_key, RunManifest};
use crate::store::ObjectStore;
use crate::tenant::{Connector, SheetsConnector, TenantConfig};
use crate::transfer::read_top_items;

use super::client::{SheetsClient, SheetsError, SheetsIdentity, SHEETS_SCOPE};
use super::tab_plan::{new_sheet_id, plan_tabs, STATUS_TAB};
use super::tab_writer::{write_tab, Batches, RowsSource};
use crate::google_identity::TenantIdentities;

/// Makes the client of one identity (endpoint, pacing, budgets).
pub type MakeSheetsClient = Box<dyn Fn(SheetsIdentity) -> SheetsClient + Send + Sync>;

/// Who writes a tenant's spreadsheets.
pub struct SheetsClients {
    /// Our one common account (the older keyed path).
    common: Option<Arc<SheetsClient>>,
    keyless: Option<KeylessSheets>,
}

struct KeylessSheets {
    identities: TenantIdentities,
    make: MakeSheetsClient,
    clients: Mutex<HashMap<String, Arc<SheetsClient>>>,
}

impl SheetsClients {
    /// No Google identity at all: every job fails, saying so.
    pub fn none() -> SheetsClients {
        SheetsClients { common: None, keyless: None }
    }

    /// Every spreadsheet written as our common account.
    pub fn common(client: SheetsClient) -> SheetsClients {
        SheetsClients { common: Some(Arc::new(client)), keyless: None }
    }

    /// Each tenant's spreadsheets written as its own identity.
    pub fn keyless(identities: TenantIdentities, make: MakeSheetsClient) -> SheetsClients {
        SheetsClients {
            common: None,
            keyless: Some(KeylessSheets { identities, make, clients: Mutex::new(HashMap::new()) }),
        }
    }

    /// During the move to keyless: a spreadsheet that refuses the tenant's
    /// identity is tried as `client` (our common account) too.
    pub fn with_common_fallback(mut self, client: SheetsClient) -> SheetsClients {
        self.common = Some(Arc::new(client));
        self
    }

    /// The address `tenant_id`'s spreadsheets are shared with.
    pub fn address(&self, tenant_id: &str) -> Option<String> {
        match (&self.keyless, &self.common) {
            (Some(keyless), _) => Some(keyless.identities.address(tenant_id)),
            (None, Some(common)) => Some(common.identity().client_email().to_owned()),
            (None, None) => None,
        }
    }

    /// The client to write as, and the common one to fall back on.
    fn for_tenant(
        &self,
        tenant_id: &str,
    ) -> Result<(Arc<SheetsClient>, Option<Arc<SheetsClient>>), SheetsNotConfigured> {
        let Some(keyless) = &self.keyless else {
            return self.common.clone().map(|common| (common, None)).ok_or(SheetsNotConfigured);
        };
        let mut clients = keyless.clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = clients
            .entry(tenant_id.to_owned())
            .or_insert_with(|| {
                let identity = SheetsIdentity::tenant(
                    keyless.identities.address(tenant_id),
                    keyless.identities.credentials(tenant_id, &[SHEETS_SCOPE]),
                );
                Arc::new((keyless.make)(identity))
            })
            .clone();
        Ok((client, self.common.clone()))
    }
}

impl From<SheetsClient> for SheetsClients {
    fn from(client: SheetsClient) -> SheetsClients {
        SheetsClients::common(client)
    }
}

/// A deployment with neither keyless Google nor our common account.
#[derive(Debug, thiserror::Error)]
#[error(
    "Google Sheets is not configured in this deployment: neither keyless Google (GOOGLE_EXTERNAL_ACCOUNT_CONFIG \
     and GOOGLE_PROJECT_ID) nor our common account (GOOGLE_SERVICE_ACCOUNT_SECRET) is set (our side to fix)"
)]
pub struct SheetsNotConfigured;

/// Whether `error` is a spreadsheet refusing the identity that wrote, or
/// that identity unusable (a tenant not yet given one): what the common
/// account may still do during the move to keyless.
fn is_not_shared(error: &DeliveryError) -> bool {
    matches!(error, DeliveryError::Connector(failure)
        if matches!(failure.source_error().downcast_ref::<SheetsError>(),
            Some(SheetsError::NotShared { .. } | SheetsError::Unauthorized { .. })))
}

/// Delivers `jobs/sheets/` jobs and tests google-sheets connectors.
pub struct SheetsDeliverer<S> {
    pub staging: S,
    pub clients: SheetsClients,
    /// The clock for the `_popularity` tab; tests pin it.
    pub now: fn() -> chrono::DateTime<chrono::Utc>,
}

/// A job that did not finish within its time budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "spreadsheet {spreadsheet} was not written within this job's time budget of {seconds} s (Google slow or \
     throttling it); the job stops here so other tenants' jobs go first, and the sweeper re-drives it later"
)]
pub struct OverBudget {
    spreadsheet: String,
    seconds: f64,
}

fn sheets_connector<'c>(name: &str, connector: &'c Connector) -> Result<&'c SheetsConnector, DeliveryError> {
    match connector {
        Connector::GoogleSheets(sheet) => Ok(sheet),
        other => Err(DeliveryError::InvalidConnector {
            connector: name.to_owned(),
            reason: format!("type {} is not a google-sheets connector", other.kind()),
        }),
    }
}

impl<S: ObjectStore> SheetsDeliverer<S> {
    async fn write(
        &self,
        client: &SheetsClient,
        job: &DeliveryJob,
        sheet: &SheetsConnector,
        manifest: &RunManifest,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let spreadsheet = sheet.spreadsheet_id.as_str();
        // Every report's rows are read and checked against the run manifest
        // before anything is written, so a broken part never leaves some
        // tabs of the run and not others. At most 10M cells: ~3.3M rows.
        let canonical = Encoding { format: manifest.format, compression: manifest.compression };
        let mut reports = Vec::with_capacity(job.reports.len());
        for &kind in &job.reports {
            let report = manifest.report(kind).ok_or_else(|| DeliveryError::MissingReport {
                location: self.staging.describe(&run_manifest_key(job.run_id)),
                data_type: kind.data_type(),
            })?;
            let rows = report.rows.min(sheet.max_rows);
            let items = read_top_items(&self.staging, &report.parts, canonical, kind, rows).await?;
            reports.push((kind, rows, items));
        }
        let tabs = client.tabs(spreadsheet).await?;
        let sizes: Vec<(ReportKind, u64)> = reports.iter().map(|(kind, rows, _)| (*kind, *rows)).collect();
        let plan = plan_tabs(&tabs, &sizes, reports.len() as u64 + 1)?;
        let mut batches = Batches {
            client,
            spreadsheet,
            limit: client.max_request_bytes,
            pending: Vec::new(),
            bytes: 0,
            sent: 0,
            adds: Vec::new(),
        };
        let mut delivered = Vec::new();
        for tab in plan.iter().filter(|tab| tab.title != STATUS_TAB) {
            let (kind, _, items) = reports
                .iter()
                .find(|(kind, ..)| kind.data_type() == tab.title)
                .expect("every planned report tab is a report");
            let header = [kind.id_field(), "searchRank", "searchModifier"];
            let written = write_tab(&mut batches, tab, &header, RowsSource::Items(items)).await?;
            delivered.push(
                DeliveredObject::new(
                    format!("{}#{}!A1:C{}", sheet.spreadsheet_url, tab.title, tab.rows),
                    written.bytes,
                    written.sha256,
                )
                .with_rows(tab.rows.saturating_sub(1)),
            );
        }
        batches.flush().await?;
        let written_at = (self.now)().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status_rows: Vec<Vec<String>> = reports
            .iter()
            .map(|(kind, rows, _)| {
                vec![kind.data_type().to_owned(), job.run_id.to_string(), rows.to_string(), written_at.clone()]
            })
            .collect();
        let status_tab = plan.last().expect("the status tab is planned");
        let header = ["data_type", "runId", "rows", "writtenAt"];
        let written = write_tab(&mut batches, status_tab, &header, RowsSource::Text(&status_rows)).await?;
        batches.flush().await?;
        delivered.push(DeliveredObject::new(
            format!("{}#{STATUS_TAB}!A1:D{}", sheet.spreadsheet_url, status_tab.rows),
            written.bytes,
            written.sha256,
        ));
        info!(spreadsheet, requests = batches.sent, tabs = plan.len(), "sheets delivered");
        Ok(delivered)
    }
}

impl<S: ObjectStore> Deliverer for SheetsDeliverer<S> {
    fn kind(&self) -> JobKind {
        JobKind::Sheets
    }

    async fn deliver<L: PartLedger>(
        &self,
        job: &DeliveryJob,
        _tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
        _ledger: &L,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let sheet = sheets_connector(&job.connector, connector)?;
        let (client, common) = self
            .clients
            .for_tenant(&job.tenant_id)
            .map_err(|missing| DeliveryError::Connector(ConnectorFailure::permanent(missing)))?;
        let budget = client.job_budget();
        let written = async {
            match (self.write(&client, job, sheet, manifest).await, common) {
                (Err(error), Some(common)) if is_not_shared(&error) => {
                    warn!(
                        spreadsheet = %sheet.spreadsheet_id,
                        tenant = %job.tenant_id,
                        shared_with = %common.identity().client_email(),
                        share_with = %client.identity().client_email(),
                        "the spreadsheet refuses the tenant's own identity; writing as our common account until \
                         the customer shares it with the tenant's address"
                    );
                    self.write(&common, job, sheet, manifest).await
                }
                (written, _) => written,
            }
        };
        match tokio::time::timeout(budget, written).await {
            Ok(written) => written,
            Err(_) => Err(DeliveryError::Connector(ConnectorFailure::transient(OverBudget {
                spreadsheet: sheet.spreadsheet_id.clone(),
                seconds: budget.as_secs_f64(),
            }))),
        }
    }

    /// Opens the spreadsheet, then proves write access without leaving
    /// anything visible: one batchUpdate that adds a tab and deletes it.
    async fn test_connection(
        &self,
        request: &ConnectionTestRequest,
        _tenant: &TenantConfig,
        connector: &Connector,
    ) -> ConnectionTestReport {
        let sheet = match sheets_connector(&request.connector, connector) {
            Ok(sheet) => sheet,
            Err(error) => return ConnectionTestReport::failing("connector", error.to_string()),
        };
        let mut report = ConnectionTestReport::default();
        let (mut client, common) = match self.clients.for_tenant(&request.tenant_id) {
            Ok(clients) => clients,
            Err(missing) => return ConnectionTestReport::failing("identity", missing.to_string()),
        };
        let tabs = match client.tabs(&sheet.spreadsheet_id).await {
            Ok(tabs) => {
                report.passed("open", format!("{} opened ({} tabs)", sheet.spreadsheet_url, tabs.len()));
                tabs
            }
            Err(error @ (SheetsError::NotShared { .. } | SheetsError::Unauthorized { .. })) => {
                let opened_as_common = match &common {
                    Some(common) => common.tabs(&sheet.spreadsheet_id).await.ok().map(|tabs| (common, tabs)),
                    None => None,
                };
                let Some((common, tabs)) = opened_as_common else {
                    report.failed("open", error.to_string());
                    return report;
                };
                report.failed(
                    "tenant identity",
                    format!(
                        "the spreadsheet is shared with our common address {} but not with this tenant's own, {}: \
                         share it with {} as Editor (the common address stops being used later)",
                        common.identity().client_email(),
                        client.identity().client_email(),
                        client.identity().client_email()
                    ),
                );
                report.passed(
                    "open",
                    format!("{} opened as the common address ({} tabs)", sheet.spreadsheet_url, tabs.len()),
                );
                client = Arc::clone(common);
                tabs
            }
            Err(error) => {
                report.failed("open", error.to_string());
                return report;
            }
        };
        let title = format!("_popularity_test_{}", request.request_id);
        let taken: Vec<i64> = tabs.iter().map(|t| t.sheet_id).collect();
        let probe_id = new_sheet_id(&title, &taken);
        let requests = [
            serde_json::json!({"addSheet": {"properties": {"sheetId": probe_id, "title": title,
                "gridProperties": {"rowCount": 1, "columnCount": 1}}}})
            .to_string(),
            serde_json::json!({"deleteSheet": {"sheetId": probe_id}}).to_string(),
        ];
        match client.batch_update(&sheet.spreadsheet_id, &requests).await {
            Ok(_) => report.passed(
                "write",
                format!(
                    "a tab was added and deleted in one batchUpdate as {}; nothing is left",
                    client.identity().client_email()
                ),
            ),
            Err(error) => report.failed("write", error.to_string()),
        }
        report
    }
}
