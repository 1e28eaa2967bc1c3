//! The web console in a real browser: Debian's headless Chromium, driven
//! through chromedriver (WebDriver, with the `fantoccini` client), against
//! the console's router served on 127.0.0.1 over moto's Cognito, Secrets
//! Manager and S3. A customer signs in, adds an `s3-keys` connector whose
//! connection test passes, adds a feed, and sees a run delivered on the
//! dashboard; a delivery that fails because their bucket is gone shows its
//! cause, whose move it is and the fix, and its Retry button delivers it
//! once the bucket is back; an invited user chooses a new password at first
//! sign-in. No credential appears in any page, screenshot or log line.
//!
//! Connection tests and jobs run in this process, by the real S3 deliverer,
//! as `popularity console` runs them (cli/src/console_command.rs).
//!
//! Needs `MOTO_ENDPOINT`, and `chromium` and `chromedriver` (Debian's
//! packages `chromium` and `chromium-driver`; `CHROMIUM` and `CHROMEDRIVER`
//! name other paths). scripts/test.sh installs them when missing; where that
//! is impossible it sets `BROWSER_TEST_SKIP` to the reason, and this test
//! then skips, printing it. Without that variable a missing browser fails
//! the test.
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/console-screenshots/`; with
//! `UPDATE_SCREENSHOTS=1` they also replace `docs/console-*.png`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_cognitoidentityprovider::types::{AttributeType, MessageActionType};
use chrono::{DateTime, Duration as TimeDelta, TimeZone, Timelike, Utc};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::customer::{account_config, create_delivery_user, keys_under};
use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, publish_synthetic_run, staging_store,
    unique_tenant_prefix,
};
use integration_tests::{moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::config::ConsoleConfig;
use popularity_reports::console::aws::aws_app;
use popularity_reports::console::dispatch::StagingEvents;
use popularity_reports::console::routes::router;
use popularity_reports::console::users::{create_user_pool, invite, Invitation};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::probe_runner::run_connection_test;
use popularity_reports::delivery::{deliver_job, parse_deliverer_key, DeliverDeps, DelivererKey, JobKind, JOBS_PREFIX};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use sha2::{Digest, Sha256};

const TENANT: &str = "acme-records";
const EMAIL: &str = "data-team@acme-records.example";
const PASSWORD: &str = "Console-Test-2026!";
const INVITED_EMAIL: &str = "new-analyst@acme-records.example";
const TEMPORARY_PASSWORD: &str = "Temporary-Pass-1!";
const NEW_PASSWORD: &str = "Chosen-Pass-2026!";
/// WebDriver's code for the Enter key.
const ENTER: &str = "\u{E007}";
/// How long the page may take to show what a step expects: a connection
/// test or a delivery runs inside the request.
const PAGE_WAIT: Duration = Duration::from_secs(60);

type Deps = DeliverDeps<S3Store, SecretsManagerTenants, S3Deliverer<S3Store>>;

/// What S3 notifications do in AWS: a connection-test request or a job
/// written by the console starts the S3 deliverer, here in this process.
struct InProcessS3Deliverer(Deps);

impl StagingEvents for InProcessS3Deliverer {
    async fn written(&self, kind: JobKind, key: &str) {
        assert_eq!(kind, JobKind::S3, "this test has only s3 connectors");
        match parse_deliverer_key(key).expect("the console writes deliverer keys") {
            DelivererKey::ConnectionTest(parts) => {
                if let Err(error) = run_connection_test(&self.0, &parts).await {
                    tracing::warn!(%key, %error, "the connection test failed to run");
                }
            }
            DelivererKey::Job(parts) => {
                if let Err(error) = deliver_job(&self.0, &parts, None).await {
                    tracing::warn!(%key, %error, "the job failed");
                }
            }
        }
    }
}

fn s3_deps(admin: &SdkConfig, staging: &S3Store, prefix: &str) -> Deps {
    DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap(),
        deliverer: S3Deliverer {
            staging: staging.clone(),
            destinations: S3Destinations::new(admin.clone(), vec![staging.bucket().to_owned()]),
        },
        now: Utc::now,
    }
}

// ----------------------------------------------------------------- browser

/// chromedriver, stopped when dropped, and a WebDriver session in it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn binary(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Written to the real stderr, past the test harness's capture: a skip
/// must be seen.
fn say_loudly(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n{text}\n");
}

/// chromium and chromedriver, or `None` (printed) when `BROWSER_TEST_SKIP`
/// says why they cannot be installed here.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = binary("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> =
        [&chromium, &chromedriver].into_iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    if missing.is_empty() {
        return Some((chromium, chromedriver));
    }
    match std::env::var("BROWSER_TEST_SKIP") {
        Ok(reason) if !reason.trim().is_empty() => {
            say_loudly(&format!(
                "SKIPPED console_in_browser: {} missing, and {}",
                missing.join(" and "),
                reason.trim()
            ));
            None
        }
        _ => panic!(
            "the browser test needs {}: install Debian's chromium and chromium-driver (apt-get install chromium \
             chromium-driver; scripts/test.sh does), set CHROMIUM and CHROMEDRIVER to their paths, or set \
             BROWSER_TEST_SKIP=<why they cannot be installed> to skip it",
            missing.join(" and ")
        ),
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_browser(chromium: &Path, chromedriver: &Path) -> Browser {
    let port = free_port();
    let profile = tempfile::tempdir().unwrap();
    let driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", profile.path().join("chromedriver.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {address} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The flags known to work here: no sandbox (root), and none of
    // Chromium's own traffic to Google (this machine reaches only loopback).
    let args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--force-device-scale-factor=1".to_owned(),
        "--window-size=1280,1000".to_owned(),
        "--lang=en-US".to_owned(),
        format!("--user-data-dir={}", profile.path().join("profile").display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({"binary": chromium.display().to_string(), "args": args}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://{address}"))
        .await
        .unwrap_or_else(|e| panic!("a WebDriver session in {}: {e}", chromium.display()));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    Browser { client, driver, _profile: profile, shots }
}

impl Browser {
    async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(PAGE_WAIT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no {css} on the page within {PAGE_WAIT:?}: {e}\n{}", self.text().await),
        }
    }

    /// The text the page shows.
    async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until `css` shows a text containing `expected`; returns it.
    async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(expected) {
                        return text;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!("{css} did not show {expected:?} within {PAGE_WAIT:?}; the page shows:\n{}", self.text().await);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn click_link(&self, text: &str) {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("no link {text:?}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// The page's HTML must hold none of `secrets`.
    async fn assert_page_holds_none_of(&self, secrets: &[&str], step: &str) {
        let source = self.client.source().await.unwrap();
        for secret in secrets {
            assert!(!source.contains(secret), "a credential appears in the page after {step}");
        }
    }

    /// Every visible form control and button has a name a screen reader
    /// reads: a `<label for>`, a wrapping `<label>`, `aria-label` or
    /// `aria-labelledby` (buttons: their text), and can be reached with the
    /// keyboard (no negative `tabindex`).
    async fn assert_every_control_labelled(&self, step: &str) {
        let unlabelled: serde_json::Value = self
            .client
            .execute(
                r#"
                const named = (el) => {
                    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return true;
                    if (el.tagName === 'BUTTON') return el.textContent.trim() !== '';
                    if (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) return true;
                    return el.closest('label') !== null;
                };
                const bad = [];
                for (const el of document.querySelectorAll('input, select, textarea, button')) {
                    if (el.type === 'hidden' || el.offsetParent === null) continue;
                    const what = `${el.tagName.toLowerCase()}[name=${el.name || ''}][id=${el.id || ''}]`;
                    if (!named(el)) bad.push(`${what} has no label`);
                    if (el.tabIndex < 0) bad.push(`${what} is out of the tab order`);
                }
                return bad;"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, serde_json::json!([]), "unlabelled or unreachable controls after {step}");
    }

    /// Presses a key in the focused element (WebDriver key codes: Enter is
    /// U+E007).
    async fn press(&self, css: &str, key: &str) {
        self.find(css).await.send_keys(key).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let path = self.shots.join(format!("console-{name}.png"));
        std::fs::write(&path, &png).unwrap();
        if std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs").join(format!("console-{name}.png"));
            std::fs::write(&docs, &png).unwrap();
        }
    }
}

// ----------------------------------------------------------------- the world

/// Today's run at 03:00 UTC (yesterday's before then) and the one three
/// days before it, so that the dashboard shows times near now.
fn recent_runs() -> (RunId, RunId) {
    let now = Utc::now() - TimeDelta::hours(1);
    let day = now.date_naive().and_hms_opt(3, 0, 0).unwrap();
    let mut latest: DateTime<Utc> = Utc.from_utc_datetime(&day);
    if latest > now {
        latest -= TimeDelta::days(1);
    }
    assert_eq!(latest.minute(), 0);
    (RunId::from_time(latest - TimeDelta::days(3)), RunId::from_time(latest))
}

fn fingerprint(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))[..12].to_owned()
}

async fn fan_out_and_deliver(admin: &SdkConfig, staging: &S3Store, prefix: &str, run: RunId) {
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap(),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let response = fan_out_run(&fanout, run, Utc::now()).await.expect("fanout");
    assert_eq!(response.jobs_created, 1, "one feed, one job: {response:?}");
    // As `popularity deliver RUN_ID` does: every job of the run, in key order.
    let deps = s3_deps(admin, staging, prefix);
    let jobs = staging.list(&format!("{JOBS_PREFIX}s3/{run}/")).await.unwrap();
    assert_eq!(jobs.len(), 1);
    for job in jobs {
        let Ok(DelivererKey::Job(parts)) = parse_deliverer_key(&job.key) else { panic!("{} is no job", job.key) };
        let _ = deliver_job(&deps, &parts, None).await;
    }
}

async fn empty_and_delete_bucket(account: &SdkConfig, bucket: &str) {
    let s3 = s3_client(account);
    for key in keys_under(account, bucket, "").await {
        s3.delete_object().bucket(bucket).key(&key).send().await.unwrap();
    }
    s3.delete_bucket().bucket(bucket).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_connects_their_bucket_adds_a_feed_and_sees_it_delivered_in_the_browser() {
    let logs = capture_logs();
    let Some((chromium, chromedriver)) = browser_binaries() else { return };
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;

    // Our side: a staging bucket with a published run, the tenant's secret
    // (no connectors or feeds yet), a user pool with the customer's users.
    let (run1, run2) = recent_runs();
    let staging = staging_store(&admin, "console-ui-staging").await;
    publish_synthetic_run(&staging, run1, 300, 100).await;
    let prefix = unique_tenant_prefix("console-ui");
    let secret = serde_json::json!({"schemaVersion": 1, "tenantId": TENANT, "plan": "standard", "enabled": true,
        "connectors": {}, "feeds": []});
    create_raw_secret(&admin, &format!("{prefix}{TENANT}"), &secret.to_string()).await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&admin);
    let pool = create_user_pool(&cognito, &unique_bucket_name("console-ui")).await.unwrap();
    let invitation = Invitation { email: EMAIL, tenant_id: Some(TENANT), operator: false, password: Some(PASSWORD) };
    invite(&cognito, &pool.user_pool_id, &invitation).await.unwrap();
    // An invited user as Cognito's mail leaves them: a temporary password.
    cognito
        .admin_create_user()
        .user_pool_id(&pool.user_pool_id)
        .username(INVITED_EMAIL)
        .temporary_password(TEMPORARY_PASSWORD)
        .message_action(MessageActionType::Suppress)
        .user_attributes(AttributeType::builder().name("email").value(INVITED_EMAIL).build().unwrap())
        .user_attributes(AttributeType::builder().name("custom:tenantId").value(TENANT).build().unwrap())
        .send()
        .await
        .unwrap();

    // The customer's side: account 333333333333, a bucket, an IAM user
    // with the guide's policy and an access key.
    let account = account_config(&admin, "333333333333").await;
    let bucket = unique_bucket_name("console-ui-customer");
    s3_client(&account).create_bucket().bucket(&bucket).send().await.unwrap();
    let (access_key_id, secret_access_key) =
        create_delivery_user(&account, &unique_bucket_name("console-ui-user"), &bucket, true).await;
    let credentials = [access_key_id.as_str(), secret_access_key.as_str(), PASSWORD, TEMPORARY_PASSWORD, NEW_PASSWORD];

    // The console: the router over its AWS adapters, on a loopback port.
    let variables: HashMap<&str, String> = HashMap::from([
        ("STAGING_BUCKET", staging.bucket().to_owned()),
        ("TENANT_SECRET_PREFIX", prefix.clone()),
        ("COGNITO_USER_POOL_ID", pool.user_pool_id.clone()),
        ("COGNITO_CLIENT_ID", pool.client_id.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("COGNITO_JWKS_URL", format!("{endpoint}/{}/.well-known/jwks.json", pool.user_pool_id)),
        ("DELIVERY_PRINCIPAL_ARN", "arn:aws:iam::123456789012:role/popularity-reports-deliver-s3".to_owned()),
        ("CONNECTION_TEST_WAIT_SECONDS", "28".to_owned()),
    ]);
    let config = ConsoleConfig::from_lookup(|name| variables.get(name).cloned()).unwrap();
    let app = aws_app(&admin, &config, InProcessS3Deliverer(s3_deps(&admin, &staging, &prefix))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(app)).await.unwrap() });

    let browser = start_browser(&chromium, &chromedriver).await;
    let page = &browser;

    // Sign in.
    page.client.goto(&console).await.unwrap();
    page.find("#sign-in-form").await;
    page.assert_every_control_labelled("loading the sign-in page").await;
    page.fill("#field-email", EMAIL).await;
    page.screenshot("sign-in").await;
    page.fill("#field-password", "not-the-password").await;
    page.click("#sign-in").await;
    page.wait_for_text(".form-problem", "email address or password is wrong").await;
    // With the keyboard only: Enter in the password field submits.
    page.fill("#field-password", PASSWORD).await;
    page.press("#field-password", ENTER).await;
    page.wait_for_text("main h1", "Dashboard").await;
    assert_eq!(page.find("#current-tenant").await.text().await.unwrap(), TENANT);
    page.wait_for_text("main", "No feeds yet").await;
    let stored_token: serde_json::Value = page
        .client
        .execute(
            "return [sessionStorage.getItem('popularity-console.idToken') !== null, localStorage.length, document.cookie];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored_token, serde_json::json!([true, 0, ""]), "the token is in sessionStorage only");

    // A connector: a field the API refuses is named next to that field;
    // then it is saved once its real connection test passed.
    page.click_link("Connectors").await;
    page.wait_for_text("main h1", "Connectors").await;
    page.click_link("Amazon S3 — access keys").await;
    page.wait_for_text("main h1", "New Amazon S3 — access keys connector").await;
    page.fill("#field-name", "lake").await;
    page.fill("#field-bucketArn", &format!("arn:aws:s3:::{bucket}")).await;
    page.fill("#field-prefix", "popularity/").await;
    let policy = page.wait_for_text("#setup-userPolicy", &format!("arn:aws:s3:::{bucket}/popularity/*")).await;
    assert!(policy.contains("s3:PutObject"), "{policy}");
    page.assert_every_control_labelled("filling the connector form").await;
    page.screenshot("connector-form").await;
    page.fill("#field-accessKeyId", &access_key_id).await;
    page.fill("#field-secretAccessKey", &secret_access_key).await;
    page.click("#save-connector").await;
    let region_error = page.wait_for_text("[data-field=\"region\"] .field-error", "").await;
    assert!(!region_error.is_empty(), "the missing region is named next to its field");
    assert_eq!(page.find("#field-region").await.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    page.fill("#field-region", "us-east-1").await;
    page.click("#save-connector").await;
    page.wait_for_text("[role=status]", "Connector lake passed its connection test and is saved").await;
    let card = page.wait_for_text("article[data-connector=\"lake\"]", "Secret access key").await;
    assert!(card.contains(&format!("fingerprint {}", fingerprint(&secret_access_key))), "{card}");
    assert!(card.contains(&format!("fingerprint {}", fingerprint(&access_key_id))), "{card}");
    page.assert_page_holds_none_of(&credentials, "saving the connector").await;
    page.assert_every_control_labelled("saving the connector").await;
    // The Test button, pressed with Enter.
    page.press("button.test-connector[data-connector=\"lake\"]", ENTER).await;
    let result =
        page.wait_for_text("article[data-connector=\"lake\"] .test-output", "Connection test of lake passed").await;
    assert!(result.contains("Passed") && !result.contains("Failed"), "{result}");
    page.screenshot("connectors").await;

    // Editing without typing the keys again keeps them.
    page.click("article[data-connector=\"lake\"] a[href=\"#/connectors/lake\"]").await;
    page.wait_for_text("main h1", "Connector lake").await;
    let stored = page.find("#field-secretAccessKey-state").await.text().await.unwrap();
    assert!(stored.contains(&fingerprint(&secret_access_key)), "{stored}");
    assert_eq!(page.find("#field-secretAccessKey").await.prop("value").await.unwrap().as_deref(), Some(""));
    page.fill("#field-prefix", "reports/").await;
    page.click("#save-connector").await;
    let card = page.wait_for_text("article[data-connector=\"lake\"]", "s3://").await;
    assert!(card.contains(&format!("s3://{bucket}/reports/")), "{card}");
    assert!(card.contains(&format!("fingerprint {}", fingerprint(&secret_access_key))), "the key was kept: {card}");

    // A feed: an interval out of bounds is named next to its field.
    page.click_link("Feeds").await;
    page.click("#new-feed").await;
    page.fill("#field-id", "daily-tracks").await;
    for report in ["artist", "product"] {
        page.click(&format!("input[name=\"reports\"][value=\"{report}\"]")).await;
    }
    page.find("#field-format").await.select_by_value("tsv").await.unwrap();
    page.find("#field-compression").await.select_by_value("gzip").await.unwrap();
    page.assert_every_control_labelled("opening the feed form").await;
    page.fill("#field-intervalSeconds", "3599").await;
    page.click("#save-feed").await;
    page.wait_for_text("[data-field=\"intervalSeconds\"] .field-error", "3600").await;
    page.fill("#field-intervalSeconds", "3600").await;
    page.click("#save-feed").await;
    page.wait_for_text("[role=status]", "Feed daily-tracks created").await;
    page.click("button.pause-feed[data-feed=\"daily-tracks\"]").await;
    page.wait_for_text("#feeds-table tr[data-feed=\"daily-tracks\"]", "Paused").await;
    page.click("button.pause-feed[data-feed=\"daily-tracks\"]").await;
    let row = page.wait_for_text("#feeds-table tr[data-feed=\"daily-tracks\"]", "Active").await;
    assert!(row.contains("track") && row.contains("tsv, gzip") && row.contains("every hour"), "{row}");
    page.screenshot("feeds").await;

    // A run is fanned out and delivered; the dashboard shows it.
    fan_out_and_deliver(&admin, &staging, &prefix, run1).await;
    let delivered = keys_under(&account, &bucket, "reports/").await;
    assert!(delivered.iter().any(|key| key.ends_with("_manifest.json")), "{delivered:?}");
    page.click_link("Dashboard").await;
    let row = page.wait_for_text(&format!("tr.delivery[data-run=\"{run1}\"]"), "Delivered").await;
    assert!(row.contains("full"), "{row}");
    let next_due = page.find("section[data-feed=\"daily-tracks\"] .next-due").await.text().await.unwrap();
    assert!(
        next_due.contains(&(run1.time() + TimeDelta::hours(1)).format("%Y-%m-%d %H:%M UTC").to_string()),
        "{next_due}"
    );
    page.screenshot("dashboard").await;

    // The customer's bucket is gone at the next run: failed, theirs to fix.
    empty_and_delete_bucket(&account, &bucket).await;
    publish_synthetic_run(&staging, run2, 300, 100).await;
    fan_out_and_deliver(&admin, &staging, &prefix, run2).await;
    page.click("#refresh").await;
    page.wait_for_text(&format!("tr.delivery[data-run=\"{run2}\"]"), "Failed").await;
    let detail = page.wait_for_text(&format!("tr.detail[data-run=\"{run2}\"]"), "Whose move").await;
    assert!(detail.contains("NoSuchBucket") || detail.contains("does not exist"), "{detail}");
    assert!(detail.contains("Yours"), "the customer's move: {detail}");
    let summary = page.find("#summary").await.text().await.unwrap();
    assert!(summary.contains("1 failed") && summary.contains("needs your action"), "{summary}");
    page.assert_every_control_labelled("a failed delivery on the dashboard").await;
    page.screenshot("dashboard-failed").await;

    // Once the bucket is back, Retry delivers it.
    s3_client(&account).create_bucket().bucket(&bucket).send().await.unwrap();
    page.click(&format!("button.retry[data-run=\"{run2}\"]")).await;
    page.wait_for_text(&format!("tr.delivery[data-run=\"{run2}\"]"), "Delivered").await;
    assert!(keys_under(&account, &bucket, "reports/").await.iter().any(|key| key.ends_with("_manifest.json")));

    // Usage against the plan.
    page.click_link("Usage").await;
    let usage = page.wait_for_text("#active-feeds-text", "of 5").await;
    assert!(usage.starts_with("1 of 5 active feeds used"), "{usage}");
    assert_eq!(page.find("#plan").await.text().await.unwrap(), "standard");
    page.screenshot("usage").await;
    page.assert_page_holds_none_of(&credentials, "the usage page").await;

    // An invited user chooses their password at first sign-in.
    page.click("#sign-out").await;
    page.wait_for_text("[role=status]", "You are signed out").await;
    page.fill("#field-email", INVITED_EMAIL).await;
    page.fill("#field-password", TEMPORARY_PASSWORD).await;
    page.click("#sign-in").await;
    page.wait_for_text("main h1", "Choose your password").await;
    page.assert_every_control_labelled("the new-password step").await;
    page.fill("#field-newPassword", NEW_PASSWORD).await;
    page.fill("#field-confirmPassword", NEW_PASSWORD).await;
    page.click("#set-password").await;
    page.wait_for_text("main h1", "Dashboard").await;
    page.wait_for_text(&format!("tr.delivery[data-run=\"{run2}\"]"), "Delivered").await;
    page.assert_page_holds_none_of(&credentials, "the new user's dashboard").await;

    assert_logs_hold_none_of(&logs, &credentials);
    browser.client.clone().close().await.unwrap();
}
