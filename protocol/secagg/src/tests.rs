use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const ROUND: u64 = 7;

struct Site {
    name: String,
    secrets: RoundSecrets,
    delta: Vec<f32>,
    samples: u64,
}

fn sites(count: usize, values: usize, rng: &mut StdRng) -> Vec<Site> {
    (0..count)
        .map(|i| Site {
            name: format!("county-{i}"),
            secrets: RoundSecrets::generate(rng),
            delta: (0..values).map(|_| rng.gen_range(-0.5..0.5)).collect(),
            samples: rng.gen_range(10..500),
        })
        .collect()
}

/// Runs the protocol: `share_drop` never shares; `mask_drop` shares but sends no masked vector;
/// `reveal_drop` sends its masked vector but does not reveal. Returns the unmasked sum and the
/// plain weighted sum of the sites whose vectors arrived.
fn run(
    sites: &[Site],
    share_drop: &[usize],
    mask_drop: &[usize],
    reveal_drop: &[usize],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(1);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let threshold = threshold_for(roster.len());
    let mut relayed: Vec<SealedShare> = Vec::new();
    let mut sharing = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        if share_drop.contains(&i) {
            continue;
        }
        relayed.extend(seal_shares(
            ROUND,
            &site.name,
            &site.secrets,
            &roster,
            threshold,
            &mut rng,
        )?);
        sharing.push(site.name.clone());
    }
    let mut masked = BTreeMap::new();
    let mut plain = vec![0f64; sites[0].delta.len()];
    for (i, site) in sites.iter().enumerate() {
        if share_drop.contains(&i) || mask_drop.contains(&i) {
            continue;
        }
        let values = mask(
            ROUND,
            &site.name,
            &site.secrets,
            &roster,
            threshold,
            &sharing,
            &site.delta,
            site.samples,
        )?;
        masked.insert(site.name.clone(), values);
        for (p, d) in plain.iter_mut().zip(&site.delta) {
            *p += f64::from(*d) * site.samples as f64;
        }
    }
    let survivors: Vec<String> = masked.keys().cloned().collect();
    let mut reveals = BTreeMap::new();
    for (i, site) in sites.iter().enumerate() {
        if !survivors.contains(&site.name) || reveal_drop.contains(&i) {
            continue;
        }
        let inbox: Vec<SealedShare> = relayed
            .iter()
            .filter(|s| s.to == site.name)
            .cloned()
            .collect();
        reveals.insert(
            site.name.clone(),
            reveal(
                ROUND,
                &site.name,
                &site.secrets,
                &roster,
                &sharing,
                &inbox,
                &survivors,
                threshold,
            )?,
        );
    }
    let sum = unmask(ROUND, &roster, &sharing, &masked, &reveals, threshold)?;
    Ok((sum, plain))
}

