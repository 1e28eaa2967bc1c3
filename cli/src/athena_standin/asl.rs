//! A local interpreter of the Amazon States Language, for the state
//! machines of `template.yaml`: it executes a definition's states in order,
//! as Step Functions would, handing every Task to a [`TaskRunner`] (the
//! stand-ins of Lambda, Athena and S3). It is driven by the definition and
//! nothing else, so the local path follows exactly the states, choices,
//! retries and catches the template deploys.
//!
//! What it covers is what the definitions use: Task (`Parameters`,
//! `ResultSelector`, `ResultPath`, `TimeoutSeconds`, `Retry`, `Catch`),
//! Choice (`BooleanEquals`, `StringEquals`, `StringMatches`, `IsPresent`,
//! `And`, `Or`, `Not`), Parallel, Pass, Succeed, Fail (`Error`, `Cause`,
//! `ErrorPath`, `CausePath`), the execution's `TimeoutSeconds` is not
//! enforced, and paths of the forms `$`, `$.a.b`, `$['a-b']`, `$.a[0]`,
//! `$$.Execution.Name`. Anything else in a definition is an error naming it,
//! never skipped. Retries wait their interval, capped by
//! [`Interpreter::max_retry_wait`] so a local run does not sleep for
//! minutes.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};

/// A Task that failed, as Step Functions names it: the error (a Lambda's
/// error type, `States.Timeout`, `States.TaskFailed`) and its cause.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    pub error: String,
    pub cause: String,
}

/// Runs the Task states' resources.
pub trait TaskRunner {
    /// Runs `resource` (an ARN after substitution) with the state's
    /// effective parameters; the result, or the failure.
    fn run(&mut self, resource: &str, parameters: Value) -> impl Future<Output = Result<Value, TaskFailure>>;
}

/// A definition that cannot be executed, named by state.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("state {state}: {problem}")]
    State { state: String, problem: String },
    #[error("the definition has no state {0}")]
    NoSuchState(String),
    #[error("the definition is not an object with StartAt and States")]
    Shape,
    #[error("substitution ${{{0}}} of the definition has no value")]
    Substitution(String),
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded { output: Value },
    Failed { error: String, cause: String },
}

/// One execution's record: the states entered, in order, and the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub states: Vec<String>,
    pub outcome: Outcome,
}

/// A state machine definition with its substitutions applied.
pub struct Interpreter {
    definition: Value,
    /// Longest wait between two attempts of a retried state.
    pub max_retry_wait: Duration,
}

impl Interpreter {
    /// `definition` with every `${Name}` replaced by `substitutions[Name]`
    /// (CloudFormation's `DefinitionSubstitutions`).
    pub fn new(definition: Value, substitutions: &BTreeMap<String, String>) -> Result<Self, DefinitionError> {
        let definition = substitute(definition, substitutions)?;
        if definition.get("StartAt").and_then(Value::as_str).is_none() || !definition["States"].is_object() {
            return Err(DefinitionError::Shape);
        }
        Ok(Self { definition, max_retry_wait: Duration::from_secs(1) })
    }

    /// Executes the definition from its `StartAt` with `input`; the
    /// execution is named `name` (`$$.Execution.Name`).
    pub async fn execute<R: TaskRunner>(
        &self,
        runner: &mut R,
        input: Value,
        name: &str,
    ) -> Result<Execution, DefinitionError> {
        let context = serde_json::json!({"Execution": {"Name": name, "Input": input.clone()}});
        let mut states = Vec::new();
        let outcome = self.run_machine(&self.definition, runner, input, &context, &mut states).await?;
        Ok(Execution { states, outcome })
    }

