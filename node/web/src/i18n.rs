//! Simplified Chinese and English: county staff read Chinese, the network's engineers English.
//!
//! A page's language is the account's choice (the header's switch, kept on the account), else
//! the browser's (`Accept-Language`), else English. Text is written in English in the code and
//! wrapped in [`tr`], which looks it up in the Chinese catalogue (`i18n/zh.json`, English text to
//! Chinese) when the request being answered is in Chinese; `tests/ui.rs` checks that every text
//! the sources pass to `tr` has its entry, so a page never mixes the two by oversight.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The languages of the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Zh,
}

/// The cookie that carries the choice to pages shown before signing in.
pub const LANG_COOKIE: &str = "grassroots_lang";

impl Lang {
    /// The `lang` attribute of a page in this language.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The `Set-Cookie` value that keeps `self` for the pages shown before signing in.
    pub fn cookie(self) -> String {
        let code = match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        };
        format!("{LANG_COOKIE}={code}; Path=/; SameSite=Strict; Max-Age=31536000")
    }

    pub fn parse(code: &str) -> Option<Lang> {
        let code = code.trim().to_ascii_lowercase();
        if code == "zh" || code.starts_with("zh-") {
            Some(Lang::Zh)
        } else if code == "en" || code.starts_with("en-") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The browser's first language we speak, by its `Accept-Language` weights.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut offered: Vec<(f32, Lang)> = header
            .split(',')
            .filter_map(|part| {
                let mut pieces = part.split(';');
                let lang = Lang::parse(pieces.next()?)?;
                let weight = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((weight, lang))
            })
            .collect();
        offered.sort_by(|a, b| b.0.total_cmp(&a.0));
        offered.first().map(|(_, lang)| *lang)
    }
}

fn catalogue() -> &'static HashMap<String, String> {
    static ZH: OnceLock<HashMap<String, String>> = OnceLock::new();
    ZH.get_or_init(|| serde_json::from_str(include_str!("i18n/zh.json")).unwrap_or_default())
}

