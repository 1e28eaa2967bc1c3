//! Signing in to the console with Cognito's own password flow
//! (`USER_PASSWORD_AUTH`), and setting the permanent password an invited
//! user must choose on first sign-in (`NEW_PASSWORD_REQUIRED`). The
//! console's page posts here because its Content-Security-Policy lets it
//! talk to its own origin only; Cognito checks the password, and the page
//! keeps the ID token it returns. No password or token is ever logged or
//! stored here.

use aws_sdk_cognitoidentityprovider::error::ProvideErrorMetadata;
use aws_sdk_cognitoidentityprovider::types::{AuthFlowType, ChallengeNameType};
use aws_sdk_cognitoidentityprovider::Client;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Credentials typed into the sign-in page.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignInRequest {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest").field("email", &self.email).finish_non_exhaustive()
    }
}

/// The new password of an invited user, with the session of the challenge.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewPasswordRequest {
    pub email: String,
    pub session: String,
    pub new_password: String,
}

/// What signing in gave: tokens, or the challenge to answer first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInAnswer {
    /// The Cognito ID token to send as `Authorization: Bearer`.
    pub id_token: Option<String>,
    pub expires_in: Option<i32>,
    /// `NEW_PASSWORD_REQUIRED` for an invited user's first sign-in.
    pub challenge: Option<String>,
    /// Answer the challenge with this session.
    pub session: Option<String>,
}

impl std::fmt::Debug for SignInAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInAnswer").field("challenge", &self.challenge).finish_non_exhaustive()
    }
}

/// Why signing in did not work. Never holds a password or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("the email address or password is wrong")]
    Refused,
    #[error("the password is not acceptable: {0}")]
    BadPassword(String),
    #[error("Cognito could not be reached: {0}")]
    Service(String),
}

/// Cognito's user pool app client.
#[derive(Debug, Clone)]
pub struct CognitoSignIn {
    client: Client,
    client_id: String,
}

impl CognitoSignIn {
    pub fn new(client: Client, client_id: impl Into<String>) -> Self {
        CognitoSignIn { client, client_id: client_id.into() }
    }

    pub async fn sign_in(&self, request: &SignInRequest) -> Result<SignInAnswer, SignInError> {
        let output = self
            .client
            .initiate_auth()
            .auth_flow(AuthFlowType::UserPasswordAuth)
            .client_id(&self.client_id)
            .auth_parameters("USERNAME", &request.email)
            .auth_parameters("PASSWORD", &request.password)
            .send()
            .await
            .map_err(refusal)?;
        Ok(answer(output.authentication_result(), output.challenge_name(), output.session()))
    }

    pub async fn new_password(&self, request: &NewPasswordRequest) -> Result<SignInAnswer, SignInError> {
        let output = self
            .client
            .respond_to_auth_challenge()
            .client_id(&self.client_id)
            .challenge_name(ChallengeNameType::NewPasswordRequired)
            .session(&request.session)
            .challenge_responses("USERNAME", &request.email)
            .challenge_responses("NEW_PASSWORD", &request.new_password)
            .send()
            .await
            .map_err(refusal)?;
        Ok(answer(output.authentication_result(), output.challenge_name(), output.session()))
    }
}

fn answer(
    result: Option<&aws_sdk_cognitoidentityprovider::types::AuthenticationResultType>,
    challenge: Option<&ChallengeNameType>,
    session: Option<&str>,
) -> SignInAnswer {
    SignInAnswer {
        id_token: result.and_then(|r| r.id_token()).map(str::to_owned),
        expires_in: result.map(|r| r.expires_in()),
        challenge: challenge.map(|c| c.as_str().to_owned()),
        session: session.map(str::to_owned),
    }
}

fn refusal<E>(error: aws_sdk_cognitoidentityprovider::error::SdkError<E>) -> SignInError
where
    E: aws_sdk_cognitoidentityprovider::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error.code() {
        Some("NotAuthorizedException" | "UserNotFoundException" | "UserNotConfirmedException") => SignInError::Refused,
        Some("InvalidPasswordException" | "InvalidParameterException") => {
            SignInError::BadPassword(error.message().unwrap_or("see the pool's password policy").to_owned())
        }
        _ => SignInError::Service(crate::aws_errors::one_line(&error)),
    }
}
