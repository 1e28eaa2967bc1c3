//! The delivery email (docs/design.md, "Delivery rules"): one message per run per feed, plain text
//! and HTML, listing each report with its row count, size and a download
//! link per part, and stating exactly when the links expire. Built here as
//! data and as a MIME message; sent through the narrow [`MailSender`] port,
//! whose SES adapter uses `SendRawEmail` so both bodies arrive intact. The
//! recipients are named once, in the `To:` header, and not again as the
//! call's `Destinations`: SES allows 50 recipients a message, and the 50
//! addresses a tenant may list must be 50 recipients wherever they are
//! counted (docs/delivery.md, deliver-email, "Recipients").

use std::fmt::Write as _;
use std::future::Future;

use aws_sdk_ses::error::SdkError;
use aws_sdk_ses::operation::send_raw_email::SendRawEmailError;
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::RawMessage;

use crate::aws_errors::one_line;
use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::links::redacted_url;
use crate::delivery::error::{ConnectorFailure, DeliveryError};
use crate::delta::FileKind;
use crate::domain::{Encoding, ReportKind, RunId};

/// A message ready to send. Its `Debug` shows the sender, subject and
/// sizes only: the bodies carry presigned links (bearer credentials) and
/// the recipients are a tenant's people.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailMessage {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// One downloadable part, as listed in the email. Its `Debug` shows the
/// link through [`redacted_url`] (object and expiry, never the signature).
#[derive(Clone, PartialEq, Eq)]
pub struct LinkedPart {
    /// `upsert` for a full report's parts and a delta's changed items,
    /// `removed` for a delta's removed ids.
    pub kind: FileKind,
    pub url: String,
    pub rows: u64,
    pub bytes: u64,
}

impl std::fmt::Debug for EmailMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailMessage")
            .field("from", &self.from)
            .field("recipients", &self.to.len())
            .field("subject", &self.subject)
            .field("text_bytes", &self.text.len())
            .field("html_bytes", &self.html.len())
            .finish()
    }
}

impl std::fmt::Debug for LinkedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkedPart")
            .field("kind", &self.kind)
            .field("url", &redacted_url(&self.url))
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// One report, as listed in the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedReport {
    pub kind: ReportKind,
    pub rows: u64,
    pub parts: Vec<LinkedPart>,
}

/// What the email says about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEmail<'a> {
    pub tenant_id: &'a str,
    pub feed_id: &'a str,
    pub run_id: RunId,
    pub encoding: Encoding,
    /// Set for a delta delivery: the run it is against.
    pub base_run_id: Option<RunId>,
    pub reports: Vec<LinkedReport>,
    pub sent_at: DateTime<Utc>,
    pub links_expire_at: DateTime<Utc>,
    /// Set when the links expire sooner than the configured lifetime (signed
    /// with short-lived credentials); the email then says so.
    pub shortened_expiry: bool,
}

/// `12.3 MB`, `999 B`: decimal units, as download tools show them.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn lifetime_text(from: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let seconds = (until - from).num_seconds().max(0);
    if seconds >= 86_400 && seconds % 86_400 == 0 {
        let days = seconds / 86_400;
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    } else if seconds >= 3_600 && seconds % 3_600 == 0 {
        let hours = seconds / 3_600;
        format!("{hours} hour{}", if hours == 1 { "" } else { "s" })
    } else if seconds >= 3_600 {
        format!("{:.1} hours", seconds as f64 / 3_600.0)
    } else {
        format!("{} minutes", seconds / 60)
    }
}

pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// How a part is named in the email: `part 2`, `removed ids 1`.
fn part_label(kind: FileKind, number: usize) -> String {
    match kind {
        FileKind::Upsert => format!("part {number}"),
        FileKind::Removed => format!("removed ids {number}"),
    }
}

