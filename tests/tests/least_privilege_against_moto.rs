//! Least privilege, proven by enforcement (issue 12, item 9). Each function's
//! role is taken from the transformed template (`scripts/local/
//! transform_template.py`, the transform `scripts/check-template.sh` lints),
//! its intrinsics resolved to this test's stack name, account, region,
//! buckets, tenant secret prefix and secrets
//! ([`integration_tests::template_policies`]), and created as a role on the
//! moto server reserved for IAM enforcement (`MOTO_AUTH_ENDPOINT`; the GCS
//! step also needs `GCS_EMULATOR_ENDPOINT`). With enforcement on, the real
//! handlers run a whole run, each with its own role's credentials and the
//! environment the template gives it: rank (data bucket → reports and
//! manifest in staging), fanout (tenant secrets → jobs), deliver-s3 (an
//! `s3-role` customer in another account: AssumeRole, multipart upload),
//! deliver-email (link-signer secret, SES), deliver-gcs (the tenant's
//! service account, on fake-gcs-server behind the project's guard),
//! deliver-sheets (our Google key from its secret, then the project's
//! Sheets double), deliver-s3 again for a customer whose bucket is missing
//! (a failed status) and the sweeper re-driving it; notify (acme's
//! `delivery.succeeded` to its webhook, a receiver on 127.0.0.1, and to its
//! EventBridge bus; late-co's `delivery.failed` as a failure notice to its
//! contact through SES); then the console, its
//! router served on a loopback listener as `functions/console` builds it
//! (`aws_app`), signed into through its own `/auth/sign-in` by a customer's
//! user and an operator of a Cognito pool made as the template's is: the
//! tenant, its connectors and feeds with the deliveries the deliverers
//! indexed, a feed created and a connector created (each stored in place of
//! the version read, the connector after a connection test on a draft
//! version, which deliver-s3 answers under its own role as the staging
//! bucket's notification would start it), a stored connector tested, and the
//! failed delivery retried. Then the same run with
//! one named statement removed shows which step fails, with an error or
//! status naming the refused call (moto's raw answer naming the denial),
//! and that nothing of it was half published.
//!
//! What moto does not enforce, and how the test deals with it (also in
//! docs/operations.md, "Least privilege, proven"): Secrets Manager and SES
//! requests are authorised against `*`, so those statements are widened to
//! `*` for moto and their resource patterns checked by the test itself
//! ([`FunctionPolicy::allows`]); no condition is evaluated (rank's
//! `s3:prefix`, deliver-s3's `sts:ExternalId` `Null` and
//! `s3:ResourceAccount`, the KMS `kms:ViaService`/`kms:ResourceAliases`),
//! the `s3:ResourceAccount` one replaced by the other accounts' bucket
//! names; the functions' trust policies are not checked (the roles are
//! assumed before enforcement starts) and moto checks no cross-account
//! trust; KMS is never called (moto's Secrets Manager does not encrypt
//! with the key), so neither the key policies (the tenant secrets key's,
//! our own secrets key's) nor the functions' `kms:Decrypt` (the console's
//! `kms:GenerateDataKey`) statements are exercised; moto stores a secret's
//! resource policy but never evaluates it, so the link signer secret's
//! (`LinkSignerSecretPolicy`, deliver-email alone may read the value) is
//! not deployed here and is checked by `template_consistency.rs`; a missing object answers 404 whether or not `s3:ListBucket`
//! is granted; moto 5.2.6 authorises S3 by operation name, so each S3 action
//! also gets the names of the operations it covers. For the console: the
//! user pool, its users and their passwords are made with admin
//! credentials before enforcement starts (in AWS the stack and an
//! operator's `popularity portal invite` do that); `InitiateAuth` needs no
//! IAM permission in AWS and is public in moto too, and moto serves the
//! pool's keys (JWKS) without any check, as AWS does; API Gateway's JWT
//! authorizer and throttling are not in front of the router (the template
//! test checks their configuration; the function checks every token itself).
//! For notify: moto authorises EventBridge against `*` too, so
//! `PutEventsOnCustomerBuses` is widened and the `Deny` on our own
//! account's buses never matches there (its pattern is checked by
//! [`FunctionPolicy::allows`]); moto looks a bus up by name in the caller's
//! account whatever account its ARN names, so acme's bus (an ARN of acme's
//! account) is a bus of that name in ours, and no bus policy is checked;
//! the webhook needs no permission and is plain http on 127.0.0.1
//! (`WEBHOOKS_ALLOW_LOOPBACK=true`, as `sam local` sets it).

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::DisplayErrorContext;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use integration_tests::customer::{
    account_admin, account_config, admin_user, create_delivery_role, emails_to, enforce_iam, keys_under,
    lock_auth_server, open_multipart_uploads, sent_emails, stop_enforcing_iam, with_credentials,
};
use integration_tests::delivery::{event_for_key, unique_tenant_prefix};
use integration_tests::gcs_guard::GcsGuard;
use integration_tests::google_keys::TestServiceAccount;
use integration_tests::sheets_double::{SheetsDouble, TabSpec};
use integration_tests::template_policies::{function_environment, transformed_template, FunctionPolicy, StackNames};
use integration_tests::webhook_receiver::WebhookReceiver;
use integration_tests::{create_kms_key, fresh_bucket, gcs_emulator_endpoint, moto_auth_endpoint, unique_bucket_name};
use popularity_reports::config::{
    ConsoleConfig, DeliveryConfig, EmailConfig, GcsConfig, NotifyConfig, RankConfig, SheetsConfig, SweeperConfig,
};
use popularity_reports::console::aws::aws_app;
use popularity_reports::console::dispatch::StagingEvents;
use popularity_reports::console::routes::router;
use popularity_reports::console::users::{create_user_pool, invite, Invitation};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::gcs::GcsDeliverer;
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::connectors::sheets::{RetryPolicy, SheetsClient, SheetsDeliverer, SheetsIdentity};
use popularity_reports::delivery::{
    DeliverDeps, DeliveryOutcome, DeliveryStatus, EventKeyParts, EventType, JobDisposition, JobKind,
    CONNECTION_TESTS_PREFIX,
};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps, FanoutResponse};
use popularity_reports::handlers::notify::{handle_notify_event, NotifyResponse};
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps};
use popularity_reports::handlers::sweeper::{handle_sweep, SweepResponse, SweeperDeps};
use popularity_reports::notify::status::{NotificationStatus, TargetState};
use popularity_reports::notify::{EventBridgeBuses, HttpWebhooks, NotifyDeps};
use popularity_reports::sample::{self, SampleSpec};
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::{json, Value};

const OUR_ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// acme's account: an `s3-role` connector.
const CUSTOMER_ACCOUNT: &str = "333333333333";
const SENDER: &str = "reports@least-privilege.example";
const DATA_PREFIX: &str = "warehouse/";
/// `events/rank/scheduled-monday.json`: 2026-11-16T03:00:00Z.
const RANK_EVENT: &str = "scheduled-monday.json";
const RUN: &str = "20261116030000";

fn run() -> RunId {
    RUN.parse().unwrap()
}

/// The deliverers' and fanout's clock: five minutes after the run.
fn after_run() -> DateTime<Utc> {
    run().time() + Duration::minutes(5)
}

/// The sweeper's: an hour later, when the deliverers' own retries are over.
fn an_hour_after_run() -> DateTime<Utc> {
    after_run() + Duration::hours(1)
}

/// The key parts of an arrival event of this test's run.
fn event_parts(tenant: &str, feed: &str, event_type: EventType) -> EventKeyParts {
    EventKeyParts { run_id: run(), tenant_id: tenant.to_owned(), feed_id: feed.to_owned(), event_type }
}

/// The functions this test runs, by logical id, with their handler.
const RANK: &str = "RankFunction";
const FANOUT: &str = "FanoutFunction";
const DELIVER_S3: &str = "DeliverS3Function";
const DELIVER_EMAIL: &str = "DeliverEmailFunction";
const DELIVER_GCS: &str = "DeliverGcsFunction";
const DELIVER_SHEETS: &str = "DeliverSheetsFunction";
const SWEEPER: &str = "SweeperFunction";
const NOTIFY: &str = "NotifyFunction";
const CONSOLE: &str = "ConsoleFunction";
const FUNCTIONS: [&str; 9] =
    [RANK, FANOUT, DELIVER_S3, DELIVER_EMAIL, DELIVER_GCS, DELIVER_SHEETS, SWEEPER, NOTIFY, CONSOLE];

/// acme's webhook signing secret, as `popularity tenant webhook-secret` makes them.
const WEBHOOK_SECRET: &str = "whsec_Sg0ahpQ1sRyOKGqJQjPMVyxB3nKnNmEdWbT5cjL7WfE=";

/// The console's users, all with this password (set permanently by an
/// admin: no invitation mail, no first-sign-in challenge).
const ACME_USER: &str = "ops@acme.example";
const OPERATOR: &str = "operator@popularity.example";
const PASSWORD: &str = "Console-Test-Passw0rd!";

/// A stack of this test's own on the auth server: its buckets, tenants,
/// link-signing user and a role per function holding that function's
/// policies from the template (less any statement removed), the
/// credentials of each role, and the environment the template gives each
/// function.
struct Stack {
    endpoint: String,
    names: StackNames,
    admin: SdkConfig,
    /// Staging, read with `admin`, to look at what the functions wrote.
    staging: S3Store,
    policies: BTreeMap<&'static str, FunctionPolicy>,
    credentials: BTreeMap<&'static str, SdkConfig>,
    environments: BTreeMap<&'static str, BTreeMap<String, String>>,
    customer_admin: SdkConfig,
    customer_bucket: String,
    customer_role_arn: String,
    recipient: String,
    /// acme's webhook: a receiver on 127.0.0.1 checking signatures.
    receiver: WebhookReceiver,
    /// acme's EventBridge bus: an ARN in acme's account (see the module's
    /// notes on moto).
    bus_arn: String,
    /// late-co's contact, who gets the failure notice.
    late_contact: String,
    /// gcs-co's bucket on fake-gcs-server, behind the project's guard.
    gcs: GcsGuard,
    gcs_bucket: String,
    /// sheet-co's spreadsheet, on the project's Sheets double.
    sheets: SheetsDouble,
    spreadsheet: String,
    google_key_secret_arn: String,
    /// The stack's tenant secrets key (`TENANT_SECRETS_KMS_KEY_ID`).
    tenant_key: String,
    tenant_secret_arns: Vec<String>,
    link_signer_secret_arn: String,
    /// What [`FunctionPolicy::moto_document`] changed, per function.
    moto_adjustments: BTreeMap<&'static str, Vec<String>>,
}

/// Creates secret `name` holding `value`; returns its ARN.
async fn create_secret(admin: &SdkConfig, name: &str, value: &str) -> String {
    create_secret_under(admin, name, value, None).await
}

