//! A customer's EventBridge bus on moto for the event tests: a bus whose one
//! rule sends every event of ours to an SQS queue, and that queue read over
//! SQS's query API (the tests have no SQS client), so a test can see what
//! the bus received.

use aws_sdk_eventbridge::types::Target;
use serde_json::Value;

use crate::{moto_endpoint, unique_bucket_name};

/// An SQS queue on moto over its query API (the tests have no SQS client):
/// where the bus's rule sends what it receives.
pub struct Queue {
    endpoint: String,
    url: String,
    pub arn: String,
}

impl Queue {
    pub async fn create(endpoint: &str, name: &str) -> Queue {
        let created = sqs(endpoint, &[("Action", "CreateQueue"), ("QueueName", name)]).await;
        let url = between(&created, "<QueueUrl>", "</QueueUrl>").expect("CreateQueue answers a QueueUrl");
        Queue { endpoint: endpoint.to_owned(), url, arn: format!("arn:aws:sqs:us-east-1:123456789012:{name}") }
    }

    /// The messages waiting in the queue, each an EventBridge event.
    pub async fn bodies(&self) -> Vec<Value> {
        let answer = sqs(
            &self.endpoint,
            &[("Action", "ReceiveMessage"), ("QueueUrl", &self.url), ("MaxNumberOfMessages", "10")],
        )
        .await;
        answer
            .split("<Body>")
            .skip(1)
            .filter_map(|rest| rest.split("</Body>").next())
            .map(|body| body.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
            .map(|body| serde_json::from_str(&body).expect("an EventBridge message"))
            .collect()
    }
}

async fn sqs(endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.push(("Version", "2012-11-05"));
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{endpoint}/"))
        // moto routes a request to a service by the credential scope of its
        // Authorization header; it checks no signature.
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261119/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "SQS {params:?}: {status} {text}");
    text
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    Some(text.split(start).nth(1)?.split(end).next()?.to_owned())
}

/// A bus on moto (its ARN) whose one rule sends every event of ours to a fresh queue.
pub async fn bus_with_queue(admin: &aws_config::SdkConfig, hint: &str) -> (String, Queue) {
    let events = aws_sdk_eventbridge::Client::new(admin);
    let name = unique_bucket_name(hint);
    let bus = events.create_event_bus().name(&name).send().await.unwrap();
    let arn = bus.event_bus_arn().unwrap().to_owned();
    let queue = Queue::create(&moto_endpoint(), &name).await;
    events
        .put_rule()
        .name("arrivals")
        .event_bus_name(&name)
        .event_pattern(r#"{"source": ["popularity-reports"]}"#)
        .send()
        .await
        .unwrap();
    let target = Target::builder().id("queue").arn(&queue.arn).build().unwrap();
    events.put_targets().rule("arrivals").event_bus_name(&name).targets(target).send().await.unwrap();
    (arn, queue)
}