impl LinkedReport {
    /// Each part with its label, numbered within its kind.
    fn labelled_parts(&self) -> impl Iterator<Item = (String, &LinkedPart)> {
        let mut counts = [0usize; 2];
        self.parts.iter().map(move |part| {
            let count = &mut counts[usize::from(part.kind == FileKind::Removed)];
            *count += 1;
            (part_label(part.kind, *count), part)
        })
    }

    fn rows_of(&self, kind: FileKind) -> u64 {
        self.parts.iter().filter(|p| p.kind == kind).map(|p| p.rows).sum()
    }
}

impl ReportEmail<'_> {
    pub fn subject(&self) -> String {
        let delta = match self.base_run_id {
            Some(base) => format!(" (delta against {base})"),
            None => String::new(),
        };
        format!("Popularity reports {}{delta} for {} ({})", self.run_id, self.tenant_id, self.feed_id)
    }

    /// For a delta: what it is and how to apply it.
    fn delta_sentence(&self) -> Option<String> {
        self.base_run_id.map(|base| {
            format!(
                "This is a delta against run {base}: the part files hold every item that is new or whose \
                 searchRank or searchModifier changed since that run, the removed files the ids that are gone. \
                 Upsert the parts by id and delete the removed ids in your copy of run {base}'s reports to get \
                 this run's full reports."
            )
        })
    }

    /// `12 rows` or, for a delta, `12 rows in this run; delta: 3 new or changed, 1 removed`.
    fn rows_text(&self, report: &LinkedReport) -> String {
        match self.base_run_id {
            None => format!("{} rows", report.rows),
            Some(_) => format!(
                "{} rows in this run; delta: {} new or changed, {} removed",
                report.rows,
                report.rows_of(FileKind::Upsert),
                report.rows_of(FileKind::Removed)
            ),
        }
    }

    fn expiry_sentence(&self) -> String {
        let when = self.links_expire_at.format("%Y-%m-%d %H:%M UTC");
        let lifetime = lifetime_text(self.sent_at, self.links_expire_at);
        if self.shortened_expiry {
            format!(
                "The links expire at {when} ({lifetime} after this email), sooner than usual: they were signed with \
                 short-lived credentials. Ask us to resend them if you need more time."
            )
        } else {
            format!("The links expire at {when} ({lifetime} after this email).")
        }
    }

    /// The plain-text body.
    pub fn text(&self) -> String {
        let mut text = format!(
            "Popularity reports of run {} for tenant {}, feed {} ({}).\n\n",
            self.run_id,
            self.tenant_id,
            self.feed_id,
            self.encoding.extension()
        );
        if let Some(sentence) = self.delta_sentence() {
            text.push_str(&sentence);
            text.push_str("\n\n");
        }
        for report in &self.reports {
            let bytes: u64 = report.parts.iter().map(|p| p.bytes).sum();
            let _ = writeln!(
                text,
                "{}: {}, {} in {} file{}",
                report.kind.data_type(),
                self.rows_text(report),
                human_bytes(bytes),
                report.parts.len(),
                if report.parts.len() == 1 { "" } else { "s" }
            );
            for (label, part) in report.labelled_parts() {
                let _ = writeln!(text, "  {label}: {} rows, {}\n  {}", part.rows, human_bytes(part.bytes), part.url);
            }
            text.push('\n');
        }
        text.push_str(&self.expiry_sentence());
        text.push('\n');
        text
    }

    /// The HTML body, with the same content.
    pub fn html(&self) -> String {
        let mut html = format!(
            "<!DOCTYPE html><html><body><p>Popularity reports of run <b>{}</b> for tenant <b>{}</b>, feed <b>{}</b> ({}).</p>",
            self.run_id,
            html_escape(self.tenant_id),
            html_escape(self.feed_id),
            self.encoding.extension()
        );
        if let Some(sentence) = self.delta_sentence() {
            let _ = write!(html, "<p>{}</p>", html_escape(&sentence));
        }
        for report in &self.reports {
            let _ = write!(html, "<p>{}: {}</p>", report.kind.data_type(), html_escape(&self.rows_text(report)));
        }
        html.push_str("<table><tr><th>Report</th><th>File</th><th>Rows</th><th>Size</th><th>Link</th></tr>");
        for report in &self.reports {
            for (label, part) in report.labelled_parts() {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}\">download</a></td></tr>",
                    report.kind.data_type(),
                    label,
                    part.rows,
                    human_bytes(part.bytes),
                    html_escape(&part.url)
                );
            }
        }
        html.push_str("</table>");
        let _ = write!(html, "<p>{}</p></body></html>", html_escape(&self.expiry_sentence()));
        html
    }

    pub fn message(&self, from: &str, to: &[String]) -> EmailMessage {
        EmailMessage {
            from: from.to_owned(),
            to: to.to_vec(),
            subject: self.subject(),
            text: self.text(),
            html: self.html(),
        }
    }
}

