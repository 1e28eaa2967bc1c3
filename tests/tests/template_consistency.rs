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
//! the link signer's secret is under our own secrets key, which only
//! deliver-email may decrypt with (the account only through Secrets Manager
//! for that secret), and its resource policy refuses its value to every
//! principal but deliver-email's role;
//! DKIM and the bounce and complaint topic sit behind their conditions;
//! the metrics that need a person (runs without plays, re-drives exhausted)
//! have alarms on exactly what the code emits. The self-service console:
//! its user pool, app client and `operators` group are the ones
//! `shared/src/console/users.rs` creates on an emulator; its HTTP API's JWT
//! authorizer checks tokens of that pool and client, and API Gateway would
//! send every `/v1/` route of the router through it but the OpenAPI
//! document (the page, its assets and the sign-in helpers stay public);
//! the API is throttled; the function's role may touch only what the
//! console's code calls.
//!
//! The workspace has no YAML crate, and these checks need only the block
//! structure of the template, so [`yaml`] is a small reader of that subset
//! (block maps and sequences, plain and quoted scalars, folded `>-`
//! scalars, tags kept as text). It is not a general YAML parser: the
//! template's lints (`scripts/check-template.sh`) check the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::s3::S3Event;
use popularity_reports::config::{
    ConsoleConfig, DeliverS3Config, DeliveryConfig, EmailConfig, GcsConfig, NotifyConfig, PublishConfig, RankConfig,
    SheetsConfig, SweeperConfig,
};
use popularity_reports::connector_registry::DELIVERER_FUNCTIONS;
use popularity_reports::console::auth::{CognitoSettings, OPERATORS_GROUP, TENANT_ATTRIBUTE};
use popularity_reports::console::routes::openapi_json;
use popularity_reports::console::users::{
    APP_CLIENT_AUTH_FLOWS, APP_CLIENT_READ_ATTRIBUTES, APP_CLIENT_WRITE_ATTRIBUTES, TENANT_ATTRIBUTE_NAME,
};
use popularity_reports::delivery::{decode_s3_event_key, CONNECTION_TESTS_PREFIX, JOBS_PREFIX};
use popularity_reports::handlers::publish::RunStepEvent;
use popularity_reports::tenant::is_safe_id;
use yaml::Yaml;

/// Stack name, account and region the sample events were written for
/// (samconfig.toml's default stack name, the documentation account id).
const SAMPLE_STACK_NAME: &str = "popularity-reports";
const SAMPLE_ACCOUNT_ID: &str = "123456789012";
const SAMPLE_REGION: &str = "us-east-1";

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

/// A route of an HTTP API event (`Type: HttpApi`) of the template.
#[derive(Debug, Clone)]
struct HttpRoute {
    event: String,
    method: String,
    path: String,
    /// The authorizer API Gateway runs first: the API's default unless
    /// the event says `Auth: Authorizer: NONE`.
    authorizer: Option<String>,
}

impl HttpRoute {
    /// `GET /v1/me`, as API Gateway names routes (and payloads' `routeKey`).
    fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn segments(path: &str) -> Vec<&str> {
        path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect()
    }

    /// Whether API Gateway would match `method` `path` (a concrete path)
    /// with this route: `{name}` is one segment, a final `{name+}` one or
    /// more, anything else literal.
    fn matches(&self, method: &str, path: &str) -> bool {
        if self.method != "ANY" && !self.method.eq_ignore_ascii_case(method) {
            return false;
        }
        let (pattern, concrete) = (Self::segments(&self.path), Self::segments(path));
        for (i, part) in pattern.iter().enumerate() {
            if part.starts_with('{') && part.ends_with("+}") {
                return i + 1 == pattern.len() && concrete.len() > i;
            }
            match concrete.get(i) {
                Some(given) if part.starts_with('{') || part == given => {}
                _ => return false,
            }
        }
        pattern.len() == concrete.len()
    }

    /// How specific the route is, as API Gateway ranks matching routes:
    /// literal segments before path variables, those before a greedy one,
    /// a named method before `ANY`.
    fn specificity(&self) -> (bool, usize, bool) {
        let segments = Self::segments(&self.path);
        let greedy = segments.last().is_some_and(|s| s.ends_with("+}"));
        let literal = segments.iter().filter(|s| !s.starts_with('{')).count();
        (!greedy, literal, self.method != "ANY")
    }
}

/// The route API Gateway would choose for `method` `path`, if any.
fn route_for<'r>(routes: &'r [HttpRoute], method: &str, path: &str) -> Option<&'r HttpRoute> {
    routes.iter().filter(|route| route.matches(method, path)).max_by_key(|route| route.specificity())
}

