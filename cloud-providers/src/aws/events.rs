//! Events the AWS drivers raise (BTN-6001 to BTN-6099, module `aws`).
//!
//! Drivers do not see the engine; they hand their events to an [`EventSink`], which the
//! agent drains into its alert log (`ProviderRegistry::take_events`). Every event is
//! also logged with `tracing`. A probe polling a broken API would raise the same event
//! at every poll, so probes go through a [`Latch`]: an event id is raised once until
//! the probe succeeds again.

use baton_core::events::{self, EventDef};

use super::AwsFailure;
pub use crate::cloud::{EventSink, Latch, Subject};

/// Codes AWS uses for missing permissions.
pub fn is_permission_code(code: &str) -> bool {
    matches!(
        code,
        "UnauthorizedOperation"
            | "AccessDenied"
            | "AccessDeniedException"
            | "Forbidden"
            | "UnauthorizedAccess"
    )
}

/// Codes AWS uses for IDs it does not know (or malformed ones).
pub fn is_not_found_code(code: &str) -> bool {
    code.ends_with(".NotFound")
        || code.ends_with(".Malformed")
        || matches!(
            code,
            "NoSuchHostedZone" | "InvalidAllocationID" | "InvalidNetworkInterfaceId"
        )
}

/// Codes AWS uses for unusable credentials, clocks or regions.
pub fn is_setup_code(code: &str) -> bool {
    matches!(
        code,
        "AuthFailure"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "RequestExpired"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
            | "OptInRequired"
            | "RequestNotBuilt"
    )
}

/// The catalogue entry for a failed AWS call.
pub fn failure_event(f: &AwsFailure) -> &'static EventDef {
    match f {
        AwsFailure::Unavailable { .. } => &events::AWS_API_UNAVAILABLE,
        AwsFailure::Rejected { code, .. } => {
            if is_permission_code(code) {
                &events::AWS_PERMISSION_DENIED
            } else if is_not_found_code(code) {
                &events::AWS_ID_NOT_FOUND
            } else if is_setup_code(code) {
                &events::AWS_SETUP_ERROR
            } else if code == "InvalidChangeBatch" {
                &events::AWS_DNS_CONFLICT
            } else {
                &events::AWS_REQUEST_REJECTED
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: &str) -> AwsFailure {
        AwsFailure::Rejected {
            operation: "Op".into(),
            code: code.into(),
            status: Some(400),
            message: "m".into(),
        }
    }

    #[test]
    fn classifies_failures() {
        let unavailable = AwsFailure::Unavailable {
            operation: "Op".into(),
            code: None,
            status: None,
            message: "x".into(),
        };
        assert_eq!(failure_event(&unavailable).id, 6005);
        assert_eq!(failure_event(&rejected("UnauthorizedOperation")).id, 6008);
        assert_eq!(failure_event(&rejected("AccessDenied")).id, 6008);
        assert_eq!(
            failure_event(&rejected("InvalidNetworkInterfaceID.NotFound")).id,
            6007
        );
        assert_eq!(failure_event(&rejected("NoSuchHostedZone")).id, 6007);
        assert_eq!(failure_event(&rejected("AuthFailure")).id, 6009);
        assert_eq!(failure_event(&rejected("InvalidChangeBatch")).id, 6018);
        assert_eq!(failure_event(&rejected("InvalidParameterValue")).id, 6010);
    }

    #[test]
    fn latch_fires_once() {
        let l = Latch::default();
        assert!(l.first(6005));
        assert!(!l.first(6005));
        assert!(l.first(6002));
        l.reset();
        assert!(l.first(6005));
    }
}
