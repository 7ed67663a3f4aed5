//! Admin API answers as `leasegate ctl` shows them to a person: one short
//! line per concern, the facts an operator looks for first. (`--json`
//! prints the answer itself, for scripts.)

use super::admin_api::{
    LeaseOutcome, LeaseResponse, LeaseView, PauseMode, PauseResponse, PauseView, ProbeReport,
    ReloadResponse, Status,
};

/// `lease: valid, 4.2 s left, epoch 3, owner <id> (block-write)`.
pub fn lease(l: &LeaseView) -> String {
    let mode = match l.mode {
        super::admin_api::LeaseMode::Disabled => "disabled",
        super::admin_api::LeaseMode::LogOnly => "log-only",
        super::admin_api::LeaseMode::BlockWrite => "block-write",
    };
    let state = match (l.valid, l.remaining_ms) {
        (true, Some(ms)) => format!("valid, {:.1} s left", ms as f64 / 1000.0),
        (true, None) => "valid until told otherwise".to_string(),
        (false, _) => match &l.revoked_reason {
            Some(r) => format!("NOT valid ({r})"),
            None => "NOT valid (expired)".to_string(),
        },
    };
    format!(
        "lease: {state}, epoch {}, owner {}, this node {} ({mode})",
        l.epoch,
        l.owner.as_deref().unwrap_or("none"),
        l.node_id.as_deref().unwrap_or("unknown"),
    )
}

/// `pause: off` / `pause: writes held, 3 requests (120 bytes)`.
pub fn pause(p: &PauseView) -> String {
    if !p.paused {
        return "pause: off".to_string();
    }
    let what = match p.mode {
        Some(PauseMode::All) => "everything held",
        _ => "writes held",
    };
    format!(
        "pause: {what}, {} requests ({} bytes)",
        p.held_requests, p.held_bytes
    )
}

/// `/v1/status`.
pub fn status(s: &Status) -> String {
    let node = match (&s.node.replication, &s.node.error) {
        (Some(r), _) => format!(
            "node {}: {}{}",
            s.backend,
            r.role.as_deref().unwrap_or("unknown role"),
            r.offset
                .map(|o| format!(", offset {o}"))
                .unwrap_or_default()
        ),
        (None, Some(e)) => format!("node {}: probe failed: {e}", s.backend),
        (None, None) => format!("node {}: not probed", s.backend),
    };
    let demoted = match &s.demoted {
        Some(d) => format!(
            "demoted: yes, new master {}",
            d.new_master.as_deref().unwrap_or("unknown")
        ),
        None => "demoted: no".to_string(),
    };
    [
        format!("leasegate {} → {}", s.listen, s.backend),
        lease(&s.lease),
        node,
        pause(&s.pause),
        format!("failover: {}", s.failover_state.as_str()),
        demoted,
    ]
    .join("\n")
}

/// `/v1/probe`.
pub fn probe(p: &ProbeReport) -> String {
    if !p.enabled {
        return "probe: off (lease.probe_interval_ms is 0)".to_string();
    }
    let seen = p
        .last_success_ms_ago
        .map_or("never succeeded".to_string(), |ms| {
            format!("last success {ms} ms ago")
        });
    let head = if p.reachable {
        format!(
            "node reachable: {}{}",
            p.role.as_deref().unwrap_or("unknown role"),
            p.offset
                .map(|o| format!(", offset {o}"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "node UNREACHABLE: {}",
            p.error.as_deref().unwrap_or("no probe answered yet")
        )
    };
    format!(
        "{head}\nprobes: every {} ms, {} failed in a row, {seen}\n{}",
        p.probe_interval_ms,
        p.consecutive_failures,
        lease(&p.lease)
    )
}

/// `POST /v1/lease`.
pub fn lease_response(r: &LeaseResponse) -> String {
    let outcome = match r.outcome {
        LeaseOutcome::Renewed => "granted",
        LeaseOutcome::Revoked => "revoked (another node named master)",
        LeaseOutcome::UnknownNonce => "not applied (unknown nonce)",
    };
    format!("{outcome}\n{}", lease(&r.lease))
}

/// `POST /v1/pause`, `/v1/unpause`.
pub fn pause_response(r: &PauseResponse) -> String {
    pause(&r.pause)
}

/// `POST /v1/reload`: `reloaded: nothing changed`, or the keys applied and
/// those that wait for a restart.
pub fn reload(r: &ReloadResponse) -> String {
    let certificates = if r.certificates.is_empty() {
        String::new()
    } else {
        format!("\ncertificates read again: {}", r.certificates.join(", "))
    };
    if r.unchanged {
        return format!("reloaded: nothing changed{certificates}");
    }
    let list = |keys: &[String]| {
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    };
    format!(
        "reloaded: applied {}\nneeds a restart: {}{certificates}",
        list(&r.applied),
        list(&r.needs_restart)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvrocks::admin_api::LeaseMode;

    fn view(valid: bool, remaining_ms: Option<u64>) -> LeaseView {
        LeaseView {
            mode: LeaseMode::BlockWrite,
            valid,
            owner: Some("a".repeat(40)),
            node_id: Some("a".repeat(40)),
            epoch: 3,
            remaining_ms,
            revoked_reason: None,
        }
    }

    #[test]
    fn the_lease_line_says_what_an_operator_looks_for() {
        let line = lease(&view(true, Some(4200)));
        assert!(
            line.starts_with("lease: valid, 4.2 s left, epoch 3"),
            "{line}"
        );
        assert!(line.ends_with("(block-write)"), "{line}");
        let line = lease(&view(false, Some(0)));
        assert!(line.starts_with("lease: NOT valid (expired)"), "{line}");
    }

    #[test]
    fn a_pause_line() {
        let p = PauseView {
            paused: true,
            mode: Some(PauseMode::Write),
            held_requests: 3,
            held_bytes: 120,
        };
        assert_eq!(pause(&p), "pause: writes held, 3 requests (120 bytes)");
    }
}
