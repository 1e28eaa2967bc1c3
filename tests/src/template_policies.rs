//! Each function's IAM policy and environment as a deployed stack would have
//! them, taken from the SAM template after the transform CloudFormation runs
//! (`scripts/local/transform_template.py`, the same offline transform
//! `scripts/check-template.sh` lints), with the intrinsic functions the
//! policies use (`Ref`, `Fn::Sub`, `Fn::GetAtt`, `Fn::If`, `Fn::Select`,
//! `Fn::Split`, `Fn::Join`, the conditions) resolved to a test's own names:
//! its stack name, account, region, parameters and resources. It must not
//! invent a permission: a reference it cannot resolve is an error, never an
//! empty string or a `*`, and the one place it rewrites a statement
//! ([`FunctionPolicy::moto_document`]) says what it changed and why.
//!
//! moto authorises S3 requests against the bucket or object ARN and STS's
//! `AssumeRole` against the role ARN, but Secrets Manager, SES (and KMS)
//! requests against `*`, and it evaluates no condition but a
//! `StringEquals` on request values it knows (`sts:ExternalId`). So a
//! statement scoped to a secret's ARN never matches there, and one whose
//! `Resource` is `*` but whose condition narrows it is as wide as `*`.
//! [`FunctionPolicy::moto_document`] keeps everything moto can check and
//! rewrites the rest in the one direction that keeps the test honest — see
//! its documentation; [`FunctionPolicy::allows`] is the test's own check of
//! the original resource patterns for what moto cannot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// Services whose requests moto authorises against resource `*` (it knows
/// no resource ARN for them), so statements scoped to an ARN never match.
/// Athena, Glue, Lambda and CloudWatch Logs are the state machines',
/// EventBridge notify's (moto 5.2.5's `BaseResponse.call_action` names a
/// resource only for IAM, STS and SQS besides S3).
pub const SERVICES_MOTO_AUTHORISES_AGAINST_STAR: [&str; 8] =
    ["secretsmanager", "ses", "kms", "athena", "glue", "lambda", "logs", "events"];

/// The S3 API operations each IAM action authorises, as AWS documents them
/// (for the operations this project's code calls). moto 5.2.6 authorises an
/// S3 request by its operation's name (`s3:ListObjectsV2`,
/// `s3:CreateMultipartUpload`, `s3:HeadObject`), not by the IAM action AWS
/// checks (`s3:ListBucket`, `s3:PutObject`, `s3:GetObject`); moto 5.2.5
/// used the IAM actions. [`FunctionPolicy::moto_document`] adds these names
/// beside each action, in the same statement (same resources).
pub const S3_OPERATIONS_BY_ACTION: [(&str, &[&str]); 6] = [
    ("s3:ListBucket", &["s3:ListObjectsV2", "s3:ListObjects", "s3:HeadBucket"]),
    ("s3:GetObject", &["s3:HeadObject"]),
    (
        "s3:PutObject",
        &[
            "s3:CreateMultipartUpload",
            "s3:UploadPart",
            "s3:CompleteMultipartUpload",
            "s3:CopyObject",
            "s3:UploadPartCopy",
        ],
    ),
    ("s3:ListBucketMultipartUploads", &["s3:ListMultipartUploads"]),
    ("s3:ListMultipartUploadParts", &["s3:ListParts"]),
    ("s3:DeleteObject", &["s3:DeleteObjects"]),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root").to_path_buf()
}

/// The transformed template (`AWS::Serverless::*` expanded, each function's
/// role an `AWS::IAM::Role`), made once per process by
/// `scripts/local/transform_template.py` with the project's `.venv` Python.
///
/// # Panics
/// When `.venv` is missing (run `bash scripts/emulator.sh install`) or the
/// transform fails.
pub fn transformed_template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = workspace_root();
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `bash scripts/emulator.sh install` (the test command does)",
            python.display()
        );
        let out = tempfile::Builder::new().suffix(".json").tempfile().expect("a temporary file");
        let status = std::process::Command::new(&python)
            .arg(root.join("scripts/local/transform_template.py"))
            .arg(root.join("template.yaml"))
            .arg(out.path())
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        assert!(status.success(), "the SAM transform of template.yaml failed ({status})");
        let text = std::fs::read_to_string(out.path()).expect("the transform's output");
        serde_json::from_str(&text).expect("the transform writes JSON")
    })
}