/// [`create_secret`] under the KMS key `kms_key` (a tenant secret: the
/// stack's key, which the functions require).
async fn create_secret_under(admin: &SdkConfig, name: &str, value: &str, kms_key: Option<&str>) -> String {
    let created = aws_sdk_secretsmanager::Client::new(admin)
        .create_secret()
        .name(name)
        .secret_string(value)
        .set_kms_key_id(kms_key.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateSecret {name}: {}", DisplayErrorContext(&e)));
    created.arn().unwrap_or_else(|| panic!("CreateSecret {name}: no ARN")).to_owned()
}

/// Credentials of role `role_arn`, assumed by `admin` (while enforcement is
/// off: moto would otherwise check the role's trust policy, which trusts
/// `lambda.amazonaws.com` only, as the template's does).
async fn assume(admin: &SdkConfig, role_arn: &str, session: &str) -> SdkConfig {
    let assumed = aws_sdk_sts::Client::new(admin)
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(session)
        .send()
        .await
        .unwrap_or_else(|e| panic!("AssumeRole {role_arn}: {}", DisplayErrorContext(&e)));
    let c = assumed.credentials().expect("AssumeRole returns credentials");
    let expiry = SystemTime::try_from(*c.expiration()).ok();
    with_credentials(
        admin,
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            expiry,
            "least-privilege",
        ),
    )
}

