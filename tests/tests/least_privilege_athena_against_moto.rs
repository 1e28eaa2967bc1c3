//! Least privilege of the Athena engine's two new roles, as far as moto goes
//! (part of the least-privilege suite; the functions' roles are in
//! `least_privilege_against_moto.rs`). The roles of `PublishFunction` and
//! `RankStateMachine` are taken from the transformed template, resolved to
//! this test's names, and created on the moto server reserved for IAM
//! enforcement (`MOTO_AUTH_ENDPOINT`). With enforcement on:
//! - the publish function's role plans the run (`plan`), then publishes
//!   Athena's output of it (`publish`) with the real handler;
//! - the state machine's role does in S3 what Athena does with its
//!   credentials: reads the inputs and writes the attempt's output (UNLOAD's
//!   files, data manifests) into `athena-results/<runId>/<attempt>/`;
//! - each role is refused what it must not do (the state machine writing
//!   `reports/`, `manifests/` or the data bucket; publish writing
//!   `athena-results/` or reading `jobs/`), and a statement removed fails
//!   its step with nothing published.
//!
//! moto runs no SQL, and it authorises Athena, Glue, Lambda and CloudWatch
//! Logs requests against `*` (it names no resource for them), so those
//! statements are widened to `*` for moto and their resource patterns
//! checked here against the ARNs the state machine's definition uses
//! ([`FunctionPolicy::allows`]); every Task of `statemachine/rank.asl.json`
//! is checked to be allowed that way. Conditions (`s3:prefix`) are not
//! evaluated by moto.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::DisplayErrorContext;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use integration_tests::athena_output::AthenaOutput;
use integration_tests::customer::{
    admin_user, enforce_iam, keys_under, lock_auth_server, stop_enforcing_iam, with_credentials,
};
use integration_tests::template_policies::{function_environment, transformed_template, FunctionPolicy, StackNames};
use integration_tests::{fresh_bucket, moto_auth_endpoint, unique_bucket_name};
use popularity_reports::athena::plan::RunPlan;
use popularity_reports::athena::sql::Attempt;
use popularity_reports::athena::RunFolders;
use popularity_reports::config::PublishConfig;
use popularity_reports::domain::RunId;
use popularity_reports::handlers::publish::{
    handle_run_step, PlanEvent, PublishEvent, RunStepDeps, RunStepEvent, RunStepResponse,
};
use popularity_reports::manifest::{Engine, RunManifest};
use popularity_reports::rank::{rank_run, RankSettings};
use popularity_reports::sample::{self, SampleSpec};
use popularity_reports::scoring::ScoringRules;
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use serde_json::Value;

const OUR_ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const DATA_PREFIX: &str = "warehouse/";
const DATABASE: &str = "popularity_reports";
const PUBLISH: &str = "PublishFunction";
const MACHINE: &str = "RankStateMachine";
const RUN_TIME: &str = "2026-11-16T03:00:00Z";
const ATTEMPT: &str = "lp-exec-1";

fn run_time() -> DateTime<Utc> {
    RUN_TIME.parse().unwrap()
}

fn run() -> RunId {
    RunId::from_time(run_time())
}

/// The two roles on the auth server, what a run needs, and rank's run of
/// the same data (whose reports make Athena's output).
struct AthenaStack {
    admin: SdkConfig,
    staging: S3Store,
    data_bucket: String,
    credentials: BTreeMap<&'static str, SdkConfig>,
    publish_environment: BTreeMap<String, String>,
    ranked: S3Store,
    ranked_manifest: RunManifest,
}

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
    let credentials = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        expiry,
        "lp-athena",
    );
    with_credentials(admin, credentials)
}

