//! Shamir shares of a 32-byte secret (GF(256), the `blahaj` crate: `sharks` with
//! RUSTSEC-2024-0398 fixed) and their encryption from one participant to another
//! (ChaCha20-Poly1305 under a key agreed with X25519).
//!
//! Each (round, sender, recipient) gets its own key, derived from the agreed secret and all
//! three, and that key encrypts exactly one message: a fixed nonce is then safe. The associated
//! data binds the sender's view of the round (roster and threshold): a recipient shown another
//! roster by the hub cannot open the share, so it reveals nothing for it.

use blahaj::{Share, Sharks};
use rand::{CryptoRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

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

/// Most subsets tried when a recovered secret fails its check (a revealer lied).
const MAX_SUBSETS: usize = 2_000;

/// The secret from `shares` (each with the x coordinate its revealer was dealt), any
/// `threshold` of which recover it, such that `valid` holds. When all of them together give a
/// secret that fails `valid` — a revealer sent a wrong share — subsets of `threshold` are tried
/// (a bounded number), so one liar cannot sink the round while enough honest shares remain.
pub(crate) fn recover(
    shares: &[(u8, Vec<u8>)],
    threshold: usize,
    valid: impl Fn(&[u8; 32]) -> bool,
) -> Result<[u8; 32]> {
    let parsed: Vec<Share> = shares
        .iter()
        .filter(|(x, s)| s.len() == SHARE_BYTES && s[0] == *x && *x != 0)
        .filter_map(|(_, s)| Share::try_from(s.as_slice()).ok())
        .collect();
    if parsed.len() < threshold {
        return Err(refused(format!(
            "{} valid shares, {threshold} needed",
            parsed.len()
        )));
    }
    let t = u8::try_from(threshold).map_err(|_| refused("threshold above 255"))?;
    let attempt = |subset: &[&Share]| -> Option<[u8; 32]> {
        let owned: Vec<Share> = subset
            .iter()
            .filter_map(|s| Share::try_from(Vec::from(*s).as_slice()).ok())
            .collect();
        let secret: [u8; 32] = Sharks(t).recover(owned.as_slice()).ok()?.try_into().ok()?;
        valid(&secret).then_some(secret)
    };
    let all: Vec<&Share> = parsed.iter().collect();
    if let Some(secret) = attempt(&all) {
        return Ok(secret);
    }
    let mut tried = 0;
    let mut chosen: Vec<usize> = (0..threshold).collect();
    loop {
        let subset: Vec<&Share> = chosen.iter().map(|i| &parsed[*i]).collect();
        if let Some(secret) = attempt(&subset) {
            return Ok(secret);
        }
        tried += 1;
        // The next combination of `threshold` indices, in lexicographic order.
        let n = parsed.len();
        let Some(i) = (0..threshold)
            .rev()
            .find(|&i| chosen[i] != i + n - threshold)
        else {
            break;
        };
        if tried >= MAX_SUBSETS {
            break;
        }
        chosen[i] += 1;
        for j in i + 1..threshold {
            chosen[j] = chosen[j - 1] + 1;
        }
    }
    Err(refused(
        "no set of the revealed shares gives a secret that matches its advert",
    ))
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

fn aad(round: u64, from: &str, to: &str, view: &str) -> Vec<u8> {
    format!("{round}\0{from}\0{to}\0{view}").into_bytes()
}

pub(crate) fn seal(
    round: u64,
    (from, to, view): (&str, &str, &str),
    agreed: &[u8; 32],
    bundle: &ShareBundle,
) -> Result<Vec<u8>> {
    let mut data = bundle.mask_key.clone();
    data.extend_from_slice(&bundle.self_mask_seed);
    key(round, from, to, agreed)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad(round, from, to, view)),
            &mut data,
        )
        .map_err(|_| refused("cannot encrypt a share"))?;
    Ok(data)
}

pub(crate) fn open(
    round: u64,
    (from, to, view): (&str, &str, &str),
    agreed: &[u8; 32],
    ciphertext: &[u8],
) -> Result<ShareBundle> {
    let mut data = ciphertext.to_vec();
    let plain = key(round, from, to, agreed)?
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad(round, from, to, view)),
            &mut data,
        )
        .map_err(|_| {
            SecAggError::Refused(format!(
                "the share from {from} does not decrypt (altered, for another round, or sealed for another roster)"
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
