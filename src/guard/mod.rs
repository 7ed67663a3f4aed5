//! The guard: everything that decides whether a request may reach the node.
//!
//! [`gate::Gate`] is the single decision point; it consults the master
//! [`lease`] (on the monotonic [`clock`]), the write [`pause`], mastership
//! [`verify`]cation and the
//! node's [`role`] (demotion, hand-over target, writes in flight). The
//! controller's own commands (heartbeats, `CLIENT PAUSE`, control AUTH) are
//! answered by [`control`]; the `# Leasegate` section of `INFO` by [`info`];
//! what the node said of itself when last probed is in [`node`]; the
//! replication connections passing through, in [`replicas`]; a promotion
//! held until the old master is fenced, in [`promotion`]; Redis's
//! `FAILOVER` command as leasegate answers it, in [`failover_command`];
//! the state of this proxy's own failovers, in [`failover_status`];
//! whether replicas confirmed a batch of writes before they are
//! acknowledged, in [`durability`]; what a successor process takes over at
//! an upgrade, in [`succession`]; what grants from outside the configured
//! lease source may do, in [`outside_grants`].

pub mod clock;
pub mod control;
pub mod durability;
pub mod failover_command;
pub mod failover_status;
pub mod gate;
pub mod info;
pub mod lease;
pub mod node;
pub mod once;
pub mod outside_grants;
pub mod pause;
pub mod pause_timing;
pub mod promotion;
pub mod replicas;
pub mod role;
pub mod succession;
pub mod switch_watch;
pub mod verify;
