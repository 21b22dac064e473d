//! Every Cloud Map validation rule and limit, implemented once.
//!
//! The API and the controller both go through these functions (the registry
//! calls them on every write), so a value the API would refuse can never enter
//! the registry through the controller either. Each function names the field
//! it checks so the caller's `InvalidInput` message says what is wrong.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::model::{
    Attributes, DnsConfig, HealthCheckConfig, HealthCheckType, NamespaceType, RecordType,
    RoutingPolicy, Service, Tag,
};
use super::{Error, Result};

/// Maximum number of custom (non-`AWS_*`) attributes per instance.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 30;
/// Maximum attribute key length.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 255;
/// Maximum attribute value length.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 1024;
/// Maximum total length of all attribute keys plus values of one instance.
pub const MAX_ATTRIBUTES_TOTAL_LEN: usize = 5000;
/// Maximum number of service attributes.
pub const MAX_SERVICE_ATTRIBUTES: usize = 30;
/// Maximum instance id length.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// Maximum description length.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Maximum length of a creator/updater request id.
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Maximum number of tags on one resource.
pub const MAX_TAGS: usize = 50;
/// Maximum TTL (record TTL and SOA TTL).
pub const MAX_TTL: i64 = 2_147_483_647;
/// Maximum resource path length of a health check.
pub const MAX_RESOURCE_PATH_LEN: usize = 255;
/// Maximum number of instances in one service (Cloud Map's fixed quota).
pub const MAX_INSTANCES_PER_SERVICE: usize = 1000;

/// Reserved attribute: Route 53 alias target (an ELB DNS name).
pub const AWS_ALIAS_DNS_NAME: &str = "AWS_ALIAS_DNS_NAME";
/// Reserved attribute: EC2 instance id (HTTP namespaces only).
pub const AWS_EC2_INSTANCE_ID: &str = "AWS_EC2_INSTANCE_ID";
/// Reserved attribute: initial custom health (`HEALTHY` or `UNHEALTHY`).
pub const AWS_INIT_HEALTH_STATUS: &str = "AWS_INIT_HEALTH_STATUS";
/// Reserved attribute: CNAME target.
pub const AWS_INSTANCE_CNAME: &str = "AWS_INSTANCE_CNAME";
/// Reserved attribute: IPv4 address.
pub const AWS_INSTANCE_IPV4: &str = "AWS_INSTANCE_IPV4";
/// Reserved attribute: IPv6 address.
pub const AWS_INSTANCE_IPV6: &str = "AWS_INSTANCE_IPV6";
/// Reserved attribute: port.
pub const AWS_INSTANCE_PORT: &str = "AWS_INSTANCE_PORT";

/// The reserved attribute keys; they do not count against the custom limit.
pub const RESERVED_ATTRIBUTES: [&str; 7] = [
    AWS_ALIAS_DNS_NAME,
    AWS_EC2_INSTANCE_ID,
    AWS_INIT_HEALTH_STATUS,
    AWS_INSTANCE_CNAME,
    AWS_INSTANCE_IPV4,
    AWS_INSTANCE_IPV6,
    AWS_INSTANCE_PORT,
];

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidInput(msg.into())
}

/// `[!-~]`: printable ASCII without space (the model's `a-zA-Z0-9!-~` class).
fn is_visible(c: char) -> bool {
    c.is_ascii_graphic()
}

