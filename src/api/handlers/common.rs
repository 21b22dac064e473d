//! Request parsing, pagination, list filters and the lookups several resources
//! share, and the request shapes several of them use.

use serde_json::{Map, Value, json};

use super::Result;
use crate::api::ApiError;
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::*;
use crate::registry::{self as reg, Registry, ServiceEntry};
use serde::de::DeserializeOwned;

/// Parses a request body. An empty body is an empty object, as SDKs send
/// `{}` for requests without members.
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    // Malformed JSON and members of the wrong type are both
    // SerializationException in the AWS JSON protocol.
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            "SerializationException",
            format!("cannot parse the request body: {e}"),
        )
    })
}

pub(super) fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| ApiError::invalid(format!("{field} is required")))
}

pub(super) fn required_str(value: Option<String>, field: &str) -> Result<String> {
    match value {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::invalid(format!("{field} is required"))),
    }
}

/// Epoch seconds with millisecond precision, as Cloud Map reports dates.
pub(super) fn date(ms: EpochMillis) -> Value {
    json!(ms as f64 / 1000.0)
}

pub(super) fn max_results(value: Option<i64>, max: i64, default: i64) -> Result<usize> {
    match value {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid(format!(
            "MaxResults must be between 1 and {max} (got {n})"
        ))),
    }
}

pub(super) fn tags(list: Option<Vec<wire::Tag>>) -> Result<Vec<Tag>> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(Tag {
                key: required(t.key, &format!("Tags[{i}].Key"))?,
                value: required(t.value, &format!("Tags[{i}].Value"))?,
            })
        })
        .collect()
}

pub(super) fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"Key": t.key, "Value": t.value}))
            .collect(),
    )
}

// ----- pagination -----------------------------------------------------------

/// Opaque page tokens: the hex-encoded sort key of the last item returned.
/// Resuming after a key (not an offset) keeps pages stable while the
/// registry changes between calls.
fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String> {
    let bad = || ApiError::invalid("NextToken is not a valid pagination token");
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// One page of `items` (sorted by key) after `token`, and the next token.
pub(super) fn paginate<T>(
    mut items: Vec<(String, T)>,
    token: Option<String>,
    max: usize,
) -> Result<(Vec<T>, Option<String>)> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match token.filter(|t| !t.is_empty()) {
        Some(t) => {
            let after = decode_token(&t)?;
            items.partition_point(|(k, _)| *k <= after)
        }
        None => 0,
    };
    let mut rest: Vec<(String, T)> = items.into_iter().skip(start).collect();
    let next = (rest.len() > max).then(|| encode_token(&rest[max - 1].0));
    rest.truncate(max);
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

pub(super) fn page_json(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(items));
    if let Some(n) = next {
        out.insert("NextToken".into(), n.into());
    }
    Value::Object(out)
}

/// A list filter with its condition checked against what the field allows.
pub(super) struct ParsedFilter {
    /// The field filtered on (`TYPE`, `NAME`, `NAMESPACE_ID`, ...).
    pub(super) name: String,
    /// The values to compare with (one, or two for `BETWEEN`).
    pub(super) values: Vec<String>,
    condition: String,
}

pub(super) fn parse_filters(
    filters: Option<Vec<wire::Filter>>,
    allowed: &[(&str, &[&str])],
) -> Result<Vec<ParsedFilter>> {
    let mut out = Vec::new();
    for (i, f) in filters.unwrap_or_default().into_iter().enumerate() {
        let name = required_str(f.name, &format!("Filters[{i}].Name"))?;
        let Some((_, conditions)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(ApiError::invalid(format!(
                "Filters[{i}].Name {name:?} is not one of {}",
                allowed
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let values = required(f.values, &format!("Filters[{i}].Values"))?;
        let condition = f.condition.unwrap_or_else(|| "EQ".into());
        if !conditions.contains(&condition.as_str()) {
            return Err(ApiError::invalid(format!(
                "Filters[{i}].Condition {condition:?} is not allowed for {name} (allowed: {})",
                conditions.join(", ")
            )));
        }
        let count_ok = match condition.as_str() {
            "EQ" | "BEGINS_WITH" => values.len() == 1,
            "BETWEEN" => values.len() == 2,
            _ => !values.is_empty(),
        };
        if !count_ok {
            return Err(ApiError::invalid(format!(
                "Filters[{i}]: condition {condition} takes {} value(s), got {}",
                match condition.as_str() {
                    "BETWEEN" => "2",
                    "IN" => "1 or more",
                    _ => "1",
                },
                values.len()
            )));
        }
        out.push(ParsedFilter {
            name,
            values,
            condition,
        });
    }
    Ok(out)
}

impl ParsedFilter {
    /// Whether `value` passes the filter's condition.
    pub(super) fn matches(&self, value: &str) -> bool {
        match self.condition.as_str() {
            "BEGINS_WITH" => value.starts_with(&self.values[0]),
            _ => self.values.iter().any(|v| v == value),
        }
    }
}

pub(super) fn operation_id(op: &Operation) -> Value {
    json!({ "OperationId": op.id })
}

pub(super) fn resource_owner_matches(registry: &Registry, f: &ParsedFilter) -> bool {
    // Everything in this registry belongs to its own account.
    let own = &registry.config().scope.account;
    f.values.iter().any(|v| v == "SELF" || v == own)
}

pub(super) fn with_service<T>(
    registry: &Registry,
    id: &str,
    f: impl FnOnce(&reg::Index, &ServiceEntry) -> Result<T>,
) -> Result<T> {
    let bare = ids::strip_arn(id, ResourceKind::Service);
    let index = registry.read();
    let entry = index
        .service(bare)
        .ok_or_else(|| ApiError::from(reg::Error::ServiceNotFound(bare.to_string())))?;
    f(&index, entry)
}

pub(super) fn check_owner_account(registry: &Registry, owner: Option<&str>) -> Result<()> {
    match owner {
        Some(a) if a != registry.config().scope.account => Err(ApiError::invalid(format!(
            "OwnerAccount {a:?} is not this registry's account"
        ))),
        _ => Ok(()),
    }
}

/// The request shapes several resources share.
pub(super) mod wire {
    use serde::Deserialize;

    /// `{Key, Value}`.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Tag {
        pub key: Option<String>,
        pub value: Option<String>,
    }

    /// Requests that carry only `Id`.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ById {
        pub id: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Filter {
        pub name: Option<String>,
        pub values: Option<Vec<String>>,
        pub condition: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct List {
        pub next_token: Option<String>,
        pub max_results: Option<i64>,
        pub filters: Option<Vec<Filter>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token("ns-abc/ü");
        assert_eq!(decode_token(&t).unwrap(), "ns-abc/ü");
        assert!(decode_token("zz").is_err());
        assert!(decode_token("abc").is_err());
    }

    #[test]
    fn pages_resume_after_the_last_key() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let (p1, t1) = paginate(items.clone(), None, 2).unwrap();
        assert_eq!(p1, [0, 1]);
        let (p2, t2) = paginate(items.clone(), t1, 2).unwrap();
        assert_eq!(p2, [2, 3]);
        let (p3, t3) = paginate(items, t2, 2).unwrap();
        assert_eq!(p3, [4]);
        assert!(t3.is_none());
    }
}
