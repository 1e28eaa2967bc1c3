//! `popularity link-signer rotate`: the next safe step in rotating the
//! link-signing user's access key (docs/operations.md, "Rotating the link
//! signer's key"). The user has two keys, A and B (template parameters
//! `LinkSignerKeySerial`, `LinkSignerKeySerialB`, `LinkSignerActiveKey`);
//! the active one signs new links, the other keeps the links it signed
//! valid. A rotation creates a fresh key in the free slot and makes it the
//! active one, in one deploy; a slot still holding a key is first emptied,
//! which is safe only once the active key has been signing for longer than
//! a link lives. This command reads the state from the signer secret's tags
//! and version date and from IAM (never the secret's value), decides with
//! [`plan_rotation`], and prints the `sam deploy` to run, or refuses and
//! says when it becomes safe. It deploys nothing itself.

use std::fmt;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

/// How long after the signer secret changed a link may still be signed
/// with the key it held before: a deliver-email invocation that read the
/// secret just before the change signs with the old key until it ends (the
/// function's timeout, 900 s).
pub const SIGNING_AFTER_SWITCH_SECONDS: i64 = 900;

/// The tags the template puts on the signer secret.
const TAG_USER: &str = "popularity:link-signer-user";
const TAG_ACTIVE: &str = "popularity:link-signer-active";
const TAG_SERIAL_A: &str = "popularity:link-signer-serial-a";
const TAG_SERIAL_B: &str = "popularity:link-signer-serial-b";
const TAG_KEY_A: &str = "popularity:link-signer-key-a";
const TAG_KEY_B: &str = "popularity:link-signer-key-b";
const TAG_TTL: &str = "popularity:link-ttl-seconds";

#[derive(Args)]
pub struct LinkSignerArgs {
    #[command(subcommand)]
    pub command: LinkSignerCommand,
}

#[derive(Subcommand)]
pub enum LinkSignerCommand {
    /// Print the next step of a rotation of the link-signing key with two
    /// keys overlapping, so links already sent keep working for their
    /// LINK_TTL_SECONDS: the `sam deploy --parameter-overrides …` to run.
    /// Refuses (exit 1), saying when it becomes safe, while the key a
    /// step would remove may still have signed a valid link. Run it again
    /// after each deploy. Reads the signer secret's tags and version date
    /// and the user's keys in IAM, never the secret's value.
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    /// The signer secret (name or ARN; the stack output LinkSignerSecretArn).
    #[arg(long, env = "LINK_SIGNER_SECRET")]
    pub secret: String,
    /// The stack, for the printed `sam deploy` command.
    #[arg(long, default_value = "popularity-reports")]
    pub stack_name: String,
}

/// One of the user's two key slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The template parameter holding this slot's serial.
    fn serial_parameter(self) -> &'static str {
        match self {
            Slot::A => "LinkSignerKeySerial",
            Slot::B => "LinkSignerKeySerialB",
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// An access key of the signing user, as IAM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    pub access_key_id: String,
    pub created: DateTime<Utc>,
}

/// What the stack says and IAM has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerState {
    pub user: String,
    pub active: Slot,
    /// Serials of A and B; 0 means the slot has no key.
    pub serials: [u64; 2],
    /// Key ids of A and B as the stack created them.
    pub key_ids: [Option<String>; 2],
    /// When the secret took its current value, i.e. since when the active
    /// key has been signing every new link.
    pub active_since: DateTime<Utc>,
    pub ttl_seconds: u64,
    pub user_keys: Vec<UserKey>,
}

/// The next step, or why there is none now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationStep {
    /// Create a key in the free slot and make it the active one; the key
    /// active until now stays, so its links keep working.
    CreateAndSwitch { slot: Slot, parameters: Vec<(String, String)> },
    /// Remove the key of the inactive slot: every link it signed has expired.
    RemoveInactive { slot: Slot, key_id: String, parameters: Vec<(String, String)> },
    /// Removing the inactive key now would kill links still valid.
    NotYet { slot: Slot, key_id: String, safe_at: DateTime<Utc> },
    /// The stack and IAM disagree; a person must look.
    Inconsistent(String),
}