impl Stack {
    /// Deploys the stack's IAM as the template writes it, minus `removed`
    /// (function logical id, statement name), and everything a run needs,
    /// with enforcement off; the caller turns it on.
    async fn deploy(endpoint: &str, removed: &[(&str, &str)]) -> Stack {
        let admin = admin_user(endpoint).await;
        let s3 = s3_client(&admin);
        // <stack>-staging-<account>-<region> must fit in 63 characters.
        let stack_name = unique_bucket_name("lp");
        assert!(stack_name.len() <= 32, "{stack_name}");
        let names = StackNames::new(&stack_name, OUR_ACCOUNT, REGION);
        let staging_bucket = names.staging_bucket();
        s3.create_bucket().bucket(&staging_bucket).send().await.unwrap();
        let data_bucket = fresh_bucket(&s3, "lp-data").await;
        let data = S3Store::new(s3.clone(), data_bucket.clone(), DATA_PREFIX);
        let spec =
            SampleSpec { tracks: 2_000, days: 30, end_date: NaiveDate::from_ymd_opt(2026, 11, 15).unwrap(), seed: 9 };
        sample::generate(&data, &spec, &|_| {}).await.unwrap();

        // acme's account: a delivery role trusting ours with an ExternalId
        // (moto checks neither), its bucket; late-co's bucket is not created.
        let customer = account_config(&admin, CUSTOMER_ACCOUNT).await;
        let customer_admin = account_admin(&customer).await;
        let customer_bucket = fresh_bucket(&s3_client(&customer_admin), "lp-acme").await;
        let external_id = popularity_reports::tenant::new_external_id("acme").unwrap();
        let role_arn = create_delivery_role(
            &customer_admin,
            &unique_bucket_name("lp-delivery"),
            OUR_ACCOUNT,
            &external_id,
            &customer_bucket,
        )
        .await;
        let late_bucket = unique_bucket_name("lp-late");

        // acme's arrival events go to its webhook and its bus: moto finds a
        // bus by name in the caller's account, so the bus acme's ARN names
        // is made in ours.
        let receiver = WebhookReceiver::start(WEBHOOK_SECRET, 0);
        let bus_name = unique_bucket_name("lp-bus");
        aws_sdk_eventbridge::Client::new(&admin).create_event_bus().name(&bus_name).send().await.unwrap();
        let bus_arn = format!("arn:aws:events:{REGION}:{CUSTOMER_ACCOUNT}:event-bus/{bus_name}");
        let late_contact = format!("{}@late-co.example", unique_bucket_name("data"));

        let prefix = unique_tenant_prefix("lp");
        let recipient = format!("{}@acme.example", unique_bucket_name("ops"));
        let acme = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": true,
            "connectors": {
                "lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{customer_bucket}"),
                         "region": REGION, "prefix": "popularity/", "roleArn": role_arn, "externalId": external_id},
                "inbox": {"type": "email", "recipients": [recipient]}},
            "feeds": [{"id": "lake", "connector": "lake", "format": "tsv", "compression": "gzip"},
                      {"id": "mail", "connector": "inbox", "reports": ["artist"], "format": "tsv"}],
            "notifications": [
                {"type": "webhook", "url": receiver.url("/hooks/popularity"), "signingSecret": WEBHOOK_SECRET},
                {"type": "eventbridge", "eventBusArn": bus_arn}]});
        let late = json!({"schemaVersion": 1, "tenantId": "late-co", "plan": "trial", "enabled": true,
            "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{late_bucket}"),
                                    "region": REGION, "prefix": "in/", "bucketOwnerAccountId": CUSTOMER_ACCOUNT}},
            "feeds": [{"id": "default", "connector": "lake", "reports": ["artist"]}],
            "contacts": [late_contact]});
        // sheet-co: a spreadsheet shared with our service account, whose key
        // is in the secret GoogleServiceAccountSecret names.
        let sheets = SheetsDouble::start();
        sheets.set_write_quota_per_minute(None);
        let ours = TestServiceAccount::generate(&format!("feeds@{stack_name}.iam.gserviceaccount.com"));
        sheets.register(&ours);
        let spreadsheet = format!("1Sheet{}", stack_name.replace('-', "_"));
        sheets.create_spreadsheet(&spreadsheet, &[TabSpec::new("Notes", 40, 5)]);
        sheets.share(&spreadsheet, &ours.client_email);
        let google_key_secret = format!("{stack_name}/google-service-account");
        let google_key_secret_arn = create_secret(&admin, &google_key_secret, &ours.key_json_string()).await;
        let sheet_co = json!({"schemaVersion": 1, "tenantId": "sheet-co", "plan": "standard", "enabled": true,
            "connectors": {"sheet": {"type": "google-sheets", "maxRows": 10,
                "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{spreadsheet}/edit")}},
            "feeds": [{"id": "top", "connector": "sheet", "reports": ["artist"]}]});
        // gcs-co: a bucket its own service account may create objects in.
        let gcs = GcsGuard::start(&gcs_emulator_endpoint());
        let gcs_bucket = unique_bucket_name("lp-gcs");
        gcs.create_bucket(&gcs_bucket).await;
        let gcs_account = TestServiceAccount::generate(&format!("feeds@gcs-{stack_name}.iam.gserviceaccount.com"));
        gcs.register(&gcs_account);
        gcs.grant_object_creator(&gcs_bucket, &gcs_account.client_email);
        let gcs_co = json!({"schemaVersion": 1, "tenantId": "gcs-co", "plan": "standard", "enabled": true,
            "connectors": {"bucket": {"type": "gcs", "bucket": gcs_bucket, "prefix": "feeds/",
                                      "serviceAccountJson": gcs_account.key_json()}},
            "feeds": [{"id": "top", "connector": "bucket", "reports": ["artist"]}]});
        // The stack's tenant secrets key: every function refuses a tenant
        // secret under another one (TENANT_SECRETS_KMS_KEY_ID).
        let tenant_key = create_kms_key(endpoint).await;
        let key = Some(tenant_key.as_str());
        let tenant_secret_arns = vec![
            create_secret_under(&admin, &format!("{prefix}gcs-co"), &gcs_co.to_string(), key).await,
            create_secret_under(&admin, &format!("{prefix}acme"), &acme.to_string(), key).await,
            create_secret_under(&admin, &format!("{prefix}late-co"), &late.to_string(), key).await,
            create_secret_under(&admin, &format!("{prefix}sheet-co"), &sheet_co.to_string(), key).await,
        ];

        // SES: the sender, and the configuration set the stack creates
        // (SesMailEvents defaults to true).
        let ses = aws_sdk_ses::Client::new(&admin);
        ses.verify_email_identity().email_address(SENDER).send().await.unwrap();
        let configuration_set = format!("{stack_name}-mail");
        let set = aws_sdk_ses::types::ConfigurationSet::builder().name(&configuration_set).build().unwrap();
        ses.create_configuration_set().configuration_set(set).send().await.unwrap();

        // The console's pool as the template makes it, a user of acme's and
        // an operator (AdminCreateUser, as `popularity portal invite` does).
        let cognito = aws_sdk_cognitoidentityprovider::Client::new(&admin);
        let console_pool = create_user_pool(&cognito, &format!("{stack_name}-console")).await.unwrap();
        for (email, tenant_id, operator) in [(ACME_USER, Some("acme"), false), (OPERATOR, None, true)] {
            let invitation = Invitation { email, tenant_id, operator, password: Some(PASSWORD) };
            invite(&cognito, &console_pool.user_pool_id, &invitation).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let deliver_s3_role_arn = format!("arn:aws:iam::{OUR_ACCOUNT}:role/{stack_name}-{DELIVER_S3}");

        // The link-signing user with the template's policy, and its secret.
        let mut names = names
            .parameter("DataBucketName", &data_bucket)
            .parameter("DataPrefix", DATA_PREFIX)
            .parameter("TenantSecretPrefix", &prefix)
            .parameter("SesSender", SENDER)
            .parameter("GoogleServiceAccountSecret", &google_key_secret)
            // Google's quota is the template's default (60); the double has none.
            .parameter("SheetsWritesPerMinute", "300")
            .resource("StagingBucket", &staging_bucket)
            .resource("MailConfigurationSet", &configuration_set)
            .resource("ConsoleUserPool", &console_pool.user_pool_id)
            .resource("ConsoleUserPoolClient", &console_pool.client_id)
            .attribute("DeliverS3FunctionRole.Arn", &deliver_s3_role_arn)
            .attribute("TenantSecretsKey.Arn", &tenant_key)
            .attribute(
                "BucketPolicyWriterRole.Arn",
                &format!("arn:aws:iam::{OUR_ACCOUNT}:role/{stack_name}-BucketPolicyWriterRole"),
            )
            .attribute("FailedEventsQueue.QueueName", &format!("{stack_name}-failed-events"));
        let template = transformed_template();
        let link_signer_secret_arn = create_link_signer(&admin, template, &names).await;
        names = names.resource("LinkSignerSecret", &link_signer_secret_arn);

        let iam = aws_sdk_iam::Client::new(&admin);
        let foreign_buckets = [customer_bucket.clone(), late_bucket.clone()];
        let (mut policies, mut credentials, mut environments, mut moto_adjustments) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for function in FUNCTIONS {
            let mut policy = FunctionPolicy::of(template, function, &names).unwrap_or_else(|e| panic!("{e}"));
            if function == DELIVER_S3 {
                // moto can open no session of BucketPolicyWriterRole as AWS
                // would (its trust is the account root with an
                // aws:PrincipalArn condition, and NeverAssumeOurOwnRoles
                // spares it by a tag condition: moto evaluates neither), so
                // deliver-s3 runs without BUCKET_POLICY_WRITER_ROLE_ARN and
                // its role gets the writer's statements: the permissions an
                // s3-bucket-policy write has, checked the same way.
                policy = policy
                    .with_statements_of_role(template, "BucketPolicyWriterRole", &names)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            for (_, statement) in removed.iter().filter(|(f, _)| *f == function) {
                policy = policy.without(statement);
            }
            let role_name = format!("{stack_name}-{function}");
            let role = iam
                .create_role()
                .role_name(&role_name)
                .assume_role_policy_document(policy.trust_policy.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateRole {role_name}: {}", DisplayErrorContext(&e)));
            let (documents, adjustments) = policy.moto_document(OUR_ACCOUNT, &foreign_buckets);
            for (policy_name, document) in documents {
                iam.put_role_policy()
                    .role_name(&role_name)
                    .policy_name(&policy_name)
                    .policy_document(document)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("PutRolePolicy {role_name} {policy_name}: {}", DisplayErrorContext(&e)));
            }
            let role_arn = role.role().expect("CreateRole returns the role").arn().to_owned();
            if function == DELIVER_S3 {
                assert_eq!(role_arn, deliver_s3_role_arn, "the console shows customers deliver-s3's role");
            }
            credentials.insert(function, assume(&admin, &role_arn, function).await);
            let mut environment = function_environment(template, function, &names).unwrap();
            // Declared by the template with AWS::NoValue (Google's APIs);
            // set for local runs as `sam local invoke --env-vars` does.
            if function == DELIVER_SHEETS {
                environment.insert("SHEETS_API_ENDPOINT".to_owned(), sheets.endpoint());
            }
            if function == DELIVER_GCS {
                environment.insert("STORAGE_EMULATOR_HOST".to_owned(), gcs.endpoint());
            }
            // Likewise (the receiver is on 127.0.0.1).
            if function == NOTIFY {
                environment.insert("WEBHOOKS_ALLOW_LOOPBACK".to_owned(), "true".to_owned());
            }
            // See the writer's statements above: its own credentials write.
            if function == DELIVER_S3 {
                environment.remove("BUCKET_POLICY_WRITER_ROLE_ARN");
            }
            // In AWS the keys are at the issuer's own address; moto's are here.
            if function == CONSOLE {
                let jwks = format!("{endpoint}/{}/.well-known/jwks.json", console_pool.user_pool_id);
                environment.insert("COGNITO_JWKS_URL".to_owned(), jwks);
            }
            environments.insert(function, environment);
            policies.insert(function, policy);
            moto_adjustments.insert(function, adjustments);
        }
        Stack {
            endpoint: endpoint.to_owned(),
            staging: S3Store::new(s3, staging_bucket, ""),
            names,
            admin,
            policies,
            credentials,
            environments,
            customer_admin,
            customer_bucket,
            customer_role_arn: role_arn,
            recipient,
            receiver,
            bus_arn,
            late_contact,
            gcs,
            gcs_bucket,
            sheets,
            spreadsheet,
            google_key_secret_arn,
            tenant_key,
            tenant_secret_arns,
            link_signer_secret_arn,
            moto_adjustments,
        }
    }

    fn lookup(&self, function: &str) -> impl Fn(&str) -> Option<String> + '_ {
        let environment = &self.environments[function];
        move |name: &str| environment.get(name).cloned()
    }

    fn role(&self, function: &str) -> &SdkConfig {
        &self.credentials[function]
    }

    /// rank, as `functions/rank/src/main.rs` builds it, on the sample event.
    async fn rank(&self) -> Result<String, String> {
        let config = RankConfig::from_lookup(self.lookup(RANK)).unwrap();
        let s3 = s3_client(self.role(RANK));
        let deps = RankDeps {
            data: S3Store::new(s3.clone(), config.data_bucket.clone(), &config.data_prefix),
            staging: S3Store::new(s3, config.staging_bucket.clone(), ""),
            settings: config.settings(),
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/rank").join(RANK_EVENT);
        let event: EventBridgeEvent<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let response = handle_schedule_event(&deps, event).await.map_err(|e| e.to_string())?;
        Ok(response.run_id)
    }

    fn delivery_config(&self, function: &str) -> DeliveryConfig {
        DeliveryConfig::from_lookup(self.lookup(function)).unwrap()
    }

    fn tenants(&self, function: &str, config: &DeliveryConfig) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(self.role(function)), config.tenant_secret_prefix.clone())
            .unwrap()
            .requiring_kms_key(config.tenant_secrets_kms_key_id.clone())
    }

    async fn fanout(&self) -> Result<FanoutResponse, String> {
        let config = self.delivery_config(FANOUT);
        let deps = FanoutDeps {
            staging: S3Store::new(s3_client(self.role(FANOUT)), config.staging_bucket.clone(), ""),
            tenants: self.tenants(FANOUT, &config),
            own_buckets: config.own_buckets(),
        };
        let event = event_for_key(&format!("manifests/{RUN}.json"));
        handle_manifest_event(&deps, event, after_run()).await.map_err(|e| e.to_string())
    }

    /// deliver-s3 on the job of `tenant`'s `feed`: the job's disposition, or
    /// the handler's error.
    async fn deliver_s3(&self, tenant: &str, feed: &str) -> Result<JobDisposition, String> {
        let config = self.delivery_config(DELIVER_S3);
        let role = self.role(DELIVER_S3);
        let staging = S3Store::new(s3_client(role), config.staging_bucket.clone(), "");
        let deps = DeliverDeps {
            staging: staging.clone(),
            tenants: self.tenants(DELIVER_S3, &config),
            deliverer: S3Deliverer { staging, destinations: S3Destinations::new(role.clone(), config.own_buckets()) },
            now: after_run,
        };
        let event = event_for_key(&format!("jobs/s3/{RUN}/{tenant}/{feed}.json"));
        let response = handle_deliverer_event(&deps, event, None).await.map_err(|e| e.to_string())?;
        Ok(response.jobs[0].disposition.clone())
    }

    async fn deliver_email(&self) -> Result<JobDisposition, String> {
        let config = EmailConfig::from_lookup(self.lookup(DELIVER_EMAIL)).unwrap();
        let role = self.role(DELIVER_EMAIL);
        let bucket = config.delivery.staging_bucket.clone();
        let staging = S3Store::new(s3_client(role), bucket.clone(), "");
        let deps = DeliverDeps {
            staging: staging.clone(),
            tenants: self.tenants(DELIVER_EMAIL, &config.delivery),
            deliverer: EmailDeliverer {
                staging,
                signer: S3LinkSigner::new(
                    role.clone(),
                    bucket,
                    config.link_signer_secret.clone(),
                    config.link_ttl_seconds,
                ),
                mailer: SesMailer::new(role).with_configuration_set(config.configuration_set.clone()),
                sender: config.sender.clone(),
                now: chrono::Utc::now,
            },
            now: after_run,
        };
        let event = event_for_key(&format!("jobs/email/{RUN}/acme/mail.json"));
        let response = handle_deliverer_event(&deps, event, None).await.map_err(|e| e.to_string())?;
        Ok(response.jobs[0].disposition.clone())
    }

    /// deliver-gcs, as its `main.rs` builds it, on gcs-co's job.
    async fn deliver_gcs(&self) -> Result<JobDisposition, String> {
        let config = GcsConfig::from_lookup(self.lookup(DELIVER_GCS)).unwrap();
        let role = self.role(DELIVER_GCS);
        let staging = S3Store::new(s3_client(role), config.delivery.staging_bucket.clone(), "");
        let deps = DeliverDeps {
            staging: staging.clone(),
            tenants: self.tenants(DELIVER_GCS, &config.delivery),
            deliverer: GcsDeliverer { staging, endpoint: config.storage_endpoint.clone(), identities: None },
            now: after_run,
        };
        let event = event_for_key(&format!("jobs/gcs/{RUN}/gcs-co/top.json"));
        let response = handle_deliverer_event(&deps, event, None).await.map_err(|e| e.to_string())?;
        Ok(response.jobs[0].disposition.clone())
    }

    /// deliver-sheets, as its `main.rs` builds it: our Google key read from
    /// its secret (the cold start), then sheet-co's job.
    async fn deliver_sheets(&self) -> Result<JobDisposition, String> {
        let config = SheetsConfig::from_lookup(self.lookup(DELIVER_SHEETS)).unwrap();
        let role = self.role(DELIVER_SHEETS);
        let secrets = secrets_manager_client(role);
        let secret = config.service_account_secret.as_deref().expect("the least-privilege world uses the keyed path");
        let identity = SheetsIdentity::load(&secrets, secret).await.map_err(|e| e.to_string())?;
        let staging = S3Store::new(s3_client(role), config.delivery.staging_bucket.clone(), "");
        let client =
            SheetsClient::new(identity, &config.sheets_endpoint, config.writes_per_minute, RetryPolicy::default());
        let deps = DeliverDeps {
            staging: staging.clone(),
            tenants: self.tenants(DELIVER_SHEETS, &config.delivery),
            deliverer: SheetsDeliverer { staging, clients: client.into(), now: chrono::Utc::now },
            now: after_run,
        };
        let event = event_for_key(&format!("jobs/sheets/{RUN}/sheet-co/top.json"));
        let response = handle_deliverer_event(&deps, event, None).await.map_err(|e| e.to_string())?;
        Ok(response.jobs[0].disposition.clone())
    }

    fn sheet_tabs(&self) -> Vec<String> {
        self.sheets.tabs(&self.spreadsheet).into_iter().map(|tab| tab.title).collect()
    }

    async fn sweep(&self) -> Result<SweepResponse, String> {
        let config = SweeperConfig::from_lookup(self.lookup(SWEEPER)).unwrap();
        let deps = SweeperDeps {
            staging: S3Store::new(s3_client(self.role(SWEEPER)), config.staging_bucket.clone(), ""),
            sweep_days: config.sweep_days,
            max_redrives: config.max_redrives,
            now: an_hour_after_run,
        };
        handle_sweep(&deps).await.map_err(|e| e.to_string())
    }

    /// notify, as `functions/notify/src/main.rs` builds it, on the arrival
    /// event `event_type` of `tenant`'s `feed` (which a deliverer created).
    async fn notify(&self, tenant: &str, feed: &str, event_type: EventType) -> Result<NotifyResponse, String> {
        let config = NotifyConfig::from_lookup(self.lookup(NOTIFY)).unwrap();
        let role = self.role(NOTIFY);
        let deps = NotifyDeps {
            staging: S3Store::new(s3_client(role), config.staging_bucket.clone(), ""),
            tenants: SecretsManagerTenants::new(secrets_manager_client(role), config.tenant_secret_prefix.clone())
                .unwrap(),
            webhooks: HttpWebhooks::new(config.webhooks_allow_loopback),
            buses: EventBridgeBuses::new(role),
            mailer: SesMailer::new(role).with_configuration_set(config.configuration_set.clone()),
            sender: config.sender.clone(),
            now: after_run,
        };
        let event = event_for_key(&event_parts(tenant, feed, event_type).event_key());
        handle_notify_event(&deps, event).await.map_err(|e| e.to_string())
    }

    /// acme's lake delivered: its webhook and its bus.
    async fn notify_delivered(&self) -> Result<NotifyResponse, String> {
        self.notify("acme", "lake", EventType::Succeeded).await
    }

    /// late-co's delivery failed (its bucket is missing: its move): a
    /// failure notice to its contact.
    async fn notify_failed(&self) -> Result<NotifyResponse, String> {
        self.notify("late-co", "default", EventType::Failed).await
    }

    /// The notification status of an event, read with admin credentials.
    async fn notification_status(&self, tenant: &str, feed: &str, event_type: EventType) -> Option<NotificationStatus> {
        let key = event_parts(tenant, feed, event_type).status_key();
        match self.staging.get(&key).await {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap()),
            Err(_) => None,
        }
    }

    /// The state of each of acme's targets for its `delivery.succeeded`, by type.
    async fn acme_target_states(&self) -> Vec<(String, TargetState)> {
        let status = self.notification_status("acme", "lake", EventType::Succeeded).await;
        status.map(|s| s.targets.into_iter().map(|t| (t.target_type, t.state)).collect()).unwrap_or_default()
    }

    /// Whether late-co's failure notice was sent, as its notification status says.
    async fn failure_notice_sent(&self) -> bool {
        let status = self.notification_status("late-co", "default", EventType::Failed).await;
        status.and_then(|s| s.notice).is_some_and(|notice| notice.kind == "failure" && notice.sent)
    }

    async fn emails_to_late_co(&self) -> usize {
        emails_to(&sent_emails(&self.endpoint).await, &self.late_contact).len()
    }

    /// Keys under `prefix` in staging, read with admin credentials.
    async fn staging_keys(&self, prefix: &str) -> Vec<String> {
        keys_under(&self.admin, self.staging.bucket(), prefix).await
    }

    async fn status(&self, tenant: &str, feed: &str) -> Option<DeliveryStatus> {
        let key = format!("status/{RUN}/{tenant}/{feed}.json");
        match self.staging.get(&key).await {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap()),
            Err(_) => None,
        }
    }

    async fn customer_keys(&self) -> Vec<String> {
        keys_under(&self.customer_admin, &self.customer_bucket, "").await
    }

    async fn emails_to_acme(&self) -> usize {
        emails_to(&sent_emails(&self.endpoint).await, &self.recipient).len()
    }

    /// The console as `functions/console/src/main.rs` builds it, with the
    /// console role's credentials and the environment the template gives
    /// it, served on a loopback listener.
    async fn serve_console(&self) -> ServedConsole {
        let config = ConsoleConfig::from_lookup(self.lookup(CONSOLE)).unwrap();
        let probes = DeliverS3AnswersConnectionTests {
            role: self.role(DELIVER_S3).clone(),
            config: self.delivery_config(DELIVER_S3),
        };
        let app = aws_app(self.role(CONSOLE), &config, probes).unwrap();
        ServedConsole::start(router(app)).await
    }

    /// A customer's and an operator's session in the console, every request
    /// under the console's role; each answer kept, whatever it was.
    async fn use_console(&self) -> ConsoleSession {
        let console = self.serve_console().await;
        let acme_sign_in = console.sign_in(ACME_USER).await;
        let operator_sign_in = console.sign_in(OPERATOR).await;
        let acme = acme_sign_in.id_token();
        let operator = operator_sign_in.id_token();
        let me = console.call("GET", "/v1/me", acme.as_deref(), None, None).await;
        let connectors = console.call("GET", "/v1/connectors", acme.as_deref(), None, None).await;
        let feeds = console.call("GET", "/v1/feeds", acme.as_deref(), None, None).await;
        let mut feeds_of = BTreeMap::new();
        for tenant in ["gcs-co", "sheet-co", "late-co"] {
            let path = format!("/v1/feeds?tenantId={tenant}");
            feeds_of.insert(tenant, console.call("GET", &path, operator.as_deref(), None, None).await);
        }
        let read = connectors.etag.clone();
        let feed = json!({"id": "weekly-artists", "connector": "inbox", "reports": ["artist"], "format": "json"});
        let create_feed = console.call("POST", "/v1/feeds", acme.as_deref(), read.as_deref(), Some(&feed)).await;
        // The ETag the feed's creation answered with; without one (it
        // failed, or was stored but could not be shown), read it again, as a
        // client would before its next write.
        let current = match create_feed.etag.clone() {
            Some(etag) => Some(etag),
            None => console.call("GET", "/v1/connectors", acme.as_deref(), None, None).await.etag.or(read),
        };
        let partner = json!({"name": "partner", "type": "s3-bucket-policy", "region": REGION, "prefix": "console/",
            "bucketArn": format!("arn:aws:s3:::{}", self.customer_bucket), "bucketOwnerAccountId": CUSTOMER_ACCOUNT});
        let create_connector =
            console.call("POST", "/v1/connectors", acme.as_deref(), current.as_deref(), Some(&partner)).await;
        let test_connector = console.call("POST", "/v1/connectors/lake/test", acme.as_deref(), None, None).await;
        let retry_path = format!("/v1/feeds/default/deliveries/{RUN}/retry?tenantId=late-co");
        let retry = console.call("POST", &retry_path, operator.as_deref(), None, None).await;
        ConsoleSession {
            acme_sign_in,
            operator_sign_in,
            me,
            connectors,
            feeds,
            feeds_of,
            create_feed,
            create_connector,
            test_connector,
            retry,
        }
    }

    /// acme's tenant secret as stored now, read with admin credentials.
    async fn acme_document(&self) -> Value {
        let name = format!("{}acme", self.names.parameters["TenantSecretPrefix"]);
        let secret = aws_sdk_secretsmanager::Client::new(&self.admin).get_secret_value().secret_id(name).send().await;
        serde_json::from_str(secret.unwrap().secret_string().unwrap()).unwrap()
    }

    /// The labels of every version of acme's secret but `AWSCURRENT` and
    /// `AWSPREVIOUS`: the drafts the console wrote and did not clean up.
    async fn acme_draft_labels(&self) -> Vec<String> {
        let name = format!("{}acme", self.names.parameters["TenantSecretPrefix"]);
        let described = aws_sdk_secretsmanager::Client::new(&self.admin).describe_secret().secret_id(name).send().await;
        let stages = described.unwrap().version_ids_to_stages().cloned().unwrap_or_default();
        stages.into_values().flatten().filter(|stage| !stage.starts_with("AWS")).collect()
    }
}