/// `english` in `lang`: the catalogue's Chinese, or the English where it has none.
pub fn in_lang(lang: Lang, english: &'static str) -> &'static str {
    match lang {
        Lang::En => english,
        Lang::Zh => catalogue()
            .get(english)
            .map(String::as_str)
            .unwrap_or(english),
    }
}

/// `english` in the language of the request being answered.
pub fn tr(english: &'static str) -> &'static str {
    in_lang(crate::nav::lang(), english)
}

/// `text` in the language of the request being answered, for text that is not a literal (a
/// page's title passed in): the catalogue's Chinese when it has the text, else the text.
pub fn tr_any(text: &str) -> String {
    match crate::nav::lang() {
        Lang::Zh => catalogue()
            .get(text)
            .cloned()
            .unwrap_or_else(|| text.to_string()),
        Lang::En => text.to_string(),
    }
}

/// The elements whose text is the page's own words (headings, terms, labels, options, buttons):
/// patient and case data never stand there (they are in `dd`, `td`, `p`, `pre`), so
/// [`own_words`] cannot translate what a person typed.
pub const OWN_WORD_TAGS: [&str; 11] = [
    "h2", "h3", "th", "dt", "label", "legend", "option", "button", "summary", "caption", "a",
];

/// A page's HTML with its own words in Chinese, when the request is in Chinese: each text that
/// is the whole content of an element of [`OWN_WORD_TAGS`] (up to a nested tag, as a label's text
/// before its input) and that the catalogue knows. One pass over the page, so that every page
/// is translated as soon as the catalogue has its words, without a `tr` per word.
pub fn own_words(html: &str) -> String {
    if crate::nav::lang() == Lang::En {
        return html.to_string();
    }
    let catalogue = catalogue();
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    let mut rest = html;
    let mut open_tag = "";
    // Data marked `translate="no"` (a study's description in a link) stays as it is.
    let mut data = crate::pages::Verbatim::default();
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        let trimmed = text.trim();
        match catalogue.get(trimmed) {
            Some(chinese)
                if !trimmed.is_empty() && OWN_WORD_TAGS.contains(&open_tag) && !data.inside() =>
            {
                let start = text.len() - text.trim_start().len();
                out.push_str(&text[..start]);
                out.push_str(chinese);
                out.push_str(&text[start + trimmed.len()..]);
            }
            _ => out.push_str(text),
        }
        let Some(gt) = rest[lt..].find('>') else {
            out.push_str(&rest[lt..]);
            return out;
        };
        let tag = &rest[lt + 1..lt + gt];
        data.tag(tag, |_, tag| crate::pages::holds_data(tag));
        open_tag = if tag.starts_with('/') || tag.starts_with('!') {
            ""
        } else {
            tag.split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("")
        };
        out.push_str(&rest[lt..=lt + gt]);
        rest = &rest[lt + gt + 1..];
    }
    out.push_str(rest);
    out
}

/// A message made at run time (a refusal's reason, with names and numbers in it) in `lang`.
///
/// The catalogue's entries with `{}` are patterns: `already taken by {}` translates `already
/// taken by alice` with the name kept. A message the catalogue does not know as a whole is taken
/// apart at its first `": "` (`forbidden: your role may not ...`) and each part translated on its
/// own, so the common prefixes are written once. What no entry covers stays English: a reason
/// half translated is worse than one whole.
pub fn message_in(lang: Lang, text: &str) -> String {
    if lang == Lang::En {
        return text.to_string();
    }
    translate_message(text).unwrap_or_else(|| text.to_string())
}

fn translate_message(text: &str) -> Option<String> {
    let text = text.trim();
    if let Some(chinese) = catalogue().get(text) {
        return Some(chinese.clone());
    }
    if let Some(chinese) = patterns().iter().find_map(|p| p.apply(text)) {
        return Some(chinese);
    }
    let (head, tail) = text.split_once(": ")?;
    let head = translate_message(head)?;
    let tail = translate_message(tail)?;
    Some(format!("{head}：{tail}"))
}

/// A catalogue entry with `{}` holes: the English pieces between the holes and the Chinese.
struct Pattern {
    pieces: Vec<&'static str>,
    chinese: &'static str,
}

impl Pattern {
    /// The Chinese with the values `text` has in the holes, if `text` has this shape.
    fn apply(&self, text: &str) -> Option<String> {
        let (first, rest) = self.pieces.split_first()?;
        let mut remaining = text.strip_prefix(first)?;
        let mut values = Vec::new();
        for (index, piece) in rest.iter().enumerate() {
            let last = index + 1 == rest.len();
            let at = if last {
                remaining.strip_suffix(piece)?.len()
            } else {
                remaining.find(piece)?
            };
            let value = &remaining[..at];
            // A value is a name, an id or a number: one word. `no referral {}` must not
            // swallow `X from this edge`, nor `taken by {}` `alice: only ...`.
            if value.is_empty() || value.contains(char::is_whitespace) {
                return None;
            }
            values.push(value);
            remaining = &remaining[at + piece.len()..];
        }
        let mut out = String::new();
        let mut holes = self.chinese.split("{}");
        out.push_str(holes.next().unwrap_or_default());
        for (value, after) in values.iter().zip(holes) {
            out.push_str(value);
            out.push_str(after);
        }
        Some(out)
    }
}

fn patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let mut patterns = catalogue()
            .iter()
            .filter(|(english, chinese)| {
                english.contains("{}")
                    && !english.replace("{}", "").trim().is_empty()
                    && english.matches("{}").count() == chinese.matches("{}").count()
            })
            .map(|(english, chinese)| Pattern {
                pieces: english.split("{}").collect(),
                chinese: chinese.as_str(),
            })
            .collect::<Vec<_>>();
        // The most specific pattern first (the longest literal text), in one fixed order.
        patterns.sort_by(|a, b| {
            let literal = |p: &Pattern| p.pieces.iter().map(|piece| piece.len()).sum::<usize>();
            literal(b)
                .cmp(&literal(a))
                .then_with(|| a.pieces.cmp(&b.pieces))
        });
        patterns
    })
}

/// Whether the catalogue has `english` (for the test that every `tr` has its entry).
pub fn has_translation(english: &str) -> bool {
    catalogue().contains_key(english)
}

#[derive(Debug, Deserialize)]
pub struct LanguageForm {
    lang: String,
    next: Option<String>,
}

