//! The JSON endpoints, the viewer page and the JSON error responses.
//!
//! Handlers read through the public trace API only (snapshots taken under
//! the slot lock); they never hold a lock across an await.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::error::Error;
use crate::model::TraceInfo;

/// The viewer: one self-contained page.
const VIEWER_HTML: &str = include_str!("viewer.html");

/// An error answered as `{"error": .., "code": ..}` with a status.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::InvalidId => (StatusCode::BAD_REQUEST, "invalid_id"),
            Error::NotLoaded | Error::NotFound | Error::Released => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Error::ShutDown => (StatusCode::SERVICE_UNAVAILABLE, "shut_down"),
            Error::Storage { .. } | Error::Corrupt { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.message, "code": self.code}));
        (self.status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
    }
}

/// Validates a trace id taken from the path (400 before any lookup).
pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    crate::id::validate_trace_id(id).map_err(ApiError::from)
}

/// `GET /`.
pub(super) async fn viewer() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        VIEWER_HTML,
    )
        .into_response()
}

/// Any other path.
pub(super) async fn no_route(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {}", uri.path()),
    )
}

fn summary(info: &TraceInfo, node_count: Option<usize>, loaded: bool) -> Value {
    json!({
        "id": info.id,
        "status": info.status,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "node_count": node_count,
        "loaded": loaded,
        "created_by": info.created_by,
        "metadata": info.metadata,
    })
}

/// `GET /traces`: loaded traces, then stored ones (when the driver lists them).
pub(super) async fn list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let engine = app.engine.clone();
    let limit = app.opts.stored_limit;
    // Listing stored traces may touch the disk: keep it off the reactor.
    let traces = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let loaded_ids = engine.list();
        let mut loaded = Vec::with_capacity(loaded_ids.len());
        for id in &loaded_ids {
            // A trace may be released between `list` and `load`: skip it.
            let Ok(trace) = engine.load(id) else { continue };
            let (Ok(info), Ok(nodes)) = (trace.trace_info(), trace.all_nodes()) else {
                continue;
            };
            loaded.push(summary(&info, Some(nodes.len()), true));
        }
        let mut stored = Vec::new();
        if limit > 0 {
            // `Ok(empty)` when the driver cannot list; an error is not fatal
            // for the listing of loaded traces.
            let mut ids = engine.list_stored().unwrap_or_default();
            ids.retain(|id| loaded_ids.binary_search(id).is_err());
            ids.reverse();
            for id in ids.iter().take(limit) {
                if let Ok(info) = engine.info(id) {
                    stored.push(summary(&info, None, false));
                }
            }
        }
        let newest_first = |a: &Value, b: &Value| {
            b["created_at"]
                .as_i64()
                .cmp(&a["created_at"].as_i64())
                .then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
        };
        loaded.sort_by(newest_first);
        stored.sort_by(newest_first);
        loaded.extend(stored);
        Ok(loaded)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(json!({
        "driver": app.engine.driver_name(),
        "traces": traces,
    })))
}

/// `GET /traces/{id}`: info, node tree, spaces with values, logs.
pub(super) async fn detail(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let engine = app.engine.clone();
    tokio::task::spawn_blocking(move || -> Result<Json<Value>, ApiError> {
        match engine.load(&id) {
            Ok(trace) => {
                let info = trace.trace_info()?;
                let nodes = trace.all_nodes()?;
                let mut spaces = Vec::new();
                for s in trace.spaces()? {
                    if let Some(data) = trace.space_data(&s.id)? {
                        spaces.push(json!({"info": data.info, "data": data.data}));
                    }
                }
                let logs = trace.logs(None)?;
                Ok(Json(json!({
                    "info": info,
                    "loaded": true,
                    "nodes": nodes,
                    "spaces": spaces,
                    "logs": logs,
                })))
            }
            // Released since, or only in storage: metadata only.
            Err(Error::NotLoaded | Error::Released) => {
                let info = engine.info(&id)?;
                Ok(Json(json!({
                    "info": info,
                    "loaded": false,
                    "nodes": [],
                    "spaces": [],
                    "logs": [],
                })))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}
