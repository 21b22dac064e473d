//! Tags: `TagResource`, `UntagResource`, `ListTagsForResource`.

use serde_json::{Value, json};

use super::Result;
use super::common::*;
use crate::api::ApiError;
use crate::registry::Registry;

fn resource_arn(value: Option<String>) -> Result<String> {
    let arn = required_str(value, "ResourceARN")?;
    if arn.len() > 1011 {
        return Err(ApiError::invalid(
            "ResourceARN must be at most 1011 characters long",
        ));
    }
    Ok(arn)
}

pub(super) fn tag_resource(registry: &Registry, req: wire::TagResource) -> Result<Value> {
    let arn = resource_arn(req.resource_arn)?;
    let tags = tags(Some(required(req.tags, "Tags")?))?;
    registry.tag_resource(&arn, tags)?;
    Ok(json!({}))
}

pub(super) fn untag_resource(registry: &Registry, req: wire::TagResource) -> Result<Value> {
    let arn = resource_arn(req.resource_arn)?;
    let keys = required(req.tag_keys, "TagKeys")?;
    registry.untag_resource(&arn, &keys)?;
    Ok(json!({}))
}

pub(super) fn list_tags(registry: &Registry, req: wire::TagResource) -> Result<Value> {
    let arn = resource_arn(req.resource_arn)?;
    let tags = registry.list_tags(&arn)?;
    Ok(json!({ "Tags": tags_json(&tags) }))
}

/// The request shapes of these operations.
mod wire {

    use serde::Deserialize;

    pub(super) use crate::api::handlers::common::wire::*;

    #[derive(Debug, Deserialize)]
    pub struct TagResource {
        #[serde(rename = "ResourceARN")]
        pub resource_arn: Option<String>,
        #[serde(rename = "Tags")]
        pub tags: Option<Vec<Tag>>,
        #[serde(rename = "TagKeys")]
        pub tag_keys: Option<Vec<String>>,
    }
}
