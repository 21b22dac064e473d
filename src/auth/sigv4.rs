//! AWS Signature Version 4 verification (`AWS4-HMAC-SHA256`).
//!
//! Both forms the AWS SDKs produce are accepted:
//!
//! - the header form: `Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/
//!   region/service/aws4_request, SignedHeaders=..., Signature=...` with the
//!   signing time in `X-Amz-Date`;
//! - the presigned (query) form: `X-Amz-Algorithm`, `X-Amz-Credential`,
//!   `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders` and
//!   `X-Amz-Signature` in the query string.
//!
//! The canonical request is rebuilt from what arrived on the wire, exactly as
//! the AWS SDK's signer builds it for a non-S3 service: the path is
//! normalised (empty, `.` and `..` segments removed) and then percent-encoded
//! as it arrived, so an already-encoded `%3D` is signed as `%253D` (the SDK's
//! default "double" encoding; S3 alone encodes once); query parameters are
//! decoded, re-encoded per RFC 3986 and sorted; header names are lowercased,
//! values trimmed with runs of spaces collapsed, and repeated headers joined
//! with commas.
//!
//! The `Date` header that SigV4 allows in place of `X-Amz-Date` is not
//! accepted: the SDKs always send `X-Amz-Date`, and it spares parsing HTTP
//! dates.
//!
//! Everything here is pure: the caller passes the time, so tests can use the
//! published test vectors' timestamps and the HTTP layer its own clock.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm accepted (SigV4A's ECDSA variant is not supported).
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last part of every credential scope.
const TERMINATOR: &str = "aws4_request";
/// The payload hash a presigned URL may carry instead of the body's hash.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// AWS caps presigned URLs at seven days.
const MAX_EXPIRES_SECS: u64 = 604_800;
/// The message AWS returns for any signature mismatch: it deliberately says
/// nothing about which part of the canonical request differed.
const MISMATCH: &str = "The request signature we calculated does not match the signature you \
     provided. Check your AWS Secret Access Key and signing method. Consult the service \
     documentation for details.";

/// Why a request was not authenticated. Each variant is one of the error
/// types AWS returns for SigV4 failures; [`AuthError::aws_type`] and
/// [`AuthError::status`] give what goes on the wire, the message says which
/// part of the request is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The request carries no authentication at all (no `Authorization`
    /// header and no presigned query parameters).
    #[error("{0}")]
    MissingAuthenticationToken(String),
    /// Authentication is present but malformed or incomplete: a missing
    /// parameter, a bad date format, a non-hex signature, and so on.
    #[error("{0}")]
    IncompleteSignature(String),
    /// The signature is well-formed but not valid here: it does not match,
    /// its scope names another date, region or service, it is outside the
    /// allowed clock skew, or its presigned lifetime has passed.
    #[error("{0}")]
    InvalidSignatureException(String),
    /// The access key ID is not known.
    #[error("{0}")]
    UnrecognizedClientException(String),
}

impl AuthError {
    /// The AWS error type (the JSON `__type`) for this error, as AWS JSON
    /// services spell it (the first two with the `Exception` suffix too).
    pub fn aws_type(&self) -> &'static str {
        match self {
            AuthError::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            AuthError::IncompleteSignature(_) => "IncompleteSignatureException",
            AuthError::InvalidSignatureException(_) => "InvalidSignatureException",
            AuthError::UnrecognizedClientException(_) => "UnrecognizedClientException",
        }
    }

    /// The HTTP status AWS answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::IncompleteSignature(_) => 400,
            AuthError::MissingAuthenticationToken(_)
            | AuthError::InvalidSignatureException(_)
            | AuthError::UnrecognizedClientException(_) => 403,
        }
    }

    /// The human-readable message (the JSON `message`).
    pub fn message(&self) -> &str {
        match self {
            AuthError::MissingAuthenticationToken(m)
            | AuthError::IncompleteSignature(m)
            | AuthError::InvalidSignatureException(m)
            | AuthError::UnrecognizedClientException(m) => m,
        }
    }
}

fn incomplete(message: impl Into<String>) -> AuthError {
    AuthError::IncompleteSignature(message.into())
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::InvalidSignatureException(message.into())
}

/// The caller a valid signature identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The access key ID the request was signed with.
    pub access_key_id: String,
}

/// Looks up the secret access key of an access key ID. Any
/// `Fn(&str) -> Option<String>` is one, so a closure over a map will do.
pub trait SecretLookup {
    /// The secret for `access_key_id`, or `None` if the key is unknown.
    fn secret(&self, access_key_id: &str) -> Option<String>;
}

impl<F> SecretLookup for F
where
    F: Fn(&str) -> Option<String>,
{
    fn secret(&self, access_key_id: &str) -> Option<String> {
        self(access_key_id)
    }
}

/// The request body, or its SHA-256 when the caller has already hashed it
/// (for example while streaming it in).
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The body's bytes.
    Bytes(&'a [u8]),
    /// The body's SHA-256 as lowercase hex.
    Sha256Hex(&'a str),
}

/// What the verifier needs of an HTTP request, as it arrived on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path as sent (still percent-encoded), e.g. `/`.
    pub path: &'a str,
    /// The raw query string without the `?`, empty if none.
    pub query: &'a str,
    /// Every header as a (name, value) pair, repeated names included, in the
    /// order received (the order of repeated values is signed). HTTP/2's
    /// `:authority` must be passed as `host`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub payload: Payload<'a>,
}

/// What the verifier accepts: the credential scope's region and service and
/// the allowed clock skew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The region requests must be signed for, e.g. `us-east-1`.
    pub region: String,
    /// The signing name requests must be scoped to; Cloud Map's is
    /// `servicediscovery`. Configurable so the AWS test vectors (signed for
    /// `service`) can be checked.
    pub service: String,
    /// How far `X-Amz-Date` may be from the verifier's clock (AWS: 5 minutes
    /// for this API).
    pub max_skew: Duration,
}

impl VerifierConfig {
    /// Cloud Map's signing name in `region`, with AWS's 5-minute skew.
    pub fn new(region: impl Into<String>) -> Self {
        VerifierConfig {
            region: region.into(),
            service: "servicediscovery".to_owned(),
            max_skew: Duration::from_secs(300),
        }
    }
}

