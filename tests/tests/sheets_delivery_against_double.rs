//! fanout and deliver-sheets against moto (staging, tenant secrets) and the
//! project's Sheets API v4 double (tests/src/sheets_double.rs: tabs with
//! sheetIds and grids, atomic batchUpdate, the 10M-cell limit, sharing,
//! injectable 429s, verified bearer tokens), through the real handler: the
//! first delivery creates the report tabs with the header and exactly the
//! staged top rows, grids exactly rows × 3, `_popularity` last; a customer's
//! own tab is untouched; a report tab that exists keeps its sheetId; a
//! smaller maxRows shrinks the grid; 429s are waited out; with a lowered
//! request size tabs go in several requests and arrive whole; a write
//! applied but answered with an error is not taken for a failure (the retry
//! is refused as a duplicate tab, and the tabs show it was applied); a
//! damaged part of any report stops the delivery before any write; a
//! spreadsheet that cannot fit is refused with nothing written; not shared
//! and deleted are named; the connection test leaves nothing; no key or
//! token is logged.

use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, pinned_now, publish_synthetic_run, run_id,
    staging_store, synthetic_items, unique_tenant_prefix,
};
use integration_tests::google_keys::TestServiceAccount;
use integration_tests::sheets_double::{SheetsDouble, TabSpec};
use integration_tests::{moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connection_probe::{ConnectionTestRequest, ConnectionTestResult};
use popularity_reports::delivery::connectors::sheets::{RetryPolicy, SheetsClient, SheetsDeliverer, SheetsIdentity};
use popularity_reports::delivery::probe_runner::run_connection_test;
use popularity_reports::delivery::{
    connection_test_key, deliver_job, parse_connection_test_key, parse_job_key, DeliverDeps, DeliveryOutcome,
    DeliveryStatus, JobDisposition, JobKind,
};
use popularity_reports::domain::{ReportKind, RunId};
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::{json, Value};

const ROWS: u64 = 2_500;
const PART_ROWS: u64 = 1_000;
const OUR_ACCOUNT: &str = "popularity-feeds@popularity-ops.iam.gserviceaccount.com";

struct Scene {
    admin: aws_config::SdkConfig,
    staging: S3Store,
    prefix: String,
    double: SheetsDouble,
    spreadsheet: String,
    key_json: String,
}

impl Scene {
    async fn new(hint: &str, tabs: &[TabSpec]) -> Scene {
        let admin = sdk_config(&moto_endpoint()).await;
        let staging = staging_store(&admin, &format!("sheets-{hint}")).await;
        publish_synthetic_run(&staging, run_id(), ROWS, PART_ROWS).await;
        let double = SheetsDouble::start();
        double.set_write_quota_per_minute(None);
        let ours = TestServiceAccount::generate(OUR_ACCOUNT);
        double.register(&ours);
        let spreadsheet = format!("1Sheet{}", unique_bucket_name(hint).replace('-', "_"));
        double.create_spreadsheet(&spreadsheet, tabs);
        double.share(&spreadsheet, OUR_ACCOUNT);
        Scene {
            admin,
            staging,
            prefix: unique_tenant_prefix(hint),
            double,
            spreadsheet,
            key_json: ours.key_json_string(),
        }
    }

    async fn onboard(&self, max_rows: u64, reports: &[&str]) {
        let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
            "connectors": {"sheet": {"type": "google-sheets", "maxRows": max_rows,
                "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{}/edit", self.spreadsheet)}},
            "feeds": [{"id": "top", "connector": "sheet", "reports": reports}]});
        let name = format!("{}acme", self.prefix);
        let client = secrets_manager_client(&self.admin);
        if client.describe_secret().secret_id(&name).send().await.is_ok() {
            client.put_secret_value().secret_id(&name).secret_string(secret.to_string()).send().await.unwrap();
        } else {
            create_raw_secret(&self.admin, &name, &secret.to_string()).await;
        }
    }

    fn tenants(&self) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), self.prefix.as_str()).unwrap()
    }

    fn deps(&self) -> DeliverDeps<S3Store, SecretsManagerTenants, SheetsDeliverer<S3Store>> {
        self.deps_with_requests_of(popularity_reports::delivery::connectors::sheets::MAX_REQUEST_BYTES)
    }

    fn deps_with_requests_of(
        &self,
        max_request_bytes: usize,
    ) -> DeliverDeps<S3Store, SecretsManagerTenants, SheetsDeliverer<S3Store>> {
        let identity = SheetsIdentity::from_key_file("test/our-google-key", &self.key_json).unwrap();
        let retry = RetryPolicy {
            first_backoff: std::time::Duration::from_millis(20),
            budget: std::time::Duration::from_secs(30),
        };
        let client = SheetsClient::new(identity, &self.double.endpoint(), 6_000, retry)
            .with_max_request_bytes(max_request_bytes);
        DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: SheetsDeliverer { staging: self.staging.clone(), clients: client.into(), now: pinned_now },
            now: pinned_now,
        }
    }

    async fn deliver(&self, run: RunId) -> Result<JobDisposition, String> {
        self.deliver_with(run, self.deps()).await
    }

    async fn deliver_with(
        &self,
        run: RunId,
        deps: DeliverDeps<S3Store, SecretsManagerTenants, SheetsDeliverer<S3Store>>,
    ) -> Result<JobDisposition, String> {
        let fanout = FanoutDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            own_buckets: vec![self.staging.bucket().to_owned()],
        };
        fan_out_run(&fanout, run, pinned_now()).await.unwrap();
        let parts = parse_job_key(&format!("jobs/sheets/{run}/acme/top.json")).unwrap();
        deliver_job(&deps, &parts, None).await.map(|r| r.disposition).map_err(|e| e.to_string())
    }

    async fn status(&self, run: RunId) -> DeliveryStatus {
        serde_json::from_slice(&self.staging.get(&format!("status/{run}/acme/top.json")).await.unwrap()).unwrap()
    }

    fn grid(&self, title: &str) -> Option<(i32, u32, u32)> {
        self.double
            .tabs(&self.spreadsheet)
            .into_iter()
            .find(|t| t.title == title)
            .map(|t| (t.sheet_id, t.row_count, t.column_count))
    }
}

