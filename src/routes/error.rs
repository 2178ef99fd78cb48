//! The HTTP error body `{"error": "..."}` and the one mapping from domain errors to statuses.

use hyper::StatusCode;

use crate::domain::dal::ChainError;
use crate::domain::{AuthRejection, DomainError, SecretRefusal};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::OwnerAlreadySet(_) => StatusCode::CONFLICT,
            DomainError::InvalidOwner(_)
            | DomainError::InvalidGasKey(_)
            | DomainError::NotConfigured(_)
            | DomainError::BadQuery(_) => StatusCode::BAD_REQUEST,
            DomainError::UnknownJob(_) => StatusCode::NOT_FOUND,
            DomainError::Unauthorized(rejection) => match rejection {
                AuthRejection::Missing
                | AuthRejection::Stale { .. }
                | AuthRejection::FromTheFuture { .. } => StatusCode::UNAUTHORIZED,
                AuthRejection::WrongSigner { .. } => StatusCode::FORBIDDEN,
                AuthRejection::Replayed { .. } => StatusCode::CONFLICT,
                AuthRejection::BadSignature | AuthRejection::NoOwner => StatusCode::BAD_REQUEST,
            },
            DomainError::SecretRefused(refusal) => match refusal {
                SecretRefusal::NotAssigned(_) => StatusCode::NOT_FOUND,
                SecretRefusal::AlreadyStored(_) => StatusCode::CONFLICT,
                SecretRefusal::Ended { .. } => StatusCode::GONE,
                SecretRefusal::BadSignature => StatusCode::UNAUTHORIZED,
                SecretRefusal::NotOwner { .. } => StatusCode::FORBIDDEN,
                SecretRefusal::Undecryptable(_) => StatusCode::UNPROCESSABLE_ENTITY,
                SecretRefusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            },
            DomainError::Chain(ChainError::Transient(_)) => StatusCode::SERVICE_UNAVAILABLE,
            DomainError::Store(_)
            | DomainError::Signer(_)
            | DomainError::Chain(_)
            | DomainError::Superseded(_)
            | DomainError::OtherDeployment(_) => {
                // The executor failed, not the caller: log the detail, answer plainly.
                tracing::error!(error = %e, "request failed inside the executor");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the executor's log",
                );
            }
        };
        Self::new(status, e.to_string())
    }
}