/// A sample event of a function behind an HTTP API: an API Gateway
/// payload (version 2.0) of one of its routes, through the authorizer
/// exactly when the route has one.
fn check_http_event(template: &Template, function: &Function<'_>, shown: &str, text: &str) {
    let event: ApiGatewayV2httpRequest =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{shown} is not an API Gateway HTTP API event: {e}"));
    let routes = template.http_routes(function);
    let context = &event.request_context;
    let method = context.http.method.as_str();
    let path = event.raw_path.as_deref().unwrap_or_else(|| panic!("{shown}: no rawPath"));
    let route = route_for(&routes, method, path)
        .unwrap_or_else(|| panic!("{shown}: no route of {} takes {method} {path}", function.logical_id));
    assert_eq!(event.route_key.as_deref(), Some(route.key().as_str()), "{shown}: the route API Gateway would choose");
    assert_eq!(context.route_key.as_deref(), Some(route.key().as_str()), "{shown}: requestContext.routeKey");
    assert_eq!(context.stage.as_deref(), Some("$default"), "{shown}: the HTTP API's one stage");
    let claims = context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|jwt| &jwt.claims);
    match (&route.authorizer, claims) {
        (Some(_), Some(claims)) => {
            assert_eq!(claims.get("token_use").map(String::as_str), Some("id"), "{shown}: an ID token's claims");
            let issuer = claims.get("iss").map(String::as_str).unwrap_or_default();
            assert!(issuer.starts_with("https://cognito-idp."), "{shown}: issuer {issuer:?}");
            assert!(claims.contains_key(TENANT_ATTRIBUTE), "{shown}: an ID token carries {TENANT_ATTRIBUTE}");
        }
        (Some(authorizer), None) => {
            panic!("{shown}: route {} passes {authorizer}, so its events carry the token's claims", route.key())
        }
        (None, Some(_)) => panic!("{shown}: route {} is public, so no authorizer's claims", route.key()),
        (None, None) => {}
    }
}

impl Template {
    /// The routes of `function`'s `HttpApi` events.
    fn http_routes(&self, function: &Function<'_>) -> Vec<HttpRoute> {
        let mut routes = Vec::new();
        for (name, event) in self.events_of(function) {
            if event.get("Type").and_then(Yaml::as_str) != Some("HttpApi") {
                continue;
            }
            let properties =
                event.get("Properties").unwrap_or_else(|| panic!("HttpApi event {name} has no Properties"));
            let text = |key: &str| properties.get(key).and_then(Yaml::as_str).map(str::to_owned);
            let api = text("ApiId").and_then(|id| id.strip_prefix("!Ref ").map(|id| id.trim().to_owned()));
            let api = api.unwrap_or_else(|| panic!("HttpApi event {name}: ApiId must be a !Ref of the template's API"));
            let default = self
                .resource(&api)
                .get("Properties")
                .and_then(|p| p.get("Auth"))
                .and_then(|a| a.get("DefaultAuthorizer"))
                .and_then(Yaml::as_str)
                .map(str::to_owned);
            let named = properties.get("Auth").and_then(|a| a.get("Authorizer")).and_then(Yaml::as_str);
            let authorizer = match named {
                Some("NONE") => None,
                Some(other) => Some(other.to_owned()),
                None => default,
            };
            routes.push(HttpRoute {
                event: name.clone(),
                method: text("Method").unwrap_or_else(|| panic!("HttpApi event {name} has no Method")).to_uppercase(),
                path: text("Path").unwrap_or_else(|| panic!("HttpApi event {name} has no Path")),
                authorizer,
            });
        }
        routes
    }

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

    /// The condition `name` with every parameter at its default, when it is
    /// built of `!And`, `!Or`, `!Not` and `!Equals [!Ref Parameter, value]`.
    fn condition_with_defaults(&self, name: &str) -> Option<bool> {
        self.evaluate_condition(self.root.get("Conditions")?.get(name)?)
    }

    fn evaluate_condition(&self, node: &Yaml) -> Option<bool> {
        if let Some(text) = node.as_str() {
            let text = text.trim();
            if let Some(inner) = text.strip_prefix("!Not [").and_then(|t| t.strip_suffix(']')) {
                return self.evaluate_condition(&Yaml::Scalar(inner.trim().to_owned())).map(|b| !b);
            }
            let [reference, expected] = flow_items(text, "!Equals")?.try_into().ok()?;
            let actual = self.parameter_default(reference.strip_prefix("!Ref ")?.trim())?;
            let unquote = |v: &str| v.trim().trim_matches('"').to_owned();
            return Some(unquote(actual) == unquote(expected));
        }
        let all = |items: &[Yaml]| items.iter().map(|i| self.evaluate_condition(i)).collect::<Option<Vec<bool>>>();
        if let Some(items) = node.get("!And").and_then(Yaml::items) {
            return all(items).map(|v| v.iter().all(|b| *b));
        }
        if let Some(items) = node.get("!Or").and_then(Yaml::items) {
            return all(items).map(|v| v.iter().any(|b| *b));
        }
        None
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
        if let Some(text) = value.strip_prefix("!Sub ") {
            return self.substitute_with_defaults(text.trim(), fallback);
        }
        // `!If [Condition, then, else]` whose condition the defaults decide.
        if let Some([condition, then, otherwise]) = flow_items(value, "!If").as_deref() {
            match self.condition_with_defaults(condition) {
                Some(true) => return self.resolve_with_defaults(then, fallback),
                Some(false) => return self.resolve_with_defaults(otherwise, fallback),
                None => {}
            }
        }
        // An ARN the configuration can check the shape of: a KMS key's or a role's.
        if let Some(attribute) = value.strip_prefix("!GetAtt ") {
            let (resource, _) = attribute.trim().split_once('.').unwrap_or((attribute.trim(), ""));
            let kind = self.resources().iter().find(|(id, _)| id == resource).map(|(_, r)| Self::resource_type(r));
            match kind {
                Some("AWS::KMS::Key") if attribute.ends_with(".Arn") => {
                    return "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000".to_owned()
                }
                Some("AWS::IAM::Role") if attribute.ends_with(".Arn") => {
                    return format!("arn:aws:iam::123456789012:role/{resource}")
                }
                _ => {}
            }
        }
        if value.starts_with('!') {
            return "resolved-by-cloudformation".to_owned();
        }
        value.to_owned()
    }

