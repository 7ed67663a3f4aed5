//! A TLS connection's traffic keys as they leave this process at an
//! upgrade ([`MovedTls`]), and the record protection the successor goes on
//! with ([`Protection`]: TLS 1.3, RFC 8446 §5.2–5.3; TLS 1.2, RFC 5246
//! §6.2.3.3 with RFC 5288 and RFC 7905).
//!
//! Why written here: rustls gives a connection's keys and sequence numbers
//! out (`dangerous_extract_secrets`, meant for kernel TLS) but cannot take
//! them back in, and the kernel's TLS is not on every host (nor on the
//! ones this was built on). Only the record layer is here, and it is small:
//! a nonce from the IV and the sequence number, the associated data (TLS
//! 1.3: the record header; TLS 1.2: the sequence number, type, version and
//! length), TLS 1.3's inner content type. The AEAD itself is aws-lc-rs, the
//! one rustls uses. A TLS 1.3 key update cannot be followed (rustls does
//! not hand the traffic secret out, only the key it derived): the
//! connection is then closed ([`super::resumed`]).

use std::fmt;
use std::io;
use std::ops::Range;

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN,
};
use bytes::BytesMut;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// The record content types (RFC 8446 §5.1).
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

/// The AEAD a connection negotiated (its suite's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// The protocol version, which says how records are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Version {
    /// RFC 5246 with RFC 5288 (AES-GCM: a salt and an explicit nonce in
    /// each record) and RFC 7905 (ChaCha20-Poly1305); the real content type
    /// on the record, the sequence number in the associated data.
    Tls12,
    #[default]
    Tls13,
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

/// A TLS connection's state once its handshake is over: what the successor
/// needs to go on with it. Sent over the upgrade's Unix socket, which only
/// this user's processes may use.
#[derive(Clone, Serialize, Deserialize)]
pub struct MovedTls {
    #[serde(default)]
    version: Version,
    aead: Aead,
    /// What this side sends.
    tx: DirectionKeys,
    /// What this side receives.
    rx: DirectionKeys,
}

impl fmt::Debug for MovedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MovedTls")
            .field("version", &self.version)
            .field("aead", &self.aead)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish_non_exhaustive()
    }
}

