//! The state machines of `template.yaml` (`statemachine/*.asl.json`) and
//! what they point at, without deploying them (cfn-lint and the offline
//! transform check them too: `scripts/check-template.sh`):
//! - each definition is whole: every state reachable, every `Next`,
//!   `Default` and catcher leads to a state, every path ends, every `${…}`
//!   has a substitution in the template, retries use Step Functions' own
//!   fields;
//! - every Athena state runs in the stack's workgroup and database, with its
//!   query taken from the plan, which builds it from the `sql/` file of that
//!   name compiled into the publish function (equal to the file on disk);
//!   each query of a run has exactly one state;
//! - no failure of a query can reach the publish step: every catcher of an
//!   Athena state leads only to Fail states, each with a named error;
//! - the payloads the definitions send to the publish function are the
//!   steps it reads, and the transformed template carries the definition as
//!   the file writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use integration_tests::template_policies::transformed_template;
use popularity_reports::athena::sql::{RunQuery, SHIPPED_SQL_FILES};
use popularity_reports::handlers::publish::RunStepEvent;
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ in the workspace").to_path_buf()
}

fn definition(file: &str) -> Value {
    let path = root().join("statemachine").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const MACHINES: [(&str, &str); 2] =
    [("RankStateMachine", "rank.asl.json"), ("DailyPlaysStateMachine", "daily_plays.asl.json")];

/// Every state of a machine, branches included: name → state.
fn all_states(machine: &Value, out: &mut BTreeMap<String, Value>) {
    for (name, state) in machine["States"].as_object().expect("States") {
        assert!(out.insert(name.clone(), state.clone()).is_none(), "state {name} is named twice");
        for branch in state["Branches"].as_array().into_iter().flatten() {
            all_states(branch, out);
        }
    }
}

/// The states a state can go to next.
fn successors(state: &Value) -> Vec<String> {
    let mut next: Vec<String> = Vec::new();
    next.extend(state["Next"].as_str().map(str::to_owned));
    next.extend(state["Default"].as_str().map(str::to_owned));
    for choice in state["Choices"].as_array().into_iter().flatten() {
        next.extend(choice["Next"].as_str().map(str::to_owned));
    }
    for catcher in state["Catch"].as_array().into_iter().flatten() {
        next.extend(catcher["Next"].as_str().map(str::to_owned));
    }
    next
}

/// Checks one machine (the top level or a branch) and returns its states.
fn check_machine(file: &str, machine: &Value) {
    let states = machine["States"].as_object().expect("States");
    let start = machine["StartAt"].as_str().expect("StartAt");
    assert!(states.contains_key(start), "{file}: StartAt {start} is not a state");
    let mut reached = BTreeSet::from([start.to_owned()]);
    let mut queue = vec![start.to_owned()];
    while let Some(name) = queue.pop() {
        let state = &states[&name];
        let kind = state["Type"].as_str().unwrap_or_else(|| panic!("{file}: {name} has no Type"));
        let ends = matches!(kind, "Succeed" | "Fail") || state["End"] == json!(true);
        let next = successors(state);
        assert!(ends || !next.is_empty(), "{file}: {name} neither ends nor goes anywhere");
        if kind != "Choice" && !matches!(kind, "Succeed" | "Fail") {
            assert!(ends != state["Next"].is_string(), "{file}: {name} must have exactly one of Next and End");
        }
        for target in next {
            assert!(
                states.contains_key(&target),
                "{file}: {name} goes to {target}, which is not a state of its machine"
            );
            if reached.insert(target.clone()) {
                queue.push(target);
            }
        }
        for branch in state["Branches"].as_array().into_iter().flatten() {
            check_machine(file, branch);
        }
        for retrier in state["Retry"].as_array().into_iter().flatten() {
            for field in retrier.as_object().unwrap().keys() {
                assert!(
                    [
                        "ErrorEquals",
                        "IntervalSeconds",
                        "MaxAttempts",
                        "BackoffRate",
                        "MaxDelaySeconds",
                        "JitterStrategy"
                    ]
                    .contains(&field.as_str()),
                    "{file}: {name} retries with {field}, not a Step Functions retry field"
                );
            }
        }
        if kind == "Fail" {
            let error = state["Error"].as_str().or(state["ErrorPath"].as_str()).unwrap_or_default();
            assert!(
                !error.is_empty() && !error.starts_with("States."),
                "{file}: Fail state {name} names no error of its own"
            );
        }
    }
    let unreached: Vec<&String> = states.keys().filter(|name| !reached.contains(*name)).collect();
    assert!(unreached.is_empty(), "{file}: states never reached: {unreached:?}");
}

/// The template's state machine resource, read with the transform's YAML
/// reader (the transformed template keeps its substitutions).
fn substitutions(logical_id: &str) -> BTreeMap<String, Value> {
    let resource = &transformed_template()["Resources"][logical_id];
    serde_json::from_value(resource["Properties"]["DefinitionSubstitutions"].clone()).unwrap_or_default()
}

fn placeholders(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let end = rest[start..].find('}').expect("a closed ${…}") + start;
                out.insert(rest[start + 2..end].to_owned());
                rest = &rest[end + 1..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| placeholders(v, out)),
        Value::Object(map) => map.values().for_each(|v| placeholders(v, out)),
        _ => {}
    }
}