/// The names a stack would give what the template refers to: pseudo
/// parameters, parameter values (those not given take the template's
/// `Default`), the `Ref` of resources and their `Fn::GetAtt` attributes.
#[derive(Debug, Clone)]
pub struct StackNames {
    pub stack_name: String,
    pub account_id: String,
    pub region: String,
    pub parameters: BTreeMap<String, String>,
    /// `Ref` of a resource, by logical id.
    pub resources: BTreeMap<String, String>,
    /// `Fn::GetAtt`, by `"LogicalId.Attribute"`.
    pub attributes: BTreeMap<String, String>,
}

impl StackNames {
    pub fn new(stack_name: &str, account_id: &str, region: &str) -> Self {
        Self {
            stack_name: stack_name.to_owned(),
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            parameters: BTreeMap::new(),
            resources: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }

    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.parameters.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn resource(mut self, logical_id: &str, reference: &str) -> Self {
        self.resources.insert(logical_id.to_owned(), reference.to_owned());
        self
    }

    pub fn attribute(mut self, logical_id_dot_attribute: &str, value: &str) -> Self {
        self.attributes.insert(logical_id_dot_attribute.to_owned(), value.to_owned());
        self
    }

    /// `<stack>-staging-<account>-<region>`, as the template names it.
    pub fn staging_bucket(&self) -> String {
        format!("{}-staging-{}-{}", self.stack_name, self.account_id, self.region)
    }
}

/// Marker for `AWS::NoValue` while resolving; removed from lists and maps.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

/// Resolves intrinsic functions of `template` with `names`.
pub struct Resolver<'a> {
    template: &'a Value,
    names: &'a StackNames,
}

impl<'a> Resolver<'a> {
    pub fn new(template: &'a Value, names: &'a StackNames) -> Self {
        Self { template, names }
    }

    /// `value` with every intrinsic function replaced by its value.
    pub fn resolve(&self, value: &Value) -> Result<Value, String> {
        let resolved = self.resolve_inner(value)?;
        if resolved == Value::String(NO_VALUE.to_owned()) {
            return Err("the value as a whole is AWS::NoValue".to_owned());
        }
        Ok(resolved)
    }

