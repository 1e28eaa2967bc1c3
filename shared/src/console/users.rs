//! The console's users in Cognito: the user pool as the template declares
//! it (for a local emulator, where no template is deployed — the
//! template-consistency test checks that both say the same), and inviting a
//! customer's user into a tenant or an operator into the `operators` group.
//! A user's tenant is the immutable `custom:tenantId` attribute, set once
//! by an operator here; the app client cannot write it.

use aws_sdk_cognitoidentityprovider::error::ProvideErrorMetadata;
use aws_sdk_cognitoidentityprovider::types::{
    AttributeDataType, AttributeType, DeliveryMediumType, ExplicitAuthFlowsType, MessageActionType,
    SchemaAttributeType, StringAttributeConstraintsType, UsernameAttributeType,
};
use aws_sdk_cognitoidentityprovider::Client;

use super::auth::OPERATORS_GROUP;
use crate::tenant::is_safe_id;

/// The custom attribute's name as the pool's schema declares it.
pub const TENANT_ATTRIBUTE_NAME: &str = "tenantId";
/// The auth flows the app client allows: the console's password sign-in
/// and refreshing its tokens.
pub const APP_CLIENT_AUTH_FLOWS: [&str; 2] = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"];
/// What the app client may write: never the tenant.
pub const APP_CLIENT_WRITE_ATTRIBUTES: [&str; 2] = ["email", "name"];
/// What the app client may read.
pub const APP_CLIENT_READ_ATTRIBUTES: [&str; 4] = ["email", "email_verified", "name", "custom:tenantId"];

/// A pool and its app client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPool {
    pub user_pool_id: String,
    pub client_id: String,
}

/// A Cognito call failed. Names the user, never a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("{0:?} is not a tenant id (lowercase letters, digits and '-')")]
    BadTenant(String),
    #[error("Cognito {operation} for {subject} failed: {detail}")]
    Service { operation: &'static str, subject: String, detail: String },
}

fn service<E>(
    operation: &'static str,
    subject: &str,
    error: aws_sdk_cognitoidentityprovider::error::SdkError<E>,
) -> UsersError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    UsersError::Service { operation, subject: subject.to_owned(), detail: crate::aws_errors::one_line(&error) }
}

/// Creates a user pool as the template declares `ConsoleUserPool`, with its
/// app client and the `operators` group: for a local emulator.
pub async fn create_user_pool(client: &Client, name: &str) -> Result<UserPool, UsersError> {
    let tenant = SchemaAttributeType::builder()
        .name(TENANT_ATTRIBUTE_NAME)
        .attribute_data_type(AttributeDataType::String)
        .mutable(false)
        .string_attribute_constraints(
            StringAttributeConstraintsType::builder().min_length("1").max_length("63").build(),
        )
        .build();
    let pool = client
        .create_user_pool()
        .pool_name(name)
        .username_attributes(UsernameAttributeType::Email)
        .schema(tenant)
        .send()
        .await
        .map_err(|error| service("CreateUserPool", name, error))?;
    let user_pool_id = pool.user_pool().and_then(|p| p.id()).unwrap_or_default().to_owned();
    let app = client
        .create_user_pool_client()
        .user_pool_id(&user_pool_id)
        .client_name(format!("{name}-console"))
        .generate_secret(false)
        .set_explicit_auth_flows(Some(
            APP_CLIENT_AUTH_FLOWS.iter().map(|flow| ExplicitAuthFlowsType::from(*flow)).collect(),
        ))
        .set_write_attributes(Some(APP_CLIENT_WRITE_ATTRIBUTES.iter().map(|a| (*a).to_owned()).collect()))
        .set_read_attributes(Some(APP_CLIENT_READ_ATTRIBUTES.iter().map(|a| (*a).to_owned()).collect()))
        .send()
        .await
        .map_err(|error| service("CreateUserPoolClient", name, error))?;
    let client_id = app.user_pool_client().and_then(|c| c.client_id()).unwrap_or_default().to_owned();
    client
        .create_group()
        .user_pool_id(&user_pool_id)
        .group_name(OPERATORS_GROUP)
        .description("May act on every tenant in the self-service console")
        .send()
        .await
        .map_err(|error| service("CreateGroup", OPERATORS_GROUP, error))?;
    Ok(UserPool { user_pool_id, client_id })
}

/// Who is invited, and how they get their first password.
#[derive(Clone)]
pub struct Invitation<'a> {
    pub email: &'a str,
    /// The tenant the user belongs to; `None` for an operator.
    pub tenant_id: Option<&'a str>,
    pub operator: bool,
    /// A permanent password set now, with no invitation mail (local
    /// demos); otherwise Cognito mails a temporary one, to be changed at
    /// first sign-in.
    pub password: Option<&'a str>,
}

impl std::fmt::Debug for Invitation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("email", &self.email)
            .field("tenant_id", &self.tenant_id)
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// Creates the user of `invitation` in `user_pool_id`.
pub async fn invite(client: &Client, user_pool_id: &str, invitation: &Invitation<'_>) -> Result<(), UsersError> {
    let email = invitation.email;
    let mut attributes = vec![
        AttributeType::builder().name("email").value(email).build().expect("a name is set"),
        AttributeType::builder().name("email_verified").value("true").build().expect("a name is set"),
    ];
    if let Some(tenant) = invitation.tenant_id {
        if !is_safe_id(tenant) {
            return Err(UsersError::BadTenant(tenant.to_owned()));
        }
        attributes.push(AttributeType::builder().name("custom:tenantId").value(tenant).build().expect("a name is set"));
    }
    let mut create =
        client.admin_create_user().user_pool_id(user_pool_id).username(email).set_user_attributes(Some(attributes));
    create = match invitation.password {
        Some(_) => create.message_action(MessageActionType::Suppress),
        None => create.desired_delivery_mediums(DeliveryMediumType::Email),
    };
    create.send().await.map_err(|error| service("AdminCreateUser", email, error))?;
    if let Some(password) = invitation.password {
        client
            .admin_set_user_password()
            .user_pool_id(user_pool_id)
            .username(email)
            .password(password)
            .permanent(true)
            .send()
            .await
            .map_err(|error| service("AdminSetUserPassword", email, error))?;
    }
    if invitation.operator {
        client
            .admin_add_user_to_group()
            .user_pool_id(user_pool_id)
            .username(email)
            .group_name(OPERATORS_GROUP)
            .send()
            .await
            .map_err(|error| service("AdminAddUserToGroup", email, error))?;
    }
    Ok(())
}
