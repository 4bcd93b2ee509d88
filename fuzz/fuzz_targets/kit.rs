//! Startup kits as an installer could receive them (damaged, edited, from another build): the
//! loader refuses with a reason and never panics. A kit whose checksum is made to match is
//! checked further (certificates, keys, dates), as a tampered kit with a recomputed checksum
//! would be.
#![no_main]

use grassroots_provisioning::Kit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Kit::from_bytes(data, std::path::Path::new("fuzz.kit"));
    if let Ok(kit) = serde_json::from_slice::<Kit>(data) {
        let kit = kit.seal();
        if kit.validate().is_ok() {
            let _ = kit.identity();
            let _ = kit.certificate_der();
            let _ = kit.private_key_der();
        }
    }
});