    /// A `!Sub` string with the sample stack, account and region, parameter
    /// defaults, and placeholder names for resources and their attributes.
    fn substitute_with_defaults(&self, text: &str, fallback: &BTreeMap<&str, &str>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap_or_else(|| panic!("unclosed ${{ in {text}")) + start;
            let name = &rest[start + 2..end];
            let value = match name {
                "AWS::StackName" => SAMPLE_STACK_NAME.to_owned(),
                "AWS::AccountId" => SAMPLE_ACCOUNT_ID.to_owned(),
                "AWS::Region" => SAMPLE_REGION.to_owned(),
                "AWS::Partition" => "aws".to_owned(),
                "AWS::URLSuffix" => "amazonaws.com".to_owned(),
                _ if self.is_parameter(name) => self.resolve_with_defaults(&format!("!Ref {name}"), fallback),
                _ => format!("resolved-{name}"),
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
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
            } else if !template.http_routes(&function).is_empty() {
                check_http_event(&template, &function, &shown, &text);
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
        let events: Vec<&str> =
            template.events_of(&function).iter().filter_map(|(_, e)| e.get("Type").and_then(Yaml::as_str)).collect();
        // A function without events must be invoked by a state machine
        // (its ARN among a state machine's DefinitionSubstitutions).
        let arn = format!("!GetAtt {}.Arn", function.logical_id);
        let by_a_state_machine = template.resources().iter().any(|(_, r)| {
            Template::resource_type(r) == "AWS::Serverless::StateMachine"
                && r.get("Properties")
                    .and_then(|p| p.get("DefinitionSubstitutions"))
                    .and_then(Yaml::entries)
                    .is_some_and(|entries| entries.iter().any(|(_, value)| value.as_str() == Some(arn.as_str())))
        });
        assert!(
            !events.is_empty() || by_a_state_machine,
            "{} has no event and no state machine invokes it: nothing invokes it",
            function.logical_id
        );
        let find =
            |c: &&&Yaml| c.get("FunctionName").and_then(Yaml::as_str) == Some(&format!("!Ref {}", function.logical_id));
        if !events.is_empty() && events.iter().all(|kind| *kind == "HttpApi") {
            // API Gateway invokes it synchronously: a failure is the
            // caller's answer (a 5xx), never retried or queued.
            assert!(
                configs.iter().find(find).is_none(),
                "{} is invoked only by its HTTP API (synchronously): an EventInvokeConfig would never apply",
                function.logical_id
            );
            continue;
        }
        let config = configs
            .iter()
            .find(find)
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
        "fanout" => {
            ("DeliveryConfig", |lookup| DeliveryConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
        }
        "deliver-s3" => {
            ("DeliverS3Config", |lookup| DeliverS3Config::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
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
        "notify" => ("NotifyConfig", |lookup| NotifyConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string())),
        "console" => {
            ("ConsoleConfig", |lookup| ConsoleConfig::from_lookup(lookup).map(drop).map_err(|e| e.to_string()))
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

/// Every principal a key policy statement names (`Principal: {AWS: …}`).
fn key_policy_principals(statement: &Yaml) -> Vec<String> {
    match statement.get("Principal").and_then(|p| p.get("AWS")) {
        Some(Yaml::Scalar(one)) => vec![one.clone()],
        Some(Yaml::Seq(many)) => many.iter().filter_map(Yaml::as_str).map(str::to_owned).collect(),
        other => panic!("a key policy statement names no AWS principal: {other:?}"),
    }
}

#[test]
fn only_deliver_email_may_read_the_link_signer_secret_under_our_own_secrets_key() {
    let template = Template::load();
    // The role that reads the signer's key is the role of the function
    // LINK_SIGNER_SECRET is given to, and of no other.
    let signers: Vec<String> = template
        .functions()
        .iter()
        .filter(|function| template.environment(function).contains_key("LINK_SIGNER_SECRET"))
        .map(|function| format!("!GetAtt {}Role.Arn", function.logical_id))
        .collect();
    assert_eq!(signers, ["!GetAtt DeliverEmailFunctionRole.Arn"], "the functions given LINK_SIGNER_SECRET");
    let reader = signers[0].as_str();
    let secret_arn = "!Sub arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${AWS::StackName}-link-signer-??????";

    // The secret is under OwnSecretsKey, by the name the key policy and
    // deliver-email's statement match.
    let secret = template.properties("LinkSignerSecret");
    assert_eq!(secret.get("Name").and_then(Yaml::as_str), Some("!Sub ${AWS::StackName}-link-signer"));
    assert_eq!(secret.get("KmsKeyId").and_then(Yaml::as_str), Some("!GetAtt OwnSecretsKey.Arn"));
    let readers: Vec<&str> = template
        .functions()
        .iter()
        .filter(|function| {
            policy_statements(function).iter().any(|statement| {
                actions(statement).contains(&"secretsmanager:GetSecretValue")
                    && resources_of(statement).iter().any(|r| r.contains("link-signer") || *r == "*")
            })
        })
        .map(|function| function.logical_id)
        .collect();
    assert_eq!(readers, ["DeliverEmailFunction"], "whose policies allow reading the link signer secret");
    let email = template.function_by_binary("deliver-email");
    let grant = policy_statements(&email)
        .into_iter()
        .find(|statement| statement.get("Sid").and_then(Yaml::as_str) == Some("ReadTheLinkSignerSecret"))
        .expect("deliver-email's ReadTheLinkSignerSecret");
    assert_eq!(resources_of(grant), [secret_arn]);

    // Who may use the key: deliver-email decrypts; the account is delegated
    // only the writes Secrets Manager needs (through it, for that secret),
    // besides administration. No grants, no re-encryption, no other key use.
    let key = template.resource("OwnSecretsKey");
    assert_eq!(Template::resource_type(key), "AWS::KMS::Key");
    let statements = key
        .get("Properties")
        .and_then(|p| p.get("KeyPolicy"))
        .and_then(|p| p.get("Statement"))
        .and_then(Yaml::items)
        .expect("OwnSecretsKey has a KeyPolicy");
    const USES: [&str; 5] = ["kms:decrypt", "kms:encrypt", "kms:generatedatakey", "kms:reencrypt", "kms:creategrant"];
    let cryptographic = |action: &str| {
        let action = action.to_ascii_lowercase();
        match action.strip_suffix('*') {
            Some(stem) => USES.iter().any(|used| used.starts_with(stem)),
            None => USES.iter().any(|used| action.starts_with(used)),
        }
    };
    let root = "!Sub arn:${AWS::Partition}:iam::${AWS::AccountId}:root";
    let (mut decrypters, mut administered) = (BTreeSet::new(), false);
    for statement in statements {
        assert_eq!(statement.get("Effect").and_then(Yaml::as_str), Some("Allow"));
        let principals = key_policy_principals(statement);
        let acts = actions(statement);
        let used: Vec<&str> = acts.iter().copied().filter(|a| cryptographic(a)).collect();
        if used.is_empty() {
            assert_eq!(principals, [root], "only the account administers the key");
            administered |= acts.contains(&"kms:PutKeyPolicy");
            continue;
        }
        let allowed: &[&str] = if principals == [root] {
            &["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt"]
        } else {
            &["kms:Decrypt"]
        };
        assert!(used.iter().all(|a| allowed.contains(a)), "{principals:?} may {used:?} with our own secrets key");
        let condition = statement.get("Condition").expect("key use has conditions");
        assert_eq!(
            condition.get("StringEquals").and_then(|c| c.get("kms:ViaService")).and_then(Yaml::as_str),
            Some("!Sub secretsmanager.${AWS::Region}.${AWS::URLSuffix}"),
            "{principals:?}: only through Secrets Manager"
        );
        assert_eq!(
            condition.get("StringLike").and_then(|c| c.get("kms:EncryptionContext:SecretARN")).and_then(Yaml::as_str),
            Some(secret_arn),
            "{principals:?}: only for the link signer secret"
        );
        if used.contains(&"kms:Decrypt") {
            decrypters.extend(principals);
        }
    }
    assert!(administered, "the key must stay administrable (kms:PutKeyPolicy for the account)");
    assert_eq!(decrypters, BTreeSet::from([root.to_owned(), reader.to_owned()]), "who may decrypt");

    // The resource policy: GetSecretValue denied to every principal but
    // deliver-email's role, nothing allowed, public policies blocked.
    let policy = template.resource("LinkSignerSecretPolicy");
    assert_eq!(Template::resource_type(policy), "AWS::SecretsManager::ResourcePolicy");
    let properties = template.properties("LinkSignerSecretPolicy");
    assert_eq!(properties.get("SecretId").and_then(Yaml::as_str), Some("!Ref LinkSignerSecret"));
    assert_eq!(properties.get("BlockPublicPolicy").and_then(Yaml::as_str), Some("true"));
    let statements = properties
        .get("ResourcePolicy")
        .and_then(|p| p.get("Statement"))
        .and_then(Yaml::items)
        .expect("LinkSignerSecretPolicy has statements");
    let mut denied = Vec::new();
    for statement in statements {
        assert_eq!(statement.get("Effect").and_then(Yaml::as_str), Some("Deny"), "the policy only denies");
        assert_eq!(statement.get("Principal").and_then(Yaml::as_str), Some("*"), "to every principal");
        assert_eq!(resources_of(statement), ["*"]);
        let except = statement
            .get("Condition")
            .and_then(|c| c.get("StringNotEquals"))
            .and_then(|c| c.get("aws:PrincipalArn"))
            .and_then(Yaml::as_str);
        assert_eq!(except, Some(reader), "every principal but deliver-email's role");
        denied.extend(actions(statement));
    }
    assert_eq!(denied, ["secretsmanager:GetSecretValue"], "what the policy denies");
    // `popularity link-signer rotate` reads the secret's tags and versions,
    // which the policy leaves alone, never its value.
    let rotate = read(&workspace_root().join("cli/src/link_signer_command.rs"));
    for call in [".describe_secret()", ".list_secret_version_ids()"] {
        assert!(rotate.contains(call), "link-signer rotate calls {call}");
    }
    assert!(!rotate.contains("get_secret_value"), "link-signer rotate must not need the value: the policy denies it");

    let outputs = template.root.get("Outputs").expect("Outputs");
    assert_eq!(
        outputs.get("OwnSecretsKeyArn").and_then(|o| o.get("Value")).and_then(Yaml::as_str),
        Some("!GetAtt OwnSecretsKey.Arn")
    );
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
fn the_sweeper_runs_on_its_schedule_may_touch_only_jobs_status_and_events_and_its_status_writes_go_nowhere() {
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
                "s3:GetObject" => vec![
                    format!("!Sub {staging}/jobs/*"),
                    format!("!Sub {staging}/status/*"),
                    format!("!Sub {staging}/notifications/*"),
                    format!("!Sub {staging}/notification-status/*"),
                ],
                "s3:PutObject" => vec![
                    format!("!Sub {staging}/jobs/*"),
                    format!("!Sub {staging}/status/*"),
                    format!("!Sub {staging}/notifications/*"),
                ],
                other => panic!(
                    "the sweeper may not {other}: it lists, reads and writes jobs/, status/ and notifications/ only"
                ),
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
    // Its event re-writes start notify alone; notify's own writes start nothing.
    let notify = template.function_by_binary("notify");
    let event_key = "notifications/20261119030000/acme/feed/delivery.failed.json";
    let routed: Vec<&String> = routes.iter().filter(|r| r.matches(event_key)).map(|r| &r.logical_id).collect();
    assert_eq!(routed, [notify.logical_id], "{event_key}");
    for own in ["notification-status/20261119030000/acme/feed/delivery.failed.json", "notices/acme/feed.json"] {
        let routed: Vec<&String> = routes.iter().filter(|r| r.matches(own)).map(|r| &r.logical_id).collect();
        assert!(routed.is_empty(), "{own} is routed to {routed:?}: notify would start itself");
    }
}

/// The metrics that mean a person should look, and the handler that emits
/// each (under `PopularityReports`, dimension `Function`).
const ALARMED_METRICS: [(&str, &str, &str); 4] = [
    ("RunsWithoutPlays", "rank", "shared/src/handlers/rank.rs"),
    ("GoogleIdentityFailures", "google-identity", "shared/src/google_identity/impersonation.rs"),
    ("RedrivesExhausted", "sweeper", "shared/src/handlers/sweeper.rs"),
    ("NotificationTargetsPaused", "notify", "shared/src/notify/dispatch.rs"),
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

// ------------------------------------------------------------------ console

/// The console's resources, by logical id.
const CONSOLE_USER_POOL: &str = "ConsoleUserPool";
const CONSOLE_APP_CLIENT: &str = "ConsoleUserPoolClient";
const CONSOLE_API: &str = "ConsoleApi";

/// The text at `path` below `node`.
fn text_at<'a>(node: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(node, |node, key| node.get(key))?.as_str()
}

/// The scalar items of the list at `key` of `node`, sorted.
fn sorted_items<'a>(node: &'a Yaml, key: &str) -> Vec<&'a str> {
    let mut items: Vec<&str> =
        node.get(key).and_then(Yaml::items).unwrap_or(&[]).iter().filter_map(Yaml::as_str).collect();
    items.sort_unstable();
    items
}

fn sorted<'a>(items: &[&'a str]) -> Vec<&'a str> {
    let mut items = items.to_vec();
    items.sort_unstable();
    items
}

impl Template {
    fn properties(&self, logical_id: &str) -> &Yaml {
        self.resource(logical_id).get("Properties").unwrap_or_else(|| panic!("{logical_id} has no Properties"))
    }

    fn output_value(&self, name: &str) -> Option<&str> {
        self.root.get("Outputs")?.get(name)?.get("Value")?.as_str()
    }
}

/// The string argument of the first `call` (`min_length(`) in `source`.
fn quoted_argument<'a>(source: &'a str, call: &str) -> &'a str {
    let start = source.find(call).unwrap_or_else(|| panic!("no {call} in the source")) + call.len();
    let argument = source[start..].strip_prefix('"').unwrap_or_else(|| panic!("{call} takes no string literal"));
    &argument[..argument.find('"').expect("a closed string literal")]
}

