//! `popularity rank --engine athena-standin`: the whole Athena path on this
//! machine (docs/scaling.md, "Running the Athena path locally"). The state
//! machine's definition is read from `template.yaml` (the file its
//! `DefinitionUri` names, with its `DefinitionSubstitutions`) and executed
//! state by state by [`asl::Interpreter`]; its Tasks are served by stand-ins:
//! - `lambda:invoke` of the publish or rank function: the real handlers
//!   (`handle_run_step`, `handle_schedule_event`), in process, with the
//!   stores given on the command line;
//! - `athena:startQueryExecution.sync`: the UNLOAD's SELECT run in DuckDB
//!   (`scripts/local/athena_standin.py`, the project's `.venv`), its output
//!   written into the UNLOAD's folder of the staging store as Athena writes
//!   it (several Snappy Parquet files, each in rank order, lower-case
//!   columns) with a data manifest in the query-results folder;
//!   an UNLOAD into a folder that holds objects fails, as on Athena;
//! - `aws-sdk:s3:putObject`: a put into the data store.
//!
//! It is a local tool: it needs Python with DuckDB, and reads inputs from a
//! directory or downloads them from a bucket into a temporary directory.

pub mod asl;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use popularity_reports::athena::plan::PlanSettings;
use popularity_reports::athena::publish::PublishSettings;
use popularity_reports::athena::RunFolders;
use popularity_reports::handlers::publish::{handle_run_step, RunStepDeps, RunStepEvent};
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps};
use popularity_reports::rank::RankSettings;
use popularity_reports::store::{ObjectStore, StoreError};
use serde_json::{json, Value};

use asl::{Execution, Interpreter, TaskFailure, TaskRunner};

/// The state machine `rank --engine athena-standin` executes.
pub const RANK_STATE_MACHINE: &str = "RankStateMachine";
/// The state machine `daily-plays` executes.
pub const DAILY_PLAYS_STATE_MACHINE: &str = "DailyPlaysStateMachine";

/// Where the stand-in finds its tools and how it shapes Athena's output.
#[derive(Debug, Clone)]
pub struct StandinTools {
    /// The SAM template whose state machine is executed.
    pub template: PathBuf,
    /// A Python with DuckDB (the project's `.venv/bin/python`).
    pub python: PathBuf,
    /// `scripts/local/athena_standin.py`.
    pub script: PathBuf,
    /// Files each UNLOAD writes at most (Athena writes several in parallel).
    pub files_per_query: usize,
}

impl StandinTools {
    /// The tools of the checkout `root` (the folder holding template.yaml).
    pub fn in_checkout(root: &Path, files_per_query: usize) -> Self {
        Self {
            template: root.join("template.yaml"),
            python: root.join(".venv/bin/python"),
            script: root.join("scripts/local/athena_standin.py"),
            files_per_query,
        }
    }

    /// Checks that the tools exist, saying how to get each.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.template.is_file() {
            bail!("{} is missing: run from the checkout, or set --template", self.template.display());
        }
        if !self.python.is_file() {
            bail!(
                "{} is missing: `bash scripts/emulator.sh install` creates .venv, then \
                 `.venv/bin/python -m pip install duckdb`",
                self.python.display()
            );
        }
        if !self.script.is_file() {
            bail!("{} is missing", self.script.display());
        }
        Ok(())
    }

    fn python(&self, args: &[&str], stdin: Option<&Value>) -> anyhow::Result<std::process::Output> {
        use std::io::Write;
        let mut child = std::process::Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {}", self.python.display(), self.script.display()))?;
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(stdin) = stdin {
            input.write_all(stdin.to_string().as_bytes())?;
        }
        drop(input);
        Ok(child.wait_with_output()?)
    }

    /// The state machine `logical_id` of the template: its definition and
    /// its substitutions as written (intrinsics).
    pub fn definition(&self, logical_id: &str) -> anyhow::Result<(Value, BTreeMap<String, Value>)> {
        let template = self.template.to_string_lossy().into_owned();
        let done = self.python(&["definition", &template, logical_id], None)?;
        if !done.status.success() {
            bail!("reading {logical_id} from {template}: {}", String::from_utf8_lossy(&done.stderr).trim());
        }
        let answer: Value = serde_json::from_slice(&done.stdout).context("the definition helper's answer")?;
        let substitutions = serde_json::from_value(answer["substitutions"].clone()).unwrap_or_default();
        Ok((answer["definition"].clone(), substitutions))
    }
}

/// A store's objects as local files DuckDB can read: the store's own
/// directory, or copies downloaded into a temporary one.
pub struct LocalFiles {
    root: Option<PathBuf>,
    downloads: tempfile::TempDir,
}

