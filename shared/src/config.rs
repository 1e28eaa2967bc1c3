//! Typed configuration of each function, read once at cold start from the
//! environment variables of docs/design.md, "Environment variables". A
//! missing or malformed variable fails the cold start with its name and what
//! was expected. Nothing else in the library reads the environment.

use crate::rank::RankSettings;
use crate::scoring::{
    is_usable_half_life, ScoringRules, HALF_LIFE_DAYS_EXPECTED, LOOKBACK_DAYS_EXPECTED, LOOKBACK_DAYS_RANGE,
};
use crate::tenant::directory::DEFAULT_TENANT_SECRET_PREFIX;

/// A configuration variable is missing or malformed.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is not set; {purpose}")]
    Missing { name: &'static str, purpose: &'static str },
    #[error("environment variable {name}={value:?} is malformed: expected {expected}")]
    Malformed { name: &'static str, value: String, expected: &'static str },
    /// A variable whose value is not repeated (it may be long): the reason.
    #[error("environment variable {name} is not usable: {reason}")]
    Unusable { name: &'static str, reason: String },
}

/// `main` returning this error prints its `Debug`: make that the message.
impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Reads variables through `lookup` so tests need not touch the process
/// environment.
struct Variables<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Variables<F> {
    fn required(&self, name: &'static str, purpose: &'static str) -> Result<String, ConfigError> {
        match (self.0)(name) {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(ConfigError::Missing { name, purpose }),
        }
    }

    fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &'static str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let Some(text) = self.optional(name) else { return Ok(default) };
        match text.parse::<T>() {
            Ok(value) if valid(&value) => Ok(value),
            _ => Err(ConfigError::Malformed { name, value: text, expected }),
        }
    }
}

/// Configuration of the `rank` function.
#[derive(Debug, Clone, PartialEq)]
pub struct RankConfig {
    pub staging_bucket: String,
    pub data_bucket: String,
    pub data_prefix: String,
    pub rules: ScoringRules,
    pub part_rows: u64,
}

impl RankConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Variables(lookup);
        Ok(Self {
            staging_bucket: vars.required("STAGING_BUCKET", "name the bucket reports and manifests are written to")?,
            data_bucket: vars.required("DATA_BUCKET", "name the bucket holding catalogue/ and plays/")?,
            data_prefix: vars.optional("DATA_PREFIX").unwrap_or_default(),
            rules: ScoringRules {
                lookback_days: vars
                    .parsed("LOOKBACK_DAYS", 28, LOOKBACK_DAYS_EXPECTED, |d| LOOKBACK_DAYS_RANGE.contains(d))?,
                half_life_days: vars
                    .parsed("HALF_LIFE_DAYS", 7.0, HALF_LIFE_DAYS_EXPECTED, |h| is_usable_half_life(*h))?,
            },
            part_rows: vars.parsed("PART_ROWS", 5_000_000, "a whole number of items from 1 to 4000000000", |n| {
                (1..=4_000_000_000).contains(n)
            })?,
        })
    }

    /// Settings of a run with this configuration (canonical JSON reports).
    pub fn settings(&self) -> RankSettings {
        RankSettings { rules: self.rules, part_rows: self.part_rows, ..RankSettings::default() }
    }
}

/// Longest validity S3 accepts for a presigned URL (SigV4): 7 days.
pub const MAX_LINK_TTL_SECONDS: u64 = 604_800;

/// Where tenant secrets live, read by fanout and both deliverers.
fn tenant_secret_prefix<F: Fn(&str) -> Option<String>>(vars: &Variables<F>) -> Result<String, ConfigError> {
    let prefix = vars.optional("TENANT_SECRET_PREFIX").unwrap_or_else(|| DEFAULT_TENANT_SECRET_PREFIX.to_owned());
    if prefix.len() > 1 && prefix.ends_with('/') {
        Ok(prefix)
    } else {
        Err(ConfigError::Malformed {
            name: "TENANT_SECRET_PREFIX",
            value: prefix,
            expected: "a secret name prefix ending with '/', such as popularity-reports/tenants/",
        })
    }
}

