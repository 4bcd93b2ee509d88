//! Signatures a site makes with the private key of its certificate, verifiable by any site of
//! the network with only the network's CA certificate: the signer's certificate travels with the
//! signature, and the verifier checks that the CA issued it, for the role it expects, then checks
//! the signature with its public key (ECDSA P-256, SHA-256, as every Grassroots key is).
//!
//! The hub signs each consult answer this way, so the referring edge can tell that the network's
//! hub issued the answer, under the expert's account named in it, and nothing changed since.

use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Kit, PeerIdentity, ProvisioningError, Result, Role};

fn refused(reason: impl Into<String>) -> ProvisioningError {
    ProvisioningError::Certificate(format!("signature refused: {}", reason.into()))
}

/// Signs `context` (what is being signed, so a signature of one kind cannot pass for another)
/// and `message` with the kit's private key. Returns the DER signature.
pub fn sign(kit: &Kit, context: &str, message: &[u8]) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &kit.private_key_der()?,
        &rng,
    )
    .map_err(|e| ProvisioningError::Certificate(format!("the kit's key cannot sign: {e}")))?;
    let signature = key
        .sign(&rng, &signed_bytes(context, message))
        .map_err(|e| ProvisioningError::Certificate(format!("signing failed: {e}")))?;
    Ok(signature.as_ref().to_vec())
}

fn signed_bytes(context: &str, message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(context.len() + 1 + message.len());
    bytes.extend_from_slice(context.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(message);
    bytes
}

/// Checks that `certificate_pem` was issued by the network CA of `kit` to a site of role
/// `role`, and that `signature` is its key's over `context` and `message`. Returns the signer.
pub fn verify(
    kit: &Kit,
    role: Role,
    certificate_pem: &str,
    context: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<PeerIdentity> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|e| refused(format!("the signer's certificate is not PEM ({e})")))?;
    let (_, cert) = X509Certificate::from_der(&pem.contents)
        .map_err(|e| refused(format!("the signer's certificate does not parse ({e})")))?;
    let ca_der = kit.ca_certificate_der()?;
    let (_, ca) = X509Certificate::from_der(&ca_der)
        .map_err(|e| refused(format!("the network's CA certificate does not parse ({e})")))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| refused("the signer's certificate was not issued by this network's CA"))?;
    let signer = PeerIdentity::from_certificate(&cert)?;
    if signer.role != role {
        return Err(refused(format!(
            "the signer is a {}, not a {}",
            signer.role.as_str(),
            role.as_str()
        )));
    }
    UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        &cert.public_key().subject_public_key.data,
    )
    .verify(&signed_bytes(context, message), signature)
    .map_err(|_| refused("it does not match the signed content"))?;
    Ok(signer)
}

/// As [`verify`], for a signature in hex that must be the edge `site`'s own: how the sites of a
/// secure round check each other's adverts and consents.
pub fn verify_edge(
    kit: &Kit,
    site: &str,
    certificate_pem: &str,
    context: &str,
    message: &[u8],
    signature_hex: &str,
) -> Result<()> {
    let signature = hex::decode(signature_hex).map_err(|_| refused("it is not hex"))?;
    let signer = verify(
        kit,
        Role::Edge,
        certificate_pem,
        context,
        message,
        &signature,
    )?;
    if signer.site_id.as_str() != site {
        return Err(refused(format!("signed by {}, not {site}", signer.site_id)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_signature_verifies_only_as_that_site_and_only_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let (mut authority, hub) =
            crate::NetworkAuthority::init(dir.path(), "net", "127.0.0.1:1", 30, now).unwrap();
        let site = authority
            .add_site(&"county-a".parse().unwrap(), "County A", 30, now)
            .unwrap();
        let signature = hex::encode(sign(&site, "ctx", b"message").unwrap());
        let check = |name: &str, signature: &str, message: &[u8]| {
            verify_edge(&hub, name, &site.certificate_pem, "ctx", message, signature)
        };
        check("county-a", &signature, b"message").unwrap();
        let other = check("county-b", &signature, b"message").unwrap_err();
        assert!(other.to_string().contains("not county-b"), "{other}");
        let garbled = check("county-a", "zz", b"message").unwrap_err();
        assert!(garbled.to_string().contains("not hex"), "{garbled}");
        assert!(check("county-a", &signature, b"altered").is_err());
    }
}
