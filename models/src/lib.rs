//! Model packages of a Grassroots network.
//!
//! Every model an edge runs is signed by the hub with the network's model-signing key (Ed25519,
//! created by `grassroots provision init`; its public half is in every startup kit). This crate
//! holds that signature scheme now, so that the hub's tooling and the edges agree on it from the
//! start: the signature covers the BLAKE3 digest of the package bytes under a domain-separation
//! prefix, so a signature for one purpose can never be replayed as another. The first models it
//! runs are the label readers ([`ocr`]); screening models and burn training join it later.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Domain separation for package signatures.
const SIGNING_CONTEXT: &[u8] = b"grassroots-model-package/1";

pub mod artefacts;
mod cell_patches;
pub mod classifier;
pub mod exposure;
pub mod federated;
pub mod folds;
pub mod ocr;
pub mod onnx_graph;
pub mod package;
pub mod screening;
pub mod timing;
pub mod training;
pub mod triage;

pub use classifier::TileClassifier;
pub use ocr::{find_pathology_number, LabelReader, TextLine};
pub use package::{InputSpec, Manifest, ModelPackage, ModelTask, Normalisation};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("cannot load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("model-signing key is not valid: {0}")]
    BadKey(String),
    #[error("package signature is not 64 bytes of hex: {0}")]
    BadSignatureEncoding(String),
    #[error("package signature does not verify against this network's model-signing key: the package was altered or signed by someone else")]
    SignatureMismatch,
    #[error("not a valid model package: {0}")]
    BadPackage(String),
    #[error("the package's manifest is not usable: {0}")]
    BadManifest(String),
    #[error("the package's ONNX graph cannot be loaded: {0}")]
    BadGraph(String),
    #[error("the graph does not match the manifest: {0}")]
    ShapeMismatch(String),
    #[error("model parameters are not usable: {0}")]
    BadParameters(String),
    #[error("no update of the round could be used: {0}")]
    NoUsableUpdates(String),
    #[error("training was stopped")]
    Interrupted,
}

fn message(package: &[u8]) -> Vec<u8> {
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(blake3::hash(package).as_bytes());
    message
}

/// Signs packages (hub side; holds the private key).
pub struct PackageSigner {
    key: SigningKey,
}

impl PackageSigner {
    /// From the 32-byte seed in hex, as stored in `model-signing.key`.
    pub fn from_seed_hex(seed_hex: &str) -> Result<Self, ModelError> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(seed_hex.trim(), &mut seed)
            .map_err(|e| ModelError::BadKey(e.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The signature of a package, hex-encoded.
    pub fn sign(&self, package: &[u8]) -> String {
        hex::encode(self.key.sign(&message(package)).to_bytes())
    }

    /// The public key, hex-encoded, as written into startup kits.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }
}

/// Verifies packages (edge side; from the kit's public key).
pub struct PackageVerifier {
    key: VerifyingKey,
}

impl PackageVerifier {
    pub fn from_public_hex(public_hex: &str) -> Result<Self, ModelError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(public_hex.trim(), &mut bytes)
            .map_err(|e| ModelError::BadKey(e.to_string()))?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|e| ModelError::BadKey(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn verify(&self, package: &[u8], signature_hex: &str) -> Result<(), ModelError> {
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(signature_hex.trim(), &mut bytes)
            .map_err(|e| ModelError::BadSignatureEncoding(e.to_string()))?;
        self.key
            .verify(&message(package), &Signature::from_bytes(&bytes))
            .map_err(|_| ModelError::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn seed_hex() -> String {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        hex::encode(seed)
    }

    #[test]
    fn a_signed_package_verifies_and_any_change_is_refused() {
        let signer = PackageSigner::from_seed_hex(&seed_hex()).unwrap();
        let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
        let package = b"manifest + onnx graph bytes".to_vec();
        let signature = signer.sign(&package);
        verifier.verify(&package, &signature).unwrap();

        let mut altered = package.clone();
        altered[0] ^= 1;
        assert_eq!(
            verifier.verify(&altered, &signature),
            Err(ModelError::SignatureMismatch)
        );

        let stranger = PackageSigner::from_seed_hex(&seed_hex()).unwrap();
        assert_eq!(
            verifier.verify(&package, &stranger.sign(&package)),
            Err(ModelError::SignatureMismatch)
        );
        assert!(matches!(
            verifier.verify(&package, "zz"),
            Err(ModelError::BadSignatureEncoding(_))
        ));
        assert!(matches!(
            PackageVerifier::from_public_hex("00"),
            Err(ModelError::BadKey(_))
        ));
    }
}
