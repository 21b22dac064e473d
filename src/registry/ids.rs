//! Identifiers and ARNs in Cloud Map's formats.

use rand::Rng;
use rand::distr::Alphanumeric;

/// Random lowercase alphanumerics, the alphabet Cloud Map uses in its ids.
fn random_lower(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .map(|b| (b as char).to_ascii_lowercase())
        .take(n)
        .collect()
}

/// A new namespace id: `ns-` followed by 16 lowercase alphanumerics.
pub fn namespace_id() -> String {
    format!("ns-{}", random_lower(16))
}

/// A new service id: `srv-` followed by 16 lowercase alphanumerics.
pub fn service_id() -> String {
    format!("srv-{}", random_lower(16))
}

/// A new operation id: 32 characters, a dash and 8 more, like
/// `gv4g5meo7ndmeh4fqskygvk23d2fijwa-k9302yzd`.
pub fn operation_id() -> String {
    format!("{}-{}", random_lower(32), random_lower(8))
}

/// A hosted-zone id for a DNS namespace (`Z` and 20 uppercase alphanumerics,
/// the shape of a Route 53 zone id).
pub fn hosted_zone_id() -> String {
    format!("Z{}", random_lower(20).to_ascii_uppercase())
}

/// The partition, region and account that ARNs are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnScope {
    /// AWS region reported in ARNs, e.g. `us-east-1`.
    pub region: String,
    /// Twelve-digit account id reported in ARNs and as resource owner.
    pub account: String,
}

impl Default for ArnScope {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        }
    }
}

impl ArnScope {
    /// `arn:aws:servicediscovery:<region>:<account>:namespace/<id>`.
    pub fn namespace_arn(&self, id: &str) -> String {
        format!(
            "arn:aws:servicediscovery:{}:{}:namespace/{id}",
            self.region, self.account
        )
    }

    /// `arn:aws:servicediscovery:<region>:<account>:service/<id>`.
    pub fn service_arn(&self, id: &str) -> String {
        format!(
            "arn:aws:servicediscovery:{}:{}:service/{id}",
            self.region, self.account
        )
    }
}

/// What an id-or-ARN argument refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// A namespace (`ns-…`, `…:namespace/ns-…`).
    Namespace,
    /// A service (`srv-…`, `…:service/srv-…`).
    Service,
}

/// Accepts an id or an ARN wherever Cloud Map does and returns the bare id.
/// Anything that is not an ARN is returned unchanged (and then simply not
/// found if it is not a real id).
pub fn strip_arn(value: &str, kind: ResourceKind) -> &str {
    if !value.starts_with("arn:") {
        return value;
    }
    let marker = match kind {
        ResourceKind::Namespace => ":namespace/",
        ResourceKind::Service => ":service/",
    };
    match value.rfind(marker) {
        Some(i) if value.contains(":servicediscovery:") => &value[i + marker.len()..],
        _ => value,
    }
}

/// Parses a resource ARN (for the tagging operations) into its kind and id.
pub fn parse_arn(arn: &str) -> Option<(ResourceKind, &str)> {
    if !arn.starts_with("arn:") || !arn.contains(":servicediscovery:") {
        return None;
    }
    for (kind, marker) in [
        (ResourceKind::Namespace, ":namespace/"),
        (ResourceKind::Service, ":service/"),
    ] {
        if let Some(i) = arn.rfind(marker) {
            let id = &arn[i + marker.len()..];
            if !id.is_empty() {
                return Some((kind, id));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower_alnum(s: &str) -> bool {
        s.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    }

    #[test]
    fn ids_have_cloud_maps_shapes() {
        let ns = namespace_id();
        assert!(ns.starts_with("ns-") && ns.len() == 19 && lower_alnum(&ns[3..]));
        let srv = service_id();
        assert!(srv.starts_with("srv-") && srv.len() == 20 && lower_alnum(&srv[4..]));
        let op = operation_id();
        let (a, b) = op.split_once('-').unwrap();
        assert!(a.len() == 32 && b.len() == 8 && lower_alnum(a) && lower_alnum(b));
        assert_ne!(namespace_id(), namespace_id());
    }

    #[test]
    fn arns_round_trip() {
        let scope = ArnScope::default();
        let arn = scope.service_arn("srv-p5zdwlg5uvvzjita");
        assert_eq!(
            arn,
            "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-p5zdwlg5uvvzjita"
        );
        assert_eq!(
            strip_arn(&arn, ResourceKind::Service),
            "srv-p5zdwlg5uvvzjita"
        );
        assert_eq!(strip_arn("srv-x", ResourceKind::Service), "srv-x");
        assert_eq!(
            parse_arn(&scope.namespace_arn("ns-a")),
            Some((ResourceKind::Namespace, "ns-a"))
        );
        assert_eq!(parse_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(parse_arn("ns-a"), None);
    }
}
