//! deliver-email sends every message with the SES configuration set named by
//! `SES_CONFIGURATION_SET` (the stack's MailConfigurationSet, whose bounce
//! and complaint events reach an SNS topic), and with none when it is unset.
//! moto accepts `ConfigurationSetName` on `SendRawEmail` but keeps no trace
//! of it, so the SES client talks to moto through a small recording proxy
//! here and the test reads the request SES received: a full delivery (fanout,
//! then the job's S3 event through the handler) whose email arrives in moto.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_tests::customer::{emails_to, sent_emails};
use integration_tests::delivery::{
    create_raw_secret, pinned_now, publish_synthetic_run, run_id, sample_event, staging_store, unique_tenant_prefix,
};
use integration_tests::{moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::config::EmailConfig;
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, JobDisposition};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const SENDER: &str = "reports@popularity.example";

/// An HTTP proxy on 127.0.0.1 that forwards every request to a loopback
/// `upstream` (moto) and keeps each request body as text. It serves on the
/// test's runtime and stops with it.
struct RecordingProxy {
    endpoint: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl RecordingProxy {
    async fn start(upstream: &str) -> RecordingProxy {
        assert!(upstream.starts_with("http://127.0.0.1:"), "the proxy forwards to loopback only, not {upstream}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let endpoint = format!("http://{}", listener.local_addr().expect("a local address"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = bodies.clone();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, recorded, upstream) = (client.clone(), recorded.clone(), upstream.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    forward(client.clone(), recorded.clone(), upstream.clone(), request)
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RecordingProxy { endpoint, bodies }
    }

    /// The bodies of the `SendRawEmail` requests seen so far.
    fn send_raw_email_requests(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().filter(|body| body.contains("Action=SendRawEmail")).cloned().collect()
    }
}

async fn forward(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    recorded: Arc<Mutex<Vec<String>>>,
    upstream: String,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    recorded.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forwarded = Request::builder().method(parts.method).uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            forwarded = forwarded.header(name, value);
        }
    }
    let response = client.request(forwarded.body(Full::new(body))?).await?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Full::new(body.collect().await?.to_bytes())))
}

/// `ConfigurationSetName` of a form-encoded SES query request, if present.
fn configuration_set_of(body: &str) -> Option<&str> {
    body.split('&').find_map(|pair| pair.strip_prefix("ConfigurationSetName="))
}

/// Publishes run 20261119030000, onboards `acme` with an email feed to a
/// fresh recipient and has deliver-email deliver its job, the mailer built
/// as the function builds it from `environment`. Returns the recipient and
/// the bodies of the `SendRawEmail` requests the delivery made.
async fn deliver_with(environment: &[(&str, &str)], hint: &str) -> (String, Vec<String>) {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, hint).await;
    let prefix = unique_tenant_prefix(hint);
    publish_synthetic_run(&staging, run_id(), 300, 200).await;
    let recipient = format!("{}@acme.example", unique_bucket_name(hint));
    let tenant = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {"inbox": {"type": "email", "recipients": [recipient]}},
        "feeds": [{"id": "weekly-tracks", "connector": "inbox", "reports": ["track"]}]});
    create_raw_secret(&admin, &format!("{prefix}acme"), &tenant.to_string()).await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), &prefix).unwrap();
    let fanout =
        FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![staging.bucket().to_owned()] };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();

    let bucket = staging.bucket().to_owned();
    let mut variables: Vec<(&str, &str)> = vec![("STAGING_BUCKET", bucket.as_str()), ("SES_SENDER", SENDER)];
    variables.extend_from_slice(environment);
    let config = EmailConfig::from_lookup(|name| {
        variables.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    })
    .unwrap();
    let proxy = RecordingProxy::start(&endpoint).await;
    let ses = sdk_config(&proxy.endpoint).await;
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(),
        deliverer: EmailDeliverer {
            staging: staging.clone(),
            signer: S3LinkSigner::new(admin.clone(), bucket.clone(), None, config.link_ttl_seconds),
            // As functions/deliver-email/src/main.rs builds it.
            mailer: SesMailer::new(&ses).with_configuration_set(config.configuration_set.clone()),
            sender: config.sender.clone(),
            now: chrono::Utc::now,
        },
        now: pinned_now,
    };
    let sent = handle_deliverer_event(&deps, sample_event("deliver-email/job-created.json"), None).await.unwrap();
    assert_eq!(sent.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let emails = emails_to(&sent_emails(&endpoint).await, &recipient);
    assert_eq!(emails.len(), 1, "the email reached SES (moto)");
    (recipient, proxy.send_raw_email_requests())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_email_sends_with_the_configuration_set_named_by_ses_configuration_set() {
    let set = format!("{}-mail", unique_bucket_name("set"));
    // The stack creates it (MailConfigurationSet); so does this test, though
    // moto would accept the name without it.
    let admin = sdk_config(&moto_endpoint()).await;
    let configuration_set = aws_sdk_ses::types::ConfigurationSet::builder().name(&set).build().unwrap();
    aws_sdk_ses::Client::new(&admin)
        .create_configuration_set()
        .configuration_set(configuration_set)
        .send()
        .await
        .unwrap();

    let (_, requests) = deliver_with(&[("SES_CONFIGURATION_SET", &set)], "mail-set").await;
    assert_eq!(requests.len(), 1, "one SendRawEmail for the job");
    assert_eq!(configuration_set_of(&requests[0]), Some(set.as_str()), "the request SES received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ses_configuration_set_deliver_email_sends_with_none() {
    let (_, requests) = deliver_with(&[], "mail-noset").await;
    assert_eq!(requests.len(), 1, "one SendRawEmail for the job");
    assert_eq!(configuration_set_of(&requests[0]), None, "no ConfigurationSetName without SES_CONFIGURATION_SET");
}
