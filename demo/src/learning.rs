//! The demo's federated learning: the demo model goes into the hub's registry and is released,
//! each edge's clinician signs off its slide (the first edge marks a region as a lesion, standing
//! in for an expert's answer; the others confirm theirs benign), and the hub — started with a
//! round every minute — trains from then on. `/rounds` at the hub charts each round's validation
//! accuracy; `/federated` at each edge shows its labels and rounds. Everything goes through the
//! nodes' own APIs, as a person or a script would.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A client signed in to the node at `base` (retrying while it starts), sending the session's
/// CSRF token as the nodes' pages do.
pub(crate) async fn sign_in(base: &str, user: &str, password: &str) -> Result<reqwest::Client> {
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for _ in 0..240 {
        let login = client
            .post(format!("{base}/login"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await;
        if let Some(login) = login.ok().filter(|r| r.status() == 303) {
            let csrf = grassroots_web::csrf::token_in_set_cookies(
                login
                    .headers()
                    .get_all(reqwest::header::SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            )
            .context("the node set no CSRF cookie")?;
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(grassroots_web::csrf::CSRF_HEADER, csrf.parse()?);
            return Ok(reqwest::Client::builder()
                .cookie_provider(jar)
                .default_headers(headers)
                .redirect(reqwest::redirect::Policy::none())
                .build()?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{base} did not accept the demo's {user}")
}

/// Signs off a slide at each edge, then registers and releases `model` at the hub.
pub async fn start_learning(
    hub_http: &str,
    edge_https: &[String],
    model: &Path,
    password: &str,
) -> Result<()> {
    // Labels first: the first round starts as soon as a version is released.
    for (index, http) in edge_https.iter().enumerate() {
        let base = format!("http://{http}");
        let clinician = sign_in(&base, "clinician", password).await?;
        let slides: serde_json::Value = clinician
            .get(format!("{base}/api/v1/slides"))
            .send()
            .await?
            .json()
            .await?;
        let Some(slide) = slides
            .as_array()
            .and_then(|all| all.iter().find(|s| s["state"] == "ready"))
        else {
            continue;
        };
        let (id, width, height) = (
            slide["id"].as_str().unwrap_or_default().to_string(),
            slide["info"]["width"].as_f64().unwrap_or(0.0),
            slide["info"]["height"].as_f64().unwrap_or(0.0),
        );
        // The first edge's clinician marks the slide's upper middle as a lesion (the proxy
        // task's stand-in for an expert); the others confirm theirs benign.
        let form = if index == 0 {
            serde_json::json!({"class": "lesion", "regions": [[
                [width * 0.2, height * 0.1], [width * 0.8, height * 0.1],
                [width * 0.8, height * 0.5], [width * 0.2, height * 0.5]
            ]]})
        } else {
            serde_json::json!({"class": "benign"})
        };
        clinician
            .post(format!("{base}/api/v1/slides/{id}/signoff"))
            .json(&form)
            .send()
            .await?
            .error_for_status()?;
    }
    let hub = format!("http://{hub_http}");
    let admin = sign_in(&hub, "admin", password).await?;
    let package = tokio::fs::read(model)
        .await
        .with_context(|| format!("reading {}", model.display()))?;
    let added = admin
        .post(format!("{hub}/api/v1/model-versions"))
        .body(package.clone())
        .send()
        .await?;
    if !added.status().is_success() {
        bail!("the hub refused the demo model: {}", added.text().await?);
    }
    let digest = blake3::hash(&package).to_hex().to_string();
    admin
        .post(format!("{hub}/api/v1/model-versions/{digest}/release"))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
