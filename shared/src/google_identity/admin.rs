//! The onboarding side of keyless Google: create a tenant's service account
//! in our project through the IAM API (creating it again is a no-op), and
//! bind `roles/iam.serviceAccountTokenCreator` on that one account to our
//! deliverers' federated principal sets, so nothing else can act as it.
//! The caller is the onboarding command, itself federated from its AWS
//! role; its principal needs `roles/iam.serviceAccountAdmin` on the project
//! (docs/operations.md gives the `gcloud` commands).

use google_cloud_auth::credentials::Credentials;
use serde_json::{json, Value};

use super::account::{tenant_account_id, tenant_service_account};
use crate::aws_errors::cut;

/// The role that lets a principal mint tokens of a service account.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
/// Concurrent policy edits lost to another writer are retried this often.
const POLICY_ATTEMPTS: u32 = 5;

/// Onboarding could not create or bind a tenant's account.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Google IAM refused {operation} for {account} (HTTP {status}): {message}{hint}")]
    Refused { operation: &'static str, account: String, status: u16, message: String, hint: &'static str },
    #[error("Google IAM did not answer {operation} for {account}: {detail}")]
    Unavailable { operation: &'static str, account: String, detail: String },
    #[error("the federated credentials of this command were refused: {0}")]
    Federation(String),
}

/// The IAM API of our project, as the onboarding command calls it.
pub struct GoogleIamAdmin {
    http: reqwest::Client,
    iam_endpoint: String,
    project_id: String,
    caller: Credentials,
}

impl GoogleIamAdmin {
    pub fn new(iam_endpoint: &str, project_id: &str, caller: Credentials) -> GoogleIamAdmin {
        GoogleIamAdmin {
            http: super::http::google_http_client(),
            iam_endpoint: iam_endpoint.trim_end_matches('/').to_owned(),
            project_id: project_id.to_owned(),
            caller,
        }
    }

    /// Creates `tenant_id`'s account unless it exists, and makes `members`
    /// (our deliverers' principal sets) its only Token Creators besides any
    /// already bound. Returns its address.
    pub async fn ensure_tenant_identity(&self, tenant_id: &str, members: &[String]) -> Result<String, AdminError> {
        let account = tenant_service_account(tenant_id, &self.project_id);
        let create = json!({
            "accountId": tenant_account_id(tenant_id),
            "serviceAccount": {
                "displayName": format!("popularity reports: {tenant_id}"),
                "description": format!("Writes popularity reports for tenant {tenant_id}; only our deliverers may act as it."),
            }
        });
        let url = format!("{}/v1/projects/{}/serviceAccounts", self.iam_endpoint, self.project_id);
        let (status, answer) = self.call("create the service account", &account, &url, &create).await?;
        match status {
            200 => {}
            409 => {} // it exists: creating again changes nothing
            _ => return Err(refused("create the service account", &account, status, &answer)),
        }
        let resource = format!("{}/v1/projects/{}/serviceAccounts/{account}", self.iam_endpoint, self.project_id);
        for _ in 0..POLICY_ATTEMPTS {
            let (status, policy) =
                self.call("read the IAM policy", &account, &format!("{resource}:getIamPolicy"), &json!({})).await?;
            if status != 200 {
                return Err(refused("read the IAM policy", &account, status, &policy));
            }
            let Some(updated) = with_token_creators(policy, members) else { return Ok(account) };
            let (status, answer) = self
                .call("set the IAM policy", &account, &format!("{resource}:setIamPolicy"), &json!({"policy": updated}))
                .await?;
            match status {
                200 => return Ok(account),
                409 => continue, // another writer changed it: read again
                _ => return Err(refused("set the IAM policy", &account, status, &answer)),
            }
        }
        Err(AdminError::Unavailable {
            operation: "set the IAM policy",
            account,
            detail: format!("it kept changing under us ({POLICY_ATTEMPTS} attempts)"),
        })
    }

    async fn call(
        &self,
        operation: &'static str,
        account: &str,
        url: &str,
        body: &Value,
    ) -> Result<(u16, Value), AdminError> {
        let headers = super::http::authorization_headers(&self.caller)
            .await
            .map_err(|(_, reason)| AdminError::Federation(reason))?;
        let response = self.http.post(url).headers(headers).json(body).send().await.map_err(|e| {
            AdminError::Unavailable { operation, account: account.to_owned(), detail: cut(&e.to_string()) }
        })?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

fn refused(operation: &'static str, account: &str, status: u16, answer: &Value) -> AdminError {
    let message = answer["error"]["message"].as_str().map(cut).unwrap_or_else(|| format!("HTTP {status}"));
    let quota = message.to_ascii_lowercase().contains("quota") || message.contains("limit");
    let hint = match status {
        403 => " (the onboarding principal needs roles/iam.serviceAccountAdmin on our project: docs/operations.md)",
        429 => " (the project's service-account quota, 100 by default: raise it or use another project)",
        _ if quota => " (the project's service-account quota, 100 by default: raise it or use another project)",
        _ => "",
    };
    AdminError::Refused { operation, account: account.to_owned(), status, message, hint }
}

/// `policy` with every member of `members` bound to the Token Creator role,
/// or `None` when they all already are.
fn with_token_creators(mut policy: Value, members: &[String]) -> Option<Value> {
    if !policy.is_object() {
        policy = json!({});
    }
    let bindings = policy.as_object_mut()?.entry("bindings").or_insert_with(|| json!([]));
    let list = bindings.as_array_mut()?;
    let index = match list.iter().position(|b| b["role"] == TOKEN_CREATOR_ROLE) {
        Some(index) => index,
        None => {
            list.push(json!({"role": TOKEN_CREATOR_ROLE, "members": []}));
            list.len() - 1
        }
    };
    let bound = list[index].as_object_mut()?.entry("members").or_insert_with(|| json!([])).as_array_mut()?;
    let missing: Vec<&String> = members.iter().filter(|m| !bound.iter().any(|b| b == *m)).collect();
    if missing.is_empty() {
        return None;
    }
    bound.extend(missing.into_iter().map(|m| Value::String(m.clone())));
    Some(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_creators_are_added_once_and_other_bindings_kept() {
        let members = vec!["principalSet://a".to_owned(), "principalSet://b".to_owned()];
        let policy = json!({"etag": "e1", "bindings": [{"role": "roles/viewer", "members": ["user:x@y"]}]});
        let updated = with_token_creators(policy, &members).unwrap();
        assert_eq!(updated["etag"], "e1");
        assert_eq!(updated["bindings"][0]["role"], "roles/viewer");
        assert_eq!(updated["bindings"][1], json!({"role": TOKEN_CREATOR_ROLE, "members": members}));
        assert_eq!(with_token_creators(updated, &members), None);
        let empty = with_token_creators(json!({"version": 1, "etag": "e"}), &members[..1]).unwrap();
        assert_eq!(empty["bindings"][0]["members"], json!(["principalSet://a"]));
    }
}
