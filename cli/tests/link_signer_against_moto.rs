//! `popularity link-signer rotate` against moto, with the signer secret
//! tagged as template.yaml tags it and the user's keys made in IAM: with one
//! key it prints the deploy that creates key B and makes it sign; with both
//! keys and the secret just switched it refuses, saying when it becomes
//! safe (the secret version's date plus LINK_TTL_SECONDS plus 900 s); a key
//! the stack did not make is named with the command that removes it. The
//! time rules themselves (a removal allowed once that moment has passed)
//! are unit tests of `plan_rotation`: moto's keys and versions are always
//! created now.

use std::process::Output;

use chrono::{DateTime, Utc};
use integration_tests::{moto_endpoint, sdk_config, unique_bucket_name};

struct Signer {
    secret: String,
    user: String,
    keys: Vec<String>,
}

/// A signing user with `keys` access keys and a secret tagged for key A
/// (and B when there are two) with B signing when `b_active`.
async fn signer(keys: usize, b_active: bool, tagged_keys: usize) -> Signer {
    let admin = sdk_config(&moto_endpoint()).await;
    let iam = aws_sdk_iam::Client::new(&admin);
    let user = unique_bucket_name("link-signer");
    iam.create_user().user_name(&user).send().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..keys {
        let key = iam.create_access_key().user_name(&user).send().await.unwrap();
        ids.push(key.access_key().unwrap().access_key_id().to_owned());
    }
    let secrets = aws_sdk_secretsmanager::Client::new(&admin);
    let secret = format!("{user}-link-signer");
    let id = |i: usize| if i < tagged_keys { ids[i].clone() } else { "none".to_owned() };
    let tags = [
        ("popularity:link-signer-user", user.clone()),
        ("popularity:link-signer-active", if b_active { "B" } else { "A" }.to_owned()),
        ("popularity:link-signer-serial-a", "1".to_owned()),
        ("popularity:link-signer-serial-b", if tagged_keys > 1 { "2" } else { "0" }.to_owned()),
        ("popularity:link-signer-key-a", id(0)),
        ("popularity:link-signer-key-b", id(1)),
        ("popularity:link-ttl-seconds", "604800".to_owned()),
    ];
    let mut create =
        secrets.create_secret().name(&secret).secret_string(r#"{"accessKeyId":"x","secretAccessKey":"y"}"#);
    for (key, value) in tags {
        create = create.tags(aws_sdk_secretsmanager::types::Tag::builder().key(key).value(value).build());
    }
    create.send().await.unwrap();
    Signer { secret, user, keys: ids }
}

fn rotate(secret: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["link-signer", "rotate", "--secret", secret, "--stack-name", "prod"])
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("LINK_SIGNER_SECRET")
        .output()
        .expect("the popularity binary runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_key_rotate_prints_the_deploy_that_adds_key_b_and_makes_it_sign() {
    let signer = signer(1, false, 1).await;
    let output = rotate(&signer.secret);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains(&format!("key A: {}, serial 1, created ", signer.keys[0])), "{out}");
    assert!(out.contains("key B: none (serial 0)"), "{out}");
    assert!(
        out.contains(
            "sam deploy --stack-name prod --parameter-overrides LinkSignerKeySerial=1 LinkSignerKeySerialB=2 \
             LinkSignerActiveKey=B"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_keys_and_b_just_switched_on_rotate_refuses_until_a_links_expire() {
    let before = Utc::now();
    let signer = signer(2, true, 2).await;
    let output = rotate(&signer.secret);
    let out = text(&output);
    assert!(!output.status.success(), "a refusal exits non-zero: {out}");
    assert!(out.contains(&format!("refused: key A ({})", signer.keys[0])), "{out}");
    assert!(!out.contains("sam deploy"), "{out}");
    // When: the version's date (now, on moto) plus 7 days and 900 s.
    let when = out.split("Run this again after ").nth(1).unwrap().trim_end().trim_end_matches('.');
    let when: DateTime<Utc> = when.split_whitespace().next().unwrap().trim_end_matches('.').parse().unwrap();
    let expected = before + chrono::Duration::seconds(604_800 + 900);
    assert!((when - expected).num_seconds().abs() <= 120, "safe at {when}, expected about {expected}: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_stack_did_not_create_is_named_with_how_to_remove_it() {
    let signer = signer(2, false, 1).await;
    let output = rotate(&signer.secret);
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "aws iam delete-access-key --user-name {} --access-key-id {}",
            signer.user, signer.keys[1]
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_without_the_templates_tags_is_refused_naming_the_tag() {
    let admin = sdk_config(&moto_endpoint()).await;
    let secret = unique_bucket_name("untagged-signer");
    aws_sdk_secretsmanager::Client::new(&admin).create_secret().name(&secret).secret_string("{}").send().await.unwrap();
    let output = rotate(&secret);
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("popularity:link-signer-user") && out.contains("deploy the current template"), "{out}");
}
