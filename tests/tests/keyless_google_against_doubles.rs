//! Keyless Google through the real deliverers: no Google key anywhere. Our
//! deliverers' AWS roles are sessions on moto; they federate to Google by
//! signing GetCallerIdentity (the project's `google_identity` module), which
//! the token-exchange double verifies by forwarding it to moto's STS, then
//! impersonate the tenant's own service account of ours through the IAM
//! Credentials double. Onboarding creates that account through the IAM
//! double and lets only the deliverers' principal sets mint its tokens.
//! The GCS guard (in front of fake-gcs-server) and the Sheets double accept
//! a tenant identity's token only where the customer granted that address.
//!
//! Shown here: a keyless gcs delivery and a Sheets delivery each as the
//! tenant's own identity; tenant B naming A's bucket or spreadsheet is
//! refused by Google's side (403) and recorded `failed` naming the missing
//! grant, with nothing written; a principal without Token Creator on a
//! tenant's account is refused; a GetCallerIdentity signed by a role the
//! provider does not admit is refused by the exchange; onboarding again
//! changes nothing; tokens are cached across deliveries; no token reaches
//! a status object or a log line; and, from the template, no Google key is
//! in the stack on the keyless path while deliver-gcs federates with
//! exactly its template role under moto's IAM enforcement.

use std::time::Instant;

