//! A client that stops reading while a write of its is in flight, its
//! reply behind more unread replies than the proxy's bound and the
//! kernel's buffers hold (`GET big`, a value of a MiB, many times).

/// Sends `GET big` `gets` times and a write, and reads nothing: the
/// write's reply waits behind more unread replies than the proxy's bound
/// and the kernel's buffers hold.
pub fn stop_reading_behind_a_write(port: u16, gets: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut pipeline = Vec::new();
    for _ in 0..gets {
        pipeline.extend(super::encode(&[b"GET", b"big"]));
    }
    pipeline.extend(super::encode(&[b"SET", b"behind", b"1"]));
    let mut hostile = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    hostile.write_all(&pipeline).expect("send");
    hostile
}

/// Reads what `hostile` is sent until its connection ends; the bytes read
/// (panics if it does not end within [`super::PATIENCE`]).
pub fn read_to_the_end(hostile: &mut std::net::TcpStream) -> usize {
    use std::io::Read;
    hostile
        .set_read_timeout(Some(super::PATIENCE))
        .expect("timeout");
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match hostile.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the connection did not end: {e} after {got} bytes"),
        }
    }
}
