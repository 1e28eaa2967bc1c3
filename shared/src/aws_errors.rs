//! One line per AWS SDK error (issue: "one line per error"): the SDK's own
//! `Display` says only "service error", and its full context form carries a
//! multi-line `Debug` dump of the response. Status objects and log lines get
//! the error code, message, HTTP status and request id instead, cut to a
//! sane length; errors without a service response (a timeout, a refused
//! connection, credentials that could not be loaded) get their context chain
//! on one line.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The longest detail kept from one error.
const MAX_DETAIL_CHARS: usize = 600;

/// `code: message (HTTP status, request id …)` for a service error, the
/// context chain for anything else; one line, at most [`MAX_DETAIL_CHARS`].
pub fn one_line<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let text = match error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            let mut text = format!(
                "{}: {}",
                service_error.code().unwrap_or("unknown error"),
                service_error.message().unwrap_or("no message")
            );
            let status = context.raw().status_code();
            let request_id =
                service_error.meta().extra("aws_request_id").or_else(|| service_error.meta().extra("request_id"));
            match (status, request_id) {
                (Some(status), Some(id)) => text.push_str(&format!(" (HTTP {status}, request id {id})")),
                (Some(status), None) => text.push_str(&format!(" (HTTP {status})")),
                _ => {}
            }
            text
        }
        other => display_chain(other),
    };
    cut(&text.replace(['\n', '\r'], " "))
}

/// Each error of the chain by its `Display`, joined by `: ` — what
/// `DisplayErrorContext` writes, without the `Debug` dump of the outermost
/// error it appends in parentheses (`(TimeoutError(TimeoutError { … }))`).
pub fn display_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let next_text = next.to_string();
        // Some errors repeat their source's text in their own.
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}

/// `text` cut to [`MAX_DETAIL_CHARS`] characters.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// The HTTP status of a raw response, when it has one.
pub trait HasStatus {
    fn status_code(&self) -> Option<u16>;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// The error code of a service error, if the service answered with one.
pub fn code<E, R>(error: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    error.as_service_error().and_then(ProvideErrorMetadata::code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_smithy_runtime_api::http::Response;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    #[test]
    fn a_service_error_is_its_code_message_and_status_on_one_line() {
        let metadata = ErrorMetadata::builder().code("AccessDenied").message("no\nway").build();
        let response = Response::new(403.try_into().unwrap(), SdkBody::empty());
        let error = SdkError::service_error(PutObjectError::generic(metadata), response);
        assert_eq!(one_line(&error), "AccessDenied: no way (HTTP 403)");
        assert_eq!(code(&error), Some("AccessDenied"));
    }

    #[test]
    fn an_error_without_a_response_is_its_chain_of_messages_without_a_debug_dump() {
        let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out after 30s");
        let error: SdkError<PutObjectError, Response> = SdkError::timeout_error(source);
        let text = one_line(&error);
        assert_eq!(text, "request has timed out: read timed out after 30s");
        assert!(!text.contains('(') && !text.contains('{'), "{text}");
    }

    #[test]
    fn long_details_are_cut() {
        let long = "x".repeat(5_000);
        assert_eq!(cut(&long).chars().count(), MAX_DETAIL_CHARS + 1);
        assert_eq!(cut("short"), "short");
    }
}
