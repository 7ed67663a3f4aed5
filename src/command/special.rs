//! Commands the proxy must understand beyond read/write, tagged in the table
//! once so that the session and the Gate match on a tag instead of comparing
//! names after the lookup.

/// What is special about a command (or a command and subcommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Special {
    #[default]
    None,
    /// MULTI: opens a transaction once the node answers `+OK`.
    Multi,
    /// EXEC: runs the transaction (a write if a queued command was).
    Exec,
    /// DISCARD: drops the transaction and its WATCH.
    Discard,
    Watch,
    Unwatch,
    /// RESET: the connection back to its initial state.
    Reset,
    /// QUIT: the node answers and closes; the session ends with it.
    Quit,
    /// HELLO: protocol switch, maybe with AUTH; replayed at a hand-over.
    Hello,
    /// AUTH: replayed at a hand-over; the control password is taken here.
    Auth,
    /// SELECT: replayed at a hand-over.
    Select,
    /// CLIENT SETNAME: replayed at a hand-over.
    SetName,
    /// (P|S)SUBSCRIBE: RESP2 replies take no request slot.
    Subscribe,
    /// (P|S)UNSUBSCRIBE.
    Unsubscribe,
    /// MONITOR: everything after its reply is a stream.
    Monitor,
    /// BLPOP & co.: may block for long before answering.
    Blocking,
    /// XREAD / XREADGROUP: blocking only with a `BLOCK` option.
    BlockingWithOption,
    /// CLIENT PAUSE / UNPAUSE: the controller's pause the proxy itself.
    ClientPause,
    ClientUnpause,
    /// CLIENT REPLY: the node is always sent `ON`; the session drops what
    /// OFF and SKIP say the node would not send ([`crate::command::ReplyMode`]).
    ClientReply,
    /// REPLICAOF / SLAVEOF: a role change, applied on the node's `+OK`.
    ReplicaOf,
    /// CLUSTERX SETNODEID: the node's id, learned on the node's `+OK`.
    SetNodeId,
    /// CLUSTERX SETNODES: the topology, a role change on the node's `+OK`.
    SetNodes,
    /// SYNC / PSYNC (Redis and Kvrocks) and Kvrocks' full-sync file
    /// transfers (`_fetch_meta`, `_fetch_file`): from its reply on, the
    /// connection carries a replication stream, passed through unframed.
    ReplicationStream,
    /// Kvrocks' `_db_name`: answered by a bare line (`<name>\r\n`), not RESP.
    BareLine,
    /// REPLCONF: the one request a replication connection still carries.
    ReplConf,
    /// INFO: leasegate adds its own section.
    Info,
    /// CLUSTERX PROBE: the node probe's record, for the controller.
    Probe,
    /// FAILOVER: answered by leasegate for the controller or admin.
    Failover,
    /// PUBLISH, and Kvrocks' MPUBLISH and sharded SPUBLISH: a write to
    /// the replication stream (`guard::gate::publish`).
    Publish,
    /// EVAL_RO, EVALSHA_RO, FCALL_RO: reads on Redis, which refuses every
    /// command that writes or replicates in them; writes on Kvrocks, whose
    /// read-only scripts may call any command it flags read-only, some of
    /// which write (`ZDIFFSTORE`) or replicate (`PUBLISH`, `MPUBLISH`).
    ReadOnlyScript,
    /// CLIENT KILL: inside a transaction that changes the node's role
    /// (Sentinel's), `TYPE normal` is not sent (`proxy::session::role_change`).
    ClientKill,
    /// CLIENT TRACKING: client-side caching, whose invalidations come from
    /// the node that served the reads; such a session cannot go on over
    /// another node connection unseen.
    Tracking,
    /// Asks about the node itself (`ROLE`, `CLUSTER INFO|MYID`, `CLUSTERX
    /// VERSION|MYID`), or a source node's `CLUSTER IMPORT` of a migration:
    /// never sent to another node on this node's behalf
    /// ([`Special::addresses_node`]).
    NodeAddressed,
    /// Moves slots between nodes (`CLUSTERX SETSLOT|MIGRATE`): the
    /// controller's slot migration, addressed to this node as
    /// `NodeAddressed` is.
    SlotMigration,
}

impl Special {
    /// Whether the request is addressed to this node as a node (what a
    /// controller or Sentinel asks of it, `INFO` included, or a role or
    /// topology change),
    /// not to the data: a session served by another node's leasegate (a
    /// hand-over, or a stand-in while this node is down) must not send it
    /// there, or the controller would take the other node's answer for this
    /// one's (a dead node reported alive and up to date, never brought back).
    pub fn addresses_node(self) -> bool {
        matches!(
            self,
            Special::NodeAddressed
                | Special::SlotMigration
                | Special::ReplicaOf
                | Special::SetNodeId
                | Special::SetNodes
                | Special::Info
        )
    }