#[test]
fn the_console_user_pool_app_client_and_operators_group_are_the_ones_users_rs_creates() {
    let template = Template::load();
    assert_eq!(Template::resource_type(template.resource(CONSOLE_USER_POOL)), "AWS::Cognito::UserPool");
    let pool = template.properties(CONSOLE_USER_POOL);
    // Users are invited (AdminCreateUser), named by their email address.
    assert_eq!(sorted_items(pool, "UsernameAttributes"), ["email"]);
    assert_eq!(text_at(pool, &["AdminCreateUserConfig", "AllowAdminCreateUserOnly"]), Some("true"), "no sign-up");
    let minimum = text_at(pool, &["Policies", "PasswordPolicy", "MinimumLength"]).and_then(|m| m.parse::<u32>().ok());
    assert!(minimum.is_some_and(|m| m >= 8), "a password policy of at least 8 characters, not {minimum:?}");

    // The schema's one custom attribute: the tenant, immutable, with
    // the bounds users.rs gives it and a tenant id has.
    let schema = pool.get("Schema").and_then(Yaml::items).expect("ConsoleUserPool declares a Schema");
    let names: Vec<&str> = schema.iter().filter_map(|a| text_at(a, &["Name"])).collect();
    assert_eq!(names, [TENANT_ATTRIBUTE_NAME], "the attributes users.rs declares");
    assert_eq!(format!("custom:{TENANT_ATTRIBUTE_NAME}"), TENANT_ATTRIBUTE, "the claim auth.rs reads");
    let tenant = &schema[0];
    assert_eq!(text_at(tenant, &["AttributeDataType"]), Some("String"));
    assert_eq!(text_at(tenant, &["Mutable"]), Some("false"), "a user's tenant never changes");
    let users_rs = read(&workspace_root().join("shared/src/console/users.rs"));
    let (min, max) = (quoted_argument(&users_rs, "min_length("), quoted_argument(&users_rs, "max_length("));
    assert_eq!(text_at(tenant, &["StringAttributeConstraints", "MinLength"]), Some(min));
    assert_eq!(text_at(tenant, &["StringAttributeConstraints", "MaxLength"]), Some(max));
    let longest: usize = max.parse().expect("a number");
    assert!(is_safe_id(&"a".repeat(longest)) && !is_safe_id(&"a".repeat(longest + 1)), "a tenant id's bounds");

    // The app client: public, password sign-in and refresh, reads the
    // tenant but can never write it.
    assert_eq!(Template::resource_type(template.resource(CONSOLE_APP_CLIENT)), "AWS::Cognito::UserPoolClient");
    let client = template.properties(CONSOLE_APP_CLIENT);
    assert_eq!(text_at(client, &["UserPoolId"]), Some("!Ref ConsoleUserPool"));
    assert_eq!(text_at(client, &["GenerateSecret"]), Some("false"), "the page and scripts cannot keep a secret");
    assert_eq!(sorted_items(client, "ExplicitAuthFlows"), sorted(&APP_CLIENT_AUTH_FLOWS));
    assert_eq!(sorted_items(client, "ReadAttributes"), sorted(&APP_CLIENT_READ_ATTRIBUTES));
    assert_eq!(sorted_items(client, "WriteAttributes"), sorted(&APP_CLIENT_WRITE_ATTRIBUTES));
    assert!(sorted_items(client, "ReadAttributes").contains(&TENANT_ATTRIBUTE));
    assert!(!sorted_items(client, "WriteAttributes").contains(&TENANT_ATTRIBUTE), "the client may not set the tenant");

    let groups: Vec<&Yaml> = template
        .resources()
        .iter()
        .filter(|(_, r)| Template::resource_type(r) == "AWS::Cognito::UserPoolGroup")
        .filter_map(|(_, r)| r.get("Properties"))
        .collect();
    assert_eq!(groups.len(), 1, "one group: the operators");
    assert_eq!(text_at(groups[0], &["GroupName"]), Some(OPERATORS_GROUP), "the group auth.rs lets act on any tenant");
    assert_eq!(text_at(groups[0], &["UserPoolId"]), Some("!Ref ConsoleUserPool"));

    assert_eq!(template.output_value("ConsoleUserPoolId"), Some("!Ref ConsoleUserPool"));
    assert_eq!(template.output_value("ConsoleUserPoolClientId"), Some("!Ref ConsoleUserPoolClient"));
    assert_eq!(
        template.output_value("ConsoleUrl"),
        Some("!Sub https://${ConsoleApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/")
    );
}

