//! Request authentication for the Cloud Map API.
//!
//! AWS SDKs and the AWS CLI sign every request with AWS Signature Version 4,
//! so a registry that speaks the Cloud Map wire API authenticates callers by
//! checking that signature. [`sigv4`] is the pure verification core: it takes
//! a description of the request, the time and a way to look up secrets, and
//! does no I/O, so the HTTP layer (src/api) decides where requests, clocks and
//! credentials come from.

pub mod acting;
pub mod actions;
pub mod authority;
pub mod policy;
pub mod sigv4;

pub use acting::{ActingPrincipal, denial_message};
pub use actions::{Names, RequestContext, request_context, request_context_of};
pub use authority::{AuthConfig, Authority, ConfigError, Principal as Caller};
pub use policy::{Decision, PolicyError, PolicySet, Request};
pub use sigv4::{
    AuthError, Payload, Principal, SecretLookup, SignedRequest, Verifier, VerifierConfig,
};
