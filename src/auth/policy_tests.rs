//! Policy parsing and evaluation.

use serde_json::json;

use super::*;

fn set(doc: Value) -> PolicySet {
    PolicySet::parse([&doc]).unwrap()
}

fn decide(set: &PolicySet, action: &str, resource: &str, context: &[(&str, &str)]) -> Decision {
    let context: Context = context
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), vec![v.to_string()]))
        .collect();
    set.evaluate(&Request {
        action,
        resources: &[resource.to_string()],
        context: &context,
    })
}

const SVC: &str = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-inventory";
const OTHER: &str = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-orders";

#[test]
fn wildcards() {
    for (p, v, want) in [
        ("*", "", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbbd", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*:*", "x:y", true),
        ("servicediscovery:Get*", "servicediscovery:GetService", true),
        ("*instance*", "registerinstance", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
    ] {
        assert_eq!(glob(p.as_bytes(), v.as_bytes()), want, "{p} {v}");
        // The compiled pattern (with its shortcuts for `*` and `prefix*`)
        // agrees with the general matcher.
        assert_eq!(Pattern::new(p, false).matches(v), want, "{p} {v}");
    }
    for (p, v, want) in [
        ("servicediscovery:Get*", "servicediscovery:Get", true),
        ("servicediscovery:Get*", "servicediscovery:ge", false),
        ("ab?*", "ab", false),
        ("ab?*", "abc", true),
        ("a**", "a", true),
        ("a*b*", "ab", true),
    ] {
        assert_eq!(Pattern::new(p, false).matches(v), want, "{p} {v}");
        assert_eq!(glob(p.as_bytes(), v.as_bytes()), want, "{p} {v}");
    }
}

#[test]
fn the_seeds_least_privilege_key() {
    let p = set(json!({
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Allow",
            "Action": "servicediscovery:RegisterInstance",
            "Resource": SVC
        }
    }));
    assert_eq!(
        decide(&p, "servicediscovery:RegisterInstance", SVC, &[]),
        Decision::Allow
    );
    // Actions are case-insensitive, resources are not.
    assert_eq!(
        decide(&p, "ServiceDiscovery:registerinstance", SVC, &[]),
        Decision::Allow
    );
    assert_eq!(
        decide(
            &p,
            "servicediscovery:RegisterInstance",
            &SVC.to_uppercase(),
            &[]
        ),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&p, "servicediscovery:RegisterInstance", OTHER, &[]),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(
            &p,
            "servicediscovery:DeleteNamespace",
            "arn:aws:servicediscovery:us-east-1:000000000000:namespace/ns-x",
            &[]
        ),
        Decision::ImplicitDeny
    );
}

#[test]
fn explicit_deny_beats_allow() {
    let p = set(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "servicediscovery:*", "Resource": "*"},
            {"Sid": "NoDeletes", "Effect": "Deny", "Action": "servicediscovery:Delete*", "Resource": "*"}
        ]
    }));
    assert_eq!(
        decide(&p, "servicediscovery:GetService", SVC, &[]),
        Decision::Allow
    );
    assert_eq!(
        decide(&p, "servicediscovery:DeleteService", SVC, &[]),
        Decision::ExplicitDeny(Some("NoDeletes".into()))
    );
}

#[test]
fn not_action_and_not_resource() {
    let p = set(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "NotAction": "servicediscovery:Delete*", "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "NotResource": SVC}
        ]
    }));
    assert_eq!(
        decide(&p, "servicediscovery:GetService", SVC, &[]),
        Decision::Allow
    );
    assert_eq!(
        decide(&p, "servicediscovery:DeleteService", SVC, &[]),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&p, "servicediscovery:GetService", OTHER, &[]),
        Decision::ExplicitDeny(None)
    );
}

#[test]
fn a_read_only_key_may_discover_by_name() {
    let p = set(json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision"],
            "Resource": "*",
            "Condition": {"StringEquals": {"servicediscovery:NamespaceName": ["quickship.local", "shop.local"]}}
        }]
    }));
    let ns = |n| [("servicediscovery:NamespaceName", n)];
    assert_eq!(
        decide(
            &p,
            "servicediscovery:DiscoverInstances",
            "*",
            &ns("shop.local")
        ),
        Decision::Allow
    );
    assert_eq!(
        decide(
            &p,
            "servicediscovery:DiscoverInstances",
            "*",
            &ns("other.local")
        ),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&p, "servicediscovery:DiscoverInstances", "*", &[]),
        Decision::ImplicitDeny,
        "a missing key does not equal anything"
    );
    assert_eq!(
        decide(
            &p,
            "servicediscovery:RegisterInstance",
            SVC,
            &ns("shop.local")
        ),
        Decision::ImplicitDeny
    );
}

