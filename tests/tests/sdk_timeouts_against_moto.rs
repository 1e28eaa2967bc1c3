//! Nothing waits forever (issue 13, item 9): against an endpoint on
//! 127.0.0.1 that accepts connections and never answers, every SDK client
//! the functions build (S3, STS, Secrets Manager, SES) fails within its
//! timeouts with an error that says so, and deliver-s3 records the delivery
//! as `failed` (transient: the invocation is retried). The timeouts are those
//! of `popularity_reports::sdk_config`, shortened here so the tests take
//! seconds; every function and CLI command builds its configuration there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use bytes::Bytes;
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, sample_event, staging_store,
    unique_tenant_prefix, RUN_ID,
};
use integration_tests::{moto_endpoint, sdk_config};
use popularity_reports::delivery::connectors::email::{EmailMessage, MailSender, SesMailer};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, DeliveryStatus, JobError};
use popularity_reports::handlers::deliver::{handle_deliverer_event, DeliverError};
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::sdk_config::SdkTimeouts;
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants, TenantDirectory};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// Longer than any of these tests may take: without timeouts they would wait
/// here, and fail, instead of forever.
const PATIENCE: Duration = Duration::from_secs(60);

/// Timeouts short enough for a test, in the shape the functions use.
fn short_timeouts() -> SdkTimeouts {
    SdkTimeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(1),
        operation_attempt: Duration::from_millis(1_500),
        operation: Duration::from_secs(4),
        stalled_stream_grace: Duration::from_secs(1),
    }
}

/// A listener on 127.0.0.1 that accepts every connection, reads whatever is
/// sent and never answers. Returns its `http://` address.
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{address}")
}

/// The SDK configuration of a function, aimed at `endpoint`, with
/// [`short_timeouts`].
async fn config_with_short_timeouts(endpoint: &str) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "sdk-timeouts-test"));
    short_timeouts().apply(loader).load().await
}

fn names_a_timeout(text: &str) -> bool {
    let text = text.to_lowercase();
    text.contains("timeout") || text.contains("timed out")
}

#[tokio::test]
async fn every_sdk_client_gives_up_on_an_endpoint_that_never_answers_and_says_it_timed_out() {
    let silent = config_with_short_timeouts(&silent_endpoint().await).await;
    let started = Instant::now();
    let calls = async {
        tokio::join!(
            async {
                let store = S3Store::new(s3_client(&silent), "customer-bucket", "");
                store
                    .put("probe.json", Bytes::from_static(b"{}"), "application/json")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
            async {
                aws_sdk_sts::Client::new(&silent)
                    .get_caller_identity()
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| aws_sdk_sts::error::DisplayErrorContext(&e).to_string())
            },
            async {
                let tenants =
                    SecretsManagerTenants::new(secrets_manager_client(&silent), "popularity/tenants/").unwrap();
                tenants.load_tenant("acme").await.map(|_| ()).map_err(|e| e.to_string())
            },
            async {
                let message = EmailMessage {
                    from: "reports@popularity.example".to_owned(),
                    to: vec!["data@acme.example".to_owned()],
                    subject: "s".to_owned(),
                    text: "t".to_owned(),
                    html: "<p>t</p>".to_owned(),
                };
                SesMailer::new(&silent).send(&message).await.map(|_| ()).map_err(|e| e.to_string())
            },
        )
    };
    let (s3, sts, secrets, ses) = tokio::time::timeout(PATIENCE, calls)
        .await
        .unwrap_or_else(|_| panic!("an SDK call was still waiting after {PATIENCE:?}"));
    let elapsed = started.elapsed();
    for (client, outcome) in [("S3", s3), ("STS", sts), ("Secrets Manager", secrets), ("SES", ses)] {
        let error = outcome.expect_err(client);
        assert!(names_a_timeout(&error), "{client}: {error}");
    }
    // The operation timeout (4 s here) bounds each call, retries included.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    eprintln!("four SDK calls to a silent endpoint gave up after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_s3_into_a_bucket_whose_endpoint_never_answers_fails_quickly_as_failed_naming_the_timeout() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "staging-silent").await;
    let prefix = unique_tenant_prefix("tenants-silent");
    publish_synthetic_run(&staging, run_id(), 50, 50).await;
    let secret = json!({
        "schemaVersion": 1, "tenantId": "beta-music", "plan": "trial", "enabled": true,
        "connectors": {
            "lake": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::beta-silent-bucket", "region": "us-east-1",
                     "prefix": "", "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                     "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
        },
        "feeds": [{"id": "lake-tsv", "connector": "lake", "format": "tsv", "compression": "gzip"}]
    });
    create_raw_secret(&admin, &format!("{prefix}beta-music"), &secret.to_string()).await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), &prefix).unwrap();
    let fanout =
        FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![staging.bucket().into()] };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();

    // Staging and tenants on moto; the customer's bucket behind a silent endpoint.
    let silent = config_with_short_timeouts(&silent_endpoint().await).await;
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(),
        deliverer: S3Deliverer { staging: staging.clone(), destinations: S3Destinations::new(silent, Vec::new()) },
        now: pinned_now,
    };
    let job_key = format!("jobs/s3/{RUN_ID}/beta-music/lake-tsv.json");
    let started = Instant::now();
    let outcome = tokio::time::timeout(PATIENCE, handle_deliverer_event(&deps, event_for_key(&job_key), None))
        .await
        .unwrap_or_else(|_| panic!("deliver-s3 was still waiting after {PATIENCE:?}"));
    let elapsed = started.elapsed();
    let error = outcome.expect_err("a destination that never answers fails the delivery");
    assert!(matches!(error, DeliverError::Job(JobError::Failed { .. })), "transient, so retried: {error}");
    assert!(names_a_timeout(&error.to_string()), "{error}");

    let status: DeliveryStatus =
        serde_json::from_slice(&staging.get(&format!("status/{RUN_ID}/beta-music/lake-tsv.json")).await.unwrap())
            .unwrap();
    assert_eq!(status.outcome, DeliveryOutcome::Failed);
    let cause = status.last_error.unwrap();
    assert!(names_a_timeout(&cause) && cause.contains("beta-silent-bucket"), "{cause}");
    assert!(!cause.contains("wJalrXUtnFEMI"), "no credential in the status");
    // Two calls reach the silent endpoint (the look for uploads an earlier
    // attempt left open, then the first upload), each bounded by the 4 s
    // operation timeout.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    eprintln!("deliver-s3 against a silent endpoint recorded `failed` after {elapsed:?}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Rust sources under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_function_and_cli_command_builds_its_sdk_configuration_with_the_timeouts() {
    let mut sources: Vec<PathBuf> = rust_files(&workspace_root().join("functions"));
    // Not bench/: the benchmarks build emulator configurations of their own on purpose.
    sources.extend(rust_files(&workspace_root().join("cli/src")));
    let mut functions_loading = 0;
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for forbidden in ["aws_config::load_defaults(", "aws_config::defaults(", "aws_config::from_env("] {
            assert!(
                !text.contains(forbidden),
                "{} calls {forbidden}…): build the SDK configuration with popularity_reports::sdk_config::load_sdk_config, \
                 which sets the timeouts",
                path.display()
            );
        }
        if path.ends_with("src/main.rs") && path.starts_with(workspace_root().join("functions")) {
            assert!(text.contains("load_sdk_config()"), "{} does not load the SDK configuration", path.display());
            functions_loading += 1;
        }
    }
    assert!(functions_loading >= 6, "every function's main.rs was checked ({functions_loading})");
}