#[test]
fn the_console_api_and_the_function_accept_id_tokens_of_that_pool_and_client_only() {
    let template = Template::load();
    assert_eq!(Template::resource_type(template.resource(CONSOLE_API)), "AWS::Serverless::HttpApi");
    let auth = template.properties(CONSOLE_API).get("Auth").expect("ConsoleApi has Auth");
    let default = text_at(auth, &["DefaultAuthorizer"]).expect("a default authorizer: routes are closed unless opened");
    let authorizer = auth.get("Authorizers").and_then(|a| a.get(default)).expect("the default authorizer is declared");
    assert_eq!(text_at(authorizer, &["IdentitySource"]), Some("$request.header.Authorization"));
    let jwt = authorizer.get("JwtConfiguration").expect("a JWT authorizer");
    let issuer = text_at(jwt, &["issuer"]).expect("an issuer");
    let none = BTreeMap::new();
    assert_eq!(
        template.resolve_with_defaults(issuer, &none),
        CognitoSettings::issuer_of(SAMPLE_REGION, &format!("resolved-{CONSOLE_USER_POOL}")),
        "the issuer of ConsoleUserPool's tokens, as auth.rs writes it"
    );
    assert_eq!(sorted_items(jwt, "audience"), ["!Ref ConsoleUserPoolClient"], "tokens issued to our app client");

    // The function checks the same pool, client and issuer again.
    let function = template.function_by_binary("console");
    let environment = template.environment(&function);
    let variable = |name: &str| environment.get(name).map(String::as_str);
    assert_eq!(variable("COGNITO_USER_POOL_ID"), Some("!Ref ConsoleUserPool"));
    assert_eq!(variable("COGNITO_CLIENT_ID"), Some("!Ref ConsoleUserPoolClient"));
    assert_eq!(variable("COGNITO_ISSUER"), Some(issuer), "the authorizer's issuer");
    assert_eq!(variable("COGNITO_JWKS_URL"), Some("!Ref AWS::NoValue"), "deployed: <issuer>/.well-known/jwks.json");
    let samples = BTreeMap::from([("DataBucketName", "example-data")]);
    let resolved: BTreeMap<String, String> =
        environment.iter().map(|(k, v)| (k.clone(), template.resolve_with_defaults(v, &samples))).collect();
    let config = ConsoleConfig::from_lookup(|name| resolved.get(name).filter(|v| !v.is_empty()).cloned())
        .expect("the console starts with the template's environment");
    assert_eq!(config.issuer, template.resolve_with_defaults(issuer, &none));
    assert_eq!(config.jwks_url, format!("{}/.well-known/jwks.json", config.issuer), "the pool's own keys");
    assert_eq!(config.client_id, format!("resolved-{CONSOLE_APP_CLIENT}"));
    assert_eq!(config.user_pool_id, format!("resolved-{CONSOLE_USER_POOL}"));
    // The principal the setup instructions name is the one customers trust.
    assert_eq!(variable("DELIVERY_PRINCIPAL_ARN"), template.output_value("CustomerTrustPrincipal"));
    assert_eq!(
        variable("GOOGLE_SHARE_ADDRESS"),
        Some("!If [HasGoogleShareAddress, !Ref GoogleShareAddress, !Ref AWS::NoValue]")
    );
}

