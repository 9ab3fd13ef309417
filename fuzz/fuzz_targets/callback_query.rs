//! The connect callback's query parser: never panics; an approved callback always has a state and
//! both tokens.
#![no_main]

use connect_hub::snapinspect::connect::{parse_callback, Callback};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    if let Ok(Callback::Approved { state, access_token, refresh_token }) = parse_callback(query) {
        assert!(!state.is_empty());
        assert!(!access_token.expose_secret().is_empty());
        assert!(!refresh_token.expose_secret().is_empty());
    }
});