/// Connection tests the console requests, answered as in AWS: the staging
/// bucket's notification starts deliver-s3, here its handler run at once
/// with deliver-s3's own role. Retries' re-written jobs are left alone (in
/// AWS they start deliver-s3 too; the test looks at the re-drive itself).
struct DeliverS3AnswersConnectionTests {
    role: SdkConfig,
    config: DeliveryConfig,
}

impl StagingEvents for DeliverS3AnswersConnectionTests {
    async fn written(&self, kind: JobKind, key: &str) {
        if kind != JobKind::S3 || !key.starts_with(CONNECTION_TESTS_PREFIX) {
            return;
        }
        let staging = S3Store::new(s3_client(&self.role), self.config.staging_bucket.clone(), "");
        let deps = DeliverDeps {
            staging: staging.clone(),
            tenants: SecretsManagerTenants::new(
                secrets_manager_client(&self.role),
                self.config.tenant_secret_prefix.clone(),
            )
            .unwrap(),
            deliverer: S3Deliverer {
                staging,
                destinations: S3Destinations::new(self.role.clone(), self.config.own_buckets()),
            },
            now: after_run,
        };
        if let Err(error) = handle_deliverer_event(&deps, event_for_key(key), None).await {
            eprintln!("deliver-s3 on {key}: {error}");
        }
    }
}

/// The console's router on a loopback listener, stopped when dropped.
struct ServedConsole {
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

/// One answer of the console: its status, ETag and body (JSON, or the text).
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl Answer {
    fn id_token(&self) -> Option<String> {
        self.body["idToken"].as_str().map(str::to_owned)
    }

    /// The problem's `detail`, or the whole body.
    fn detail(&self) -> String {
        self.body["detail"].as_str().map_or_else(|| self.body.to_string(), str::to_owned)
    }

    /// `lastDelivery.state` of feed `id` in a feed list.
    fn last_state(&self, id: &str) -> Option<&str> {
        let feeds = self.body["feeds"].as_array()?;
        feeds.iter().find(|feed| feed["id"] == id)?["lastDelivery"]["state"].as_str()
    }
}

impl ServedConsole {
    async fn start(router: axum::Router) -> ServedConsole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let http = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(60)).build().unwrap();
        ServedConsole { base, http, server }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(etag) = if_match {
            request = request.header("if-match", etag);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, etag, body }
    }

    async fn sign_in(&self, email: &str) -> Answer {
        let credentials = json!({"email": email, "password": PASSWORD});
        self.call("POST", "/auth/sign-in", None, None, Some(&credentials)).await
    }
}

