//! Model packages: what a screening model is, its ONNX graph, and the network's signature over
//! both, in one file that travels from the hub to the edges.
//!
//! Layout: `GRMODEL1`, the manifest's length (u32 LE) and the manifest (JSON), the graph's length
//! (u64 LE) and the graph (ONNX), then 128 hex digits: the Ed25519 signature (see
//! [`PackageSigner`]) over everything before them. Opening a package checks, in order, the
//! framing, the signature, the manifest, and — in [`crate::classifier`] — the graph against the
//! manifest, so that a package that is refused is refused before it can replace a working model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ModelError, PackageSigner, PackageVerifier};

const MAGIC: &[u8; 8] = b"GRMODEL1";
const SIGNATURE_HEX_LEN: usize = 128;
/// Bounds on what a package may claim, so that a hostile file cannot ask for absurd memory.
const MAX_MANIFEST_BYTES: u32 = 1 << 20;
const MAX_GRAPH_BYTES: u64 = 512 << 20;

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelTask {
    /// One class per RGB tile (tissue, lesion, quality faults...).
    TileClassification,
}

/// The input the graph takes: `channels` x `height` x `width`, batched along the first axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
}

/// Per-channel normalisation of RGB values scaled to 0..1: `(value - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// What a package says about its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub task: ModelTask,
    pub input: InputSpec,
    /// The resolution tiles are read at.
    pub microns_per_pixel: f64,
    pub normalisation: Normalisation,
    /// Output classes, in the graph's output order.
    pub classes: Vec<String>,
    /// Decision thresholds by name (e.g. the suspicious-slide score).
    pub thresholds: BTreeMap<String, f32>,
    /// Where the training data came from (and that figures are proxy-task figures, if so).
    pub training_data: String,
    /// Measured figures, by name.
    pub metrics: BTreeMap<String, f64>,
    /// The overview's detector of pen marks and coverslip edges, learnt from real examples
    /// (`crate::artefacts`), when the package carries one (added later: absent reads as none,
    /// and an edge from before the field ignores it; an edge from before patches refuses a
    /// detector that measures them, and with it the package, until it is upgraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artefacts: Option<crate::artefacts::ArtefactModel>,
}

impl Manifest {
    /// Checks what the rest of the system relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::BadManifest(reason));
        let named = |s: &str| !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control);
        if !named(&self.name) || !named(&self.version) {
            return bad("name and version must be 1 to 64 printable characters".into());
        }
        let InputSpec {
            channels,
            height,
            width,
        } = self.input;
        if channels != 3 || !(8..=1024).contains(&height) || !(8..=1024).contains(&width) {
            return bad(format!(
                "input {channels} x {height} x {width}: RGB tiles of 8 to 1024 pixels are supported"
            ));
        }
        if !(self.microns_per_pixel > 0.0 && self.microns_per_pixel < 100.0) {
            return bad(format!("microns per pixel {}", self.microns_per_pixel));
        }
        if !self
            .normalisation
            .std
            .iter()
            .all(|s| s.is_finite() && *s > 0.0)
        {
            return bad("normalisation std must be positive".into());
        }
        if self.classes.len() < 2 || self.classes.iter().any(|c| !named(c)) {
            return bad("at least two named classes are needed".into());
        }
        let mut unique = self.classes.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != self.classes.len() {
            return bad("class names repeat".into());
        }
        if let Some((name, value)) = self.thresholds.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("threshold {name} is {value}"));
        }
        if let Some(artefacts) = &self.artefacts {
            artefacts.validate()?;
        }
        Ok(())
    }

    /// The index of a class by name.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }
}

/// A package whose signature and manifest have been checked.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub manifest: Manifest,
    pub graph: Vec<u8>,
    /// BLAKE3 of the whole package file: names this exact model version.
    pub digest: String,
}

