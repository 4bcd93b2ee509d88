//! The privacy line for what a doctor types: a referral's specimen and question cross to the hub
//! as typed, so they must not carry the identifiers entered in the same form.
//!
//! Why here and not at the hub: the hub never sees the name, id or pathology number, so only the
//! edge can tell that "Wang Xiuying, ID 3301..., 2nd biopsy" names the patient. A referral whose
//! free text holds one is refused with the field and the identifier named (not quoted back), and
//! the form shows the doctor exactly what will cross before it is sent
//! (`POST /api/v1/referrals/preview`).

use crate::referrals::NewReferral;
use crate::EdgeError;

/// Identifiers shorter than this (letters and digits) are not looked for: "Li" alone would
/// refuse half of all questions.
const MIN_IDENTIFIER_CHARS: usize = 3;
/// A name written without spaces (as Chinese names are) is looked for from two characters.
const MIN_NAME_CHARS: usize = 2;

/// Letters and digits only, lower-cased: "ID-0042" and "id 0042" are the same identifier.
fn folded(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text`, folded.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(folded)
        .collect()
}

/// Whether `text` contains the name: as a whole (folded, so spacing does not matter), or any
/// part of three or more letters of a name written in words ("Wang Xiuying": "xiuying").
fn holds_name(text: &str, name: &str) -> bool {
    let whole = folded(name);
    let is_written_in_words = name.split_whitespace().count() > 1;
    let min = if is_written_in_words {
        MIN_IDENTIFIER_CHARS
    } else {
        MIN_NAME_CHARS
    };
    if whole.chars().count() >= min && folded(text).contains(&whole) {
        return true;
    }
    if !is_written_in_words {
        return false;
    }
    let text_words = words(text);
    words(name)
        .iter()
        .filter(|part| part.chars().count() >= MIN_IDENTIFIER_CHARS)
        .any(|part| text_words.contains(part))
}

fn holds_identifier(text: &str, identifier: &str) -> bool {
    let identifier = folded(identifier);
    identifier.chars().count() >= MIN_IDENTIFIER_CHARS && folded(text).contains(&identifier)
}

/// Refuses a referral whose specimen or question holds the patient's name, the patient id or
/// the pathology number.
pub fn check_free_text(new: &NewReferral) -> Result<(), EdgeError> {
    for (field, text) in [("specimen", &new.specimen), ("question", &new.question)] {
        let found = if holds_name(text, &new.patient_name) {
            Some("the patient's name")
        } else if holds_identifier(text, &new.patient_id) {
            Some("the patient id")
        } else if holds_identifier(text, &new.case_number) {
            Some("the pathology number")
        } else {
            None
        };
        if let Some(what) = found {
            return Err(EdgeError::Config(format!(
                "the {field} contains {what}: remove it (the {field} crosses to the hub as typed; \
                 the name, id and pathology number stay here)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral(question: &str, specimen: &str) -> NewReferral {
        serde_json::from_value(serde_json::json!({
            "case_number": "S26-0417",
            "patient_name": "Wang Xiuying",
            "patient_id": "410223198803150021",
            "age_years": 38,
            "sex": "female",
            "specimen": specimen,
            "question": question,
            "urgency": "routine",
            "slide_ids": [],
        }))
        .unwrap()
    }

    #[test]
    fn identifiers_in_free_text_are_refused_with_the_field_named() {
        let refused = |question: &str, specimen: &str| {
            check_free_text(&referral(question, specimen))
                .err()
                .map(|e| e.to_string())
        };
        let error = refused("Is this Wang Xiuying's recurrence?", "skin").unwrap();
        assert!(
            error.contains("question") && error.contains("name"),
            "{error}"
        );
        assert!(
            !error.contains("Xiuying"),
            "the refusal does not repeat the name"
        );
        assert!(refused("recurrence in xiuying?", "skin").is_some());
        let error = refused("Melanoma?", "skin, ID 4102 2319 8803 1500 21").unwrap();
        assert!(
            error.contains("specimen") && error.contains("patient id"),
            "{error}"
        );
        let error = refused("Compare with s26 0417", "skin").unwrap();
        assert!(error.contains("pathology number"), "{error}");
        assert_eq!(
            refused("Melanoma or dysplastic naevus?", "skin, left forearm"),
            None
        );
    }

    #[test]
    fn a_chinese_name_is_found_without_spaces() {
        let mut new = referral("王秀英 复发？", "皮肤");
        new.patient_name = "王秀英".into();
        assert!(check_free_text(&new).is_err());
        new.question = "黑色素瘤？".into();
        assert!(check_free_text(&new).is_ok());
    }
}
