//! `popularity portal`: the console's users in Cognito. `invite` creates a
//! customer's user bound to one tenant (Cognito mails a temporary password,
//! to be changed at first sign-in); `invite-operator` one who may act on
//! every tenant; `create-pool` makes a user pool as the template declares
//! it, for a local emulator where no stack is deployed. The pool is
//! `COGNITO_USER_POOL_ID` (the stack's output ConsoleUserPoolId). Prints
//! names and ids, never a password.

use std::io::Read;

use anyhow::Context;
use clap::{Args, Subcommand};
use popularity_reports::console::users::{create_user_pool, invite, Invitation};
use popularity_reports::tenant::is_safe_id;

#[derive(Args)]
pub struct PortalArgs {
    #[command(subcommand)]
    command: PortalCommand,
}

#[derive(Subcommand)]
enum PortalCommand {
    /// Invite a customer's user into a tenant: `invite <tenantId> <email>`.
    Invite(InviteArgs),
    /// Invite an operator, who may act on every tenant.
    InviteOperator(OperatorArgs),
    /// Create a user pool as the template does (local emulators); prints its ids as JSON.
    CreatePool(CreatePoolArgs),
}

#[derive(Args)]
struct PoolOption {
    /// The user pool (the stack's output ConsoleUserPoolId).
    #[arg(long, env = "COGNITO_USER_POOL_ID")]
    user_pool_id: String,
    /// Read a permanent password from standard input and send no invitation
    /// mail (local demos and tests).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args)]
struct InviteArgs {
    tenant_id: String,
    email: String,
    #[command(flatten)]
    pool: PoolOption,
}

#[derive(Args)]
struct OperatorArgs {
    email: String,
    #[command(flatten)]
    pool: PoolOption,
}

#[derive(Args)]
struct CreatePoolArgs {
    /// The pool's name.
    #[arg(long, default_value = "popularity-reports-console")]
    name: String,
}

fn password(pool: &PoolOption) -> anyhow::Result<Option<String>> {
    if !pool.password_stdin {
        return Ok(None);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the password from standard input")?;
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "--password-stdin: standard input held no password");
    Ok(Some(password))
}

pub async fn portal(args: PortalArgs) -> anyhow::Result<()> {
    {
        let aws = popularity_reports::sdk_config::load_sdk_config().await;
        let client = aws_sdk_cognitoidentityprovider::Client::new(&aws);
        match args.command {
            PortalCommand::Invite(args) => {
                anyhow::ensure!(is_safe_id(&args.tenant_id), "{:?} is not a tenant id", args.tenant_id);
                let password = password(&args.pool)?;
                let invitation = Invitation {
                    email: &args.email,
                    tenant_id: Some(&args.tenant_id),
                    operator: false,
                    password: password.as_deref(),
                };
                invite(&client, &args.pool.user_pool_id, &invitation).await?;
                println!("invited {} into tenant {}", args.email, args.tenant_id);
            }
            PortalCommand::InviteOperator(args) => {
                let password = password(&args.pool)?;
                let invitation =
                    Invitation { email: &args.email, tenant_id: None, operator: true, password: password.as_deref() };
                invite(&client, &args.pool.user_pool_id, &invitation).await?;
                println!("invited operator {}", args.email);
            }
            PortalCommand::CreatePool(args) => {
                let pool = create_user_pool(&client, &args.name).await?;
                println!("{}", serde_json::json!({"userPoolId": pool.user_pool_id, "clientId": pool.client_id}));
            }
        }
        Ok(())
    }
}
