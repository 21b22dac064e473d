//! Tests of the validation rules and limits.

use super::*;
use crate::registry::model::*;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn service(dns: Option<DnsConfig>, hc: Option<HealthCheckConfig>) -> Service {
    Service {
        id: "srv-aaaaaaaaaaaaaaaa".into(),
        name: "svc".into(),
        namespace_id: "ns-aaaaaaaaaaaaaaaa".into(),
        description: None,
        kind: ServiceType::DnsHttp,
        dns_config: dns,
        health_check_config: hc,
        health_check_custom_config: None,
        attributes: Attributes::new(),
        creator_request_id: None,
        create_date: 0,
        update_date: 0,
        revision: 0,
        owner: Owner::Api,
        tags: vec![],
    }
}

fn dns(policy: RoutingPolicy, types: &[RecordType]) -> DnsConfig {
    DnsConfig {
        routing_policy: policy,
        records: types
            .iter()
            .map(|t| DnsRecord { kind: *t, ttl: 10 })
            .collect(),
    }
}

#[test]
fn instance_id_accepts_the_documented_alphabet_and_rejects_the_rest() {
    assert!(instance_id("user-auth-prod-01").is_ok());
    assert!(instance_id("i/a:b.c@d_e-f").is_ok());
    assert!(instance_id(&"a".repeat(64)).is_ok());
    assert!(instance_id(&"a".repeat(65)).is_err());
    assert!(instance_id("").is_err());
    assert!(instance_id("has space").is_err());
    assert!(instance_id("naïve").is_err());
}

#[test]
fn attribute_keys_are_visible_ascii_up_to_255() {
    assert!(attribute_key("environment").is_ok());
    assert!(attribute_key("a!~{}").is_ok());
    assert!(attribute_key(&"k".repeat(255)).is_ok());
    assert!(attribute_key(&"k".repeat(256)).is_err());
    assert!(attribute_key("").is_err());
    assert!(attribute_key("with space").is_err());
    assert!(attribute_key("tab\t").is_err());
}

#[test]
fn attribute_values_follow_cloud_maps_pattern() {
    assert!(attribute_value("k", "").is_ok());
    assert!(attribute_value("k", "UserAuth").is_ok());
    assert!(attribute_value("k", "two words\tand tab").is_ok());
    // The model's pattern allows a trailing space, but not a leading one.
    assert!(attribute_value("k", "trailing ").is_ok());
    assert!(attribute_value("k", " leading").is_err());
    assert!(attribute_value("k", "new\nline").is_err());
    assert!(attribute_value("k", "ünicode").is_err());
    assert!(attribute_value("k", &"v".repeat(1024)).is_ok());
    assert!(attribute_value("k", &"v".repeat(1025)).is_err());
}

#[test]
fn at_most_thirty_custom_attributes_but_reserved_ones_do_not_count() {
    let mut a: Attributes = (0..30).map(|i| (format!("k{i}"), "v")).collect();
    a.insert(AWS_INSTANCE_IPV4, "10.0.0.1");
    a.insert(AWS_INSTANCE_PORT, "80");
    assert!(attributes(&a).is_ok());
    a.insert("k30", "v");
    let err = attributes(&a).unwrap_err().to_string();
    assert!(err.contains("at most 30 custom attributes"), "{err}");
}

#[test]
fn attributes_total_at_most_5000_characters() {
    let a: Attributes = (0..5).map(|i| (format!("k{i}"), "v".repeat(998))).collect();
    assert!(attributes(&a).is_ok()); // 5 * (2 + 998) = 5000
    let b: Attributes = (0..5).map(|i| (format!("k{i}"), "v".repeat(999))).collect();
    assert!(attributes(&b).unwrap_err().to_string().contains("5000"));
}

#[test]
fn a_record_requires_ipv4_and_aaaa_requires_ipv6() {
    let s = service(Some(dns(RoutingPolicy::Multivalue, &[RecordType::A])), None);
    let ns = NamespaceType::DnsPrivate;
    assert!(
        instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]), &s, ns).is_ok()
    );
    let err = instance_attributes_for_service(&attrs(&[("x", "y")]), &s, ns).unwrap_err();
    assert!(err.to_string().contains(AWS_INSTANCE_IPV4));
    let s6 = service(
        Some(dns(RoutingPolicy::Multivalue, &[RecordType::Aaaa])),
        None,
    );
    assert!(
        instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV6, "fd00::1")]), &s6, ns).is_ok()
    );
    assert!(
        instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]), &s6, ns)
            .is_err()
    );
}