/// Verifies SigV4-signed requests against a [`VerifierConfig`].
#[derive(Debug, Clone)]
pub struct Verifier {
    config: VerifierConfig,
}

/// The parts of a signature, whichever form it came in.
struct Signature<'a> {
    credential: Credential<'a>,
    /// `X-Amz-Date` as sent.
    amz_date: &'a str,
    /// Seconds since the epoch of `amz_date`.
    signed_at: i64,
    signed_headers: Vec<&'a str>,
    /// The raw `SignedHeaders` value, which goes into the canonical request
    /// as sent.
    signed_headers_raw: &'a str,
    signature: [u8; 32],
    /// `Some(seconds)` for the presigned form.
    expires: Option<u64>,
}

/// `AKID/YYYYMMDD/region/service/aws4_request`.
struct Credential<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl Verifier {
    /// A verifier for `config`.
    pub fn new(config: VerifierConfig) -> Self {
        Verifier { config }
    }

    /// Verifies `request`'s signature at time `now`, looking secrets up in
    /// `secrets`. On success, returns who signed it.
    pub fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: SystemTime,
        secrets: &dyn SecretLookup,
    ) -> Result<Principal, AuthError> {
        let query = parse_query(request.query);
        let authorization = header_values(request.headers, "authorization");
        let presigned = query.iter().any(|(k, _)| {
            matches!(
                k.as_str(),
                "X-Amz-Algorithm" | "X-Amz-Credential" | "X-Amz-Signature"
            )
        });
        let now = unix_seconds(now);
        let signature = match (authorization.as_slice(), presigned) {
            ([], false) => {
                return Err(AuthError::MissingAuthenticationToken(
                    "Request is missing Authentication Token".to_owned(),
                ));
            }
            ([_, _, ..], _) => {
                return Err(incomplete(
                    "The request has more than one 'Authorization' header",
                ));
            }
            ([_], true) => {
                return Err(incomplete(
                    "Only one authentication mechanism is allowed: either the Authorization \
                     header or the X-Amz-Algorithm query parameters",
                ));
            }
            ([value], false) => parse_authorization(value, request.headers)?,
            ([], true) => parse_presigned(&query)?,
        };
        self.check_scope(&signature)?;
        self.check_time(&signature, now)?;

        let Some(secret) = secrets.secret(signature.credential.access_key_id) else {
            return Err(AuthError::UnrecognizedClientException(
                "The security token included in the request is invalid.".to_owned(),
            ));
        };

        let body_hash = match request.payload {
            Payload::Bytes(bytes) => hex(&Sha256::digest(bytes)),
            Payload::Sha256Hex(hash) => hash.to_ascii_lowercase(),
        };
        // Which payload hashes to try: the header form signs the body's hash;
        // a presigned URL may sign the literal UNSIGNED-PAYLOAD instead, and
        // only its signer knows which, so both are tried (each needs the
        // secret, so accepting either gives away nothing).
        let candidates: Vec<String> =
            match header_values(request.headers, "x-amz-content-sha256").as_slice() {
                [] if signature.expires.is_some() => {
                    vec![body_hash, UNSIGNED_PAYLOAD.to_owned()]
                }
                [] => vec![body_hash],
                [value] if *value == UNSIGNED_PAYLOAD => {
                    if signature.expires.is_none() {
                        return Err(invalid(
                            "UNSIGNED-PAYLOAD is accepted only on presigned requests; sign the \
                             body's SHA-256 in 'x-amz-content-sha256'",
                        ));
                    }
                    vec![UNSIGNED_PAYLOAD.to_owned()]
                }
                [value] => {
                    if !value.eq_ignore_ascii_case(&body_hash) {
                        return Err(invalid(
                            "The provided 'x-amz-content-sha256' header does not match what was \
                             computed from the body",
                        ));
                    }
                    // Signed as sent, which is what the signer hashed.
                    vec![(*value).to_owned()]
                }
                _ => {
                    return Err(incomplete(
                        "The request has more than one 'x-amz-content-sha256' header",
                    ));
                }
            };

        let canonical_headers = canonical_headers(&signature.signed_headers, request.headers)?;
        let canonical_query = canonical_query(&query, signature.expires.is_some());
        let key = signing_key(&secret, &signature.credential);
        let scope = format!(
            "{}/{}/{}/{}",
            signature.credential.date,
            signature.credential.region,
            signature.credential.service,
            TERMINATOR
        );
        for payload_hash in &candidates {
            let canonical_request = format!(
                "{}\n{}\n{}\n{}\n{}\n{}",
                request.method,
                canonical_uri(request.path),
                canonical_query,
                canonical_headers,
                signature.signed_headers_raw,
                payload_hash
            );
            let string_to_sign = format!(
                "{ALGORITHM}\n{}\n{scope}\n{}",
                signature.amz_date,
                hex(&Sha256::digest(canonical_request.as_bytes()))
            );
            let mut mac = hmac(&key);
            mac.update(string_to_sign.as_bytes());
            // verify_slice compares in constant time, so the time taken says
            // nothing about how much of a guessed signature was right.
            if mac.verify_slice(&signature.signature).is_ok() {
                return Ok(Principal {
                    access_key_id: signature.credential.access_key_id.to_owned(),
                });
            }
        }
        Err(invalid(MISMATCH))
    }

    /// The scope must name the signing day, this region and this service.
    fn check_scope(&self, signature: &Signature<'_>) -> Result<(), AuthError> {
        let credential = &signature.credential;
        if credential.date != &signature.amz_date[..8] {
            return Err(invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{}'.",
                credential.date,
                &signature.amz_date[..8],
                signature.amz_date
            )));
        }
        if credential.region != self.config.region {
            return Err(invalid(format!(
                "Credential should be scoped to a valid region, not '{}'. Expected '{}'.",
                credential.region, self.config.region
            )));
        }
        if credential.service != self.config.service {
            return Err(invalid(format!(
                "Credential should be scoped to correct service: '{}', not '{}'.",
                self.config.service, credential.service
            )));
        }
        Ok(())
    }

    /// The header form must be within the skew of `now`; a presigned URL
    /// must not be from the future (beyond the skew) nor past its lifetime.
    fn check_time(&self, signature: &Signature<'_>, now: i64) -> Result<(), AuthError> {
        let skew = i64::try_from(self.config.max_skew.as_secs()).unwrap_or(i64::MAX);
        let minutes = self.config.max_skew.as_secs() / 60;
        if signature.signed_at > now.saturating_add(skew) {
            return Err(invalid(format!(
                "Signature not yet current: {} is still later than {} ({} + {minutes} min.)",
                signature.amz_date,
                format_amz_date(now.saturating_add(skew)),
                format_amz_date(now)
            )));
        }
        match signature.expires {
            None if signature.signed_at < now.saturating_sub(skew) => Err(invalid(format!(
                "Signature expired: {} is now earlier than {} ({} - {minutes} min.)",
                signature.amz_date,
                format_amz_date(now.saturating_sub(skew)),
                format_amz_date(now)
            ))),
            Some(expires) => {
                // expires ≤ 604800, so the cast and the sum cannot overflow.
                let expiry = signature.signed_at + expires as i64;
                if now > expiry {
                    Err(invalid(format!(
                        "Signature expired: the presigned request signed at {} for {expires} \
                         seconds expired at {}; it is now {}",
                        signature.amz_date,
                        format_amz_date(expiry),
                        format_amz_date(now)
                    )))
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }
}

/// Parses `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` and the `X-Amz-Date` header that goes with it.
fn parse_authorization<'a>(
    value: &'a str,
    headers: &'a [(&'a str, &'a str)],
) -> Result<Signature<'a>, AuthError> {
    let value = value.trim();
    let (algorithm, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported Authorization algorithm '{algorithm}': only '{ALGORITHM}' is supported"
        )));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(incomplete(format!(
                "Authorization parameter '{part}' is not of the form name=value"
            )));
        };
        let slot = match name.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => {
                return Err(incomplete(format!(
                    "Unknown Authorization parameter '{other}'; expected Credential, \
                     SignedHeaders and Signature"
                )));
            }
        };
        if slot.replace(value.trim()).is_some() {
            return Err(incomplete(format!(
                "Authorization header has more than one '{}' parameter",
                name.trim()
            )));
        }
    }
    let dates = header_values(headers, "x-amz-date");
    // Like AWS, name everything that is missing at once.
    let mut missing = String::new();
    for (present, name) in [
        (credential.is_some(), "'Credential' parameter"),
        (signature.is_some(), "'Signature' parameter"),
        (signed_headers.is_some(), "'SignedHeaders' parameter"),
        (!dates.is_empty(), "an 'X-Amz-Date' header"),
    ] {
        if !present {
            let _ = write!(missing, "Authorization header requires {name}. ");
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature), [amz_date]) =
        (credential, signed_headers, signature, dates.as_slice())
    else {
        if missing.is_empty() {
            return Err(incomplete(
                "The request has more than one 'X-Amz-Date' header",
            ));
        }
        return Err(incomplete(format!("{missing}Authorization={value}")));
    };
    Signature::parse(credential, amz_date.trim(), signed_headers, signature, None)
}