/// Wraps base64 text at 76 characters, as MIME requires.
fn base64_lines(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// `text` with every email address in it replaced: one of `recipients`
/// (compared without regard to case, as mail providers echo addresses in
/// their own case) by `<recipient>`, any other by `<address>`. A provider's
/// error may quote addresses — SES's sandbox check lists every unverified
/// one — and status objects and logs must not collect a tenant's recipient
/// list, in whatever form the provider wrote it.
pub fn redact_addresses(text: &str, recipients: &[String]) -> String {
    // Characters of an address's local part as providers print them; quotes,
    // '/', ':' and '=' stay outside so `identity/a@b.example` or
    // `'a@b.example'` keep their surroundings.
    let is_local = |c: char| c.is_alphanumeric() || ".+_%-!#$*^~".contains(c);
    let is_domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let listed = |address: &str| recipients.iter().any(|r| r.trim().to_lowercase() == address.to_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let (before, after) = (&rest[..at], &rest[at + 1..]);
        let local_start =
            before.char_indices().rev().take_while(|(_, c)| is_local(*c)).last().map_or(before.len(), |(i, _)| i);
        let domain_end = after.char_indices().find(|(_, c)| !is_domain(*c)).map_or(after.len(), |(i, _)| i);
        let domain = after[..domain_end].trim_end_matches(['.', '-']);
        let local = &before[local_start..];
        if local.is_empty() || !domain.contains('.') {
            out.push_str(&rest[..=at]);
            rest = after;
            continue;
        }
        out.push_str(&before[..local_start]);
        out.push_str(if listed(&format!("{local}@{domain}")) { "<recipient>" } else { "<address>" });
        rest = &after[domain.len()..];
    }
    out.push_str(rest);
    out
}

/// What a failed `SendRawEmail` leaves in the status and the log: the SES
/// error on one line, with every address in it redacted.
fn send_failure<R>(from: &str, error: &SdkError<SendRawEmailError, R>, recipients: &[String]) -> MailError
where
    R: std::fmt::Debug + crate::aws_errors::HasStatus,
{
    MailError {
        from: from.to_owned(),
        detail: format!("SES SendRawEmail: {}", redact_addresses(&one_line(error), recipients)),
    }
}

/// The message as `multipart/alternative` MIME (text first, then HTML),
/// bodies in base64 so no line-length limit applies to long links. The `To:`
/// header is folded, one address a line, so 50 long addresses stay within
/// RFC 5322's 998 characters a line.
pub fn to_mime(message: &EmailMessage, boundary: &str) -> String {
    let subject = if message.subject.is_ascii() {
        message.subject.clone()
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(&message.subject))
    };
    let mut mime = String::new();
    let _ = write!(
        mime,
        "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n",
        message.from,
        message.to.join(",\r\n ")
    );
    for (content_type, body) in [("text/plain", &message.text), ("text/html", &message.html)] {
        let _ = write!(
            mime,
            "--{boundary}\r\nContent-Type: {content_type}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(body.as_bytes())
        );
    }
    let _ = write!(mime, "--{boundary}--\r\n");
    mime
}

