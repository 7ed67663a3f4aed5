//! Admin commands: they pass (never fenced or paused: the controller must
//! be able to reconfigure a fenced node), save those the Gate carries out
//! itself (the controller's `CLIENT PAUSE`, `FAILOVER`), rewrites
//! (`CLIENT REPLY`), observes (a role change, applied once the node accepts
//! it, [`super::observe`]) or refuses to an ordinary client (a role
//! change, where the controller is known by its connections).

use bytes::Bytes;

use crate::command::{ReplyMode, Special, CLIENT_REPLY_ON};
use crate::resp::request::arguments;

use super::{Admission, Answer, Gate, Verdict, OK};

impl Gate {
    /// Admin commands pass (they are never fenced or paused) after the
    /// controller's own are intercepted and role changes observed.
    #[inline]
    pub(super) fn admin(&self, r: &Admission<'_>) -> Verdict {
        if !r.control && r.command.special.reconfigures_node() {
            if let Some(refused) = self.reconfiguration_refused(r) {
                return refused;
            }
        }
        match r.command.special {
            Special::ClientPause | Special::ClientUnpause if r.control => self.client_pause(r),
            Special::ReplicaOf | Special::SetNodeId | Special::SetNodes => self.observe(r),
            Special::ClientReply => client_reply(r),
            Special::Failover => self.failover_command(r),
            _ => Verdict::Forward,
        }
    }

    /// An ordinary client's command that would change the node's role, id
    /// or slots is refused where the controller is known by its
    /// connections: the controller (or Sentinel) reconfigures the nodes.
    /// A topology promoting a replica, sent by an ordinary client, made
    /// its node master while the old master kept its lease; the controller
    /// then adopted the node's newer version and demoted the old master,
    /// which resynced and lost what it had acknowledged (an attack pass:
    /// 19,141 acknowledged writes lost). Not `REPLICAOF` under a Sentinel
    /// lease source: the Sentinels send it as ordinary clients, and their
    /// promotions wait for the old master to be fenced.
    #[cold]
    fn reconfiguration_refused(&self, r: &Admission<'_>) -> Option<Verdict> {
        if r.command.special == Special::ReplicaOf && self.role.promotion_fence.fences_replicaof() {
            return None;
        }
        if !self.settings.load().control.identifies_controller() {
            return None;
        }
        self.metrics.control_refused.inc();
        // The command as named: `REPLICAOF`, `CLUSTERX SETNODES`.
        let words = r.head.words(r.bytes);
        let mut named = String::from_utf8_lossy(&words.name).to_ascii_uppercase();
        if r.command.special != Special::ReplicaOf {
            named.push(' ');
            named.push_str(&String::from_utf8_lossy(&words.sub).to_ascii_uppercase());
        }
        Some(Verdict::Reply(crate::resp::encode::error(&format!(
            "NOPERM leasegate: {named} changes the node's role or slots, which only the controller does: send it on a control connection (control.allow_from or control.password)"
        ))))
    }

    /// `FAILOVER ...`: only the controller or an admin (a control
    /// connection) may ask; leasegate carries it out
    /// ([`crate::guard::failover_command`]).
    #[cold]
    fn failover_command(&self, r: &Admission<'_>) -> Verdict {
        use crate::guard::failover_command::parse;
        if !r.control {
            self.metrics.control_refused.inc();
            return Verdict::Reply(Bytes::from_static(
                b"-NOPERM leasegate answers FAILOVER only on a control connection (AUTH with control.password, or control.allow_from)\r\n",
            ));
        }
        let args = arguments(r.bytes, r.head.inline);
        let rest: Vec<&[u8]> = args.iter().skip(1).map(|a| a.as_ref()).collect();
        let reply = |e: &'static str| Verdict::Reply(Bytes::from_static(e.as_bytes()));
        let command = &self.role.failover_command;
        match parse(&rest) {
            Err(e) => reply(e),
            Ok(None) => match command.abort() {
                Ok(()) => Verdict::Reply(Bytes::from_static(OK)),
                Err(e) => reply(e),
            },
            Ok(Some(_)) if self.role.node.is_replica() => {
                reply("-ERR FAILOVER is not valid when server is a replica.\r\n")
            }
            Ok(Some(ask)) => match command.start(ask) {
                Ok(()) => Verdict::Reply(Bytes::from_static(OK)),
                Err(e) => reply(e),
            },
        }
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`: the node is sent `ON` whatever the client
/// asked, so that it answers every request (replies stay matched, writes
/// are counted back and their acknowledgements checked); the session drops
/// what the asked mode says the node would not have sent, once the node's
/// `+OK` shows it knows the command. Any other shape goes as it came, for
/// the node's own error.
#[cold]
fn client_reply(r: &Admission<'_>) -> Verdict {
    match ReplyMode::requested(&arguments(r.bytes, r.head.inline)) {
        Some(mode) => Verdict::Rewrite {
            request: Bytes::from_static(CLIENT_REPLY_ON),
            answer: Answer::ReplyMode(mode),
        },
        None => Verdict::Forward,
    }
}