    /// Runs one machine (the top level or a Parallel branch).
    async fn run_machine<R: TaskRunner>(
        &self,
        machine: &Value,
        runner: &mut R,
        mut input: Value,
        context: &Value,
        visited: &mut Vec<String>,
    ) -> Result<Outcome, DefinitionError> {
        let mut current = machine["StartAt"].as_str().ok_or(DefinitionError::Shape)?.to_owned();
        loop {
            let state = machine["States"].get(&current).ok_or_else(|| DefinitionError::NoSuchState(current.clone()))?;
            visited.push(current.clone());
            let problem =
                |problem: &str| DefinitionError::State { state: current.clone(), problem: problem.to_owned() };
            let kind = state["Type"].as_str().ok_or_else(|| problem("no Type"))?;
            let step = match kind {
                "Succeed" => return Ok(Outcome::Succeeded { output: input }),
                "Fail" => {
                    let text = |plain: &str, path: &str| -> Result<String, DefinitionError> {
                        if let Some(path) = state[path].as_str() {
                            let value = read_path(&input, context, path).map_err(|e| problem(&e))?;
                            Ok(value.as_str().map_or_else(|| value.to_string(), str::to_owned))
                        } else {
                            Ok(state[plain].as_str().unwrap_or_default().to_owned())
                        }
                    };
                    return Ok(Outcome::Failed {
                        error: text("Error", "ErrorPath")?,
                        cause: text("Cause", "CausePath")?,
                    });
                }
                "Pass" => {
                    let result = state.get("Result").cloned().unwrap_or_else(|| input.clone());
                    Step::Next(
                        apply_result_path(input.clone(), result, state.get("ResultPath")).map_err(|e| problem(&e))?,
                    )
                }
                "Choice" => {
                    let mut next = None;
                    for rule in state["Choices"].as_array().ok_or_else(|| problem("no Choices"))? {
                        if evaluate_rule(rule, &input, context).map_err(|e| problem(&e))? {
                            next = Some(rule["Next"].as_str().ok_or_else(|| problem("a choice without Next"))?);
                            break;
                        }
                    }
                    match next.or_else(|| state["Default"].as_str()) {
                        Some(next) => {
                            current = next.to_owned();
                            continue;
                        }
                        None => Step::Error(TaskFailure {
                            error: "States.NoChoiceMatched".into(),
                            cause: format!("no choice of {current} matched and it has no Default"),
                        }),
                    }
                }
                "Task" | "Parallel" => self.run_with_retries(state, &current, runner, &input, context, visited).await?,
                other => return Err(problem(&format!("the state type {other} is not supported by this interpreter"))),
            };
            match step {
                Step::Next(output) => {
                    input = output;
                }
                Step::Error(failure) => {
                    let caught = state["Catch"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|catcher| matches(catcher, &failure.error));
                    let Some(catcher) = caught else {
                        return Ok(Outcome::Failed { error: failure.error, cause: failure.cause });
                    };
                    let error_output = serde_json::json!({"Error": failure.error, "Cause": failure.cause});
                    input =
                        apply_result_path(input, error_output, catcher.get("ResultPath")).map_err(|e| problem(&e))?;
                    current = catcher["Next"].as_str().ok_or_else(|| problem("a Catch without Next"))?.to_owned();
                    continue;
                }
            }
            if state["End"].as_bool() == Some(true) {
                return Ok(Outcome::Succeeded { output: input });
            }
            current = state["Next"].as_str().ok_or_else(|| problem("neither Next nor End"))?.to_owned();
        }
    }