/// `TENANT_SECRETS_KMS_KEY_ID`: the stack's tenant secrets key (its ARN),
/// the only key a tenant secret may be encrypted under. Unset (local runs
/// without a stack): any key is accepted.
fn tenant_secrets_kms_key_id<F: Fn(&str) -> Option<String>>(
    vars: &Variables<F>,
) -> Result<Option<String>, ConfigError> {
    match vars.optional("TENANT_SECRETS_KMS_KEY_ID") {
        Some(key) if !(key.starts_with("arn:") && key.contains(":key/")) => Err(ConfigError::Malformed {
            name: "TENANT_SECRETS_KMS_KEY_ID",
            value: key,
            expected: "the ARN of the stack's tenant secrets key (arn:aws:kms:<region>:<account>:key/<id>)",
        }),
        key => Ok(key),
    }
}

/// Configuration of the `fanout` function and of `deliver-s3`: the staging
/// bucket and where tenant secrets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub staging_bucket: String,
    pub tenant_secret_prefix: String,
    /// `TENANT_SECRETS_KMS_KEY_ID`, see [`tenant_secrets_kms_key_id`].
    pub tenant_secrets_kms_key_id: Option<String>,
    /// `DATA_BUCKET`, when the function is told it: another of the stack's
    /// own buckets, never a destination.
    pub data_bucket: Option<String>,
}

impl DeliveryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Variables(lookup);
        Ok(Self {
            staging_bucket: vars
                .required("STAGING_BUCKET", "name the bucket holding manifests/, reports/, jobs/ and status/")?,
            tenant_secret_prefix: tenant_secret_prefix(&vars)?,
            tenant_secrets_kms_key_id: tenant_secrets_kms_key_id(&vars)?,
            data_bucket: vars.optional("DATA_BUCKET"),
        })
    }

    /// The stack's own buckets, which no connector may name (docs/design.md, "Tenants").
    pub fn own_buckets(&self) -> Vec<String> {
        std::iter::once(self.staging_bucket.clone()).chain(self.data_bucket.clone()).collect()
    }
}

/// How `deliver-s3` writes beyond a tenant's own credentials: the role its
/// `s3-bucket-policy` sessions assume, tagged with the tenant
/// (`BUCKET_POLICY_WRITER_ROLE_ARN`; unset in local runs, where such writes
/// use our own credentials, untagged), and our AWS organization, whose
/// buckets no session may write (`OWN_ORGANIZATION_ID`, optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3WriterConfig {
    pub bucket_policy_writer_role_arn: Option<String>,
    pub own_organization_id: Option<String>,
}

impl S3WriterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Variables(lookup);
        let role = vars.optional("BUCKET_POLICY_WRITER_ROLE_ARN");
        if let Some(role) = role.as_ref().filter(|role| !crate::tenant::formats::is_iam_role_arn(role)) {
            return Err(ConfigError::Malformed {
                name: "BUCKET_POLICY_WRITER_ROLE_ARN",
                value: role.clone(),
                expected: "the ARN of the stack's BucketPolicyWriterRole (arn:aws:iam::<account>:role/<name>)",
            });
        }
        let organization = vars.optional("OWN_ORGANIZATION_ID");
        let is_org_id = |id: &str| {
            id.strip_prefix("o-").is_some_and(|rest| {
                (10..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
        };
        if let Some(organization) = organization.as_ref().filter(|id| !is_org_id(id)) {
            return Err(ConfigError::Malformed {
                name: "OWN_ORGANIZATION_ID",
                value: organization.clone(),
                expected: "an AWS Organizations id (o- and 10 to 32 lowercase letters or digits), or unset",
            });
        }
        Ok(Self { bucket_policy_writer_role_arn: role, own_organization_id: organization })
    }
}

/// Configuration of the `deliver-s3` function: [`DeliveryConfig`] and how it
/// writes ([`S3WriterConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverS3Config {
    pub delivery: DeliveryConfig,
    pub writer: S3WriterConfig,
}

impl DeliverS3Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self { delivery: DeliveryConfig::from_lookup(&lookup)?, writer: S3WriterConfig::from_lookup(&lookup)? })
    }
}

