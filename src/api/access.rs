//! Who may call the API: the HTTP side of [`crate::auth`]. A request is
//! authenticated (its SigV4 signature checked against the configured keys)
//! before anything else reads it, and authorized (the caller's policies
//! evaluated for the operation's action, resources and condition keys) before
//! its handler runs, so a refused call changes nothing.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, Method, StatusCode, Uri};

use super::ApiError;
use crate::auth::{self, Authority, Decision, Payload, SignedRequest, Verifier, VerifierConfig};
use crate::registry::Registry;

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone who reaches the port may do anything (the quickstart; the
    /// command line allows it on loopback only unless forced).
    Open,
    /// Every request is SigV4-signed with a configured key and allowed by
    /// its principal's policies.
    SigV4 {
        /// Checks signatures for the registry's region.
        verifier: Verifier,
        /// The keys and policies, reloaded live.
        authority: Arc<Authority>,
    },
}

/// Who made a request, as the audit log and error messages name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal's name.
    pub name: String,
    /// The access key the request was signed with.
    pub access_key_id: String,
    /// `arn:aws:iam::<account>:user/<name>`: the shape AWS names IAM users in.
    pub arn: String,
}

impl Access {
    /// SigV4 for `region`, with the keys and policies of `authority`.
    pub fn sigv4(region: &str, authority: Arc<Authority>) -> Self {
        Access::SigV4 {
            verifier: Verifier::new(VerifierConfig::new(region)),
            authority,
        }
    }

    /// Checks the request's signature. `Ok(None)` when access is open.
    pub fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        account: &str,
    ) -> Result<Option<(Identity, Arc<auth::Caller>)>, ApiError> {
        let Access::SigV4 {
            verifier,
            authority,
        } = self
        else {
            return Ok(None);
        };
        // Values that are not visible ASCII cannot be canonicalised; if such
        // a header is signed, the verifier reports it missing.
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(headers.len());
        pairs.extend(
            headers
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        );
        let request = SignedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &pairs,
            payload: Payload::Bytes(body),
        };
        let config = authority.current();
        let secrets = |akid: &str| config.secret(akid);
        let signer = verifier
            .verify(&request, SystemTime::now(), &secrets)
            .map_err(|e| ApiError {
                status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN),
                ..ApiError::new(e.aws_type(), e.message())
            })?;
        // The key was found a moment ago in this same configuration
        // version; its principal (and policies) decide the call, so the
        // decision uses the version the signature was checked against.
        let Some(principal) = config.principal(&signer.access_key_id) else {
            return Err(unrecognized());
        };
        let name = principal.name.clone();
        Ok(Some((
            Identity {
                arn: format!("arn:aws:iam::{account}:user/{name}"),
                name,
                access_key_id: signer.access_key_id,
            },
            principal,
        )))
    }

    /// Whether callers are authenticated and authorized (SigV4).
    pub fn is_checked(&self) -> bool {
        matches!(self, Access::SigV4 { .. })
    }

    /// Decides whether `caller` (with the principal that authenticated it)
    /// may do what `asked` describes (open access allows everything).
    pub fn authorize(
        &self,
        caller: Option<(&Identity, &auth::Caller)>,
        asked: &auth::RequestContext,
    ) -> Result<(), ApiError> {
        let Access::SigV4 { .. } = self else {
            return Ok(());
        };
        let Some((caller, principal)) = caller else {
            return Err(unrecognized());
        };
        let decision = principal.decide(&auth::Request {
            action: &asked.action,
            resources: &asked.resources,
            context: &asked.context,
        });
        match decision {
            Decision::Allow => Ok(()),
            Decision::ExplicitDeny(_) | Decision::ImplicitDeny => {
                Err(denied(caller, asked, &decision))
            }
        }
    }
}

/// `UnrecognizedClientException`: no such access key.
fn unrecognized() -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        ..ApiError::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }
}

/// The action, resources and condition keys of `operation` with `body`, read
/// from the registry before the call runs (a deleted service's ARN is gone
/// afterwards). A body that is not JSON fails in its handler with a
/// specific error; its context names no resource, so only a policy that
/// allows the action on every resource lets it through to that error.
/// Condition keys are read only `with_keys`.
pub fn context(
    registry: &Registry,
    operation: &str,
    body: &[u8],
    with_keys: bool,
) -> auth::RequestContext {
    auth::request_context_of(registry, operation, &auth::Names::parse(body), with_keys)
}

/// `AccessDeniedException` worded as AWS words it.
fn denied(caller: &Identity, asked: &auth::RequestContext, decision: &Decision) -> ApiError {
    ApiError::new(
        "AccessDeniedException",
        auth::denial_message(&caller.arn, asked, decision),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(resources: &[&str]) -> auth::RequestContext {
        auth::RequestContext {
            action: "servicediscovery:RegisterInstance".into(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
            context: Default::default(),
        }
    }

    fn caller() -> Identity {
        Identity {
            name: "ci".into(),
            access_key_id: "AKIAEXAMPLE000001".into(),
            arn: "arn:aws:iam::123456789012:user/ci".into(),
        }
    }

    #[test]
    fn denials_name_the_caller_action_resource_and_reason() {
        let svc = "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-1";
        let e = denied(&caller(), &asked(&[svc]), &Decision::ImplicitDeny);
        assert_eq!(e.kind, "AccessDeniedException");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            format!(
                "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: \
                 servicediscovery:RegisterInstance on resource: {svc} because no \
                 identity-based policy allows the servicediscovery:RegisterInstance action"
            )
        );
        let e = denied(
            &caller(),
            &asked(&[svc]),
            &Decision::ExplicitDeny(Some("NoProd".into())),
        );
        assert!(
            e.message.ends_with(
                "with an explicit deny in an identity-based policy (statement \"NoProd\")"
            ),
            "{}",
            e.message
        );
    }
}
