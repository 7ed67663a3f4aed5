//! `CLIENT REPLY ON|OFF|SKIP`: what the client asks of the node's replies.
//!
//! leasegate never sends `OFF` or `SKIP` on to the node: the node keeps
//! answering every request, so that replies stay matched to requests, a
//! write counts as in flight until the node has processed it, and a write's
//! acknowledgement is still checked against the lease. The session drops
//! the replies the node would not have sent (`proxy::session::mute`). This
//! module only reads the request.

/// The reply mode a `CLIENT REPLY` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Every request is answered (the default).
    On,
    /// No request is answered until `ON`.
    Off,
    /// The next request is not answered.
    Skip,
}

/// `CLIENT REPLY ON` as the node is sent it, whatever mode the client asked
/// for (the node's reply, `+OK` or an error, tells whether it knows the
/// command).
pub const CLIENT_REPLY_ON: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n";

impl ReplyMode {
    /// The mode a `CLIENT REPLY <mode>` request asks for, from its
    /// arguments (`CLIENT`, `REPLY`, the mode); `None` for any other shape
    /// (a missing or extra argument, an unknown mode), which goes to the
    /// node as it came for the node's own error.
    pub fn requested(args: &[Vec<u8>]) -> Option<ReplyMode> {
        let [_, _, mode] = args else {
            return None;
        };
        [
            (&b"on"[..], ReplyMode::On),
            (b"off", ReplyMode::Off),
            (b"skip", ReplyMode::Skip),
        ]
        .into_iter()
        .find(|(name, _)| mode.eq_ignore_ascii_case(name))
        .map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn only_the_three_argument_forms_are_modes() {
        let m = |w: &[&str]| ReplyMode::requested(&args(w));
        assert_eq!(m(&["CLIENT", "REPLY", "ON"]), Some(ReplyMode::On));
        assert_eq!(m(&["client", "reply", "off"]), Some(ReplyMode::Off));
        assert_eq!(m(&["Client", "Reply", "SkIp"]), Some(ReplyMode::Skip));
        assert_eq!(m(&["CLIENT", "REPLY"]), None);
        assert_eq!(m(&["CLIENT", "REPLY", "OFF", "x"]), None);
        assert_eq!(m(&["CLIENT", "REPLY", "FOO"]), None);
    }

    #[test]
    fn the_request_sent_instead_is_client_reply_on() {
        let decoded = crate::resp::request::arguments(CLIENT_REPLY_ON, false);
        assert_eq!(ReplyMode::requested(&decoded), Some(ReplyMode::On));
    }
}