impl ModelPackage {
    /// Writes a signed package.
    pub fn seal(
        manifest: &Manifest,
        graph: &[u8],
        signer: &PackageSigner,
    ) -> Result<Vec<u8>, ModelError> {
        manifest.validate()?;
        let manifest_json =
            serde_json::to_vec(manifest).map_err(|e| ModelError::BadManifest(e.to_string()))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(manifest_json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&manifest_json);
        bytes.extend_from_slice(&(graph.len() as u64).to_le_bytes());
        bytes.extend_from_slice(graph);
        let signature = signer.sign(&bytes);
        bytes.extend_from_slice(signature.as_bytes());
        Ok(bytes)
    }

    /// Writes a package whose signature is all zeros: a candidate that no edge will install
    /// until someone holding the network's model-signing key approves it (`grassroots model
    /// sign`, [`Self::approve`]). For hubs that run without the key.
    pub fn seal_unsigned(manifest: &Manifest, graph: &[u8]) -> Result<Vec<u8>, ModelError> {
        let signed = Self::seal(
            manifest,
            graph,
            &PackageSigner::from_seed_hex(&"0".repeat(64))?,
        )?;
        let mut bytes = signed[..signed.len() - SIGNATURE_HEX_LEN].to_vec();
        bytes.extend_from_slice("0".repeat(SIGNATURE_HEX_LEN).as_bytes());
        Ok(bytes)
    }

    /// Signs a candidate (or re-signs a package) with `signer` after reading its framing and
    /// manifest — not its signature, which is what approval replaces. The caller shows the
    /// manifest to the person approving before writing the result.
    pub fn approve(
        bytes: &[u8],
        signer: &PackageSigner,
    ) -> Result<(Manifest, Vec<u8>), ModelError> {
        let (signed, _) = Self::split(bytes)?;
        let (manifest, graph) = Self::contents(signed)?;
        let approved = Self::seal(&manifest, graph, signer)?;
        Ok((manifest, approved))
    }

    /// Whether two package files hold the same manifest and graph, whatever their signatures:
    /// an approved candidate is its round's candidate, signed.
    pub fn same_contents(a: &[u8], b: &[u8]) -> bool {
        matches!((Self::split(a), Self::split(b)), (Ok((x, _)), Ok((y, _))) if x == y)
    }

