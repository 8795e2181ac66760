//! `GET /traces/{id}/events`: a trace's [`Subscription`] as a
//! `text/event-stream` body.
//!
//! The body is a hand-written stream rather than `axum::response::Sse`, so
//! that an event's shared wire bytes go to the socket as they are (one small
//! `id:`/`event:` header per message, then the [`Bytes`] of the event, then
//! the blank line) instead of being copied into a new buffer per client.
//!
//! Hyper polls the body, the body polls the subscription (woken by the
//! trace's sequencer), a keep-alive timer and the server's shutdown flag.
//! One small watchdog task per stream closes it when its reader stops
//! reading
//! ([`Limits::sse_write_timeout`](super::Limits::sse_write_timeout)): a
//! stalled socket is never polled, so the body alone could not notice.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::api::{ApiError, path_id, query, quote};
use super::serve::ConnectionCloser;
use super::{AppState, HttpCounters};
use crate::error::Error;
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
        let text = v
            .to_str()
            .map_err(|_| bad_cursor("Last-Event-ID is not visible ASCII".to_owned()))?
            .trim();
        // An empty Last-Event-ID is what a browser sends before any id was seen.
        if !text.is_empty() {
            let seq: u64 = text.parse().map_err(|_| {
                bad_cursor(format!("Last-Event-ID {} is not a seq number", quote(text)))
            })?;
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

/// One of the [`Limits::max_sse_streams`](super::Limits::max_sse_streams)
/// slots, held by an open stream.
///
/// Freed once: by the watchdog when it closes a stalled stream (so stalled
/// readers never hold slots), or when the response body is dropped.
#[derive(Debug)]
struct StreamSlot {
    counters: HttpCounters,
    freed: AtomicBool,
}

impl StreamSlot {
    /// Takes a slot, or counts a refusal when `max` streams are open.
    fn acquire(counters: &HttpCounters, max: usize) -> Option<StreamSlot> {
        let c = &counters.inner;
        let taken = c
            .sse_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            c.sse_streams_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(StreamSlot {
            counters: counters.clone(),
            freed: AtomicBool::new(false),
        })
    }

    fn free(&self) {
        if !self.freed.swap(true, Ordering::AcqRel) {
            self.counters
                .inner
                .sse_streams
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.free();
    }
}

/// What the body and its watchdog share.
#[derive(Debug)]
struct StreamWatch {
    slot: StreamSlot,
    /// Bumped by every poll of the body.
    polls: AtomicU64,
    /// The last poll handed out a frame: the server owes the body a poll,
    /// which it makes as soon as the socket takes more bytes.
    owed: AtomicBool,
    /// Set by the watchdog: the body ends at its next poll.
    timed_out: AtomicBool,
}

/// The handler.
pub(super) async fn events(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    closer: Option<Extension<ConnectionCloser>>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let query: EventsQuery = query(&uri, "invalid_cursor")?;
    let cursor = cursor(&headers, &query)?;
    // A trace loaded here is subscribed to; one loaded on another engine
    // sharing the storage (the Redis driver) is followed.
    let trace = match app.engine.load(&id) {
        Ok(t) => Some(t),
        Err(Error::NotLoaded) => None,
        Err(e) => return Err(e.into()),
    };
    let limits = &app.opts.limits;
    let slot =
        StreamSlot::acquire(&app.opts.counters, limits.max_sse_streams).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "{} event streams are open, the most this server allows; retry later",
                    limits.max_sse_streams
                ),
            )
        })?;
    let mut sub = match trace {
        Some(trace) => trace.subscribe_from(cursor)?,
        None => {
            let engine = app.engine.clone();
            tokio::task::spawn_blocking(move || engine.follow_from(&id, cursor))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })??
        }
    };
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
    let watch = Arc::new(StreamWatch {
        slot,
        polls: AtomicU64::new(0),
        // The first frames are ready before the first poll.
        owed: AtomicBool::new(true),
        timed_out: AtomicBool::new(false),
    });
    let stop_watchdog = (!limits.sse_write_timeout.is_zero()).then(|| {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(watchdog(
            watch.clone(),
            limits.sse_write_timeout,
            closer.map(|Extension(c)| c),
            stopped,
        ));
        stop
    });
    let mut body = SseBody {
        sub: Some(sub),
        frames: VecDeque::with_capacity(4),
        keep_alive: Box::pin(tokio::time::sleep(app.opts.keep_alive)),
        interval: app.opts.keep_alive,
        closing,
        watch,
        _stop_watchdog: stop_watchdog,
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

/// Closes the stream when the server has owed the body a poll for
/// `timeout`: the socket took no byte for that long. Checks four times per
/// `timeout`, so the stream is closed between 1 and 1.25 `timeout` after
/// the last write. Ends when the body is dropped (`stop`).
async fn watchdog(
    watch: Arc<StreamWatch>,
    timeout: Duration,
    closer: Option<ConnectionCloser>,
    mut stop: oneshot::Receiver<()>,
) {
    let tick = (timeout / 4).max(Duration::from_millis(1));
    let mut seen = watch.polls.load(Ordering::Acquire);
    let mut progress_at = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let polls = watch.polls.load(Ordering::Acquire);
        if polls != seen || !watch.owed.load(Ordering::Acquire) {
            seen = polls;
            progress_at = Instant::now();
            continue;
        }
        if progress_at.elapsed() >= timeout {
            watch.timed_out.store(true, Ordering::Release);
            watch.slot.free();
            watch
                .slot
                .counters
                .inner
                .sse_write_timeouts
                .fetch_add(1, Ordering::Relaxed);
            if let Some(c) = closer {
                c.close();
            }
            return;
        }
    }
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
    /// Shared with the watchdog; holds the stream's slot.
    watch: Arc<StreamWatch>,
    /// Dropped with the body: ends the watchdog.
    _stop_watchdog: Option<oneshot::Sender<()>>,
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

    /// The next frame, or the end.
    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.sub.is_some() && self.watch.timed_out.load(Ordering::Acquire) {
            // The rest of the message under way goes out, then the end.
            self.sub = None;
        }
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(f));
        }
        if let Some(closing) = &mut self.closing
            && closing.as_mut().poll(cx).is_ready()
        {
            self.closing = None;
            self.sub = None;
        }
        let Some(sub) = &mut self.sub else {
            return Poll::Ready(None);
        };
        match sub.poll_recv(cx) {
            Poll::Ready(Some(d)) => {
                self.push(d);
                Poll::Ready(self.frames.pop_front())
            }
            Poll::Ready(None) => {
                // After `complete`, or after release once drained.
                self.sub = None;
                Poll::Ready(None)
            }
            Poll::Pending => match self.keep_alive.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let next = Instant::now() + self.interval;
                    self.keep_alive.as_mut().reset(next);
                    Poll::Ready(Some(Bytes::from_static(b": keep-alive\n\n")))
                }
                Poll::Pending => Poll::Pending,
            },
        }
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
    frames.push_back(ev.to_bytes());
    frames.push_back(Bytes::from_static(b"\n\n"));
}

impl futures_core::Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.watch.polls.fetch_add(1, Ordering::AcqRel);
        let next = this.next_frame(cx);
        this.watch
            .owed
            .store(matches!(next, Poll::Ready(Some(_))), Ordering::Release);
        next.map(|f| f.map(Ok))
    }
}
