//! SigV4's canonical request parts: headers, path and query as the signer
//! saw them (the AWS spec's canonicalisation rules, as the SDKs apply them).

use std::borrow::Cow;
use std::fmt::Write as _;

use super::{AuthError, hex_digit, incomplete};

/// How many values a request has for one header, and the value when it has
/// exactly one (the checks that need a single value read no more; nothing
/// is collected, as this runs on every signed request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderValue<'a> {
    /// The header is absent.
    Absent,
    /// The header's one value.
    One(&'a str),
    /// The header was sent more than once.
    Repeated,
}

/// The value(s) of header `name` (lowercase).
pub(super) fn header_value<'a>(headers: &[(&'a str, &'a str)], name: &str) -> HeaderValue<'a> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v);
    match (values.next(), values.next()) {
        (None, _) => HeaderValue::Absent,
        (Some(value), None) => HeaderValue::One(value),
        (Some(_), Some(_)) => HeaderValue::Repeated,
    }
}

/// `name:value\n` for each signed header, in the (sorted) signed order.
/// `signed` is the (already checked) `SignedHeaders` value.
pub(super) fn canonical_headers(
    signed: &str,
    headers: &[(&str, &str)],
) -> Result<String, AuthError> {
    let mut out = String::with_capacity(256);
    for name in signed.split(';') {
        out.push_str(name);
        out.push(':');
        // The values in the order received, without collecting them.
        let mut found = 0;
        for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if found > 0 {
                out.push(',');
            }
            push_trimmed(&mut out, value);
            found += 1;
        }
        if found == 0 {
            return Err(incomplete(format!(
                "SignedHeaders names '{name}', which the request does not have"
            )));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Appends `value` trimmed, with runs of spaces collapsed to one, as SigV4
/// canonicalises header values.
pub(super) fn push_trimmed(out: &mut String, value: &str) {
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
pub(super) fn canonical_uri(path: &str) -> Cow<'_, str> {
    // Every Cloud Map call is a POST to `/`.
    if path == "/" || path.is_empty() {
        return Cow::Borrowed("/");
    }
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
    Cow::Owned(out)
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`
/// (uppercase hex).
pub(super) fn uri_encode(out: &mut String, bytes: &[u8]) {
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
pub(super) fn form_decode(component: &str) -> String {
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
pub(super) fn parse_query(query: &str) -> Vec<(String, String)> {
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
pub(super) fn canonical_query(query: &[(String, String)], presigned: bool) -> String {
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
