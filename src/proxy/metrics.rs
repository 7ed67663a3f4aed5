//! The data plane's own counters, registered under `leasegate_` by the
//! control plane: node connections that could not be opened, sessions
//! moved to another leasegate, clients not read from because their
//! unsent replies passed `limits.max_client_output_bytes`, idle sessions
//! that gave their buffers back, TLS handshakes by outcome, and clients
//! waiting for a node that is down.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result` of a hand-over or a TLS handshake.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverResult {
    pub result: &'static str,
}

#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// A client's node connection could not be opened (the client got the
    /// backend-unavailable error).
    pub backend_connect_errors: Counter,
    /// Sessions moved to (or back from) another leasegate, by result.
    pub handovers: Family<HandoverResult, Counter>,
    /// Times a session stopped reading because of unsent replies.
    pub backpressure: Counter,
    /// Clients closed because a pause waited for a write of theirs whose
    /// reply was behind unread replies (`proxy::session::driver::unread`).
    pub unread_closed: Counter,
    /// Times an idle session gave its buffers back ([`crate::proxy::session::trim`]).
    pub buffers_released: Counter,
    /// TLS handshakes on `tls.listen`, by outcome ([`crate::proxy::tls`]).
    pub tls_handshakes: Family<HandoverResult, Counter>,
    /// Clients waiting for their node, which is down, with their requests
    /// held (`controller.node_lost_wait_ms`).
    pub waiting_for_node: Gauge,
}

impl ProxyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        for result in ["success", "failed"] {
            let _ = self.handovers.get_or_create(&HandoverResult { result });
        }
        registry.register(
            "backend_connect_errors",
            "Node connections for new clients that could not be opened",
            self.backend_connect_errors.clone(),
        );
        registry.register(
            "handovers",
            "Sessions moved to the new master's leasegate (or back), by result",
            self.handovers.clone(),
        );
        registry.register(
            "client_backpressure",
            "Times a client stopped being read because its unsent replies passed limits.max_client_output_bytes",
            self.backpressure.clone(),
        );
        registry.register(
            "clients_closed_unread",
            "Clients closed because a pause waited for a write of theirs whose reply was behind more than twice limits.max_client_output_bytes of unread replies",
            self.unread_closed.clone(),
        );
        for result in crate::proxy::tls::HANDSHAKE_OUTCOMES {
            let _ = self
                .tls_handshakes
                .get_or_create(&HandoverResult { result });
        }
        registry.register(
            "tls_handshakes",
            "TLS handshakes on tls.listen by outcome: ok, failed (the log says why), plaintext (a client spoke plaintext to the TLS port), timeout",
            self.tls_handshakes.clone(),
        );
        registry.register(
            "clients_waiting_for_node",
            "Clients whose node is down, waiting for it or for the new master's leasegate with their requests held (controller.node_lost_wait_ms)",
            self.waiting_for_node.clone(),
        );
        registry.register(
            "idle_buffers_released",
            "Times an idle session gave its buffers back (they grow again on its next request)",
            self.buffers_released.clone(),
        );
    }

    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&HandoverResult { result })
            .inc();
    }

    pub fn handover(&self, ok: bool) {
        let result = if ok { "success" } else { "failed" };
        self.handovers
            .get_or_create(&HandoverResult { result })
            .inc();
    }
}
