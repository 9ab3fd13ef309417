//! Encryption at rest: every stored token and secret is sealed with XChaCha20-Poly1305 under the
//! current key, bound to its table, column and row, and readable under any configured older key.

// Envelope layout (all lengths checked before slicing): ```text version (1 byte, = 1) | key id (4
// bytes) | nonce (24 bytes) | ciphertext + tag (>= 16 bytes) ```  The key id is the first 4 bytes of
// SHA-256("connect-hub key id" || key), so a reader knows which key sealed a value without trying them
// all, and `rotate-key` knows what still needs re-sealing.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::domain::random_bytes;

pub const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Why a configured key is unusable. The message says how to make a good one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is not valid base64 (generate one with `connect-hub generate-key`)")]
    NotBase64,
    #[error("decodes to {0} bytes, but {1} random bytes are needed (generate one with `connect-hub generate-key{2}`)")]
    WrongLength(usize, usize, &'static str),
}

/// Why a stored value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("the value is too short to be an encrypted envelope")]
    TooShort,
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("no configured key has id {0}: add the key that sealed it to ENCRYPTION_KEYS_OLD")]
    UnknownKey(String),
    #[error("the value does not authenticate under its key (tampered, or moved from another row)")]
    Forged,
    #[error("the decrypted value is not UTF-8")]
    NotUtf8,
}

/// Decode a base64 key of exactly `len` bytes.
pub fn decode_key(b64: &str, len: usize) -> Result<Vec<u8>, KeyError> {
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| KeyError::NotBase64)?;
    if bytes.len() != len {
        let hint = if len == 32 { "" } else { " --bytes 64" };
        return Err(KeyError::WrongLength(bytes.len(), len, hint));
    }
    Ok(bytes)
}

/// A fresh random key of `len` bytes, base64-encoded (what `generate-key` prints).
pub fn generate_key_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    STANDARD.encode(bytes)
}

/// One data-encryption key. Its `Debug` prints the key id only.
struct Key {
    id: [u8; KEY_ID_LEN],
    aead: XChaCha20Poly1305,
}

impl Key {
    fn new(bytes: &[u8]) -> Self {
        let digest = Sha256::new().chain_update(b"connect-hub key id").chain_update(bytes).finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { id, aead: XChaCha20Poly1305::new_from_slice(bytes).expect("key length checked by decode_key") }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id={})", crate::domain::hex(&self.id))
    }
}

/// Where a sealed value lives. Sealing binds the value to it, so a ciphertext copied into another
/// row or column does not open.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row: &'a str,
}

impl Aad<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.table.len() + self.column.len() + self.row.len());
        out.extend_from_slice(b"connect-hub/v1\0");
        for part in [self.table, self.column, self.row] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// The parts of an envelope, borrowed from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub key_id: [u8; KEY_ID_LEN],
    pub nonce: &'a [u8],
    pub ciphertext: &'a [u8],
}

/// Split stored bytes into an envelope, checking every length first.
pub fn parse_envelope(blob: &[u8]) -> Result<Envelope<'_>, DecryptError> {
    if blob.is_empty() {
        return Err(DecryptError::TooShort);
    }
    if blob[0] != VERSION {
        return Err(DecryptError::UnknownVersion(blob[0]));
    }
    if blob.len() < HEADER_LEN + TAG_LEN {
        return Err(DecryptError::TooShort);
    }
    let mut key_id = [0u8; KEY_ID_LEN];
    key_id.copy_from_slice(&blob[1..1 + KEY_ID_LEN]);
    Ok(Envelope { key_id, nonce: &blob[1 + KEY_ID_LEN..HEADER_LEN], ciphertext: &blob[HEADER_LEN..] })
}

/// The current key plus the older keys still accepted for reading.
#[derive(Debug)]
pub struct KeyRing {
    current: Key,
    old: Vec<Key>,
}

impl KeyRing {
    /// Build from raw 32-byte keys (already decoded and length-checked).
    pub fn new(current: &[u8], old: &[Vec<u8>]) -> Self {
        Self { current: Key::new(current), old: old.iter().map(|k| Key::new(k)).collect() }
    }

    /// Build from the base64 configuration values.
    pub fn from_base64(current: &SecretString, old: &[SecretString]) -> Result<Self, KeyError> {
        let cur = decode_key(current.expose_secret(), 32)?;
        let old = old.iter().map(|k| decode_key(k.expose_secret(), 32)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(&cur, &old))
    }

    /// The hex id of the current key, for logs and the CLI.
    pub fn current_key_id(&self) -> String {
        crate::domain::hex(&self.current.id)
    }