/// An instance id: 1–64 characters of `[0-9a-zA-Z_/:.@-]`.
pub fn instance_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
        return Err(invalid(format!(
            "InstanceId must be 1 to {MAX_INSTANCE_ID_LEN} characters long (got {})",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_/:.@-".contains(*c)))
    {
        return Err(invalid(format!(
            "InstanceId {id:?} contains {c:?}; only letters, digits and _ / : . @ - are allowed"
        )));
    }
    Ok(())
}

/// An attribute key: 1–255 printable ASCII characters without spaces.
pub fn attribute_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_LEN {
        return Err(invalid(format!(
            "attribute key must be 1 to {MAX_ATTRIBUTE_KEY_LEN} characters long (got {} for {:?})",
            key.len(),
            truncate(key)
        )));
    }
    if let Some(c) = key.chars().find(|c| !is_visible(*c)) {
        return Err(invalid(format!(
            "attribute key {:?} contains {c:?}; only printable ASCII without spaces is allowed",
            truncate(key)
        )));
    }
    Ok(())
}

/// An attribute value: up to 1024 printable ASCII characters; spaces and tabs
/// are allowed after the first character, which must be visible (Cloud Map's
/// pattern `^([!-~][ \t!-~]*)?[!-~]?$`). The empty value is allowed.
pub fn attribute_value(key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_ATTRIBUTE_VALUE_LEN {
        return Err(invalid(format!(
            "value of attribute {key:?} is {} characters long; the maximum is {MAX_ATTRIBUTE_VALUE_LEN}",
            value.len()
        )));
    }
    let mut chars = value.chars();
    if let Some(first) = chars.next() {
        if !is_visible(first) {
            return Err(invalid(format!(
                "value of attribute {key:?} must start with a printable non-space ASCII character"
            )));
        }
        if let Some(c) = chars.find(|c| !(is_visible(*c) || *c == ' ' || *c == '\t')) {
            return Err(invalid(format!(
                "value of attribute {key:?} contains {c:?}; only printable ASCII, spaces and tabs are allowed"
            )));
        }
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether a key is one of Cloud Map's reserved `AWS_*` attributes.
pub fn is_reserved_attribute(key: &str) -> bool {
    RESERVED_ATTRIBUTES.contains(&key)
}

/// The shape of an attribute map: key and value patterns, the custom-attribute
/// count and the 5,000-character total.
pub fn attributes(attrs: &Attributes) -> Result<()> {
    let mut total = 0;
    let mut custom = 0;
    for (k, v) in attrs {
        attribute_key(k)?;
        attribute_value(k, v)?;
        total += k.len() + v.len();
        if !is_reserved_attribute(k) {
            custom += 1;
        }
    }
    if custom > MAX_CUSTOM_ATTRIBUTES {
        return Err(invalid(format!(
            "an instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes (got {custom})"
        )));
    }
    if total > MAX_ATTRIBUTES_TOTAL_LEN {
        return Err(invalid(format!(
            "the attributes' keys and values add up to {total} characters; the maximum is {MAX_ATTRIBUTES_TOTAL_LEN}"
        )));
    }
    Ok(())
}

/// Service attributes: 1–30 entries with the same key and value rules.
pub fn service_attributes(attrs: &Attributes) -> Result<()> {
    for (k, v) in attrs {
        attribute_key(k)?;
        attribute_value(k, v)?;
    }
    Ok(())
}

/// A DNS host name for `AWS_INSTANCE_CNAME` / `AWS_ALIAS_DNS_NAME`.
fn dns_name(field: &str, name: &str) -> Result<()> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{field} {name:?} is not a valid DNS name")))
    }
}

/// The reserved attributes an instance of `service` (in a namespace of type
/// `ns_type`) must, may or must not carry, and their value formats.
pub fn instance_attributes_for_service(
    attrs: &Attributes,
    service: &Service,
    ns_type: NamespaceType,
) -> Result<()> {
    attributes(attrs)?;
    let has = |k: &str| attrs.contains_key(k);
    let dns = service.dns_config.as_ref();
    let has_record = |t: RecordType| dns.is_some_and(|d| d.record(t).is_some());

    if let Some(v) = attrs.get(AWS_INSTANCE_IPV4)
        && v.parse::<Ipv4Addr>().is_err()
    {
        return Err(invalid(format!(
            "{AWS_INSTANCE_IPV4} {v:?} is not an IPv4 address"
        )));
    }
    if let Some(v) = attrs.get(AWS_INSTANCE_IPV6)
        && v.parse::<Ipv6Addr>().is_err()
    {
        return Err(invalid(format!(
            "{AWS_INSTANCE_IPV6} {v:?} is not an IPv6 address"
        )));
    }
    if let Some(v) = attrs.get(AWS_INSTANCE_PORT)
        && v.parse::<u16>().is_err()
    {
        return Err(invalid(format!(
            "{AWS_INSTANCE_PORT} {v:?} is not a port number (0-65535)"
        )));
    }
    if let Some(v) = attrs.get(AWS_INIT_HEALTH_STATUS)
        && v != "HEALTHY"
        && v != "UNHEALTHY"
    {
        return Err(invalid(format!(
            "{AWS_INIT_HEALTH_STATUS} must be HEALTHY or UNHEALTHY (got {v:?})"
        )));
    }
    if let Some(v) = attrs.get(AWS_INSTANCE_CNAME) {
        dns_name(AWS_INSTANCE_CNAME, v)?;
    }

    if let Some(alias) = attrs.get(AWS_ALIAS_DNS_NAME) {
        dns_name(AWS_ALIAS_DNS_NAME, alias)?;
        if !(has_record(RecordType::A) || has_record(RecordType::Aaaa)) {
            return Err(invalid(format!(
                "{AWS_ALIAS_DNS_NAME} needs a service with an A or AAAA record"
            )));
        }
        if dns.map(|d| d.routing_policy) != Some(RoutingPolicy::Weighted) {
            return Err(invalid(format!(
                "{AWS_ALIAS_DNS_NAME} needs a service with the WEIGHTED routing policy"
            )));
        }
        if let Some(k) = attrs.keys().find(|k| k.starts_with("AWS_INSTANCE_")) {
            return Err(invalid(format!(
                "{AWS_ALIAS_DNS_NAME} cannot be combined with {k}"
            )));
        }
        return Ok(());
    }

    if has(AWS_EC2_INSTANCE_ID) {
        if ns_type != NamespaceType::Http {
            return Err(invalid(format!(
                "{AWS_EC2_INSTANCE_ID} is only allowed in HTTP namespaces"
            )));
        }
        if let Some(k) = attrs
            .keys()
            .find(|k| *k != AWS_EC2_INSTANCE_ID && *k != AWS_INIT_HEALTH_STATUS)
        {
            return Err(invalid(format!(
                "with {AWS_EC2_INSTANCE_ID} the only other attribute allowed is {AWS_INIT_HEALTH_STATUS} (got {k})"
            )));
        }
        return Ok(());
    }

    if has_record(RecordType::A) && !has(AWS_INSTANCE_IPV4) {
        return Err(invalid(format!(
            "{AWS_INSTANCE_IPV4} is required because the service has an A record"
        )));
    }
    if has_record(RecordType::Aaaa) && !has(AWS_INSTANCE_IPV6) {
        return Err(invalid(format!(
            "{AWS_INSTANCE_IPV6} is required because the service has an AAAA record"
        )));
    }
    if has_record(RecordType::Srv) {
        if !has(AWS_INSTANCE_IPV4) && !has(AWS_INSTANCE_IPV6) {
            return Err(invalid(format!(
                "{AWS_INSTANCE_IPV4} or {AWS_INSTANCE_IPV6} is required because the service has an SRV record"
            )));
        }
        if !has(AWS_INSTANCE_PORT) {
            return Err(invalid(format!(
                "{AWS_INSTANCE_PORT} is required because the service has an SRV record"
            )));
        }
    }
    if has_record(RecordType::Cname) && !has(AWS_INSTANCE_CNAME) {
        return Err(invalid(format!(
            "{AWS_INSTANCE_CNAME} is required because the service has a CNAME record"
        )));
    }
    if service.health_check_config.is_some() {
        if !has(AWS_INSTANCE_PORT) {
            return Err(invalid(format!(
                "{AWS_INSTANCE_PORT} is required because the service has a health check"
            )));
        }
        if !has(AWS_INSTANCE_IPV4) && !has(AWS_INSTANCE_IPV6) {
            return Err(invalid(format!(
                "{AWS_INSTANCE_IPV4} or {AWS_INSTANCE_IPV6} is required because the service has a health check"
            )));
        }
    }
    Ok(())
}

/// A service name: DNS labels of `[a-zA-Z0-9_-]` (no leading or trailing
/// hyphen, single-character labels alphanumeric), 1–127 characters in all, or
/// exactly `.`.
pub fn service_name(name: &str) -> Result<()> {
    if name == "." {
        return Ok(());
    }
    if name.is_empty() || name.len() > 127 {
        return Err(invalid(format!(
            "Name must be 1 to 127 characters long (got {})",
            name.len()
        )));
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let edge_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let ok = match bytes.len() {
            0 => false,
            1 => bytes[0].is_ascii_alphanumeric(),
            n if n <= 63 => {
                edge_ok(bytes[0])
                    && edge_ok(bytes[n - 1])
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            }
            _ => false,
        };
        if !ok {
            return Err(invalid(format!(
                "Name {name:?} is not a valid service name: each dot-separated label must be 1-63 \
                 letters, digits, '-' or '_', must not start or end with '-', and a one-character \
                 label must be a letter or digit"
            )));
        }
    }
    Ok(())
}

/// A namespace name for the given namespace type.
pub fn namespace_name(name: &str, kind: NamespaceType) -> Result<()> {
    if name.starts_with("arn:") {
        return Err(invalid(format!(
            "Name {name:?} must not start with \"arn:\""
        )));
    }
    let max = match kind {
        NamespaceType::Http => 1024,
        NamespaceType::DnsPrivate | NamespaceType::DnsPublic => 253,
    };
    if name.is_empty() || name.len() > max {
        return Err(invalid(format!(
            "Name must be 1 to {max} characters long (got {})",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !is_visible(*c)) {
        return Err(invalid(format!(
            "Name {name:?} contains {c:?}; only printable ASCII without spaces is allowed"
        )));
    }
    if kind.is_dns() {
        // Waymark serves DNS namespaces as real zones, so (like Route 53's
        // hosted zones) the name must be a host name.
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        let labels_ok = !trimmed.is_empty()
            && trimmed.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b.len() <= 63
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
                    && (kind == NamespaceType::DnsPrivate
                        || (b[0] != b'-' && b[b.len() - 1] != b'-'))
            });
        if !labels_ok {
            return Err(invalid(format!(
                "Name {name:?} is not a valid DNS domain name (labels of 1-63 letters, digits, '-' or '_')"
            )));
        }
    }
    Ok(())
}

/// A description (≤1024 characters).
pub fn description(desc: &str) -> Result<()> {
    if desc.len() > MAX_DESCRIPTION_LEN {
        return Err(invalid(format!(
            "Description is {} characters long; the maximum is {MAX_DESCRIPTION_LEN}",
            desc.len()
        )));
    }
    Ok(())
}

/// A creator or updater request id (1–64 characters).
pub fn request_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_REQUEST_ID_LEN} characters long (got {})",
            id.len()
        )));
    }
    Ok(())
}