    fn resolve_inner(&self, value: &Value) -> Result<Value, String> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let item = self.resolve_inner(item)?;
                    if item != Value::String(NO_VALUE.to_owned()) {
                        out.push(item);
                    }
                }
                Ok(Value::Array(out))
            }
            Value::Object(map) if map.len() == 1 => {
                let (key, argument) = map.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" => self.reference(as_str(argument, "Ref")?).map(Value::String),
                    "Fn::Sub" => self.sub(argument).map(Value::String),
                    "Fn::GetAtt" => self.get_att(argument).map(Value::String),
                    "Fn::If" => self.fn_if(argument),
                    "Fn::Select" => self.select(argument),
                    "Fn::Split" => self.split(argument),
                    "Fn::Join" => self.join(argument).map(Value::String),
                    other if other.starts_with("Fn::") || other == "Condition" => {
                        Err(format!("the intrinsic {other} is not resolved by this test"))
                    }
                    _ => self.resolve_map(map),
                }
            }
            Value::Object(map) => self.resolve_map(map),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            other => Ok(other.clone()),
        }
    }

    fn resolve_map(&self, map: &Map<String, Value>) -> Result<Value, String> {
        let mut out = Map::new();
        for (key, value) in map {
            let value = self.resolve_inner(value)?;
            if value != Value::String(NO_VALUE.to_owned()) {
                out.insert(key.clone(), value);
            }
        }
        Ok(Value::Object(out))
    }

    fn reference(&self, name: &str) -> Result<String, String> {
        let names = self.names;
        Ok(match name {
            "AWS::StackName" => names.stack_name.clone(),
            "AWS::AccountId" => names.account_id.clone(),
            "AWS::Region" => names.region.clone(),
            "AWS::Partition" => "aws".to_owned(),
            "AWS::URLSuffix" => "amazonaws.com".to_owned(),
            "AWS::NoValue" => NO_VALUE.to_owned(),
            _ => {
                if let Some(value) = names.parameters.get(name) {
                    value.clone()
                } else if let Some(parameter) = self.template["Parameters"].get(name) {
                    match &parameter["Default"] {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err(format!("parameter {name} has no default and the test gives no value")),
                    }
                } else if let Some(value) = names.resources.get(name) {
                    value.clone()
                } else {
                    return Err(format!("Ref {name}: the test names no such parameter or resource"));
                }
            }
        })
    }

    fn get_att(&self, argument: &Value) -> Result<String, String> {
        let key = match argument {
            Value::String(s) => s.clone(),
            Value::Array(parts) if parts.len() == 2 => {
                format!("{}.{}", as_str(&parts[0], "Fn::GetAtt")?, as_str(&parts[1], "Fn::GetAtt")?)
            }
            other => return Err(format!("Fn::GetAtt of {other}")),
        };
        self.names.attributes.get(&key).cloned().ok_or_else(|| format!("Fn::GetAtt {key}: the test names no value"))
    }

    fn sub(&self, argument: &Value) -> Result<String, String> {
        let (text, variables) = match argument {
            Value::String(text) => (text.as_str(), Map::new()),
            Value::Array(parts) if parts.len() == 2 => {
                let variables = parts[1].as_object().ok_or("Fn::Sub variables are not a map")?.clone();
                (as_str(&parts[0], "Fn::Sub")?, variables)
            }
            other => return Err(format!("Fn::Sub of {other}")),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| format!("unclosed ${{ in {text}"))? + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.get(name) {
                let value = self.resolve_inner(value)?;
                out.push_str(value.as_str().ok_or_else(|| format!("Fn::Sub variable {name} is not a string"))?);
            } else if name.contains('.') && !name.starts_with("AWS::") {
                out.push_str(&self.get_att(&Value::String(name.to_owned()))?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn fn_if(&self, argument: &Value) -> Result<Value, String> {
        let parts = argument.as_array().filter(|p| p.len() == 3).ok_or("Fn::If needs three arguments")?;
        let condition = as_str(&parts[0], "Fn::If")?;
        if self.condition(condition)? {
            self.resolve_inner(&parts[1])
        } else {
            self.resolve_inner(&parts[2])
        }
    }

    /// The value of condition `name` of the template's `Conditions`.
    pub fn condition(&self, name: &str) -> Result<bool, String> {
        let expression =
            self.template["Conditions"].get(name).ok_or_else(|| format!("the template has no condition {name}"))?;
        self.evaluate(expression)
    }

    fn evaluate(&self, expression: &Value) -> Result<bool, String> {
        let map = expression.as_object().filter(|m| m.len() == 1).ok_or("a condition is a one-key map")?;
        let (key, argument) = map.iter().next().expect("one entry");
        let arguments = || argument.as_array().ok_or_else(|| format!("{key} needs a list"));
        match key.as_str() {
            "Condition" => self.condition(as_str(argument, "Condition")?),
            "Fn::Equals" => {
                let parts = arguments()?;
                let a = self.resolve_inner(&parts[0])?;
                let b = self.resolve_inner(&parts[1])?;
                Ok(a == b)
            }
            "Fn::Not" => Ok(!self.evaluate(&arguments()?[0])?),
            "Fn::And" => arguments()?.iter().try_fold(true, |all, c| Ok(all && self.evaluate(c)?)),
            "Fn::Or" => arguments()?.iter().try_fold(false, |any, c| Ok(any || self.evaluate(c)?)),
            other => Err(format!("the condition function {other} is not resolved by this test")),
        }
    }

    fn select(&self, argument: &Value) -> Result<Value, String> {
        let parts = argument.as_array().filter(|p| p.len() == 2).ok_or("Fn::Select needs two arguments")?;
        let index: usize = self.resolve_inner(&parts[0])?.as_str().and_then(|s| s.parse().ok()).ok_or("index")?;
        let list = self.resolve_inner(&parts[1])?;
        list.as_array()
            .and_then(|l| l.get(index).cloned())
            .ok_or_else(|| format!("Fn::Select {index} of {list}: no such element"))
    }

    fn split(&self, argument: &Value) -> Result<Value, String> {
        let parts = argument.as_array().filter(|p| p.len() == 2).ok_or("Fn::Split needs two arguments")?;
        let delimiter = as_str(&parts[0], "Fn::Split")?;
        let text = self.resolve_inner(&parts[1])?;
        let text = text.as_str().ok_or("Fn::Split of a non-string")?;
        Ok(Value::Array(text.split(delimiter).map(|s| Value::String(s.to_owned())).collect()))
    }

    fn join(&self, argument: &Value) -> Result<String, String> {
        let parts = argument.as_array().filter(|p| p.len() == 2).ok_or("Fn::Join needs two arguments")?;
        let delimiter = as_str(&parts[0], "Fn::Join")?;
        let list = self.resolve_inner(&parts[1])?;
        let items: Option<Vec<&str>> = list.as_array().map(|l| l.iter().filter_map(Value::as_str).collect());
        Ok(items.ok_or("Fn::Join of a non-list")?.join(delimiter))
    }
}

fn as_str<'v>(value: &'v Value, context: &str) -> Result<&'v str, String> {
    value.as_str().ok_or_else(|| format!("{context}: expected a string, found {value}"))
}

