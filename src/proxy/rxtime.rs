//! When a connection's first bytes arrived, as the kernel saw them
//! (`SO_TIMESTAMPNS`), not when a busy worker thread got round to reading
//! them.
//!
//! Why: a failover times its pause by the moment a Kvrocks replica's
//! replication connection first sent bytes ([`crate::guard::replicas`]),
//! and that time must be right within a millisecond. A session reads its
//! client's first bytes only after its node connection is open and its
//! worker thread is free: on a loaded host that is milliseconds, sometimes
//! tens, late. The kernel stamps each packet as it arrives.
//!
//! The option is set once on the listening socket (accepted sockets
//! inherit it); only a session's first read asks for the stamp
//! (`recvmsg` with a control buffer). Every later read is the plain one:
//! a stamp that nobody asks for costs a branch in the kernel.

use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

/// Asks the kernel to stamp what `listener`'s connections receive.
pub fn enable(listener: &TcpListener) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the first read got: the bytes, and when they arrived.
pub struct Stamped {
    pub read: usize,
    /// The kernel's receive time (`None` when it gave none: the option is
    /// off, or the connection closed).
    pub arrived: Option<Instant>,
}

/// Reads from `socket` into `buf` as `poll_read_buf` would, and returns the
/// kernel's receive time of the bytes read.
pub fn poll_read_stamped(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<Stamped>> {
    loop {
        match socket.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match socket.try_io(Interest::READABLE, || recv_stamped(socket.as_raw_fd(), buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}

/// One `recvmsg` into `buf`'s spare capacity, with room for the stamp.
fn recv_stamped(fd: i32, buf: &mut BytesMut) -> io::Result<Stamped> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: zeroed msghdr is a valid empty header; its fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: the iovec points into `buf`'s spare capacity, the control
    // buffer lives until the call returns.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recvmsg initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(Stamped {
        read: n,
        arrived: stamp(&msg).and_then(realtime_to_instant),
    })
}

/// The `SCM_TIMESTAMPNS` control message of `msg`, if any.
fn stamp(msg: &libc::msghdr) -> Option<libc::timespec> {
    // SAFETY: walking the control messages recvmsg filled in, with the
    // libc macros, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::timespec>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// A `CLOCK_REALTIME` moment as an [`Instant`]: as long ago as it is now.
fn realtime_to_instant(at: libc::timespec) -> Option<Instant> {
    let now = Instant::now();
    let real_now = clock(libc::CLOCK_REALTIME)?;
    let at = Duration::new(
        u64::try_from(at.tv_sec).ok()?,
        u32::try_from(at.tv_nsec).ok()?,
    );
    now.checked_sub(real_now.saturating_sub(at))
}

/// Reads clock `id` (`None` if it cannot be read).
pub fn clock(id: libc::clockid_t) -> Option<Duration> {
    // SAFETY: a valid clock id and a timespec to write to.
    timespec_of(|ts| unsafe { libc::clock_gettime(id, ts) })
}

/// The resolution of clock `id`.
pub fn resolution(id: libc::clockid_t) -> Option<Duration> {
    // SAFETY: a valid clock id and a timespec to write to.
    timespec_of(|ts| unsafe { libc::clock_getres(id, ts) })
}

/// The time a libc call (`0` on success) writes into a timespec.
fn timespec_of(call: impl FnOnce(&mut libc::timespec) -> libc::c_int) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if call(&mut ts) != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The first read through a stamping listener gets the kernel's time,
    /// which lies between the send and the read, however late the read is.
    /// (The kernel turns stamping on through deferred work: packets that
    /// arrive in the first moments after the first socket asked may carry
    /// none, so the test tries a few connections.)
    #[tokio::test]
    async fn the_first_bytes_carry_the_kernels_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        enable(&listener).expect("SO_TIMESTAMPNS");
        let addr = listener.local_addr().expect("addr");
        for attempt in 0..20 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            let before = Instant::now();
            client.write_all(b"PING\r\n").await.expect("write");
            // The server reads late: the stamp is still the arrival.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut buf = BytesMut::new();
            let got = std::future::poll_fn(|cx| poll_read_stamped(&server, cx, &mut buf))
                .await
                .expect("read");
            assert_eq!(got.read, 6);
            assert_eq!(&buf[..], b"PING\r\n");
            let Some(arrived) = got.arrived else {
                eprintln!("attempt {attempt}: no stamp yet");
                continue;
            };
            assert!(
                arrived + Duration::from_millis(2) >= before,
                "not before the send"
            );
            assert!(
                arrived < before + Duration::from_millis(25),
                "the arrival, not the late read: {:?} after the send",
                arrived - before
            );
            return;
        }
        panic!("no kernel stamp on 20 connections");
    }
}