impl Drop for ServedConsole {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the console answered in [`Stack::use_console`], step by step.
#[derive(Debug)]
struct ConsoleSession {
    acme_sign_in: Answer,
    operator_sign_in: Answer,
    /// acme's user: its tenant, connectors and feeds.
    me: Answer,
    connectors: Answer,
    feeds: Answer,
    /// The operator: other tenants' feeds.
    feeds_of: BTreeMap<&'static str, Answer>,
    /// acme's user: a feed, then a connector (after its connection test),
    /// each with the ETag read; a stored connector's connection test.
    create_feed: Answer,
    create_connector: Answer,
    test_connector: Answer,
    /// The operator: late-co's failed delivery re-driven.
    retry: Answer,
}

impl ConsoleSession {
    /// The first step that did not answer as with the template's policy,
    /// after the whole run: its name and answer.
    fn first_unexpected(&self) -> Option<(&'static str, &Answer)> {
        let steps: [(&'static str, &Answer, u16, bool); 12] = [
            ("sign-in", &self.acme_sign_in, 200, self.acme_sign_in.id_token().is_some()),
            ("operator sign-in", &self.operator_sign_in, 200, self.operator_sign_in.id_token().is_some()),
            ("GET /v1/me", &self.me, 200, self.me.body["tenantId"] == "acme"),
            ("GET /v1/connectors", &self.connectors, 200, self.connectors.etag.is_some()),
            (
                "GET /v1/feeds",
                &self.feeds,
                200,
                self.feeds.last_state("lake") == Some("delivered")
                    && self.feeds.last_state("mail") == Some("delivered"),
            ),
            (
                "gcs-co's feeds",
                &self.feeds_of["gcs-co"],
                200,
                self.feeds_of["gcs-co"].last_state("top") == Some("delivered"),
            ),
            (
                "sheet-co's feeds",
                &self.feeds_of["sheet-co"],
                200,
                self.feeds_of["sheet-co"].last_state("top") == Some("delivered"),
            ),
            (
                "late-co's feeds",
                &self.feeds_of["late-co"],
                200,
                self.feeds_of["late-co"].last_state("default") == Some("failed"),
            ),
            ("POST /v1/feeds", &self.create_feed, 201, self.create_feed.body["id"] == "weekly-artists"),
            ("POST /v1/connectors", &self.create_connector, 201, self.create_connector.body["name"] == "partner"),
            ("POST /v1/connectors/lake/test", &self.test_connector, 200, self.test_connector.body["ok"] == true),
            ("retry", &self.retry, 202, self.retry.body["result"] == "redriven"),
        ];
        steps
            .into_iter()
            .find(|(_, answer, status, shown)| answer.status != *status || !shown)
            .map(|(n, a, _, _)| (n, a))
    }
}

/// Creates the link-signing user with the template's `LinkSignerUser`
/// policy, resolved, and an access key, stored in the secret
/// `<stack>-link-signer` as `LinkSignerSecret` holds it; returns its ARN.
async fn create_link_signer(admin: &SdkConfig, template: &Value, names: &StackNames) -> String {
    use integration_tests::template_policies::Resolver;
    let user = &template["Resources"]["LinkSignerUser"]["Properties"];
    let resolved = Resolver::new(template, names).resolve(user).unwrap_or_else(|e| panic!("LinkSignerUser: {e}"));
    let iam = aws_sdk_iam::Client::new(admin);
    let user_name = format!("{}-link-signer", names.stack_name);
    iam.create_user().user_name(&user_name).send().await.unwrap();
    for policy in resolved["Policies"].as_array().expect("LinkSignerUser has policies") {
        iam.put_user_policy()
            .user_name(&user_name)
            .policy_name(policy["PolicyName"].as_str().unwrap())
            .policy_document(policy["PolicyDocument"].to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutUserPolicy {user_name}: {}", DisplayErrorContext(&e)));
    }
    let key = iam.create_access_key().user_name(&user_name).send().await.unwrap();
    let key = key.access_key().unwrap();
    let value = json!({"accessKeyId": key.access_key_id(), "secretAccessKey": key.secret_access_key()});
    create_secret(admin, &format!("{}-link-signer", names.stack_name), &value.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_runs_a_whole_run_with_exactly_its_template_policy_under_iam_enforcement() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = Stack::deploy(&endpoint, &[]).await;
    for (function, adjustments) in &stack.moto_adjustments {
        eprintln!("{function}: adjusted for moto: {adjustments:#?}");
    }

    enforce_iam(&endpoint, 0).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let to_s3 = stack.deliver_s3("acme", "lake").await;
    let to_email = stack.deliver_email().await;
    let to_sheet = stack.deliver_sheets().await;
    let to_gcs = stack.deliver_gcs().await;
    let to_missing_bucket = stack.deliver_s3("late-co", "default").await;
    let swept = stack.sweep().await;
    let notified = stack.notify_delivered().await;
    let noticed = stack.notify_failed().await;
    let console = stack.use_console().await;
    // Enforcement is on, and scoped: rank's role cannot read a job.
    let job = format!("jobs/s3/{RUN}/acme/lake.json");
    let outside_rank = s3_client(stack.role(RANK)).get_object().bucket(stack.staging.bucket()).key(&job).send().await;
    stop_enforcing_iam(&endpoint).await;
    let refused = DisplayErrorContext(outside_rank.expect_err("rank's role may not read jobs/")).to_string();
    assert!(refused.contains("AccessDenied"), "{refused}");

    assert_eq!(ranked, Ok(RUN.to_owned()), "rank published the run");
    assert_eq!(stack.staging_keys("manifests/").await, vec![format!("manifests/{RUN}.json")]);
    let reports = stack.staging_keys("reports/").await;
    assert!(reports.len() >= 3 && reports.iter().all(|k| k.contains(RUN)), "one part of each report: {reports:?}");

    let fanned_out = fanned_out.expect("fanout read the tenants and wrote the jobs");
    assert_eq!((fanned_out.tenants, fanned_out.jobs_created, fanned_out.invalid_tenants), (4, 5, 0));
    assert_eq!(
        stack.staging_keys("jobs/").await,
        vec![
            format!("jobs/email/{RUN}/acme/mail.json"),
            format!("jobs/gcs/{RUN}/gcs-co/top.json"),
            format!("jobs/s3/{RUN}/acme/lake.json"),
            format!("jobs/s3/{RUN}/late-co/default.json"),
            format!("jobs/sheets/{RUN}/sheet-co/top.json"),
        ]
    );

    assert_eq!(to_s3, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)));
    let delivered = stack.customer_keys().await;
    assert!(delivered.iter().any(|k| k.ends_with("_manifest.json")), "{delivered:?}");
    assert!(delivered.len() >= 6, "three reports and their manifests: {delivered:?}");

    assert_eq!(to_email, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)));
    assert_eq!(stack.emails_to_acme().await, 1, "one email reached SES");

    assert_eq!(to_sheet, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)));
    let tabs = stack.sheet_tabs();
    assert!(
        tabs.len() == 3 && tabs[0] == "Notes" && tabs[2] == "_popularity",
        "the customer's, a report's, ours: {tabs:?}"
    );

    assert_eq!(to_gcs, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)));
    let in_gcs = stack.gcs.list_objects(&stack.gcs_bucket, "feeds/").await;
    assert!(in_gcs.iter().any(|name| name.ends_with("_manifest.json")) && in_gcs.len() >= 2, "{in_gcs:?}");

    let failed = to_missing_bucket.expect_err("the bucket does not exist yet");
    assert!(failed.contains("NoSuchBucket"), "{failed}");
    assert_eq!(stack.status("late-co", "default").await.unwrap().outcome, DeliveryOutcome::Failed);

    let swept = swept.expect("the sweeper read and re-wrote what it needed");
    assert_eq!((swept.redriven, swept.final_outcomes), (1, 4), "{swept:?}");

    // notify: acme's webhook and bus both took the event; late-co's contact
    // got one failure notice.
    let notified = notified.expect("notify read the event and the tenant, sent, and recorded the sends");
    assert_eq!((notified.events[0].sent, notified.events[0].accepted), (2, 2), "{notified:?}");
    assert_eq!(
        stack.acme_target_states().await,
        [("webhook".to_owned(), TargetState::Accepted), ("eventbridge".to_owned(), TargetState::Accepted)]
    );
    let received = stack.receiver.received().await;
    assert!(received.len() == 1 && received[0].valid && received[0].status == 204, "{received:?}");
    let noticed = noticed.expect("notify read late-co's contacts, claimed the notice and sent it");
    assert_eq!(noticed.events[0].sent, 0, "late-co has no webhook or bus");
    assert!(stack.failure_notice_sent().await);
    assert_eq!(stack.emails_to_late_co().await, 1, "one failure notice reached SES");

    // The console: every step answered as it should, and did what it said.
    assert_eq!(console.first_unexpected().map(|(step, answer)| (step, answer.clone())), None, "{console:#?}");
    assert_eq!((console.me.body["feeds"].clone(), console.me.body["plan"].clone()), (json!(2), json!("standard")));
    let connectors: Vec<&str> = console.connectors.body["connectors"]
        .as_array()
        .map(|all| all.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(connectors, ["inbox", "lake"], "{:#?}", console.connectors);
    let stored = stack.acme_document().await;
    let feeds: Vec<&str> = stored["feeds"].as_array().unwrap().iter().filter_map(|f| f["id"].as_str()).collect();
    assert_eq!(feeds, ["lake", "mail", "weekly-artists"], "the feed the console created is stored");
    assert_eq!(stored["connectors"]["partner"]["type"], "s3-bucket-policy", "so is the connector it tested");
    assert_eq!(stack.acme_draft_labels().await, Vec::<String>::new(), "the draft's label was removed after its test");
    let requests = stack.staging_keys(CONNECTION_TESTS_PREFIX).await;
    assert_eq!(requests.len(), 2, "the new connector's test and lake's: {requests:?}");
    assert!(
        requests.iter().any(|k| k.ends_with("/acme/partner.json"))
            && requests.iter().any(|k| k.ends_with("/acme/lake.json"))
    );
    assert_eq!(stack.staging_keys("connection-test-results/").await.len(), 2, "deliver-s3 answered both");
    let retried = stack.status("late-co", "default").await.unwrap();
    assert_eq!(
        (retried.outcome, retried.redrives),
        (DeliveryOutcome::Failed, 2),
        "the sweeper's re-drive, then the console's"
    );

    // What moto authorises against `*` (Secrets Manager, SES), checked
    // against the statements as the template writes them.
    for function in [FANOUT, DELIVER_S3, DELIVER_EMAIL, DELIVER_GCS, DELIVER_SHEETS, NOTIFY, CONSOLE] {
        for arn in &stack.tenant_secret_arns {
            assert!(stack.policies[function].allows("secretsmanager:GetSecretValue", arn), "{function} {arn}");
        }
    }
    // Only the console (and the onboarding role) may change tenant secrets,
    // and only those: not our Google key, not the link signer's.
    let edits = ["secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"];
    // DescribeSecret (which key a secret is under) is read-only: the
    // readers of one tenant have it, fanout (ListSecrets) and the sweeper not.
    for arn in &stack.tenant_secret_arns {
        for function in [DELIVER_S3, DELIVER_EMAIL, DELIVER_GCS, DELIVER_SHEETS, NOTIFY, CONSOLE] {
            assert!(stack.policies[function].allows("secretsmanager:DescribeSecret", arn), "{function} {arn}");
        }
        for function in [FANOUT, SWEEPER] {
            assert!(!stack.policies[function].allows("secretsmanager:DescribeSecret", arn), "{function} {arn}");
        }
    }
    for edit in edits {
        for arn in &stack.tenant_secret_arns {
            assert!(stack.policies[CONSOLE].allows(edit, arn), "{edit} {arn}");
            for function in [FANOUT, DELIVER_S3, DELIVER_EMAIL, DELIVER_GCS, DELIVER_SHEETS, SWEEPER, NOTIFY] {
                assert!(!stack.policies[function].allows(edit, arn), "{function} may {edit}");
            }
        }
        for other in [&stack.google_key_secret_arn, &stack.link_signer_secret_arn] {
            assert!(!stack.policies[CONSOLE].allows(edit, other), "the console may {edit} {other}");
        }
    }
    assert!(!stack.policies[CONSOLE].allows("secretsmanager:GetSecretValue", &stack.google_key_secret_arn));
    assert!(!stack.policies[CONSOLE].allows("secretsmanager:GetSecretValue", &stack.link_signer_secret_arn));
    assert!(stack.policies[DELIVER_SHEETS].allows("secretsmanager:GetSecretValue", &stack.google_key_secret_arn));
    assert!(!stack.policies[DELIVER_S3].allows("secretsmanager:GetSecretValue", &stack.google_key_secret_arn));
    let email = &stack.policies[DELIVER_EMAIL];
    assert!(email.allows("secretsmanager:GetSecretValue", &stack.link_signer_secret_arn));
    assert!(!stack.policies[FANOUT].allows("secretsmanager:GetSecretValue", &stack.link_signer_secret_arn));
    let identity = format!("arn:aws:ses:{REGION}:{OUR_ACCOUNT}:identity/{SENDER}");
    let set = format!("arn:aws:ses:{REGION}:{OUR_ACCOUNT}:configuration-set/{}-mail", stack.names.stack_name);
    assert!(email.allows("ses:SendRawEmail", &identity) && email.allows("ses:SendRawEmail", &set));
    assert!(!email.allows("ses:SendRawEmail", &format!("arn:aws:ses:{REGION}:{OUR_ACCOUNT}:identity/x@other.example")));
    // notify: mail as deliver-email sends it; PutEvents on customers' buses,
    // never on one of our own account (the Deny moto cannot match).
    let notify = &stack.policies[NOTIFY];
    assert!(notify.allows("ses:SendRawEmail", &identity) && notify.allows("ses:SendRawEmail", &set));
    assert!(!notify.allows("ses:SendRawEmail", &format!("arn:aws:ses:{REGION}:{OUR_ACCOUNT}:identity/x@other.example")));
    assert!(notify.allows("events:PutEvents", &stack.bus_arn));
    assert!(notify.allows("events:PutEvents", "arn:aws:events:eu-west-1:444455556666:event-bus/default"));
    for ours in ["default", "anything"] {
        let bus = format!("arn:aws:events:{REGION}:{OUR_ACCOUNT}:event-bus/{ours}");
        assert!(!notify.allows("events:PutEvents", &bus), "notify may put events on our own {bus}");
    }
    for other in [&stack.google_key_secret_arn, &stack.link_signer_secret_arn] {
        assert!(!notify.allows("secretsmanager:GetSecretValue", other), "notify may read {other}");
    }
}