    /// A Task or Parallel state, attempted again as its `Retry` says.
    async fn run_with_retries<R: TaskRunner>(
        &self,
        state: &Value,
        name: &str,
        runner: &mut R,
        input: &Value,
        context: &Value,
        visited: &mut Vec<String>,
    ) -> Result<Step, DefinitionError> {
        let retriers: Vec<&Value> = state["Retry"].as_array().map(|r| r.iter().collect()).unwrap_or_default();
        let mut attempts = vec![0u32; retriers.len()];
        loop {
            let result = Box::pin(self.run_once(state, name, runner, input, context, visited)).await?;
            let failure = match result {
                Ok(output) => return Ok(Step::Next(output)),
                Err(failure) => failure,
            };
            let Some(index) = retriers.iter().position(|retrier| matches(retrier, &failure.error)) else {
                return Ok(Step::Error(failure));
            };
            let retrier = retriers[index];
            let max_attempts = retrier["MaxAttempts"].as_u64().unwrap_or(3) as u32;
            if attempts[index] >= max_attempts {
                return Ok(Step::Error(failure));
            }
            let interval = retrier["IntervalSeconds"].as_f64().unwrap_or(1.0);
            let backoff = retrier["BackoffRate"].as_f64().unwrap_or(2.0);
            let wait = interval * backoff.powi(attempts[index] as i32);
            attempts[index] += 1;
            tokio::time::sleep(Duration::from_secs_f64(wait).min(self.max_retry_wait)).await;
        }
    }

    /// One attempt at a Task or Parallel state: its output, or its failure.
    async fn run_once<R: TaskRunner>(
        &self,
        state: &Value,
        name: &str,
        runner: &mut R,
        input: &Value,
        context: &Value,
        visited: &mut Vec<String>,
    ) -> Result<Result<Value, TaskFailure>, DefinitionError> {
        let problem = |problem: String| DefinitionError::State { state: name.to_owned(), problem };
        let effective = match state.get("InputPath") {
            Some(Value::String(path)) => read_path(input, context, path).map_err(problem)?,
            _ => input.clone(),
        };
        let result = if state["Type"] == "Parallel" {
            let mut outputs = Vec::new();
            for branch in state["Branches"].as_array().ok_or_else(|| problem("no Branches".into()))? {
                match Box::pin(self.run_machine(branch, runner, effective.clone(), context, visited)).await? {
                    Outcome::Succeeded { output } => outputs.push(output),
                    Outcome::Failed { error, cause } => return Ok(Err(TaskFailure { error, cause })),
                }
            }
            Value::Array(outputs)
        } else {
            let resource = state["Resource"].as_str().ok_or_else(|| problem("no Resource".into()))?;
            let parameters = match state.get("Parameters") {
                Some(template) => fill(template, &effective, context).map_err(problem)?,
                None => effective.clone(),
            };
            let run = runner.run(resource, parameters);
            let outcome = match state["TimeoutSeconds"].as_u64() {
                Some(seconds) => match tokio::time::timeout(Duration::from_secs(seconds), run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(TaskFailure {
                        error: "States.Timeout".into(),
                        cause: format!("{name} ran past its TimeoutSeconds ({seconds})"),
                    }),
                },
                None => run.await,
            };
            match outcome {
                Ok(result) => result,
                Err(failure) => return Ok(Err(failure)),
            }
        };
        let result = match state.get("ResultSelector") {
            Some(selector) => fill(selector, &result, context).map_err(problem)?,
            None => result,
        };
        let output = apply_result_path(input.clone(), result, state.get("ResultPath")).map_err(problem)?;
        Ok(Ok(match state.get("OutputPath") {
            Some(Value::String(path)) => read_path(&output, context, path).map_err(problem)?,
            _ => output,
        }))
    }
}

enum Step {
    Next(Value),
    Error(TaskFailure),
}