/// The next rotation step for `state` at `now`. Pure: every rule of the
/// procedure is here.
pub fn plan_rotation(state: &SignerState, now: DateTime<Utc>) -> RotationStep {
    let active = state.active;
    let inactive = active.other();
    let Some(active_key) = state.key_ids[active.index()].clone().filter(|_| state.serials[active.index()] != 0) else {
        return RotationStep::Inconsistent(format!(
            "the stack says key {active} signs links, but it has no key {active} (serial {}); deploy with \
             LinkSignerActiveKey naming the key that exists",
            state.serials[active.index()]
        ));
    };
    let known: Vec<&String> = state.key_ids.iter().flatten().collect();
    if let Some(missing) = known.iter().find(|id| !state.user_keys.iter().any(|key| &&key.access_key_id == *id)) {
        return RotationStep::Inconsistent(format!(
            "key {missing}, which the stack created, is not among user {}'s keys in IAM: it was deleted by hand; \
             links it signed no longer work. Deploy again so the stack recreates its keys",
            state.user
        ));
    }
    if let Some(stray) = state.user_keys.iter().find(|key| !known.contains(&&key.access_key_id)) {
        return RotationStep::Inconsistent(format!(
            "user {} has key {} (created {}), which the stack did not create; IAM allows two keys per user, so a \
             rotation could not create one. Once no link it signed can still be valid (7 days after it last \
             signed), delete it: aws iam delete-access-key --user-name {} --access-key-id {}",
            state.user,
            stray.access_key_id,
            stray.created.format("%Y-%m-%dT%H:%M:%SZ"),
            state.user,
            stray.access_key_id
        ));
    }
    let serial = |slot: Slot| state.serials[slot.index()];
    match state.key_ids[inactive.index()].clone().filter(|_| serial(inactive) != 0) {
        None => {
            let next_serial = state.serials.iter().max().copied().unwrap_or(0) + 1;
            let mut serials = state.serials;
            serials[inactive.index()] = next_serial;
            RotationStep::CreateAndSwitch { slot: inactive, parameters: parameters(serials, inactive) }
        }
        Some(key_id) => {
            // The active key's own creation bounds `active_since` from below
            // too: it cannot have signed before it existed.
            let created = state.user_keys.iter().find(|key| key.access_key_id == active_key).map(|key| key.created);
            let since = created.map_or(state.active_since, |created| created.max(state.active_since));
            let safe_at = since
                + chrono::Duration::seconds(i64::try_from(state.ttl_seconds).unwrap_or(i64::MAX / 2))
                + chrono::Duration::seconds(SIGNING_AFTER_SWITCH_SECONDS);
            if now < safe_at {
                return RotationStep::NotYet { slot: inactive, key_id, safe_at };
            }
            let mut serials = state.serials;
            serials[inactive.index()] = 0;
            RotationStep::RemoveInactive { slot: inactive, key_id, parameters: parameters(serials, active) }
        }
    }
}

/// Every rotation parameter, so the deploy states the whole intended state.
fn parameters(serials: [u64; 2], active: Slot) -> Vec<(String, String)> {
    vec![
        (Slot::A.serial_parameter().to_owned(), serials[0].to_string()),
        (Slot::B.serial_parameter().to_owned(), serials[1].to_string()),
        ("LinkSignerActiveKey".to_owned(), active.to_string()),
    ]
}

/// `sam deploy --stack-name … --parameter-overrides …`.
fn deploy_command(stack_name: &str, parameters: &[(String, String)]) -> String {
    let overrides: Vec<String> = parameters.iter().map(|(name, value)| format!("{name}={value}")).collect();
    format!("sam deploy --stack-name {stack_name} --parameter-overrides {}", overrides.join(" "))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Why the signer secret's tags cannot describe the rotation state.
#[derive(Debug, thiserror::Error)]
#[error(
    "link signer secret {secret}: {problem}. Its tags are set by template.yaml (LinkSignerSecret); deploy the \
     current template first"
)]
pub struct TagError {
    secret: String,
    problem: String,
}