    /// What a leasegate carries out itself for a control connection (the
    /// controller's, or one from `control.allow_from`), and refuses
    /// (`FAILOVER`) or passes to the node (`CLIENT PAUSE`, `CLIENT
    /// UNPAUSE`) for anyone else.
    /// (`CLUSTERX HEARTBEAT` and `PROBE` are intercepted wherever they
    /// come from.)
    pub fn is_control(self) -> bool {
        matches!(
            self,
            Special::ClientPause | Special::ClientUnpause | Special::Failover
        )
    }

    /// What changes the node's role, id or slots, the controller's (or
    /// Sentinel's) to send: refused to ordinary clients where the
    /// controller is known by its connections
    /// ([`crate::guard::gate::Gate::admit`]).
    pub fn reconfigures_node(self) -> bool {
        matches!(
            self,
            Special::ReplicaOf | Special::SetNodeId | Special::SetNodes | Special::SlotMigration
        )
    }
}

/// `(command, subcommand, tag)`, lowercase.
pub(super) const SPECIALS: &[(&str, Option<&str>, Special)] = &[
    ("multi", None, Special::Multi),
    ("exec", None, Special::Exec),
    ("discard", None, Special::Discard),
    ("watch", None, Special::Watch),
    ("unwatch", None, Special::Unwatch),
    ("reset", None, Special::Reset),
    ("quit", None, Special::Quit),
    ("hello", None, Special::Hello),
    ("auth", None, Special::Auth),
    ("select", None, Special::Select),
    ("client", Some("setname"), Special::SetName),
    ("client", Some("pause"), Special::ClientPause),
    ("client", Some("unpause"), Special::ClientUnpause),
    ("client", Some("reply"), Special::ClientReply),
    ("client", Some("tracking"), Special::Tracking),
    ("client", Some("kill"), Special::ClientKill),
    ("subscribe", None, Special::Subscribe),
    ("psubscribe", None, Special::Subscribe),
    ("ssubscribe", None, Special::Subscribe),
    ("unsubscribe", None, Special::Unsubscribe),
    ("punsubscribe", None, Special::Unsubscribe),
    ("sunsubscribe", None, Special::Unsubscribe),
    ("monitor", None, Special::Monitor),
    ("blpop", None, Special::Blocking),
    ("brpop", None, Special::Blocking),
    ("brpoplpush", None, Special::Blocking),
    ("blmove", None, Special::Blocking),
    ("blmpop", None, Special::Blocking),
    ("bzpopmin", None, Special::Blocking),
    ("bzpopmax", None, Special::Blocking),
    ("bzmpop", None, Special::Blocking),
    // The node runs nothing behind a `WAIT` either until it returns (`WAIT
    // 1 0` with no replica: never): a write pipelined behind one stayed
    // counted in flight, and every pause failed.
    ("wait", None, Special::Blocking),
    ("waitaof", None, Special::Blocking),
    ("xread", None, Special::BlockingWithOption),
    ("xreadgroup", None, Special::BlockingWithOption),
    ("replicaof", None, Special::ReplicaOf),
    ("slaveof", None, Special::ReplicaOf),
    ("clusterx", Some("setnodeid"), Special::SetNodeId),
    ("clusterx", Some("setnodes"), Special::SetNodes),
    ("sync", None, Special::ReplicationStream),
    ("psync", None, Special::ReplicationStream),
    ("_fetch_meta", None, Special::ReplicationStream),
    ("_fetch_file", None, Special::ReplicationStream),
    ("_db_name", None, Special::BareLine),
    ("replconf", None, Special::ReplConf),
    ("info", None, Special::Info),
    ("clusterx", Some("probe"), Special::Probe),
    ("failover", None, Special::Failover),
    ("publish", None, Special::Publish),
    ("mpublish", None, Special::Publish),
    ("spublish", None, Special::Publish),
    ("eval_ro", None, Special::ReadOnlyScript),
    ("evalsha_ro", None, Special::ReadOnlyScript),
    ("fcall_ro", None, Special::ReadOnlyScript),
    ("role", None, Special::NodeAddressed),
    ("cluster", Some("info"), Special::NodeAddressed),
    ("cluster", Some("myid"), Special::NodeAddressed),
    ("clusterx", Some("version"), Special::NodeAddressed),
    ("clusterx", Some("myid"), Special::NodeAddressed),
    ("clusterx", Some("setslot"), Special::SlotMigration),
    ("clusterx", Some("migrate"), Special::SlotMigration),
    // Sent by the source node of a migration to the destination's
    // leasegate, as an ordinary client (a review: refused, it broke slot
    // migration where only the controller's hosts are trusted).
    ("cluster", Some("import"), Special::NodeAddressed),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    #[test]
    fn every_tag_lands_on_a_known_command() {
        let table = CommandTable::builtin();
        for (name, sub, special) in SPECIALS {
            let sub = sub.unwrap_or("").as_bytes();
            let got = table.classify(name.as_bytes(), sub).special;
            assert_eq!(got, *special, "{name} {sub:?}");
        }
        let plain = table.classify(b"set", b"");
        assert_eq!(plain.special, Special::None);
        // A subcommand without a tag keeps the command's own.
        let list = table.classify(b"client", b"list");
        assert_eq!(list.special, Special::None);
    }
}