/// One statement of a function's policy, named by its `Sid` or, for the
/// statements of SAM policy templates (which have none), by the name SAM
/// gives the policy (`<Function>RolePolicy<N>`).
#[derive(Debug, Clone)]
pub struct NamedStatement {
    pub name: String,
    /// The inline policy of the role it belongs to.
    pub policy_name: String,
    pub statement: Value,
}

impl NamedStatement {
    fn list(&self, element: &str) -> Vec<String> {
        match &self.statement[element] {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }

    pub fn actions(&self) -> Vec<String> {
        self.list("Action")
    }

    pub fn resources(&self) -> Vec<String> {
        self.list("Resource")
    }

    fn is_allow(&self) -> bool {
        self.statement["Effect"] == "Allow"
    }
}

/// A function's role as the transformed template defines it, resolved.
#[derive(Debug, Clone)]
pub struct FunctionPolicy {
    /// The function's logical id (`RankFunction`).
    pub function: String,
    /// Its role's logical id (`RankFunctionRole`).
    pub role: String,
    /// The role's trust policy.
    pub trust_policy: Value,
    /// AWS managed policies attached (SAM adds AWSLambdaBasicExecutionRole).
    pub managed_policy_arns: Vec<String>,
    pub statements: Vec<NamedStatement>,
}

/// What [`FunctionPolicy::moto_document`] changed for moto, one line each.
pub type MotoAdjustments = Vec<String>;

impl FunctionPolicy {
    /// The role of `function` (a logical id such as `FanoutFunction`) in the
    /// transformed `template`, with every intrinsic resolved by `names`.
    pub fn of(template: &Value, function: &str, names: &StackNames) -> Result<Self, String> {
        let resources = &template["Resources"];
        let lambda = &resources[function];
        if lambda["Type"] != "AWS::Lambda::Function" {
            return Err(format!("{function} is not an AWS::Lambda::Function of the transformed template"));
        }
        let role = lambda["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .ok_or_else(|| format!("{function}'s Role is not a Fn::GetAtt of a role of the template"))?
            .to_owned();
        Self::of_role(template, function, role, names)
    }

    /// The role of the state machine `machine` (a logical id such as
    /// `RankStateMachine`), resolved as [`FunctionPolicy::of`] resolves a
    /// function's; `function` then names the state machine.
    pub fn of_state_machine(template: &Value, machine: &str, names: &StackNames) -> Result<Self, String> {
        let resource = &template["Resources"][machine];
        if resource["Type"] != "AWS::StepFunctions::StateMachine" {
            return Err(format!("{machine} is not an AWS::StepFunctions::StateMachine of the transformed template"));
        }
        let role = resource["Properties"]["RoleArn"]["Fn::GetAtt"][0]
            .as_str()
            .ok_or_else(|| format!("{machine}'s RoleArn is not a Fn::GetAtt of a role of the template"))?
            .to_owned();
        Self::of_role(template, machine, role, names)
    }

    fn of_role(template: &Value, function: &str, role: String, names: &StackNames) -> Result<Self, String> {
        let resources = &template["Resources"];
        let resolver = Resolver::new(template, names);
        let properties = resolver.resolve(&resources[&role]["Properties"]).map_err(|e| format!("{role}: {e}"))?;
        let mut statements = Vec::new();
        for policy in properties["Policies"].as_array().into_iter().flatten() {
            let policy_name = policy["PolicyName"].as_str().ok_or("a policy without a name")?.to_owned();
            let listed = match &policy["PolicyDocument"]["Statement"] {
                Value::Array(items) => items.clone(),
                single => vec![single.clone()],
            };
            let count = listed.len();
            for (index, statement) in listed.into_iter().enumerate() {
                let name = match statement["Sid"].as_str() {
                    Some(sid) => sid.to_owned(),
                    None if count == 1 => policy_name.clone(),
                    None => format!("{policy_name}#{index}"),
                };
                statements.push(NamedStatement { name, policy_name: policy_name.clone(), statement });
            }
        }
        let managed_policy_arns = properties["ManagedPolicyArns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Ok(Self {
            function: function.to_owned(),
            role,
            trust_policy: properties["AssumeRolePolicyDocument"].clone(),
            managed_policy_arns,
            statements,
        })
    }

