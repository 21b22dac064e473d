//! A principal acting inside Waymark: the controller's identity
//! (`--controller-principal`). Its writes are decided by the same policies,
//! with the same actions, resources and condition keys, as the Cloud Map
//! API call that would make them, so an operator can confine a cluster's
//! controller to its namespaces exactly as they confine an API caller.

use std::sync::Arc;

use serde_json::Value;

use super::actions::{RequestContext, request_context};
use super::authority::Authority;
use super::policy::{Decision, Request};
use crate::registry::Registry;

/// `AccessDeniedException`'s message, worded as AWS words it: who, what, on
/// which resources, and why.
pub fn denial_message(user_arn: &str, asked: &RequestContext, decision: &Decision) -> String {
    let resource = asked.resources.join(", ");
    let why = match decision {
        Decision::ExplicitDeny(Some(sid)) => {
            format!("with an explicit deny in an identity-based policy (statement {sid:?})")
        }
        Decision::ExplicitDeny(None) => "with an explicit deny in an identity-based policy".into(),
        _ => format!(
            "because no identity-based policy allows the {} action",
            asked.action
        ),
    };
    format!(
        "User: {user_arn} is not authorized to perform: {} on resource: {resource} {why}",
        asked.action
    )
}

/// A named principal of the live credentials, acting on the registry.
#[derive(Debug, Clone)]
pub struct ActingPrincipal {
    authority: Arc<Authority>,
    name: String,
    arn: String,
}

impl ActingPrincipal {
    /// The principal `name` of `authority`, reported as an IAM user of
    /// `account`; `None` when the credentials do not name it.
    pub fn new(authority: Arc<Authority>, name: &str, account: &str) -> Option<Self> {
        authority.current().principal_named(name)?;
        Some(Self {
            authority,
            name: name.to_string(),
            arn: format!("arn:aws:iam::{account}:user/{name}"),
        })
    }

    /// Whether the principal may do what the Cloud Map call `operation`
    /// with request `body` would do, under the configuration in force; the
    /// denial's message otherwise. A principal removed from the
    /// credentials may do nothing.
    pub fn check(&self, registry: &Registry, operation: &str, body: &Value) -> Result<(), String> {
        let asked = request_context(registry, operation, body);
        let Some(principal) = self.authority.current().principal_named(&self.name) else {
            return Err(format!(
                "principal {:?} is no longer in the credentials file: {} is refused",
                self.name, asked.action
            ));
        };
        let decision = principal.decide(&Request {
            action: &asked.action,
            resources: &asked.resources,
            context: &asked.context,
        });
        match decision {
            Decision::Allow => Ok(()),
            other => Err(denial_message(&self.arn, &asked, &other)),
        }
    }

    /// Notified whenever the credentials or policies change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.authority.subscribe()
    }
}