fn assert_close(sum: &[f64], plain: &[f64]) {
    assert_eq!(sum.len(), plain.len());
    for (a, b) in sum.iter().zip(plain) {
        // Fixed point rounds each site's value to 2^-24 of a sample.
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn the_unmasked_sum_equals_the_plain_weighted_sum() {
    let mut rng = StdRng::seed_from_u64(3);
    for count in [2, 3, 5] {
        let sites = sites(count, 1000, &mut rng);
        let (sum, plain) = run(&sites, &[], &[], &[]).unwrap();
        assert_close(&sum, &plain);
    }
}

#[test]
fn a_site_dropping_after_sharing_is_recovered_from_its_mask_key_shares() {
    let mut rng = StdRng::seed_from_u64(4);
    let sites = sites(5, 300, &mut rng);
    let (sum, plain) = run(&sites, &[], &[2], &[]).unwrap();
    assert_close(&sum, &plain);
}

#[test]
fn a_site_dropping_after_masking_still_counts_and_the_others_reveal_for_it() {
    let mut rng = StdRng::seed_from_u64(5);
    let sites = sites(3, 300, &mut rng);
    let (sum, plain) = run(&sites, &[], &[], &[1]).unwrap();
    assert_close(&sum, &plain);
    // Two of three drop: below the threshold, nothing can be unmasked.
    let error = run(&sites, &[], &[], &[0, 1]).unwrap_err();
    assert!(error.to_string().contains("reveals"), "{error}");
}

#[test]
fn a_site_that_never_shared_is_left_out_of_every_mask() {
    let mut rng = StdRng::seed_from_u64(6);
    let sites = sites(4, 100, &mut rng);
    let (sum, plain) = run(&sites, &[3], &[], &[]).unwrap();
    assert_close(&sum, &plain);
}

#[test]
fn one_masked_vector_alone_is_noise() {
    let mut rng = StdRng::seed_from_u64(8);
    let sites = sites(3, 2000, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let sharing: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();
    let s = &sites[0];
    let masked = mask(
        ROUND, &s.name, &s.secrets, &roster, 2, &sharing, &s.delta, s.samples,
    )
    .unwrap();
    let scale = f64::from(1u32 << FIXED_POINT_BITS);
    // A real weighted value is below 500 in magnitude; a masked one is uniform over +-2^39.
    let plausible = masked
        .iter()
        .filter(|v| ((**v as i64) as f64 / scale).abs() < 1000.0)
        .count();
    assert!(plausible < 5, "{plausible} of 2000 values look unmasked");
}

#[test]
fn reveal_refuses_a_request_that_would_unmask_one_site() {
    let mut rng = StdRng::seed_from_u64(9);
    let sites = sites(3, 10, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let sharing: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();
    let me = &sites[0];
    let alone = vec![me.name.clone()];
    let error = reveal(
        ROUND,
        &me.name,
        &me.secrets,
        &roster,
        &sharing,
        &[],
        &alone,
        2,
    )
    .unwrap_err();
    assert!(error.to_string().contains("at least 2"), "{error}");
    let stranger = vec![me.name.clone(), "county-99".to_string()];
    let error = reveal(
        ROUND,
        &me.name,
        &me.secrets,
        &roster,
        &sharing,
        &[],
        &stranger,
        2,
    )
    .unwrap_err();
    assert!(error.to_string().contains("subset"), "{error}");
}

#[test]
fn an_altered_share_or_a_low_threshold_is_refused() {
    let mut rng = StdRng::seed_from_u64(10);
    let sites = sites(3, 10, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let sharing: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();
    let error = seal_shares(
        ROUND,
        &sites[0].name,
        &sites[0].secrets,
        &roster,
        1,
        &mut rng,
    )
    .unwrap_err();
    assert!(error.to_string().contains("majority"), "{error}");
    let mut shares = seal_shares(
        ROUND,
        &sites[1].name,
        &sites[1].secrets,
        &roster,
        2,
        &mut rng,
    )
    .unwrap();
    let to_first = shares.iter_mut().find(|s| s.to == sites[0].name).unwrap();
    let mut bytes = hex::decode(&to_first.ciphertext).unwrap();
    bytes[3] ^= 1;
    to_first.ciphertext = hex::encode(bytes);
    // The altered share is left out of the reveal: it costs its sender a share, not the round.
    let answer = reveal(
        ROUND,
        &sites[0].name,
        &sites[0].secrets,
        &roster,
        &sharing,
        &shares,
        &sharing,
        2,
    )
    .unwrap();
    assert!(answer.self_mask_shares.is_empty(), "{answer:?}");
}

#[test]
fn a_share_sealed_for_another_roster_does_not_open() {
    let mut rng = StdRng::seed_from_u64(13);
    let sites = sites(4, 10, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    // The hub shows county-1 a roster of three, county-0 the roster of four.
    let small: Vec<KeyAdvert> = roster[..3].to_vec();
    let shares = seal_shares(
        ROUND,
        &sites[1].name,
        &sites[1].secrets,
        &small,
        2,
        &mut rng,
    )
    .unwrap();
    let sharing: Vec<String> = roster.iter().map(|a| a.site.clone()).collect();
    let answer = reveal(
        ROUND,
        &sites[0].name,
        &sites[0].secrets,
        &roster,
        &sharing,
        &shares,
        &sharing,
        3,
    )
    .unwrap();
    assert!(answer.self_mask_shares.is_empty(), "{answer:?}");
}

#[test]
fn masking_refuses_too_few_sharers_and_a_roster_refuses_a_copied_key() {
    let mut rng = StdRng::seed_from_u64(14);
    let sites = sites(4, 10, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let s = &sites[0];
    // Told it shares alone, a site would send a vector the hub could unmask by itself.
    let error = mask(
        ROUND,
        &s.name,
        &s.secrets,
        &roster,
        3,
        std::slice::from_ref(&s.name),
        &s.delta,
        s.samples,
    )
    .unwrap_err();
    assert!(error.to_string().contains("threshold"), "{error}");
    let mut copied = roster.clone();
    copied[3].mask_public = copied[1].mask_public.clone();
    let error = check_roster(&copied, None, 3).unwrap_err();
    assert!(error.to_string().contains("twice"), "{error}");
}

#[test]
fn a_forged_self_mask_share_is_outvoted_by_honest_shares_or_fails_its_commitment() {
    let mut rng = StdRng::seed_from_u64(11);
    let sites = sites(3, 10, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let sharing: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();
    let mut masked = BTreeMap::new();
    let mut relayed = Vec::new();
    for s in &sites {
        relayed.extend(seal_shares(ROUND, &s.name, &s.secrets, &roster, 2, &mut rng).unwrap());
    }
    let mut plain = vec![0f64; 10];
    for s in &sites {
        let v = mask(
            ROUND, &s.name, &s.secrets, &roster, 2, &sharing, &s.delta, s.samples,
        )
        .unwrap();
        masked.insert(s.name.clone(), v);
        for (p, d) in plain.iter_mut().zip(&s.delta) {
            *p += f64::from(*d) * s.samples as f64;
        }
    }
    let mut reveals: BTreeMap<String, Reveal> = sites
        .iter()
        .map(|s| {
            let inbox: Vec<SealedShare> =
                relayed.iter().filter(|x| x.to == s.name).cloned().collect();
            let answer = reveal(
                ROUND, &s.name, &s.secrets, &roster, &sharing, &inbox, &sharing, 2,
            )
            .unwrap();
            (s.name.clone(), answer)
        })
        .collect();
    let share = reveals
        .get_mut(&sites[0].name)
        .unwrap()
        .self_mask_shares
        .get_mut(&sites[2].name)
        .unwrap();
    let mut bytes = hex::decode(&*share).unwrap();
    bytes[5] ^= 0x40;
    *share = hex::encode(bytes);
    // One liar among three revealers: the two honest shares still recover the seed.
    let sum = unmask(ROUND, &roster, &sharing, &masked, &reveals, 2).unwrap();
    assert_close(&sum, &plain);
    // With only the liar and one other, no pair of shares matches the commitment.
    reveals.remove(&sites[1].name);
    let error = unmask(ROUND, &roster, &sharing, &masked, &reveals, 2).unwrap_err();
    assert!(error.to_string().contains("self-mask"), "{error}");
}

#[test]
fn messages_are_bounded_and_strict() {
    let unknown = br#"{"kind":"unmask","round":1,"masked":[],"extra":1}"#;
    assert!(ToEdge::from_json(unknown).is_err());
    let names: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let too_many = message::to_json(&ToEdge::Unmask {
        round: 1,
        masked: names,
    });
    assert!(ToEdge::from_json(&too_many)
        .unwrap_err()
        .to_string()
        .contains("more than 255"));
    let long_name = message::to_json(&ToHub::Shares {
        round: 1,
        shares: vec![SealedShare {
            from: "x".repeat(500),
            to: "y".into(),
            ciphertext: "00".into(),
        }],
    });
    assert!(ToHub::from_json(&long_name).is_err());
    let fine = message::to_json(&ToEdge::Unmask {
        round: 3,
        masked: vec!["a".into(), "b".into()],
    });
    assert_eq!(ToEdge::from_json(&fine).unwrap().round(), 3);
    assert!(decode_masked(&[0; 15], 2).is_err());
    assert_eq!(
        decode_masked(&encode_masked(&[1, u64::MAX]), 2).unwrap(),
        [1, u64::MAX]
    );
}

#[test]
fn an_update_too_large_for_fixed_point_is_refused() {
    let mut rng = StdRng::seed_from_u64(12);
    let sites = sites(2, 3, &mut rng);
    let roster: Vec<KeyAdvert> = sites.iter().map(|s| s.secrets.advert(&s.name)).collect();
    let sharing: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();
    let s = &sites[0];
    for bad in [f32::NAN, 1e12] {
        let error = mask(
            ROUND,
            &s.name,
            &s.secrets,
            &roster,
            2,
            &sharing,
            &[0.0, bad, 0.0],
            100,
        )
        .unwrap_err();
        assert!(error.to_string().contains("fixed point"), "{error}");
    }
}

#[test]
fn survivors_sign_the_same_bytes_for_the_same_set_and_a_confirmation_is_bounded() {
    let a = vec!["county-b".to_string(), "county-a".to_string()];
    let b = vec!["county-a".to_string(), "county-b".to_string()];
    assert_eq!(
        message::survivors_bytes(4, &a),
        message::survivors_bytes(4, &b)
    );
    assert_ne!(
        message::survivors_bytes(4, &a),
        message::survivors_bytes(5, &a)
    );
    let confirm = message::to_json(&ToEdge::Confirm {
        round: 4,
        masked: b.clone(),
        consents: vec![message::Consent {
            site: "county-a".into(),
            certificate_pem: "x".repeat(20_000),
            signature: "00".into(),
        }],
    });
    assert!(
        ToEdge::from_json(&confirm).is_err(),
        "an oversized certificate is refused"
    );
}