#[test]
fn each_definition_is_whole_and_every_substitution_is_given_by_the_template() {
    for (logical_id, file) in MACHINES {
        let machine = definition(file);
        check_machine(file, &machine);
        let mut used = BTreeSet::new();
        placeholders(&machine, &mut used);
        let given: BTreeSet<String> = substitutions(logical_id).into_keys().collect();
        assert_eq!(used, given, "{file}: the ${{…}} it uses and {logical_id}'s DefinitionSubstitutions differ");
    }
    let rank = substitutions("RankStateMachine");
    assert_eq!(rank["AthenaWorkGroup"], json!({"Ref": "AthenaWorkGroup"}));
    assert_eq!(rank["AthenaDatabase"], json!({"Ref": "AthenaDatabaseName"}));
    assert_eq!(rank["PublishFunctionArn"], json!({"Fn::GetAtt": ["PublishFunction", "Arn"]}));
    assert_eq!(rank["RankFunctionArn"], json!({"Fn::GetAtt": ["RankFunction", "Arn"]}));
    let workgroup = &transformed_template()["Resources"]["AthenaWorkGroup"]["Properties"];
    assert_eq!(workgroup["Name"], json!({"Fn::Sub": "${AWS::StackName}-ranking"}));
}

#[test]
fn the_athena_states_run_the_shipped_sql_files_in_the_stacks_workgroup_one_state_per_query() {
    // What the publish function compiled in is what sql/ holds.
    for (name, text) in SHIPPED_SQL_FILES {
        let on_disk = std::fs::read_to_string(root().join("sql").join(format!("{name}.sql"))).unwrap();
        assert_eq!(on_disk, text, "sql/{name}.sql");
    }
    let shipped: BTreeSet<&str> = SHIPPED_SQL_FILES.iter().map(|(name, _)| *name).collect();
    let mut run_queries = Vec::new();
    for (_, file) in MACHINES {
        let mut states = BTreeMap::new();
        all_states(&definition(file), &mut states);
        for (name, state) in &states {
            if state["Resource"] != "arn:aws:states:::athena:startQueryExecution.sync" {
                continue;
            }
            let parameters = &state["Parameters"];
            assert_eq!(parameters["WorkGroup"], "${AthenaWorkGroup}", "{file}: {name}");
            assert_eq!(parameters["QueryExecutionContext"]["Database"], "${AthenaDatabase}", "{file}: {name}");
            assert!(
                parameters["ResultConfiguration"]["OutputLocation.$"].is_string(),
                "{file}: {name} keeps its results in the attempt's folder"
            );
            let query =
                parameters["QueryString.$"].as_str().unwrap_or_else(|| panic!("{file}: {name} has no QueryString.$"));
            let sql = match file {
                "rank.asl.json" => {
                    query.strip_prefix("$.run.plan.queries.").unwrap_or_else(|| panic!("{file}: {name}: {query}"))
                }
                _ => {
                    assert_eq!(query, "$.day.plan.query", "{file}: {name}");
                    "daily_plays"
                }
            };
            assert!(shipped.contains(sql), "{file}: {name} runs {sql}, which is not a sql/ file the package ships");
            assert_eq!(state["ResultSelector"]["query"], sql, "{file}: {name} names its query for the publish step");
            assert!(state["TimeoutSeconds"].as_u64().is_some_and(|t| t <= 3600), "{file}: {name} has a timeout");
            if file == "rank.asl.json" {
                run_queries.push(sql.to_owned());
            }
        }
    }
    run_queries.sort();
    let mut expected: Vec<String> = RunQuery::ALL.iter().map(|q| q.name().to_owned()).collect();
    expected.sort();
    assert_eq!(run_queries, expected, "one Athena state per query of a run");
}