#[test]
fn the_console_api_is_throttled_and_the_function_answers_before_api_gateway_gives_up() {
    let template = Template::load();
    let settings =
        template.properties(CONSOLE_API).get("DefaultRouteSettings").expect("ConsoleApi has DefaultRouteSettings");
    for setting in ["ThrottlingBurstLimit", "ThrottlingRateLimit"] {
        let value =
            text_at(settings, &[setting]).unwrap_or_else(|| panic!("DefaultRouteSettings.{setting} is not set"));
        let parameter =
            value.strip_prefix("!Ref ").unwrap_or_else(|| panic!("{setting} {value:?} is not a !Ref of a parameter"));
        assert_eq!(template.parameter_field(parameter, "Type"), Some("Number"), "{parameter}");
        let number = |field: &str| template.parameter_field(parameter, field).and_then(|v| v.parse::<f64>().ok());
        assert!(number("MinValue").is_some_and(|m| m >= 1.0), "{parameter}: 0 would refuse every request");
        assert!(number("MaxValue").is_some(), "{parameter}: bounded");
        assert!(number("Default").is_some_and(|d| d >= 1.0), "{parameter}: a default that lets requests in");
    }

    // API Gateway waits 30 s for the function; the function waits for a
    // connection test at most the parameter's maximum.
    let function = template.function_by_binary("console");
    let timeout = function.properties.get("Timeout").and_then(Yaml::as_str).and_then(|t| t.parse::<u64>().ok());
    let timeout = timeout.expect("the console function has a Timeout");
    assert!(timeout < 30, "Timeout {timeout}: API Gateway answers 503 after 30 s, whatever the function does");
    let variable = template.environment(&function).get("CONNECTION_TEST_WAIT_SECONDS").cloned();
    let parameter = variable.as_deref().and_then(|v| v.strip_prefix("!Ref ")).expect("a parameter sets the wait");
    let longest = template.parameter_field(parameter, "MaxValue").and_then(|v| v.parse::<u64>().ok());
    assert!(longest.is_some_and(|l| l < timeout), "{parameter} MaxValue {longest:?} against Timeout {timeout}");
    // One default: the parameter's is the configuration's.
    let required = BTreeMap::from([
        ("STAGING_BUCKET", "b"),
        ("COGNITO_USER_POOL_ID", "us-east-1_x"),
        ("COGNITO_CLIENT_ID", "c"),
        ("AWS_REGION", SAMPLE_REGION),
    ]);
    let unset = ConsoleConfig::from_lookup(|name| required.get(name).map(|v| (*v).to_owned())).unwrap();
    assert_eq!(
        template.parameter_default(parameter).and_then(|d| d.parse::<u64>().ok()),
        Some(unset.connection_test_wait_seconds),
        "{parameter}'s default is CONNECTION_TEST_WAIT_SECONDS's"
    );
}