    pub fn seal(&self, plaintext: &[u8], aad: Aad<'_>) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let ciphertext = self
            .current
            .aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad.bytes() })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn seal_str(&self, secret: &SecretString, aad: Aad<'_>) -> Vec<u8> {
        self.seal(secret.expose_secret().as_bytes(), aad)
    }

    pub fn open(&self, blob: &[u8], aad: Aad<'_>) -> Result<Vec<u8>, DecryptError> {
        let env = parse_envelope(blob)?;
        let aad = aad.bytes();
        let mut candidates =
            std::iter::once(&self.current).chain(self.old.iter()).filter(|k| k.id == env.key_id).peekable();
        if candidates.peek().is_none() {
            return Err(DecryptError::UnknownKey(crate::domain::hex(&env.key_id)));
        }
        candidates
            .find_map(|k| {
                k.aead.decrypt(XNonce::from_slice(env.nonce), Payload { msg: env.ciphertext, aad: &aad }).ok()
            })
            .ok_or(DecryptError::Forged)
    }

    pub fn open_str(&self, blob: &[u8], aad: Aad<'_>) -> Result<SecretString, DecryptError> {
        let bytes = self.open(blob, aad)?;
        String::from_utf8(bytes).map(SecretString::from).map_err(|_| DecryptError::NotUtf8)
    }

    /// Whether a stored value is sealed under the current key (else `rotate-key` re-seals it).
    pub fn is_current(&self, blob: &[u8]) -> bool {
        parse_envelope(blob).is_ok_and(|e| e.key_id == self.current.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(row: &str) -> Aad<'_> {
        Aad { table: "connections", column: "access_token", row }
    }

    #[test]
    fn sealed_values_open_only_with_their_row_and_key() {
        let ring = KeyRing::new(&[7u8; 32], &[]);
        let blob = ring.seal(b"token", aad("a"));
        assert_eq!(ring.open(&blob, aad("a")).unwrap(), b"token");
        assert_eq!(ring.open(&blob, aad("b")), Err(DecryptError::Forged));
        let other = KeyRing::new(&[8u8; 32], &[]);
        assert!(matches!(other.open(&blob, aad("a")), Err(DecryptError::UnknownKey(_))));
    }

    #[test]
    fn old_keys_still_open_and_are_reported_as_not_current() {
        let old = KeyRing::new(&[1u8; 32], &[]);
        let blob = old.seal(b"secret", aad("r"));
        let ring = KeyRing::new(&[2u8; 32], &[vec![1u8; 32]]);
        assert_eq!(ring.open(&blob, aad("r")).unwrap(), b"secret");
        assert!(!ring.is_current(&blob));
        assert!(ring.is_current(&ring.seal(b"x", aad("r"))));
    }

    #[test]
    fn short_or_unknown_envelopes_are_refused_without_panicking() {
        let ring = KeyRing::new(&[7u8; 32], &[]);
        assert_eq!(ring.open(&[], aad("a")), Err(DecryptError::TooShort));
        assert_eq!(ring.open(&[2, 0, 0], aad("a")), Err(DecryptError::UnknownVersion(2)));
        assert_eq!(ring.open(&[1; 20], aad("a")), Err(DecryptError::TooShort));
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused_with_a_hint() {
        let err = decode_key(&STANDARD.encode([0u8; 16]), 32).unwrap_err();
        assert!(err.to_string().contains("generate-key"));
        assert_eq!(decode_key("not base64!", 32), Err(KeyError::NotBase64));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn ring() -> KeyRing {
            KeyRing::new(&[42u8; 32], &[])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn sealing_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..2048), row in "[a-z0-9_]{1,30}") {
                let r = ring();
                let aad = Aad { table: "connections", column: "access_token", row: &row };
                prop_assert_eq!(r.open(&r.seal(&plain, aad), aad).unwrap(), plain);
            }

            #[test]
            fn any_flipped_byte_is_refused(plain in proptest::collection::vec(any::<u8>(), 0..256), at in any::<prop::sample::Index>(), bit in 0u8..8) {
                let r = ring();
                let aad = Aad { table: "connections", column: "refresh_token", row: "con_x" };
                let mut sealed = r.seal(&plain, aad);
                let i = at.index(sealed.len());
                sealed[i] ^= 1 << bit;
                prop_assert!(r.open(&sealed, aad).is_err());
            }

            #[test]
            fn another_rows_or_columns_associated_data_is_refused(plain in proptest::collection::vec(any::<u8>(), 0..256), a in "[a-z]{1,12}", b in "[a-z]{1,12}") {
                prop_assume!(a != b);
                let r = ring();
                let sealed = r.seal(&plain, Aad { table: "connections", column: "access_token", row: &a });
                let other_row = Aad { table: "connections", column: "access_token", row: &b };
                let other_column = Aad { table: "connections", column: &b, row: &a };
                let other_table = Aad { table: &b, column: "access_token", row: &a };
                for aad in [other_row, other_column, other_table] {
                    let opened = r.open(&sealed, aad);
                    prop_assert!(opened.is_err());
                }
            }

            #[test]
            fn another_key_is_refused(plain in proptest::collection::vec(any::<u8>(), 0..256), k in proptest::array::uniform32(any::<u8>())) {
                prop_assume!(k != [42u8; 32]);
                let aad = Aad { table: "t", column: "c", row: "r" };
                let sealed = ring().seal(&plain, aad);
                prop_assert!(KeyRing::new(&k, &[]).open(&sealed, aad).is_err());
                // But listed as an old key beside another current one, the sealing key still opens it.
                prop_assert_eq!(KeyRing::new(&k, &[vec![42u8; 32]]).open(&sealed, aad).unwrap(), plain);
            }

            #[test]
            fn arbitrary_bytes_never_open_and_never_panic(blob in proptest::collection::vec(any::<u8>(), 0..128)) {
                let aad = Aad { table: "t", column: "c", row: "r" };
                let opened = ring().open(&blob, aad);
                prop_assert!(opened.is_err());
            }
        }
    }
}
