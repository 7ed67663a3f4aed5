//! RESP: where requests and replies begin and end ([`request`], [`reply`]),
//! command names ([`name`]), and the one encoder for what leasegate says
//! itself ([`encode`]).
//!
//! Only boundaries and the few fields the proxy acts on are read; payloads
//! are forwarded as the peer sent them.

pub mod encode;
pub mod name;
pub mod reply;
pub mod request;

/// The hot-path parse of a RESP length: 1 to 18 ASCII digits from `at`,
/// then `\r`. Returns the value and the offset of the `\r`; anything else
/// (a sign, another byte, too many digits, the end of `buf`) is `None`,
/// and the caller takes its careful path, which accepts these the same.
/// Hand-written: it runs for every request and most replies (callgrind).
#[inline]
pub(crate) fn plain_length(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut n: usize = 0;
    let mut i = at;
    while let Some(&b) = buf.get(i) {
        if b.is_ascii_digit() && i - at < 18 {
            n = n * 10 + usize::from(b - b'0');
            i += 1;
            continue;
        }
        return (b == b'\r' && i > at).then_some((n, i));
    }
    None
}
