//! `template.yaml` against the code it deploys: every crate in `functions/`
//! is a function of the template (by its `Binary:` build property) and the
//! other way round; every sample event in `events/<function>/` parses as the
//! event type of that function and is routed to it by the template (the
//! schedule for `rank` and `sweeper`, the S3 notification filters for the others); every
//! environment variable a function's configuration reads is set for it in
//! the template, and the defaults of the parameters feeding them are values
//! the configuration accepts; `events/env.json` (for `sam local invoke
//! --env-vars`) sets them all, and `AWS_ENDPOINT_URL` to the local emulator,
//! each declared by the template (SAM ignores variables it does not declare).
//! Security and pacing the lints cannot judge: every function has a
//! concurrency cap parameter (-1 = none); the tenant secrets key lets only
//! the functions that read tenant secrets and the onboarding role decrypt;
//! DKIM and the bounce and complaint topic sit behind their conditions;
//! the metrics that need a person (runs without plays, re-drives exhausted)
//! have alarms on exactly what the code emits.
//!
//! The workspace has no YAML crate, and these checks need only the block
//! structure of the template, so [`yaml`] is a small reader of that subset
//! (block maps and sequences, plain and quoted scalars, folded `>-`
//! scalars, tags kept as text). It is not a general YAML parser: the
//! template's lints (`scripts/check-template.sh`) check the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::s3::S3Event;
use popularity_reports::config::{
    DeliveryConfig, EmailConfig, GcsConfig, PublishConfig, RankConfig, SheetsConfig, SweeperConfig,
};
use popularity_reports::connector_registry::DELIVERER_FUNCTIONS;
use popularity_reports::delivery::{decode_s3_event_key, CONNECTION_TESTS_PREFIX, JOBS_PREFIX};
use popularity_reports::handlers::publish::RunStepEvent;
use yaml::Yaml;

/// Stack name, account and region the sample events were written for
/// (samconfig.toml's default stack name, the documentation account id).
const SAMPLE_STACK_NAME: &str = "popularity-reports";
const SAMPLE_ACCOUNT_ID: &str = "123456789012";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root").to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn sorted_dir_names(path: &Path) -> BTreeSet<String> {
    std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
        .map(|entry| entry.expect("directory entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The parts of `template.yaml` these tests compare with the code.
struct Template {
    root: Yaml,
}

/// One `AWS::Serverless::Function` of the template.
struct Function<'a> {
    logical_id: &'a str,
    binary: &'a str,
    build_method: &'a str,
    properties: &'a Yaml,
}

/// An S3 notification of the template: which keys go to which function.
#[derive(Debug)]
struct S3Route {
    logical_id: String,
    bucket_logical_id: String,
    prefix: String,
    suffix: String,
}

impl S3Route {
    fn matches(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
    }
}

impl Template {
    fn load() -> Self {
        let path = workspace_root().join("template.yaml");
        let root = yaml::parse(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { root }
    }

    fn resources(&self) -> &[(String, Yaml)] {
        self.root.get("Resources").and_then(Yaml::entries).expect("template.yaml has Resources")
    }

    fn resource_type<'a>(resource: &'a Yaml) -> &'a str {
        resource.get("Type").and_then(Yaml::as_str).unwrap_or_default()
    }

    fn functions(&self) -> Vec<Function<'_>> {
        self.resources()
            .iter()
            .filter(|(_, resource)| Self::resource_type(resource) == "AWS::Serverless::Function")
            .map(|(logical_id, resource)| {
                let metadata = resource.get("Metadata");
                let binary = metadata
                    .and_then(|m| m.get("BuildProperties"))
                    .and_then(|p| p.get("Binary"))
                    .and_then(Yaml::as_str)
                    .unwrap_or_else(|| panic!("function {logical_id} has no Metadata.BuildProperties.Binary"));
                Function {
                    logical_id,
                    binary,
                    build_method: metadata.and_then(|m| m.get("BuildMethod")).and_then(Yaml::as_str).unwrap_or(""),
                    properties: resource
                        .get("Properties")
                        .unwrap_or_else(|| panic!("function {logical_id} has no Properties")),
                }
            })
            .collect()
    }

    fn function_by_binary(&self, binary: &str) -> Function<'_> {
        self.functions()
            .into_iter()
            .find(|f| f.binary == binary)
            .unwrap_or_else(|| panic!("template.yaml has no function with `Binary: {binary}`"))
    }

    fn parameter_default(&self, name: &str) -> Option<&str> {
        self.root.get("Parameters")?.get(name)?.get("Default")?.as_str()
    }

    fn is_parameter(&self, name: &str) -> bool {
        self.root.get("Parameters").and_then(|p| p.get(name)).is_some()
    }

    /// Environment of a function: Globals first, then its own variables,
    /// as SAM merges them. Values are the template's text (`!Ref X`, …).
    fn environment(&self, function: &Function<'_>) -> BTreeMap<String, String> {
        let variables = |node: Option<&Yaml>| -> Vec<(String, String)> {
            node.and_then(|n| n.get("Environment"))
                .and_then(|e| e.get("Variables"))
                .and_then(Yaml::entries)
                .map(|entries| {
                    entries.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("<structured>").to_owned())).collect()
                })
                .unwrap_or_default()
        };
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        variables(globals).into_iter().chain(variables(Some(function.properties))).collect()
    }

    /// The value a variable gets with every parameter at its default:
    /// `!Ref Parameter` becomes the default (`fallback` when it has none),
    /// anything else built by CloudFormation a placeholder name.
    fn resolve_with_defaults(&self, value: &str, fallback: &BTreeMap<&str, &str>) -> String {
        if let Some(name) = value.strip_prefix("!Ref ") {
            let name = name.trim();
            if self.is_parameter(name) {
                return self
                    .parameter_default(name)
                    .or_else(|| fallback.get(name).copied())
                    .unwrap_or_else(|| panic!("parameter {name} has no Default; add a sample value to this test"))
                    .to_owned();
            }
            if name == "AWS::NoValue" {
                // CloudFormation drops the variable: the function sees it unset.
                return String::new();
            }
            return format!("resolved-{name}");
        }
        if value.starts_with('!') {
            return "resolved-by-cloudformation".to_owned();
        }
        value.to_owned()
    }

    fn events_of<'a>(&self, function: &Function<'a>) -> &'a [(String, Yaml)] {
        function.properties.get("Events").and_then(Yaml::entries).unwrap_or(&[])
    }

    fn s3_routes(&self) -> Vec<S3Route> {
        let mut routes = Vec::new();
        for function in self.functions() {
            for (name, event) in self.events_of(&function) {
                if event.get("Type").and_then(Yaml::as_str) != Some("S3") {
                    continue;
                }
                let properties = event.get("Properties").unwrap_or_else(|| panic!("S3 event {name} has no Properties"));
                let bucket = properties.get("Bucket").and_then(Yaml::as_str).unwrap_or_default();
                let bucket_logical_id = bucket
                    .strip_prefix("!Ref ")
                    .unwrap_or_else(|| panic!("S3 event {name} of {}: Bucket must be a !Ref", function.logical_id))
                    .trim()
                    .to_owned();
                let events = properties.get("Events").and_then(Yaml::as_str).unwrap_or_default();
                assert!(
                    events.starts_with("s3:ObjectCreated:"),
                    "S3 event {name} of {} listens to {events:?}, not object creation",
                    function.logical_id
                );
                let rules = properties
                    .get("Filter")
                    .and_then(|f| f.get("S3Key"))
                    .and_then(|k| k.get("Rules"))
                    .and_then(Yaml::items)
                    .unwrap_or_else(|| panic!("S3 event {name} of {} has no Filter.S3Key.Rules", function.logical_id));
                let rule = |wanted: &str| {
                    rules
                        .iter()
                        .find(|r| r.get("Name").and_then(Yaml::as_str) == Some(wanted))
                        .and_then(|r| r.get("Value"))
                        .and_then(Yaml::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                routes.push(S3Route {
                    logical_id: function.logical_id.to_owned(),
                    bucket_logical_id,
                    prefix: rule("prefix"),
                    suffix: rule("suffix"),
                });
            }
        }
        routes
    }

    /// `BucketName` of a bucket resource with the sample stack, account and
    /// `region` substituted.
    fn bucket_name(&self, logical_id: &str, region: &str) -> String {
        let (_, bucket) = self
            .resources()
            .iter()
            .find(|(id, _)| id == logical_id)
            .unwrap_or_else(|| panic!("S3 events name bucket {logical_id}, which is not a resource"));
        let name = bucket
            .get("Properties")
            .and_then(|p| p.get("BucketName"))
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("bucket {logical_id} has no BucketName"));
        name.trim_start_matches("!Sub")
            .trim()
            .replace("${AWS::StackName}", SAMPLE_STACK_NAME)
            .replace("${AWS::AccountId}", SAMPLE_ACCOUNT_ID)
            .replace("${AWS::Region}", region)
    }
}

