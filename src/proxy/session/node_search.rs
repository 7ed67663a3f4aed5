//! One look at a time for a node that is down, for all the clients that
//! wait for it ([`super::find_node`]).
//!
//! Each waiting client looked for itself every 100 ms — a connection to
//! the node with a `PING`, and one to the new master's leasegate with an
//! `INFO leasegate` — so the cost grew with the clients waiting: 1,500 of
//! them took a third of a core (walkthrough 20), and the default
//! `max_clients` would have meant ~100,000 connection attempts a second.
//! Now one waiter looks while the others wait for what it found: nothing
//! (they look again only once [`LOOK_EVERY`] has passed), or the node or
//! a new master (then they look too, each opening its own connection
//! there, [`AT_ONCE`] at a time: 1,500 at once overflowed the node's
//! listen backlog, and half of them were served a second late,
//! walkthrough 21). Waiters are woken when a look ends, not by polling.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a node that is down is looked for.
pub const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How many waiting clients connect to the node (or the new master) at
/// once after a look found it.
pub const AT_ONCE: usize = 128;

/// What the waiting clients of one leasegate know of their node.
#[derive(Debug, Default)]
pub struct NodeSearch {
    state: Mutex<State>,
    /// Woken when a look ends.
    ended: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    /// A client is looking now, alone.
    looking: bool,
    /// Clients looking after a find.
    following: usize,
    /// When the last look ended, and whether it found somewhere to go.
    last: Option<(Instant, bool)>,
}

/// A look under way: ends (found or not) with [`Look::ended`]; dropped
/// unended, it frees its turn for another client.
pub struct Look<'s> {
    search: &'s NodeSearch,
    /// It holds the turn (no find is recent).
    exclusive: bool,
    ended: bool,
}

impl NodeSearch {
    /// Whether the client asking now should look (`Some`) or wait: after
    /// a recent find the others look, [`AT_ONCE`] at a time; after a
    /// recent miss nobody; else one at a time.
    pub fn turn(&self, now: Instant) -> Option<Look<'_>> {
        let look = |exclusive| Look {
            search: self,
            exclusive,
            ended: false,
        };
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock: everyone looks, as before.
            return Some(look(true));
        };
        let recent = state
            .last
            .filter(|(at, _)| now.saturating_duration_since(*at) < LOOK_EVERY)
            .map(|(_, found)| found);
        match recent {
            Some(true) if state.following < AT_ONCE => {
                state.following += 1;
                Some(look(false))
            }
            Some(_) => None,
            None if state.looking => None,
            None => {
                state.looking = true;
                Some(look(true))
            }
        }
    }

    /// Returns when a look ends, or after `at_most`.
    pub async fn next_look(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.ended.notified()).await;
    }
}

impl Look<'_> {
    /// The look found somewhere to go (`found`) or not.
    pub fn ended(mut self, found: bool) {
        self.ended = true;
        self.release(Some(found));
    }

    fn release(&self, found: Option<bool>) {
        if let Ok(mut state) = self.search.state.lock() {
            if self.exclusive {
                state.looking = false;
            } else {
                state.following = state.following.saturating_sub(1);
            }
            if let Some(found) = found {
                state.last = Some((Instant::now(), found));
            }
        }
        self.search.ended.notify_waiters();
    }
}

impl Drop for Look<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.release(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_looks_at_a_time_and_a_miss_holds_the_others_for_a_while() {
        let search = NodeSearch::default();
        let now = Instant::now();
        let look = search.turn(now).expect("the first looks");
        assert!(search.turn(now).is_none(), "another waits while one looks");
        look.ended(false);
        assert!(
            search.turn(Instant::now()).is_none(),
            "a miss holds the others"
        );
        let later = Instant::now() + LOOK_EVERY + Duration::from_millis(1);
        let look = search.turn(later).expect("looked for again after a while");
        // Found: the others look too (each opens its own connection
        // there), a bounded number at once.
        look.ended(true);
        let now = Instant::now();
        let mut following: Vec<_> = (0..AT_ONCE)
            .map(|_| search.turn(now).expect("after a find, the others look"))
            .collect();
        assert!(search.turn(now).is_none(), "{AT_ONCE} at a time");
        following.pop();
        assert!(search.turn(now).is_some(), "a place freed");
        drop(following);
        // A miss after it holds them again.
        let miss = search.turn(Instant::now()).expect("looks");
        miss.ended(false);
        assert!(search.turn(Instant::now()).is_none());
        // A look dropped unended frees the turn.
        let much_later = Instant::now() + 2 * LOOK_EVERY;
        let held = search.turn(much_later).expect("looked for again");
        assert!(search.turn(much_later).is_none());
        drop(held);
        assert!(search.turn(much_later).is_some());
    }
}
