//! A TLS 1.3 connection's traffic keys as they leave this process at an
//! upgrade ([`MovedTls`]), and the record protection the successor goes on
//! with ([`Protection`]: RFC 8446 §5.2–5.3).
//!
//! Why written here: rustls gives a connection's keys and sequence numbers
//! out (`dangerous_extract_secrets`, meant for kernel TLS) but cannot take
//! them back in, and the kernel's TLS is not on every host (nor on the
//! ones this was built on). Only the record layer is here, and it is small:
//! a nonce from the IV and the sequence number, the record header as the
//! associated data, the inner content type. The AEAD itself is aws-lc-rs,
//! the one rustls uses. What it does not do it refuses, and the session is
//! then closed between two requests as before: TLS 1.2, key updates
//! (rustls does not hand the traffic secret out, only the key it derived).

use std::fmt;
use std::io;

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use bytes::BytesMut;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// TLS 1.3's record content types (RFC 8446 §5.1).
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// A record header's length: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// The most plaintext one record carries (2^14).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The largest protected record body a peer may send (2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Every suite here has a 16-byte tag.
const TAG_LEN: usize = 16;

/// The AEAD a connection negotiated (its TLS 1.3 suite's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// One direction's key, IV and next sequence number.
#[derive(Clone, Serialize, Deserialize)]
pub struct DirectionKeys {
    #[serde(with = "crate::proxy::hex")]
    key: Vec<u8>,
    #[serde(with = "crate::proxy::hex")]
    iv: Vec<u8>,
    seq: u64,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// A TLS 1.3 connection's state once its handshake is over: what the
/// successor needs to go on with it. Sent over the upgrade's Unix socket,
/// which only this user's processes may use.
#[derive(Clone, Serialize, Deserialize)]
pub struct MovedTls {
    aead: Aead,
    /// What this side sends.
    tx: DirectionKeys,
    /// What this side receives.
    rx: DirectionKeys,
}

impl fmt::Debug for MovedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MovedTls")
            .field("aead", &self.aead)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish_non_exhaustive()
    }
}

impl MovedTls {
    /// The keys rustls gave out (the caller checked the connection is TLS
    /// 1.3: a TLS 1.2 suite's IV means something else).
    pub fn from_rustls(secrets: ExtractedSecrets) -> Option<MovedTls> {
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let (aead, tx_key, tx_iv) = split(tx)?;
        let (rx_aead, rx_key, rx_iv) = split(rx)?;
        (aead == rx_aead).then(|| MovedTls {
            aead,
            tx: DirectionKeys {
                key: tx_key,
                iv: tx_iv,
                seq: tx_seq,
            },
            rx: DirectionKeys {
                key: rx_key,
                iv: rx_iv,
                seq: rx_seq,
            },
        })
    }

    /// The keys of a connection that moved here before.
    pub(super) fn from_parts(aead: Aead, tx: DirectionKeys, rx: DirectionKeys) -> MovedTls {
        MovedTls { aead, tx, rx }
    }

    /// Made-up keys, and the same seen from the other end (tests).
    #[cfg(test)]
    pub(crate) fn pair_for_test(aead: Aead, key_len: usize) -> (MovedTls, MovedTls) {
        let side = |k: u8, seq| DirectionKeys {
            key: vec![k; key_len],
            iv: (0..12).collect(),
            seq,
        };
        let mine = MovedTls {
            aead,
            tx: side(1, 7),
            rx: side(2, 3),
        };
        let theirs = MovedTls {
            aead,
            tx: side(2, 3),
            rx: side(1, 7),
        };
        (mine, theirs)
    }

    /// The two directions' protection: what this side sends, what it
    /// receives.
    pub fn protections(&self) -> io::Result<(Protection, Protection)> {
        Ok((
            Protection::new(self.aead, &self.tx)?,
            Protection::new(self.aead, &self.rx)?,
        ))
    }
}

