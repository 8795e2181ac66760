// redis-hook: whole file (subscriptions backed by a driver's follow feed).
//! A subscription fed by a driver's [`FollowFeed`] (`Engine::follow` of a
//! trace loaded on another engine): the same contract as a slot's
//! subscription — cursor by seq or time, exactly once in seq order, a gap
//! as one `Lagged`, the end after `complete` or release.

use std::task::{Context, Poll};

use crate::driver::{FeedItem, FollowFeed};
use crate::event::{Delivery, Event, EventKind};

/// The remote part of a [`Subscription`](super::Subscription).
#[derive(Debug)]
pub(super) struct Remote {
    feed: Box<dyn FollowFeed>,
    /// Seq of the next event to deliver.
    pub(super) next_seq: u64,
    min_ts: i64,
    /// The event after a gap, delivered right after its `Lagged`.
    stash: Option<Event>,
    /// The stream ends after the stashed event (it was `complete`).
    ended: bool,
}

/// What a poll of the remote feed gives.
pub(super) enum Step {
    Deliver(Delivery),
    /// Missed events to count, then deliver.
    Lagged(u64),
    End,
    Wait,
}

impl Remote {
    pub(super) fn new(feed: Box<dyn FollowFeed>, from_seq: u64, min_ts: i64) -> Remote {
        Remote {
            feed,
            next_seq: from_seq.max(1),
            min_ts,
            stash: None,
            ended: false,
        }
    }

    fn deliver(&mut self, ev: Event) -> Step {
        if ev.kind == EventKind::Complete {
            self.ended = true;
        }
        Step::Deliver(Delivery::Event(ev))
    }

    pub(super) fn poll_step(&mut self, cx: &mut Context<'_>) -> Step {
        if let Some(ev) = self.stash.take() {
            return self.deliver(ev);
        }
        if self.ended {
            return Step::End;
        }
        loop {
            match self.feed.poll_next(cx) {
                Poll::Pending => return Step::Wait,
                Poll::Ready(None | Some(FeedItem::Released)) => {
                    self.ended = true;
                    return Step::End;
                }
                Poll::Ready(Some(FeedItem::Event(ev))) => {
                    if ev.seq < self.next_seq {
                        continue;
                    }
                    let missed = ev.seq - self.next_seq;
                    self.next_seq = ev.seq + 1;
                    let wanted = ev.timestamp >= self.min_ts;
                    if missed > 0 {
                        if wanted {
                            self.stash = Some(ev);
                        } else if ev.kind == EventKind::Complete {
                            self.ended = true;
                        }
                        return Step::Lagged(missed);
                    }
                    if !wanted {
                        if ev.kind == EventKind::Complete {
                            self.ended = true;
                            return Step::End;
                        }
                        continue;
                    }
                    return self.deliver(ev);
                }
            }
        }
    }
}
