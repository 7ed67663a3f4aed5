//! The number in a RESP header (`*<n>\r\n`, `$<n>\r\n`): read in one
//! pass for the common case (the measured hot path), strictly (as Redis's
//! `string2ll`) for the rest, with the header's length bounded.

use super::{ProtocolError, MAX_HEADER};

/// Parses a `*<n>\r\n` / `$<n>\r\n` header starting at `at`; returns the
/// number and the offset just after the line, or `None` if incomplete.
#[inline]
pub(super) fn header(
    buf: &[u8],
    at: usize,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    // The common case in one pass: 1 to 18 digits, then CR and one more
    // byte. Anything else (a sign, a bad byte, a header cut short) takes
    // the careful path below, which gives the same answer for these.
    if let Some((n, cr)) = crate::resp::plain_length(buf, at + 1) {
        if cr + 1 < buf.len() {
            return Ok(Some((n as i64, cr + 2)));
        }
    }
    header_in_full(buf, at, invalid)
}

/// [`header`] for whatever its single pass does not take.
#[cold]
fn header_in_full(
    buf: &[u8],
    at: usize,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[at + 1..];
    let window = &rest[..rest.len().min(MAX_HEADER + 2)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if rest.len() > MAX_HEADER {
            return Err(match invalid {
                ProtocolError::BulkLength => ProtocolError::BulkHeaderTooLong,
                _ => ProtocolError::HeaderTooLong,
            });
        }
        return Ok(None);
    };
    // The '\n' must be there too before the header counts as complete.
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    let n = parse_int(&rest[..cr]).ok_or(invalid)?;
    Ok(Some((n, at + 1 + cr + 2)))
}

/// Strict decimal parse (optional '-', digits only, fits i64), like Redis's string2ll.
#[inline]
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}
