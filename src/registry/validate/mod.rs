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
mod tests;
