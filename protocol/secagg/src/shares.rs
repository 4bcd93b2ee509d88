//! Shamir shares of a 32-byte secret (GF(256), the `sharks` crate) and their encryption from
//! one participant to another (ChaCha20-Poly1305 under a key agreed with X25519).
//!
//! Each (round, sender, recipient) gets its own key, derived from the agreed secret and all
//! three, and that key encrypts exactly one message: a fixed nonce is then safe.

use rand::{CryptoRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sharks::{Share, Sharks};

use crate::{refused, Result, SecAggError};

/// A Shamir share: its x coordinate and one y byte per secret byte.
const SHARE_BYTES: usize = 33;

/// What one participant sends another: its shares of the mask key and of the self-mask seed.
pub(crate) struct ShareBundle {
    pub mask_key: Vec<u8>,
    pub self_mask_seed: Vec<u8>,
}

/// `count` shares of `secret`, any `threshold` of which recover it.
pub(crate) fn split(
    secret: &[u8; 32],
    threshold: u8,
    count: usize,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<Vec<u8>> {
    Sharks(threshold)
        .dealer_rng(secret, rng)
        .take(count)
        .map(|share| Vec::from(&share))
        .collect()
}

/// The secret from at least `threshold` shares.
pub(crate) fn recover(shares: &[Vec<u8>], threshold: usize) -> Result<[u8; 32]> {
    if shares.len() < threshold {
        return Err(refused(format!(
            "{} shares, {threshold} needed",
            shares.len()
        )));
    }
    let parsed: Vec<Share> = shares
        .iter()
        .map(|s| {
            if s.len() != SHARE_BYTES {
                return Err(refused("a share of the wrong length"));
            }
            Share::try_from(s.as_slice()).map_err(|e| refused(format!("a bad share: {e}")))
        })
        .collect::<Result<_>>()?;
    let t = u8::try_from(threshold).map_err(|_| refused("threshold above 255"))?;
    let secret = Sharks(t)
        .recover(parsed.as_slice())
        .map_err(|e| refused(e.to_string()))?;
    secret
        .try_into()
        .map_err(|_| refused("a recovered secret of the wrong length"))
}

fn key(round: u64, from: &str, to: &str, agreed: &[u8; 32]) -> Result<LessSafeKey> {
    let mut material = agreed.to_vec();
    material.extend_from_slice(&round.to_le_bytes());
    for name in [from, to] {
        material.extend_from_slice(name.as_bytes());
        material.push(0);
    }
    let derived = blake3::derive_key("grassroots secagg v1 share encryption", &material);
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &derived)
        .map_err(|_| refused("cannot make a share key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn aad(round: u64, from: &str, to: &str) -> Vec<u8> {
    format!("{round}\0{from}\0{to}").into_bytes()
}

pub(crate) fn seal(
    round: u64,
    from: &str,
    to: &str,
    agreed: &[u8; 32],
    bundle: &ShareBundle,
) -> Result<Vec<u8>> {
    let mut data = bundle.mask_key.clone();
    data.extend_from_slice(&bundle.self_mask_seed);
    key(round, from, to, agreed)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad(round, from, to)),
            &mut data,
        )
        .map_err(|_| refused("cannot encrypt a share"))?;
    Ok(data)
}

pub(crate) fn open(
    round: u64,
    from: &str,
    to: &str,
    agreed: &[u8; 32],
    ciphertext: &[u8],
) -> Result<ShareBundle> {
    let mut data = ciphertext.to_vec();
    let plain = key(round, from, to, agreed)?
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad(round, from, to)),
            &mut data,
        )
        .map_err(|_| {
            SecAggError::Refused(format!(
                "the share from {from} does not decrypt (altered, or for another round)"
            ))
        })?;
    if plain.len() != 2 * SHARE_BYTES {
        return Err(refused(format!(
            "the share from {from} has the wrong length"
        )));
    }
    Ok(ShareBundle {
        mask_key: plain[..SHARE_BYTES].to_vec(),
        self_mask_seed: plain[SHARE_BYTES..].to_vec(),
    })
}