/// Configuration of the `console` function (the self-service API) and of
/// `popularity console`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// The staging bucket and tenant secrets, as the deliverers see them.
    pub delivery: DeliveryConfig,
    /// The Cognito user pool whose ID tokens the API accepts.
    pub user_pool_id: String,
    /// Its app client: the tokens' audience.
    pub client_id: String,
    /// `https://cognito-idp.<region>.amazonaws.com/<userPoolId>` unless set
    /// (`COGNITO_ISSUER`).
    pub issuer: String,
    /// `<issuer>/.well-known/jwks.json` unless set (`COGNITO_JWKS_URL`;
    /// locally, the emulator's).
    pub jwks_url: String,
    /// The AWS principal customers' roles and bucket policies trust: our
    /// deliver-s3 role (`DELIVERY_PRINCIPAL_ARN`), shown in setup instructions.
    pub delivery_principal: Option<String>,
    /// The role s3-bucket-policy customers' bucket policies name, on the
    /// condition of their tenant's session tag (`BUCKET_POLICY_WRITER_ROLE_ARN`).
    pub bucket_policy_writer: Option<String>,
    /// The Google address customers share spreadsheets with
    /// (`GOOGLE_SHARE_ADDRESS`), shown in setup instructions.
    pub google_share_address: Option<String>,
    /// Keyless Google: our project (`GOOGLE_PROJECT_ID`), so the setup
    /// instructions show each tenant its own Google address.
    pub google_project_id: Option<String>,
    /// How long a create or update waits for its connection test
    /// (`CONNECTION_TEST_WAIT_SECONDS`, 1 to 28: API Gateway answers in 30).
    pub connection_test_wait_seconds: u64,
}

impl ConsoleConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let delivery = DeliveryConfig::from_lookup(&lookup)?;
        let vars = Variables(lookup);
        let user_pool_id =
            vars.required("COGNITO_USER_POOL_ID", "name the Cognito user pool whose users may sign in")?;
        let client_id = vars.required("COGNITO_CLIENT_ID", "name the user pool's app client (the tokens' audience)")?;
        let issuer = match vars.optional("COGNITO_ISSUER") {
            Some(issuer) => issuer,
            None => {
                let region = vars.required("AWS_REGION", "name the region of the user pool (for its issuer)")?;
                crate::console::auth::CognitoSettings::issuer_of(&region, &user_pool_id)
            }
        };
        if !issuer.starts_with("https://") && !issuer.starts_with("http://127.0.0.1") {
            return Err(ConfigError::Malformed {
                name: "COGNITO_ISSUER",
                value: issuer,
                expected: "https://cognito-idp.<region>.amazonaws.com/<userPoolId>",
            });
        }
        let jwks_url = vars.optional("COGNITO_JWKS_URL").unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
        Ok(Self {
            delivery,
            user_pool_id,
            client_id,
            issuer,
            jwks_url,
            delivery_principal: vars.optional("DELIVERY_PRINCIPAL_ARN"),
            bucket_policy_writer: vars.optional("BUCKET_POLICY_WRITER_ROLE_ARN"),
            google_share_address: vars.optional("GOOGLE_SHARE_ADDRESS"),
            google_project_id: vars.optional("GOOGLE_PROJECT_ID"),
            connection_test_wait_seconds: vars.parsed(
                "CONNECTION_TEST_WAIT_SECONDS",
                25,
                "a whole number of seconds from 1 to 28",
                |s| (1..=28).contains(s),
            )?,
        })
    }
}

/// Configuration of the `deliver-email` function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    pub delivery: DeliveryConfig,
    /// The verified SES identity mail is sent from.
    pub sender: String,
    /// Name or ARN of the secret with the link-signing user's long-term keys.
    pub link_signer_secret: Option<String>,
    pub link_ttl_seconds: u64,
    /// SES configuration set every message is sent with
    /// (`SES_CONFIGURATION_SET`), so that SES publishes its bounces and
    /// complaints (the stack's MailConfigurationSet); none when unset.
    pub configuration_set: Option<String>,
}