/// A TTL in seconds (0–2147483647).
pub fn ttl(field: &str, ttl: i64) -> Result<()> {
    if !(0..=MAX_TTL).contains(&ttl) {
        return Err(invalid(format!(
            "{field} must be between 0 and {MAX_TTL} (got {ttl})"
        )));
    }
    Ok(())
}

/// A DNS config: a non-empty set of distinct record types that is CNAME
/// alone or a subset of {A, AAAA, SRV}; CNAME needs WEIGHTED routing and no
/// active health check; TTLs in range.
///
/// Cloud Map documents the combinations A, AAAA, A+AAAA, SRV and CNAME; SRV
/// already implies A/AAAA records at the SRV target, so Waymark also accepts
/// SRV together with A and/or AAAA (the brief's `inventory-manager` uses it).
pub fn dns_config(dns: &DnsConfig, health: Option<&HealthCheckConfig>) -> Result<()> {
    if dns.records.is_empty() {
        return Err(invalid(
            "DnsConfig.DnsRecords must contain at least one record",
        ));
    }
    for (i, r) in dns.records.iter().enumerate() {
        ttl(&format!("DnsConfig.DnsRecords[{i}].TTL"), r.ttl)?;
        if dns.records[..i].iter().any(|o| o.kind == r.kind) {
            return Err(invalid(format!(
                "DnsConfig.DnsRecords lists the record type {} more than once",
                r.kind.as_str()
            )));
        }
    }
    if dns.record(RecordType::Cname).is_some() {
        if dns.records.len() > 1 {
            return Err(invalid(
                "a CNAME record cannot be combined with other record types",
            ));
        }
        if dns.routing_policy != RoutingPolicy::Weighted {
            return Err(invalid(
                "a CNAME record requires the WEIGHTED routing policy",
            ));
        }
        if health.is_some() {
            return Err(invalid(
                "a service with a CNAME record cannot have a HealthCheckConfig",
            ));
        }
    }
    Ok(())
}

