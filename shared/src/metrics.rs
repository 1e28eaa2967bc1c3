//! CloudWatch metrics as Embedded Metric Format log lines: one JSON object
//! on stdout that CloudWatch turns into metrics, with no SDK call. Only
//! counts go here, never identifiers of tenants or payloads.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// Prints one EMF line with `values` (name, count) under `namespace`.
pub fn emit_metrics(namespace: &str, dimensions: &[(&str, &str)], values: &[(&str, f64)]) {
    println!("{}", metrics_line(namespace, dimensions, values, now_millis()));
}

fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn metrics_line(namespace: &str, dimensions: &[(&str, &str)], values: &[(&str, f64)], timestamp: u128) -> String {
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp as u64,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": values.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (key, value) in dimensions {
        line.insert((*key).into(), Value::from(*value));
    }
    for (name, value) in values {
        line.insert((*name).into(), Value::from(*value));
    }
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_line_declares_every_value_under_the_namespace() {
        let line = metrics_line("PopularityReports", &[("Function", "rank")], &[("PlayRows", 42.0)], 1000);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["PlayRows"], 42.0);
        assert_eq!(parsed["Function"], "rank");
        assert_eq!(parsed["_aws"]["CloudWatchMetrics"][0]["Namespace"], "PopularityReports");
        assert_eq!(parsed["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "PlayRows");
    }
}