impl AthenaStack {
    /// The roles as the template writes them, minus `removed` (role's
    /// logical id, statement name), with enforcement off.
    async fn deploy(endpoint: &str, removed: &[(&str, &str)]) -> Self {
        let admin = admin_user(endpoint).await;
        let s3 = s3_client(&admin);
        let stack_name = unique_bucket_name("lpa");
        assert!(stack_name.len() <= 32, "{stack_name}");
        let names = StackNames::new(&stack_name, OUR_ACCOUNT, REGION);
        let staging_bucket = names.staging_bucket();
        s3.create_bucket().bucket(&staging_bucket).send().await.unwrap();
        let data_bucket = fresh_bucket(&s3, "lpa-data").await;
        let data = S3Store::new(s3.clone(), data_bucket.clone(), DATA_PREFIX);
        let spec =
            SampleSpec { tracks: 2_000, days: 10, end_date: NaiveDate::from_ymd_opt(2026, 11, 15).unwrap(), seed: 5 };
        sample::generate(&data, &spec, &|_| {}).await.unwrap();
        let ranked = S3Store::new(s3.clone(), fresh_bucket(&s3, "lpa-ranked").await, "");
        let settings =
            RankSettings { rules: ScoringRules::default(), part_rows: 700, threads: 2, ..RankSettings::default() };
        let ranked_manifest = rank_run(&data, &ranked, &settings, run_time()).await.unwrap().manifest;

        let names = names
            .parameter("DataBucketName", &data_bucket)
            .parameter("DataPrefix", DATA_PREFIX)
            .parameter("AthenaDatabaseName", DATABASE)
            .parameter("RankEngine", "athena")
            .parameter("PartRows", "700")
            .resource("StagingBucket", &staging_bucket)
            .resource("PublishFunction", &format!("{stack_name}-publish"))
            .resource("RankFunction", &format!("{stack_name}-rank"))
            .resource("AthenaWorkGroup", &format!("{stack_name}-ranking"))
            .attribute("FailedEventsQueue.QueueName", &format!("{stack_name}-failed-events"));
        let template = transformed_template();
        let iam = aws_sdk_iam::Client::new(&admin);
        let mut credentials = BTreeMap::new();
        for logical_id in [PUBLISH, MACHINE] {
            let mut policy = if logical_id == MACHINE {
                FunctionPolicy::of_state_machine(template, logical_id, &names)
            } else {
                FunctionPolicy::of(template, logical_id, &names)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            for (_, statement) in removed.iter().filter(|(id, _)| *id == logical_id) {
                policy = policy.without(statement);
            }
            let role_name = format!("{stack_name}-{logical_id}");
            let role = iam
                .create_role()
                .role_name(&role_name)
                .assume_role_policy_document(policy.trust_policy.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateRole {role_name}: {}", DisplayErrorContext(&e)));
            let (documents, adjustments) = policy.moto_document(OUR_ACCOUNT, &[]);
            eprintln!("{logical_id}: adjusted for moto: {adjustments:#?}");
            for (policy_name, document) in documents {
                iam.put_role_policy()
                    .role_name(&role_name)
                    .policy_name(&policy_name)
                    .policy_document(document)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("PutRolePolicy {role_name} {policy_name}: {}", DisplayErrorContext(&e)));
            }
            let arn = role.role().expect("the role").arn().to_owned();
            credentials.insert(logical_id, assume(&admin, &arn, logical_id).await);
        }
        let publish_environment = function_environment(template, PUBLISH, &names).unwrap();
        let staging = S3Store::new(s3, staging_bucket, "");
        Self { admin, staging, data_bucket, credentials, publish_environment, ranked, ranked_manifest }
    }

    fn output(&self) -> AthenaOutput {
        AthenaOutput {
            folders: RunFolders::new(self.staging.bucket(), ""),
            run: run(),
            attempt: Attempt::new(ATTEMPT).unwrap(),
            files: 4,
            block: 300,
            row_group_rows: 1_000,
        }
    }

    /// The publish function as its `main.rs` builds it, with its role.
    fn publish_deps(&self) -> RunStepDeps<S3Store, S3Store> {
        let config = PublishConfig::from_lookup(|name| self.publish_environment.get(name).cloned()).unwrap();
        let s3 = s3_client(&self.credentials[PUBLISH]);
        let rank = &config.rank;
        RunStepDeps {
            data: S3Store::new(s3.clone(), rank.data_bucket.clone(), &rank.data_prefix),
            staging: S3Store::new(s3, rank.staging_bucket.clone(), ""),
            data_folders: RunFolders::new(&rank.data_bucket, &rank.data_prefix),
            staging_folders: RunFolders::new(&rank.staging_bucket, ""),
            plan: config.plan_settings(),
            publish: config.publish_settings(),
        }
    }

    async fn plan(&self) -> Result<RunPlan, String> {
        let event = RunStepEvent::Plan(PlanEvent { time: run_time(), attempt: ATTEMPT.to_owned() });
        match handle_run_step(&self.publish_deps(), event).await.map_err(|e| e.to_string())? {
            RunStepResponse::Plan(plan) => Ok(plan),
            other => panic!("plan answered {other:?}"),
        }
    }

    async fn publish(&self, plan: RunPlan) -> Result<(), String> {
        let event = RunStepEvent::Publish(PublishEvent { plan, results: self.output().outputs() });
        handle_run_step(&self.publish_deps(), event).await.map(drop).map_err(|e| e.to_string())
    }

    /// The state machine's role's staging, for what Athena writes with it.
    fn machine_staging(&self) -> S3Store {
        S3Store::new(s3_client(&self.credentials[MACHINE]), self.staging.bucket().to_owned(), "")
    }

    /// What Athena reads with the state machine's credentials: a catalogue
    /// object and a plays object.
    async fn machine_reads_the_inputs(&self) -> Result<(), String> {
        let data = S3Store::new(s3_client(&self.credentials[MACHINE]), self.data_bucket.clone(), DATA_PREFIX);
        for prefix in ["catalogue/", "plays/"] {
            let listed = data.list(prefix).await.map_err(|e| e.to_string())?;
            let first = listed.first().ok_or_else(|| format!("nothing under {prefix}"))?;
            data.get(&first.key).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn manifests(&self) -> Vec<String> {
        keys_under(&self.admin, self.staging.bucket(), "manifests/").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_function_and_the_state_machine_run_a_whole_athena_run_with_exactly_their_template_roles() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = AthenaStack::deploy(&endpoint, &[]).await;
    // Objects the roles must not read, put there beforehand.
    stack
        .staging
        .put(&format!("jobs/s3/{}/acme/lake.json", run()), Bytes::from_static(b"{}"), "application/json")
        .await
        .unwrap();

    enforce_iam(&endpoint, 0).await;
    let plan = stack.plan().await;
    let read = stack.machine_reads_the_inputs().await;
    // Athena's output, written with the state machine's credentials.
    stack.output().write_from(&stack.ranked, &stack.ranked_manifest, &stack.machine_staging()).await;
    let published = match &plan {
        Ok(plan) => stack.publish(plan.clone()).await,
        Err(error) => Err(error.clone()),
    };
    let machine = stack.machine_staging();
    let machine_writes_reports =
        machine.put(&format!("reports/track_popularity/{}/x.json", run()), Bytes::new(), "text/plain").await;
    let machine_writes_manifests = machine.put("manifests/x.json", Bytes::new(), "text/plain").await;
    let machine_data = S3Store::new(s3_client(&stack.credentials[MACHINE]), stack.data_bucket.clone(), DATA_PREFIX);
    let machine_writes_inputs = machine_data.put("catalogue/x.parquet", Bytes::new(), "application/octet-stream").await;
    let publish_staging = S3Store::new(s3_client(&stack.credentials[PUBLISH]), stack.staging.bucket().to_owned(), "");
    let publish_writes_results =
        publish_staging.put(&format!("athena-results/{}/{ATTEMPT}/x", run()), Bytes::new(), "text/plain").await;
    let publish_reads_jobs = publish_staging.get(&format!("jobs/s3/{}/acme/lake.json", run())).await;
    stop_enforcing_iam(&endpoint).await;

    let plan = plan.expect("publish's role plans the run");
    assert_eq!((plan.engine, plan.already_published), (Engine::Athena, false));
    assert_eq!(plan.queries.len(), 5, "{:?}", plan.queries.keys());
    let folder = format!("s3://{}/athena-results/{}/{ATTEMPT}/", stack.staging.bucket(), run());
    assert!(plan.queries.values().all(|q| q.contains(&format!("TO '{folder}"))), "every UNLOAD into the run's folder");
    read.expect("the state machine's role reads the inputs");
    published.expect("publish's role publishes Athena's output");
    assert_eq!(stack.manifests().await, vec![format!("manifests/{}.json", run())]);
    let manifest: RunManifest =
        serde_json::from_slice(&stack.staging.get(&format!("manifests/{}.json", run())).await.unwrap()).unwrap();
    assert_eq!(manifest.engine, Some(Engine::Athena));
    assert_eq!(
        manifest.reports, stack.ranked_manifest.reports,
        "the same parts as rank's, sizes and SHA-256s included"
    );

    for (what, result) in [
        ("the state machine writing reports/", machine_writes_reports.map(drop)),
        ("the state machine writing manifests/", machine_writes_manifests.map(drop)),
        ("the state machine writing the data bucket", machine_writes_inputs.map(drop)),
        ("publish writing athena-results/", publish_writes_results.map(drop)),
        ("publish reading jobs/", publish_reads_jobs.map(drop)),
    ] {
        let refused = result.expect_err(what).to_string();
        assert!(refused.contains("AccessDenied"), "{what}: {refused}");
    }
}

#[test]
fn what_moto_cannot_scope_athena_glue_and_lambda_is_scoped_to_the_runs_resources() {
    let template = transformed_template();
    let stack_name = "popularity-reports";
    let names = StackNames::new(stack_name, OUR_ACCOUNT, REGION)
        .parameter("DataBucketName", "example-data")
        .parameter("AthenaDatabaseName", DATABASE)
        .parameter("RankEngine", "auto")
        .resource("PublishFunction", &format!("{stack_name}-publish"))
        .resource("RankFunction", &format!("{stack_name}-rank"))
        .attribute("FailedEventsQueue.QueueName", "q");
    let machine = FunctionPolicy::of_state_machine(template, MACHINE, &names).unwrap();
    let arn = |service: &str, resource: &str| format!("arn:aws:{service}:{REGION}:{OUR_ACCOUNT}:{resource}");
    let workgroup = arn("athena", &format!("workgroup/{stack_name}-ranking"));
    let function = |name: &str| arn("lambda", &format!("function:{stack_name}-{name}"));

    // Every Task of the definition, with the action it needs on the
    // resource it names, is allowed.
    let definition: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../statemachine/rank.asl.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut tasks = Vec::new();
    collect_tasks(&definition["States"], &mut tasks);
    assert!(tasks.len() >= 8, "{tasks:?}");
    for (state, resource, parameters) in &tasks {
        match resource.as_str() {
            "arn:aws:states:::lambda:invoke" => {
                let target = match parameters["FunctionName"].as_str() {
                    Some("${PublishFunctionArn}") => function("publish"),
                    Some("${RankFunctionArn}") => function("rank"),
                    other => panic!("{state} invokes {other:?}"),
                };
                assert!(machine.allows("lambda:InvokeFunction", &target), "{state}: {target}");
            }
            "arn:aws:states:::athena:startQueryExecution.sync" => {
                assert_eq!(parameters["WorkGroup"], "${AthenaWorkGroup}", "{state}");
                for action in ["athena:StartQueryExecution", "athena:GetQueryExecution", "athena:StopQueryExecution"] {
                    assert!(machine.allows(action, &workgroup), "{state}: {action}");
                }
            }
            other => panic!("{state}: a Task of {other}, which this test does not know"),
        }
    }
    // And nothing beyond the run's resources.
    assert!(!machine.allows("athena:StartQueryExecution", &arn("athena", "workgroup/primary")));
    assert!(machine.allows("glue:GetTable", &arn("glue", &format!("table/{DATABASE}/run_scores"))));
    assert!(machine.allows("glue:GetTable", &arn("glue", &format!("table/{DATABASE}/plays"))));
    assert!(!machine.allows("glue:GetTable", &arn("glue", "table/other_database/plays")));
    assert!(
        !machine.allows("glue:CreateTable", &arn("glue", &format!("table/{DATABASE}/x"))),
        "no DDL: partitions are projected"
    );
    assert!(!machine.allows("lambda:InvokeFunction", &function("fanout")));
    let staging = format!("arn:aws:s3:::{stack_name}-staging-{OUR_ACCOUNT}-{REGION}");
    assert!(machine.allows("s3:PutObject", &format!("{staging}/athena-results/20261116030000/exec/track_scores/f")));
    assert!(
        !machine.allows("s3:PutObject", &format!("{staging}/athena-results/daily-plays/x")),
        "a run's folder is a runId's"
    );
    assert!(
        !machine.allows("s3:PutObject", &format!("{staging}/reports/track_popularity/20261116030000/part-001.json"))
    );
    let publish = FunctionPolicy::of(template, PUBLISH, &names).unwrap();
    assert!(publish.allows("s3:GetObject", &format!("{staging}/athena-results/20261116030000/exec/run_inputs/f")));
    assert!(!publish.allows("s3:PutObject", &format!("{staging}/athena-results/20261116030000/exec/f")));
    assert!(!publish.allows("athena:StartQueryExecution", &workgroup), "publish starts no query");
}

/// Every Task state of a definition (Parallel branches included).
fn collect_tasks(states: &Value, out: &mut Vec<(String, String, Value)>) {
    for (name, state) in states.as_object().unwrap() {
        match state["Type"].as_str() {
            Some("Task") => {
                out.push((name.clone(), state["Resource"].as_str().unwrap().to_owned(), state["Parameters"].clone()))
            }
            Some("Parallel") => {
                for branch in state["Branches"].as_array().unwrap() {
                    collect_tasks(&branch["States"], out);
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_athena_output_the_publish_step_is_refused_and_publishes_nothing() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = AthenaStack::deploy(&endpoint, &[(PUBLISH, "ReadAthenaOutput")]).await;
    stack.output().write_from(&stack.ranked, &stack.ranked_manifest, &stack.staging).await;
    enforce_iam(&endpoint, 0).await;
    let plan = stack.plan().await;
    let published = match &plan {
        Ok(plan) => stack.publish(plan.clone()).await,
        Err(error) => Err(error.clone()),
    };
    stop_enforcing_iam(&endpoint).await;
    plan.expect("planning reads no output");
    let error = published.expect_err("publish may not read the run's folder");
    assert!(error.contains("AccessDenied") && error.contains("athena-results/"), "{error}");
    assert!(stack.manifests().await.is_empty());
    assert!(keys_under(&stack.admin, stack.staging.bucket(), "reports/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_publish_reports_and_manifest_the_first_write_is_refused_and_nothing_is_published() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = AthenaStack::deploy(&endpoint, &[(PUBLISH, "PublishReportsAndManifest")]).await;
    stack.output().write_from(&stack.ranked, &stack.ranked_manifest, &stack.staging).await;
    enforce_iam(&endpoint, 0).await;
    let published = match stack.plan().await {
        Ok(plan) => stack.publish(plan).await,
        Err(error) => Err(error),
    };
    stop_enforcing_iam(&endpoint).await;
    let error = published.expect_err("publish may not write reports/");
    assert!(error.contains("AccessDenied") && error.contains("reports/track_popularity"), "{error}");
    assert!(stack.manifests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_write_the_runs_folder_athenas_output_cannot_be_written_with_the_state_machines_credentials() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let stack = AthenaStack::deploy(&endpoint, &[(MACHINE, "WriteTheRunsFolder")]).await;
    enforce_iam(&endpoint, 0).await;
    let key = stack.output().file_key(popularity_reports::athena::sql::RunQuery::TrackScores, 0);
    let written = stack.machine_staging().put(&key, Bytes::from_static(b"PAR1"), "application/octet-stream").await;
    let read = stack.machine_reads_the_inputs().await;
    stop_enforcing_iam(&endpoint).await;
    let refused = written.expect_err("the UNLOAD's write is refused").to_string();
    assert!(refused.contains("AccessDenied"), "{refused}");
    read.expect("reading the inputs is another statement");
}