use aws_config::SdkConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use integration_tests::customer::{
    admin_user, assume_role, assumed_role, enforce_iam, lock_auth_server, stop_enforcing_iam,
};
use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, pinned_now, publish_synthetic_run, run_id,
    staging_store, unique_tenant_prefix,
};
use integration_tests::gcs_guard::GcsGuard;
use integration_tests::google_identity_double::{principal_set_member, GoogleIdentityDouble, TOKEN_CREATOR_ROLE};
use integration_tests::sheets_double::{SheetsDouble, TabSpec};
use integration_tests::template_policies::{function_environment, transformed_template, FunctionPolicy, StackNames};
use integration_tests::{gcs_emulator_endpoint, moto_auth_endpoint, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::config::GcsConfig;
use popularity_reports::delivery::connectors::gcs::{GcsDeliverer, STORAGE_SCOPE};
use popularity_reports::delivery::connectors::sheets::{
    RetryPolicy, SheetsClient, SheetsClients, SheetsDeliverer, SheetsIdentity,
};
use popularity_reports::delivery::{
    deliver_job, parse_job_key, DeliverDeps, DeliveryOutcome, DeliveryStatus, JobDisposition,
};
use popularity_reports::google_identity::{
    deliverer_member, tenant_service_account, FederationConfig, GoogleIamAdmin, ImpersonationError, TenantIdentities,
};
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const ACCOUNT: &str = "123456789012";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/271828182845/locations/global/workloadIdentityPools/reports/providers/aws";
const PROJECT: &str = "popularity-tenants";
const ROWS: u64 = 1_500;
const PART_ROWS: u64 = 1_000;

/// A role created on moto and an SDK configuration of one of its sessions.
struct Role {
    arn: String,
    session: SdkConfig,
}

async fn role(admin: &SdkConfig, hint: &str) -> Role {
    let assumed = assumed_role(admin, hint).await;
    Role { session: assumed.config(admin), arn: assumed.arn }
}

/// Our side: the doubles of Google's STS, IAM and IAM Credentials, the
/// customers' GCS (behind the guard) and Sheets, our deliverers' and
/// onboarding's roles, and a published run in staging.
struct World {
    admin: SdkConfig,
    staging: S3Store,
    prefix: String,
    identity: GoogleIdentityDouble,
    guard: GcsGuard,
    sheets: SheetsDouble,
    federation: FederationConfig,
    deliver_gcs: Role,
    deliver_sheets: Role,
    onboarding: Role,
}

impl World {
    async fn new(hint: &str) -> World {
        let endpoint = moto_endpoint();
        let admin = sdk_config(&endpoint).await;
        let staging = staging_store(&admin, &format!("keyless-{hint}")).await;
        publish_synthetic_run(&staging, run_id(), ROWS, PART_ROWS).await;
        let guard = GcsGuard::start(&gcs_emulator_endpoint());
        let sheets = SheetsDouble::start();
        let identity = GoogleIdentityDouble::start(&endpoint, AUDIENCE, vec![guard.registry(), sheets.registry()]);
        let (deliver_gcs, deliver_sheets, onboarding) = (
            role(&admin, &format!("deliver-gcs-{hint}")).await,
            role(&admin, &format!("deliver-sheets-{hint}")).await,
            role(&admin, &format!("onboarding-{hint}")).await,
        );
        for allowed in [&deliver_gcs, &deliver_sheets, &onboarding] {
            identity.allow_aws_role(&allowed.arn);
        }
        identity.allow_admin_role(&onboarding.arn);
        let external_account = json!({
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
            "token_url": identity.token_url(),
            "credential_source": {
                "environment_id": "aws1",
                "regional_cred_verification_url": format!("{endpoint}/?Action=GetCallerIdentity&Version=2011-06-15"),
            },
        });
        let federation = FederationConfig::from_values(
            Some(&external_account.to_string()),
            Some(PROJECT),
            Some(&identity.endpoint()),
            Some(&identity.endpoint()),
        )
        .unwrap()
        .expect("keyless Google is configured");
        World {
            admin,
            staging,
            prefix: unique_tenant_prefix(hint),
            identity,
            guard,
            sheets,
            federation,
            deliver_gcs,
            deliver_sheets,
            onboarding,
        }
    }

    /// The identities a function running as `role` reaches.
    fn identities_as(&self, role: &Role) -> TenantIdentities {
        popularity_reports::google_identity::tenant_identities(&self.federation, &role.session).unwrap()
    }

    /// `tenant add`'s Google step: the tenant's account, impersonable by
    /// our two deliverers only.
    async fn onboard_identity(&self, tenant: &str) -> String {
        let members: Vec<String> = [&self.deliver_gcs.arn, &self.deliver_sheets.arn]
            .into_iter()
            .map(|arn| deliverer_member(AUDIENCE, arn).unwrap())
            .collect();
        let caller = self.federation.federated_credentials_of(&self.onboarding.session).unwrap();
        let admin = GoogleIamAdmin::new(&self.federation.iam_endpoint, PROJECT, caller);
        admin.ensure_tenant_identity(tenant, &members).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn store_tenant(&self, tenant: &str, connector: serde_json::Value) {
        self.store_tenant_at(&self.prefix, tenant, connector).await;
    }

    /// Under another `prefix`: a tenant our own destination bookkeeping
    /// (fanout's cross-tenant check) does not compare with the others, so
    /// only Google's authorization stands in its way.
    async fn store_tenant_at(&self, prefix: &str, tenant: &str, connector: serde_json::Value) {
        let secret = json!({"schemaVersion": 1, "tenantId": tenant, "plan": "standard",
            "connectors": {"dest": connector}, "feeds": [{"id": "feed", "connector": "dest"}]});
        create_raw_secret(&self.admin, &format!("{prefix}{tenant}"), &secret.to_string()).await;
    }

    fn tenants(&self) -> SecretsManagerTenants {
        self.tenants_at(&self.prefix)
    }

    fn tenants_at(&self, prefix: &str) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), prefix).unwrap()
    }

    async fn fan_out(&self) {
        self.fan_out_at(&self.prefix).await;
    }

    async fn fan_out_at(&self, prefix: &str) {
        let deps = FanoutDeps {
            staging: self.staging.clone(),
            tenants: self.tenants_at(prefix),
            own_buckets: vec![self.staging.bucket().to_owned()],
        };
        fan_out_run(&deps, run_id(), pinned_now()).await.unwrap();
    }

    fn gcs_deps(
        &self,
        identities: TenantIdentities,
    ) -> DeliverDeps<S3Store, SecretsManagerTenants, GcsDeliverer<S3Store>> {
        DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: GcsDeliverer {
                staging: self.staging.clone(),
                endpoint: self.guard.endpoint(),
                identities: Some(identities),
            },
            now: pinned_now,
        }
    }

    fn sheets_deps(
        &self,
        clients: SheetsClients,
    ) -> DeliverDeps<S3Store, SecretsManagerTenants, SheetsDeliverer<S3Store>> {
        self.sheets_deps_at(&self.prefix, clients)
    }

    fn sheets_deps_at(
        &self,
        prefix: &str,
        clients: SheetsClients,
    ) -> DeliverDeps<S3Store, SecretsManagerTenants, SheetsDeliverer<S3Store>> {
        DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants_at(prefix),
            deliverer: SheetsDeliverer { staging: self.staging.clone(), clients, now: pinned_now },
            now: pinned_now,
        }
    }

    fn keyless_sheets(&self) -> SheetsClients {
        let endpoint = self.sheets.endpoint();
        SheetsClients::keyless(
            self.identities_as(&self.deliver_sheets),
            Box::new(move |identity: SheetsIdentity| SheetsClient::new(identity, &endpoint, 6_000, fast_retry())),
        )
    }

    async fn status(&self, tenant: &str) -> DeliveryStatus {
        let body = self.staging.get(&format!("status/{}/{tenant}/feed.json", run_id())).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy { first_backoff: std::time::Duration::from_millis(20), budget: std::time::Duration::from_secs(20) }
}

