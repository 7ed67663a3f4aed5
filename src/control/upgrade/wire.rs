//! The upgrade channel's messages: a Unix socket between the running
//! leasegate (the predecessor) and the one taking over (the successor).
//! Each message is a 4-byte length and a JSON body, sent in one `sendmsg`
//! with the descriptors it carries (`SCM_RIGHTS`): listeners, a session's
//! two sockets. The receiver takes the descriptors with the length
//! (`recvmsg`), then reads the body.
//!
//! Hand-written over `libc` (no crate here passes descriptors on a std
//! socket): the only unsafe code is the `sendmsg`/`recvmsg` calls and the
//! control-message walk, each with its invariant stated.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::command::LearnedCommand;
use crate::guard::succession::Succession;
use crate::proxy::session::MovedState;

/// The most descriptors one message carries (the kernel takes at most 253).
pub const MAX_FDS: usize = 200;
/// The control buffer, in u64s (aligned for cmsghdr): one header and
/// `MAX_FDS` descriptors.
const CONTROL_WORDS: usize = (MAX_FDS * 4 + 64) / 8;
/// The largest message body accepted: one session with a request of
/// `limits.max_request_bytes` (1 GiB by default) buffered, as hex, and
/// its replies. (At 256 MiB a session 140 MiB into a `SET` could not move,
/// and the channel broke for every session behind it: an attack pass.)
/// Messages of several sessions are kept far smaller
/// ([`SESSIONS_BUDGET`]).
const MAX_BODY: usize = 3 << 30;

/// Whether one message carries a session of `encoded` bytes
/// ([`MovedState::encoded_len`]).
pub fn carries(encoded: usize) -> bool {
    encoded <= MAX_BODY
}

/// The encoded bytes of the sessions one message carries, at most (one
/// session more than this goes alone): 64 subscribers 4 MiB behind each
/// made a message of 370 MB (an attack pass).
pub const SESSIONS_BUDGET: usize = 32 << 20;

/// What the two processes say to each other, in order: `Hello`, `State`
/// (with the listeners), `Ready`, then `Session`s (each with its client and
/// node sockets) and `Done`; `Refused` ends it early.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// Successor → predecessor: take-over asked.
    Hello {
        version: String,
        pid: u32,
        /// The successor goes on with TLS sessions (their keys in
        /// [`MovedState`]); an older one does not say so, and its
        /// predecessor closes them between two requests instead.
        #[serde(default)]
        tls_sessions: bool,
        /// The successor takes up the wait of clients whose node is down
        /// (each moves without a node socket:
        /// [`crate::proxy::session::Waiting`]); an older one does not say
        /// so, and its predecessor closes them instead.
        #[serde(default)]
        waiting_sessions: bool,
    },
    /// Predecessor → successor: the Gate's state; the descriptors are the
    /// listeners named, in order.
    State {
        succession: Box<Succession>,
        listeners: Vec<String>,
        /// This host's coarse-clock lag as the predecessor measured it
        /// (ns): the successor need not spin for it again, next to the
        /// clients' traffic ([`crate::control::failover::timing`]).
        #[serde(default)]
        coarse_lag_ns: Option<u64>,
        /// The node's command flags as the predecessor learned them: the
        /// successor need not ask the node for its `COMMAND` table (a
        /// large reply the node builds while its clients wait).
        #[serde(default)]
        learned: Vec<LearnedCommand>,
    },
    /// Successor → predecessor: serving; sessions may come.
    Ready,
    /// Predecessor → successor: sessions; descriptors: each one's client
    /// and node sockets, in order (a waiting client's alone).
    Sessions(Vec<MovedState>),
    /// Predecessor → successor: every session moved or closed; it exits.
    Done { moved: u64, closed: u64 },
    /// Either side: the take-over will not happen, and why.
    Refused { reason: String },
}

/// Sends `message` with `fds`.
pub fn send(sock: &UnixStream, message: &Message, fds: &[RawFd]) -> io::Result<()> {
    let body = zeroize::Zeroizing::new(serde_json::to_vec(message).map_err(io::Error::other)?);
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    // The frame may hold TLS sessions' keys: wiped however the send ends.
    let frame = zeroize::Zeroizing::new(frame);
    let sent = sendmsg(sock.as_raw_fd(), &frame, fds)?;
    // The descriptors went with the first bytes; the rest is plain data.
    (&*sock).write_all(&frame[sent..])
}

/// Receives one message and the descriptors that came with it.
pub fn recv(sock: &UnixStream) -> io::Result<(Message, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let (got, fds) = recvmsg(sock.as_raw_fd(), &mut len)?;
    if got == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    (&*sock).read_exact(&mut len[got..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_BODY {
        return Err(io::Error::other(format!("message of {len} bytes")));
    }
    // The body may hold TLS sessions' keys: wiped once parsed.
    let mut body = zeroize::Zeroizing::new(vec![0u8; len]);
    (&*sock).read_exact(&mut body)?;
    let message = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok((message, fds))
}

/// `sendmsg` of `bytes` with `fds` as `SCM_RIGHTS`; how many bytes went.
fn sendmsg(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: a zeroed msghdr is a valid empty header; its fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let fds = &fds[..fds.len().min(MAX_FDS)];
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as _;
        // SAFETY: the control buffer (CONTROL_WORDS u64s) holds one
        // cmsghdr with up to MAX_FDS descriptors; CMSG_FIRSTHDR points into it, and the
        // descriptors are copied within CMSG_LEN(payload).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points at live buffers (bytes, control) for the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recvmsg` into `buf`, with the descriptors that came (close-on-exec).
fn recvmsg(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: as in `sendmsg`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg points at live buffers for the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in, with the
    // libc macros, within msg_controllen; each SCM_RIGHTS descriptor is
    // new to this process and owned from here on.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off"));
    }
    Ok((n, fds))
}

/// The user id of the process at the other end of `sock`.
pub fn peer_uid(sock: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_carry_their_descriptors() {
        let (a, b) = UnixStream::pair().expect("pair");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        send(
            &a,
            &Message::Refused {
                reason: "x".repeat(100_000),
            },
            &[listener.as_fd().as_raw_fd()],
        )
        .expect("send");
        send(&a, &Message::Ready, &[]).expect("send");
        let (m, fds) = recv(&b).expect("recv");
        assert!(matches!(m, Message::Refused { reason } if reason.len() == 100_000));
        assert_eq!(fds.len(), 1);
        let got = std::net::TcpListener::from(fds.into_iter().next().expect("fd"));
        assert_eq!(got.local_addr().expect("addr"), addr, "the same listener");
        let (m, fds) = recv(&b).expect("recv");
        assert!(matches!(m, Message::Ready) && fds.is_empty());
        // SAFETY-free check: the peer is this process's user.
        // SAFETY: getuid has no preconditions.
        assert_eq!(peer_uid(&a).expect("uid"), unsafe { libc::getuid() });
    }
}