#[test]
fn addresses_and_ports_must_parse() {
    let s = service(None, None);
    let ns = NamespaceType::Http;
    for (k, good, bad) in [
        (AWS_INSTANCE_IPV4, "192.0.2.44", "192.0.2.300"),
        (AWS_INSTANCE_IPV6, "2001:db8::1", "2001:db8::g"),
        (AWS_INSTANCE_PORT, "8080", "70000"),
        (AWS_INIT_HEALTH_STATUS, "UNHEALTHY", "SICK"),
        (AWS_INSTANCE_CNAME, "www.example.com", "bad name!"),
    ] {
        assert!(
            instance_attributes_for_service(&attrs(&[(k, good)]), &s, ns).is_ok(),
            "{k}"
        );
        let err = instance_attributes_for_service(&attrs(&[(k, bad)]), &s, ns).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
    }
}

#[test]
fn srv_requires_an_address_and_a_port() {
    let s = service(
        Some(dns(RoutingPolicy::Multivalue, &[RecordType::Srv])),
        None,
    );
    let ns = NamespaceType::DnsPrivate;
    let ok = attrs(&[(AWS_INSTANCE_IPV6, "fd00::1"), (AWS_INSTANCE_PORT, "80")]);
    assert!(instance_attributes_for_service(&ok, &s, ns).is_ok());
    let no_port = attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]);
    assert!(
        instance_attributes_for_service(&no_port, &s, ns)
            .unwrap_err()
            .to_string()
            .contains(AWS_INSTANCE_PORT)
    );
    let no_ip = attrs(&[(AWS_INSTANCE_PORT, "80")]);
    assert!(instance_attributes_for_service(&no_ip, &s, ns).is_err());
}

#[test]
fn cname_service_requires_the_cname_attribute() {
    let s = service(
        Some(dns(RoutingPolicy::Weighted, &[RecordType::Cname])),
        None,
    );
    let ns = NamespaceType::DnsPublic;
    assert!(
        instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_CNAME, "db.example.com")]), &s, ns)
            .is_ok()
    );
    assert!(instance_attributes_for_service(&attrs(&[]), &s, ns).is_err());
}

#[test]
fn active_health_check_requires_port_and_address() {
    let hc = HealthCheckConfig {
        kind: HealthCheckType::Http,
        resource_path: None,
        failure_threshold: None,
        interval_seconds: None,
        timeout_seconds: None,
    };
    let s = service(None, Some(hc));
    let ns = NamespaceType::Http;
    let ok = attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1"), (AWS_INSTANCE_PORT, "80")]);
    assert!(instance_attributes_for_service(&ok, &s, ns).is_ok());
    let err = instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]), &s, ns)
        .unwrap_err();
    assert!(err.to_string().contains("health check"));
}

#[test]
fn alias_needs_weighted_a_records_and_no_instance_attributes() {
    let ns = NamespaceType::DnsPublic;
    let alias = attrs(&[(AWS_ALIAS_DNS_NAME, "lb-1.elb.amazonaws.com")]);
    let good = service(Some(dns(RoutingPolicy::Weighted, &[RecordType::A])), None);
    assert!(instance_attributes_for_service(&alias, &good, ns).is_ok());
    let multivalue = service(Some(dns(RoutingPolicy::Multivalue, &[RecordType::A])), None);
    assert!(instance_attributes_for_service(&alias, &multivalue, ns).is_err());
    let srv = service(Some(dns(RoutingPolicy::Weighted, &[RecordType::Srv])), None);
    assert!(instance_attributes_for_service(&alias, &srv, ns).is_err());
    let mut mixed = alias.clone();
    mixed.insert(AWS_INSTANCE_PORT, "80");
    assert!(
        instance_attributes_for_service(&mixed, &good, ns)
            .unwrap_err()
            .to_string()
            .contains(AWS_INSTANCE_PORT)
    );
}

#[test]
fn ec2_instance_id_only_in_http_namespaces_and_only_with_init_health() {
    let s = service(None, None);
    let a = attrs(&[
        (AWS_EC2_INSTANCE_ID, "i-0123456789"),
        (AWS_INIT_HEALTH_STATUS, "HEALTHY"),
    ]);
    assert!(instance_attributes_for_service(&a, &s, NamespaceType::Http).is_ok());
    assert!(instance_attributes_for_service(&a, &s, NamespaceType::DnsPrivate).is_err());
    let mut b = a.clone();
    b.insert("team", "x");
    assert!(instance_attributes_for_service(&b, &s, NamespaceType::Http).is_err());
}

