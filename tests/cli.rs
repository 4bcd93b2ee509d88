//! The `grassroots provision` and `grassroots user` commands as an installer uses them.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn grassroots(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn provisioning_a_network_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let prov = dir.path().join("prov");
    let prov = prov.to_str().unwrap();
    let (ok, out, err) = grassroots(&[
        "provision",
        "init",
        "--dir",
        prov,
        "--network",
        "Henan pathology",
        "--hub-addr",
        "hub.example.cn:7443",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("kits/hub.kit"), "{out}");
    let (ok, _, err) = grassroots(&[
        "provision",
        "init",
        "--dir",
        prov,
        "--network",
        "again",
        "--hub-addr",
        "x:1",
    ]);
    assert!(!ok && err.contains("already holds a network"), "{err}");

    let (ok, _, err) = grassroots(&[
        "provision",
        "add-site",
        "--dir",
        prov,
        "lankao",
        "--name",
        "Lankao County People's Hospital",
        "--valid-days",
        "90",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = grassroots(&[
        "provision",
        "add-site",
        "--dir",
        prov,
        "Bad Id",
        "--name",
        "x",
    ]);
    assert!(!ok && err.contains("invalid site id"), "{err}");
    let (ok, _, err) = grassroots(&[
        "provision",
        "add-site",
        "--dir",
        dir.path().to_str().unwrap(),
        "x",
        "--name",
        "x",
    ]);
    assert!(!ok && err.contains("not a provisioning directory"), "{err}");

    let kit = grassroots_provisioning::Kit::load(&dir.path().join("prov/kits/lankao.kit")).unwrap();
    assert_eq!(kit.site_name, "Lankao County People's Hospital");
    assert_eq!(kit.hub_addr, "hub.example.cn:7443");
    let days = (kit.not_after - time::OffsetDateTime::now_utc()).whole_days();
    assert!((88..=90).contains(&days), "{days}");
    // The kit carries the public half of the network's model-signing key.
    let seed = std::fs::read_to_string(dir.path().join("prov/model-signing.key")).unwrap();
    let signer = grassroots_models::PackageSigner::from_seed_hex(&seed).unwrap();
    assert_eq!(signer.public_key_hex(), kit.model_signing_public_key);

    let (ok, _, err) = grassroots(&["provision", "renew", "--dir", prov, "lankao"]);
    assert!(ok, "{err}");
    let (ok, _, err) = grassroots(&["provision", "revoke", "--dir", prov, "lankao"]);
    assert!(ok, "{err}");
    let (ok, _, err) = grassroots(&["provision", "renew", "--dir", prov, "lankao"]);
    assert!(!ok && err.contains("is revoked"), "{err}");
    let (ok, out, _) = grassroots(&["provision", "list", "--dir", prov]);
    assert!(ok);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("lankao") && l.contains("revoked"))
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("hub") && l.contains("valid"))
            .count(),
        1,
        "{out}"
    );
}

#[test]
fn adding_users_checks_roles_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let add = |role: &str, name: &str, password: &str| {
        let mut child = Command::new(bin())
            .args(["user", "add", "--data", data, "--role", role, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert!(add("expert", "dr-wang", "long enough password").0);
    let (ok, err) = add("expert", "dr-wang", "long enough password");
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, err) = add("surgeon", "x", "long enough password");
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, err) = add("admin", "y", "short");
    assert!(!ok && err.contains("password too short"), "{err}");
    let (ok, out, _) = grassroots(&["user", "list", "--data", data]);
    assert!(
        ok && out.contains("dr-wang") && out.contains("expert"),
        "{out}"
    );
}

#[test]
fn a_candidate_is_approved_offline_with_the_networks_key() {
    let net = Network::new(&["county-a"]);
    let dir = net.dir.path();
    // What a hub without the key leaves for approval: a package with no valid signature.
    let signed = untrained_package(&net, 9, "round-3", 6);
    let verifier = grassroots_models::PackageVerifier::from_public_hex(
        &grassroots_provisioning::Kit::load(&net.kit("county-a"))
            .unwrap()
            .model_signing_public_key,
    )
    .unwrap();
    let opened = grassroots_models::ModelPackage::open(&signed, &verifier).unwrap();
    let candidate =
        grassroots_models::ModelPackage::seal_unsigned(&opened.manifest, &opened.graph).unwrap();
    assert!(grassroots_models::ModelPackage::open(&candidate, &verifier).is_err());
    let candidate_path = dir.join("candidate.grmodel");
    std::fs::write(&candidate_path, &candidate).unwrap();
    let approved_path = dir.join("approved.grmodel");
    let (ok, out, err) = grassroots(&[
        "model",
        "sign",
        "--provisioning",
        &path(&net.prov()),
        &path(&candidate_path),
        "--out",
        &path(&approved_path),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("round-3"), "what is approved is shown: {out}");
    let approved = std::fs::read(&approved_path).unwrap();
    let opened = grassroots_models::ModelPackage::open(&approved, &verifier).unwrap();
    assert_eq!(opened.manifest.version, "round-3");
    // Garbage is refused with a clear reason, and nothing is written.
    std::fs::write(&candidate_path, b"not a package").unwrap();
    let (ok, _, err) = grassroots(&[
        "model",
        "sign",
        "--provisioning",
        &path(&net.prov()),
        &path(&candidate_path),
        "--out",
        &path(&dir.join("nothing.grmodel")),
    ]);
    assert!(!ok);
    assert!(err.contains("not a model package"), "{err}");
    assert!(!dir.join("nothing.grmodel").exists());
}

#[test]
fn tile_sets_are_made_for_the_model_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    for (model, side, resolution) in [
        ("quick", 32u32, "at 2 um/px"),
        ("context", 64, "at 1 um/px"),
    ] {
        let out = dir.path().join(format!("{model}.tiles"));
        let (ok, said, err) = grassroots(&[
            "model",
            "validation-set",
            "--model",
            model,
            "--tiles-per-class",
            "3",
            "--out",
            &path(&out),
        ]);
        assert!(ok, "{err}");
        assert!(
            said.contains(&format!("tiles of {side} px {resolution}")),
            "{said}"
        );
        if model == "context" {
            // The context model's tiles: the SVS in bands and the three lesion images, read
            // at its own resolution (not the quick model's halved pair).
            assert!(said.contains("host: cmu_small_region.svs"), "{said}");
            assert_eq!(
                said.split("lesions: ").nth(1).unwrap().split(", ").count(),
                3,
                "{said}"
            );
        }
        let (tiles, tile) =
            grassroots_models::federated::validation::read(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(tile, side);
        assert!(tiles.len() >= 6, "{}", tiles.len());
        assert!(tiles.iter().all(|t| t.image.dimensions() == (side, side)));
        assert!(tiles.iter().any(|t| t.class == 0) && tiles.iter().any(|t| t.class == 1));
    }
    // The demo's lesion sites are the quick model's: refused for the context model.
    let refused = dir.path().join("refused.tiles");
    let (ok, _, err) = grassroots(&[
        "model",
        "tile-set",
        "--model",
        "context",
        "--lesion",
        "tumour.png",
        "--out",
        &path(&refused),
    ]);
    assert!(!ok && err.contains("--lesion"), "{err}");
    assert!(!refused.exists());
}