/// The part of [`SignerState`] the secret's tags give.
pub fn state_from_tags(
    secret: &str,
    tags: &[(String, String)],
    active_since: DateTime<Utc>,
    user_keys: Vec<UserKey>,
) -> Result<SignerState, TagError> {
    let problem = |problem: String| TagError { secret: secret.to_owned(), problem };
    let tag = |name: &str| {
        tags.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .ok_or_else(|| problem(format!("it has no tag {name}")))
    };
    let number = |name: &str| -> Result<u64, TagError> {
        let value = tag(name)?;
        value.parse().map_err(|_| problem(format!("tag {name} is {value:?}, not a number")))
    };
    let key = |name: &str| -> Result<Option<String>, TagError> { Ok(Some(tag(name)?).filter(|id| id != "none")) };
    let active = match tag(TAG_ACTIVE)?.as_str() {
        "A" => Slot::A,
        "B" => Slot::B,
        other => return Err(problem(format!("tag {TAG_ACTIVE} is {other:?}, not A or B"))),
    };
    Ok(SignerState {
        user: tag(TAG_USER)?,
        active,
        serials: [number(TAG_SERIAL_A)?, number(TAG_SERIAL_B)?],
        key_ids: [key(TAG_KEY_A)?, key(TAG_KEY_B)?],
        active_since,
        ttl_seconds: number(TAG_TTL)?,
        user_keys,
    })
}

/// Reads the state from Secrets Manager (tags, the current version's date)
/// and IAM (the user's keys).
async fn read_state(config: &aws_config::SdkConfig, secret: &str) -> anyhow::Result<SignerState> {
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    let described = secrets
        .describe_secret()
        .secret_id(secret)
        .send()
        .await
        .with_context(|| format!("DescribeSecret {secret} (the link signer secret)"))?;
    let tags: Vec<(String, String)> =
        described.tags().iter().filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned()))).collect();
    let versions = secrets
        .list_secret_version_ids()
        .secret_id(secret)
        .send()
        .await
        .with_context(|| format!("ListSecretVersionIds {secret}"))?;
    let current = versions
        .versions()
        .iter()
        .find(|version| version.version_stages().iter().any(|stage| stage == "AWSCURRENT"))
        .and_then(|version| version.created_date())
        .with_context(|| format!("{secret} has no AWSCURRENT version with a creation date"))?;
    let active_since = DateTime::<Utc>::from_timestamp(current.secs(), current.subsec_nanos())
        .context("the secret version's date is out of range")?;
    let user = tags
        .iter()
        .find(|(key, _)| key == TAG_USER)
        .map(|(_, value)| value.clone())
        .ok_or_else(|| TagError { secret: secret.to_owned(), problem: format!("it has no tag {TAG_USER}") })?;
    let iam = aws_sdk_iam::Client::new(config);
    let listed = iam
        .list_access_keys()
        .user_name(&user)
        .send()
        .await
        .with_context(|| format!("ListAccessKeys of user {user} (the link-signing user)"))?;
    let user_keys = listed
        .access_key_metadata()
        .iter()
        .filter_map(|key| {
            let created = key.create_date()?;
            Some(UserKey {
                access_key_id: key.access_key_id()?.to_owned(),
                created: DateTime::<Utc>::from_timestamp(created.secs(), created.subsec_nanos())?,
            })
        })
        .collect();
    Ok(state_from_tags(secret, &tags, active_since, user_keys)?)
}