    /// The same policy with the statements of the template's role `role`
    /// (a logical id) added after its own: for a role whose sessions the
    /// function opens, when moto cannot open them as AWS would.
    pub fn with_statements_of_role(mut self, template: &Value, role: &str, names: &StackNames) -> Result<Self, String> {
        let other = Self::of_role(template, &self.function.clone(), role.to_owned(), names)?;
        self.statements.extend(other.statements);
        Ok(self)
    }

    /// The names of its statements, in the template's order.
    pub fn statement_names(&self) -> Vec<&str> {
        self.statements.iter().map(|s| s.name.as_str()).collect()
    }

    /// The statement named `name`.
    ///
    /// # Panics
    /// When it has none of that name.
    pub fn statement(&self, name: &str) -> &NamedStatement {
        self.statements
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{} has no statement {name}: {:?}", self.role, self.statement_names()))
    }

    /// The same policy without the statement named `name`.
    ///
    /// # Panics
    /// When it has none of that name (so a renamed statement fails the test
    /// instead of silently removing nothing).
    pub fn without(&self, name: &str) -> Self {
        self.statement(name);
        let mut reduced = self.clone();
        reduced.statements.retain(|s| s.name != name);
        reduced
    }

    /// Whether the statements, as the template writes them (ARN patterns
    /// with `*` and `?`, conditions ignored), allow `action` on `resource`
    /// and no `Deny` statement names it. For what moto cannot check itself
    /// (Secrets Manager and SES resources); not an IAM evaluator.
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        let concerns = |s: &NamedStatement| {
            s.actions().iter().any(|a| iam_pattern_matches(a, action))
                && s.resources().iter().any(|r| iam_pattern_matches(r, resource))
        };
        let denied = self.statements.iter().any(|s| !s.is_allow() && concerns(s));
        !denied && self.statements.iter().any(|s| s.is_allow() && concerns(s))
    }