/// The router's routes, read from its source (`.route("PATH", get(..).post(..))`
/// in shared/src/console/routes.rs and pages.rs): (method, path).
fn router_routes() -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for file in ["shared/src/console/routes.rs", "shared/src/console/pages.rs"] {
        let source = read(&workspace_root().join(file));
        for (at, _) in source.match_indices(".route(") {
            // The call's arguments: up to the parenthesis that closes it.
            let arguments = &source[at + ".route(".len()..];
            let mut depth = 1;
            let end = arguments
                .char_indices()
                .find(|(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("{file}: an unclosed .route("));
            let arguments = &arguments[..end];
            let path = arguments.split('"').nth(1).unwrap_or_else(|| panic!("{file}: a route without a path"));
            let methods: Vec<&str> = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|method| {
                    arguments.match_indices(&format!("{method}(")).any(|(i, _)| {
                        i == 0 || !arguments[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    })
                })
                .collect();
            assert!(!methods.is_empty(), "{file}: route {path} has no method this test reads");
            routes.extend(methods.into_iter().map(|m| (m.to_uppercase(), path.to_owned())));
        }
    }
    routes
}

/// `/v1/feeds/{id}` with every path variable given a value.
fn concrete(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "x1" } else { s }).collect::<Vec<_>>().join("/")
}