impl LocalFiles {
    /// `root` is the store's directory when it is a local one.
    pub fn new(root: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(Self { root, downloads: tempfile::Builder::new().prefix("athena-standin-").tempdir()? })
    }

    /// The local path of each key, downloading those not on disk.
    async fn paths<S: ObjectStore>(&self, store: &S, keys: &[String]) -> anyhow::Result<Vec<String>> {
        let mut paths = Vec::with_capacity(keys.len());
        for key in keys {
            let path = match &self.root {
                Some(root) => root.join(key),
                None => {
                    let path = self.downloads.path().join(key);
                    if !path.exists() {
                        let body = store.get(key).await?;
                        std::fs::create_dir_all(path.parent().expect("a key has a folder"))?;
                        std::fs::write(&path, &body)?;
                    }
                    path
                }
            };
            paths.push(path.to_string_lossy().into_owned());
        }
        Ok(paths)
    }
}

/// The stand-ins of the Tasks of the state machines.
pub struct StandinTasks<'a, D, S> {
    pub tools: &'a StandinTools,
    pub data: D,
    pub staging: S,
    pub data_files: LocalFiles,
    pub staging_files: LocalFiles,
    pub data_folders: RunFolders,
    pub staging_folders: RunFolders,
    pub rank: RankSettings,
    pub plan: PlanSettings,
    /// Queries run so far, for their ids.
    queries: u32,
}