    /// The inline policies to put on a role in moto, by policy name (as
    /// compact JSON: moto checks the signature of IAM's form-encoded
    /// requests against its own re-encoding, and a space fails it), and what
    /// was changed for moto. Everything moto evaluates is kept as written.
    /// Two rewrites, each the narrowest moto can express:
    /// - an `Allow` statement whose actions are all of a service moto
    ///   authorises against `*` ([`SERVICES_MOTO_AUTHORISES_AGAINST_STAR`])
    ///   gets `Resource: "*"` — its action is still checked by moto, its
    ///   resource only by [`Self::allows`]; a `Deny` of such a service is
    ///   left as written (widened, it would deny every request), so moto
    ///   never matches it and only [`Self::allows`] checks it;
    /// - a statement allowing `Resource: "*"` only where
    ///   `s3:ResourceAccount` is not `own_account` (a condition moto
    ///   ignores, which would leave it allowing every bucket, the staging
    ///   bucket too) is limited to `foreign_buckets` instead, the buckets of
    ///   other accounts the test creates.
    ///
    /// - each S3 action gets the names of the S3 operations it authorises
    ///   beside it ([`S3_OPERATIONS_BY_ACTION`]), for moto versions that
    ///   authorise by operation name.
    ///
    /// Conditions moto does not evaluate stay in the document (and allow as
    /// if they held); they are listed in the adjustments.
    pub fn moto_document(
        &self,
        own_account: &str,
        foreign_buckets: &[String],
    ) -> (Vec<(String, String)>, MotoAdjustments) {
        let mut adjustments = Vec::new();
        let mut with_operations = Vec::new();
        let mut policies: Vec<(String, Vec<Value>)> = Vec::new();
        for named in &self.statements {
            let mut statement = named.statement.clone();
            let services: Vec<String> =
                named.actions().iter().map(|a| a.split(':').next().unwrap_or_default().to_owned()).collect();
            let authorised_against_star = !services.is_empty()
                && services.iter().all(|s| SERVICES_MOTO_AUTHORISES_AGAINST_STAR.contains(&s.as_str()));
            if authorised_against_star && !named.is_allow() {
                adjustments.push(format!(
                    "{}: a Deny of {} left as written: moto authorises those requests against \"*\", which it \
                     never matches (checked by `allows` only)",
                    named.name,
                    services.join(", ")
                ));
            } else if authorised_against_star {
                if named.resources() != ["*"] {
                    adjustments.push(format!(
                        "{}: Resource {:?} widened to \"*\" (moto authorises {} against \"*\")",
                        named.name,
                        named.resources(),
                        services.join(", ")
                    ));
                }
                statement["Resource"] = json!("*");
            }
            let declared = named.actions();
            let mut operations: Vec<&str> = Vec::new();
            for (action, names) in S3_OPERATIONS_BY_ACTION {
                if declared.iter().any(|a| a == action) {
                    operations.extend(names.iter().filter(|op| !declared.iter().any(|a| a == *op)));
                }
            }
            if !operations.is_empty() {
                let mut actions: Vec<Value> = declared.iter().cloned().map(Value::String).collect();
                actions.extend(operations.iter().map(|op| json!(op)));
                statement["Action"] = Value::Array(actions);
                with_operations.push(named.name.clone());
            }
            // moto turns a pattern into a regular expression by replacing `*`
            // with `.*` alone, so IAM's one-character `?` becomes a regex
            // quantifier (`??????` is "multiple repeat": HTTP 500). `.` is
            // what IAM's `?` means, in moto's regex.
            if let Some(resources) = statement.get_mut("Resource") {
                let mut rewritten = false;
                let mut one = |value: &mut Value| {
                    if let Some(text) = value.as_str().filter(|t| t.contains('?')) {
                        *value = Value::String(text.replace('?', "."));
                        rewritten = true;
                    }
                };
                match resources {
                    Value::Array(items) => items.iter_mut().for_each(&mut one),
                    single => one(single),
                }
                if rewritten {
                    adjustments.push(format!(
                        "{}: `?` in Resource written as `.` (moto reads patterns as regular expressions)",
                        named.name
                    ));
                }
            }
            let resource_account = &statement["Condition"]["StringNotEquals"]["s3:ResourceAccount"];
            if resource_account == own_account && named.resources() == ["*"] {
                let arns: Vec<String> = foreign_buckets
                    .iter()
                    .flat_map(|b| [format!("arn:aws:s3:::{b}"), format!("arn:aws:s3:::{b}/*")])
                    .collect();
                adjustments.push(format!(
                    "{}: Resource \"*\" where s3:ResourceAccount is not {own_account} limited to the other \
                     accounts' buckets {foreign_buckets:?} (moto ignores the condition)",
                    named.name
                ));
                statement["Resource"] = json!(arns);
                if let Some(conditions) = statement["Condition"].as_object_mut() {
                    conditions.remove("StringNotEquals");
                    if conditions.is_empty() {
                        statement.as_object_mut().expect("a statement is a map").remove("Condition");
                    }
                }
            }
            if let Some(conditions) = statement.get("Condition").and_then(Value::as_object) {
                adjustments.push(format!(
                    "{}: condition {} not evaluated by moto (allows as if it held)",
                    named.name,
                    Value::Object(conditions.clone())
                ));
            }
            match policies.iter_mut().find(|(name, _)| *name == named.policy_name) {
                Some((_, statements)) => statements.push(statement),
                None => policies.push((named.policy_name.clone(), vec![statement])),
            }
        }
        if !with_operations.is_empty() {
            adjustments.push(format!(
                "{}: the S3 operation names each S3 action authorises added beside it (moto 5.2.6 authorises \
                 S3 requests by operation name)",
                with_operations.join(", ")
            ));
        }
        let documents = policies
            .into_iter()
            .map(|(name, statements)| (name, json!({"Version": "2012-10-17", "Statement": statements}).to_string()))
            .collect();
        (documents, adjustments)
    }
}

