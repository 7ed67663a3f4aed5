//! Subscribe mode's book-keeping on the reply side: each confirmation
//! (`subscribe`, `unsubscribe`, their pattern and shard kinds, as RESP2
//! arrays or RESP3 pushes) sets the session's subscription counts and
//! counts toward the subscribe-family request waiting for it; the mode
//! ends where none is left. A request is answered by all its
//! confirmations (one per channel named; a bare `UNSUBSCRIBE`, one per
//! subscription of its kind), so that the replies behind it stay in place.

use crate::resp::reply::{pubsub_push, PubSubFrame, PubSubKind};

use super::state::{Owed, Stream};
use super::Session;

impl Session {
    /// A RESP3 push in subscribe mode: a confirmation is counted as in
    /// RESP2.
    #[cold]
    pub(super) fn pubsub_push(&mut self, range: &std::ops::Range<usize>) {
        if let Some(frame) = pubsub_push(&self.from_backend[range.clone()]) {
            self.pubsub_frame(frame);
        }
    }

    /// A reply that answers a request while a subscribe-family request
    /// waits for its confirmations: the node has sent all it will for that
    /// request, and the wait ends. Before any confirmation, the reply is
    /// that request's own answer (`-NOPERM`, `-NOAUTH`: nothing was
    /// subscribed), passed on (or dropped where replies are muted, its turn
    /// taken): returns `true`. After some (fewer than counted), it is the
    /// next request's: returns `false`. (Left waiting, the entry took every
    /// later reply for good: a review.)
    #[cold]
    pub(super) fn pubsub_wait_answered(
        &mut self,
        range: &std::ops::Range<usize>,
        passed: &mut usize,
    ) -> bool {
        let Some(Owed::PubSub(confirmations)) = self.owed.pop_front() else {
            return false;
        };
        self.pubsub_owed = self.pubsub_owed.saturating_sub(1);
        if self.subscriptions == 0 && self.shard_subscriptions == 0 {
            self.stream = Stream::Replies;
        }
        let own = confirmations.none_came();
        if own && !self.mute.is_on() {
            self.pass_run(passed, range.start);
            *passed = range.end;
        }
        if !matches!(self.owed.front(), None | Some(Owed::Reply(_))) {
            self.pass_run(passed, if own { range.end } else { range.start });
            self.settle();
        }
        own
    }

    /// A pub/sub frame: a confirmation counts toward the subscribe-family
    /// request at the head of the queue, which is answered once all of
    /// its own came; the mode ends there when no subscription is left. (A
    /// confirmation no request waits for ends it at a count of zero.)
    pub(super) fn pubsub_frame(&mut self, frame: PubSubFrame) {
        let (count, kind, unsubscribed) = match frame {
            PubSubFrame::Message => return,
            PubSubFrame::Subscribed { count, kind } => (count, kind, false),
            PubSubFrame::Unsubscribed { count, kind } => (count, kind, true),
        };
        self.set_subscriptions(count, kind);
        let answered = match self.owed.front_mut() {
            Some(Owed::PubSub(confirmations)) if confirmations.is_reached() => {
                confirmations.confirmed()
            }
            _ => unsubscribed,
        };
        if !answered {
            return;
        }
        if matches!(self.owed.front(), Some(Owed::PubSub(c)) if c.is_answered()) {
            self.owed.pop_front();
            self.pubsub_owed = self.pubsub_owed.saturating_sub(1);
        }
        if self.subscriptions == 0 && self.shard_subscriptions == 0 {
            self.stream = Stream::Replies;
        }
    }

    /// A confirmation's count: of channels and patterns together (and so
    /// of patterns alone, where its kind says which changed), or of shard
    /// channels.
    fn set_subscriptions(&mut self, count: i64, kind: PubSubKind) {
        match kind {
            PubSubKind::Shard => self.shard_subscriptions = count,
            PubSubKind::Channel => self.subscriptions = count,
            PubSubKind::Pattern => {
                let channels = self.subscriptions - self.patterns;
                self.patterns = (count - channels).max(0);
                self.subscriptions = count;
            }
        }
        self.patterns = self.patterns.min(self.subscriptions.max(0));
    }

    /// The session's subscriptions of `kind`, as the confirmations said.
    pub(super) fn subscriptions_of(&self, kind: PubSubKind) -> i64 {
        match kind {
            PubSubKind::Shard => self.shard_subscriptions,
            PubSubKind::Channel => self.subscriptions - self.patterns,
            PubSubKind::Pattern => self.patterns,
        }
    }
}