/// `POST /language` (any signed-in account; the header's switch): keeps the choice on the
/// account, and in a cookie for the sign-in page, then goes back to the page.
pub async fn switch(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    axum::extract::Extension(crate::CurrentUser(user)): axum::extract::Extension<
        crate::CurrentUser,
    >,
    axum::Form(form): axum::Form<LanguageForm>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(lang) = Lang::parse(&form.lang) else {
        return crate::WebError::BadRequest(format!("language {:?}: en or zh", form.lang))
            .into_response();
    };
    if let Err(error) = state.accounts.set_language(&user.username, lang) {
        return error.into_response();
    }
    let next = crate::auth::safe_next(form.next.as_deref());
    (
        [(axum::http::header::SET_COOKIE, lang.cookie())],
        axum::response::Redirect::to(&next),
    )
        .into_response()
}

/// The header's switch to the other language.
pub fn switch_form(current: Lang, path: &str) -> String {
    let (code, label, tag) = match current {
        Lang::En => ("zh", "中文", "zh-CN"),
        Lang::Zh => ("en", "English", "en"),
    };
    format!(
        r#"<form method="post" action="/language" class="lang-switch"><input type="hidden" name="lang" value="{code}"><input type="hidden" name="next" value="{}"><button type="submit" lang="{tag}">{label}</button></form>"#,
        crate::pages::escape(path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_words_are_found_where_they_stand_and_nowhere_else() {
        let html = r#"<h2>Timeline</h2><dl><dt>Specimen</dt><dd>Specimen</dd></dl><label>Sex <select><option value="female">Female</option></select></label><p>Benign</p><a href="/x">Slides</a><td translate="no"><a href="/y">Slides</a></td>"#;
        let zh = crate::nav::with_lang_for_test(Lang::Zh, || own_words(html));
        assert_eq!(
            zh,
            r#"<h2>时间线</h2><dl><dt>标本</dt><dd>Specimen</dd></dl><label>性别 <select><option value="female">女</option></select></label><p>Benign</p><a href="/x">切片</a><td translate="no"><a href="/y">Slides</a></td>"#
        );
        assert_eq!(own_words(html), html, "English outside a Chinese request");
    }

    #[test]
    fn refusals_made_at_run_time_are_translated_whole_or_not_at_all() {
        assert_eq!(
            message_in(
                Lang::Zh,
                "already taken by alice: only they view its slides and answer"
            ),
            "已由 alice 接诊：只有该专家可以查看其切片并作答"
        );
        assert_eq!(
            message_in(
                Lang::Zh,
                "forbidden: this needs the role expert; you are clinician"
            ),
            "禁止操作：此操作需要角色 expert；您的角色是 clinician"
        );
        assert_eq!(message_in(Lang::Zh, "sign in first"), "请先登录");
        // The screening's reasons, with their figures, on the worklist.
        let reason = message_in(Lang::Zh, "lesion score 0.93 at or above 0.41");
        assert!(
            reason.contains("0.93") && reason.contains("0.41"),
            "{reason}"
        );
        assert!(!reason.contains("lesion"), "{reason}");
        // A part no entry covers leaves the whole reason in English.
        assert_eq!(
            message_in(Lang::Zh, "forbidden: something new"),
            "forbidden: something new"
        );
        assert_eq!(
            message_in(Lang::Zh, "already taken by "),
            "already taken by "
        );
        // A hole holds one word: the rest of a longer sentence is not swallowed.
        assert_eq!(
            message_in(Lang::Zh, "no referral R-1 from this edge"),
            "no referral R-1 from this edge"
        );
        assert_eq!(message_in(Lang::Zh, "no referral R-1"), "没有转诊 R-1");
        assert_eq!(
            message_in(Lang::En, "sign in first"),
            "sign in first",
            "English stays English"
        );
    }

    #[test]
    fn browsers_languages_are_weighed_and_the_catalogue_parses() {
        assert_eq!(
            Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Some(Lang::Zh)
        );
        assert_eq!(
            Lang::from_accept_language("fr;q=1, en-GB;q=0.7, zh;q=0.5"),
            Some(Lang::En)
        );
        assert_eq!(Lang::from_accept_language("fr, de"), None);
        assert!(!catalogue().is_empty(), "zh.json parses");
        assert_eq!(in_lang(Lang::Zh, "Worklist"), "工作列表");
        assert_eq!(in_lang(Lang::En, "Worklist"), "Worklist");
    }
}