    /// The signed part and the signature's text.
    fn split(bytes: &[u8]) -> Result<(&[u8], &str), ModelError> {
        let framing = |reason: &str| ModelError::BadPackage(reason.to_string());
        if bytes.len() < MAGIC.len() + 4 + 8 + SIGNATURE_HEX_LEN || &bytes[..8] != MAGIC {
            return Err(framing(
                "not a Grassroots model package (no GRMODEL1 header)",
            ));
        }
        let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_HEX_LEN);
        let signature =
            std::str::from_utf8(signature).map_err(|_| framing("the signature is not text"))?;
        Ok((signed, signature))
    }

    /// The manifest (checked) and the graph of the signed part.
    fn contents(signed: &[u8]) -> Result<(Manifest, &[u8]), ModelError> {
        let framing = |reason: &str| ModelError::BadPackage(reason.to_string());
        let mut at = MAGIC.len();
        let manifest_len = u32::from_le_bytes(read_array(signed, at)?);
        at += 4;
        if manifest_len > MAX_MANIFEST_BYTES {
            return Err(framing("the manifest is too large"));
        }
        let manifest_end = at + manifest_len as usize;
        let manifest_json = signed
            .get(at..manifest_end)
            .ok_or_else(|| framing("the manifest is cut short"))?;
        let graph_len = u64::from_le_bytes(read_array(signed, manifest_end)?);
        if graph_len > MAX_GRAPH_BYTES {
            return Err(framing("the graph is too large"));
        }
        let graph_start = manifest_end + 8;
        if signed.len() - graph_start != graph_len as usize {
            return Err(framing("the graph's length does not match the file"));
        }
        let manifest: Manifest = serde_json::from_slice(manifest_json)
            .map_err(|e| ModelError::BadManifest(e.to_string()))?;
        manifest.validate()?;
        Ok((manifest, &signed[graph_start..]))
    }

    /// Opens a package: framing, then the signature against this network's key, then the manifest.
    pub fn open(bytes: &[u8], verifier: &PackageVerifier) -> Result<Self, ModelError> {
        let (signed, signature) = Self::split(bytes)?;
        verifier.verify(signed, signature)?;
        let (manifest, graph) = Self::contents(signed)?;
        Ok(Self {
            manifest,
            graph: graph.to_vec(),
            digest: blake3::hash(bytes).to_hex().to_string(),
        })
    }
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ModelError> {
    bytes
        .get(at..at + N)
        .and_then(|slice| slice.try_into().ok())
        .ok_or_else(|| ModelError::BadPackage("the package is cut short".into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn keys() -> (PackageSigner, PackageVerifier) {
        let signer = PackageSigner::from_seed_hex(&"17".repeat(32)).unwrap();
        let verifier = PackageVerifier::from_public_hex(&signer.public_key_hex()).unwrap();
        (signer, verifier)
    }

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            name: "tiles".into(),
            version: "1.0.0".into(),
            task: ModelTask::TileClassification,
            input: InputSpec {
                channels: 3,
                height: 32,
                width: 32,
            },
            microns_per_pixel: 2.0,
            normalisation: Normalisation {
                mean: [0.5; 3],
                std: [0.25; 3],
            },
            classes: vec!["background".into(), "tissue".into(), "lesion".into()],
            thresholds: BTreeMap::from([("suspicious".to_string(), 0.5)]),
            training_data: "test".into(),
            metrics: BTreeMap::new(),
            artefacts: None,
        }
    }

    #[test]
    fn a_sealed_package_opens_and_any_change_is_refused() {
        let (signer, verifier) = keys();
        let bytes = ModelPackage::seal(&manifest(), b"graph bytes", &signer).unwrap();
        let package = ModelPackage::open(&bytes, &verifier).unwrap();
        assert_eq!(package.manifest, manifest());
        assert_eq!(package.graph, b"graph bytes");
        for index in [0, 10, bytes.len() / 2, bytes.len() - 130, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[index] ^= 0x01;
            assert!(
                ModelPackage::open(&altered, &verifier).is_err(),
                "byte {index}"
            );
        }
        assert!(ModelPackage::open(&bytes[..bytes.len() - 1], &verifier).is_err());
        assert!(ModelPackage::open(b"GRMODEL1", &verifier).is_err());
        let stranger = PackageSigner::from_seed_hex(&"42".repeat(32)).unwrap();
        let foreign = ModelPackage::seal(&manifest(), b"graph bytes", &stranger).unwrap();
        assert_eq!(
            ModelPackage::open(&foreign, &verifier).err(),
            Some(ModelError::SignatureMismatch)
        );
    }

    #[test]
    fn an_unsigned_candidate_installs_nowhere_until_approved() {
        let (signer, verifier) = keys();
        let graph = b"not really onnx".to_vec();
        let candidate = ModelPackage::seal_unsigned(&manifest(), &graph).unwrap();
        assert_eq!(
            ModelPackage::open(&candidate, &verifier).unwrap_err(),
            ModelError::SignatureMismatch
        );
        let (shown, approved) = ModelPackage::approve(&candidate, &signer).unwrap();
        assert_eq!(shown, manifest());
        let opened = ModelPackage::open(&approved, &verifier).unwrap();
        assert_eq!(opened.graph, graph);
        assert!(ModelPackage::approve(b"GRMODEL1 but nothing after", &signer).is_err());
    }

    #[test]
    fn manifests_that_the_screening_cannot_use_are_refused() {
        let (signer, _) = keys();
        let mut one_class = manifest();
        one_class.classes.truncate(1);
        let mut grey = manifest();
        grey.input.channels = 1;
        let mut no_scale = manifest();
        no_scale.microns_per_pixel = 0.0;
        let mut repeated = manifest();
        repeated.classes[1] = "background".into();
        for bad in [one_class, grey, no_scale, repeated] {
            assert!(matches!(
                ModelPackage::seal(&bad, b"g", &signer),
                Err(ModelError::BadManifest(_))
            ));
        }
    }
}