impl EmailConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let delivery = DeliveryConfig::from_lookup(&lookup)?;
        let vars = Variables(lookup);
        let sender = vars.required("SES_SENDER", "name the verified SES identity emails are sent from")?;
        if !crate::tenant::is_email_address(&sender) {
            return Err(ConfigError::Malformed { name: "SES_SENDER", value: sender, expected: "an email address" });
        }
        Ok(Self {
            delivery,
            sender,
            link_signer_secret: vars.optional("LINK_SIGNER_SECRET"),
            link_ttl_seconds: vars.parsed(
                "LINK_TTL_SECONDS",
                MAX_LINK_TTL_SECONDS,
                "a whole number of seconds from 1 to 604800 (S3's limit for presigned URLs)",
                |t| (1..=MAX_LINK_TTL_SECONDS).contains(t),
            )?,
            configuration_set: ses_configuration_set(&vars)?,
        })
    }
}

/// `SES_CONFIGURATION_SET`, if set: a name SES accepts (up to 64 letters,
/// digits, `-` and `_`), checked here so a typo fails the cold start rather
/// than every send.
fn ses_configuration_set<F: Fn(&str) -> Option<String>>(vars: &Variables<F>) -> Result<Option<String>, ConfigError> {
    let name = "SES_CONFIGURATION_SET";
    let Some(value) = vars.optional(name) else { return Ok(None) };
    let valid = value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ConfigError::Malformed {
            name,
            value,
            expected: "an SES configuration set name (up to 64 letters, digits, '-' and '_'), or unset",
        });
    }
    Ok(Some(value))
}

/// Keyless Google for a deliverer (`GOOGLE_EXTERNAL_ACCOUNT_CONFIG`,
/// `GOOGLE_PROJECT_ID`, `GOOGLE_IAM_CREDENTIALS_ENDPOINT`): `None` when the
/// first is unset.
fn federation<F: Fn(&str) -> Option<String>>(
    vars: &Variables<F>,
) -> Result<Option<crate::google_identity::FederationConfig>, ConfigError> {
    crate::google_identity::FederationConfig::from_values(
        vars.optional("GOOGLE_EXTERNAL_ACCOUNT_CONFIG").as_deref(),
        vars.optional("GOOGLE_PROJECT_ID").as_deref(),
        // The deliverers call IAM Credentials only; onboarding (the CLI)
        // reads GOOGLE_IAM_ENDPOINT itself.
        None,
        vars.optional("GOOGLE_IAM_CREDENTIALS_ENDPOINT").as_deref(),
    )
    .map_err(|error| {
        let reason = error.to_string();
        let name =
            if reason.contains("GOOGLE_PROJECT_ID") { "GOOGLE_PROJECT_ID" } else { "GOOGLE_EXTERNAL_ACCOUNT_CONFIG" };
        ConfigError::Unusable { name, reason }
    })
}

/// Configuration of the `deliver-gcs` function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConfig {
    pub delivery: DeliveryConfig,
    /// Where GCS requests go: Google, or `STORAGE_EMULATOR_HOST` over plain HTTP.
    pub storage_endpoint: String,
    /// Keyless Google, when configured.
    pub google: Option<crate::google_identity::FederationConfig>,
}

impl GcsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let delivery = DeliveryConfig::from_lookup(&lookup)?;
        let vars = Variables(lookup);
        let emulator = vars.optional("STORAGE_EMULATOR_HOST");
        if let Some(host) = &emulator {
            let bare = host.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
            let valid = !bare.is_empty() && !bare.contains(['/', ' ', '?', '#', '@']);
            if !valid {
                return Err(ConfigError::Malformed {
                    name: "STORAGE_EMULATOR_HOST",
                    value: host.clone(),
                    expected: "host:port of a GCS emulator, optionally as http://host:port",
                });
            }
        }
        Ok(Self {
            delivery,
            storage_endpoint: crate::delivery::connectors::gcs::storage_endpoint(emulator.as_deref()),
            google: federation(&vars)?,
        })
    }
}

/// Configuration of the `deliver-sheets` function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetsConfig {
    pub delivery: DeliveryConfig,
    /// Name or ARN of the secret holding our common Google service
    /// account's key file: the older keyed path.
    pub service_account_secret: Option<String>,
    /// Keyless Google, when configured: each tenant's own identity.
    pub google: Option<crate::google_identity::FederationConfig>,
    /// The Sheets API v4 base URL (`SHEETS_API_ENDPOINT`).
    pub sheets_endpoint: String,
    /// Write requests a minute, for our one service account
    /// (`SHEETS_WRITES_PER_MINUTE`; Google allows 60 per user by default).
    pub writes_per_minute: u32,
}

