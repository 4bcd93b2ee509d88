//! The demo's referral: once the first edge is up and has screened its slide, a clinician there
//! refers the case to the hub through the edge's own API, so an expert finds a referral waiting
//! at the hub's `/referrals`. The patient is fictional; the name and id stay at the edge, as a
//! real patient's would (docs/REFERRALS.md).

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Refers the demo case at the edge serving `http` (HOST:PORT), unless a referral exists.
pub async fn refer_demo_case(http: &str, password: &str) -> Result<()> {
    let base = format!("http://{http}");
    // The edge may still be starting.
    let client = crate::learning::sign_in(&base, "clinician", password).await?;
    let existing: serde_json::Value = client
        .get(format!("{base}/api/v1/referrals"))
        .send()
        .await?
        .json()
        .await?;
    if existing.as_array().is_some_and(|all| !all.is_empty()) {
        return Ok(());
    }
    // Refer once the slide is screened, so that the referral carries the AI's findings.
    let mut slide = None;
    for _ in 0..240 {
        let jobs: serde_json::Value = client
            .get(format!("{base}/api/v1/screening"))
            .send()
            .await?
            .json()
            .await?;
        if let Some(job) = jobs.as_array().and_then(|all| {
            all.iter()
                .find(|j| j["state"] == "done" || j["state"] == "failed")
        }) {
            slide = job["slide_id"].as_str().map(String::from);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let slide = match slide {
        Some(slide) => slide,
        None => {
            // No model, or still screening: refer the first ready slide as it is.
            let slides: serde_json::Value = client
                .get(format!("{base}/api/v1/slides"))
                .send()
                .await?
                .json()
                .await?;
            slides
                .as_array()
                .and_then(|all| all.iter().find(|s| s["state"] == "ready"))
                .and_then(|s| s["id"].as_str().map(String::from))
                .context("the demo edge has no ready slide to refer")?
        }
    };
    let referred = client
        .post(format!("{base}/api/v1/referrals"))
        .json(&serde_json::json!({
            "case_number": "CMU-1",
            "patient_name": "Demo Patient (fictional)",
            "patient_id": "DEMO-0001",
            "age_years": 58,
            "sex": "male",
            "specimen": "colon biopsy",
            "question": "Adenoma or adenocarcinoma? Please review the region the AI flagged.",
            "urgency": "priority",
            "slide_ids": [slide],
        }))
        .send()
        .await?;
    if !referred.status().is_success() {
        bail!("the demo referral was refused: {}", referred.text().await?);
    }
    Ok(())
}