impl<'a, D: ObjectStore + Clone, S: ObjectStore + Clone + 'static> StandinTasks<'a, D, S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tools: &'a StandinTools,
        data: D,
        data_root: Option<PathBuf>,
        data_folders: RunFolders,
        staging: S,
        staging_root: Option<PathBuf>,
        staging_folders: RunFolders,
        rank: RankSettings,
        plan: PlanSettings,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            tools,
            data,
            staging,
            data_files: LocalFiles::new(data_root)?,
            staging_files: LocalFiles::new(staging_root)?,
            data_folders,
            staging_folders,
            rank,
            plan,
            queries: 0,
        })
    }

    /// The substitutions of a definition, resolved to the stand-ins: a
    /// function's ARN names the local handler, the workgroup and database
    /// the stand-in's.
    pub fn resolve_substitutions(substitutions: &BTreeMap<String, Value>) -> anyhow::Result<BTreeMap<String, String>> {
        substitutions
            .iter()
            .map(|(name, value)| {
                let resolved = match value {
                    Value::Object(map) if map.contains_key("Fn::GetAtt") => {
                        let target = &map["Fn::GetAtt"];
                        let (resource, attribute) = match target {
                            Value::Array(parts) if parts.len() == 2 => {
                                (parts[0].as_str().unwrap_or(""), parts[1].as_str().unwrap_or(""))
                            }
                            Value::String(text) => text.split_once('.').unwrap_or((text, "")),
                            _ => ("", ""),
                        };
                        if attribute != "Arn" {
                            bail!("substitution {name}: only a function's Arn is stood in for, not {target}");
                        }
                        format!("local-function:{resource}")
                    }
                    Value::Object(map) if map.get("Ref") == Some(&json!("AthenaWorkGroup")) => {
                        "standin-workgroup".into()
                    }
                    Value::Object(map) if map.get("Ref") == Some(&json!("AthenaDatabaseName")) => "standin".into(),
                    Value::String(text) => text.clone(),
                    other => bail!("substitution {name}: {other} is not stood in for"),
                };
                Ok((name.clone(), resolved))
            })
            .collect()
    }

    fn run_step_deps(&self) -> RunStepDeps<D, S> {
        RunStepDeps {
            data: self.data.clone(),
            staging: self.staging.clone(),
            data_folders: self.data_folders.clone(),
            staging_folders: self.staging_folders.clone(),
            plan: self.plan,
            publish: PublishSettings {
                rules: self.rank.rules,
                part_rows: self.rank.part_rows,
                format_threads: self.rank.threads.max(1),
                parts_at_once: self.rank.threads.max(1),
            },
        }
    }

    async fn invoke(&mut self, function: &str, payload: Value) -> Result<Value, TaskFailure> {
        let lambda_error = |diagnostic: lambda_runtime::Diagnostic| TaskFailure {
            cause: json!({"errorType": diagnostic.error_type, "errorMessage": diagnostic.error_message}).to_string(),
            error: diagnostic.error_type,
        };
        let invalid = |e: serde_json::Error| TaskFailure {
            error: "Lambda.InvalidRequestContentException".into(),
            cause: format!("{function} cannot read its payload: {e}"),
        };
        let answer = match function {
            "PublishFunction" => {
                let event: RunStepEvent = serde_json::from_value(payload).map_err(invalid)?;
                let response =
                    handle_run_step(&self.run_step_deps(), event).await.map_err(|e| lambda_error(e.into()))?;
                serde_json::to_value(response).expect("a response serialises")
            }
            "RankFunction" => {
                let event: EventBridgeEvent<Value> = serde_json::from_value(payload).map_err(invalid)?;
                let deps = RankDeps { data: self.data.clone(), staging: self.staging.clone(), settings: self.rank };
                let response = handle_schedule_event(&deps, event).await.map_err(|e| lambda_error(e.into()))?;
                serde_json::to_value(response).expect("a response serialises")
            }
            other => {
                return Err(TaskFailure {
                    error: "Lambda.ResourceNotFoundException".into(),
                    cause: format!("no local stand-in for the function {other}"),
                })
            }
        };
        Ok(json!({"StatusCode": 200, "Payload": answer}))
    }

    /// An UNLOAD run in DuckDB, its output written as Athena writes it.
    async fn athena(&mut self, parameters: Value) -> Result<Value, TaskFailure> {
        self.queries += 1;
        let query_id = format!("standin-{:08x}-{:04}", rand_u32(), self.queries);
        match self.unload(&query_id, &parameters).await {
            Ok(answer) => Ok(answer),
            Err(error) => Err(TaskFailure {
                error: "States.TaskFailed".into(),
                cause: json!({"QueryExecution": {"QueryExecutionId": query_id, "Status": {
                    "State": "FAILED", "StateChangeReason": format!("{error:#}")}}})
                .to_string(),
            }),
        }
    }

    async fn unload(&mut self, query_id: &str, parameters: &Value) -> anyhow::Result<Value> {
        let text = parameters["QueryString"].as_str().ok_or_else(|| anyhow!("no QueryString"))?;
        let unload = Unload::parse(text)?;
        let results = parameters["ResultConfiguration"]["OutputLocation"]
            .as_str()
            .ok_or_else(|| anyhow!("no ResultConfiguration.OutputLocation"))?;
        // The UNLOAD's folder: in staging, or (a day of plays) in the data bucket.
        let (target_is_data, folder) = match self.staging_folders.key_of(&unload.location) {
            Some(key) => (false, key),
            None => match self.data_folders.key_of(&unload.location) {
                Some(key) => (true, key),
                None => bail!("UNLOAD to {} is outside both buckets of the stand-in", unload.location),
            },
        };
        let present = if target_is_data { self.data.list(&folder).await? } else { self.staging.list(&folder).await? };
        if !present.is_empty() {
            bail!(
                "HIVE_PATH_ALREADY_EXISTS: Target directory for UNLOAD {} already holds {} object(s)",
                unload.location,
                present.len()
            );
        }
        let request = self.tables(query_id, &unload).await?;
        let out = tempfile::Builder::new().prefix("athena-standin-out-").tempdir()?;
        let mut request = request;
        request["out"] = json!(out.path().to_string_lossy());
        let done = self.tools.python(&["query"], Some(&request))?;
        if !done.status.success() {
            bail!("{}", String::from_utf8_lossy(&done.stderr).trim());
        }
        let answer: Value = serde_json::from_slice(&done.stdout).context("the query helper's answer")?;
        let mut uris = Vec::new();
        for name in answer["files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let body = Bytes::from(std::fs::read(out.path().join(name))?);
            let key = format!("{folder}{name}");
            if target_is_data {
                self.data.put(&key, body, "application/octet-stream").await?;
                uris.push(self.data_folders.uri(&key));
            } else {
                self.staging.put(&key, body, "application/octet-stream").await?;
                uris.push(self.staging_folders.uri(&key));
            }
        }
        let results_folder = self
            .staging_folders
            .key_of(results)
            .ok_or_else(|| anyhow!("query results location {results} is outside the staging bucket"))?;
        let results_folder = if results_folder.ends_with('/') { results_folder } else { format!("{results_folder}/") };
        let manifest_key = format!("{results_folder}{query_id}-manifest.csv");
        let manifest: String = uris.iter().map(|uri| format!("{uri}\n")).collect();
        self.staging.put(&manifest_key, Bytes::from(manifest), "text/csv").await?;
        Ok(json!({"QueryExecution": {
            "QueryExecutionId": query_id,
            "Query": text,
            "StatementType": "DML",
            "WorkGroup": parameters["WorkGroup"],
            "QueryExecutionContext": parameters["QueryExecutionContext"],
            "ResultConfiguration": {"OutputLocation": format!("{results}{query_id}.csv")},
            "Status": {"State": "SUCCEEDED"},
            "Statistics": {
                "DataManifestLocation": self.staging_folders.uri(&manifest_key),
                "DataScannedInBytes": request["scanned_bytes"],
            }
        }}))
    }

    /// The DuckDB request for an UNLOAD: the tables its SELECT reads, as
    /// local files.
    async fn tables(&self, query_id: &str, unload: &Unload) -> anyhow::Result<Value> {
        let select = &unload.select;
        let mut tables = serde_json::Map::new();
        let mut constants = serde_json::Map::new();
        let mut scanned = 0u64;
        let mentions =
            |table: &str| select.contains(&format!("FROM {table} ")) || select.contains(&format!("FROM {table}\n"));
        for (table, prefix) in [("catalogue", "catalogue/"), ("plays", "plays/"), ("play_events", "play-events/")] {
            if mentions(table) {
                let entries: Vec<_> = self
                    .data
                    .list(prefix)
                    .await?
                    .into_iter()
                    .filter(|e| e.size > 0 && !e.key.split('/').any(|p| p.starts_with('_') || p.starts_with('.')))
                    .collect();
                scanned += entries.iter().map(|e| e.size).sum::<u64>();
                let keys: Vec<String> = entries.into_iter().map(|e| e.key).collect();
                tables.insert(table.into(), json!(self.data_files.paths(&self.data, &keys).await?));
            }
        }
        if mentions("run_scores") {
            let (run_id, attempt) = run_key(select)?;
            let folder = format!("athena-results/{run_id}/{attempt}/track_scores/");
            let entries = self.staging.list(&folder).await?;
            scanned += entries.iter().map(|e| e.size).sum::<u64>();
            let keys: Vec<String> = entries.into_iter().map(|e| e.key).collect();
            if keys.is_empty() {
                bail!("run_scores has no files for run_id {run_id} and attempt {attempt} ({folder})");
            }
            tables.insert("run_scores".into(), json!(self.staging_files.paths(&self.staging, &keys).await?));
            constants.insert("run_scores".into(), json!({"run_id": run_id, "attempt": attempt}));
        }
        Ok(json!({
            "select": select,
            "format": unload.format,
            "compression": unload.compression,
            "tables": tables,
            "hive": ["plays", "play_events"],
            "constants": constants,
            "files": self.tools.files_per_query,
            "query_id": query_id,
            "scanned_bytes": scanned,
        }))
    }

    async fn put_object(&mut self, parameters: Value) -> Result<Value, TaskFailure> {
        let failed = |cause: String| TaskFailure { error: "S3.S3Exception".into(), cause };
        let bucket = parameters["Bucket"].as_str().unwrap_or_default();
        let key = parameters["Key"].as_str().unwrap_or_default();
        let store_key = self
            .data_folders
            .key_of(&format!("s3://{bucket}/{key}"))
            .ok_or_else(|| failed(format!("s3://{bucket}/{key} is not in the data bucket of the stand-in")))?;
        let body = Bytes::from(parameters["Body"].as_str().unwrap_or_default().to_owned());
        self.data
            .put(&store_key, body, "application/octet-stream")
            .await
            .map_err(|e: StoreError| failed(e.to_string()))?;
        Ok(json!({"ETag": "\"standin\""}))
    }
}