#[test]
fn every_function_crate_is_a_template_function_and_every_template_function_a_crate() {
    let template = Template::load();
    let crates = sorted_dir_names(&workspace_root().join("functions"));
    let functions = template.functions();
    let binaries: BTreeSet<String> = functions.iter().map(|f| f.binary.to_owned()).collect();
    assert_eq!(
        binaries.len(),
        functions.len(),
        "two functions of template.yaml build the same Binary: {:?}",
        functions.iter().map(|f| (f.logical_id, f.binary)).collect::<Vec<_>>()
    );
    let missing_in_template: Vec<_> = crates.difference(&binaries).collect();
    let missing_in_workspace: Vec<_> = binaries.difference(&crates).collect();
    assert!(
        missing_in_template.is_empty() && missing_in_workspace.is_empty(),
        "functions/ and template.yaml disagree: crates without a function in the template: \
         {missing_in_template:?}; template functions (by Binary) without a crate in functions/: \
         {missing_in_workspace:?}"
    );
    for function in &functions {
        assert_eq!(
            function.build_method, "rust-cargolambda",
            "function {} must be built by cargo-lambda (Metadata.BuildMethod)",
            function.logical_id
        );
        // cargo lambda build --bin <Binary>: the binary of src/main.rs is
        // named after the package.
        let manifest = read(&workspace_root().join("functions").join(function.binary).join("Cargo.toml"));
        assert!(
            manifest.lines().any(|line| line.replace(' ', "") == format!("name=\"{}\"", function.binary)),
            "functions/{}/Cargo.toml does not name its package {:?}, so `--bin {}` would not find it",
            function.binary,
            function.binary,
            function.binary
        );
    }
}

