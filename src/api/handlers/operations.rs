//! Operations: `GetOperation` and `ListOperations`.

use serde_json::{Map, Value, json};

use super::Result;
use super::common::*;
use crate::api::ApiError;
use crate::registry::model::*;
use crate::registry::{self as reg, Registry};

fn operation_json(registry: &Registry, op: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("Id".into(), op.id.clone().into());
    out.insert(
        "OwnerAccount".into(),
        registry.config().scope.account.clone().into(),
    );
    out.insert("Type".into(), op.kind.as_str().into());
    out.insert("Status".into(), op.status.as_str().into());
    if let Some(m) = &op.error_message {
        out.insert("ErrorMessage".into(), m.clone().into());
    }
    if let Some(c) = &op.error_code {
        out.insert("ErrorCode".into(), c.clone().into());
    }
    out.insert("CreateDate".into(), date(op.create_date));
    out.insert("UpdateDate".into(), date(op.update_date));
    let targets: Map<String, Value> = op
        .targets
        .iter()
        .map(|(t, id)| {
            let key = match t {
                TargetType::Namespace => "NAMESPACE",
                TargetType::Service => "SERVICE",
                TargetType::Instance => "INSTANCE",
            };
            (key.to_string(), id.clone().into())
        })
        .collect();
    out.insert("Targets".into(), Value::Object(targets));
    Value::Object(out)
}

pub(super) fn get_operation(registry: &Registry, req: wire::GetOperation) -> Result<Value> {
    let id = required_str(req.operation_id, "OperationId")?;
    check_owner_account(registry, req.owner_account.as_deref())?;
    let index = registry.read();
    let op = index
        .operation(&id)
        .ok_or_else(|| ApiError::from(reg::Error::OperationNotFound(id.clone())))?;
    Ok(json!({ "Operation": operation_json(registry, op) }))
}

fn parse_epoch(s: &str, field: &str) -> Result<EpochMillis> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| (v * 1000.0) as EpochMillis)
        .ok_or_else(|| ApiError::invalid(format!("{field}: {s:?} is not a Unix timestamp")))
}

pub(super) fn list_operations(registry: &Registry, req: wire::List) -> Result<Value> {
    let max = max_results(req.max_results, 100, 100)?;
    let filters = parse_filters(
        req.filters,
        &[
            ("NAMESPACE_ID", &["EQ"]),
            ("SERVICE_ID", &["EQ"]),
            ("STATUS", &["EQ", "IN"]),
            ("TYPE", &["EQ", "IN"]),
            ("UPDATE_DATE", &["BETWEEN"]),
        ],
    )?;
    let mut ranges = Vec::new();
    for f in &filters {
        match f.name.as_str() {
            "UPDATE_DATE" => {
                let start = parse_epoch(&f.values[0], "UPDATE_DATE")?;
                let end = parse_epoch(&f.values[1], "UPDATE_DATE")?;
                ranges.push((start, end));
            }
            "STATUS" => {
                for v in &f.values {
                    if !["SUBMITTED", "PENDING", "SUCCESS", "FAIL"].contains(&v.as_str()) {
                        return Err(ApiError::invalid(format!(
                            "STATUS filter value {v:?} is not valid"
                        )));
                    }
                }
            }
            "TYPE" => {
                for v in &f.values {
                    if ![
                        "CREATE_NAMESPACE",
                        "DELETE_NAMESPACE",
                        "UPDATE_NAMESPACE",
                        "UPDATE_SERVICE",
                        "REGISTER_INSTANCE",
                        "DEREGISTER_INSTANCE",
                    ]
                    .contains(&v.as_str())
                    {
                        return Err(ApiError::invalid(format!(
                            "TYPE filter value {v:?} is not valid"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    let index = registry.read();
    let items = index
        .operations()
        .filter(|op| {
            filters.iter().all(|f| match f.name.as_str() {
                "NAMESPACE_ID" => op
                    .targets
                    .get(&TargetType::Namespace)
                    .is_some_and(|id| f.matches(id)),
                "SERVICE_ID" => op
                    .targets
                    .get(&TargetType::Service)
                    .is_some_and(|id| f.matches(id)),
                "STATUS" => f.matches(op.status.as_str()),
                "TYPE" => f.matches(op.kind.as_str()),
                _ => ranges
                    .iter()
                    .all(|(s, e)| (*s..=*e).contains(&op.update_date)),
            })
        })
        .map(|op| {
            (
                // The id breaks ties: writes planned concurrently (one
                // batch, or several replicas) can share a sequence number.
                format!("{:020}/{}", op.sequence, op.id),
                json!({"Id": op.id, "Status": op.status.as_str()}),
            )
        })
        .collect();
    let (page, next) = paginate(items, req.next_token, max)?;
    Ok(page_json("Operations", page, next))
}

/// The request shapes of these operations.
mod wire {

    use serde::Deserialize;

    pub(super) use crate::api::handlers::common::wire::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct GetOperation {
        pub operation_id: Option<String>,
        pub owner_account: Option<String>,
    }
}