impl<'a> Signature<'a> {
    /// Parses each part, in the same order for both forms so that the same
    /// fault gets the same error whichever form carried it.
    fn parse(
        credential: &'a str,
        amz_date: &'a str,
        signed_headers: &'a str,
        signature: &str,
        expires: Option<u64>,
    ) -> Result<Self, AuthError> {
        Ok(Signature {
            credential: parse_credential(credential)?,
            signed_at: parse_amz_date(amz_date)?,
            amz_date,
            signed_headers: parse_signed_headers(signed_headers)?,
            signed_headers_raw: signed_headers,
            signature: parse_signature(signature)?,
            expires,
        })
    }
}

/// Parses the presigned form's `X-Amz-*` query parameters.
fn parse_presigned(query: &[(String, String)]) -> Result<Signature<'_>, AuthError> {
    let param = |name: &str| -> Result<&str, AuthError> {
        let mut values = query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (Some(value), None) => Ok(value),
            (None, _) => Err(incomplete(format!(
                "AWS query-string parameters must include '{name}'. Re-examine the query-string \
                 parameters."
            ))),
            (Some(_), Some(_)) => Err(incomplete(format!(
                "The query string has more than one '{name}' parameter"
            ))),
        }
    };
    let algorithm = param("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported X-Amz-Algorithm '{algorithm}': only '{ALGORITHM}' is supported"
        )));
    }
    let credential = param("X-Amz-Credential")?;
    let amz_date = param("X-Amz-Date")?;
    let expires = param("X-Amz-Expires")?;
    let signed_headers = param("X-Amz-SignedHeaders")?;
    let signature = param("X-Amz-Signature")?;
    // Digits only: u64's parser would also take a leading '+'.
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!(
            "X-Amz-Expires must be a whole number of seconds, not '{expires}'"
        )));
    }
    let expires = match expires.parse::<u64>() {
        Ok(secs) if secs <= MAX_EXPIRES_SECS => secs,
        _ => {
            return Err(incomplete(format!(
                "X-Amz-Expires must be at most {MAX_EXPIRES_SECS} seconds (one week), not \
                 '{expires}'"
            )));
        }
    };
    Signature::parse(
        credential,
        amz_date,
        signed_headers,
        signature,
        Some(expires),
    )
}

/// `AKID/YYYYMMDD/region/service/aws4_request`. The terminator is checked
/// here; the date, region and service against the request and the
/// configuration later.
fn parse_credential(credential: &str) -> Result<Credential<'_>, AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts.as_slice() else {
        return Err(incomplete(format!(
            "Credential '{credential}' must have 5 slash-separated parts \
             (AccessKeyId/YYYYMMDD/region/service/aws4_request), not {}",
            parts.len()
        )));
    };
    if access_key_id.is_empty() {
        return Err(incomplete("Credential has an empty access key ID"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!(
            "Credential date '{date}' must be YYYYMMDD"
        )));
    }
    if *terminator != TERMINATOR {
        return Err(invalid(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not \
             '{terminator}'."
        )));
    }
    Ok(Credential {
        access_key_id,
        date,
        region,
        service,
    })
}