#[test]
fn every_v1_route_of_the_router_is_behind_the_authorizer_but_the_openapi_document_and_the_page_is_public() {
    let template = Template::load();
    let function = template.function_by_binary("console");
    let routes = template.http_routes(&function);
    let router = router_routes();

    // The reading of the source is checked against the OpenAPI document:
    // every documented operation is a route read from the router.
    let document: serde_json::Value = serde_json::from_str(&openapi_json()).expect("the OpenAPI document is JSON");
    let shape = |path: &str| concrete(path);
    let mut documented = 0;
    for (path, operations) in document["paths"].as_object().expect("the document has paths") {
        for method in operations.as_object().expect("operations").keys() {
            let method = method.to_uppercase();
            assert!(
                router.iter().any(|(m, p)| *m == method && shape(p) == shape(path)),
                "{method} {path} is documented but not read from the router's source: {router:?}"
            );
            documented += 1;
        }
    }
    assert!(documented >= 15 && router.len() > documented, "{documented} documented, {} routed", router.len());

    for (method, path) in &router {
        let sample = concrete(path);
        let route = route_for(&routes, method, &sample)
            .unwrap_or_else(|| panic!("API Gateway has no route for {method} {path}: it would answer 404"));
        let public = !path.starts_with("/v1/") || path == "/v1/openapi.json";
        match (&route.authorizer, public) {
            (Some(_), false) | (None, true) => {}
            (Some(authorizer), true) => {
                panic!("{method} {path} must be reachable without a token, but {} passes {authorizer}", route.key())
            }
            (None, false) => panic!("{method} {path} reaches the function without a token through {}", route.key()),
        }
    }
    // A /v1/ route added later is closed until the template opens it.
    let later = route_for(&routes, "DELETE", "/v1/a/route/added/later").expect("the /v1/ catch-all");
    assert!(later.authorizer.is_some(), "{} is public", later.key());
    assert!(route_for(&routes, "GET", "/v1").is_none_or(|r| r.authorizer.is_some()), "/v1 itself is not public");
    // No route of the template leads nowhere.
    for route in &routes {
        assert!(
            router.iter().any(|(m, p)| route.matches(m, &concrete(p))),
            "event {} ({}) matches no route of the router",
            route.event,
            route.key()
        );
    }
}

/// What the console's role may do, and why (shared/src/console/service.rs,
/// dispatch.rs, document.rs and delivery/redrive.rs's `redrive_job`).
#[test]
fn the_console_may_touch_only_what_its_code_calls() {
    let template = Template::load();
    let function = template.function_by_binary("console");
    let staging = "arn:${AWS::Partition}:s3:::${AWS::StackName}-staging-${AWS::AccountId}-${AWS::Region}";
    let secrets =
        "!Sub arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${TenantSecretPrefix}*";
    let keys = "!Sub arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*";
    let under =
        |prefixes: &[&str]| -> Vec<String> { prefixes.iter().map(|p| format!("!Sub {staging}/{p}*")).collect() };
    let mut seen = BTreeSet::new();
    let managed = function.properties.get("Policies").and_then(Yaml::items).unwrap_or(&[]);
    assert!(
        managed.iter().all(|policy| policy.get("Statement").is_some()),
        "the console has inline statements only (no SQS: API Gateway invokes it synchronously)"
    );
    for statement in policy_statements(&function) {
        assert_eq!(statement.get("Effect").and_then(Yaml::as_str), Some("Allow"));
        for action in actions(statement) {
            seen.insert(action);
            let allowed: Vec<String> = match action {
                "s3:ListBucket" => vec![format!("!Sub {staging}")],
                "s3:GetObject" => under(&["feed-index/", "status/", "jobs/", "connection-test-results/"]),
                "s3:PutObject" => under(&["connection-tests/", "jobs/", "status/"]),
                "secretsmanager:GetSecretValue"
                | "secretsmanager:DescribeSecret"
                | "secretsmanager:PutSecretValue"
                | "secretsmanager:UpdateSecretVersionStage" => vec![secrets.to_owned()],
                "secretsmanager:ListSecrets" | "secretsmanager:BatchGetSecretValue" => vec!["*".to_owned()],
                "kms:Decrypt" | "kms:GenerateDataKey" => {
                    let condition = statement.get("Condition").expect("the key only through Secrets Manager");
                    assert!(
                        text_at(condition, &["StringEquals", "kms:ViaService"]).is_some()
                            && text_at(condition, &["ForAnyValue:StringEquals", "kms:ResourceAliases"]).is_some(),
                        "{action}: only through Secrets Manager and only the tenant secrets key"
                    );
                    vec![keys.to_owned()]
                }
                other => panic!("the console may not {other}: no call of its code needs it"),
            };
            for resource in resources_of(statement) {
                assert!(
                    allowed.iter().any(|a| a == resource),
                    "the console may {action} on {resource}, beyond {allowed:?}"
                );
            }
        }
    }
    let needed = [
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:ListSecrets",
        "secretsmanager:BatchGetSecretValue",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    ];
    assert_eq!(seen, needed.into_iter().collect::<BTreeSet<_>>(), "what the console's code calls");

    // Its writes start the deliverer of their kind and nothing else: a
    // connection test or a job by its kind, a status nothing.
    let s3_routes = template.s3_routes();
    let routed = |key: &str| -> Vec<String> {
        s3_routes.iter().filter(|r| r.matches(key)).map(|r| r.logical_id.clone()).collect()
    };
    assert!(routed("status/20261119030000/acme/feed.json").is_empty());
    for deliverer in DELIVERER_FUNCTIONS.iter().filter(|d| d.supported) {
        let expected = [template.function_by_binary(deliverer.function).logical_id.to_owned()];
        let kind = deliverer.job_kind;
        assert_eq!(routed(&format!("{CONNECTION_TESTS_PREFIX}{kind}/console-1/acme/lake.json")), expected);
        assert_eq!(routed(&format!("{JOBS_PREFIX}{kind}/20261119030000/acme/feed.json")), expected);
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
