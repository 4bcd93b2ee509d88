//! The record of every pixel that leaves this edge: **the privacy line's ledger**.
//!
//! Tiles and descriptors an authorised expert asks for during a consult are the only image data
//! that cross to the hub (`referrals::serve_consult`). Each one is recorded here — when, which
//! referral and slide, which tile, how many bytes, whether the hub fetched it ahead of the
//! expert — and the record is on disk (sled's batched `flush_async`: one fsync serves every tile
//! sent at the same moment) before the tile is handed to the link. So the hospital can answer
//! "what of this patient's slide left, and when?" from its own records, whatever the hub says.
//! `GET /api/v1/referrals/{id}/egress` lists a referral's record; its page shows the totals.

use grassroots_store::Table;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::EdgeError;

/// One item sent to the hub for a consult.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Egress {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub referral_id: String,
    pub slide_id: String,
    /// "dzi" or "LEVEL/COL_ROW".
    pub item: String,
    pub bytes: u64,
    /// Fetched ahead of the expert by the hub's prefetch.
    pub prefetch: bool,
}

#[derive(Clone)]
pub struct ConsultEgress {
    table: Table<Egress>,
}

impl ConsultEgress {
    pub fn new(table: Table<Egress>) -> Self {
        Self { table }
    }

    /// Records an item about to leave; returns once the record is durable.
    pub async fn record(&self, egress: Egress) -> Result<(), EdgeError> {
        // Keyed by referral, then time: one referral's record is one prefix scan, in order.
        let key = format!(
            "{}/{:020}/{:08x}",
            egress.referral_id,
            egress.at.unix_timestamp_nanos().max(0),
            rand::random::<u32>()
        );
        self.table.put(&key, &egress)?;
        self.table.flush_async().await?;
        Ok(())
    }

    /// What left for a referral, oldest first.
    pub fn of_referral(&self, referral_id: &str) -> Result<Vec<Egress>, EdgeError> {
        Ok(self
            .table
            .scan_prefix(&format!("{referral_id}/"))?
            .into_iter()
            .map(|(_, egress)| egress)
            .collect())
    }
}

/// The answer of `GET /api/v1/referrals/{id}/egress`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EgressReport {
    referral_id: String,
    /// How many items left.
    items: usize,
    /// How many bytes left, in all.
    bytes: u64,
    /// Each item, oldest first.
    egress: Vec<Egress>,
}

/// `GET /api/v1/referrals/{id}/egress`: every tile and descriptor of the referral that left.
#[utoipa::path(get, path = "/api/v1/referrals/{id}/egress", tag = "referrals",
    params(("id" = String, Path, description = "The referral's id")),
    responses((status = 200, description = "Everything of the referral that left this edge (empty for an unknown id)", body = EgressReport), grassroots_web::openapi::Refusals))]
pub(crate) async fn egress_api(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::EdgeState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.egress.of_referral(&id) {
        Ok(items) => {
            let bytes: u64 = items.iter().map(|e| e.bytes).sum();
            axum::Json(EgressReport {
                referral_id: id,
                items: items.len(),
                bytes,
                egress: items,
            })
            .into_response()
        }
        Err(error) => grassroots_web::WebError::Internal(error.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_durable_and_read_per_referral_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let egress = ConsultEgress::new(store.table("consult_egress").unwrap());
        for (referral, item) in [("a1", "dzi"), ("b2", "dzi"), ("a1", "12/0_0")] {
            egress
                .record(Egress {
                    at: OffsetDateTime::now_utc(),
                    referral_id: referral.into(),
                    slide_id: "s".into(),
                    item: item.into(),
                    bytes: 100,
                    prefetch: false,
                })
                .await
                .unwrap();
        }
        let a1: Vec<String> = egress
            .of_referral("a1")
            .unwrap()
            .into_iter()
            .map(|e| e.item)
            .collect();
        assert_eq!(a1, ["dzi", "12/0_0"]);
    }
}
