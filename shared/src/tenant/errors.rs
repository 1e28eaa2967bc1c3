//! What is wrong with a tenant secret: one [`FieldError`] per problem, each
//! naming the path of its field (`feeds[1].connector`), collected into
//! [`TenantErrors`] so an operator fixes a broken secret in one pass.
//! Messages describe a credential's JSON type, never its value.

use std::fmt;

/// One problem with one field of a tenant secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// `tenantId`, `connectors.lake.roleArn`, `feeds[1].reports[0]`, or
    /// `(root)` for the document as a whole.
    pub path: String,
    pub message: String,
}

/// Every problem found in a tenant secret, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantErrors {
    pub(super) errors: Vec<FieldError>,
}

impl TenantErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a TenantErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// All errors on one line, separated by `; ` (a log line or status object).
impl fmt::Display for TenantErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TenantErrors {}

/// The problems found so far while parsing one document.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<FieldError>);

impl Problems {
    pub(super) fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError { path: path.to_owned(), message: message.into() });
    }
}