/// What `rotate` prints for `state` and `step`, and whether it is a refusal.
pub fn report(state: &SignerState, step: &RotationStep, stack_name: &str) -> (String, bool) {
    let mut out = String::new();
    for slot in [Slot::A, Slot::B] {
        let line = match &state.key_ids[slot.index()] {
            Some(id) => {
                let created = state
                    .user_keys
                    .iter()
                    .find(|key| &key.access_key_id == id)
                    .map_or("not in IAM".to_owned(), |key| format!("created {}", timestamp(key.created)));
                let role = if slot == state.active {
                    format!("signs new links since {}", timestamp(state.active_since))
                } else {
                    "kept for the links it signed".to_owned()
                };
                format!("key {slot}: {id}, serial {}, {created}, {role}", state.serials[slot.index()])
            }
            None => format!("key {slot}: none (serial {})", state.serials[slot.index()]),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let refused = match step {
        RotationStep::CreateAndSwitch { slot, parameters } => {
            out.push_str(&format!(
                "next: create key {slot} and make it sign new links; key {} stays, so every link already sent \
                 keeps working. Run:\n  {}\n",
                slot.other(),
                deploy_command(stack_name, parameters)
            ));
            false
        }
        RotationStep::RemoveInactive { slot, key_id, parameters } => {
            out.push_str(&format!(
                "next (step 1 of 2): remove key {slot} ({key_id}); every link it signed has expired. Run:\n  {}\n\
                 then run `popularity link-signer rotate` again for the new key.\n",
                deploy_command(stack_name, parameters)
            ));
            false
        }
        RotationStep::NotYet { slot, key_id, safe_at } => {
            out.push_str(&format!(
                "refused: key {slot} ({key_id}) signed links until {} and the last of them is valid until {} \
                 (LINK_TTL_SECONDS {} plus {} s for a delivery that read the old key); a rotation now would \
                 remove it and kill those links. Run this again after {}.\n",
                timestamp(state.active_since),
                timestamp(*safe_at),
                state.ttl_seconds,
                SIGNING_AFTER_SWITCH_SECONDS,
                timestamp(*safe_at)
            ));
            true
        }
        RotationStep::Inconsistent(reason) => {
            out.push_str(&format!("refused: {reason}\n"));
            true
        }
    };
    (out, refused)
}

pub async fn run(args: LinkSignerArgs) -> anyhow::Result<()> {
    match args.command {
        LinkSignerCommand::Rotate(args) => {
            let config = popularity_reports::sdk_config::load_sdk_config().await;
            let state = read_state(&config, &args.secret).await?;
            let step = plan_rotation(&state, Utc::now());
            let (text, refused) = report(&state, &step, &args.stack_name);
            print!("{text}");
            if refused {
                anyhow::bail!("no rotation step is safe now (see above)");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn key(id: &str, created: &str) -> UserKey {
        UserKey { access_key_id: id.to_owned(), created: at(created) }
    }

    /// Key A signing since it was created on 1 November; no key B.
    fn only_a() -> SignerState {
        SignerState {
            user: "signer".to_owned(),
            active: Slot::A,
            serials: [1, 0],
            key_ids: [Some("AKIAAAAA".to_owned()), None],
            active_since: at("2026-11-01T00:00:00Z"),
            ttl_seconds: 604_800,
            user_keys: vec![key("AKIAAAAA", "2026-11-01T00:00:00Z")],
        }
    }

    /// After the first rotation: B signs since 10 November, A kept.
    fn b_active() -> SignerState {
        SignerState {
            active: Slot::B,
            serials: [1, 2],
            key_ids: [Some("AKIAAAAA".to_owned()), Some("AKIABBBB".to_owned())],
            active_since: at("2026-11-10T12:00:00Z"),
            user_keys: vec![key("AKIAAAAA", "2026-11-01T00:00:00Z"), key("AKIABBBB", "2026-11-10T11:58:00Z")],
            ..only_a()
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn with_one_key_the_free_slot_gets_a_new_key_that_signs_at_once() {
        let step = plan_rotation(&only_a(), at("2026-11-02T00:00:00Z"));
        assert_eq!(
            step,
            RotationStep::CreateAndSwitch {
                slot: Slot::B,
                parameters: pairs(&[
                    ("LinkSignerKeySerial", "1"),
                    ("LinkSignerKeySerialB", "2"),
                    ("LinkSignerActiveKey", "B")
                ])
            }
        );
        let (text, refused) = report(&only_a(), &step, "prod");
        assert!(!refused);
        assert!(
            text.contains(
                "sam deploy --stack-name prod --parameter-overrides LinkSignerKeySerial=1 LinkSignerKeySerialB=2 \
                 LinkSignerActiveKey=B"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_inactive_key_is_kept_until_every_link_it_signed_has_expired() {
        let state = b_active();
        // A signed its last links up to 15 minutes after B took over.
        let safe_at = at("2026-11-17T12:15:00Z");
        for now in ["2026-11-10T12:01:00Z", "2026-11-17T11:59:59Z", "2026-11-17T12:14:59Z"] {
            let step = plan_rotation(&state, at(now));
            assert_eq!(
                step,
                RotationStep::NotYet { slot: Slot::A, key_id: "AKIAAAAA".to_owned(), safe_at },
                "at {now}"
            );
            let (text, refused) = report(&state, &step, "prod");
            assert!(refused);
            assert!(text.contains("Run this again after 2026-11-17T12:15:00Z"), "{text}");
            assert!(!text.contains("sam deploy"), "{text}");
        }
        let step = plan_rotation(&state, safe_at);
        assert_eq!(
            step,
            RotationStep::RemoveInactive {
                slot: Slot::A,
                key_id: "AKIAAAAA".to_owned(),
                parameters: pairs(&[
                    ("LinkSignerKeySerial", "0"),
                    ("LinkSignerKeySerialB", "2"),
                    ("LinkSignerActiveKey", "B")
                ])
            }
        );
    }

    #[test]
    fn after_the_removal_the_next_key_gets_a_serial_never_used() {
        let state = SignerState {
            serials: [0, 2],
            key_ids: [None, Some("AKIABBBB".to_owned())],
            user_keys: vec![key("AKIABBBB", "2026-11-10T11:58:00Z")],
            ..b_active()
        };
        assert_eq!(
            plan_rotation(&state, at("2026-12-01T00:00:00Z")),
            RotationStep::CreateAndSwitch {
                slot: Slot::A,
                parameters: pairs(&[
                    ("LinkSignerKeySerial", "3"),
                    ("LinkSignerKeySerialB", "2"),
                    ("LinkSignerActiveKey", "A")
                ])
            }
        );
    }

    #[test]
    fn a_key_created_after_the_secret_changed_counts_from_its_creation() {
        let mut state = b_active();
        state.active_since = at("2026-11-01T00:00:00Z");
        // B exists only since the 10th, so it signed nothing before.
        let step = plan_rotation(&state, at("2026-11-16T00:00:00Z"));
        assert!(
            matches!(step, RotationStep::NotYet { safe_at, .. } if safe_at == at("2026-11-17T12:13:00Z")),
            "{step:?}"
        );
    }

    #[test]
    fn a_key_the_stack_did_not_make_or_one_deleted_by_hand_stops_the_rotation() {
        let mut stray = only_a();
        stray.user_keys.push(key("AKIASTRAY", "2026-10-01T00:00:00Z"));
        let step = plan_rotation(&stray, at("2026-11-20T00:00:00Z"));
        let RotationStep::Inconsistent(reason) = &step else { panic!("{step:?}") };
        assert!(reason.contains("AKIASTRAY") && reason.contains("aws iam delete-access-key"), "{reason}");
        assert!(report(&stray, &step, "prod").1);

        let mut gone = b_active();
        gone.user_keys.remove(0);
        let RotationStep::Inconsistent(reason) = plan_rotation(&gone, at("2026-12-01T00:00:00Z")) else { panic!() };
        assert!(reason.contains("AKIAAAAA") && reason.contains("deleted by hand"), "{reason}");

        let mut no_active = only_a();
        no_active.serials = [0, 0];
        assert!(matches!(plan_rotation(&no_active, at("2026-12-01T00:00:00Z")), RotationStep::Inconsistent(_)));
    }

    #[test]
    fn missing_or_wrong_tags_are_named() {
        let tags = pairs(&[
            (TAG_USER, "signer"),
            (TAG_ACTIVE, "A"),
            (TAG_SERIAL_A, "1"),
            (TAG_SERIAL_B, "0"),
            (TAG_KEY_A, "AKIAAAAA"),
            (TAG_KEY_B, "none"),
            (TAG_TTL, "604800"),
        ]);
        let state = state_from_tags("s", &tags, at("2026-11-01T00:00:00Z"), only_a().user_keys).unwrap();
        assert_eq!(state, only_a());
        let without_ttl: Vec<_> = tags.iter().filter(|(k, _)| k != TAG_TTL).cloned().collect();
        let err = state_from_tags("s", &without_ttl, at("2026-11-01T00:00:00Z"), vec![]).unwrap_err().to_string();
        assert!(err.contains(TAG_TTL) && err.contains("link signer secret s:"), "{err}");
        let mut bad = tags.clone();
        bad[1].1 = "C".to_owned();
        let err = state_from_tags("s", &bad, at("2026-11-01T00:00:00Z"), vec![]).unwrap_err().to_string();
        assert!(err.contains("not A or B"), "{err}");
    }
}