/// The HTTP status and body of a refused request. moto answers a denied
/// call of STS or SES with `<ErrorResponse><Errors><Error>`, which the Rust
/// SDK's parser does not read (it expects `<ErrorResponse><Error>`, as AWS
/// sends), and Secrets Manager's calls likewise: the error the SDK builds
/// has no code, so the denial is read from the body itself.
fn denial_answered<O: std::fmt::Debug, E>(
    result: Result<O, aws_sdk_sts::error::SdkError<E, aws_sdk_sts::config::http::HttpResponse>>,
) -> String {
    let error = result.expect_err("the request is refused");
    let response = error.raw_response().expect("an HTTP answer");
    let body = response.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    format!("HTTP {}: {body}", response.status().as_u16())
}

/// Deploys the stack without `removed`, turns enforcement on, and leaves it
/// on: the caller runs the steps, then calls [`stop_enforcing_iam`].
async fn deploy_without(endpoint: &str, removed: (&str, &str)) -> Stack {
    let stack = Stack::deploy(endpoint, &[removed]).await;
    enforce_iam(endpoint, 0).await;
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_publish_statement_rank_fails_on_the_first_write_and_publishes_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (RANK, "PublishReportsAndManifest")).await;
    let ranked = stack.rank().await;
    stop_enforcing_iam(&endpoint).await;

    let error = ranked.expect_err("rank may not write reports/ or manifests/");
    assert!(error.contains("AccessDenied"), "{error}");
    assert!(stack.staging_keys("").await.is_empty(), "no report part, no manifest");
    assert!(open_multipart_uploads(&stack.admin, stack.staging.bucket()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_list_tenants_fanout_fails_at_the_tenant_directory_and_writes_no_job() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (FANOUT, "ListTenants")).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let denied = secrets_manager_client(stack.role(FANOUT)).list_secrets().send().await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    let error = fanned_out.expect_err("fanout may not list the tenant secrets");
    assert!(error.contains("ListSecrets") && (error.contains("AccessDenied") || error.contains("HTTP 403")), "{error}");
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("secretsmanager:ListSecrets"), "{denial}");
    assert!(stack.staging_keys("jobs/").await.is_empty(), "no job");
    assert!(stack.staging_keys("status/").await.is_empty(), "no status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_staging_reads_deliver_s3_cannot_read_the_status_and_attempts_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (DELIVER_S3, "ReadJobsManifestsReportsStatus")).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let delivered = stack.deliver_s3("acme", "lake").await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert!(fanned_out.is_ok(), "{fanned_out:?}");
    let error = delivered.expect_err("deliver-s3 may not read status/ (nor jobs/, manifests/, reports/)");
    assert!(error.contains("could not read the status") && error.contains("AccessDenied"), "{error}");
    assert!(error.contains("nothing was attempted"), "{error}");
    assert!(stack.status("acme", "lake").await.is_none(), "no status was written");
    assert!(stack.customer_keys().await.is_empty(), "nothing reached the customer");
    assert!(open_multipart_uploads(&stack.customer_admin, &stack.customer_bucket).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_assume_customer_roles_deliver_s3_fails_at_the_customer_role_and_the_bucket_stays_empty() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (DELIVER_S3, "AssumeCustomerRoles")).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let delivered = stack.deliver_s3("acme", "lake").await;
    let mailed = stack.deliver_email().await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert!(fanned_out.is_ok(), "{fanned_out:?}");
    let error = delivered.expect_err("deliver-s3 may not assume the customer's role");
    let status = stack.status("acme", "lake").await.expect("a status is recorded");
    assert_eq!(status.outcome, DeliveryOutcome::Failed);
    // moto's STS error body does not parse in the Rust SDK (see
    // `denial_answered`): the status names the step, loading the customer
    // role's credentials, not the code.
    let cause = status.last_error.unwrap_or_default();
    assert!(cause.contains("loading credentials") && cause.contains(&stack.customer_bucket), "{cause}");
    assert!(error.contains("loading credentials"), "{error}");
    let denied = aws_sdk_sts::Client::new(stack.role(DELIVER_S3))
        .assume_role()
        .role_arn(&stack.customer_role_arn)
        .external_id("pr-acme-any")
        .role_session_name("least-privilege")
        .send()
        .await;
    stop_enforcing_iam(&endpoint).await;
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("sts:AssumeRole"), "{denial}");
    assert!(stack.customer_keys().await.is_empty(), "nothing reached the customer");
    assert!(open_multipart_uploads(&stack.customer_admin, &stack.customer_bucket).await.is_empty());
    assert_eq!(mailed, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)), "the other function is unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_send_from_sender_only_the_send_is_refused_the_status_says_so_and_no_mail_leaves() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (DELIVER_EMAIL, "SendFromSenderOnly")).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let mailed = stack.deliver_email().await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert!(fanned_out.is_ok(), "{fanned_out:?}");
    let status = stack.status("acme", "mail").await.expect("a status is recorded");
    assert_eq!(status.outcome, DeliveryOutcome::Failed, "{mailed:?}");
    // As for STS: the status names the call and the HTTP status; the body,
    // read directly, the denial.
    let cause = status.last_error.unwrap_or_default();
    assert!(cause.contains("SES SendRawEmail") && cause.contains("HTTP 403"), "{cause}");
    let raw = aws_sdk_ses::primitives::Blob::new(format!("From: {SENDER}\r\nTo: {SENDER}\r\nSubject: x\r\n\r\nx"));
    let message = aws_sdk_ses::types::RawMessage::builder().data(raw).build().unwrap();
    let denied = aws_sdk_ses::Client::new(stack.role(DELIVER_EMAIL)).send_raw_email().raw_message(message).send().await;
    stop_enforcing_iam(&endpoint).await;
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("ses:SendRawEmail"), "{denial}");
    assert_eq!(stack.emails_to_acme().await, 0, "no mail was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_statement_the_sweeper_fails_and_the_failed_delivery_is_left_as_it_was() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (SWEEPER, "ReadAndRewriteJobsAndStatus")).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let failed = stack.deliver_s3("late-co", "default").await;
    let swept = stack.sweep().await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert!(fanned_out.is_ok(), "{fanned_out:?}");
    assert!(failed.is_err_and(|e| e.contains("NoSuchBucket")));
    let error = swept.expect_err("the sweeper may not read status/ or re-write jobs/");
    assert!(error.contains("AccessDenied"), "{error}");
    let status = stack.status("late-co", "default").await.unwrap();
    assert_eq!((status.outcome, status.redrives), (DeliveryOutcome::Failed, 0));
}

/// Onboards tenant `ours`, whose `s3-role` connector names a role of our own
/// account (issue 12, item 1): a bucket of ours and a role allowed to write
/// it that trusts exactly deliver-s3's session with the tenant's
/// ExternalId — the most a role of ours could do to be reachable. moto
/// checks this trust policy (the role is in the caller's account). Returns
/// the role's ARN and the bucket.
async fn onboard_a_tenant_naming_a_role_of_our_own(stack: &Stack) -> (String, String) {
    let bucket = fresh_bucket(&s3_client(&stack.admin), "lp-ours").await;
    let external_id = popularity_reports::tenant::new_external_id("ours").unwrap();
    let deliver_s3_session =
        format!("arn:aws:sts::{OUR_ACCOUNT}:assumed-role/{}-{DELIVER_S3}/{DELIVER_S3}", stack.names.stack_name);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": deliver_s3_session}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}]});
    let write = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:CreateMultipartUpload",
            "s3:UploadPart", "s3:CompleteMultipartUpload"], "Resource": format!("arn:aws:s3:::{bucket}/*")},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListMultipartUploads"],
            "Resource": format!("arn:aws:s3:::{bucket}")}]});
    let iam = aws_sdk_iam::Client::new(&stack.admin);
    let role_name = format!("{}-ours", stack.names.stack_name);
    let role = iam.create_role().role_name(&role_name).assume_role_policy_document(trust.to_string()).send().await;
    let role_arn = role.unwrap().role().unwrap().arn().to_owned();
    iam.put_role_policy()
        .role_name(&role_name)
        .policy_name("write")
        .policy_document(write.to_string())
        .send()
        .await
        .unwrap();
    let prefix = &stack.names.parameters["TenantSecretPrefix"];
    let ours = json!({"schemaVersion": 1, "tenantId": "ours", "plan": "standard", "enabled": true,
        "connectors": {"lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": REGION,
                                "prefix": "", "roleArn": role_arn, "externalId": external_id}},
        "feeds": [{"id": "lake", "connector": "lake", "reports": ["artist"]}]});
    create_secret_under(&stack.admin, &format!("{prefix}ours"), &ours.to_string(), Some(&stack.tenant_key)).await;
    (role_arn, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_s3_cannot_assume_a_role_of_our_own_account_even_one_that_trusts_it() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = Stack::deploy(&endpoint, &[]).await;
    let (role_arn, bucket) = onboard_a_tenant_naming_a_role_of_our_own(&stack).await;
    enforce_iam(&endpoint, 0).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let delivered = stack.deliver_s3("ours", "lake").await;
    let denied = aws_sdk_sts::Client::new(stack.role(DELIVER_S3))
        .assume_role()
        .role_arn(&role_arn)
        .external_id("pr-ours-any")
        .role_session_name(DELIVER_S3)
        .send()
        .await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert_eq!(fanned_out.map(|f| f.jobs_created), Ok(6));
    let error = delivered.expect_err("NeverAssumeOurOwnRoles denies it");
    assert!(error.contains("loading credentials"), "{error}");
    assert_eq!(stack.status("ours", "lake").await.unwrap().outcome, DeliveryOutcome::Failed);
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("sts:AssumeRole"), "{denial}");
    assert!(keys_under(&stack.admin, &bucket, "").await.is_empty(), "nothing written with our own role");
}