/// An active health check: TCP takes no path; HTTP(S) paths start with `/`
/// and are at most 255 characters; the threshold is 1–10.
pub fn health_check_config(hc: &HealthCheckConfig) -> Result<()> {
    if let Some(path) = &hc.resource_path {
        if hc.kind == HealthCheckType::Tcp {
            return Err(invalid(
                "HealthCheckConfig.ResourcePath is not allowed for TCP health checks",
            ));
        }
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "HealthCheckConfig.ResourcePath {path:?} must start with '/'"
            )));
        }
        if path.len() > MAX_RESOURCE_PATH_LEN {
            return Err(invalid(format!(
                "HealthCheckConfig.ResourcePath must be at most {MAX_RESOURCE_PATH_LEN} characters"
            )));
        }
        if let Some(c) = path.chars().find(|c| !is_visible(*c)) {
            return Err(invalid(format!(
                "HealthCheckConfig.ResourcePath contains {c:?}"
            )));
        }
    }
    if let Some(t) = hc.failure_threshold {
        failure_threshold("HealthCheckConfig.FailureThreshold", t)?;
    }
    Ok(())
}

/// A failure threshold (1–10).
pub fn failure_threshold(field: &str, t: i32) -> Result<()> {
    if !(1..=10).contains(&t) {
        return Err(invalid(format!(
            "{field} must be between 1 and 10 (got {t})"
        )));
    }
    Ok(())
}

