//! The encrypted-value decoder: arbitrary stored bytes never panic and never open; a value sealed
//! from the input opens back to it, and with any one byte changed does not open.
#![no_main]

use std::sync::OnceLock;

use connect_hub::crypto::{parse_envelope, Aad, KeyRing};
use libfuzzer_sys::fuzz_target;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::new(&[7u8; 32], &[vec![9u8; 32]]))
}

fuzz_target!(|data: &[u8]| {
    let aad = Aad { table: "connections", column: "access_token", row: "con_fuzz" };
    if let Ok(env) = parse_envelope(data) {
        assert_eq!(env.key_id.len(), 4);
        assert_eq!(env.nonce.len(), 24);
        assert!(env.ciphertext.len() >= 16);
    }
    assert!(ring().open(data, aad).is_err(), "arbitrary bytes do not open");

    let sealed = ring().seal(data, aad);
    assert_eq!(ring().open(&sealed, aad).unwrap(), data);
    let mut tampered = sealed.clone();
    let i = data.first().map_or(0, |b| *b as usize) % tampered.len();
    tampered[i] ^= 0x01;
    assert!(ring().open(&tampered, aad).is_err(), "a changed byte does not open");
});
