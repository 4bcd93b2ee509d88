//! The payloads that travel inside transfers and control messages, each parsed and validated
//! as its receiver does: referrals and answers, coverage reports, model status and evaluation
//! reports, round tasks and updates, and secure-aggregation messages. The first byte picks the
//! parser; no input may panic.
#![no_main]

use grassroots_wire::coverage::CoverageReport;
use grassroots_wire::federated::{decode_update, RoundTask};
use grassroots_wire::models::{ModelEvaluationReport, ModelStatusReport};
use grassroots_wire::referral::{ConsultReport, Referral};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(referral) = serde_json::from_slice::<Referral>(bytes) {
                let _ = referral.validate();
            }
        }
        1 => {
            if let Ok(report) = serde_json::from_slice::<ConsultReport>(bytes) {
                let _ = report.validate();
                let _ = report.compute_digest();
            }
        }
        2 => {
            if let Ok(report) = CoverageReport::from_json(bytes) {
                let _ = report.checked_days(time::OffsetDateTime::UNIX_EPOCH);
            }
        }
        3 => {
            let _ = ModelStatusReport::from_json(bytes);
        }
        4 => {
            let _ = ModelEvaluationReport::from_json(bytes);
        }
        5 => {
            let _ = RoundTask::from_json(bytes);
        }
        6 => {
            let _ = decode_update(bytes);
        }
        _ => {
            let _ = grassroots_secagg::message::ToEdge::from_json(bytes);
            let _ = grassroots_secagg::message::ToHub::from_json(bytes);
        }
    }
});
