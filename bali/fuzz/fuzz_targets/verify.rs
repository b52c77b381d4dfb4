//! Fuzzes the signed-image trailer and verification path.
//!
//! Input bytes are used two ways: verified directly as a whole image (the
//! gzip layer, trailer parsing and signature check), and gzip-compressed
//! with the canonical header so the fuzzer reaches the trailer logic
//! without having to find valid deflate streams. Neither may panic, and
//! neither may verify, since the fuzzer does not hold the key.
#![no_main]

use std::io::Write;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[42; 32]).verifying_key();
    let _ = bali::sign::verify_bytes(data, &key);

    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::fast());
    if gz.write_all(data).is_err() {
        return;
    }
    let Ok(wrapped) = gz.finish() else { return };
    assert!(bali::sign::verify_bytes(&wrapped, &key).is_err());
});