/// One direction's AEAD, key and IV (`None`: an AEAD not known here).
fn split(secrets: ConnectionTrafficSecrets) -> Option<(Aead, Vec<u8>, Vec<u8>)> {
    let (aead, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Aead::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Aead::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Aead::Chacha20Poly1305, key, iv),
        _ => return None,
    };
    Some((aead, key.as_ref().to_vec(), iv.as_ref().to_vec()))
}

/// One direction's record protection: seals what this side sends, or
/// opens what it receives, counting records.
pub struct Protection {
    aead: Aead,
    key: LessSafeKey,
    /// Kept to be handed on again (a second upgrade).
    raw_key: Vec<u8>,
    iv: [u8; 12],
    seq: u64,
}

impl Drop for Protection {
    fn drop(&mut self) {
        self.raw_key.zeroize();
        self.iv.zeroize();
    }
}

impl Protection {
    fn new(aead: Aead, keys: &DirectionKeys) -> io::Result<Protection> {
        let algorithm = match aead {
            Aead::Aes128Gcm => &AES_128_GCM,
            Aead::Aes256Gcm => &AES_256_GCM,
            Aead::Chacha20Poly1305 => &CHACHA20_POLY1305,
        };
        let key = UnboundKey::new(algorithm, &keys.key)
            .map_err(|_| invalid("a moved TLS key has the wrong length for its AEAD"))?;
        let iv: [u8; 12] = keys
            .iv
            .as_slice()
            .try_into()
            .map_err(|_| invalid("a moved TLS IV is not 12 bytes"))?;
        Ok(Protection {
            aead,
            key: LessSafeKey::new(key),
            raw_key: keys.key.clone(),
            iv,
            seq: keys.seq,
        })
    }

    /// This direction's keys as they stand, to move again.
    pub fn keys(&self) -> (Aead, DirectionKeys) {
        (
            self.aead,
            DirectionKeys {
                key: self.raw_key.clone(),
                iv: self.iv.to_vec(),
                seq: self.seq,
            },
        )
    }

