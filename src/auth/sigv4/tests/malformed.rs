//! Malformed requests: each broken Authorization header, date, presigned
//! query or mix gets its specific error.

use super::*;

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
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=Host;X-Amz-Date, {sig}"),
            &i,
            "invalid header name 'Host'",
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;;x-amz-date, {sig}"),
            &i,
            "invalid header name ''",
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=x-amz-date;host, {sig}"),
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
