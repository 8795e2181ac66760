//! The JSON endpoints, the viewer page, the JSON error responses and the
//! request checks every route shares.
//!
//! Handlers read through the public engine and trace API only (snapshots
//! taken under the slot lock); they never hold a lock across an await, and
//! work that may touch storage runs on the blocking pool.

use std::collections::{HashMap, VecDeque};

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use crate::driver::StoredTrace;
use crate::engine::Engine;
use crate::error::Error;
use crate::model::{NodeData, TraceInfo};

/// The viewer: one self-contained page.
const VIEWER_HTML: &str = include_str!("viewer.html");

/// Traces per page of `GET /traces` when `limit` is not given.
pub(super) const DEFAULT_PAGE: usize = 100;

/// Largest page of `GET /traces`: a larger `limit` is lowered to this.
pub(super) const MAX_PAGE: usize = 1000;

/// How much of a client-sent value an error message may quote.
const QUOTE_LEN: usize = 32;

/// How much of a rejection message of axum's an error message keeps (in
/// case it repeats what the client sent).
const REJECTION_LEN: usize = 120;

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

    /// `400 invalid_query`.
    pub(super) fn invalid_query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    /// `500 internal` (a task of the blocking pool failed).
    fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
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
            Error::Leased { .. } => (StatusCode::CONFLICT, "leased"),
            Error::LimitExceeded {
                what: "follows", ..
            } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_follows"),
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

/// `text` as a message may quote it: the first few characters, escaped,
/// with `…` when cut.
pub(super) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LEN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// `text` cut to `max` characters, with `…` when cut; for text that holds
/// no control character (a raw path, a method, a message of axum's).
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// The trace id of the path, validated (400 before any lookup). A path
/// segment that does not decode to UTF-8 is an `invalid_id` too.
pub(super) fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "the trace id in the path is not valid percent-encoded UTF-8",
        )
    })?;
    crate::id::validate_trace_id(&id)?;
    Ok(id)
}

/// The query string decoded into `T`; a value that does not parse is a
/// `400 code`, whose message quotes little of it.
pub(super) fn query<T: DeserializeOwned>(uri: &Uri, code: &'static str) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("bad query string: {}", clip(&e.body_text(), REJECTION_LEN)),
            )
        })
}

/// Middleware of every route: refuses a `Last-Event-ID` or a query
/// parameter longer than [`Limits::max_value_len`](super::Limits) before
/// any handler runs, without echoing it.
pub(super) async fn check_lengths(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let max = app.opts.limits.max_value_len;
    if let Some(v) = request.headers().get("last-event-id")
        && v.len() > max
    {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            format!("Last-Event-ID is {} bytes long, more than {max}", v.len()),
        )
        .into_response();
    }
    if let Some(q) = request.uri().query() {
        for pair in q.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.len() > max {
                return ApiError::invalid_query(format!(
                    "a query parameter name is {} bytes long, more than {max}",
                    name.len()
                ))
                .into_response();
            }
            if value.len() > max {
                return ApiError::invalid_query(format!(
                    "query parameter {} is {} bytes long, more than {max}",
                    quote(name),
                    value.len()
                ))
                .into_response();
            }
        }
    }
    next.run(request).await
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
        format!("no route for {}", clip(uri.path(), QUOTE_LEN)),
    )
}

/// A route that exists, with a method it does not answer (every route
/// answers `GET` and `HEAD` only).
pub(super) async fn method_not_allowed(method: Method) -> Response {
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "method {} is not allowed: use GET or HEAD",
            clip(method.as_str(), QUOTE_LEN)
        ),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
    r
}

/// `GET /stats`: the HTTP counters and the engine's.
pub(super) async fn stats(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "http": app.opts.counters.snapshot(),
        "engine": app.engine.stats(),
    }))
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

/// The query string of `GET /traces`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Traces per page (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    limit: Option<usize>,
    /// The `next` of the previous page: continue after this trace.
    after: Option<String>,
}

/// `GET /traces?limit=&after=`: one page, loaded traces first, then stored
/// ones, each group in descending id order.
pub(super) async fn list(State(app): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q: ListQuery = query(&uri, "invalid_query")?;
    let limit = match q.limit {
        None => DEFAULT_PAGE,
        Some(0) => return Err(ApiError::invalid_query("limit must be at least 1")),
        Some(n) => n.min(MAX_PAGE),
    };
    if let Some(after) = &q.after
        && crate::id::validate_trace_id(after).is_err()
    {
        return Err(ApiError::invalid_query(format!(
            "after must be a trace id, not {}",
            quote(after)
        )));
    }
    let engine = app.engine.clone();
    // Listing stored traces touches the disk: keep it off the reactor.
    let (traces, next) =
        tokio::task::spawn_blocking(move || page(&engine, limit, q.after.as_deref()))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({
        "driver": app.engine.driver_name(),
        "traces": traces,
        "next": next,
    })))
}

