//! One error type for every handler: a status, a stable code and a message for the caller.
//! Internal details are logged (without record contents) and never sent.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use sync_protocol::ErrorCode;

use crate::db::DbError;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl AppError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal server error; the details are in the server log")
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Invalid(m) => AppError::bad_request(m),
            DbError::NotFound(m) => AppError::not_found(m),
            DbError::Conflict(m) => AppError::new(StatusCode::CONFLICT, ErrorCode::Conflict, m),
            DbError::Forbidden(m) => AppError::forbidden(m),
            // Nobody is listening any more; the status only shows in logs.
            DbError::Cancelled => AppError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::Abandoned, "the request was abandoned"),
            DbError::UploadsFull(m) => {
                let mut err = AppError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::UploadsFull, m);
                err.retry_after = Some(600);
                err
            }
            e @ DbError::TooManyDevices(_) => AppError::new(StatusCode::FORBIDDEN, ErrorCode::TooManyDevices, e.to_string()),
            DbError::Store(crate::store::StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "the database is unreachable");
                let mut err = AppError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable, "the server cannot reach its database just now: retry shortly");
                err.retry_after = Some(5);
                err
            }
            DbError::Store(e) => {
                tracing::error!(error = %e, "storage error");
                AppError::internal()
            }
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        // serde's messages name the field and the expected type, never the submitted value
        // beyond a short token; they are what the caller needs to fix the body.
        AppError::new(status, ErrorCode::BadJson, r.body_text())
    }
}

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, format!("request bodies are at most {} bytes", sync_protocol::wire::MAX_MESSAGE_BYTES))
        } else {
            AppError::new(r.status(), ErrorCode::BadBody, r.body_text())
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, r.body_text())
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "worker task failed");
        AppError::internal()
    }
}

pub type AppResult<T> = Result<T, AppError>;