/// Sends a message; returns the provider's message id.
pub trait MailSender: Send + Sync {
    fn send(&self, message: &EmailMessage) -> impl Future<Output = Result<String, MailError>> + Send;
}

/// A message was not accepted for sending. The detail is the provider's
/// error on one line; it never lists the recipients.
#[derive(Debug, thiserror::Error)]
#[error("sending the email from {from} failed: {detail}")]
pub struct MailError {
    pub from: String,
    pub detail: String,
}

/// A refused message may be accepted later (throttling, a quota, an
/// identity the operator verifies): always transient.
impl From<MailError> for DeliveryError {
    fn from(error: MailError) -> Self {
        DeliveryError::Connector(ConnectorFailure::transient(error))
    }
}

/// Amazon SES (`SendRawEmail`). The recipients are those of the message's
/// `To:` header: no `Destinations` are sent, so each address is one
/// recipient (SES counts at most 50 a message; a recipient named both in
/// `Destinations` and in the header would count twice where both are added
/// up, as the emulator does).
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_ses::Client,
    /// Sent as `ConfigurationSetName` (`SES_CONFIGURATION_SET`): SES then
    /// publishes the message's bounces and complaints to its destinations.
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self { client: aws_sdk_ses::Client::new(config), configuration_set: None }
    }

    /// Sends every message with `configuration_set`, or with none.
    pub fn with_configuration_set(mut self, configuration_set: Option<String>) -> Self {
        self.configuration_set = configuration_set;
        self
    }
}