/// Whether a retrier's or catcher's `ErrorEquals` matches `error`.
/// `States.ALL` matches everything; `States.TaskFailed` everything but
/// `States.Timeout`.
fn matches(rule: &Value, error: &str) -> bool {
    rule["ErrorEquals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|name| name == error || name == "States.ALL" || (name == "States.TaskFailed" && error != "States.Timeout"))
}

fn substitute(value: Value, substitutions: &BTreeMap<String, String>) -> Result<Value, DefinitionError> {
    Ok(match value {
        Value::String(text) => {
            let mut out = String::new();
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let Some(length) = rest[start..].find('}') else { break };
                let name = &rest[start + 2..start + length];
                let value = substitutions.get(name).ok_or_else(|| DefinitionError::Substitution(name.to_owned()))?;
                out.push_str(&rest[..start]);
                out.push_str(value);
                rest = &rest[start + length + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| substitute(v, substitutions)).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => Value::Object(
            map.into_iter().map(|(k, v)| Ok((k, substitute(v, substitutions)?))).collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

/// A Parameters or ResultSelector template filled from `input`: keys ending
/// in `.$` take the value at their path.
fn fill(template: &Value, input: &Value, context: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                if let Some(key) = key.strip_suffix(".$") {
                    let path = value.as_str().ok_or_else(|| format!("{key}.$ is not a path"))?;
                    out.insert(key.to_owned(), read_path(input, context, path)?);
                } else {
                    out.insert(key.clone(), fill(value, input, context)?);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, input, context)).collect::<Result<_, _>>()?),
        other => other.clone(),
    })
}

/// The segments of a path: names and indices.
fn segments(path: &str) -> Result<Vec<Segment>, String> {
    let mut rest = path;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("['") {
            let end = after.find("']").ok_or_else(|| format!("unclosed ['…'] in {path}"))?;
            out.push(Segment::Name(after[..end].to_owned()));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(|| format!("unclosed […] in {path}"))?;
            let index = after[..end].parse().map_err(|_| format!("[{}] in {path} is not an index", &after[..end]))?;
            out.push(Segment::Index(index));
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Err(format!("an empty name in {path}"));
            }
            out.push(Segment::Name(after[..end].to_owned()));
            rest = &after[end..];
        } else {
            return Err(format!("cannot read the path {path} (at {rest:?})"));
        }
    }
    Ok(out)
}

enum Segment {
    Name(String),
    Index(usize),
}

/// The value at `path` (`$…` in `input`, `$$…` in the context object).
fn read_path(input: &Value, context: &Value, path: &str) -> Result<Value, String> {
    let (root, rest) = if let Some(rest) = path.strip_prefix("$$") {
        (context, rest)
    } else if let Some(rest) = path.strip_prefix('$') {
        (input, rest)
    } else {
        return Err(format!("{path} is not a path (it must start with $)"));
    };
    let mut value = root;
    for segment in segments(rest)? {
        value = match segment {
            Segment::Name(name) => value.get(&name),
            Segment::Index(index) => value.get(index),
        }
        .ok_or_else(|| format!("the path {path} matches nothing in the state's input (States.Runtime)"))?;
    }
    Ok(value.clone())
}