async fn deliver<D: popularity_reports::delivery::Deliverer>(
    deps: &DeliverDeps<S3Store, SecretsManagerTenants, D>,
    kind: &str,
    tenant: &str,
) -> Result<JobDisposition, String> {
    let parts = parse_job_key(&format!("jobs/{kind}/{}/{tenant}/feed.json", run_id())).unwrap();
    deliver_job(deps, &parts, None).await.map(|r| r.disposition).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_gcs_delivery_writes_as_the_tenants_own_identity_and_another_tenant_cannot_use_the_bucket() {
    let logs = capture_logs();
    let world = World::new("gcs").await;
    let acme = world.onboard_identity("acme").await;
    assert_eq!(acme, tenant_service_account("acme", PROJECT));
    assert_eq!(acme, format!("pr-acme@{PROJECT}.iam.gserviceaccount.com"));
    let intruder = world.onboard_identity("intruder").await;

    // acme's customer grants acme's address on its bucket; the intruder
    // tenant names the same bucket under another prefix.
    let bucket = unique_bucket_name("keyless-acme");
    world.guard.create_bucket(&bucket).await;
    world.guard.grant_object_creator(&bucket, &acme);
    world.store_tenant("acme", json!({"type": "gcs", "bucket": bucket, "prefix": "acme/"})).await;
    world.store_tenant("intruder", json!({"type": "gcs", "bucket": bucket, "prefix": "stolen/"})).await;
    world.fan_out().await;

    let deps = world.gcs_deps(world.identities_as(&world.deliver_gcs));
    let started = Instant::now();
    assert_eq!(deliver(&deps, "gcs", "acme").await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let first = started.elapsed();
    let status = world.status("acme").await;
    assert_eq!(status.outcome, DeliveryOutcome::Delivered);
    let written = world.guard.list_objects(&bucket, "acme/").await;
    assert_eq!(written.len(), 3 * (2 + 1), "three reports of two parts and a manifest: {written:?}");
    // Every upload was made as acme's own identity, never a key.
    let uploads: Vec<_> = world.guard.requests().into_iter().filter(|r| r.object_name.is_some()).collect();
    assert!(!uploads.is_empty());
    assert!(uploads.iter().all(|r| r.client_email.as_deref() == Some(acme.as_str())), "{uploads:?}");

    // The intruder's deliveries run as the intruder's identity, which the
    // bucket refuses: failed, naming the address and the missing role.
    let outcome = deliver(&deps, "gcs", "intruder").await;
    let status = world.status("intruder").await;
    assert_eq!(status.outcome, DeliveryOutcome::Failed, "{outcome:?}");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains(&intruder) && error.contains("roles/storage.objectCreator"), "{error}");
    assert!(world.guard.list_objects(&bucket, "stolen/").await.is_empty(), "nothing of the intruder's is written");

    // Both tokens were minted once and reused: a second delivery of acme
    // (a replay) makes no new exchange or impersonation.
    let minted =
        |world: &World| world.identity.requests().iter().filter(|r| r.path.ends_with(":generateAccessToken")).count();
    let before = minted(&world);
    let exchanges_before = world.identity.requests().iter().filter(|r| r.path == "/v1/token").count();
    let second = Instant::now();
    aws_sdk_s3::Client::new(&world.admin)
        .delete_object()
        .bucket(world.staging.bucket())
        .key(format!("status/{}/acme/feed.json", run_id()))
        .send()
        .await
        .unwrap();
    assert_eq!(deliver(&deps, "gcs", "acme").await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let again = second.elapsed();
    assert_eq!(minted(&world), before, "the tenant's token is cached");
    assert_eq!(world.identity.requests().iter().filter(|r| r.path == "/v1/token").count(), exchanges_before);
    println!("keyless gcs delivery: first {first:?} (exchange + impersonation), replay {again:?} (cached tokens)");

    // No token in a status object or a log line: the doubles' access tokens
    // all start with Google's `ya29.`, and nothing else carries a bearer.
    for tenant in ["acme", "intruder"] {
        let body = world.staging.get(&format!("status/{}/{tenant}/feed.json", run_id())).await.unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(!text.contains("ya29.") && !text.contains("Bearer "), "a token in {tenant}'s status: {text}");
    }
    assert_logs_hold_none_of(&logs, &["ya29.", "Bearer "]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sheets_delivery_writes_as_the_tenants_own_identity_and_another_tenant_cannot_use_the_spreadsheet() {
    let world = World::new("sheets").await;
    let acme = world.onboard_identity("acme").await;
    let intruder = world.onboard_identity("intruder").await;
    let spreadsheet = format!("1Keyless{}", unique_bucket_name("acme").replace('-', ""));
    world.sheets.create_spreadsheet(&spreadsheet, &[TabSpec::new("Sheet1", 1_000, 26)]);
    world.sheets.share(&spreadsheet, &acme);
    let url = format!("https://docs.google.com/spreadsheets/d/{spreadsheet}/edit");
    let connector = json!({"type": "google-sheets", "spreadsheetUrl": url, "maxRows": 100});
    world.store_tenant("acme", connector.clone()).await;
    world.fan_out().await;
    // Fanout would refuse a second tenant naming acme's spreadsheet in the
    // same directory; the intruder sits where that check cannot see it.
    let elsewhere = unique_tenant_prefix("keyless-elsewhere");
    world.store_tenant_at(&elsewhere, "intruder", connector).await;
    world.fan_out_at(&elsewhere).await;

    let deps = world.sheets_deps(world.keyless_sheets());
    assert_eq!(deliver(&deps, "sheets", "acme").await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let tabs: Vec<String> = world.sheets.tabs(&spreadsheet).into_iter().map(|t| t.title).collect();
    assert!(tabs.contains(&"track_popularity".to_owned()) && tabs.contains(&"_popularity".to_owned()), "{tabs:?}");
    let writes: Vec<_> = world.sheets.requests().into_iter().filter(|r| r.is_write).collect();
    assert!(!writes.is_empty());
    assert!(writes.iter().all(|r| r.client_email.as_deref() == Some(acme.as_str())), "{writes:?}");

    let writes_before = world.sheets.requests().iter().filter(|r| r.is_write && r.status == 200).count();
    let deps = world.sheets_deps_at(&elsewhere, world.keyless_sheets());
    let outcome = deliver(&deps, "sheets", "intruder").await;
    let status = world.status("intruder").await;
    assert_eq!(status.outcome, DeliveryOutcome::Failed, "{outcome:?}");
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains(&intruder) && error.contains("not shared"), "{error}");
    let writes_after = world.sheets.requests().iter().filter(|r| r.is_write && r.status == 200).count();
    assert_eq!(writes_after, writes_before, "nothing of the intruder's is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_our_deliverers_may_impersonate_a_tenant_and_only_admitted_roles_federate() {
    let world = World::new("refusals").await;
    let acme = world.onboard_identity("acme").await;

    // A role the provider admits, but not bound to Token Creator on acme's
    // account (as one of ours that onboarding did not name would be).
    let stranger = role(&world.admin, "stranger").await;
    world.identity.allow_aws_role(&stranger.arn);
    let error = world.identities_as(&stranger).access_token("acme", &[STORAGE_SCOPE]).await.unwrap_err();
    assert!(matches!(error, ImpersonationError::NotAllowed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&acme) && message.contains("serviceAccountTokenCreator"), "{message}");
    assert!(message.contains("our side"), "our problem, not the customer's: {message}");

    // A role the provider does not admit: the exchange refuses its signed
    // GetCallerIdentity, before any impersonation.
    let outsider = role(&world.admin, "outsider").await;
    let error = world.identities_as(&outsider).access_token("acme", &[STORAGE_SCOPE]).await.unwrap_err();
    assert!(matches!(error, ImpersonationError::Federation(_)), "{error:?}");
    assert!(error.to_string().contains("federation"), "{error}");

    // Our deliverer does get a token, and the double's policy binds only
    // our two deliverers' principal sets.
    world.identities_as(&world.deliver_gcs).access_token("acme", &[STORAGE_SCOPE]).await.unwrap();
    let policy = world.identity.iam_policy(&acme).expect("acme's account has a policy");
    let bound: Vec<&str> = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["role"] == TOKEN_CREATOR_ROLE)
        .flat_map(|b| b["members"].as_array().unwrap().iter().filter_map(|m| m.as_str()))
        .collect();
    let mut expected = vec![
        principal_set_member(AUDIENCE, &world.deliver_gcs.arn).unwrap(),
        principal_set_member(AUDIENCE, &world.deliver_sheets.arn).unwrap(),
    ];
    expected.sort();
    let mut bound_sorted: Vec<String> = bound.iter().map(|m| (*m).to_owned()).collect();
    bound_sorted.sort();
    assert_eq!(bound_sorted, expected);

    // Onboarding again is a no-op: the same account, no duplicate members.
    assert_eq!(world.onboard_identity("acme").await, acme);
    let again = world.identity.iam_policy(&acme).unwrap();
    assert_eq!(again["bindings"], policy["bindings"]);
    // Our member strings are the double's (Google's default AWS mapping).
    assert_eq!(
        deliverer_member(AUDIENCE, &world.deliver_gcs.arn),
        principal_set_member(AUDIENCE, &world.deliver_gcs.arn)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreadsheet_still_shared_with_the_common_address_is_written_as_it_until_re_shared() {
    use integration_tests::google_keys::TestServiceAccount;
    let world = World::new("transition").await;
    world.onboard_identity("acme").await;
    let common = TestServiceAccount::generate("popularity-common@our-project.iam.gserviceaccount.com");
    world.sheets.register(&common);
    let spreadsheet = format!("1Transition{}", unique_bucket_name("t").replace('-', ""));
    world.sheets.create_spreadsheet(&spreadsheet, &[TabSpec::new("Sheet1", 1_000, 26)]);
    world.sheets.share(&spreadsheet, &common.client_email);
    let url = format!("https://docs.google.com/spreadsheets/d/{spreadsheet}/edit");
    world.store_tenant("acme", json!({"type": "google-sheets", "spreadsheetUrl": url, "maxRows": 50})).await;
    world.fan_out().await;

    let identity = SheetsIdentity::from_key_file("test/common", &common.key_json_string()).unwrap();
    let clients = world.keyless_sheets().with_common_fallback(SheetsClient::new(
        identity,
        &world.sheets.endpoint(),
        6_000,
        fast_retry(),
    ));
    let deps = world.sheets_deps(clients);
    assert_eq!(deliver(&deps, "sheets", "acme").await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let writes: Vec<_> = world.sheets.requests().into_iter().filter(|r| r.is_write && r.status == 200).collect();
    assert!(!writes.is_empty());
    assert!(writes.iter().all(|r| r.client_email.as_deref() == Some(common.client_email.as_str())), "{writes:?}");

    // A Sheets tenant not yet given its own identity (keyless deployed
    // before `tenant add` ran for it) is written as the common account too.
    let elsewhere = unique_tenant_prefix("keyless-not-onboarded");
    let connector = json!({"type": "google-sheets", "spreadsheetUrl": url, "maxRows": 50});
    world.store_tenant_at(&elsewhere, "newcomer", connector).await;
    world.fan_out_at(&elsewhere).await;
    let identity = SheetsIdentity::from_key_file("test/common", &common.key_json_string()).unwrap();
    let clients = world.keyless_sheets().with_common_fallback(SheetsClient::new(
        identity,
        &world.sheets.endpoint(),
        6_000,
        fast_retry(),
    ));
    let deps = world.sheets_deps_at(&elsewhere, clients);
    assert_eq!(
        deliver(&deps, "sheets", "newcomer").await.unwrap(),
        JobDisposition::Attempted(DeliveryOutcome::Delivered)
    );
}

/// The stack's names for resolving the template, keyless Google on and
/// the older Google key secret left at its default (none).
fn keyless_stack_names(external_account: &str) -> StackNames {
    StackNames::new("keyless", ACCOUNT, "us-east-1")
        .parameter("DataBucketName", "example-data")
        .parameter("SesSender", "reports@example.com")
        .parameter("GoogleProjectId", PROJECT)
        .parameter("GoogleExternalAccountConfig", external_account)
        .resource("StagingBucket", "keyless-staging-123456789012-us-east-1")
        .attribute(
            "TenantSecretsKey.Arn",
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .attribute("FailedEventsQueue.QueueName", "keyless-failed-events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_keyless_path_the_stack_holds_no_google_key_and_deliver_gcs_federates_with_its_template_role_alone() {
    let template = transformed_template();
    let external_account = json!({"type": "external_account", "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request", "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"environment_id": "aws1",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"}})
    .to_string();
    let names = keyless_stack_names(&external_account);

    // No secret of the stack holds a Google key, and neither Google
    // deliverer may read any secret but the tenants'.
    let resources = template["Resources"].as_object().unwrap();
    let secrets: Vec<&String> =
        resources.iter().filter(|(_, r)| r["Type"] == "AWS::SecretsManager::Secret").map(|(id, _)| id).collect();
    assert_eq!(secrets, ["LinkSignerSecret"], "the only secret the stack creates is the link signer's");
    for function in ["DeliverGcsFunction", "DeliverSheetsFunction"] {
        let environment = function_environment(template, function, &names).unwrap();
        assert!(!environment.contains_key("GOOGLE_SERVICE_ACCOUNT_SECRET"), "{function}: {environment:?}");
        assert_eq!(environment.get("GOOGLE_PROJECT_ID").map(String::as_str), Some(PROJECT), "{function}");
        assert_eq!(environment.get("GOOGLE_EXTERNAL_ACCOUNT_CONFIG"), Some(&external_account), "{function}");
        let policy = FunctionPolicy::of(template, function, &names).unwrap_or_else(|e| panic!("{e}"));
        let readable = |secret: &str| {
            policy.allows(
                "secretsmanager:GetSecretValue",
                &format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{secret}"),
            )
        };
        assert!(readable("popularity-reports/tenants/acme-AbC123"), "{function} reads tenant secrets");
        assert!(!readable("popularity-reports/google-service-account-AbC123"), "{function} reads no Google key");
    }

    // deliver-gcs with exactly its template role, under IAM enforcement:
    // federating needs no AWS permission beyond what it has (a signed
    // GetCallerIdentity is allowed to every principal), and the double
    // verifies the signature against the enforcing server.
    let auth = moto_auth_endpoint();
    let _serial = lock_auth_server(&auth).await;
    let admin = admin_user(&auth).await;
    let policy = FunctionPolicy::of(template, "DeliverGcsFunction", &names).unwrap();
    let iam = aws_sdk_iam::Client::new(&admin);
    let role_name: String = unique_bucket_name("keyless-deliver-gcs").chars().take(64).collect();
    let created = iam
        .create_role()
        .role_name(&role_name)
        .assume_role_policy_document(policy.trust_policy.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateRole: {}", DisplayErrorContext(&e)));
    for (policy_name, document) in policy.moto_document(ACCOUNT, &[]).0 {
        iam.put_role_policy()
            .role_name(&role_name)
            .policy_name(&policy_name)
            .policy_document(document)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutRolePolicy: {}", DisplayErrorContext(&e)));
    }
    let role_arn = created.role().unwrap().arn().to_owned();
    let session = assume_role(&admin, &role_arn, "deliver-gcs").await.config(&admin);

    let sheets = SheetsDouble::start();
    let double = GoogleIdentityDouble::start(&auth, AUDIENCE, vec![sheets.registry()]);
    double.allow_aws_role(&role_arn);
    let account = double.create_service_account(PROJECT, "pr-acme");
    double.grant(&account, TOKEN_CREATOR_ROLE, &double.member_of_role(&role_arn));

    // The function's own configuration, from the template's environment
    // (the external account pointed at the doubles, as a local run does).
    let mut environment = function_environment(template, "DeliverGcsFunction", &names).unwrap();
    let local = json!({"type": "external_account", "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request", "token_url": double.token_url(),
        "credential_source": {"environment_id": "aws1",
            "regional_cred_verification_url": format!("{auth}/?Action=GetCallerIdentity&Version=2011-06-15")}});
    environment.insert("GOOGLE_EXTERNAL_ACCOUNT_CONFIG".to_owned(), local.to_string());
    environment.insert("GOOGLE_IAM_CREDENTIALS_ENDPOINT".to_owned(), double.endpoint());
    let config = GcsConfig::from_lookup(|name| environment.get(name).cloned()).unwrap();
    let google = config.google.expect("keyless Google is on");

    enforce_iam(&auth, 0).await;
    let identities = popularity_reports::google_identity::tenant_identities(&google, &session).unwrap();
    let token = identities.access_token("acme", &[STORAGE_SCOPE]).await;
    stop_enforcing_iam(&auth).await;
    token.unwrap_or_else(|e| panic!("deliver-gcs's template role could not federate: {e}"));
    assert_eq!(identities.address("acme"), account);
}