#[test]
fn service_names_are_dns_labels_with_underscores() {
    for ok in [
        "inventory-manager",
        "_exampleservice._tcp",
        "a",
        "a.b",
        "x_y",
        ".",
    ] {
        assert!(service_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-lead",
        "trail-",
        "_",
        "a..b",
        "has space",
        &"a".repeat(64),
        &"a.".repeat(64),
    ] {
        assert!(service_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn namespace_names_depend_on_type() {
    assert!(namespace_name("quickship.local", NamespaceType::DnsPrivate).is_ok());
    assert!(namespace_name("example.com", NamespaceType::DnsPublic).is_ok());
    assert!(namespace_name("my api!", NamespaceType::Http).is_err());
    assert!(namespace_name("my-api!", NamespaceType::Http).is_ok());
    assert!(namespace_name("my-api!", NamespaceType::DnsPrivate).is_err());
    assert!(namespace_name("arn:aws:x", NamespaceType::Http).is_err());
    assert!(namespace_name(&"a".repeat(1024), NamespaceType::Http).is_ok());
    assert!(namespace_name(&"a".repeat(1025), NamespaceType::Http).is_err());
    assert!(namespace_name("-bad.example.com", NamespaceType::DnsPublic).is_err());
    assert!(namespace_name("", NamespaceType::Http).is_err());
}

#[test]
fn dns_config_combinations() {
    use RecordType::*;
    use RoutingPolicy::*;
    for ok in [
        &[A][..],
        &[Aaaa],
        &[A, Aaaa],
        &[Srv],
        &[Srv, A],
        &[Srv, A, Aaaa],
    ] {
        assert!(dns_config(&dns(Multivalue, ok), None).is_ok(), "{ok:?}");
    }
    assert!(dns_config(&dns(Weighted, &[Cname]), None).is_ok());
    assert!(
        dns_config(&dns(Multivalue, &[Cname]), None)
            .unwrap_err()
            .to_string()
            .contains("WEIGHTED")
    );
    assert!(dns_config(&dns(Weighted, &[Cname, A]), None).is_err());
    assert!(dns_config(&dns(Multivalue, &[A, A]), None).is_err());
    assert!(dns_config(&dns(Multivalue, &[]), None).is_err());
    let hc = HealthCheckConfig {
        kind: HealthCheckType::Tcp,
        resource_path: None,
        failure_threshold: Some(3),
        interval_seconds: None,
        timeout_seconds: None,
    };
    assert!(dns_config(&dns(Weighted, &[Cname]), Some(&hc)).is_err());
    let mut bad_ttl = dns(Multivalue, &[A]);
    bad_ttl.records[0].ttl = -1;
    assert!(
        dns_config(&bad_ttl, None)
            .unwrap_err()
            .to_string()
            .contains("TTL")
    );
}

#[test]
fn health_check_rules() {
    let hc = |kind, path: Option<&str>, t| HealthCheckConfig {
        kind,
        resource_path: path.map(str::to_string),
        failure_threshold: t,
        interval_seconds: None,
        timeout_seconds: None,
    };
    use HealthCheckType::*;
    assert!(health_check_config(&hc(Http, Some("/health"), Some(3))).is_ok());
    assert!(health_check_config(&hc(Https, None, Some(1))).is_ok());
    assert!(health_check_config(&hc(Tcp, None, Some(10))).is_ok());
    assert!(health_check_config(&hc(Http, Some("health"), None)).is_err());
    assert!(health_check_config(&hc(Tcp, Some("/"), None)).is_err());
    assert!(health_check_config(&hc(Http, None, Some(0))).is_err());
    assert!(health_check_config(&hc(Http, None, Some(11))).is_err());
    let long = format!("/{}", "a".repeat(255));
    assert!(health_check_config(&hc(Http, Some(&long), None)).is_err());
}

#[test]
fn tags_limits() {
    let t = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    assert!(tags(&[t("team", ""), t("env", "prod")]).is_ok());
    assert!(tags(&[t("", "x")]).is_err());
    assert!(tags(&[t(&"k".repeat(129), "x")]).is_err());
    assert!(tags(&[t("k", &"v".repeat(257))]).is_err());
    assert!(tags(&[t("k", "a"), t("k", "b")]).is_err());
}

#[test]
fn descriptions_ttls_and_request_ids() {
    assert!(description(&"d".repeat(1024)).is_ok());
    assert!(description(&"d".repeat(1025)).is_err());
    assert!(ttl("TTL", 0).is_ok());
    assert!(ttl("TTL", MAX_TTL).is_ok());
    assert!(ttl("TTL", MAX_TTL + 1).is_err());
    assert!(request_id("CreatorRequestId", "abc").is_ok());
    assert!(request_id("CreatorRequestId", &"r".repeat(65)).is_err());
}