/// The state's output: `result` placed into `input` at `ResultPath`
/// (`$`, the default, replaces it; `null` keeps the input).
fn apply_result_path(input: Value, result: Value, path: Option<&Value>) -> Result<Value, String> {
    let path = match path {
        None => "$",
        Some(Value::Null) => return Ok(input),
        Some(Value::String(path)) => path.as_str(),
        Some(other) => return Err(format!("ResultPath {other} is not a path")),
    };
    let rest = path.strip_prefix('$').ok_or_else(|| format!("ResultPath {path} does not start with $"))?;
    let names: Vec<String> = segments(rest)?
        .into_iter()
        .map(|s| match s {
            Segment::Name(name) => Ok(name),
            Segment::Index(_) => Err(format!("ResultPath {path} indexes an array")),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, parents)) = names.split_last() else { return Ok(result) };
    let mut output = input;
    let mut target = &mut output;
    for name in parents {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        target = target.as_object_mut().expect("an object").entry(name.clone()).or_insert(Value::Object(Map::new()));
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    target.as_object_mut().expect("an object").insert(last.clone(), result);
    Ok(output)
}

/// Whether a Choice rule holds for `input`.
fn evaluate_rule(rule: &Value, input: &Value, context: &Value) -> Result<bool, String> {
    if let Some(all) = rule["And"].as_array() {
        return all.iter().try_fold(true, |ok, r| Ok(ok && evaluate_rule(r, input, context)?));
    }
    if let Some(any) = rule["Or"].as_array() {
        return any.iter().try_fold(false, |ok, r| Ok(ok || evaluate_rule(r, input, context)?));
    }
    if let Some(not) = rule.get("Not") {
        return Ok(!evaluate_rule(not, input, context)?);
    }
    let path = rule["Variable"].as_str().ok_or("a choice rule without Variable")?;
    let value = read_path(input, context, path);
    if let Some(expected) = rule["IsPresent"].as_bool() {
        return Ok(value.is_ok() == expected);
    }
    let value = value?;
    if let Some(expected) = rule.get("BooleanEquals") {
        return Ok(value.as_bool().is_some() && &value == expected);
    }
    if let Some(expected) = rule["StringEquals"].as_str() {
        return Ok(value.as_str() == Some(expected));
    }
    if let Some(pattern) = rule["StringMatches"].as_str() {
        return Ok(value.as_str().is_some_and(|text| wildcard_matches(pattern, text)));
    }
    Err(format!("a choice rule on {path} with a comparison this interpreter does not support"))
}

/// `StringMatches`: `*` matches any run of characters (`\*` a star).
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('\\', rest)) if rest.first() == Some(&'*') => t.first() == Some(&'*') && go(&rest[1..], &t[1..]),
            Some(('*', rest)) => (0..=t.len()).any(|skip| go(rest, &t[skip..])),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Answers Tasks from a script: resource → results in turn.
    struct Scripted {
        answers: BTreeMap<String, Vec<Result<Value, TaskFailure>>>,
        calls: Vec<(String, Value)>,
    }

    impl TaskRunner for Scripted {
        async fn run(&mut self, resource: &str, parameters: Value) -> Result<Value, TaskFailure> {
            self.calls.push((resource.to_owned(), parameters));
            let queue = self.answers.get_mut(resource).expect("a scripted resource");
            queue.remove(0)
        }
    }

    fn failure(error: &str, cause: &str) -> TaskFailure {
        TaskFailure { error: error.into(), cause: cause.into() }
    }

    fn machine() -> Value {
        json!({
            "StartAt": "Plan",
            "States": {
                "Plan": {"Type": "Task", "Resource": "${Fn}", "Parameters": {"time.$": "$.time", "name.$": "$$.Execution.Name", "fixed": 1},
                         "ResultSelector": {"plan.$": "$.Payload"}, "ResultPath": "$.run",
                         "Retry": [{"ErrorEquals": ["ReadFailed"], "MaxAttempts": 2, "IntervalSeconds": 0}],
                         "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Why"}],
                         "Next": "Choose"},
                "Choose": {"Type": "Choice", "Choices": [
                    {"Variable": "$.run.plan.done", "BooleanEquals": true, "Next": "Done"},
                    {"And": [{"Variable": "$.run.plan.engine", "StringEquals": "athena"}, {"Not": {"Variable": "$.run.plan.skip", "IsPresent": true}}], "Next": "Both"}],
                    "Default": "Done"},
                "Both": {"Type": "Parallel", "Branches": [
                    {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "q", "Parameters": {"n": "a"}, "End": true}}},
                    {"StartAt": "B", "States": {"B": {"Type": "Task", "Resource": "q", "Parameters": {"n": "b"}, "End": true}}}],
                    "ResultPath": "$.results", "Next": "Done",
                    "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.failure", "Next": "Why"}]},
                "Why": {"Type": "Choice", "Choices": [{"Variable": "$.failure.Cause", "StringMatches": "*CANCELLED*", "Next": "Limit"}], "Default": "Other"},
                "Limit": {"Type": "Fail", "Error": "ScanLimit", "CausePath": "$.failure.Cause"},
                "Other": {"Type": "Fail", "ErrorPath": "$.failure.Error", "Cause": "other"},
                "Done": {"Type": "Succeed"}
            }
        })
    }

    async fn execute(answers: Vec<(&str, Vec<Result<Value, TaskFailure>>)>) -> (Execution, Scripted) {
        let substitutions = BTreeMap::from([("Fn".to_owned(), "plan-fn".to_owned())]);
        let mut interpreter = Interpreter::new(machine(), &substitutions).unwrap();
        interpreter.max_retry_wait = Duration::ZERO;
        let mut runner =
            Scripted { answers: answers.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), calls: Vec::new() };
        let execution = interpreter.execute(&mut runner, json!({"time": "T"}), "exec-1").await.unwrap();
        (execution, runner)
    }

    #[tokio::test]
    async fn states_run_in_order_with_parameters_selectors_and_result_paths() {
        let (execution, runner) = execute(vec![
            ("plan-fn", vec![Ok(json!({"Payload": {"engine": "athena", "done": false}}))]),
            ("q", vec![Ok(json!({"id": 1})), Ok(json!({"id": 2}))]),
        ])
        .await;
        assert_eq!(execution.states, ["Plan", "Choose", "Both", "A", "B", "Done"]);
        assert_eq!(runner.calls[0], ("plan-fn".to_owned(), json!({"time": "T", "name": "exec-1", "fixed": 1})));
        let Outcome::Succeeded { output } = execution.outcome else { panic!("{:?}", execution.outcome) };
        assert_eq!(
            output,
            json!({"time": "T", "run": {"plan": {"engine": "athena", "done": false}}, "results": [{"id": 1}, {"id": 2}]})
        );
    }

    #[tokio::test]
    async fn retries_follow_the_retry_fields_and_a_caught_failure_is_named_by_the_fail_state() {
        let (execution, runner) = execute(vec![(
            "plan-fn",
            vec![Err(failure("ReadFailed", "1")), Err(failure("ReadFailed", "2")), Err(failure("ReadFailed", "3"))],
        )])
        .await;
        // One attempt and MaxAttempts (2) retries, then the catch.
        assert_eq!(runner.calls.len(), 3);
        assert_eq!(execution.states, ["Plan", "Why", "Other"]);
        assert_eq!(execution.outcome, Outcome::Failed { error: "ReadFailed".into(), cause: "other".into() });
    }

    #[tokio::test]
    async fn a_failed_branch_fails_the_parallel_state_and_its_cause_picks_the_named_error() {
        let (execution, _) = execute(vec![
            ("plan-fn", vec![Ok(json!({"Payload": {"engine": "athena", "done": false}}))]),
            ("q", vec![Ok(json!({})), Err(failure("States.TaskFailed", "{\"State\":\"CANCELLED\"}"))]),
        ])
        .await;
        assert_eq!(execution.states, ["Plan", "Choose", "Both", "A", "B", "Why", "Limit"]);
        assert_eq!(
            execution.outcome,
            Outcome::Failed { error: "ScanLimit".into(), cause: "{\"State\":\"CANCELLED\"}".into() }
        );
    }

    #[test]
    fn paths_wildcards_and_error_names_behave_as_in_step_functions() {
        let input = json!({"a": {"b-c": [10, 20]}, "detail-type": "Scheduled Event"});
        assert_eq!(read_path(&input, &json!({}), "$.a['b-c'][1]").unwrap(), json!(20));
        assert_eq!(read_path(&input, &json!({}), "$['detail-type']").unwrap(), json!("Scheduled Event"));
        assert!(read_path(&input, &json!({}), "$.missing").is_err());
        assert!(wildcard_matches("*SYNTAX_ERROR*", "x SYNTAX_ERROR: line 1"));
        assert!(!wildcard_matches("*SYNTAX_ERROR*", "syntax_error"));
        assert!(wildcard_matches("a\\*b", "a*b") && !wildcard_matches("a\\*b", "axb"));
        let rule = json!({"ErrorEquals": ["States.TaskFailed"]});
        assert!(matches(&rule, "BadAthenaOutput") && !matches(&rule, "States.Timeout"));
        let missing = BTreeMap::new();
        assert!(
            matches!(Interpreter::new(json!({"StartAt": "${X}", "States": {}}), &missing), Err(DefinitionError::Substitution(name)) if name == "X")
        );
    }
}
