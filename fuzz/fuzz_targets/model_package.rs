//! Model packages as the hub or an edge could receive them: framing and manifest read as
//! approval reads them (before a signature exists), then the approved package opened as an edge
//! opens it, with the network's key. No panic; an approved package opens to the same manifest.
#![no_main]

use grassroots_models::{ModelPackage, PackageSigner, PackageVerifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(signer) = PackageSigner::from_seed_hex(&"17".repeat(32)) else {
        return;
    };
    let Ok(verifier) = PackageVerifier::from_public_hex(&signer.public_key_hex()) else {
        return;
    };
    let _ = ModelPackage::open(data, &verifier);
    if let Ok((manifest, approved)) = ModelPackage::approve(data, &signer) {
        let package = ModelPackage::open(&approved, &verifier).expect("an approved package opens");
        assert_eq!(package.manifest, manifest);
    }
});