/// Tags: keys 1–128, values 0–256, no duplicate keys, at most 50.
pub fn tags(tags: &[Tag]) -> Result<()> {
    for (i, t) in tags.iter().enumerate() {
        if t.key.is_empty() || t.key.len() > 128 {
            return Err(invalid(format!(
                "Tags[{i}].Key must be 1 to 128 characters long"
            )));
        }
        if t.value.len() > 256 {
            return Err(invalid(format!(
                "Tags[{i}].Value must be at most 256 characters long"
            )));
        }
        if tags[..i].iter().any(|o| o.key == t.key) {
            return Err(invalid(format!("Tags lists the key {:?} twice", t.key)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;

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
            instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]), &s, ns)
                .is_ok()
        );
        let err = instance_attributes_for_service(&attrs(&[("x", "y")]), &s, ns).unwrap_err();
        assert!(err.to_string().contains(AWS_INSTANCE_IPV4));
        let s6 = service(
            Some(dns(RoutingPolicy::Multivalue, &[RecordType::Aaaa])),
            None,
        );
        assert!(
            instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV6, "fd00::1")]), &s6, ns)
                .is_ok()
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
            instance_attributes_for_service(
                &attrs(&[(AWS_INSTANCE_CNAME, "db.example.com")]),
                &s,
                ns
            )
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
        let err =
            instance_attributes_for_service(&attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]), &s, ns)
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
}
