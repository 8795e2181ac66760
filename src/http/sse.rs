//! `GET /traces/{id}/events`: a trace's [`Subscription`] as a
//! `text/event-stream` body.
//!
//! The body is a hand-written stream rather than `axum::response::Sse`, so
//! that an event's shared wire bytes go to the socket as they are (one small
//! `id:`/`event:` header per message, then the [`Bytes`] of the event, then
//! the blank line) instead of being copied into a new buffer per client.
//!
//! No task exists per client: hyper polls the body, the body polls the
//! subscription (woken by the trace's sequencer), a keep-alive timer and
//! the server's shutdown flag.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::time::{Instant, Sleep};

use super::AppState;
use super::api::{ApiError, check_id};
use crate::event::{Cursor, Delivery, Event};
use crate::subscribe::Subscription;

/// The query string of the events endpoint.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    /// Start at the event with `seq >= since_seq`.
    since_seq: Option<u64>,
    /// Start at the first event with `timestamp >= since` (ms).
    since: Option<i64>,
}

fn bad_cursor(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", message)
}

/// Where the stream starts: `Last-Event-ID` (resume after it) wins over
/// `since_seq`, which wins over `since`; the default is the whole history.
fn cursor(headers: &HeaderMap, query: &EventsQuery) -> Result<Cursor, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let text = v.to_str().unwrap_or("").trim();
        // An empty Last-Event-ID is what a browser sends before any id was seen.
        if !text.is_empty() {
            let seq: u64 = text
                .parse()
                .map_err(|_| bad_cursor(format!("Last-Event-ID {text:?} is not a seq number")))?;
            return Ok(Cursor::Seq(seq.saturating_add(1)));
        }
    }
    if let Some(seq) = query.since_seq {
        return Ok(Cursor::Seq(seq));
    }
    if let Some(ms) = query.since {
        return Ok(Cursor::Time(ms));
    }
    Ok(Cursor::Seq(0))
}

/// The handler.
pub(super) async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let Query(query) = query.map_err(|e| bad_cursor(e.body_text()))?;
    let cursor = cursor(&headers, &query)?;
    let trace = app.engine.load(&id)?;
    let mut sub = trace.subscribe_from(cursor)?;
    drop(trace);
    // Something ready now is sent right away; a stream that already ended
    // (finished trace, cursor past its end) is a 204, which tells an
    // EventSource not to reconnect.
    let first = match sub.try_recv() {
        Ok(None) => {
            return Ok((
                StatusCode::NO_CONTENT,
                [(header::CACHE_CONTROL, "no-store")],
            )
                .into_response());
        }
        Ok(Some(d)) => Some(d),
        Err(()) => None,
    };
    let closing = app.closing.clone().map(|mut rx| {
        Box::pin(async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }) as Pin<Box<dyn Future<Output = ()> + Send>>
    });
    let mut body = SseBody {
        sub: Some(sub),
        frames: VecDeque::with_capacity(4),
        keep_alive: Box::pin(tokio::time::sleep(app.opts.keep_alive)),
        interval: app.opts.keep_alive,
        closing,
    };
    // A first comment puts the response head and a byte on the wire at
    // once, so clients see the stream open even on a quiet trace.
    body.frames
        .push_back(Bytes::from_static(b": tracepool\n\n"));
    if let Some(d) = first {
        body.push(d);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The response body: SSE frames from a subscription.
struct SseBody {
    /// `None` once the subscription ended (or the server is closing).
    sub: Option<Subscription>,
    /// Frames ready to go out, oldest first.
    frames: VecDeque<Bytes>,
    keep_alive: Pin<Box<Sleep>>,
    interval: Duration,
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl SseBody {
    fn push(&mut self, d: Delivery) {
        match d {
            Delivery::Event(ev) => push_event(&mut self.frames, &ev),
            Delivery::Lagged { missed } => {
                let mut b = BytesMut::with_capacity(48);
                b.put_slice(b"event: lagged\ndata: {\"missed\":");
                b.put_slice(itoa::Buffer::new().format(missed).as_bytes());
                b.put_slice(b"}\n\n");
                self.frames.push_back(b.freeze());
            }
        }
        self.keep_alive
            .as_mut()
            .reset(Instant::now() + self.interval);
    }
}

/// Appends the frames of one event message: `id`/`event`/`data: ` header,
/// the shared wire bytes, the blank line.
fn push_event(frames: &mut VecDeque<Bytes>, ev: &Event) {
    let wire = ev.wire_bytes();
    let mut head = BytesMut::with_capacity(48);
    head.put_slice(b"id: ");
    head.put_slice(itoa::Buffer::new().format(ev.seq).as_bytes());
    head.put_slice(b"\nevent: ");
    head.put_slice(ev.kind.as_str().as_bytes());
    head.put_slice(b"\ndata: ");
    if wire.iter().any(|&b| b == b'\n' || b == b'\r') {
        // Never produced by the encoder (compact JSON escapes newlines), but
        // a stored event read back could be pretty-printed: one `data:`
        // line per line keeps the message well-formed.
        let text = String::from_utf8_lossy(wire);
        let mut lines = text.lines();
        head.put_slice(lines.next().unwrap_or("").as_bytes());
        for line in lines {
            head.put_slice(b"\ndata: ");
            head.put_slice(line.as_bytes());
        }
        head.put_slice(b"\n\n");
        frames.push_back(head.freeze());
        return;
    }
    frames.push_back(head.freeze());
    frames.push_back(wire.clone());
    frames.push_back(Bytes::from_static(b"\n\n"));
}

impl futures_core::Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(closing) = &mut this.closing
            && closing.as_mut().poll(cx).is_ready()
        {
            this.closing = None;
            this.sub = None;
        }
        let Some(sub) = &mut this.sub else {
            return Poll::Ready(None);
        };
        match sub.poll_recv(cx) {
            Poll::Ready(Some(d)) => {
                this.push(d);
                Poll::Ready(this.frames.pop_front().map(Ok))
            }
            Poll::Ready(None) => {
                // After `complete`, or after release once drained.
                this.sub = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.keep_alive.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let next = Instant::now() + this.interval;
                    this.keep_alive.as_mut().reset(next);
                    Poll::Ready(Some(Ok(Bytes::from_static(b": keep-alive\n\n"))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
