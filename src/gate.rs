//! The Gate: the single place that decides whether a request may pass.
//!
//! Every request a session frames is classified (read, write, admin,
//! intercept) and then put to [`Gate::admit`], which answers `Forward` or
//! `Reject` with the exact reply to send instead. Today it enforces the
//! `commands.deny` list; the master lease, per-write verification and write
//! pauses plug in here, so that nothing else in the code decides whether a
//! write may reach the node.
//!
//! The policy (command table, deny list) sits behind an `ArcSwap` so that a
//! config reload replaces it atomically while sessions keep running; a session
//! loads it once per batch of requests, never per request.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;

use crate::command::{Class, Classified, CommandTable};

/// Everything the Gate consults that a reload may change.
#[derive(Debug)]
pub struct Policy {
    pub commands: CommandTable,
}

/// One request as the Gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'p> {
    /// The class after session context (EXEC is a write if a queued command was).
    pub class: Class,
    pub command: Classified<'p>,
}

/// The Gate's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the request to the backend.
    Forward,
    /// Do not forward; answer with this complete RESP reply in the request's
    /// place of the pipeline.
    Reject(Bytes),
}

/// Decides, for every request, whether it may pass.
#[derive(Debug)]
pub struct Gate {
    policy: ArcSwap<Policy>,
}

impl Gate {
    pub fn new(policy: Policy) -> Gate {
        Gate {
            policy: ArcSwap::from_pointee(policy),
        }
    }

    /// The current policy; hold the guard for one batch of requests.
    #[inline]
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// Replaces the policy (config reload); sessions see it from their next batch.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// May this request pass?
    #[inline]
    pub fn admit(&self, request: &Admission<'_>) -> Verdict {
        if let Some(reply) = request.command.denied {
            return Verdict::Reject(reply.clone());
        }
        Verdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Name;
    use crate::config::CommandsConfig;

    #[test]
    fn denied_commands_are_rejected_with_their_reply() {
        let config = CommandsConfig {
            deny: vec!["FLUSHALL".into()],
            ..CommandsConfig::default()
        };
        let gate = Gate::new(Policy {
            commands: CommandTable::build(&config, &[]),
        });
        let policy = gate.policy();
        let flush = policy
            .commands
            .classify(&Name::new(b"FlushAll"), &Name::EMPTY);
        let verdict = gate.admit(&Admission {
            class: flush.class,
            command: flush,
        });
        assert_eq!(
            verdict,
            Verdict::Reject(Bytes::from_static(
                b"-ERR command 'flushall' is disabled by leasegate\r\n"
            ))
        );
        let get = policy.commands.classify(&Name::new(b"GET"), &Name::EMPTY);
        assert_eq!(
            gate.admit(&Admission {
                class: get.class,
                command: get
            }),
            Verdict::Forward
        );
    }
}