impl MailSender for SesMailer {
    async fn send(&self, message: &EmailMessage) -> Result<String, MailError> {
        let failed = |detail: String| MailError { from: message.from.clone(), detail };
        let boundary = format!("popularity-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default());
        let raw = RawMessage::builder()
            .data(Blob::new(to_mime(message, &boundary)))
            .build()
            .map_err(|e| failed(format!("could not build the raw message: {e}")))?;
        let sent = self
            .client
            .send_raw_email()
            .source(&message.from)
            .raw_message(raw)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| send_failure(&message.from, &e, &message.to))?;
        Ok(sent.message_id().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_never_carry_the_recipient_list() {
        let recipients = vec!["data@acme.example".to_owned(), "ops@acme.example".to_owned()];
        let text = "MessageRejected: Email address is not verified: data@acme.example, ops@acme.example";
        assert_eq!(
            redact_addresses(text, &recipients),
            "MessageRejected: Email address is not verified: <recipient>, <recipient>"
        );
        // In the provider's own case, quoted, in an ARN, or not listed at all.
        let text = "identities failed: 'Data@ACME.example', arn:aws:ses:us-east-1:1:identity/ops@acme.example; \
                    bounce: other.person+tag@sub.acme.example. Done @ 3 p.m.";
        assert_eq!(
            redact_addresses(text, &recipients),
            "identities failed: '<recipient>', arn:aws:ses:us-east-1:1:identity/<recipient>; \
             bounce: <address>. Done @ 3 p.m."
        );
    }

    #[test]
    fn an_ses_error_listing_recipients_is_rendered_without_them() {
        use aws_smithy_runtime_api::http::Response;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        let recipients = vec!["Data@Acme.example".to_owned(), "ops@acme.example".to_owned()];
        // What SES's sandbox answers when recipients are not verified: the
        // addresses as SES normalised them.
        let metadata = ErrorMetadata::builder()
            .code("MessageRejected")
            .message(
                "Email address is not verified. The following identities failed the check in region US-EAST-1: \
                 data@acme.example, OPS@acme.example, reports@popularity.example",
            )
            .build();
        let error = SdkError::service_error(
            SendRawEmailError::generic(metadata),
            Response::new(400.try_into().unwrap(), SdkBody::empty()),
        );
        let failure = send_failure("reports@popularity.example", &error, &recipients);
        let shown = failure.to_string();
        for address in ["data@acme.example", "ops@acme.example"] {
            assert!(!shown.to_lowercase().contains(address), "{address} in {shown}");
        }
        assert!(shown.contains("MessageRejected") && shown.contains("<recipient>, <recipient>"), "{shown}");
        assert!(shown.starts_with("sending the email from reports@popularity.example failed"), "{shown}");
        assert!(!format!("{failure:?}").to_lowercase().contains("acme.example"), "{failure:?}");
    }

    /// A link as S3's presigner writes it, with every bearer part.
    const PRESIGNED: &str = "https://staging.s3.us-east-1.amazonaws.com/reports/20261119030000/track/part-000.json\
        ?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLESIGNER%2F20261119%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20261119T031000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=6f1e0c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123";

    #[test]
    fn the_debug_of_every_type_holding_links_shows_no_signature_or_credential() {
        let mut report_email = email(false, 168);
        report_email.reports[0].parts[0].url = PRESIGNED.to_owned();
        let message = report_email.message("reports@popularity.example", &["data@acme.example".to_owned()]);
        assert!(message.text.contains("X-Amz-Signature="), "the email itself carries the link");
        let shown = [
            format!("{:?}", report_email.reports[0].parts[0]),
            format!("{:?}", report_email.reports[0]),
            format!("{report_email:?}"),
            format!("{report_email:#?}"),
            format!("{message:?}"),
            format!("{message:#?}"),
        ];
        for text in &shown {
            let lower = text.to_ascii_lowercase();
            for forbidden in ["x-amz-signature", "signature", "x-amz-credential", "credential", "akiaexamplesigner"] {
                assert!(!lower.contains(forbidden), "{forbidden:?} in {text}");
            }
            assert!(!text.contains("data@acme.example"), "a recipient in {text}");
        }
        assert!(
            shown[0].contains("reports/20261119030000/track/part-000.json")
                && shown[0].contains("X-Amz-Expires=604800")
        );
        assert!(shown[4].contains("recipients: 1") && shown[4].contains("Popularity reports"), "{}", shown[4]);
    }
    use crate::domain::{Compression, Format};

    fn email(shortened: bool, hours: i64) -> ReportEmail<'static> {
        let sent_at: DateTime<Utc> = "2026-11-19T03:10:00Z".parse().unwrap();
        ReportEmail {
            tenant_id: "acme",
            feed_id: "weekly",
            run_id: "20261119030000".parse().unwrap(),
            encoding: Encoding { format: Format::Tsv, compression: Compression::Gzip },
            base_run_id: None,
            reports: vec![LinkedReport {
                kind: ReportKind::Track,
                rows: 12,
                parts: vec![LinkedPart {
                    kind: FileKind::Upsert,
                    url: "http://x/a?b=1&c=<2>".to_owned(),
                    rows: 12,
                    bytes: 1_234_567,
                }],
            }],
            sent_at,
            links_expire_at: sent_at + chrono::Duration::hours(hours),
            shortened_expiry: shortened,
        }
    }

    #[test]
    fn both_bodies_list_rows_sizes_links_and_the_true_expiry() {
        let full = email(false, 168);
        for body in [full.text(), full.html()] {
            assert!(body.contains("track_popularity"), "{body}");
            assert!(body.contains("1.2 MB"), "{body}");
            assert!(body.contains("2026-11-26 03:10 UTC") && body.contains("7 days"), "{body}");
        }
        assert!(full.text().contains("http://x/a?b=1&c=<2>"));
        assert!(full.html().contains("http://x/a?b=1&amp;c=&lt;2&gt;"));
        let short = email(true, 6);
        assert!(short.text().contains("2026-11-19 09:10 UTC") && short.text().contains("(6 hours after this email)"));
        assert!(short.text().contains("sooner than usual"));
    }

    #[test]
    fn a_delta_email_says_what_it_is_against_and_labels_removed_ids() {
        let mut delta = email(false, 168);
        delta.base_run_id = Some("20261116030000".parse().unwrap());
        let removed = LinkedPart { kind: FileKind::Removed, url: "http://x/removed".to_owned(), rows: 2, bytes: 30 };
        delta.reports[0].parts.push(removed);
        assert!(delta.subject().contains("20261119030000 (delta against 20261116030000)"), "{}", delta.subject());
        for body in [delta.text(), delta.html()] {
            assert!(body.contains("This is a delta against run 20261116030000"), "{body}");
            assert!(body.contains("12 rows in this run; delta: 12 new or changed, 2 removed"), "{body}");
            assert!(body.contains("removed ids 1"), "{body}");
        }
        assert!(delta.text().contains("  part 1: 12 rows"), "{}", delta.text());
        assert!(!email(false, 168).text().contains("delta"), "a full email never mentions deltas");
    }

    #[test]
    fn links_shortened_to_one_hour_state_that_hour() {
        // Own session credentials without a known expiry (links.rs).
        let short = email(true, 1);
        for body in [short.text(), short.html()] {
            assert!(body.contains("The links expire at 2026-11-19 04:10 UTC (1 hour after this email)"), "{body}");
            assert!(body.contains("sooner than usual") && !body.contains("7 days"), "{body}");
        }
    }

    #[test]
    fn lifetimes_read_naturally() {
        let from: DateTime<Utc> = "2026-11-19T03:10:00Z".parse().unwrap();
        let after = |seconds: i64| lifetime_text(from, from + chrono::Duration::seconds(seconds));
        assert_eq!(after(604_800), "7 days");
        assert_eq!(after(86_400), "1 day");
        assert_eq!(after(3_600), "1 hour");
        assert_eq!(after(7_200), "2 hours");
        assert_eq!(after(5_400), "1.5 hours");
        assert_eq!(after(1_800), "30 minutes");
    }

    #[test]
    fn the_mime_message_decodes_back_to_both_bodies() {
        let message = email(false, 168).message("reports@example.com", &["a@acme.example".to_owned()]);
        let mime = to_mime(&message, "BOUNDARY");
        assert!(mime.contains("Content-Type: multipart/alternative; boundary=\"BOUNDARY\""));
        assert!(mime.lines().all(|line| line.len() <= 998));
        let bodies: Vec<String> = mime
            .split("--BOUNDARY")
            .filter_map(|section| section.split_once("\r\n\r\n").map(|(_, body)| body.replace("\r\n", "")))
            .filter(|body| !body.is_empty() && !body.starts_with("--"))
            .map(|body| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body).unwrap()).unwrap())
            .collect();
        assert_eq!(bodies, vec![message.text.clone(), message.html.clone()]);
    }

    #[test]
    fn fifty_long_recipients_are_each_named_once_in_to_on_lines_within_the_limit() {
        let recipients: Vec<String> =
            (0..50).map(|i| format!("{}-{i:02}@{}.example", "reader".repeat(10), "reports".repeat(8))).collect();
        assert!(recipients.join(", ").len() > 998, "one unfolded line would be too long");
        let message = email(false, 168).message("reports@example.com", &recipients);
        let mime = to_mime(&message, "BOUNDARY");
        assert!(mime.split("\r\n").all(|line| line.len() <= 998), "a line over 998 characters");
        let headers = mime.split("\r\n\r\n").next().unwrap();
        let unfolded = headers.replace("\r\n ", " ");
        let to = unfolded.lines().find_map(|line| line.strip_prefix("To: ")).expect("a To: header");
        let named: Vec<&str> = to.split(',').map(str::trim).collect();
        assert_eq!(named, recipients);
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_000), "1.0 kB");
        assert_eq!(human_bytes(1_073_741_824), "1.1 GB");
    }
}
