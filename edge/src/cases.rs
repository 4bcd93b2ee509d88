//! Cases and the labels that link slides to them.
//!
//! At import, the slide's label image is read (PP-OCRv4 through `grassroots-models`) and the
//! site's pathology-number pattern looked for in the text; a match links the slide to that case,
//! creating the case if it is new. A slide whose label cannot be read stays *unlinked*, and a
//! person can link (or re-link) any slide by hand. The text read and its confidence are kept.

use std::sync::Arc;

use grassroots_models::{find_pathology_number, LabelReader};
use grassroots_store::Table;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::EdgeError;

/// What was read from a slide's label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabelReading {
    /// The lines of text, top to bottom.
    pub lines: Vec<String>,
    /// The pathology number found in them, if any (a suggestion unless it was linked).
    pub number: Option<String>,
    /// Probability of the number's least certain character.
    pub confidence: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkSource {
    /// Read from the label.
    Label,
    /// Set by a person.
    Manual,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Case {
    pub number: String,
    pub slide_ids: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Reads labels and keeps the cases table.
pub struct CaseLinker {
    reader: Option<Arc<LabelReader>>,
    pattern: regex::Regex,
    link_confidence: f32,
    cases: Table<Case>,
}

impl CaseLinker {
    pub fn new(
        reader: Option<Arc<LabelReader>>,
        pattern: &str,
        link_confidence: f32,
        cases: Table<Case>,
    ) -> Result<Self, EdgeError> {
        let pattern = regex::Regex::new(pattern)
            .map_err(|e| EdgeError::Config(format!("pathology number pattern {pattern:?}: {e}")))?;
        Ok(Self {
            reader,
            pattern,
            link_confidence,
            cases,
        })
    }

    /// Reads a label image; `None` when no OCR models are configured.
    pub fn read_label(&self, label: &image::RgbImage) -> Option<LabelReading> {
        let reader = self.reader.as_ref()?;
        match reader.read(label) {
            Ok(lines) => {
                let found = find_pathology_number(&lines, &self.pattern);
                Some(LabelReading {
                    lines: lines.into_iter().map(|line| line.text).collect(),
                    number: found.as_ref().map(|(number, _)| number.clone()),
                    confidence: found.map(|(_, confidence)| confidence),
                })
            }
            Err(error) => {
                tracing::warn!(%error, "label OCR failed");
                None
            }
        }
    }

    /// The pathology number a reading links to on its own: only when its least certain
    /// character is at least as certain as the site requires; below that it stays a suggestion.
    pub fn automatic_link(&self, reading: &LabelReading) -> Option<String> {
        reading
            .number
            .clone()
            .filter(|_| reading.confidence.unwrap_or(0.0) >= self.link_confidence)
    }

    /// Adds a slide to a case (creating it), durably.
    pub fn attach(&self, number: &str, slide_id: &str) -> Result<(), EdgeError> {
        self.cases.update(number, |case| {
            let mut case = case.unwrap_or_else(|| Case {
                number: number.to_string(),
                slide_ids: Vec::new(),
                created_at: OffsetDateTime::now_utc(),
            });
            if !case.slide_ids.iter().any(|id| id == slide_id) {
                case.slide_ids.push(slide_id.to_string());
            }
            Some(case)
        })?;
        self.cases.flush()?;
        Ok(())
    }

    /// Removes a slide from a case (the case stays, even if empty: it was real).
    pub fn detach(&self, number: &str, slide_id: &str) -> Result<(), EdgeError> {
        self.cases.update(number, |case| {
            case.map(|mut case| {
                case.slide_ids.retain(|id| id != slide_id);
                case
            })
        })?;
        Ok(())
    }

    pub fn case(&self, number: &str) -> Result<Option<Case>, EdgeError> {
        Ok(self.cases.get(number)?)
    }

    pub fn cases(&self) -> Result<Vec<Case>, EdgeError> {
        Ok(self
            .cases
            .entries()?
            .into_iter()
            .map(|(_, case)| case)
            .collect())
    }
}