/// `host;x-amz-date;...`: lowercase, sorted, no duplicates, `host` included
/// (without it a signature could be replayed against another endpoint).
fn parse_signed_headers(value: &str) -> Result<Vec<&str>, AuthError> {
    if value.is_empty() {
        return Err(incomplete("SignedHeaders must not be empty"));
    }
    let names: Vec<&str> = value.split(';').collect();
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.bytes().any(|b| b.is_ascii_uppercase() || b <= b' '))
    {
        return Err(incomplete(format!(
            "SignedHeaders '{value}' has an invalid header name '{bad}': names must be \
             non-empty lowercase tokens separated by ';'"
        )));
    }
    if let Some(pair) = names.windows(2).find(|w| w[0] >= w[1]) {
        return Err(incomplete(format!(
            "SignedHeaders '{value}' must be sorted and without duplicates ('{}' before '{}')",
            pair[0], pair[1]
        )));
    }
    if !names.contains(&"host") {
        return Err(incomplete(format!(
            "'Host' must be a 'SignedHeader' in the AWS Authorization, not only '{value}'"
        )));
    }
    Ok(names)
}

/// The signature: 64 hex digits (32 bytes).
fn parse_signature(value: &str) -> Result<[u8; 32], AuthError> {
    let bytes = value.as_bytes();
    let mut out = [0u8; 32];
    if bytes.len() != 64 {
        return Err(incomplete(format!(
            "Signature must be 64 hexadecimal characters, not {}",
            bytes.len()
        )));
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
            _ => return Err(incomplete("Signature must be hexadecimal")),
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex, as SigV4 writes hashes.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The values of header `name` (lowercase), in the order received.
fn header_values<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect()
}

/// `name:value\n` for each signed header, in the (sorted) signed order.
fn canonical_headers(signed: &[&str], headers: &[(&str, &str)]) -> Result<String, AuthError> {
    let mut out = String::new();
    for name in signed {
        let values = header_values(headers, name);
        if values.is_empty() {
            return Err(incomplete(format!(
                "SignedHeaders names '{name}', which the request does not have"
            )));
        }
        out.push_str(name);
        out.push(':');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_trimmed(&mut out, value);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Appends `value` trimmed, with runs of spaces collapsed to one, as SigV4
/// canonicalises header values.
fn push_trimmed(out: &mut String, value: &str) {
    let mut previous_space = false;
    for c in value.trim_matches([' ', '\t']).chars() {
        if c == ' ' {
            if !previous_space {
                out.push(c);
            }
            previous_space = true;
        } else {
            out.push(c);
            previous_space = false;
        }
    }
}

/// The path normalised as the SDK does (an empty path is `/`; empty, `.` and
/// `..` segments removed; a trailing slash kept) and then percent-encoded as
/// it arrived, `/` kept.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let trailing_slash = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|s| path.ends_with(s))
        && !segments.is_empty();
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        uri_encode(&mut out, segment.as_bytes());
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`
/// (uppercase hex).
fn uri_encode(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` component: `+` is a space,
/// `%XX` a byte, and a `%` not followed by two hex digits stays literal (as
/// the SDK's parser does).
fn form_decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_digit),
                bytes.get(i + 2).copied().and_then(hex_digit),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string's (name, value) pairs, decoded, in order.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// The canonical query string: every parameter RFC 3986-encoded and sorted
/// by name, then value; the presigned form leaves out `X-Amz-Signature`,
/// which cannot sign itself.
fn canonical_query(query: &[(String, String)], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&mut ek, k.as_bytes());
            uri_encode(&mut ev, v.as_bytes());
            (ek, ev)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

fn hmac_sha256(key: &[u8], data: &str) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The signing key: the secret HMAC-chained through the scope's date,
/// region, service and terminator.
fn signing_key(secret: &str, credential: &Credential<'_>) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), credential.date);
    let k_region = hmac_sha256(&k_date, credential.region);
    let k_service = hmac_sha256(&k_region, credential.service);
    hmac_sha256(&k_service, TERMINATOR)
}

/// Seconds since the epoch (negative before it, which no real clock is).
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Parses ISO 8601 basic format `YYYYMMDDTHHMMSSZ` into seconds since the
/// epoch.
fn parse_amz_date(value: &str) -> Result<i64, AuthError> {
    let bad = || {
        incomplete(format!(
            "X-Amz-Date must be in ISO 8601 basic format YYYYMMDD'T'HHMMSS'Z', not '{value}'"
        ))
    };
    let b = value.as_bytes();
    let digits_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !digits_ok {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> i64 {
        b[range]
            .iter()
            .fold(0, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, minute, second) = (num(9..11), num(11..13), num(13..15));
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Formats seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
fn format_amz_date(seconds: i64) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm; years are counted from March so leap days come last).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::discriminant;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const VECTOR_DATE: &str = "20150830T123600Z";
    const SCOPE: &str = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
    const QUERY_SCOPE: &str = "AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request";

    fn at(amz_date: &str) -> SystemTime {
        let secs = parse_amz_date(amz_date).expect("test date");
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
    }

    fn secrets(access_key_id: &str) -> Option<String> {
        (access_key_id == AKID).then(|| SECRET.to_owned())
    }

    /// The test suite's verifier: signed for service `service`.
    fn vector_verifier() -> Verifier {
        Verifier::new(VerifierConfig {
            service: "service".to_owned(),
            ..VerifierConfig::new("us-east-1")
        })
    }

    fn check_vector(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Principal, AuthError> {
        let request = SignedRequest {
            method,
            path,
            query,
            headers,
            payload: Payload::Bytes(body),
        };
        // A minute after signing: inside the skew and the presigned hour.
        let now = at(VECTOR_DATE) + Duration::from_secs(60);
        vector_verifier().verify(&request, now, &secrets)
    }

    fn authorization(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={signed_headers}, \
             Signature={signature}"
        )
    }

    fn presigned(before: &str, signed_headers: &str, after: &str, signature: &str) -> String {
        format!(
            "{before}X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={QUERY_SCOPE}&\
             X-Amz-Date={VECTOR_DATE}&X-Amz-SignedHeaders={signed_headers}&\
             X-Amz-Expires=3600{after}&X-Amz-Signature={signature}"
        )
    }

    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const DATE: (&str, &str) = ("X-Amz-Date", VECTOR_DATE);

    /// One vector of the AWS SigV4 test suite: the request and the
    /// signatures (with their signed headers) of its header and query forms.
    struct Vector<'a> {
        method: &'a str,
        path: &'a str,
        query: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: &'a [u8],
        header_signature: &'a str,
        header_signed: &'a str,
        query_signature: &'a str,
        query_signed: &'a str,
    }

    /// The fields most vectors share: `GET /` with no query and no body.
    const GET: Vector<'static> = Vector {
        method: "GET",
        path: "/",
        query: "",
        headers: &[HOST],
        body: b"",
        header_signature: "",
        header_signed: "host;x-amz-date",
        query_signature: "",
        query_signed: "host",
    };

    /// Header form and query form of one test-suite vector must both pass,
    /// and the header form must fail once the signature's last digit changes.
    fn assert_vector(vector: Vector<'_>) {
        let Vector {
            method,
            path,
            query,
            headers,
            body,
            header_signature,
            header_signed,
            query_signature,
            query_signed,
        } = vector;
        let auth = authorization(header_signed, header_signature);
        let mut with_auth = headers.to_vec();
        with_auth.extend([DATE, ("Authorization", auth.as_str())]);
        let principal = check_vector(method, path, query, &with_auth, body);
        assert_eq!(
            principal,
            Ok(Principal {
                access_key_id: AKID.to_owned()
            }),
            "header form of {method} {path}?{query}"
        );

        let tampered = format!("{}0", &header_signature[..63]);
        let tampered = if tampered == header_signature {
            format!("{}1", &header_signature[..63])
        } else {
            tampered
        };
        let auth = authorization(header_signed, &tampered);
        let mut with_bad = headers.to_vec();
        with_bad.extend([DATE, ("Authorization", auth.as_str())]);
        assert_eq!(
            check_vector(method, path, query, &with_bad, body),
            Err(invalid(MISMATCH))
        );

        let before = if query.is_empty() {
            String::new()
        } else {
            format!("{query}&")
        };
        let signed = query_signed.replace(';', "%3B");
        let presigned_query = presigned(&before, &signed, "", query_signature);
        let headers: Vec<_> = headers
            .iter()
            .copied()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("x-amz-content-sha256"))
            .collect();
        assert_eq!(
            check_vector(method, path, &presigned_query, &headers, body).map(|p| p.access_key_id),
            Ok(AKID.to_owned()),
            "query form of {method} {path}?{query}"
        );
    }

    #[test]
    fn get_vanilla() {
        assert_vector(Vector {
            header_signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            query_signature: "e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d",
            ..GET
        });
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        assert_vector(Vector {
            query: "Param2=value2&Param1=value1",
            header_signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            query_signature: "86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5",
            ..GET
        });
    }

    #[test]
    fn post_vanilla() {
        assert_vector(Vector {
            method: "POST",
            header_signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            query_signature: "2ce6e6d2e0cf2f9d1b55fafec88cd20574c31dc2e7631979f71ba2310083e95b",
            ..GET
        });
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        assert_vector(Vector {
            method: "POST",
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                HOST,
                ("Content-Length", "13"),
                (
                    "x-amz-content-sha256",
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                ),
            ],
            body: b"Param1=value1",
            header_signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
            header_signed: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            query_signature: "89a40deed0f26f9461242825a082d2222717248abc7ab41f552ad84a94ad46e9",
            query_signed: "content-length;content-type;host",
            ..GET
        });
    }

    #[test]
    fn get_header_value_trim() {
        assert_vector(Vector {
            headers: &[
                HOST,
                ("My-Header1", " value1"),
                ("My-Header2", " \"a   b   c\""),
            ],
            header_signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            header_signed: "host;my-header1;my-header2;x-amz-date",
            query_signature: "e7bb0fd515e125e1aec2ecc4c0c17484fb06f6846b927c35e46005dd3df3acd4",
            query_signed: "host;my-header1;my-header2",
            ..GET
        });
    }

    #[test]
    fn get_header_key_duplicate() {
        assert_vector(Vector {
            headers: &[
                HOST,
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            header_signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            header_signed: "host;my-header1;x-amz-date",
            query_signature: "3349ee0b81b4b589da0ff28a395c3591e04de515651dd74f298fa992d1507a97",
            query_signed: "host;my-header1",
            ..GET
        });
    }

    #[test]
    fn get_vanilla_with_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let auth = authorization(
            "host;x-amz-date;x-amz-security-token",
            "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        );
        let headers = [
            HOST,
            ("X-Amz-Security-Token", token),
            DATE,
            ("Authorization", auth.as_str()),
        ];
        assert!(check_vector("GET", "/", "", &headers, b"").is_ok());
        let query = presigned(
            "",
            "host",
            &format!("&X-Amz-Security-Token={token}"),
            "7ff2b50b376cb4d151970630573d6291dc128cc5c2a12ffb237f73cc53f67b6c",
        );
        assert!(check_vector("GET", "/", &query, &[HOST], b"").is_ok());
    }

    #[test]
    fn get_utf8_path_space_path_and_utf8_query() {
        for (path, query, signature) in [
            (
                "/ሴ",
                "",
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            ),
            (
                "/example space/",
                "",
                "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
            ),
            (
                "/",
                "ሴ=bar",
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ),
        ] {
            let auth = authorization("host;x-amz-date", signature);
            let headers = [HOST, DATE, ("Authorization", auth.as_str())];
            assert!(
                check_vector("GET", path, query, &headers, b"").is_ok(),
                "{path}?{query}"
            );
        }
    }

    // --- The AWS SDK's own signer -------------------------------------------

    const ENDPOINT_HOST: &str = "servicediscovery.us-east-1.amazonaws.com";
    const TARGET: &str = "Route53AutoNaming_v20170314.ListNamespaces";
    const BODY: &[u8] = br#"{"MaxResults":10}"#;

    /// A request the SDK signed: its headers (the SDK's added ones included)
    /// and its query string.
    struct Sdk {
        headers: Vec<(String, String)>,
        query: String,
    }

    impl Sdk {
        fn request<'a>(
            &'a self,
            headers: &'a [(&'a str, &'a str)],
            body: &'a [u8],
        ) -> SignedRequest<'a> {
            SignedRequest {
                method: "POST",
                path: "/",
                query: &self.query,
                headers,
                payload: Payload::Bytes(body),
            }
        }

        fn header_pairs(&self) -> Vec<(&str, &str)> {
            self.headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect()
        }
    }

    struct Signing<'a> {
        path: &'a str,
        secret: &'a str,
        token: Option<&'a str>,
        region: &'a str,
        time: SystemTime,
        presign_for: Option<Duration>,
        unsigned_payload: bool,
    }

    impl Default for Signing<'_> {
        fn default() -> Self {
            Signing {
                path: "/",
                secret: SECRET,
                token: None,
                region: "us-east-1",
                time: at(VECTOR_DATE),
                presign_for: None,
                unsigned_payload: false,
            }
        }
    }

    fn sdk_sign(signing: Signing<'_>) -> Sdk {
        use aws_sigv4::http_request::{
            SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
        };
        let identity = aws_credential_types::Credentials::new(
            AKID,
            signing.secret,
            signing.token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        if let Some(expires) = signing.presign_for {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(expires);
        }
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(signing.region)
            .name("servicediscovery")
            .time(signing.time)
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let headers = vec![
            ("host".to_owned(), ENDPOINT_HOST.to_owned()),
            (
                "content-type".to_owned(),
                "application/x-amz-json-1.1".to_owned(),
            ),
            ("x-amz-target".to_owned(), TARGET.to_owned()),
        ];
        let body = if signing.unsigned_payload {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(BODY)
        };
        let request = SignableRequest::new(
            "POST",
            format!("https://{ENDPOINT_HOST}{}", signing.path),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            body,
        )
        .expect("signable request");
        let (instructions, _signature) = sign(request, &params).expect("signed").into_parts();
        let mut all = headers.clone();
        all.extend(
            instructions
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned())),
        );
        let mut query = String::new();
        for (name, value) in instructions.params() {
            if !query.is_empty() {
                query.push('&');
            }
            uri_encode(&mut query, name.as_bytes());
            query.push('=');
            uri_encode(&mut query, value.as_bytes());
        }
        Sdk {
            headers: all,
            query,
        }
    }

    fn cloud_map_verifier() -> Verifier {
        Verifier::new(VerifierConfig::new("us-east-1"))
    }

    fn verify_sdk(sdk: &Sdk, body: &[u8], now: SystemTime) -> Result<Principal, AuthError> {
        let headers = sdk.header_pairs();
        cloud_map_verifier().verify(&sdk.request(&headers, body), now, &secrets)
    }

    fn assert_variant(result: Result<Principal, AuthError>, expected: &AuthError, fragment: &str) {
        let error = result.expect_err("should be rejected");
        assert_eq!(discriminant(&error), discriminant(expected), "{error:?}");
        assert!(
            error.message().contains(fragment),
            "{error:?} should mention {fragment:?}"
        );
    }

    #[test]
    fn sdk_header_form_is_accepted() {
        let sdk = sdk_sign(Signing::default());
        assert!(sdk.query.is_empty());
        let now = at(VECTOR_DATE) + Duration::from_secs(299);
        assert_eq!(
            verify_sdk(&sdk, BODY, now),
            Ok(Principal {
                access_key_id: AKID.to_owned()
            })
        );
        // The same body given as its hash.
        let headers = sdk.header_pairs();
        let hash = hex(&Sha256::digest(BODY));
        let mut request = sdk.request(&headers, BODY);
        request.payload = Payload::Sha256Hex(&hash);
        assert!(cloud_map_verifier().verify(&request, now, &secrets).is_ok());
    }

    #[test]
    fn sdk_session_token_is_allowed() {
        let sdk = sdk_sign(Signing {
            token: Some("session-token"),
            ..Signing::default()
        });
        assert!(
            sdk.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("x-amz-security-token"))
        );
        assert!(verify_sdk(&sdk, BODY, at(VECTOR_DATE)).is_ok());
    }

    #[test]
    fn sdk_double_encoded_path_is_accepted() {
        // The SDK signs a non-S3 path by encoding it as sent once more, so
        // '%3D' is signed as '%253D'; the verifier must do the same.
        let path = "/test/@connections/JBDvjfGEIAMCERw%3D";
        let sdk = sdk_sign(Signing {
            path,
            ..Signing::default()
        });
        let headers = sdk.header_pairs();
        let mut request = sdk.request(&headers, BODY);
        request.path = path;
        assert!(
            cloud_map_verifier()
                .verify(&request, at(VECTOR_DATE), &secrets)
                .is_ok()
        );
    }

    #[test]
    fn sdk_tampered_body_is_rejected() {
        let sdk = sdk_sign(Signing::default());
        assert_variant(
            verify_sdk(&sdk, br#"{"MaxResults":99}"#, at(VECTOR_DATE)),
            &invalid(""),
            "does not match",
        );
    }

    #[test]
    fn sdk_tampered_body_with_content_sha256_is_rejected() {
        let sdk = sdk_sign(Signing::default());
        let hash = hex(&Sha256::digest(BODY));
        let mut headers = sdk.header_pairs();
        headers.push(("x-amz-content-sha256", &hash));
        // The body's hash is not what the header says.
        let request = sdk.request(&headers, b"{}");
        assert_variant(
            cloud_map_verifier().verify(&request, at(VECTOR_DATE), &secrets),
            &invalid(""),
            "x-amz-content-sha256",
        );
    }

    #[test]
    fn sdk_wrong_secret_is_rejected() {
        let sdk = sdk_sign(Signing {
            secret: "not-the-secret",
            ..Signing::default()
        });
        assert_eq!(
            verify_sdk(&sdk, BODY, at(VECTOR_DATE)),
            Err(invalid(MISMATCH))
        );
    }

    #[test]
    fn sdk_other_region_is_rejected() {
        let sdk = sdk_sign(Signing {
            region: "eu-west-1",
            ..Signing::default()
        });
        assert_variant(
            verify_sdk(&sdk, BODY, at(VECTOR_DATE)),
            &invalid(""),
            "region, not 'eu-west-1'",
        );
    }

    #[test]
    fn sdk_signature_outside_the_skew_is_rejected() {
        let sdk = sdk_sign(Signing::default());
        let signed = at(VECTOR_DATE);
        assert_eq!(
            verify_sdk(&sdk, BODY, signed + Duration::from_secs(301)),
            Err(invalid(
                "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z \
                 (20150830T124101Z - 5 min.)"
            ))
        );
        assert_eq!(
            verify_sdk(&sdk, BODY, signed - Duration::from_secs(301)),
            Err(invalid(
                "Signature not yet current: 20150830T123600Z is still later than \
                 20150830T123559Z (20150830T123059Z + 5 min.)"
            ))
        );
        assert!(verify_sdk(&sdk, BODY, signed - Duration::from_secs(300)).is_ok());
    }

    #[test]
    fn sdk_presigned_form_is_accepted_until_it_expires() {
        let sdk = sdk_sign(Signing {
            presign_for: Some(Duration::from_secs(900)),
            ..Signing::default()
        });
        assert!(sdk.query.contains("X-Amz-Signature="));
        let signed = at(VECTOR_DATE);
        // Presigned URLs are used long after signing, within their lifetime.
        assert!(verify_sdk(&sdk, BODY, signed + Duration::from_secs(900)).is_ok());
        assert_variant(
            verify_sdk(&sdk, BODY, signed + Duration::from_secs(901)),
            &invalid(""),
            "Signature expired: the presigned request signed at 20150830T123600Z for 900 \
             seconds expired at 20150830T125100Z",
        );
        assert_variant(
            verify_sdk(&sdk, BODY, signed - Duration::from_secs(301)),
            &invalid(""),
            "not yet current",
        );
        assert_eq!(verify_sdk(&sdk, b"{}", signed), Err(invalid(MISMATCH)));
    }

    #[test]
    fn sdk_presigned_unsigned_payload_is_accepted() {
        let sdk = sdk_sign(Signing {
            presign_for: Some(Duration::from_secs(60)),
            unsigned_payload: true,
            ..Signing::default()
        });
        // Any body: the signer chose not to sign it.
        assert!(verify_sdk(&sdk, b"anything", at(VECTOR_DATE)).is_ok());
    }

    #[test]
    fn unsigned_payload_is_refused_in_the_header_form() {
        let sdk = sdk_sign(Signing::default());
        let mut headers = sdk.header_pairs();
        headers.push(("x-amz-content-sha256", UNSIGNED_PAYLOAD));
        assert_variant(
            cloud_map_verifier().verify(&sdk.request(&headers, BODY), at(VECTOR_DATE), &secrets),
            &invalid(""),
            "only on presigned",
        );
    }

    // --- Malformed requests -------------------------------------------------

    const SIG: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    #[test]
    fn malformed_authorization_headers_get_specific_errors() {
        let scope = SCOPE;
        let ok = "SignedHeaders=host;x-amz-date";
        let sig = format!("Signature={SIG}");
        let i = incomplete("");
        let v = invalid("");
        let u = AuthError::UnrecognizedClientException(String::new());
        let cases: Vec<(String, &AuthError, &str)> = vec![
            (
                format!("AWS4-HMAC-SHA256 {ok}, {sig}"),
                &i,
                "requires 'Credential' parameter",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, {sig}"),
                &i,
                "requires 'SignedHeaders'",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, {ok}"),
                &i,
                "requires 'Signature'",
            ),
            (
                "AWS4-HMAC-SHA256".to_owned(),
                &i,
                "requires 'Credential' parameter. Authorization header requires 'Signature'",
            ),
            (
                format!("AWS4-HMAC-SHA512 Credential={scope}, {ok}, {sig}"),
                &i,
                "Unsupported Authorization algorithm 'AWS4-HMAC-SHA512'",
            ),
            ("Basic dXNlcjpwYXNz".to_owned(), &i, "algorithm 'Basic'"),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=, {sig}"),
                &i,
                "SignedHeaders must not be empty",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=x-amz-date, {sig}"),
                &i,
                "'Host' must be a 'SignedHeader'",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=Host;X-Amz-Date, {sig}"
                ),
                &i,
                "invalid header name 'Host'",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;;x-amz-date, {sig}"
                ),
                &i,
                "invalid header name ''",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=x-amz-date;host, {sig}"
                ),
                &i,
                "must be sorted",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;host;x-amz-date, {sig}"
                ),
                &i,
                "without duplicates",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;my-header;x-amz-date, {sig}"
                ),
                &i,
                "names 'my-header', which the request does not have",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, {ok}, Signature={}",
                    "z".repeat(64)
                ),
                &i,
                "Signature must be hexadecimal",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, {ok}, Signature=abc123"),
                &i,
                "64 hexadecimal characters, not 6",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service, {ok}, {sig}"
                ),
                &i,
                "5 slash-separated parts",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}/extra, {ok}, {sig}"),
                &i,
                "not 6",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=/20150830/us-east-1/service/aws4_request, {ok}, {sig}"
                ),
                &i,
                "empty access key ID",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015-08-30/us-east-1/service/aws4_request, {ok}, {sig}"
                ),
                &i,
                "Credential date '2015-08-30' must be YYYYMMDD",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws5_request, {ok}, {sig}"
                ),
                &v,
                "valid terminator: 'aws4_request', not 'aws5_request'",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request, {ok}, {sig}"
                ),
                &v,
                "'20150831' != '20150830'",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-west-2/service/aws4_request, {ok}, {sig}"
                ),
                &v,
                "valid region, not 'us-west-2'",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/sqs/aws4_request, {ok}, {sig}"
                ),
                &v,
                "correct service: 'service', not 'sqs'",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, Credential={scope}, {ok}, {sig}"),
                &i,
                "more than one 'Credential'",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, {ok}, {sig}, {sig}"),
                &i,
                "more than one 'Signature'",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, {ok}, {sig}, Foo=bar"),
                &i,
                "Unknown Authorization parameter 'Foo'",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={scope}, {ok}, {sig}, junk"),
                &i,
                "'junk' is not of the form name=value",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential=NOBODY/20150830/us-east-1/service/aws4_request, {ok}, {sig}"
                ),
                &u,
                "security token included in the request is invalid",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={scope}, {ok}, Signature={}",
                    "0".repeat(64)
                ),
                &v,
                "does not match",
            ),
        ];
        assert!(cases.len() >= 20);
        for (auth, expected, fragment) in &cases {
            let headers = [HOST, DATE, ("Authorization", auth.as_str())];
            let result = check_vector("GET", "/", "", &headers, b"");
            let error = result.expect_err(auth);
            assert_eq!(
                discriminant(&error),
                discriminant(*expected),
                "{auth}: {error:?}"
            );
            assert!(
                error.message().contains(fragment),
                "{auth}: {error:?} should mention {fragment:?}"
            );
            assert_eq!(error.status(), if **expected == i { 400 } else { 403 });
        }
    }

    #[test]
    fn malformed_dates_and_duplicate_headers_get_specific_errors() {
        let auth = authorization("host;x-amz-date", SIG);
        let auth = auth.as_str();
        let i = incomplete("");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![HOST, ("Authorization", auth)],
                "requires an 'X-Amz-Date' header",
            ),
            (
                vec![
                    HOST,
                    ("X-Amz-Date", "2015-08-30T12:36:00Z"),
                    ("Authorization", auth),
                ],
                "ISO 8601 basic format",
            ),
            (
                vec![
                    HOST,
                    ("X-Amz-Date", "20150230T123600Z"),
                    ("Authorization", auth),
                ],
                "not '20150230T123600Z'",
            ),
            (
                vec![
                    HOST,
                    ("X-Amz-Date", "20150830T246000Z"),
                    ("Authorization", auth),
                ],
                "ISO 8601",
            ),
            (
                vec![HOST, DATE, DATE, ("Authorization", auth)],
                "more than one 'X-Amz-Date'",
            ),
            (
                vec![HOST, DATE, ("Authorization", auth), ("authorization", auth)],
                "more than one 'Authorization'",
            ),
        ];
        for (headers, fragment) in &cases {
            let error = check_vector("GET", "/", "", headers, b"").expect_err(fragment);
            assert_eq!(discriminant(&error), discriminant(&i), "{error:?}");
            assert!(
                error.message().contains(fragment),
                "{error:?} should mention {fragment:?}"
            );
        }
    }

    #[test]
    fn malformed_presigned_queries_get_specific_errors() {
        let full = presigned("", "host", "", SIG);
        let i = incomplete("");
        let cases: Vec<(String, &str)> = vec![
            (
                full.replace("X-Amz-Credential=", "X-Amz-Cred="),
                "must include 'X-Amz-Credential'",
            ),
            (
                full.replace("X-Amz-Expires=3600", "X-Amz-Expires=604801"),
                "at most 604800 seconds",
            ),
            (
                full.replace("X-Amz-Expires=3600", "X-Amz-Expires=%2B60"),
                "whole number of seconds, not '+60'",
            ),
            (
                format!("{full}&X-Amz-Date={VECTOR_DATE}"),
                "more than one 'X-Amz-Date'",
            ),
            (
                full.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
                "Unsupported X-Amz-Algorithm",
            ),
            (
                full.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=x-amz-date"),
                "'Host' must be",
            ),
        ];
        for (query, fragment) in &cases {
            let error = check_vector("GET", "/", query, &[HOST], b"").expect_err(fragment);
            assert_eq!(discriminant(&error), discriminant(&i), "{error:?}");
            assert!(
                error.message().contains(fragment),
                "{error:?} should mention {fragment:?}"
            );
        }
        // Both mechanisms at once.
        let auth = authorization("host;x-amz-date", SIG);
        let headers = [HOST, DATE, ("Authorization", auth.as_str())];
        let error = check_vector("GET", "/", &full, &headers, b"").expect_err("two mechanisms");
        assert!(
            error
                .message()
                .contains("Only one authentication mechanism")
        );
    }

    #[test]
    fn no_authentication_is_missing_token() {
        let error = check_vector("GET", "/", "Action=List", &[HOST], b"").expect_err("no auth");
        assert_eq!(
            error,
            AuthError::MissingAuthenticationToken("Request is missing Authentication Token".into())
        );
        assert_eq!(
            (error.aws_type(), error.status()),
            ("MissingAuthenticationTokenException", 403)
        );
    }

    #[test]
    fn error_types_and_statuses() {
        assert_eq!(
            (incomplete("").aws_type(), incomplete("").status()),
            ("IncompleteSignatureException", 400)
        );
        assert_eq!(
            (invalid("").aws_type(), invalid("").status()),
            ("InvalidSignatureException", 403)
        );
        let unknown = AuthError::UnrecognizedClientException(String::new());
        assert_eq!(
            (unknown.aws_type(), unknown.status()),
            ("UnrecognizedClientException", 403)
        );
    }

    #[test]
    fn canonical_pieces() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_uri("/a b/%3D"), "/a%20b/%253D");
        let query = parse_query("b=2&a=%7e+x&a=1&c");
        assert_eq!(canonical_query(&query, false), "a=1&a=~%20x&b=2&c=");
        let mut out = String::new();
        push_trimmed(&mut out, "  a   b  c  ");
        assert_eq!(out, "a b c");
        for date in [
            "19700101T000000Z",
            "20000229T235959Z",
            VECTOR_DATE,
            "21001231T120000Z",
        ] {
            assert_eq!(format_amz_date(parse_amz_date(date).expect(date)), date);
        }
        assert_eq!(parse_amz_date("19700101T000100Z"), Ok(60));
        assert!(parse_amz_date("21000229T000000Z").is_err());
    }
}
