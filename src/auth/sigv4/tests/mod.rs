//! SigV4 verification: the AWS test-suite vectors, the AWS SDK's own signer,
//! and malformed requests, each with its error.
use super::canonical::{push_trimmed, uri_encode};
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

mod malformed;