#[test]
fn every_sample_event_parses_and_is_routed_to_the_function_of_its_folder() {
    let template = Template::load();
    let routes = template.s3_routes();
    let events_dir = workspace_root().join("events");
    let folders = sorted_dir_names(&events_dir);
    let mut checked = 0;
    for folder in &folders {
        let function = template.function_by_binary(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir.join(folder))
            .expect("list events folder")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "events/{folder}/ holds no sample event");
        for path in files {
            let text = read(&path);
            let shown = path.strip_prefix(workspace_root()).unwrap_or(&path).display().to_string();
            if folder == "publish" {
                // The steps of the state machines, which invoke it
                // synchronously: no event source routes to it.
                // Parsing it as the function does is the check.
                let _step: RunStepEvent =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown} is not a step of publish: {e}"));
                let invoked = template.resources().iter().any(|(_, r)| {
                    Template::resource_type(r) == "AWS::Serverless::StateMachine"
                        && r.get("Properties")
                            .and_then(|p| p.get("DefinitionSubstitutions"))
                            .and_then(|s| s.get("PublishFunctionArn"))
                            .and_then(Yaml::as_str)
                            == Some(&format!("!GetAtt {}.Arn", function.logical_id))
                });
                assert!(invoked, "{shown}: no state machine of template.yaml invokes {}", function.logical_id);
            } else if folder == "rank" || folder == "sweeper" {
                let event: EventBridgeEvent<serde_json::Value> =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown} is not an EventBridge event: {e}"));
                assert_eq!(event.detail_type, "Scheduled Event", "{shown}: not a scheduled event");
                assert_eq!(event.source, "aws.events", "{shown}: not from EventBridge");
                assert!(event.time.is_some(), "{shown}: a scheduled event carries the run time");
                let scheduled = template
                    .events_of(&function)
                    .iter()
                    .any(|(_, e)| e.get("Type").and_then(Yaml::as_str) == Some("Schedule"));
                assert!(
                    scheduled,
                    "{shown}: function {} has no `Schedule` event to send it (ScheduleV2 sends no envelope)",
                    function.logical_id
                );
            } else {
                let event: S3Event =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown} is not an S3 event: {e}"));
                assert!(!event.records.is_empty(), "{shown} has no records");
                for record in &event.records {
                    let encoded = record.s3.object.key.as_deref().unwrap_or_else(|| panic!("{shown}: no object key"));
                    let key = decode_s3_event_key(encoded).unwrap_or_else(|e| panic!("{shown}: {e}"));
                    let routed: Vec<&S3Route> = routes.iter().filter(|r| r.matches(&key)).collect();
                    assert!(
                        routed.len() == 1 && routed[0].logical_id == function.logical_id,
                        "{shown}: key {key:?} (decoded from {encoded:?}) is routed by template.yaml to {:?}, \
                         expected exactly {} (functions/{folder}); routes: {routes:#?}",
                        routed.iter().map(|r| &r.logical_id).collect::<Vec<_>>(),
                        function.logical_id
                    );
                    let region = record.aws_region.as_deref().unwrap_or("us-east-1");
                    let expected_bucket = template.bucket_name(&routed[0].bucket_logical_id, region);
                    assert_eq!(
                        record.s3.bucket.name.as_deref(),
                        Some(expected_bucket.as_str()),
                        "{shown}: the bucket is not the template's {} for stack {SAMPLE_STACK_NAME} in \
                         account {SAMPLE_ACCOUNT_ID}",
                        routed[0].bucket_logical_id
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no sample events found under events/");
}

#[test]
fn every_deliverer_of_the_connector_registry_is_a_function_routed_its_jobs_and_connection_tests() {
    let template = Template::load();
    let routes = template.s3_routes();
    let crates = sorted_dir_names(&workspace_root().join("functions"));
    for deliverer in DELIVERER_FUNCTIONS {
        let kind = deliverer.job_kind;
        if !deliverer.supported {
            assert!(
                !crates.contains(deliverer.function),
                "functions/{} exists but the registry says {kind} is not supported yet",
                deliverer.function
            );
            continue;
        }
        let function = template.function_by_binary(deliverer.function);
        for prefix in [format!("{JOBS_PREFIX}{kind}/"), format!("{CONNECTION_TESTS_PREFIX}{kind}/")] {
            let sample = format!("{prefix}x/acme/feed.json");
            let routed: Vec<&S3Route> = routes.iter().filter(|r| r.matches(&sample)).collect();
            assert!(
                routed.len() == 1 && routed[0].logical_id == function.logical_id,
                "template.yaml must route {prefix}…json to {} ({}), the registry's deliverer of {kind}; \
                 it routes it to {:?}",
                function.logical_id,
                deliverer.function,
                routed.iter().map(|r| &r.logical_id).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn s3_routes_do_not_overlap() {
    // S3 refuses overlapping filters for one event type on one bucket.
    let routes = Template::load().s3_routes();
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            let overlap = a.bucket_logical_id == b.bucket_logical_id
                && (a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix))
                && (a.suffix.ends_with(&b.suffix) || b.suffix.ends_with(&a.suffix));
            assert!(!overlap, "S3 notifications overlap: {a:?} and {b:?}");
        }
    }
}

#[test]
fn every_asynchronously_invoked_function_has_bounded_retries_and_an_on_failure_destination() {
    let template = Template::load();
    let configs: Vec<&Yaml> = template
        .resources()
        .iter()
        .filter(|(_, r)| Template::resource_type(r) == "AWS::Lambda::EventInvokeConfig")
        .filter_map(|(_, r)| r.get("Properties"))
        .collect();
    for function in template.functions() {
        let config = configs
            .iter()
            .find(|c| c.get("FunctionName").and_then(Yaml::as_str) == Some(&format!("!Ref {}", function.logical_id)))
            .unwrap_or_else(|| panic!("function {} has no AWS::Lambda::EventInvokeConfig", function.logical_id));
        let retries = config.get("MaximumRetryAttempts").and_then(Yaml::as_str);
        assert!(matches!(retries, Some("0" | "1" | "2")), "{}: MaximumRetryAttempts {retries:?}", function.logical_id);
        assert!(
            config.get("MaximumEventAgeInSeconds").is_some(),
            "{}: no MaximumEventAgeInSeconds",
            function.logical_id
        );
        let destination = config
            .get("DestinationConfig")
            .and_then(|d| d.get("OnFailure"))
            .and_then(|f| f.get("Destination"))
            .and_then(Yaml::as_str);
        assert!(destination.is_some(), "{}: no on-failure destination", function.logical_id);
    }
}

/// Which configuration each function loads: the `main.rs` of its crate must
/// call `<Config>::from_env`, so this table cannot silently go stale.
fn configuration_of(binary: &str) -> (&'static str, fn(&dyn Fn(&str) -> Option<String>) -> Result<(), String>) {
    let (name, load): (&'static str, fn(&dyn Fn(&str) -> Option<String>) -> Result<(), String>) = match binary {
        "rank" => ("RankConfig", |lookup| RankConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string())),
        "fanout" | "deliver-s3" => {
            ("DeliveryConfig", |lookup| DeliveryConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
        }
        "deliver-email" => {
            ("EmailConfig", |lookup| EmailConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
        }
        "deliver-gcs" => ("GcsConfig", |lookup| GcsConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string())),
        "deliver-sheets" => {
            ("SheetsConfig", |lookup| SheetsConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
        }
        "sweeper" => {
            ("SweeperConfig", |lookup| SweeperConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
        }
        "publish" => {
            ("PublishConfig", |lookup| PublishConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
        }
        other => panic!("functions/{other}: add its configuration type to configuration_of in this test"),
    };
    let main = read(&workspace_root().join("functions").join(binary).join("src/main.rs"));
    assert!(
        main.contains(&format!("{name}::from_env")),
        "functions/{binary}/src/main.rs no longer loads {name}; update configuration_of in this test"
    );
    (name, load)
}

/// Loads `binary`'s configuration from `environment`; the names it asked
/// for, or its error.
fn load_configuration(
    binary: &str,
    environment: &BTreeMap<String, String>,
) -> (&'static str, Result<BTreeSet<String>, String>) {
    let (config_name, load) = configuration_of(binary);
    let asked = std::cell::RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        environment.get(name).cloned()
    };
    let loaded = load(&lookup);
    (config_name, loaded.map(|()| asked.into_inner()))
}

/// Variables of the AWS SDK itself (`AWS_ENDPOINT_URL`, `AWS_REGION`, …),
/// read by `aws_config`, not by our configuration types.
fn is_sdk_variable(name: &str) -> bool {
    name.starts_with("AWS_")
}

#[test]
fn every_variable_a_function_reads_is_set_for_it_in_the_template_and_its_defaults_load() {
    let template = Template::load();
    // Parameters without a default: values a deployer could give.
    let samples = BTreeMap::from([("SesSender", "reports@example.com"), ("DataBucketName", "example-data")]);
    for function in template.functions() {
        let environment = template.environment(&function);
        let resolved: BTreeMap<String, String> = environment
            .iter()
            .map(|(name, value)| (name.clone(), template.resolve_with_defaults(value, &samples)))
            .collect();
        let (config_name, loaded) = load_configuration(function.binary, &resolved);
        let asked = loaded.unwrap_or_else(|error| {
            panic!(
                "{} ({config_name}) does not start with template.yaml's environment and default parameters: \
                 {error}",
                function.logical_id
            )
        });
        let unset: Vec<_> = asked.iter().filter(|name| !environment.contains_key(*name)).collect();
        assert!(
            unset.is_empty(),
            "{} ({config_name}) reads {unset:?}, which template.yaml does not set for it",
            function.logical_id
        );
        let unread: Vec<_> =
            environment.keys().filter(|name| !is_sdk_variable(name) && !asked.contains(*name)).collect();
        assert!(
            unread.is_empty(),
            "template.yaml sets {unread:?} for {}, which {config_name} never reads",
            function.logical_id
        );
    }
}

#[test]
fn the_local_env_file_sets_every_variable_of_every_function_for_the_emulator() {
    let template = Template::load();
    let path = workspace_root().join("events/env.json");
    let file: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("events/env.json is not {{LogicalId: {{NAME: \"value\"}}}}: {e}"));
    let functions = template.functions();
    for logical_id in file.keys() {
        assert!(
            functions.iter().any(|f| f.logical_id == logical_id),
            "events/env.json configures {logical_id}, which is not a function of template.yaml"
        );
    }
    for function in &functions {
        let local = file
            .get(function.logical_id)
            .unwrap_or_else(|| panic!("events/env.json has no entry for {}", function.logical_id));
        let (config_name, loaded) = load_configuration(function.binary, local);
        let asked = loaded.unwrap_or_else(|error| {
            panic!("{} ({config_name}) does not start with events/env.json: {error}", function.logical_id)
        });
        // `sam local invoke --env-vars` overrides only variables the
        // template declares: anything else in the file would be ignored.
        let declared = template.environment(function);
        for name in asked.iter().chain(std::iter::once(&"AWS_ENDPOINT_URL".to_owned())) {
            assert!(local.contains_key(name), "events/env.json does not set {name} for {}", function.logical_id);
            assert!(
                declared.contains_key(name),
                "events/env.json sets {name} for {}, but sam local ignores it: template.yaml does not declare it",
                function.logical_id
            );
        }
        let endpoint = &local["AWS_ENDPOINT_URL"];
        assert!(
            endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
            "events/env.json: {} must reach the local emulator, not {endpoint:?}",
            function.logical_id
        );
        // The sample events name the bucket the function is pointed at.
        for entry in std::fs::read_dir(workspace_root().join("events").join(function.binary)).expect("events folder") {
            let sample = read(&entry.expect("directory entry").path());
            if let Ok(event) = serde_json::from_str::<S3Event>(&sample) {
                for record in &event.records {
                    assert_eq!(
                        record.s3.bucket.name.as_deref(),
                        local.get("STAGING_BUCKET").map(String::as_str),
                        "events/{}/: sample events and events/env.json name different staging buckets",
                        function.binary
                    );
                }
            }
        }
    }
}

/// A statement's `Action` (one or a list) as a list.
fn actions(statement: &Yaml) -> Vec<&str> {
    match statement.get("Action") {
        Some(Yaml::Scalar(one)) => vec![one.as_str()],
        Some(Yaml::Seq(many)) => many.iter().filter_map(Yaml::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The inline statements of a function's `Policies`.
fn policy_statements<'a>(function: &Function<'a>) -> Vec<&'a Yaml> {
    function
        .properties
        .get("Policies")
        .and_then(Yaml::items)
        .unwrap_or(&[])
        .iter()
        .filter_map(|policy| policy.get("Statement").and_then(Yaml::items))
        .flatten()
        .collect()
}

impl Template {
    fn resource(&self, logical_id: &str) -> &Yaml {
        self.resources()
            .iter()
            .find(|(id, _)| id == logical_id)
            .map(|(_, resource)| resource)
            .unwrap_or_else(|| panic!("template.yaml has no resource {logical_id}"))
    }

    fn condition(&self, name: &str) -> Option<&str> {
        self.root.get("Conditions")?.get(name)?.as_str()
    }
}

#[test]
fn dkim_and_bounce_and_complaint_events_are_optional_resources_behind_their_conditions() {
    let template = Template::load();
    let condition_of = |id: &str| template.resource(id).get("Condition").and_then(Yaml::as_str).map(str::to_owned);
    let domain = template.resource("SendingDomainIdentity");
    assert_eq!(Template::resource_type(domain), "AWS::SES::EmailIdentity");
    assert_eq!(condition_of("SendingDomainIdentity").as_deref(), Some("HasSesSendingDomain"));
    assert_eq!(template.condition("HasSesSendingDomain"), Some("!Not [!Equals [!Ref SesSendingDomain, \"\"]]"));
    assert_eq!(template.parameter_default("SesSendingDomain"), Some(""), "no domain unless asked for");
    let dkim = domain.get("Properties").and_then(|p| p.get("DkimSigningAttributes"));
    assert!(dkim.and_then(|d| d.get("NextSigningKeyLength")).is_some(), "Easy DKIM keys");
    for n in 1..=3 {
        let output = template.root.get("Outputs").and_then(|o| o.get(&format!("DkimRecord{n}"))).expect("DKIM output");
        assert_eq!(output.get("Condition").and_then(Yaml::as_str), Some("HasSesSendingDomain"));
        let value = output.get("Value").and_then(Yaml::as_str).unwrap_or_default();
        assert!(value.contains(&format!("DkimDNSTokenName{n}")) && value.contains(&format!("DkimDNSTokenValue{n}")));
    }

    for id in ["MailConfigurationSet", "MailEventsTopic", "MailEventsDestination"] {
        assert_eq!(condition_of(id).as_deref(), Some("HasMailEvents"), "{id}");
    }
    assert_eq!(condition_of("MailEventsSubscription").as_deref(), Some("HasMailEventsEmail"));
    let destination =
        template.resource("MailEventsDestination").get("Properties").and_then(|p| p.get("EventDestination"));
    let events: Vec<&str> = destination
        .and_then(|d| d.get("MatchingEventTypes"))
        .and_then(Yaml::items)
        .unwrap_or(&[])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(events.contains(&"bounce") && events.contains(&"complaint"), "{events:?}");
    assert_eq!(
        destination.and_then(|d| d.get("SnsDestination")).and_then(|s| s.get("TopicARN")).and_then(Yaml::as_str),
        Some("!Ref MailEventsTopic")
    );

    // deliver-email sends with the set when it exists, and may.
    let email = template.function_by_binary("deliver-email");
    assert_eq!(
        template.environment(&email).get("SES_CONFIGURATION_SET").map(String::as_str),
        Some("!If [HasMailEvents, !Ref MailConfigurationSet, !Ref AWS::NoValue]")
    );
    let send = policy_statements(&email)
        .into_iter()
        .find(|statement| actions(statement).contains(&"ses:SendRawEmail"))
        .expect("deliver-email may send");
    assert!(
        format!("{:?}", send.get("Resource")).contains("configuration-set/${MailConfigurationSet}"),
        "SES authorises sending with a configuration set against the set too"
    );
}

#[test]
fn only_the_tenant_secret_readers_and_the_onboarding_role_may_decrypt_with_the_tenant_secrets_key() {
    let template = Template::load();
    // The functions whose policies read secrets under TenantSecretPrefix.
    let readers: BTreeSet<String> = template
        .functions()
        .iter()
        .filter(|function| {
            policy_statements(function).iter().any(|statement| {
                actions(statement).contains(&"secretsmanager:GetSecretValue")
                    && format!("{:?}", statement.get("Resource")).contains("${TenantSecretPrefix}")
            })
        })
        .map(|function| format!("!GetAtt {}Role.Arn", function.logical_id))
        .collect();
    assert!(readers.len() >= 5, "fanout and the four deliverers read tenant secrets: {readers:?}");

    let key = template.resource("TenantSecretsKey");
    assert_eq!(Template::resource_type(key), "AWS::KMS::Key");
    assert_eq!(key.get("DeletionPolicy").and_then(Yaml::as_str), Some("Retain"), "tenant secrets outlive the stack");
    let statements = key
        .get("Properties")
        .and_then(|p| p.get("KeyPolicy"))
        .and_then(|p| p.get("Statement"))
        .and_then(Yaml::items)
        .expect("TenantSecretsKey has a KeyPolicy");
    // Actions that use the key or grant its use, also through a wildcard
    // such as `kms:Create*` (which covers kms:CreateGrant).
    const USES: [&str; 5] = ["kms:decrypt", "kms:encrypt", "kms:generatedatakey", "kms:reencrypt", "kms:creategrant"];
    let cryptographic = |action: &str| {
        let action = action.to_ascii_lowercase();
        match action.strip_suffix('*') {
            Some(stem) => USES.iter().any(|used| used.starts_with(stem)),
            None => USES.iter().any(|used| action.starts_with(used)),
        }
    };
    let mut decrypters = BTreeSet::new();
    for statement in statements {
        assert_eq!(statement.get("Effect").and_then(Yaml::as_str), Some("Allow"));
        let principals: Vec<String> = match statement.get("Principal").and_then(|p| p.get("AWS")) {
            Some(Yaml::Scalar(one)) => vec![one.clone()],
            Some(Yaml::Seq(many)) => many.iter().filter_map(Yaml::as_str).map(str::to_owned).collect(),
            other => panic!("a key policy statement names no AWS principal: {other:?}"),
        };
        let acts = actions(statement);
        if principals.iter().any(|p| p.contains(":root")) {
            // The account administers the key (KMS requires it) but is not
            // delegated any use of it: no IAM policy can then grant decrypt.
            let used: Vec<_> = acts.iter().filter(|a| cryptographic(a)).collect();
            assert!(used.is_empty(), "the account root may {used:?} with the tenant secrets key");
            assert!(acts.contains(&"kms:PutKeyPolicy"), "the key must stay administrable");
            continue;
        }
        if acts.iter().any(|a| a.eq_ignore_ascii_case("kms:Decrypt")) {
            let via = statement
                .get("Condition")
                .and_then(|c| c.get("StringEquals"))
                .and_then(|c| c.get("kms:ViaService"))
                .and_then(Yaml::as_str);
            assert_eq!(
                via,
                Some("!Sub secretsmanager.${AWS::Region}.${AWS::URLSuffix}"),
                "decrypt only via Secrets Manager"
            );
            decrypters.extend(principals);
        }
    }
    let mut expected = readers.clone();
    expected.insert("!GetAtt TenantOnboardingRole.Arn".to_owned());
    assert_eq!(decrypters, expected, "who may decrypt tenant secrets");

    // Each reader's own policy grants the same, through Secrets Manager only.
    for function in template.functions() {
        if !readers.contains(&format!("!GetAtt {}Role.Arn", function.logical_id)) {
            continue;
        }
        let grant = policy_statements(&function)
            .into_iter()
            .find(|statement| actions(statement).contains(&"kms:Decrypt"))
            .unwrap_or_else(|| {
                panic!("{} reads tenant secrets but its policy has no kms:Decrypt", function.logical_id)
            });
        let condition = grant.get("Condition").expect("kms:Decrypt has conditions");
        assert!(
            condition.get("StringEquals").and_then(|c| c.get("kms:ViaService")).is_some()
                && condition.get("ForAnyValue:StringEquals").and_then(|c| c.get("kms:ResourceAliases")).is_some(),
            "{}: kms:Decrypt only through Secrets Manager and only on the tenant secrets key",
            function.logical_id
        );
    }
    let alias = template.resource("TenantSecretsKeyAlias");
    assert_eq!(
        alias.get("Properties").and_then(|p| p.get("AliasName")).and_then(Yaml::as_str),
        Some("!Sub alias/${AWS::StackName}-tenant-secrets")
    );
    let outputs = template.root.get("Outputs").expect("Outputs");
    for output in ["TenantSecretsKeyArn", "TenantSecretsKeyAlias", "TenantOnboardingRoleArn"] {
        assert!(outputs.get(output).is_some(), "output {output}");
    }
}

/// The items of a flow sequence written inline, such as
/// `!If [Cond, !Ref X, !Ref AWS::NoValue]` (the reader keeps those as text).
fn flow_items<'a>(text: &'a str, tag: &str) -> Option<Vec<&'a str>> {
    let inner = text.strip_prefix(tag)?.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(inner.split(',').map(str::trim).collect())
}

impl Template {
    fn parameter_field(&self, name: &str, field: &str) -> Option<&str> {
        self.root.get("Parameters")?.get(name)?.get(field)?.as_str()
    }
}

#[test]
fn every_function_has_a_concurrency_cap_parameter_and_minus_one_means_no_cap() {
    let template = Template::load();
    for function in template.functions() {
        let id = function.logical_id;
        let reserved =
            function.properties.get("ReservedConcurrentExecutions").and_then(Yaml::as_str).unwrap_or_else(|| {
                panic!("{id} has no ReservedConcurrentExecutions: give it a <Name>Concurrency parameter (-1 = no cap)")
            });
        if let Some(parameter) = reserved.strip_prefix("!Ref ") {
            // A cap that is always set (deliver-sheets: Google's quota).
            let minimum = template.parameter_field(parameter, "MinValue").and_then(|v| v.parse::<i64>().ok());
            assert!(minimum.is_some_and(|m| m >= 1), "{id}: {parameter} needs MinValue 1 or more, not {minimum:?}");
            continue;
        }
        let items = flow_items(reserved, "!If")
            .unwrap_or_else(|| panic!("{id}: ReservedConcurrentExecutions {reserved:?} is neither !Ref nor !If"));
        let &[condition, capped, uncapped] = items.as_slice() else {
            panic!("{id}: {reserved:?} is not a three-item !If")
        };
        let parameter = capped.strip_prefix("!Ref ").unwrap_or_else(|| panic!("{id}: {capped:?} is not a !Ref"));
        assert_eq!(uncapped, "!Ref AWS::NoValue", "{id}: without a cap the function must be unreserved");
        assert_eq!(
            template.condition(condition),
            Some(format!("!Not [!Equals [!Ref {parameter}, \"-1\"]]").as_str()),
            "{id}: condition {condition} must be true unless {parameter} is -1"
        );
        assert_eq!(template.parameter_field(parameter, "Type"), Some("Number"), "{id}: {parameter}");
        assert_eq!(template.parameter_field(parameter, "MinValue"), Some("-1"), "{id}: {parameter} allows -1 (no cap)");
        let default = template.parameter_default(parameter).and_then(|v| v.parse::<i64>().ok());
        assert!(default.is_some_and(|d| d == -1 || d >= 1), "{id}: {parameter} default {default:?} (0 stops it)");
    }
    // deliver-email is paced to SES's default send rate: 14 emails a second
    // out of the sandbox, each recipient counting.
    let email = template.function_by_binary("deliver-email");
    let reserved = email.properties.get("ReservedConcurrentExecutions").and_then(Yaml::as_str).unwrap_or_default();
    let parameter =
        flow_items(reserved, "!If").and_then(|items| items.get(1)?.strip_prefix("!Ref ")).unwrap_or_default();
    let default = template.parameter_default(parameter).and_then(|v| v.parse::<i64>().ok());
    assert!(default.is_some_and(|d| (1..=14).contains(&d)), "deliver-email's cap {parameter} defaults to {default:?}");
}

/// A statement's `Resource` (one or a list) as a list.
fn resources_of(statement: &Yaml) -> Vec<&str> {
    match statement.get("Resource") {
        Some(Yaml::Scalar(one)) => vec![one.as_str()],
        Some(Yaml::Seq(many)) => many.iter().filter_map(Yaml::as_str).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_sweeper_runs_on_its_schedule_may_touch_only_jobs_and_status_and_its_status_writes_go_nowhere() {
    let template = Template::load();
    let sweeper = template.function_by_binary("sweeper");
    let schedules: Vec<&str> = template
        .events_of(&sweeper)
        .iter()
        .filter(|(_, e)| e.get("Type").and_then(Yaml::as_str) == Some("Schedule"))
        .filter_map(|(_, e)| e.get("Properties")?.get("Schedule")?.as_str())
        .collect();
    assert_eq!(schedules, ["!Ref SweepSchedule"], "the sweeper runs on the SweepSchedule parameter");
    assert_eq!(template.parameter_default("SweepSchedule"), Some("rate(1 hour)"));
    // The template's defaults are the configuration's.
    let days = template.parameter_default("SweepDays").and_then(|d| d.parse::<u32>().ok());
    let redrives = template.parameter_default("MaxRedrives").and_then(|d| d.parse::<u32>().ok());
    assert_eq!(days, Some(popularity_reports::config::DEFAULT_SWEEP_DAYS));
    assert_eq!(redrives, Some(popularity_reports::config::DEFAULT_MAX_REDRIVES));

    let staging = "arn:${AWS::Partition}:s3:::${AWS::StackName}-staging-${AWS::AccountId}-${AWS::Region}";
    let statements = policy_statements(&sweeper);
    assert!(!statements.is_empty(), "the sweeper has no inline statements");
    for statement in statements {
        assert_eq!(statement.get("Effect").and_then(Yaml::as_str), Some("Allow"));
        for action in actions(statement) {
            let allowed: Vec<String> = match action {
                "s3:ListBucket" => vec![format!("!Sub {staging}")],
                "s3:GetObject" | "s3:PutObject" => {
                    vec![format!("!Sub {staging}/jobs/*"), format!("!Sub {staging}/status/*")]
                }
                other => panic!("the sweeper may not {other}: it lists, reads and writes jobs/ and status/ only"),
            };
            for resource in resources_of(statement) {
                assert!(
                    allowed.iter().any(|a| a == resource),
                    "the sweeper may {action} on {resource}, beyond {allowed:?}"
                );
            }
        }
    }
    // Its status writes start nothing; its job rewrites start only the deliverer of the job's kind.
    let routes = template.s3_routes();
    let status_key = "status/20261119030000/acme/feed.json";
    let routed: Vec<&String> = routes.iter().filter(|r| r.matches(status_key)).map(|r| &r.logical_id).collect();
    assert!(routed.is_empty(), "{status_key} is routed to {routed:?}: the sweeper's status writes would start it");
    for deliverer in DELIVERER_FUNCTIONS.iter().filter(|d| d.supported) {
        let job_key = format!("{JOBS_PREFIX}{}/20261119030000/acme/feed.json", deliverer.job_kind);
        let function = template.function_by_binary(deliverer.function);
        let routed: Vec<&String> = routes.iter().filter(|r| r.matches(&job_key)).map(|r| &r.logical_id).collect();
        assert_eq!(routed, [function.logical_id], "{job_key}");
    }
}

/// The metrics that mean a person should look, and the handler that emits
/// each (under `PopularityReports`, dimension `Function`).
const ALARMED_METRICS: [(&str, &str, &str); 2] = [
    ("RunsWithoutPlays", "rank", "shared/src/handlers/rank.rs"),
    ("RedrivesExhausted", "sweeper", "shared/src/handlers/sweeper.rs"),
];

#[test]
fn every_metric_that_needs_a_person_has_an_alarm_on_what_the_code_emits_notifying_the_alarm_topic() {
    let template = Template::load();
    let alarms: Vec<&Yaml> = template
        .resources()
        .iter()
        .filter(|(_, resource)| Template::resource_type(resource) == "AWS::CloudWatch::Alarm")
        .filter_map(|(_, resource)| resource.get("Properties"))
        .collect();
    let text = |node: &Yaml, key: &str| node.get(key).and_then(Yaml::as_str).unwrap_or_default().to_owned();
    for (metric, function, source) in ALARMED_METRICS {
        let code = read(&workspace_root().join(source));
        assert!(
            code.contains(&format!("(\"{metric}\",")) && code.contains(&format!("(\"Function\", \"{function}\")")),
            "{source} no longer emits {metric} with Function={function}: update the alarm and this list"
        );
        let alarm = alarms
            .iter()
            .find(|alarm| text(alarm, "MetricName") == metric)
            .unwrap_or_else(|| panic!("template.yaml has no alarm on {metric}"));
        assert_eq!(text(alarm, "Namespace"), "PopularityReports", "{metric}");
        let dimensions = alarm.get("Dimensions").and_then(Yaml::items).unwrap_or(&[]);
        assert!(
            dimensions.iter().any(|d| text(d, "Name") == "Function" && text(d, "Value") == function),
            "the alarm on {metric} must select Function={function}, as the code emits it"
        );
        assert_eq!(text(alarm, "ComparisonOperator"), "GreaterThanThreshold", "{metric}");
        assert_eq!(text(alarm, "Threshold"), "0", "{metric}: one occurrence is enough");
        assert_eq!(text(alarm, "TreatMissingData"), "notBreaching", "{metric}: no data is no problem");
        assert_eq!(
            text(alarm, "AlarmActions"),
            "!If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]",
            "{metric}: notifies the operator's topic when one is given"
        );
    }
}

#[test]
fn the_yaml_reader_understands_the_template_subset() {
    let text = "\
Top: plain # a comment
Quoted: \"a # not a comment\"
Folded: >-
  first line
  second line
Map:
  Key: !Ref Thing
  Seq:
    - Name: prefix
      Value: manifests/
    - !Sub x-${AWS::Region}
    - !Sub
      - ${A}
      - A: b
  Same:
  - one
  - two
";
    let root = yaml::parse(text).unwrap();
    assert_eq!(root.get("Top").and_then(Yaml::as_str), Some("plain"));
    assert_eq!(root.get("Quoted").and_then(Yaml::as_str), Some("a # not a comment"));
    assert_eq!(root.get("Folded").and_then(Yaml::as_str), Some("first line second line"));
    let map = root.get("Map").unwrap();
    assert_eq!(map.get("Key").and_then(Yaml::as_str), Some("!Ref Thing"));
    let seq = map.get("Seq").and_then(Yaml::items).unwrap();
    assert_eq!(seq.len(), 3);
    assert_eq!(seq[0].get("Value").and_then(Yaml::as_str), Some("manifests/"));
    assert_eq!(seq[1].as_str(), Some("!Sub x-${AWS::Region}"));
    assert_eq!(seq[2].get("!Sub").and_then(Yaml::items).map(<[Yaml]>::len), Some(2));
    let same: Vec<_> = map.get("Same").and_then(Yaml::items).unwrap().iter().filter_map(Yaml::as_str).collect();
    assert_eq!(same, ["one", "two"]);
}

mod yaml {
    //! Reads the block-style YAML subset `template.yaml` is written in into
    //! a tree. Flow collections (`[a, b]`) stay scalar text; a tag with a
    //! nested node (`!Sub` followed by a list) becomes a one-entry map keyed
    //! by the tag. Anything else it does not understand is an error naming
    //! the line, never a silently different tree.

    #[derive(Debug, Clone, PartialEq)]
    pub enum Yaml {
        Scalar(String),
        Map(Vec<(String, Yaml)>),
        Seq(Vec<Yaml>),
    }

    impl Yaml {
        pub fn get(&self, key: &str) -> Option<&Yaml> {
            self.entries()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }

        pub fn entries(&self) -> Option<&[(String, Yaml)]> {
            match self {
                Yaml::Map(entries) => Some(entries),
                _ => None,
            }
        }

        pub fn items(&self) -> Option<&[Yaml]> {
            match self {
                Yaml::Seq(items) => Some(items),
                _ => None,
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Yaml::Scalar(text) => Some(text),
                _ => None,
            }
        }
    }

    struct Line {
        number: usize,
        indent: usize,
        text: String,
    }

    pub fn parse(source: &str) -> Result<Yaml, String> {
        let lines: Vec<Line> = source
            .lines()
            .enumerate()
            .filter_map(|(i, raw)| {
                let text = strip_comment(raw).trim_end();
                let content = text.trim_start();
                if content.is_empty() || content == "---" {
                    return None;
                }
                Some(Line { number: i + 1, indent: text.len() - content.len(), text: content.to_owned() })
            })
            .collect();
        let mut reader = Reader { lines, next: 0 };
        if reader.lines.is_empty() {
            return Ok(Yaml::Map(Vec::new()));
        }
        let indent = reader.lines[0].indent;
        let node = reader.node(indent)?;
        match reader.lines.get(reader.next) {
            Some(line) => Err(format!("line {}: unexpected indentation", line.number)),
            None => Ok(node),
        }
    }

    /// Drops a `#` comment: at the start, or after a space outside quotes.
    fn strip_comment(line: &str) -> &str {
        let mut quote = None;
        let mut previous = ' ';
        for (i, c) in line.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), _) if c == q => quote = None,
                (None, '#') if previous.is_whitespace() => return &line[..i],
                _ => {}
            }
            previous = c;
        }
        line
    }

    /// Splits `key: value` (or `key:`) at the first `: ` outside quotes;
    /// None for a scalar such as `!Sub arn:aws:s3:::x` or `[a, b]`.
    fn split_key(text: &str) -> Option<(String, &str)> {
        if text.starts_with(['!', '[', '{', '>', '|']) {
            return None;
        }
        let (key, rest) = if let Some(quote) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let close = text[1..].find(quote)? + 1;
            (&text[..=close], &text[close + 1..])
        } else {
            let at = text.find(": ").or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
            (&text[..at], &text[at..])
        };
        let value = rest.strip_prefix(':')?;
        if !(value.is_empty() || value.starts_with(' ')) {
            return None;
        }
        Some((unquote(key.trim()), value.trim()))
    }

    fn unquote(text: &str) -> String {
        let quoted = text.len() >= 2
            && ((text.starts_with('"') && text.ends_with('"')) || (text.starts_with('\'') && text.ends_with('\'')));
        if quoted {
            text[1..text.len() - 1].to_owned()
        } else {
            text.to_owned()
        }
    }

    fn is_bare_tag(text: &str) -> bool {
        text.starts_with('!') && !text.contains(' ')
    }

    struct Reader {
        lines: Vec<Line>,
        next: usize,
    }

    impl Reader {
        fn peek(&self) -> Option<&Line> {
            self.lines.get(self.next)
        }

        fn is_item(text: &str) -> bool {
            text == "-" || text.starts_with("- ")
        }

        /// The node whose first line is the next one, at `indent`.
        fn node(&mut self, indent: usize) -> Result<Yaml, String> {
            match self.peek() {
                Some(line) if Self::is_item(&line.text) => self.sequence(indent),
                Some(_) => self.map(indent),
                None => Ok(Yaml::Scalar(String::new())),
            }
        }

        fn map(&mut self, indent: usize) -> Result<Yaml, String> {
            let mut entries = Vec::new();
            while let Some(line) = self.peek() {
                if line.indent < indent || (line.indent == indent && Self::is_item(&line.text)) {
                    break;
                }
                if line.indent > indent {
                    return Err(format!("line {}: unexpected indentation", line.number));
                }
                let number = line.number;
                let (key, value) =
                    split_key(&line.text).ok_or_else(|| format!("line {number}: expected `key: value`"))?;
                let value = value.to_owned();
                self.next += 1;
                let node = self.value(indent, &value, true)?;
                if entries.iter().any(|(k, _)| *k == key) {
                    return Err(format!("line {number}: key {key:?} repeated"));
                }
                entries.push((key, node));
            }
            Ok(Yaml::Map(entries))
        }

        fn sequence(&mut self, indent: usize) -> Result<Yaml, String> {
            let mut items = Vec::new();
            while let Some(line) = self.peek() {
                if line.indent != indent || !Self::is_item(&line.text) {
                    if line.indent > indent {
                        return Err(format!("line {}: unexpected indentation", line.number));
                    }
                    break;
                }
                let rest = line.text[1..].trim_start().to_owned();
                if split_key(&rest).is_some() {
                    // `- key: value` opens a map whose keys line up with `key`.
                    let item_indent = indent + (line.text.len() - rest.len());
                    let line = &mut self.lines[self.next];
                    line.indent = item_indent;
                    line.text = rest;
                    items.push(self.map(item_indent)?);
                } else {
                    self.next += 1;
                    items.push(self.value(indent, &rest, false)?);
                }
            }
            Ok(Yaml::Seq(items))
        }

        /// The value after `key:` or `- ` on a line at `indent`: inline, a
        /// block scalar, or a nested node on the following lines.
        fn value(&mut self, indent: usize, inline: &str, in_map: bool) -> Result<Yaml, String> {
            let deeper = |reader: &Self| reader.peek().is_some_and(|l| l.indent > indent);
            // A map's sequence value may sit at the map's own indentation.
            let same_level_items =
                |reader: &Self| in_map && reader.peek().is_some_and(|l| l.indent == indent && Self::is_item(&l.text));
            if inline.is_empty() {
                if deeper(self) {
                    let child_indent = self.peek().map(|l| l.indent).unwrap_or_default();
                    return self.node(child_indent);
                }
                if same_level_items(self) {
                    return self.sequence(indent);
                }
                return Ok(Yaml::Scalar(String::new()));
            }
            if let Some(style) = inline.chars().next().filter(|c| *c == '>' || *c == '|') {
                let mut parts = Vec::new();
                while deeper(self) {
                    parts.push(self.lines[self.next].text.clone());
                    self.next += 1;
                }
                return Ok(Yaml::Scalar(parts.join(if style == '>' { " " } else { "\n" })));
            }
            if is_bare_tag(inline) && (deeper(self) || same_level_items(self)) {
                let child = if deeper(self) {
                    let child_indent = self.peek().map(|l| l.indent).unwrap_or_default();
                    self.node(child_indent)?
                } else {
                    self.sequence(indent)?
                };
                return Ok(Yaml::Map(vec![(inline.to_owned(), child)]));
            }
            // A plain scalar may continue on deeper lines.
            let mut text = unquote(inline);
            while deeper(self) {
                text.push(' ');
                text.push_str(&self.lines[self.next].text);
                self.next += 1;
            }
            Ok(Yaml::Scalar(text))
        }
    }
}