    /// The per-record nonce: the IV xor the sequence number (§5.3); the
    /// sequence number is then spent.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        if self.seq == u64::MAX {
            // §5.5: the sequence number must not wrap; rustls would update
            // the keys long before, which a moved connection cannot.
            return Err(invalid("the TLS sequence number is spent"));
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Appends one record carrying `plaintext` (at most
    /// [`MAX_PLAINTEXT`]) of content type `typ` to `out`.
    pub fn seal(&mut self, typ: u8, plaintext: &[u8], out: &mut BytesMut) -> io::Result<()> {
        debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
        let body_len = plaintext.len() + 1 + TAG_LEN;
        let header = record_header(APPLICATION_DATA, body_len);
        let nonce = self.next_nonce()?;
        out.reserve(HEADER_LEN + body_len);
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(plaintext);
        out.extend_from_slice(&[typ]);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start..])
            .map_err(|_| invalid("a TLS record could not be sealed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens one record (`record`: its header and body), in place; its
    /// content type and plaintext.
    pub fn open<'a>(&mut self, record: &'a mut [u8]) -> io::Result<(u8, &'a [u8])> {
        let (header, body) = record.split_at_mut(HEADER_LEN);
        if header[0] != APPLICATION_DATA {
            return Err(invalid(&format!(
                "an unprotected TLS record (type {}) after the handshake",
                header[0]
            )));
        }
        let nonce = self.next_nonce()?;
        let aad = Aad::from(<[u8; HEADER_LEN]>::try_from(&*header).unwrap_or_default());
        let inner = self
            .key
            .open_in_place(nonce, aad, body)
            .map_err(|_| invalid("a TLS record failed its integrity check"))?;
        // The inner plaintext: content, the type, then zero padding (§5.4).
        let Some(end) = inner.iter().rposition(|&b| b != 0) else {
            return Err(invalid("a TLS record without a content type"));
        };
        let typ = inner[end];
        Ok((typ, &inner[..end]))
    }
}

/// A protected record's header: TLS 1.3 says application data, TLS 1.2 on
/// the wire.
fn record_header(typ: u8, body_len: usize) -> [u8; HEADER_LEN] {
    let len = u16::try_from(body_len).unwrap_or(u16::MAX).to_be_bytes();
    [typ, 3, 3, len[0], len[1]]
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(aead: Aead, key_len: usize) -> MovedTls {
        MovedTls::pair_for_test(aead, key_len).0
    }

    #[test]
    fn a_sealed_record_opens_on_the_other_side_in_every_aead() {
        for (aead, len) in [
            (Aead::Aes128Gcm, 16),
            (Aead::Aes256Gcm, 32),
            (Aead::Chacha20Poly1305, 32),
        ] {
            let (mine, theirs) = MovedTls::pair_for_test(aead, len);
            let (mut seal, _) = mine.protections().expect("keys");
            let (_, mut open) = theirs.protections().expect("keys");
            let mut wire = BytesMut::new();
            seal.seal(APPLICATION_DATA, b"+OK\r\n", &mut wire)
                .expect("seal");
            seal.seal(ALERT, &[1, 0], &mut wire).expect("seal");
            assert_eq!(&wire[..3], &[23, 3, 3]);
            let first = HEADER_LEN + 5 + 1 + TAG_LEN;
            assert_eq!(wire.len(), first + HEADER_LEN + 2 + 1 + TAG_LEN);
            let (a, b) = wire.split_at_mut(first);
            assert_eq!(
                open.open(a).expect("opens"),
                (APPLICATION_DATA, &b"+OK\r\n"[..])
            );
            assert_eq!(open.open(b).expect("opens"), (ALERT, &[1u8, 0][..]));
            assert_eq!(seal.keys().1.seq, 9, "two records sealed from 7");
        }
    }

    #[test]
    fn a_record_altered_or_out_of_order_is_refused() {
        let (mine, theirs) = MovedTls::pair_for_test(Aead::Aes128Gcm, 16);
        let (mut seal, _) = mine.protections().expect("keys");
        let mut wire = BytesMut::new();
        seal.seal(APPLICATION_DATA, b"abc", &mut wire)
            .expect("seal");
        let mut flipped = wire.clone();
        flipped[HEADER_LEN] ^= 1;
        let (_, mut open) = theirs.protections().expect("keys");
        assert!(open.open(&mut flipped).is_err(), "altered");
        // The sequence number moved on: the genuine record no longer opens.
        assert!(open.open(&mut wire).is_err(), "out of order");
    }

    #[test]
    fn padding_is_stripped_and_a_record_of_zeros_refused() {
        let (mine, theirs) = MovedTls::pair_for_test(Aead::Chacha20Poly1305, 32);
        let (mut seal, _) = mine.protections().expect("keys");
        let (_, mut open) = theirs.protections().expect("keys");
        let mut wire = BytesMut::new();
        // A padded record as a peer may send it: "hi", the type, 3 zeros.
        seal.seal(0, b"hi\x17\0\0", &mut wire).expect("seal");
        assert_eq!(
            open.open(&mut wire).expect("opens"),
            (APPLICATION_DATA, &b"hi"[..])
        );
        let mut zeros = BytesMut::new();
        seal.seal(0, &[0, 0], &mut zeros).expect("seal");
        assert!(open.open(&mut zeros).is_err());
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        assert!(keys(Aead::Aes256Gcm, 16).protections().is_err());
    }

    #[test]
    fn moved_keys_are_not_printed() {
        let text = format!("{:?}", keys(Aead::Aes128Gcm, 16));
        assert!(!text.contains("key:"), "{text}");
        assert!(text.contains("tx_seq: 7"), "{text}");
    }
}
