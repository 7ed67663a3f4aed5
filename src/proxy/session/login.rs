//! Whether the client has authenticated, where the node requires it
//! (`backend.password` is set): until it has, what it may send is held to
//! Redis's own limits for unauthenticated clients
//! ([`crate::resp::request::UNAUTHENTICATED`]: 10 arguments, 16 KiB a
//! bulk), as the node itself would hold it. Without them anyone who could
//! connect made leasegate buffer up to `limits.max_bulk_len` (512 MiB) a
//! connection, which the node refuses after one header.
//!
//! leasegate frames requests ahead of the node's answers (pipelining):
//! once an `AUTH` or `HELLO` is on its way, what follows it is framed with
//! the configured limits, and tightened again if the node refuses it
//! (Redis parses the next request only after running the `AUTH`).

use serde::{Deserialize, Serialize};

use super::Session;

/// The client's login, as its session follows it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Login {
    /// The node requires a password (and the client is not trusted).
    required: bool,
    /// The node accepted the client's `AUTH` or `HELLO`, or leasegate its
    /// control password.
    authenticated: bool,
    /// `AUTH` and `HELLO` requests not answered yet.
    pending: u16,
}

impl Login {
    /// Whether the unauthenticated limits apply to what is framed next.
    fn limited(self) -> bool {
        self.required && !self.authenticated && self.pending == 0
    }
}

impl Session {
    /// A new client: the node requires a password (`required`) or not.
    pub(super) fn login_starts(&mut self, required: bool) {
        self.login = Login {
            required,
            ..Login::default()
        };
        self.apply_login();
    }

    /// An `AUTH` or `HELLO` goes to the node.
    pub(super) fn auth_sent(&mut self) {
        if self.login.required && !self.login.authenticated {
            self.login.pending = self.login.pending.saturating_add(1);
            self.apply_login();
        }
    }

    /// The node answered an `AUTH` or `HELLO`: `accepted` or not.
    pub(super) fn auth_answered(&mut self, accepted: bool) {
        self.login.pending = self.login.pending.saturating_sub(1);
        self.login.authenticated |= accepted;
        self.apply_login();
    }

    /// The client authenticated with leasegate's control password (the
    /// controller may send topologies past 16 KiB).
    pub(super) fn login_as_control(&mut self) {
        self.login.authenticated = true;
        self.apply_login();
    }

    /// An accepted `RESET` logs the client out, as on the node.
    pub(super) fn logged_out(&mut self) {
        self.login.authenticated = false;
        self.login.pending = 0;
        self.apply_login();
    }

    /// The login a moved session had at its predecessor.
    pub(super) fn put_login(&mut self, login: Login) {
        self.login = login;
        self.apply_login();
    }

    fn apply_login(&mut self) {
        self.requests.set_unauthenticated(self.login.limited());
    }
}
