//! The webhook body parser: never panics; what it accepts is kept byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(p) = connect_hub::snapinspect::webhook::parse_payload(body) {
        assert_eq!(p.raw.as_bytes(), body, "the raw body is stored as received");
        assert_eq!(p.dedupe_hash.len(), 32);
        if let Some(c) = p.company_id {
            assert!(c.get() > 0);
        }
    }
});