/// The control for the test above: the same tenant, the same trusting role,
/// with only the `Deny` removed, is delivered — so it is that statement, not
/// something else, that keeps deliver-s3 out of our own account's roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_never_assume_our_own_roles_the_role_of_our_own_that_trusts_deliver_s3_is_assumed() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = Stack::deploy(&endpoint, &[(DELIVER_S3, "NeverAssumeOurOwnRoles")]).await;
    let (_, bucket) = onboard_a_tenant_naming_a_role_of_our_own(&stack).await;
    enforce_iam(&endpoint, 0).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let delivered = stack.deliver_s3("ours", "lake").await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert!(fanned_out.is_ok(), "{fanned_out:?}");
    assert_eq!(delivered, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)));
    let written = keys_under(&stack.admin, &bucket, "").await;
    assert!(written.iter().any(|k| k.ends_with("_manifest.json")), "{written:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_secrets_statement_deliver_sheets_cannot_load_our_google_key_and_the_sheet_is_untouched() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (DELIVER_SHEETS, "ReadTenantsAndOurGoogleKey")).await;
    let ranked = stack.rank().await;
    let fanned_out = stack.fanout().await;
    let delivered = stack.deliver_sheets().await;
    let config = SheetsConfig::from_lookup(stack.lookup(DELIVER_SHEETS)).unwrap();
    let denied = secrets_manager_client(stack.role(DELIVER_SHEETS))
        .get_secret_value()
        .secret_id(config.service_account_secret.as_deref().unwrap())
        .send()
        .await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(ranked, Ok(RUN.to_owned()));
    assert!(fanned_out.is_ok(), "{fanned_out:?}");
    // Like STS's and SES's, this denial's body does not parse in the SDK:
    // the error names the secret and HTTP 403, the raw answer the denial.
    let error = delivered.expect_err("deliver-sheets may not read its key: its cold start fails");
    assert!(error.contains(config.service_account_secret.as_deref().unwrap()) && error.contains("HTTP 403"), "{error}");
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("secretsmanager:GetSecretValue"), "{denial}");
    assert_eq!(stack.sheet_tabs(), vec!["Notes".to_owned()], "nothing was written to the spreadsheet");
    assert!(stack.status("sheet-co", "top").await.is_none(), "no attempt was made");
}

/// What the console's removal variants need before the console: a run,
/// acme's lake delivered and late-co's delivery failed (enforcement on).
async fn run_until_the_console(stack: &Stack) {
    assert_eq!(stack.rank().await, Ok(RUN.to_owned()));
    assert!(stack.fanout().await.is_ok_and(|f| f.jobs_created == 5));
    assert_eq!(stack.deliver_s3("acme", "lake").await, Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered)));
    assert!(stack.deliver_s3("late-co", "default").await.is_err_and(|e| e.contains("NoSuchBucket")));
}