#[test]
fn no_failed_query_reaches_the_publish_step_every_failure_ends_in_a_named_fail_state() {
    let machine = definition("rank.asl.json");
    let mut states = BTreeMap::new();
    all_states(&machine, &mut states);
    let top = machine["States"].as_object().unwrap();
    for name in ["ScoreTracks", "RankAndCount"] {
        for catcher in top[name]["Catch"].as_array().unwrap() {
            // Everything reachable from the catcher is a Choice or a Fail.
            let mut queue = vec![catcher["Next"].as_str().unwrap().to_owned()];
            let mut seen = BTreeSet::new();
            while let Some(next) = queue.pop() {
                if !seen.insert(next.clone()) {
                    continue;
                }
                let state = &top[&next];
                assert!(matches!(state["Type"].as_str(), Some("Choice" | "Fail")), "{name} fails into {next}");
                queue.extend(successors(state));
            }
            assert!(!seen.contains("Publish"));
        }
    }
    // The failures the issue names each have a name of their own.
    let errors: BTreeSet<&str> =
        top.values().filter(|s| s["Type"] == "Fail").filter_map(|s| s["Error"].as_str()).collect();
    for error in [
        "AthenaQuerySyntaxError",
        "AthenaAccessDenied",
        "AthenaScanLimitExceeded",
        "AthenaQueryTimedOut",
        "AthenaQueryFailed",
        "AthenaOutputRefused",
    ] {
        assert!(errors.contains(error), "{error} in {errors:?}");
    }
    // A second start of a published run stops before any query.
    let choose = &top["ChooseEngine"]["Choices"][0];
    assert_eq!(
        (choose["Variable"].as_str(), choose["Next"].as_str()),
        (Some("$.run.plan.alreadyPublished"), Some("AlreadyPublished"))
    );
}

/// `$.x.y` paths of a Payload template filled with sample values, as the
/// state machine would send it.
fn payload(template: &Value, samples: &Value) -> Value {
    match template {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| match key.strip_suffix(".$") {
                    Some(key) => (key.to_owned(), samples[key].clone()),
                    None => (key.clone(), payload(value, samples)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn what_the_definitions_send_the_publish_function_are_the_steps_it_reads() {
    let sample_plan: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/publish/publish.json")).unwrap()).unwrap();
    let samples = json!({"time": "2026-11-19T03:00:00Z", "attempt": "exec-1", "plan": sample_plan["plan"], "results": sample_plan["results"]});
    let mut sent = 0;
    for (_, file) in MACHINES {
        let mut states = BTreeMap::new();
        all_states(&definition(file), &mut states);
        for (name, state) in &states {
            if state["Parameters"]["FunctionName"] != "${PublishFunctionArn}" {
                continue;
            }
            let body = payload(&state["Parameters"]["Payload"], &samples);
            serde_json::from_value::<RunStepEvent>(body.clone())
                .unwrap_or_else(|e| panic!("{file}: {name} sends {body}, which publish cannot read: {e}"));
            sent += 1;
        }
    }
    assert_eq!(sent, 3, "plan, publish and plan-day");
}

#[test]
fn the_transformed_template_carries_each_definition_as_its_file_writes_it() {
    for (logical_id, file) in MACHINES {
        let resource = &transformed_template()["Resources"][logical_id];
        assert_eq!(resource["Type"], "AWS::StepFunctions::StateMachine");
        let joined = &resource["Properties"]["DefinitionString"]["Fn::Join"];
        let lines: Vec<&str> = joined[1].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        let carried: Value = serde_json::from_str(&lines.join(joined[0].as_str().unwrap())).unwrap();
        assert_eq!(carried, definition(file), "{logical_id}");
    }
}
