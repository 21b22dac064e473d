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

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use self::canonical::{
    HeaderValue, canonical_headers, canonical_query, canonical_uri, header_value, parse_query,
};

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

thread_local! {
    /// Signing keys derived lately, by date and secret: a key is the same
    /// for every request of a day, and deriving it is four of the five
    /// HMACs of a verification (the AWS SDKs cache it on their side too).
    /// Region and service are fixed by the verifier's config and checked
    /// before a key is looked up; entries carry them anyway, so verifiers
    /// of different configs never share one. Per thread: no lock or shared
    /// cache line on the request path.
    static SIGNING_KEYS: RefCell<(HashMap<String, [u8; 32]>, String)> =
        RefCell::new((HashMap::new(), String::new()));
}

/// Cached signing keys beyond this are dropped all at once (keys and days
/// are few; this bounds what a flood of made-up dates could hold).
const SIGNING_KEY_CACHE: usize = 1024;

/// The parts of a signature, whichever form it came in.
struct Signature<'a> {
    credential: Credential<'a>,
    /// `X-Amz-Date` as sent.
    amz_date: &'a str,
    /// Seconds since the epoch of `amz_date`.
    signed_at: i64,
    /// `SignedHeaders` as sent (checked: sorted lowercase names with `host`),
    /// which also goes into the canonical request as sent.
    signed_headers: &'a str,
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

    /// The signing key of `secret` for the credential's scope, from the
    /// cache when it was derived lately.
    fn signing_key(&self, secret: &str, credential: &Credential<'_>) -> [u8; 32] {
        // The scope's parts hold no newline (they were checked against the
        // config), so the id is unambiguous whatever the secret holds.
        let id = [
            credential.date,
            credential.region,
            credential.service,
            secret,
        ];
        SIGNING_KEYS.with_borrow_mut(|(keys, buffer)| {
            // Looked up through a reused buffer: no allocation unless the
            // key is new.
            buffer.clear();
            for part in id {
                buffer.push_str(part);
                buffer.push('\n');
            }
            if let Some(key) = keys.get(buffer.as_str()) {
                return *key;
            }
            let key = signing_key(secret, credential);
            if keys.len() >= SIGNING_KEY_CACHE {
                keys.clear();
            }
            keys.insert(buffer.clone(), key);
            key
        })
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
        let authorization = header_value(request.headers, "authorization");
        let presigned = query.iter().any(|(k, _)| {
            matches!(
                k.as_str(),
                "X-Amz-Algorithm" | "X-Amz-Credential" | "X-Amz-Signature"
            )
        });
        let now = unix_seconds(now);
        let signature = match (authorization, presigned) {
            (HeaderValue::Absent, false) => {
                return Err(AuthError::MissingAuthenticationToken(
                    "Request is missing Authentication Token".to_owned(),
                ));
            }
            (HeaderValue::Repeated, _) => {
                return Err(incomplete(
                    "The request has more than one 'Authorization' header",
                ));
            }
            (HeaderValue::One(_), true) => {
                return Err(incomplete(
                    "Only one authentication mechanism is allowed: either the Authorization \
                     header or the X-Amz-Algorithm query parameters",
                ));
            }
            (HeaderValue::One(value), false) => parse_authorization(value, request.headers)?,
            (HeaderValue::Absent, true) => parse_presigned(&query)?,
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
        let unsigned = UNSIGNED_PAYLOAD;
        let candidates: [Option<&str>; 2] =
            match header_value(request.headers, "x-amz-content-sha256") {
                HeaderValue::Absent if signature.expires.is_some() => {
                    [Some(&body_hash), Some(unsigned)]
                }
                HeaderValue::Absent => [Some(&body_hash), None],
                HeaderValue::One(value) if value == UNSIGNED_PAYLOAD => {
                    if signature.expires.is_none() {
                        return Err(invalid(
                            "UNSIGNED-PAYLOAD is accepted only on presigned requests; sign the \
                             body's SHA-256 in 'x-amz-content-sha256'",
                        ));
                    }
                    [Some(unsigned), None]
                }
                HeaderValue::One(value) => {
                    if !value.eq_ignore_ascii_case(&body_hash) {
                        return Err(invalid(
                            "The provided 'x-amz-content-sha256' header does not match what was \
                             computed from the body",
                        ));
                    }
                    // Signed as sent, which is what the signer hashed.
                    [Some(value), None]
                }
                HeaderValue::Repeated => {
                    return Err(incomplete(
                        "The request has more than one 'x-amz-content-sha256' header",
                    ));
                }
            };

        let canonical_headers = canonical_headers(signature.signed_headers, request.headers)?;
        let canonical_query = canonical_query(&query, signature.expires.is_some());
        let canonical_uri = canonical_uri(request.path);
        let key = self.signing_key(&secret, &signature.credential);
        let credential = &signature.credential;
        for payload_hash in candidates.into_iter().flatten() {
            // The canonical request and the string to sign are fed to the
            // hash and the MAC piece by piece, as the spec lays them out,
            // without being assembled in memory first.
            let mut canonical_request = Sha256::new();
            for (i, part) in [
                request.method,
                &canonical_uri,
                &canonical_query,
                &canonical_headers,
                signature.signed_headers,
                payload_hash,
            ]
            .into_iter()
            .enumerate()
            {
                if i > 0 {
                    canonical_request.update(b"\n");
                }
                canonical_request.update(part.as_bytes());
            }
            let mut mac = hmac(&key);
            for part in [
                ALGORITHM,
                "\n",
                signature.amz_date,
                "\n",
                credential.date,
                "/",
                credential.region,
                "/",
                credential.service,
                "/",
                TERMINATOR,
                "\n",
                &hex(&canonical_request.finalize()),
            ] {
                mac.update(part.as_bytes());
            }
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
    let date = header_value(headers, "x-amz-date");
    // Like AWS, name everything that is missing at once.
    let mut missing = String::new();
    for (present, name) in [
        (credential.is_some(), "'Credential' parameter"),
        (signature.is_some(), "'Signature' parameter"),
        (signed_headers.is_some(), "'SignedHeaders' parameter"),
        (date != HeaderValue::Absent, "an 'X-Amz-Date' header"),
    ] {
        if !present {
            let _ = write!(missing, "Authorization header requires {name}. ");
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature), HeaderValue::One(amz_date)) =
        (credential, signed_headers, signature, date)
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
    let mut parts = credential.split('/');
    let mut next = || parts.next();
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) =
        (next(), next(), next(), next(), next(), next())
    else {
        return Err(incomplete(format!(
            "Credential '{credential}' must have 5 slash-separated parts \
             (AccessKeyId/YYYYMMDD/region/service/aws4_request), not {}",
            credential.split('/').count()
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
    if terminator != TERMINATOR {
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
fn parse_signed_headers(value: &str) -> Result<&str, AuthError> {
    if value.is_empty() {
        return Err(incomplete("SignedHeaders must not be empty"));
    }
    let mut previous: Option<&str> = None;
    let mut has_host = false;
    for name in value.split(';') {
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b <= b' ') {
            return Err(incomplete(format!(
                "SignedHeaders '{value}' has an invalid header name '{name}': names must be \
                 non-empty lowercase tokens separated by ';'"
            )));
        }
        if let Some(before) = previous.filter(|before| *before >= name) {
            return Err(incomplete(format!(
                "SignedHeaders '{value}' must be sorted and without duplicates ('{before}' \
                 before '{name}')"
            )));
        }
        has_host |= name == "host";
        previous = Some(name);
    }
    if !has_host {
        return Err(incomplete(format!(
            "'Host' must be a 'SignedHeader' in the AWS Authorization, not only '{value}'"
        )));
    }
    Ok(value)
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
    // By table: formatting each byte with `write!` was a fifth of a
    // verification's time.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
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
/// epoch. The shape is checked here (exactly 16 characters, as the SDKs
/// send it); the calendar (month lengths, leap days) by jiff.
fn parse_amz_date(value: &str) -> Result<i64, AuthError> {
    let bad = || {
        incomplete(format!(
            "X-Amz-Date must be in ISO 8601 basic format YYYYMMDD'T'HHMMSS'Z', not '{value}'"
        ))
    };
    let b = value.as_bytes();
    let shape_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape_ok {
        return Err(bad());
    }
    // The shape is checked, so each field is its digits; jiff checks the
    // calendar (no 31 April, no hour 24) and the arithmetic. By position:
    // strptime and a zoned conversion were a tenth of a verification.
    let number = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .fold(0i32, |n, d| n * 10 + i32::from(d - b'0'))
    };
    let field = |range| i8::try_from(number(range)).map_err(|_| bad());
    let year = i16::try_from(number(0..4)).map_err(|_| bad())?;
    let civil = jiff::civil::DateTime::new(
        year,
        field(4..6)?,
        field(6..8)?,
        field(9..11)?,
        field(11..13)?,
        field(13..15)?,
        0,
    )
    .map_err(|_| bad())?;
    jiff::tz::TimeZone::UTC
        .to_timestamp(civil)
        .map(|t| t.as_second())
        .map_err(|_| bad())
}

/// Formats seconds since the epoch as `YYYYMMDDTHHMMSSZ` (UTC).
fn format_amz_date(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

mod canonical;
#[cfg(test)]
mod tests;