/// A refusal as the console reports it: a 500 whose detail names the
/// call and the denial (moto's Secrets Manager denials do not parse in the
/// SDK, so those name HTTP 403 instead of the code).
fn refused(answer: &Answer, call: &str) -> bool {
    let detail = answer.detail();
    answer.status == 500 && detail.contains(call) && (detail.contains("AccessDenied") || detail.contains("403"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_tenant_documents_the_console_shows_no_tenant_and_changes_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (CONSOLE, "ReadTenantDocuments")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    // Signing in needs no permission; everything about the tenant does.
    assert!(console.acme_sign_in.id_token().is_some(), "{:?}", console.acme_sign_in);
    for answer in [&console.me, &console.connectors, &console.feeds, &console.create_feed, &console.create_connector] {
        assert!(refused(answer, "GetSecretValue"), "{answer:?}");
    }
    assert_eq!(stack.acme_document().await["feeds"].as_array().map(Vec::len), Some(2), "no feed was added");
    assert!(stack.staging_keys(CONNECTION_TESTS_PREFIX).await.is_empty(), "no connection test was requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_edit_tenant_documents_the_console_reads_but_stores_no_change_and_tests_no_draft() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (CONSOLE, "EditTenantDocuments")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!((console.me.status, console.feeds.status), (200, 200), "reading needs no edit");
    // A feed: the version check before the write (DescribeSecret) is refused.
    assert!(refused(&console.create_feed, "DescribeSecret"), "{:?}", console.create_feed);
    // A connector: its draft version (PutSecretValue) is refused, so it is never tested.
    assert!(refused(&console.create_connector, "PutSecretValue"), "{:?}", console.create_connector);
    let stored = stack.acme_document().await;
    assert_eq!(stored["feeds"].as_array().map(Vec::len), Some(2), "no feed was added");
    assert!(stored["connectors"].get("partner").is_none(), "no connector was added");
    let requests = stack.staging_keys(CONNECTION_TESTS_PREFIX).await;
    assert!(requests.iter().all(|k| !k.ends_with("/partner.json")), "no test of a draft: {requests:?}");
    assert_eq!((console.test_connector.status, console.retry.status), (200, 202), "neither edits the tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_list_tenants_the_console_cannot_compare_a_change_with_the_other_tenants_and_stores_none() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (CONSOLE, "ListTenants")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!((console.me.status, console.connectors.status, console.feeds.status), (200, 200, 200));
    assert!(refused(&console.create_feed, "ListSecrets"), "{:?}", console.create_feed);
    assert!(refused(&console.create_connector, "ListSecrets"), "{:?}", console.create_connector);
    let stored = stack.acme_document().await;
    assert_eq!(stored["feeds"].as_array().map(Vec::len), Some(2), "no feed was added");
    assert!(stored["connectors"].get("partner").is_none(), "no connector was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_staging_reads_the_console_shows_no_delivery_gets_no_test_result_and_retries_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (CONSOLE, "ReadDeliveriesJobsAndTestResults")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(console.me.status, 200, "the tenant is in Secrets Manager");
    assert!(refused(&console.feeds, "feed-index/acme/"), "{:?}", console.feeds);
    // A new feed needs no staging read to be stored, but its answer shows
    // its deliveries, which cannot be read: stored, answered 500.
    assert!(refused(&console.create_feed, "feed-index/acme/"), "{:?}", console.create_feed);
    let feeds = stack.acme_document().await["feeds"].as_array().map(Vec::len);
    assert_eq!(feeds, Some(3), "the feed was stored before its answer failed");
    assert!(refused(&console.retry, "feed-index/late-co/default.json"), "{:?}", console.retry);
    // The request is written and answered; its result cannot be read.
    assert!(refused(&console.test_connector, "connection-test-results/"), "{:?}", console.test_connector);
    assert!(refused(&console.create_connector, "connection-test-results/"), "{:?}", console.create_connector);
    assert!(stack.acme_document().await["connectors"].get("partner").is_none(), "an untested connector is not stored");
    assert_eq!(stack.status("late-co", "default").await.unwrap().redrives, 0, "nothing was re-driven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_listing_staging_the_console_lists_no_feeds_and_does_everything_else() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (CONSOLE, "ListStaging")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    // The feed list lists the tenant's delivery indexes to tell which of
    // those it keeps changed.
    assert_eq!(console.first_unexpected().map(|(step, _)| step), Some("GET /v1/feeds"));
    assert!(refused(&console.feeds, "ListObjectsV2"), "{:?}", console.feeds);
    assert!(refused(&console.feeds, "feed-index/acme/"), "{:?}", console.feeds);
    for (tenant, answer) in &console.feeds_of {
        assert!(refused(answer, &format!("feed-index/{tenant}/")), "{answer:?}");
    }
    // Everything else reads its objects by key (moto answers a missing one
    // 404 without s3:ListBucket).
    assert_eq!(console.create_feed.status, 201, "{:?}", console.create_feed);
    assert_eq!(console.create_connector.status, 201, "{:?}", console.create_connector);
    assert_eq!(console.test_connector.status, 200, "{:?}", console.test_connector);
    assert_eq!(console.retry.status, 202, "{:?}", console.retry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_request_connection_tests_and_retries_the_console_tests_nothing_stores_no_connector_and_redrives_nothing(
) {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (CONSOLE, "RequestConnectionTestsAndRetries")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    assert!(refused(&console.test_connector, "connection-tests/s3/"), "{:?}", console.test_connector);
    assert!(refused(&console.create_connector, "connection-tests/s3/"), "{:?}", console.create_connector);
    assert!(stack.staging_keys(CONNECTION_TESTS_PREFIX).await.is_empty(), "no connection test was requested");
    assert!(stack.acme_document().await["connectors"].get("partner").is_none(), "an untested connector is not stored");
    // The re-drive is counted in the status first: refused, so the job is left alone.
    assert!(refused(&console.retry, "status/"), "{:?}", console.retry);
    assert_eq!(stack.status("late-co", "default").await.unwrap().redrives, 0, "nothing was re-driven");
    assert_eq!(console.create_feed.status, 201, "a feed needs no staging write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_index_deliveries_deliver_s3_delivers_but_the_console_shows_no_delivery_and_cannot_retry_it() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (DELIVER_S3, "IndexDeliveries")).await;
    run_until_the_console(&stack).await;
    let console = stack.use_console().await;
    stop_enforcing_iam(&endpoint).await;

    // The index is best effort: the deliveries happened, their status says so.
    assert_eq!(stack.status("acme", "lake").await.unwrap().outcome, DeliveryOutcome::Delivered);
    assert!(stack.staging_keys("feed-index/").await.is_empty(), "deliver-s3 could not index either delivery");
    // The dashboard reads the index only: it shows nothing, and a retry
    // finds no such delivery.
    assert_eq!(console.feeds.status, 200);
    assert_eq!(console.feeds.last_state("lake"), None, "{:?}", console.feeds);
    assert_eq!(console.retry.status, 404, "{:?}", console.retry);
    assert_eq!(stack.status("late-co", "default").await.unwrap().redrives, 0);
}

/// A refusal of staging as notify reports it: the key it could not touch
/// and moto's code.
fn staging_refused(error: &str, prefix: &str) -> bool {
    error.contains(prefix) && error.contains("AccessDenied")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_events_notify_cannot_read_an_event_and_sends_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (NOTIFY, "ReadEvents")).await;
    run_until_the_console(&stack).await;
    let notified = stack.notify_delivered().await;
    let noticed = stack.notify_failed().await;
    stop_enforcing_iam(&endpoint).await;

    for result in [notified, noticed] {
        let error = result.expect_err("notify may not read notifications/");
        assert!(error.contains("could not read") && staging_refused(&error, "notifications/"), "{error}");
    }
    assert!(stack.receiver.received().await.is_empty(), "nothing reached the webhook");
    assert_eq!(stack.emails_to_late_co().await, 0, "no notice was sent");
    assert!(stack.staging_keys("notification-status/").await.is_empty(), "no send was recorded");
    assert!(stack.staging_keys("notices/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_record_sends_and_notices_notify_sends_nothing_it_could_not_record() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (NOTIFY, "RecordSendsAndNotices")).await;
    run_until_the_console(&stack).await;
    let notified = stack.notify_delivered().await;
    let noticed = stack.notify_failed().await;
    stop_enforcing_iam(&endpoint).await;

    // It reads the event's notification status before sending anything.
    for result in [notified, noticed] {
        let error = result.expect_err("notify may not read or write notification-status/");
        assert!(staging_refused(&error, "notification-status/"), "{error}");
    }
    assert!(stack.receiver.received().await.is_empty(), "nothing reached the webhook");
    assert_eq!(stack.emails_to_late_co().await, 0, "no notice was sent");
    assert!(stack.staging_keys("notification-status/").await.is_empty());
    assert!(stack.staging_keys("notices/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_tenants_notify_cannot_load_the_tenant_and_sends_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (NOTIFY, "ReadTenants")).await;
    run_until_the_console(&stack).await;
    let notified = stack.notify_delivered().await;
    let noticed = stack.notify_failed().await;
    let prefix = &stack.names.parameters["TenantSecretPrefix"];
    let denied =
        secrets_manager_client(stack.role(NOTIFY)).get_secret_value().secret_id(format!("{prefix}acme")).send().await;
    stop_enforcing_iam(&endpoint).await;

    // As for the sheets key: the error names the tenant and HTTP 403, the
    // raw answer the denial.
    for (result, tenant) in [(notified, "acme"), (noticed, "late-co")] {
        let error = result.expect_err("notify may not read tenant secrets");
        assert!(error.contains(&format!("tenant secret of {tenant:?}")) && error.contains("403"), "{error}");
    }
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("secretsmanager:GetSecretValue"), "{denial}");
    assert!(stack.receiver.received().await.is_empty(), "nothing reached the webhook");
    assert_eq!(stack.emails_to_late_co().await, 0, "no notice was sent");
    assert!(stack.staging_keys("notification-status/").await.is_empty(), "the invocation fails and is retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_put_events_on_customer_buses_only_the_bus_is_refused_and_stays_due() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (NOTIFY, "PutEventsOnCustomerBuses")).await;
    run_until_the_console(&stack).await;
    let notified = stack.notify_delivered().await;
    let noticed = stack.notify_failed().await;
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&stack.bus_arn)
        .source("popularity-reports")
        .detail_type("delivery.succeeded")
        .detail("{}")
        .build();
    let denied = aws_sdk_eventbridge::Client::new(stack.role(NOTIFY)).put_events().entries(entry).send().await;
    stop_enforcing_iam(&endpoint).await;

    // A target that refuses does not fail the invocation: it stays due.
    let notified = notified.expect("the webhook is sent; the bus's refusal is recorded");
    assert_eq!((notified.events[0].sent, notified.events[0].accepted), (2, 1), "{notified:?}");
    assert_eq!(
        stack.acme_target_states().await,
        [("webhook".to_owned(), TargetState::Accepted), ("eventbridge".to_owned(), TargetState::Pending)]
    );
    let status = stack.notification_status("acme", "lake", EventType::Succeeded).await.unwrap();
    let detail = &status.targets[1].attempts[0].detail;
    assert!(detail.contains("PutEvents") && detail.contains("403"), "{detail}");
    let denial = denial_answered(denied);
    assert!(denial.contains("AccessDenied") && denial.contains("events:PutEvents"), "{denial}");
    assert_eq!(stack.receiver.received().await.len(), 1, "the webhook is unaffected");
    assert!(noticed.is_ok() && stack.failure_notice_sent().await, "so is the failure notice: {noticed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_send_from_sender_only_the_failure_notice_is_refused_and_left_to_send_on_retry() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = deploy_without(&endpoint, (NOTIFY, "SendFromSenderOnly")).await;
    run_until_the_console(&stack).await;
    let notified = stack.notify_delivered().await;
    let noticed = stack.notify_failed().await;
    stop_enforcing_iam(&endpoint).await;

    let error = noticed.expect_err("notify may not send mail");
    assert!(error.contains("failure notice could not be sent") && error.contains("SendRawEmail"), "{error}");
    assert!(error.contains("403"), "{error}");
    assert_eq!(stack.emails_to_late_co().await, 0, "no notice left");
    assert!(stack.notification_status("late-co", "default", EventType::Failed).await.is_none(), "retried whole");
    // The day's claim is given back, so the retry sends it.
    let state = stack.staging.get("notices/late-co/default.json").await.expect("the notice state");
    let state: Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["failing"], false, "{state}");
    assert!(state.get("lastNoticeOn").is_none_or(Value::is_null), "{state}");
    let notified = notified.expect("acme's targets need no mail");
    assert_eq!(notified.events[0].accepted, 2, "{notified:?}");
}

/// The whole run of the first test, step by step; the name of the first
/// step that does not do what it does with the template's policies, or
/// `None` when every step does.
async fn first_failing_step(stack: &Stack) -> Option<&'static str> {
    let delivered = Ok(JobDisposition::Attempted(DeliveryOutcome::Delivered));
    if stack.rank().await != Ok(RUN.to_owned()) {
        return Some("rank");
    }
    if !stack.fanout().await.is_ok_and(|f| f.jobs_created == 5) {
        return Some("fanout");
    }
    if stack.deliver_s3("acme", "lake").await != delivered {
        return Some("deliver-s3");
    }
    if stack.deliver_email().await != delivered {
        return Some("deliver-email");
    }
    if stack.deliver_gcs().await != delivered {
        return Some("deliver-gcs");
    }
    if stack.deliver_sheets().await != delivered {
        return Some("deliver-sheets");
    }
    if !stack.deliver_s3("late-co", "default").await.is_err_and(|e| e.contains("NoSuchBucket")) {
        return Some("deliver-s3 (missing bucket)");
    }
    if !stack.sweep().await.is_ok_and(|s| s.redriven == 1) {
        return Some("sweeper");
    }
    if !stack.notify_delivered().await.is_ok_and(|n| n.events[0].accepted == 2) {
        return Some("notify");
    }
    if !(stack.notify_failed().await.is_ok() && stack.failure_notice_sent().await) {
        return Some("notify (failure notice)");
    }
    if let Some((step, answer)) = stack.use_console().await.first_unexpected() {
        eprintln!("console: {step} answered {} {}", answer.status, answer.detail());
        return Some("console");
    }
    None
}

/// Statements a whole run does not need on moto, and why: removing any other
/// statement fails a step. A statement that becomes unnecessary (or a new
/// one this run does not use) changes this list and fails the test, so an
/// excess permission cannot slip in unnoticed.
const NOT_EXERCISED_BY_A_RUN: [(&str, &str, &str); 33] = [
    (RANK, "RankFunctionRolePolicy0", SQS),
    (RANK, "ListStaging", MOTO_404),
    (FANOUT, "FanoutFunctionRolePolicy0", SQS),
    (FANOUT, "ListStaging", MOTO_404),
    (
        FANOUT,
        "IndexDeliveries",
        "fanout indexes only the statuses it writes: no feed is skipped or invalid in this run",
    ),
    (FANOUT, "ReadTenants", "moto's BatchGetSecretValue does not check GetSecretValue on each secret"),
    (FANOUT, "DecryptTenantSecretsThroughSecretsManager", NO_KMS),
    (DELIVER_S3, "DeliverS3FunctionRolePolicy0", SQS),
    (DELIVER_S3, "ListStaging", MOTO_404),
    (DELIVER_S3, "ComputeAndReadDeltas", NO_DELTA),
    (DELIVER_S3, "DecryptTenantSecretsThroughSecretsManager", NO_KMS),
    (DELIVER_S3, "NeverAssumeOurOwnRoles", "a Deny: its own two tests show what it refuses"),
    (
        DELIVER_S3,
        "AssumeTheBucketPolicyWriterWithTheTenantTag",
        "no s3-bucket-policy tenant in this run; bucket_policy_sessions_against_moto shows the tagged session",
    ),
    (DELIVER_EMAIL, "DeliverEmailFunctionRolePolicy0", SQS),
    (DELIVER_EMAIL, "ReadTheLinkSignerSecret", SAME_FOR_MOTO),
    (DELIVER_EMAIL, "RateLimitConnectionTests", NO_CONNECTION_TEST),
    (DELIVER_EMAIL, "ComputeAndReadDeltas", NO_DELTA),
    (DELIVER_EMAIL, "DecryptTenantSecretsThroughSecretsManager", NO_KMS),
    (DELIVER_GCS, "DeliverGcsFunctionRolePolicy0", SQS),
    (DELIVER_GCS, "ListStaging", MOTO_404),
    (DELIVER_GCS, "RateLimitConnectionTests", NO_CONNECTION_TEST),
    (DELIVER_GCS, "ComputeAndReadDeltas", NO_DELTA),
    (DELIVER_GCS, "DecryptTenantSecretsThroughSecretsManager", NO_KMS),
    (DELIVER_SHEETS, "DeliverSheetsFunctionRolePolicy0", SQS),
    (DELIVER_SHEETS, "ListStaging", MOTO_404),
    (DELIVER_SHEETS, "RateLimitConnectionTests", NO_CONNECTION_TEST),
    (DELIVER_SHEETS, "DecryptTenantSecretsThroughSecretsManager", NO_KMS),
    (SWEEPER, "SweeperFunctionRolePolicy0", SQS),
    (NOTIFY, "NotifyFunctionRolePolicy0", SQS),
    (NOTIFY, "ListStaging", MOTO_404),
    (NOTIFY, "DecryptTenantSecretsThroughSecretsManager", NO_KMS),
    (
        NOTIFY,
        "NeverPutEventsOnOurOwnBuses",
        "a Deny moto never matches (it authorises EventBridge against `*`); `allows` checks it",
    ),
    (CONSOLE, "UseTenantSecretsKeyThroughSecretsManager", NO_KMS),
];
const NO_CONNECTION_TEST: &str =
    "the run tests only an S3 connector (through the console); probe_limit's tests show the ledger";
const SQS: &str = "SQSSendMessagePolicy: Lambda sends to the failure queue, not the handler";
const MOTO_404: &str = "moto answers a missing object 404 without s3:ListBucket (AWS: 403)";
const NO_KMS: &str = "moto's Secrets Manager never calls KMS";
const NO_DELTA: &str = "no delta feed in this run";
const SAME_FOR_MOTO: &str =
    "its two GetSecretValue statements are both `*` for moto, so either covers the other; `allows` tells them apart";

/// Removes every statement of every function in turn (72 whole runs, a few
/// minutes): run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "72 whole runs; run with --ignored"]
async fn every_statement_a_whole_run_does_not_need_is_listed_with_the_reason() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let full = Stack::deploy(&endpoint, &[]).await;
    let mut not_needed = Vec::new();
    let mut failing = Vec::new();
    for function in FUNCTIONS {
        for statement in full.policies[function].statement_names() {
            let stack = Stack::deploy(&endpoint, &[(function, statement)]).await;
            enforce_iam(&endpoint, 0).await;
            let failed = first_failing_step(&stack).await;
            stop_enforcing_iam(&endpoint).await;
            eprintln!("without {function} {statement}: {}", failed.unwrap_or("every step as with it"));
            match failed {
                None => not_needed.push((function, statement.to_owned())),
                Some(step) => failing.push((function, statement.to_owned(), step)),
            }
        }
    }
    let expected: Vec<(&str, String)> = NOT_EXERCISED_BY_A_RUN.iter().map(|(f, s, _)| (*f, (*s).to_owned())).collect();
    assert_eq!(not_needed, expected, "statements a whole run does not need (others fail: {failing:#?})");
}