#[test]
fn every_condition_operator() {
    let key = "servicediscovery:ServiceName";
    let case = |op: &str, wanted: Value, value: Option<&str>| {
        let p = set(json!({
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
                          "Condition": {op: {key: wanted}}}
        }));
        let ctx: Vec<(&str, &str)> = value.map(|v| (key, v)).into_iter().collect();
        decide(&p, "servicediscovery:GetService", "*", &ctx) == Decision::Allow
    };
    assert!(case("StringEquals", json!("inventory"), Some("inventory")));
    assert!(!case("StringEquals", json!("inventory"), Some("Inventory")));
    assert!(case("StringNotEquals", json!("inventory"), Some("orders")));
    assert!(!case(
        "StringNotEquals",
        json!("inventory"),
        Some("inventory")
    ));
    assert!(
        case("StringNotEquals", json!("inventory"), None),
        "negated holds without the key"
    );
    assert!(case(
        "StringEqualsIgnoreCase",
        json!("INVENTORY"),
        Some("inventory")
    ));
    assert!(case(
        "StringNotEqualsIgnoreCase",
        json!("INVENTORY"),
        Some("orders")
    ));
    assert!(case("StringLike", json!("inv*"), Some("inventory")));
    assert!(!case("StringLike", json!("inv?"), Some("inventory")));
    assert!(case("StringNotLike", json!("ord*"), Some("inventory")));
    assert!(case("ArnEquals", json!(SVC), Some(SVC)));
    assert!(case(
        "ArnLike",
        json!("arn:aws:servicediscovery:*:*:service/srv-inv*"),
        Some(SVC)
    ));
    assert!(case("ArnNotEquals", json!(SVC), Some(OTHER)));
    assert!(case("ArnNotLike", json!("*:service/srv-inv*"), Some(OTHER)));
    assert!(case("Null", json!("true"), None));
    assert!(!case("Null", json!("true"), Some("x")));
    assert!(case("Null", json!(false), Some("x")));
    assert!(case("Bool", json!(true), Some("true")));
    assert!(!case("Bool", json!(true), Some("false")));
    assert!(case("StringEqualsIfExists", json!("inventory"), None));
    assert!(!case(
        "StringEqualsIfExists",
        json!("inventory"),
        Some("orders")
    ));
    assert!(
        case(
            "StringEquals",
            json!(["orders", "inventory"]),
            Some("inventory")
        ),
        "values are ORed"
    );
}

#[test]
fn multi_valued_keys_and_anded_conditions() {
    let p = set(json!({
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {
                "ForAllValues:StringLike": {"aws:TagKeys": ["team*", "env"]},
                "StringEquals": {"servicediscovery:NamespaceName": "shop.local"}
            }}
    }));
    let eval = |tags: &[&str], ns: &str| {
        let mut ctx = Context::new();
        ctx.insert(
            "aws:tagkeys".into(),
            tags.iter().map(|s| s.to_string()).collect(),
        );
        ctx.insert("servicediscovery:namespacename".into(), vec![ns.into()]);
        p.evaluate(&Request {
            action: "servicediscovery:TagResource",
            resources: &["*".into()],
            context: &ctx,
        })
    };
    assert_eq!(eval(&["team-a", "env"], "shop.local"), Decision::Allow);
    assert_eq!(
        eval(&["team-a", "owner"], "shop.local"),
        Decision::ImplicitDeny
    );
    assert_eq!(
        eval(&["env"], "other"),
        Decision::ImplicitDeny,
        "conditions are ANDed"
    );
    let any = set(json!({
        "Version": "2012-10-17",
        "Statement": {"Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": "owner"}}}
    }));
    let mut ctx = Context::new();
    ctx.insert("aws:tagkeys".into(), vec!["env".into(), "owner".into()]);
    assert_eq!(
        any.evaluate(&Request {
            action: "x:y",
            resources: &["*".into()],
            context: &ctx
        }),
        Decision::ExplicitDeny(None)
    );
}

#[test]
fn bad_documents_each_get_a_specific_error() {
    let cases = [
        (json!("text"), "not a JSON object"),
        (
            json!({"Statement": []}),
            "Version \"2012-10-17\" is required",
        ),
        (
            json!({"Version": "2020-01-01", "Statement": {}}),
            "is not 2012-10-17",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": []}),
            "non-empty array",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": [], "Extra": 1}),
            "unknown element \"Extra\"",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Action": "*", "Resource": "*"}}),
            "Effect is required",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}),
            "Effect \"Maybe\"",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Resource": "*"}}),
            "Action (or NotAction) is required",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}}),
            "cannot both be given",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*"}}),
            "Resource (or NotResource) is required",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": [], "Resource": "*"}}),
            "must not be empty",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "servicediscovery:RegisterInstances", "Resource": "*"}}),
            "no action \"RegisterInstances\"",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "RegisterInstance", "Resource": "*"}}),
            "is not service:Action",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}}),
            "Principal is for resource policies",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"NumericLessThan": {"k": "1"}}}}),
            "\"NumericLessThan\" is not supported",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:${aws:username}"}}),
            "policy variables",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": 7, "Resource": "*"}}),
            "expected a string",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": "x"}}),
            "Condition must be an object",
        ),
    ];
    for (doc, want) in cases {
        let err = PolicySet::parse([&doc]).unwrap_err().to_string();
        assert!(err.contains(want), "{doc}: {err:?} should say {want:?}");
    }
    // The statement is named in the error.
    let err = PolicySet::parse([&json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "Second", "Effect": "Nope", "Action": "*", "Resource": "*"}
    ]})])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("Statement[1] (Second)"), "{err}");
}

#[test]
fn a_request_on_several_resources_needs_all_of_them() {
    let p = set(json!({"Version": "2012-10-17", "Statement":
        {"Effect": "Allow", "Action": "*", "Resource": SVC}}));
    let ctx = Context::new();
    let both = [SVC.to_string(), OTHER.to_string()];
    assert_eq!(
        p.evaluate(&Request {
            action: "servicediscovery:GetService",
            resources: &both,
            context: &ctx
        }),
        Decision::ImplicitDeny
    );
    assert!(PolicySet::default().is_empty());
    assert_eq!(
        PolicySet::default().evaluate(&Request {
            action: "a:b",
            resources: &both,
            context: &ctx
        }),
        Decision::ImplicitDeny
    );
}