/// Spreadsheet numbers are doubles: 1 and 1.0 are the same cell value.
fn as_cells(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| match cell.as_f64() {
                    Some(number) if cell.is_number() => json!(number),
                    _ => cell,
                })
                .collect()
        })
        .collect()
}

/// Panics at the first row where the tab differs from the expected rows.
fn assert_tab(actual: Vec<Vec<Value>>, expected: Vec<Vec<Value>>, what: &str) {
    let (actual, expected) = (as_cells(actual), as_cells(expected));
    if let Some(row) = (0..actual.len().max(expected.len())).find(|&i| actual.get(i) != expected.get(i)) {
        panic!(
            "{what}: row {row} is {:?}, expected {:?} ({} rows, expected {})",
            actual.get(row),
            expected.get(row),
            actual.len(),
            expected.len()
        );
    }
}

/// The staged top rows of a report as the sheet should show them.
fn expected_rows(kind: ReportKind, rows: u64) -> Vec<Vec<Value>> {
    let mut expected = vec![vec![json!(kind.id_field()), json!("searchRank"), json!("searchModifier")]];
    for item in synthetic_items(kind, ROWS).iter().take(rows as usize) {
        expected.push(vec![json!(item.id), json!(item.search_rank), json!(item.search_modifier())]);
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_delivery_writes_exact_tabs_keeps_the_customers_tab_and_writes_popularity_last() {
    let logs = capture_logs();
    let scene = Scene::new("first", &[TabSpec::new("Notes", 40, 5)]).await;
    scene.double.set_values(&scene.spreadsheet, "Notes", &[vec![json!("keep me"), json!(7)]]);
    scene.onboard(1_200, &["track", "artist"]).await;
    assert_eq!(scene.deliver(run_id()).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));

    for kind in [ReportKind::Track, ReportKind::Artist] {
        let (_, rows, columns) = scene.grid(kind.data_type()).expect("the report tab exists");
        assert_eq!((rows, columns), (1_201, 3), "{kind}: the grid is exactly rows x 3");
        assert_tab(
            scene.double.values(&scene.spreadsheet, kind.data_type()),
            expected_rows(kind, 1_200),
            kind.data_type(),
        );
    }
    assert!(scene.grid("product_popularity").is_none(), "only the feed's reports");
    assert_eq!(scene.grid("Notes"), Some((0, 40, 5)), "the customer's tab keeps its grid");
    assert_eq!(scene.double.values(&scene.spreadsheet, "Notes"), vec![vec![json!("keep me"), json!(7)]]);
    let status_tab = scene.double.values(&scene.spreadsheet, "_popularity");
    assert_eq!(status_tab[0], vec![json!("data_type"), json!("runId"), json!("rows"), json!("writtenAt")]);
    assert_eq!(status_tab[1][..3], [json!("track_popularity"), json!(run_id().to_string()), json!("1200")]);
    assert_eq!(scene.grid("_popularity").map(|(_, r, c)| (r, c)), Some((3, 4)));

    let writes: Vec<_> = scene.double.requests().into_iter().filter(|r| r.is_write).collect();
    let last = writes.last().unwrap();
    assert!(last.batch_kinds.iter().all(|k| k == "addSheet" || k == "updateCells"), "{last:?}");
    assert!(String::from_utf8_lossy(&last.body).contains("_popularity"), "the status tab is written last");
    assert!(writes.iter().all(|w| w.body_size <= 2_100_000), "each request at most ~2 MB");
    let first = &writes[0];
    assert_eq!(first.batch_kinds[..2], ["addSheet".to_owned(), "updateCells".to_owned()], "a tab and its rows at once");
    assert_eq!(scene.status(run_id()).await.objects.len(), 3, "two report tabs and _popularity");

    let logs_text = logs.text();
    assert!(!logs_text.contains("eyJ"), "a token reached the logs");
    let key: Value = serde_json::from_str(&scene.key_json).unwrap();
    assert_logs_hold_none_of(&logs, &[key["private_key"].as_str().unwrap().lines().nth(1).unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_report_tab_keeps_its_sheet_id_and_a_smaller_max_rows_shrinks_the_grid() {
    let existing = TabSpec::new("track_popularity", 5_000, 10).with_sheet_id(4242);
    let scene = Scene::new("resize", &[TabSpec::new("Sheet1", 10, 10), existing]).await;
    scene.onboard(2_000, &["track"]).await;
    assert_eq!(scene.deliver(run_id()).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert_eq!(scene.grid("track_popularity"), Some((4242, 2_001, 3)), "same sheetId, exact grid");

    // The next run, with maxRows lowered to 10: the grid shrinks, no blank rows remain.
    let next: RunId = "20261123030000".parse().unwrap();
    publish_synthetic_run(&scene.staging, next, ROWS, PART_ROWS).await;
    scene.onboard(10, &["track"]).await;
    assert_eq!(scene.deliver(next).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert_eq!(scene.grid("track_popularity"), Some((4242, 11, 3)));
    assert_tab(
        scene.double.values(&scene.spreadsheet, "track_popularity"),
        expected_rows(ReportKind::Track, 10),
        "shrunk",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_within_one_attempt() {
    let scene = Scene::new("throttled", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(ROWS, &["track"]).await;
    scene.double.fail_next(3, 429);
    assert_eq!(scene.deliver(run_id()).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert_tab(
        scene.double.values(&scene.spreadsheet, "track_popularity"),
        expected_rows(ReportKind::Track, ROWS),
        "all",
    );
    let statuses: Vec<u16> = scene.double.requests().iter().filter(|r| r.is_write).map(|r| r.status).collect();
    assert_eq!(&statuses[..3], [429, 429, 429]);
    assert!(statuses[3..].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(scene.status(run_id()).await.attempts.len(), 1, "waited out within one attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lowered_request_size_a_tab_goes_in_several_requests_and_arrives_whole() {
    let scene = Scene::new("small-requests", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(ROWS, &["track", "artist"]).await;
    let deps = scene.deps_with_requests_of(40_000);
    assert_eq!(
        scene.deliver_with(run_id(), deps).await.unwrap(),
        JobDisposition::Attempted(DeliveryOutcome::Delivered)
    );
    for kind in [ReportKind::Track, ReportKind::Artist] {
        assert_tab(
            scene.double.values(&scene.spreadsheet, kind.data_type()),
            expected_rows(kind, ROWS),
            kind.data_type(),
        );
    }
    let writes: Vec<u64> = scene.double.requests().iter().filter(|r| r.is_write).map(|r| r.body_size as u64).collect();
    // 2 x 2,501 rows of ~70 bytes in requests of at most 40,000 bytes.
    assert!(writes.len() >= 9, "several requests: {writes:?}");
    assert!(writes.iter().all(|bytes| *bytes <= 40_000), "each within the lowered limit: {writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_but_answered_with_an_error_is_not_taken_for_a_failure() {
    let scene = Scene::new("lost-answer", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(ROWS, &["track"]).await;
    // The first batchUpdate (which creates the tab) is applied, its answer lost.
    scene.double.lose_next_answers(1, 503);
    assert_eq!(scene.deliver(run_id()).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert_tab(
        scene.double.values(&scene.spreadsheet, "track_popularity"),
        expected_rows(ReportKind::Track, ROWS),
        "all",
    );
    let statuses: Vec<u16> = scene.double.requests().iter().filter(|r| r.is_write).map(|r| r.status).collect();
    assert_eq!(&statuses[..2], [503, 400], "the retry was refused as a duplicate tab: {statuses:?}");
    let status = scene.status(run_id()).await;
    assert_eq!((status.outcome, status.attempts.len()), (DeliveryOutcome::Delivered, 1));
    let tabs: Vec<String> = scene.double.tabs(&scene.spreadsheet).into_iter().map(|t| t.title).collect();
    assert_eq!(tabs.iter().filter(|t| *t == "track_popularity").count(), 1, "{tabs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_part_of_any_report_stops_the_delivery_before_anything_is_written() {
    let scene = Scene::new("damaged", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(ROWS, &["track", "artist"]).await;
    // The artist report's first part no longer matches the run manifest.
    let key = format!("reports/artist_popularity/{}/part-001.json", run_id());
    let mut body = scene.staging.get(&key).await.unwrap().to_vec();
    let digit = body.iter().position(u8::is_ascii_digit).unwrap();
    body[digit] = if body[digit] == b'9' { b'8' } else { body[digit] + 1 };
    scene.staging.put(&key, body.into(), "application/json").await.unwrap();
    assert_eq!(scene.deliver(run_id()).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Invalid));
    let error = scene.status(run_id()).await.last_error.unwrap();
    assert!(error.contains("does not match the run manifest"), "{error}");
    assert!(scene.double.requests().iter().all(|r| !r.is_write), "no tab of the run was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreadsheet_that_cannot_fit_is_refused_with_nothing_written() {
    // The customer's own tab already holds 9,999,000 cells.
    let scene = Scene::new("full", &[TabSpec::new("Big", 3_333, 3_000)]).await;
    scene.onboard(1_000, &["track"]).await;
    assert_eq!(scene.deliver(run_id()).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Invalid));
    let error = scene.status(run_id()).await.last_error.unwrap();
    assert!(error.contains("would need 10002011 cells") && error.contains("leaving 1000 available"), "{error}");
    assert!(scene.double.requests().iter().all(|r| !r.is_write), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreadsheet_not_shared_or_deleted_is_named_and_retried() {
    let scene = Scene::new("refused", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(10, &["track"]).await;
    scene.double.unshare(&scene.spreadsheet, OUR_ACCOUNT);
    let error = scene.deliver(run_id()).await.unwrap_err();
    assert!(error.contains("is not shared with") && error.contains(OUR_ACCOUNT), "{error}");
    assert_eq!(scene.status(run_id()).await.outcome, DeliveryOutcome::Failed, "the customer can share it: retried");

    scene.double.delete_spreadsheet(&scene.spreadsheet);
    let parts = parse_job_key(&format!("jobs/sheets/{}/acme/top.json", run_id())).unwrap();
    let error = deliver_job(&scene.deps(), &parts, None).await.unwrap_err().to_string();
    assert!(error.contains("was not found"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_opens_the_sheet_and_writes_without_leaving_anything() {
    let scene = Scene::new("probe", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(10, &["track"]).await;
    let before = scene.double.tabs(&scene.spreadsheet);
    let key = connection_test_key(JobKind::Sheets, "probe-1", "acme", "sheet");
    let request = ConnectionTestRequest {
        request_id: "probe-1".into(),
        tenant_id: "acme".into(),
        connector: "sheet".into(),
        requested_at: pinned_now(),
        secret_version_stage: None,
    };
    scene.staging.put(&key, serde_json::to_vec(&request).unwrap().into(), "application/json").await.unwrap();
    let outcome = run_connection_test(&scene.deps(), &parse_connection_test_key(&key).unwrap()).await.unwrap();
    let result: ConnectionTestResult =
        serde_json::from_slice(&scene.staging.get(&outcome.result_key).await.unwrap()).unwrap();
    assert!(result.ok, "{result:?}");
    assert_eq!(result.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["open", "write"]);
    assert!(result.left_behind.is_empty());
    assert_eq!(scene.double.tabs(&scene.spreadsheet), before, "nothing visible changed");

    scene.double.unshare(&scene.spreadsheet, OUR_ACCOUNT);
    let key = connection_test_key(JobKind::Sheets, "probe-2", "acme", "sheet");
    let request = ConnectionTestRequest { request_id: "probe-2".into(), ..request };
    scene.staging.put(&key, serde_json::to_vec(&request).unwrap().into(), "application/json").await.unwrap();
    let outcome = run_connection_test(&scene.deps(), &parse_connection_test_key(&key).unwrap()).await.unwrap();
    assert_eq!(outcome.ok, Some(false));
}

/// Answers every request on its own listener with a redirect to `target`;
/// returns its endpoint.
fn redirector(target: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = [0_u8; 8192];
            let _ = std::io::Read::read(&mut stream, &mut head);
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: {target}/v4/spreadsheets/elsewhere\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sheets_client_never_follows_a_redirect_with_our_token() {
    let scene = Scene::new("redirect", &[TabSpec::new("Sheet1", 10, 10)]).await;
    // Where the redirect points: counts every connection made to it.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}", elsewhere.local_addr().unwrap());
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    std::thread::spawn(move || {
        for stream in elsewhere.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let identity = SheetsIdentity::from_key_file("test/our-google-key", &scene.key_json).unwrap();
    let retry = RetryPolicy { first_backoff: std::time::Duration::from_millis(20), budget: std::time::Duration::ZERO };
    let client = SheetsClient::new(identity, &redirector(target), 6_000, retry);

    let error = client.tabs(&scene.spreadsheet).await.expect_err("a redirect is an error, not followed");
    assert!(error.to_string().contains("302"), "{error}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was sent where the redirect pointed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_spreadsheet_holds_the_job_no_longer_than_its_budget_and_is_left_to_a_re_drive() {
    let scene = Scene::new("stalled", &[TabSpec::new("Sheet1", 10, 10)]).await;
    scene.onboard(ROWS, &["track"]).await;
    // Google throttles every write and asks to wait 30 s each time: without
    // a budget the job would wait for minutes.
    scene.double.set_retry_after_secs(Some(30));
    scene.double.fail_next(1_000, 429);
    let identity = SheetsIdentity::from_key_file("test/our-google-key", &scene.key_json).unwrap();
    let retry =
        RetryPolicy { first_backoff: std::time::Duration::from_secs(5), budget: std::time::Duration::from_secs(600) };
    let client = SheetsClient::new(identity, &scene.double.endpoint(), 6_000, retry)
        .with_job_budget(std::time::Duration::from_secs(2));
    let deps = DeliverDeps {
        staging: scene.staging.clone(),
        tenants: scene.tenants(),
        deliverer: SheetsDeliverer { staging: scene.staging.clone(), clients: client.into(), now: pinned_now },
        now: pinned_now,
    };
    let started = std::time::Instant::now();
    // A transient failure: the invocation fails (Lambda, then the sweeper,
    // tries again later).
    let failure = scene.deliver_with(run_id(), deps).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "held the worker for {took:?}");
    assert!(failure.contains("time budget of 2 s") && failure.contains("re-drives"), "{failure}");
    let status = scene.status(run_id()).await;
    assert_eq!(status.outcome, DeliveryOutcome::Failed, "transient: re-driven later");
    assert!(status.last_error.unwrap().contains("time budget of 2 s"));
}