impl<D: ObjectStore + Clone, S: ObjectStore + Clone + 'static> TaskRunner for StandinTasks<'_, D, S> {
    async fn run(&mut self, resource: &str, parameters: Value) -> Result<Value, TaskFailure> {
        match resource {
            "arn:aws:states:::lambda:invoke" => {
                let function = parameters["FunctionName"].as_str().unwrap_or_default().to_owned();
                let function = function.strip_prefix("local-function:").unwrap_or(&function).to_owned();
                self.invoke(&function, parameters["Payload"].clone()).await
            }
            "arn:aws:states:::athena:startQueryExecution.sync" => self.athena(parameters).await,
            "arn:aws:states:::aws-sdk:s3:putObject" => self.put_object(parameters).await,
            other => Err(TaskFailure {
                error: "States.TaskFailed".into(),
                cause: format!("the stand-in has no resource {other}"),
            }),
        }
    }
}

/// An UNLOAD statement taken apart.
#[derive(Debug, PartialEq)]
struct Unload {
    select: String,
    location: String,
    format: String,
    compression: String,
}

impl Unload {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let body = text.trim().strip_prefix("UNLOAD (").ok_or_else(|| anyhow!("not an UNLOAD (…) TO … statement"))?;
        let to = body.rfind(") TO '").ok_or_else(|| anyhow!("UNLOAD without TO '<location>'"))?;
        let select = body[..to].trim().to_owned();
        let rest = &body[to + ") TO '".len()..];
        let end = rest.find('\'').ok_or_else(|| anyhow!("unterminated UNLOAD location"))?;
        let location = rest[..end].to_owned();
        let with = &rest[end + 1..];
        let property = |name: &str| -> Option<String> {
            let at = with.find(&format!("{name} = '"))? + name.len() + 4;
            let length = with[at..].find('\'')?;
            Some(with[at..at + length].to_owned())
        };
        let format = property("format").ok_or_else(|| anyhow!("UNLOAD without format"))?;
        Ok(Self { select, location, format, compression: property("compression").unwrap_or_default() })
    }
}