impl MovedTls {
    /// The keys rustls gave out for a connection of `version` (for TLS
    /// 1.2 AES-GCM, rustls' IV is the salt and then the explicit nonce's
    /// base, which it xors with the sequence number, as here).
    pub fn from_rustls(secrets: ExtractedSecrets, version: Version) -> Option<MovedTls> {
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let (aead, tx_key, tx_iv) = split(tx)?;
        let (rx_aead, rx_key, rx_iv) = split(rx)?;
        (aead == rx_aead).then(|| MovedTls {
            version,
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
    pub(super) fn from_parts(
        (version, aead): (Version, Aead),
        tx: DirectionKeys,
        rx: DirectionKeys,
    ) -> MovedTls {
        MovedTls {
            version,
            aead,
            tx,
            rx,
        }
    }

    /// Made-up keys, and the same seen from the other end (tests).
    #[cfg(test)]
    pub(crate) fn pair_for_test(
        version: Version,
        aead: Aead,
        key_len: usize,
    ) -> (MovedTls, MovedTls) {
        let side = |k: u8, seq| DirectionKeys {
            key: vec![k; key_len],
            iv: (0..12).collect(),
            seq,
        };
        let mine = MovedTls {
            version,
            aead,
            tx: side(1, 7),
            rx: side(2, 3),
        };
        let theirs = MovedTls {
            version,
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
            Protection::new(self.version, self.aead, &self.tx)?,
            Protection::new(self.version, self.aead, &self.rx)?,
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
    version: Version,
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
    fn new(version: Version, aead: Aead, keys: &DirectionKeys) -> io::Result<Protection> {
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
            version,
            aead,
            key: LessSafeKey::new(key),
            raw_key: keys.key.clone(),
            iv,
            seq: keys.seq,
        })
    }

    /// This direction's keys as they stand, to move again.
    pub fn keys(&self) -> ((Version, Aead), DirectionKeys) {
        (
            (self.version, self.aead),
            DirectionKeys {
                key: self.raw_key.clone(),
                iv: self.iv.to_vec(),
                seq: self.seq,
            },
        )
    }

    /// The IV xor the sequence number (TLS 1.3 §5.3; TLS 1.2's
    /// ChaCha20-Poly1305, and its AES-GCM explicit nonce), and the
    /// sequence number it used; the sequence number is then spent.
    fn next_nonce(&mut self) -> io::Result<([u8; NONCE_LEN], u64)> {
        if self.seq == u64::MAX {
            // The sequence number must not wrap; rustls would update the
            // keys long before (TLS 1.3), which a moved connection cannot.
            return Err(invalid("the TLS sequence number is spent"));
        }
        let seq = self.seq;
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Ok((nonce, seq))
    }

    /// TLS 1.2 AES-GCM carries 8 bytes of its nonce in each record.
    fn explicit_nonce_len(&self) -> usize {
        match (self.version, self.aead) {
            (Version::Tls12, Aead::Aes128Gcm | Aead::Aes256Gcm) => 8,
            _ => 0,
        }
    }

    /// Appends one record carrying `plaintext` (at most
    /// [`MAX_PLAINTEXT`]) of content type `typ` to `out`.
    pub fn seal(&mut self, typ: u8, plaintext: &[u8], out: &mut BytesMut) -> io::Result<()> {
        debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
        let (nonce, seq) = self.next_nonce()?;
        let explicit = self.explicit_nonce_len();
        // The associated data: TLS 1.3's record header, or TLS 1.2's
        // sequence number, type, version and length (13 bytes).
        let mut aad = [0u8; 13];
        let (header, aad, inner_type) = match self.version {
            Version::Tls13 => {
                let header = record_header(APPLICATION_DATA, plaintext.len() + 1 + TAG_LEN);
                aad[..HEADER_LEN].copy_from_slice(&header);
                (header, &aad[..HEADER_LEN], Some(typ))
            }
            Version::Tls12 => {
                let header = record_header(typ, explicit + plaintext.len() + TAG_LEN);
                aad = aad12(seq, typ, plaintext.len());
                (header, &aad[..], None)
            }
        };
        out.reserve(HEADER_LEN + explicit + plaintext.len() + 1 + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce[NONCE_LEN - explicit..]);
        let start = out.len();
        out.extend_from_slice(plaintext);
        if let Some(typ) = inner_type {
            out.extend_from_slice(&[typ]);
        }
        let sealed = self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        );
        let tag = sealed.map_err(|_| invalid("a TLS record could not be sealed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens one record (`record`: its header and body), in place; its
    /// content type, and where its plaintext is in `record`.
    pub fn open(&mut self, record: &mut [u8]) -> io::Result<(u8, Range<usize>)> {
        let said = record
            .get(3..HEADER_LEN)
            .map(|len| usize::from(u16::from_be_bytes([len[0], len[1]])));
        if said != Some(record.len().saturating_sub(HEADER_LEN)) {
            return Err(invalid("a TLS record's length is not its header's"));
        }
        match self.version {
            Version::Tls13 => self.open13(record),
            Version::Tls12 => self.open12(record),
        }
    }

    fn open13(&mut self, record: &mut [u8]) -> io::Result<(u8, Range<usize>)> {
        let (header, body) = record.split_at_mut(HEADER_LEN);
        if header[0] != APPLICATION_DATA {
            return Err(invalid(&format!(
                "an unprotected TLS record (type {}) after the handshake",
                header[0]
            )));
        }
        let (nonce, _) = self.next_nonce()?;
        let aad = Aad::from(<[u8; HEADER_LEN]>::try_from(&*header).unwrap_or_default());
        let inner = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), aad, body)
            .map_err(|_| invalid("a TLS record failed its integrity check"))?;
        // The inner plaintext: content, the type, then zero padding (§5.4).
        let Some(end) = inner.iter().rposition(|&b| b != 0) else {
            return Err(invalid("a TLS record without a content type"));
        };
        let typ = inner[end];
        Ok((typ, HEADER_LEN..HEADER_LEN + end))
    }

    fn open12(&mut self, record: &mut [u8]) -> io::Result<(u8, Range<usize>)> {
        let (header, body) = record.split_at_mut(HEADER_LEN);
        let typ = header[0];
        let explicit = self.explicit_nonce_len();
        if body.len() < explicit + TAG_LEN {
            return Err(invalid("a TLS record too short for its protection"));
        }
        let (nonce, seq) = self.next_nonce()?;
        let mut nonce = nonce;
        let (sent, ciphertext) = body.split_at_mut(explicit);
        nonce[NONCE_LEN - explicit..].copy_from_slice(sent);
        let aad = aad12(seq, typ, ciphertext.len() - TAG_LEN);
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext,
            )
            .map_err(|_| invalid("a TLS record failed its integrity check"))?;
        let start = HEADER_LEN + explicit;
        Ok((typ, start..start + plaintext.len()))
    }
}

/// TLS 1.2's associated data (RFC 5246 §6.2.3.3).
fn aad12(seq: u64, typ: u8, plaintext_len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9] = 3;
    aad[10] = 3;
    let len = u16::try_from(plaintext_len)
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    aad[11..].copy_from_slice(&len);
    aad
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

    const AEADS: [(Aead, usize); 3] = [
        (Aead::Aes128Gcm, 16),
        (Aead::Aes256Gcm, 32),
        (Aead::Chacha20Poly1305, 32),
    ];

    fn opened(open: &mut Protection, record: &mut [u8]) -> (u8, Vec<u8>) {
        let (typ, range) = open.open(record).expect("opens");
        (typ, record[range].to_vec())
    }

    fn protections(version: Version, aead: Aead, len: usize) -> (Protection, Protection) {
        let (mine, theirs) = MovedTls::pair_for_test(version, aead, len);
        let (seal, _) = mine.protections().expect("keys");
        let (_, open) = theirs.protections().expect("keys");
        (seal, open)
    }

    #[test]
    fn a_sealed_record_opens_on_the_other_side_in_every_aead_and_version() {
        for version in [Version::Tls13, Version::Tls12] {
            for (aead, len) in AEADS {
                let (mut seal, mut open) = protections(version, aead, len);
                let mut wire = BytesMut::new();
                seal.seal(APPLICATION_DATA, b"+OK\r\n", &mut wire)
                    .expect("seal");
                seal.seal(ALERT, &[1, 0], &mut wire).expect("seal");
                assert_eq!(&wire[..3], &[23, 3, 3]);
                // TLS 1.3: the inner type; TLS 1.2 AES-GCM: the explicit nonce.
                let extra = match (version, aead) {
                    (Version::Tls13, _) => 1,
                    (Version::Tls12, Aead::Chacha20Poly1305) => 0,
                    (Version::Tls12, _) => 8,
                };
                let first = HEADER_LEN + 5 + extra + TAG_LEN;
                assert_eq!(wire.len(), first + HEADER_LEN + 2 + extra + TAG_LEN);
                let second_type = if version == Version::Tls12 {
                    ALERT
                } else {
                    APPLICATION_DATA
                };
                assert_eq!(wire[first], second_type, "{version:?} {aead:?}");
                let (a, b) = wire.split_at_mut(first);
                assert_eq!(
                    opened(&mut open, a),
                    (APPLICATION_DATA, b"+OK\r\n".to_vec())
                );
                assert_eq!(opened(&mut open, b), (ALERT, vec![1u8, 0]));
                assert_eq!(seal.keys().1.seq, 9, "two records sealed from 7");
            }
        }
    }

    #[test]
    fn a_record_altered_or_out_of_order_is_refused() {
        for version in [Version::Tls13, Version::Tls12] {
            for (aead, len) in AEADS {
                let (mut seal, mut open) = protections(version, aead, len);
                let mut wire = BytesMut::new();
                seal.seal(APPLICATION_DATA, b"abc", &mut wire)
                    .expect("seal");
                for at in [0, 4, HEADER_LEN, wire.len() - 1] {
                    let mut altered = wire.clone();
                    altered[at] ^= 1;
                    let (_, mut fresh) = protections(version, aead, len);
                    assert!(
                        fresh.open(&mut altered).is_err(),
                        "{version:?} {aead:?} byte {at}"
                    );
                }
                // A record of the next sequence number does not open first.
                let mut second = BytesMut::new();
                seal.seal(APPLICATION_DATA, b"def", &mut second)
                    .expect("seal");
                assert!(
                    open.open(&mut second).is_err(),
                    "{version:?} {aead:?} out of order"
                );
            }
        }
    }

    #[test]
    fn tls13_padding_is_stripped_and_a_record_of_zeros_refused() {
        let (mut seal, mut open) = protections(Version::Tls13, Aead::Chacha20Poly1305, 32);
        let mut wire = BytesMut::new();
        // A padded record as a peer may send it: "hi", the type, 3 zeros.
        seal.seal(0, b"hi\x17\0\0", &mut wire).expect("seal");
        assert_eq!(
            opened(&mut open, &mut wire),
            (APPLICATION_DATA, b"hi".to_vec())
        );
        let mut zeros = BytesMut::new();
        seal.seal(0, &[0, 0], &mut zeros).expect("seal");
        assert!(open.open(&mut zeros).is_err());
    }

    #[test]
    fn a_tls12_record_too_short_for_its_nonce_and_tag_is_refused() {
        let (_, mut open) = protections(Version::Tls12, Aead::Aes128Gcm, 16);
        let mut short = BytesMut::from(&[23u8, 3, 3, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10][..]);
        assert!(open.open(&mut short).is_err());
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        let (mine, _) = MovedTls::pair_for_test(Version::Tls13, Aead::Aes256Gcm, 16);
        assert!(mine.protections().is_err());
    }

    #[test]
    fn moved_keys_are_not_printed() {
        let (mine, _) = MovedTls::pair_for_test(Version::Tls13, Aead::Aes128Gcm, 16);
        let text = format!("{mine:?}");
        assert!(!text.contains("key:"), "{text}");
        assert!(text.contains("tx_seq: 7"), "{text}");
    }
}
