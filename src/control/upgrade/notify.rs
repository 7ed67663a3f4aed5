//! systemd's readiness protocol (`sd_notify`), so that an upgrade works
//! under a `Type=notify` unit: leasegate says `READY=1` once it serves, and
//! a successor says `MAINPID=<its pid>` before its predecessor exits, so
//! systemd follows the new process instead of stopping the service when
//! the old one leaves (`NotifyAccess=all`). Without `NOTIFY_SOCKET` in the
//! environment (not under systemd) nothing is sent.
//!
//! A datagram to the socket named there (`@` for the abstract namespace);
//! written here rather than taken from a crate: it is one `send_to`.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`KEY=value` lines) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = match path.strip_prefix('@') {
        Some(name) => abstract_addr(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a)),
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = %path, "cannot notify systemd");
    }
}

fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

/// Serving: the first start, or a successor that took over.
pub fn ready(took_over: bool) {
    if took_over {
        notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        notify("READY=1");
    }
}