impl SheetsConfig {
    /// Who the deliverer writes as, for `load_sheets_clients`.
    pub fn identity_settings(&self) -> crate::delivery::connectors::sheets::SheetsSettings<'_> {
        crate::delivery::connectors::sheets::SheetsSettings {
            common_key_secret: self.service_account_secret.as_deref(),
            google: self.google.as_ref(),
            endpoint: &self.sheets_endpoint,
            writes_per_minute: self.writes_per_minute,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        use crate::delivery::connectors::sheets::{DEFAULT_WRITES_PER_MINUTE, GOOGLE_SHEETS_ENDPOINT};
        let delivery = DeliveryConfig::from_lookup(&lookup)?;
        let vars = Variables(lookup);
        let sheets_endpoint = vars.optional("SHEETS_API_ENDPOINT").unwrap_or_else(|| GOOGLE_SHEETS_ENDPOINT.to_owned());
        let bare = sheets_endpoint.strip_prefix("https://").or_else(|| sheets_endpoint.strip_prefix("http://"));
        if bare.is_none_or(|host| host.is_empty() || host.contains([' ', '?', '#', '@'])) {
            return Err(ConfigError::Malformed {
                name: "SHEETS_API_ENDPOINT",
                value: sheets_endpoint,
                expected: "the base URL of the Sheets API v4, such as https://sheets.googleapis.com",
            });
        }
        // Neither set is a deployment without Google Sheets: each Sheets job
        // then fails, saying so.
        let google = federation(&vars)?;
        let service_account_secret = vars.optional("GOOGLE_SERVICE_ACCOUNT_SECRET");
        Ok(Self {
            delivery,
            service_account_secret,
            google,
            sheets_endpoint,
            writes_per_minute: vars.parsed(
                "SHEETS_WRITES_PER_MINUTE",
                DEFAULT_WRITES_PER_MINUTE,
                "a whole number of write requests a minute from 1 to 300 (Google's per-project limit)",
                |n| (1..=300).contains(n),
            )?,
        })
    }
}

/// Days of runs the sweeper looks at (`SWEEP_DAYS`) unless told otherwise.
pub const DEFAULT_SWEEP_DAYS: u32 = 3;
/// Re-drives of one delivery after which the sweeper leaves it as it is
/// (`MAX_REDRIVES`): a day of hourly sweeps.
pub const DEFAULT_MAX_REDRIVES: u32 = 24;

/// Configuration of the `sweeper` function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweeperConfig {
    pub staging_bucket: String,
    /// Runs whose time is within this many days are swept.
    pub sweep_days: u32,
    pub max_redrives: u32,
}

impl SweeperConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Variables(lookup);
        Ok(Self {
            staging_bucket: vars.required("STAGING_BUCKET", "name the bucket holding manifests/, jobs/ and status/")?,
            sweep_days: vars.parsed(
                "SWEEP_DAYS",
                DEFAULT_SWEEP_DAYS,
                "a whole number of days from 1 to 30 (status objects of older runs may have expired)",
                |d| (1..=30).contains(d),
            )?,
            max_redrives: vars.parsed(
                "MAX_REDRIVES",
                DEFAULT_MAX_REDRIVES,
                "a whole number of re-drives from 0 to 1000",
                |n| *n <= 1000,
            )?,
        })
    }
}

/// Configuration of the `notify` function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub staging_bucket: String,
    pub tenant_secret_prefix: String,
    /// `TENANT_SECRETS_KMS_KEY_ID`, see [`tenant_secrets_kms_key_id`].
    pub tenant_secrets_kms_key_id: Option<String>,
    /// `WEBHOOKS_ALLOW_LOOPBACK=true`: webhooks may reach loopback
    /// addresses, and `http://127.0.0.1`; for local runs only (the template
    /// never sets it). Default `false`.
    pub webhooks_allow_loopback: bool,
    /// The verified SES identity failure notices are sent from (`SES_SENDER`).
    pub sender: String,
    /// SES configuration set of every notice (`SES_CONFIGURATION_SET`).
    pub configuration_set: Option<String>,
}