/// The run_id and attempt a query reads from run_scores.
fn run_key(select: &str) -> anyhow::Result<(String, String)> {
    let value = |name: &str| -> anyhow::Result<String> {
        let at =
            select.find(&format!("{name} = '")).ok_or_else(|| anyhow!("the query reads run_scores without {name}"))?;
        let start = at + name.len() + 4;
        let length = select[start..].find('\'').ok_or_else(|| anyhow!("unterminated {name}"))?;
        Ok(select[start..start + length].to_owned())
    };
    Ok((value("run_id")?, value("attempt")?))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish() as u32
}

/// The scheduled event EventBridge would send for `time`.
pub fn scheduled_event(time: DateTime<Utc>) -> Value {
    json!({
        "version": "0",
        "id": format!("standin-{:08x}", rand_u32()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/standin"],
        "detail": {}
    })
}

/// A fresh execution name, as Step Functions gives one to each start.
pub fn execution_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}{:08x}", rand_u32(), rand_u32())
}

/// Executes the state machine `logical_id` of the template with `input`.
pub async fn execute<D: ObjectStore + Clone, S: ObjectStore + Clone + 'static>(
    tasks: &mut StandinTasks<'_, D, S>,
    logical_id: &str,
    input: Value,
    name: &str,
) -> anyhow::Result<Execution> {
    let (definition, substitutions) = tasks.tools.definition(logical_id)?;
    let substitutions = StandinTasks::<D, S>::resolve_substitutions(&substitutions)?;
    let interpreter = Interpreter::new(definition, &substitutions)?;
    Ok(interpreter.execute(tasks, input, name).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unload_comes_apart_into_its_select_location_and_format() {
        let text = "UNLOAD (\nSELECT 1 AS x\nFROM run_scores\nWHERE run_id = '1' AND attempt = 'a'\n) TO \
                    's3://b/athena-results/1/a/run_inputs/' WITH (format = 'PARQUET', compression = 'SNAPPY')";
        let unload = Unload::parse(text).unwrap();
        assert_eq!(unload.select, "SELECT 1 AS x\nFROM run_scores\nWHERE run_id = '1' AND attempt = 'a'");
        assert_eq!(unload.location, "s3://b/athena-results/1/a/run_inputs/");
        assert_eq!((unload.format.as_str(), unload.compression.as_str()), ("PARQUET", "SNAPPY"));
        assert_eq!(run_key(&unload.select).unwrap(), ("1".to_owned(), "a".to_owned()));
        assert!(Unload::parse("SELECT 1").is_err());
    }

    #[test]
    fn substitutions_name_the_local_stand_ins_and_anything_else_is_refused() {
        let written: BTreeMap<String, Value> = serde_json::from_value(json!({
            "PublishFunctionArn": {"Fn::GetAtt": ["PublishFunction", "Arn"]},
            "AthenaWorkGroup": {"Ref": "AthenaWorkGroup"},
            "AthenaDatabase": {"Ref": "AthenaDatabaseName"}
        }))
        .unwrap();
        type Tasks<'a> =
            StandinTasks<'a, popularity_reports::store::LocalDirStore, popularity_reports::store::LocalDirStore>;
        let resolved = Tasks::resolve_substitutions(&written).unwrap();
        assert_eq!(resolved["PublishFunctionArn"], "local-function:PublishFunction");
        assert_eq!(resolved["AthenaWorkGroup"], "standin-workgroup");
        let other: BTreeMap<String, Value> = serde_json::from_value(json!({"X": {"Ref": "SomethingElse"}})).unwrap();
        assert!(Tasks::resolve_substitutions(&other).is_err());
    }
}