/// The environment variables of `function` (a logical id) in the
/// transformed `template`, resolved by `names`; variables set to
/// `AWS::NoValue` are absent, as in a deployed function.
pub fn function_environment(
    template: &Value,
    function: &str,
    names: &StackNames,
) -> Result<BTreeMap<String, String>, String> {
    let variables = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
    let resolved = Resolver::new(template, names).resolve(variables).map_err(|e| format!("{function}: {e}"))?;
    let map = resolved.as_object().ok_or_else(|| format!("{function} has no environment variables"))?;
    map.iter()
        .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())).ok_or_else(|| format!("{function}: {k} is {v}")))
        .collect()
}

/// IAM's wildcard match: `*` any run of characters, `?` one; case-sensitive.
pub fn iam_pattern_matches(pattern: &str, value: &str) -> bool {
    fn matches(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => matches(&p[1..], v) || (!v.is_empty() && matches(p, &v[1..])),
            (Some(b'?'), Some(_)) => matches(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a == b => matches(&p[1..], &v[1..]),
            _ => false,
        }
    }
    matches(pattern.as_bytes(), value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_patterns_match_like_iam() {
        assert!(iam_pattern_matches("arn:aws:s3:::b/reports/*", "arn:aws:s3:::b/reports/x/y.json"));
        assert!(!iam_pattern_matches("arn:aws:s3:::b/reports/*", "arn:aws:s3:::b/status/x.json"));
        assert!(iam_pattern_matches("s3:*", "s3:GetObject"));
        assert!(iam_pattern_matches("arn:x:secret:name-??????", "arn:x:secret:name-AbC123"));
        assert!(!iam_pattern_matches("arn:x:secret:name-??????", "arn:x:secret:name-AbC12"));
        assert!(!iam_pattern_matches("arn:x:secret:name-??????", "arn:x:secret:name-AbC1234"));
    }

    #[test]
    fn intrinsics_resolve_to_the_tests_names_and_an_unknown_reference_is_an_error() {
        let template = json!({
            "Parameters": {"Prefix": {"Type": "String", "Default": "p/"}, "Sender": {"Type": "String"}},
            "Conditions": {"HasX": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Sender"}, ""]}]}},
        });
        let names = StackNames::new("st", "123456789012", "us-east-1")
            .parameter("Sender", "a@b.example")
            .resource("Secret", "arn:secret")
            .attribute("Queue.QueueName", "q");
        let resolver = Resolver::new(&template, &names);
        let value = json!([
            {"Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-staging-${AWS::AccountId}-${AWS::Region}/x"},
            {"Fn::Sub": ["${p}${!Literal}", {"p": {"Ref": "Prefix"}}]},
            {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "Sender"}]}]},
            {"Fn::If": ["HasX", {"Ref": "Secret"}, {"Ref": "AWS::NoValue"}]},
            {"Fn::GetAtt": ["Queue", "QueueName"]},
            {"Fn::Sub": "${Queue.QueueName}"}
        ]);
        assert_eq!(
            resolver.resolve(&value).unwrap(),
            json!([
                "arn:aws:s3:::st-staging-123456789012-us-east-1/x",
                "p/${Literal}",
                "b.example",
                "arn:secret",
                "q",
                "q"
            ])
        );
        let unnamed = resolver.resolve(&json!({"Ref": "Missing"})).unwrap_err();
        assert!(unnamed.contains("Missing"), "{unnamed}");
        let no_sender = StackNames::new("st", "1", "r");
        assert!(Resolver::new(&template, &no_sender).resolve(&json!({"Ref": "Sender"})).is_err());
    }
}