impl NotifyConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Variables(lookup);
        let sender = vars.required("SES_SENDER", "name the verified SES identity failure notices are sent from")?;
        if !crate::tenant::is_email_address(&sender) {
            return Err(ConfigError::Malformed { name: "SES_SENDER", value: sender, expected: "an email address" });
        }
        let allow_loopback = match vars.optional("WEBHOOKS_ALLOW_LOOPBACK").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Malformed {
                    name: "WEBHOOKS_ALLOW_LOOPBACK",
                    value: other.to_owned(),
                    expected: "true (local runs only) or false",
                })
            }
        };
        Ok(Self {
            staging_bucket: vars
                .required("STAGING_BUCKET", "name the bucket holding notifications/ and notification-status/")?,
            tenant_secret_prefix: tenant_secret_prefix(&vars)?,
            tenant_secrets_kms_key_id: tenant_secrets_kms_key_id(&vars)?,
            webhooks_allow_loopback: allow_loopback,
            sender,
            configuration_set: ses_configuration_set(&vars)?,
        })
    }
}

/// The default of `RANK_MEMORY_MB`: the template's `RankMemorySize`.
pub const DEFAULT_RANK_MEMORY_MB: u32 = 10_240;

/// Configuration of the `publish` function: the steps of the state machines
/// that plan a run (or a day of raw plays) and publish Athena's output
/// (docs/scaling.md, "The Athena engine"). It ranks with the same settings
/// as `rank`, so it reads rank's variables too.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    pub rank: RankConfig,
    /// `RANK_ENGINE`: the template's `RankEngine`.
    pub engine: crate::engine::RankEngineSetting,
    /// `RANK_MEMORY_MB`: the rank function's memory, which `auto` compares
    /// the catalogue with.
    pub rank_memory_mb: u32,
}