/// One page of the listing: at most `limit` traces looked at (a trace
/// released or removed meanwhile is skipped, so a page may hold fewer),
/// and so at most `limit` trace-info reads from storage. Returns the
/// summaries and the `next` cursor.
///
/// The order is: loaded ids descending, then stored ids that are not loaded,
/// descending. `after` names the last trace of the previous page: when it
/// is loaded now, the page continues among loaded ids below it, otherwise
/// among stored ids below it.
fn page(engine: &Engine, limit: usize, after: Option<&str>) -> (Vec<Value>, Option<String>) {
    let loaded = engine.list(); // sorted ascending
    let (in_loaded, loaded_end) = match after {
        None => (true, loaded.len()),
        Some(a) => match loaded.binary_search_by(|id| id.as_str().cmp(a)) {
            Ok(i) => (true, i),
            Err(_) => (false, 0),
        },
    };
    let mut out = Vec::with_capacity(limit.min(DEFAULT_PAGE));
    let mut looked_at = 0;
    let mut last: Option<&str> = None;
    let mut loaded_rest = loaded[..loaded_end].iter().rev().peekable();
    while looked_at < limit {
        let Some(id) = loaded_rest.next() else { break };
        looked_at += 1;
        last = Some(id);
        // A trace may be released between `list` and `load`: skip it.
        let Ok(trace) = engine.load(id) else { continue };
        let (Ok(info), Ok(nodes)) = (trace.trace_info(), trace.all_nodes()) else {
            continue;
        };
        out.push(summary(&info, Some(nodes.len()), true));
    }
    if loaded_rest.peek().is_some() {
        return (out, last.map(str::to_owned));
    }

    // Stored traces that are not loaded. Storage trouble does not fail the
    // listing of loaded traces: the stored part is then empty.
    let stored = engine.list_stored().unwrap_or_default(); // sorted ascending
    let stored_end = match (in_loaded, after) {
        (false, Some(a)) => stored.partition_point(|id| id.as_str() < a),
        _ => stored.len(),
    };
    let is_loaded = |id: &String| loaded.binary_search(id).is_ok();
    let mut stored_rest = stored[..stored_end]
        .iter()
        .rev()
        .filter(|id| !is_loaded(id))
        .peekable();
    while looked_at < limit {
        let Some(id) = stored_rest.next() else { break };
        looked_at += 1;
        last = Some(id);
        // Removed meanwhile, or unreadable: skipped.
        if let Ok(info) = engine.info(id) {
            out.push(summary(&info, None, false));
        }
    }
    let next = stored_rest
        .peek()
        .is_some()
        .then(|| last.map(str::to_owned))
        .flatten();
    (out, next)
}

/// `GET /traces/{id}`: info, node tree, spaces with values, logs; read from
/// storage when the trace is not loaded.
pub(super) async fn detail(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(path)?;
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
            // Released since, or only in storage.
            Err(Error::NotLoaded | Error::Released) => match engine.read_stored(&id) {
                Ok(stored) => Ok(Json(stored_detail(stored))),
                // A driver that keeps metadata but cannot read a trace back.
                Err(Error::NotFound) => {
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
            },
            Err(e) => Err(e.into()),
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// The detail of a stored trace, in the shape of a loaded one.
fn stored_detail(stored: StoredTrace) -> Value {
    let StoredTrace {
        info,
        root,
        nodes,
        logs,
        spaces,
        ..
    } = stored;
    let spaces: Vec<Value> = spaces
        .into_iter()
        .map(|s| json!({"info": s.info, "data": s.data}))
        .collect();
    json!({
        "info": info,
        "loaded": false,
        "nodes": breadth_first(nodes, root.as_deref()),
        "spaces": spaces,
        "logs": logs,
    })
}

/// Nodes in the order a loaded trace lists them: the root, then
/// breadth-first along `children`; nodes not reached that way follow in
/// stored order, each with what it reaches.
fn breadth_first(nodes: Vec<NodeData>, root: Option<&str>) -> Vec<NodeData> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut seen = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut queue = VecDeque::new();
    let starts = root
        .and_then(|r| index.get(r).copied())
        .into_iter()
        .chain(0..nodes.len());
    for start in starts {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        queue.push_back(start);
        while let Some(n) = queue.pop_front() {
            order.push(n);
            for child in &nodes[n].children {
                if let Some(&c) = index.get(child.as_str())
                    && !seen[c]
                {
                    seen[c] = true;
                    queue.push_back(c);
                }
            }
        }
    }
    let mut slots: Vec<Option<NodeData>> = nodes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
