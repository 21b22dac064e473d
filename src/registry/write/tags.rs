//! Tags on namespaces and services, addressed by ARN (`TagResource`,
//! `UntagResource`; `ListTagsForResource` is in `read.rs`).

use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::Tag;
use crate::registry::validate::{MAX_TAGS, tags};
use crate::registry::{Change, Error, Registry, Result};

impl Registry {
    /// Adds or replaces tags on a namespace or service ARN.
    pub fn tag_resource(&self, arn: &str, new_tags: Vec<Tag>) -> Result<()> {
        tags(&new_tags)?;
        self.edit_tags(arn, |current| {
            for t in &new_tags {
                match current.iter_mut().find(|c| c.key == t.key) {
                    Some(c) => c.value = t.value.clone(),
                    None => current.push(t.clone()),
                }
            }
        })
    }

    /// Removes tags by key from a namespace or service ARN.
    pub fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        self.edit_tags(arn, |current| current.retain(|t| !keys.contains(&t.key)))
    }

    fn edit_tags(&self, arn: &str, mut edit: impl FnMut(&mut Vec<Tag>)) -> Result<()> {
        let not_found = || Error::ResourceNotFound(arn.to_string());
        let too_many = |tags: &[Tag]| {
            if tags.len() > MAX_TAGS {
                Err(Error::TooManyTags {
                    resource: arn.to_string(),
                    max: MAX_TAGS,
                })
            } else {
                Ok(())
            }
        };
        self.write(|index, changes| {
            let change = match ids::parse_arn(arn).ok_or_else(not_found)? {
                (ResourceKind::Namespace, id) => {
                    let mut ns = index.namespace(id).cloned().ok_or_else(not_found)?;
                    edit(&mut ns.tags);
                    too_many(&ns.tags)?;
                    Change::PutNamespace(ns)
                }
                (ResourceKind::Service, id) => {
                    let mut svc = index.service(id).ok_or_else(not_found)?.service.clone();
                    edit(&mut svc.tags);
                    too_many(&svc.tags)?;
                    Change::PutService(svc)
                }
            };
            changes.push(change);
            Ok(())
        })
    }
}