impl PublishConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let rank = RankConfig::from_lookup(&lookup)?;
        let vars = Variables(lookup);
        let engine = match vars.optional("RANK_ENGINE") {
            None => crate::engine::RankEngineSetting::default(),
            Some(value) => crate::engine::RankEngineSetting::parse(&value).ok_or(ConfigError::Malformed {
                name: "RANK_ENGINE",
                value,
                expected: crate::engine::RankEngineSetting::EXPECTED,
            })?,
        };
        let rank_memory_mb = vars.parsed(
            "RANK_MEMORY_MB",
            DEFAULT_RANK_MEMORY_MB,
            "the rank function's memory in MB, from 128 to 10240",
            |mb| (128..=10_240).contains(mb),
        )?;
        Ok(Self { rank, engine, rank_memory_mb })
    }

    /// How runs are planned with this configuration.
    pub fn plan_settings(&self) -> crate::athena::plan::PlanSettings {
        crate::athena::plan::PlanSettings {
            rules: self.rank.rules,
            engine: self.engine,
            rank_memory_mb: self.rank_memory_mb,
        }
    }

    /// How Athena's output is published with this configuration.
    pub fn publish_settings(&self) -> crate::athena::publish::PublishSettings {
        crate::athena::publish::PublishSettings {
            rules: self.rank.rules,
            part_rows: self.rank.part_rows,
            // As many ranges of parts written at once as cores, and a
            // formatting helper beside each (measured on 2 cores:
            // docs/benchmarks.md, "The publish step").
            format_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            parts_at_once: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_notifier_refuses_loopback_webhooks_unless_told_exactly_true() {
        let base = [("STAGING_BUCKET", "staging"), ("SES_SENDER", "reports@example.com")];
        let config = NotifyConfig::from_lookup(lookup(&base)).unwrap();
        assert!(!config.webhooks_allow_loopback);
        let with = |value: &str| {
            let mut pairs = base.to_vec();
            pairs.push(("WEBHOOKS_ALLOW_LOOPBACK", value));
            NotifyConfig::from_lookup(lookup(&pairs))
        };
        assert!(with("true").unwrap().webhooks_allow_loopback);
        assert!(!with("false").unwrap().webhooks_allow_loopback);
        for value in ["1", "yes", "TRUE"] {
            assert!(with(value).unwrap_err().to_string().contains("WEBHOOKS_ALLOW_LOOPBACK"), "{value}");
        }
        let error = NotifyConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s")])).unwrap_err();
        assert!(error.to_string().contains("SES_SENDER"), "{error}");
    }

    #[test]
    fn the_sweeper_defaults_and_refuses_out_of_range_settings() {
        let config = SweeperConfig::from_lookup(lookup(&[("STAGING_BUCKET", "staging")])).unwrap();
        assert_eq!((config.sweep_days, config.max_redrives), (DEFAULT_SWEEP_DAYS, DEFAULT_MAX_REDRIVES));
        for (name, value) in [("SWEEP_DAYS", "0"), ("SWEEP_DAYS", "31"), ("MAX_REDRIVES", "-1"), ("MAX_REDRIVES", "x")]
        {
            let error = SweeperConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), (name, value)])).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn defaults_apply_when_only_buckets_are_set() {
        let config =
            RankConfig::from_lookup(lookup(&[("STAGING_BUCKET", "staging"), ("DATA_BUCKET", "data")])).unwrap();
        assert_eq!(config.data_prefix, "");
        assert_eq!(config.rules, ScoringRules { lookback_days: 28, half_life_days: 7.0 });
        assert_eq!(config.part_rows, 5_000_000);
    }

    #[test]
    fn when_staging_bucket_is_missing_the_error_names_it() {
        let err = RankConfig::from_lookup(lookup(&[("DATA_BUCKET", "data")])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { name: "STAGING_BUCKET", .. }));
        assert!(err.to_string().contains("STAGING_BUCKET"));
    }

    #[test]
    fn when_a_number_is_malformed_the_error_names_variable_and_value() {
        for (name, value) in [
            ("LOOKBACK_DAYS", "0"),
            ("LOOKBACK_DAYS", "four"),
            ("HALF_LIFE_DAYS", "-1"),
            ("HALF_LIFE_DAYS", "1e-300"),
            ("HALF_LIFE_DAYS", "0.01"),
            ("HALF_LIFE_DAYS", "1e300"),
            ("PART_ROWS", "0"),
        ] {
            let err = RankConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("DATA_BUCKET", "d"), (name, value)]))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(value), "{text}");
        }
        let err = RankConfig::from_lookup(lookup(&[
            ("STAGING_BUCKET", "s"),
            ("DATA_BUCKET", "d"),
            ("HALF_LIFE_DAYS", "1e-300"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable HALF_LIFE_DAYS=\"1e-300\" is malformed: expected a number of days from 0.1 to 3650"
        );
    }

    #[test]
    fn delivery_functions_default_the_prefix_and_the_link_lifetime() {
        let config =
            EmailConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("SES_SENDER", "reports@example.com")]))
                .unwrap();
        assert_eq!(config.delivery.tenant_secret_prefix, "popularity-reports/tenants/");
        assert_eq!(config.link_ttl_seconds, 604_800);
        assert_eq!(config.link_signer_secret, None);
    }

    #[test]
    fn email_sends_with_the_configuration_set_when_one_is_named() {
        let base = [("STAGING_BUCKET", "s"), ("SES_SENDER", "reports@example.com")];
        assert_eq!(EmailConfig::from_lookup(lookup(&base)).unwrap().configuration_set, None);
        let named = [base[0], base[1], ("SES_CONFIGURATION_SET", " popularity-reports-mail ")];
        let config = EmailConfig::from_lookup(lookup(&named)).unwrap();
        assert_eq!(config.configuration_set.as_deref(), Some("popularity-reports-mail"));
        let too_long = "x".repeat(65);
        for bad in ["two words", "a/b", too_long.as_str()] {
            let error =
                EmailConfig::from_lookup(lookup(&[base[0], base[1], ("SES_CONFIGURATION_SET", bad)])).unwrap_err();
            assert!(error.to_string().contains("SES_CONFIGURATION_SET"), "{error}");
        }
    }

    #[test]
    fn gcs_requests_go_to_google_unless_an_emulator_is_named() {
        let google = GcsConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s")])).unwrap();
        assert_eq!(google.storage_endpoint, "https://storage.googleapis.com");
        let local =
            GcsConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")]))
                .unwrap();
        assert_eq!(local.storage_endpoint, "http://127.0.0.1:4443");
        let error = GcsConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("STORAGE_EMULATOR_HOST", "http://x/y")]))
            .unwrap_err();
        assert!(error.to_string().contains("STORAGE_EMULATOR_HOST"), "{error}");
    }

    #[test]
    fn sheets_defaults_to_google_and_its_quota_and_reads_either_identity() {
        let config =
            SheetsConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("GOOGLE_SERVICE_ACCOUNT_SECRET", "k")]))
                .unwrap();
        assert_eq!((config.sheets_endpoint.as_str(), config.writes_per_minute), ("https://sheets.googleapis.com", 60));
        assert_eq!((config.service_account_secret.as_deref(), config.google.is_some()), (Some("k"), false));
        // Neither: a deployment without Sheets, whose jobs fail saying so.
        let none = SheetsConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s")])).unwrap();
        assert_eq!((none.service_account_secret, none.google), (None, None));
        // Keyless needs our project, and names the variable when it is wrong.
        let external = r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws","subject_token_type":"urn:ietf:params:aws:token-type:aws4_request","token_url":"https://sts.googleapis.com/v1/token","credential_source":{"environment_id":"aws1"}}"#;
        let error =
            SheetsConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("GOOGLE_EXTERNAL_ACCOUNT_CONFIG", external)]))
                .unwrap_err();
        assert!(error.to_string().contains("GOOGLE_PROJECT_ID"), "{error}");
        let keyless = SheetsConfig::from_lookup(lookup(&[
            ("STAGING_BUCKET", "s"),
            ("GOOGLE_EXTERNAL_ACCOUNT_CONFIG", external),
            ("GOOGLE_PROJECT_ID", "our-reports"),
        ]))
        .unwrap();
        assert_eq!(keyless.google.unwrap().project_id, "our-reports");
        for (name, value) in [("SHEETS_API_ENDPOINT", "sheets.example"), ("SHEETS_WRITES_PER_MINUTE", "0")] {
            let error = SheetsConfig::from_lookup(lookup(&[
                ("STAGING_BUCKET", "s"),
                ("GOOGLE_SERVICE_ACCOUNT_SECRET", "k"),
                (name, value),
            ]))
            .unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn delivery_settings_that_cannot_work_are_refused_by_name() {
        let cases = [
            (vec![("SES_SENDER", "reports@example.com")], "STAGING_BUCKET"),
            (vec![("STAGING_BUCKET", "s")], "SES_SENDER"),
            (vec![("STAGING_BUCKET", "s"), ("SES_SENDER", "not an address")], "SES_SENDER"),
            (
                vec![("STAGING_BUCKET", "s"), ("SES_SENDER", "a@b.example"), ("LINK_TTL_SECONDS", "604801")],
                "LINK_TTL_SECONDS",
            ),
            (
                vec![("STAGING_BUCKET", "s"), ("SES_SENDER", "a@b.example"), ("TENANT_SECRET_PREFIX", "tenants")],
                "TENANT_SECRET_PREFIX",
            ),
        ];
        for (pairs, name) in cases {
            let err = EmailConfig::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn publish_reads_ranks_settings_and_refuses_an_unknown_engine_or_memory() {
        let base = [("STAGING_BUCKET", "staging"), ("DATA_BUCKET", "data")];
        let config = PublishConfig::from_lookup(lookup(&base)).unwrap();
        assert_eq!(config.engine, crate::engine::RankEngineSetting::Lambda);
        assert_eq!(config.rank_memory_mb, DEFAULT_RANK_MEMORY_MB);
        assert_eq!(config.publish_settings().part_rows, 5_000_000);
        let auto = PublishConfig::from_lookup(lookup(&[
            base[0],
            base[1],
            ("RANK_ENGINE", "auto"),
            ("RANK_MEMORY_MB", "3008"),
        ]))
        .unwrap();
        assert_eq!((auto.engine, auto.plan_settings().rank_memory_mb), (crate::engine::RankEngineSetting::Auto, 3008));
        for (name, value) in [("RANK_ENGINE", "spark"), ("RANK_MEMORY_MB", "20000"), ("RANK_MEMORY_MB", "big")] {
            let error = PublishConfig::from_lookup(lookup(&[base[0], base[1], (name, value)])).unwrap_err();
            assert!(matches!(&error, ConfigError::Malformed { name: n, .. } if *n == name), "{error}");
        }
    }
}
