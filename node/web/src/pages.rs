//! Server-rendered page layout shared by both nodes: one small stylesheet, a header with the
//! node's name and the signed-in user, and HTML escaping for everything that came from outside.
//! Pages are plain HTML that reads on a phone and a hospital PC alike.

use axum::response::Html;

use crate::accounts::Account;

pub const CSS: &str = r#"
:root { --fg:#1d2733; --muted:#5b6b7c; --accent:#1f6f5c; --bg:#f6f8f9; --warn:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.45 system-ui, -apple-system, "Segoe UI", "Noto Sans SC", sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; padding:.6rem 1rem; background:var(--accent); color:#fff; }
header a, header button { color:#fff; }
header .title { font-weight:600; margin-right:auto; }
header form { display:inline; margin:0; }
header button { background:none; border:1px solid #fff8; border-radius:4px; padding:.3rem .7rem; min-height:2.2rem; cursor:pointer; }
.site-nav ul { display:flex; flex-wrap:wrap; gap:.1rem .9rem; list-style:none; margin:0; padding:0; }
.site-nav a { color:#fff; text-decoration:none; display:inline-block; padding:.35rem .1rem; border-bottom:2px solid transparent; }
.site-nav a:hover { border-bottom-color:#fff8; }
.site-nav a[aria-current="page"] { border-bottom-color:#fff; font-weight:600; }
:focus-visible { outline:3px solid #f5b700; outline-offset:2px; }
.skip { position:absolute; left:-999px; top:0; background:#fff; color:var(--fg); padding:.5rem; z-index:10; }
.skip:focus { left:.5rem; }
button, select, input[type=submit] { min-height:2.2rem; }
.name { display:inline-block; max-width:18rem; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; vertical-align:bottom; }
.name.whole { white-space:normal; overflow-wrap:anywhere; max-width:none; }
.empty { color:var(--muted); }
.nowrap { white-space:nowrap; }
@media (min-width: 601px) { .site-nav .menu-toggle { display:none; } }
.live-updates button { margin-left:.5rem; }
header .lang-switch button { border-color:#fff8; }
.lang-links { text-align:center; margin-top:1rem; }
p.error, span.error { font-weight:600; }
main { padding:1rem; max-width:1100px; margin:0 auto; }
h1 { font-size:clamp(1.3rem, 5vw, 2rem); overflow-wrap:anywhere; }
code { overflow-wrap:anywhere; }
td { overflow-wrap:break-word; }
table { border-collapse:collapse; width:100%; background:#fff; }
th, td { text-align:left; padding:.45rem .6rem; border-bottom:1px solid #dde3e8; vertical-align:top; }
th { font-size:.85rem; color:var(--muted); font-weight:600; }
.table-wrap { overflow-x:auto; }
.online { color:var(--accent); font-weight:600; }
.offline, .error, .revoked { color:var(--warn); font-weight:600; }
.muted { color:var(--muted); }
.card { background:#fff; padding:1rem; border-radius:6px; margin-bottom:1rem; box-shadow:0 1px 2px #0001; }
form.login { max-width:22rem; margin:3rem auto; }
form.login label { display:block; margin:.6rem 0 .2rem; }
form.login input { width:100%; padding:.5rem; font-size:1rem; }
form.login button { margin-top:1rem; width:100%; padding:.6rem; font-size:1rem; background:var(--accent); color:#fff; border:0; border-radius:4px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:.3rem 1rem; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; min-width:0; overflow-wrap:anywhere; }
.coverage-map { width:100%; height:auto; max-height:70vh; }
.alerts li { margin:.2rem 0; }
nav.filters p { margin:.3rem 0; }
nav.filters a, .table-wrap a { display:inline-block; padding:.2rem .1rem; }
figure.trend { margin:0 0 1rem; }
figure.trend figcaption { font-size:.9rem; color:var(--muted); }
.demo, .demo-banner { color:#7a4b00; background:#fff3d6; border-radius:4px; padding:0 .3rem; }
.demo-banner { padding:.5rem .8rem; border:1px solid #e8c070; }
tr.total td { font-weight:600; }
table.cards td:first-child { min-width:10rem; overflow-wrap:normal; }
@media (max-width: 600px) {
  .js .site-nav { width:100%; }
  .js .site-nav ul:not(.open) { display:none; }
  .js .site-nav ul.open { flex-direction:column; padding-top:.3rem; }
  .js .site-nav a { padding:.6rem .2rem; }
  .name { max-width:11rem; }
  table.cards thead { display:none; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display:block; width:100%; }
  table.cards tr { background:#fff; margin-bottom:.8rem; border-radius:6px; box-shadow:0 1px 2px #0001; }
  table.cards td { text-align:right; border-bottom:1px solid #eef1f3; }
  table.cards td::before { content:attr(data-label); float:left; margin-right:1rem; text-align:left; color:var(--muted); font-size:.85rem; }
  table.cards td:not([data-label]) { text-align:left; }
}
@media print {
  header, nav, .no-print, .trend-chart { display:none; }
  body { background:#fff; font-size:10pt; }
  main { max-width:none; padding:0; }
  .card { box-shadow:none; border:1px solid #bbb; break-inside:avoid; padding:.5rem; }
  th, td { padding:2pt 4pt; }
  a { color:inherit; text-decoration:none; }
}
"#;

/// `text` as a URL path or query component: letters, digits, `-`, `_`, `.` and `/` as they
/// are, every other byte of its UTF-8 percent-encoded.
pub fn url_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A full page. `body` must already be escaped HTML.
/// A time as RFC 3339 (UTC), as every timeline shows it.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Minutes between two RFC 3339 times, if both parse.
pub fn minutes_between(from: &str, to: &str) -> Option<f64> {
    let parse =
        |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339);
    Some((parse(to).ok()? - parse(from).ok()?).as_seconds_f64() / 60.0)
}

/// A case's timeline as a definition list (`#timeline`): each step with its time ("—" until
/// reached), then each turnaround, named and measured from the first step to the step at that
/// index (the first turnaround is `#turnaround`).
pub fn timeline(steps: &[(&str, Option<String>)], turnarounds: &[(&str, usize)]) -> String {
    let mut html = String::from(r#"<dl class="facts" id="timeline">"#);
    for (step, at) in steps {
        html.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            escape(step),
            at.as_deref().map(when).unwrap_or_else(|| "—".into())
        ));
    }
    let start = steps.first().and_then(|(_, at)| at.as_deref());
    for (index, (name, to)) in turnarounds.iter().enumerate() {
        let minutes = steps
            .get(*to)
            .and_then(|(_, at)| minutes_between(start?, at.as_deref()?))
            .map(|m| format!("{m:.1} min"))
            .unwrap_or_else(|| "—".into());
        let id = if index == 0 {
            r#" id="turnaround""#
        } else {
            ""
        };
        html.push_str(&format!("<dt>{}</dt><dd{id}>{minutes}</dd>", escape(name)));
    }
    html.push_str("</dl>");
    html
}

/// A name that may be long (a slide's file name, a case number): shortened with an ellipsis in
/// tables, whole in its tooltip and on a tap (`grassroots.js`).
pub fn name(text: &str) -> String {
    let text = escape(text);
    format!(r#"<span class="name" title="{text}">{text}</span>"#)
}

/// A table's head row, in the page's language.
pub fn headings(columns: &[&'static str]) -> String {
    let cells: String = columns
        .iter()
        .map(|column| format!("<th>{}</th>", escape(crate::i18n::tr(column))))
        .collect();
    format!("<thead><tr>{cells}</tr></thead>")
}

/// An identifier or a state that must not break across lines in a table (`county-a`,
/// `needs-rescan`): browsers break words at hyphens.
pub fn word(text: &str) -> String {
    format!(r#"<span class="nowrap">{}</span>"#, escape(text))
}

/// A moment (RFC 3339) as people read it: `2026-12-01 11:26 UTC` from the server, which
/// `grassroots.js` turns into the reader's time zone and language (`2026年12月1日 19:26`,
/// `Dec 1, 2026, 7:26 PM`); anything else as it is.
pub fn when(rfc3339: &str) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|at| at.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .map(|text| {
            format!(
                r#"<time class="nowrap" datetime="{}">{}</time>"#,
                escape(rfc3339),
                escape(&text)
            )
        })
        .unwrap_or_else(|| escape(rfc3339))
}

/// Elements whose text is shown as it is: a JSON document, code, a moment already marked.
const VERBATIM_TAGS: [&str; 5] = ["pre", "code", "time", "textarea", "script"];

/// Whether the tag `<tag>` (its name and attributes) opens an element holding data that the
/// page passes must leave as it is: marked `translate="no"`, or a shortened name.
pub fn holds_data(tag: &str) -> bool {
    tag.contains(r#"translate="no""#) || tag.contains(r#"class="name""#)
}

/// Follows a page tag by tag, to tell whether its text lies inside an element whose content
/// is shown as it is; such elements may nest others, of their own kind too.
#[derive(Default)]
pub struct Verbatim {
    open: Option<(String, usize)>,
}

impl Verbatim {
    pub fn inside(&self) -> bool {
        self.open.is_some()
    }

    /// Feeds one tag (the text between `<` and `>`); `opens` says whether a tag that opens an
    /// element (its name, the whole tag) starts a verbatim region.
    pub fn tag(&mut self, tag: &str, opens: impl Fn(&str, &str) -> bool) {
        if tag.starts_with('!') {
            return;
        }
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let void = tag.ends_with('/')
            || ["br", "img", "input", "meta", "link", "hr", "source", "wbr"]
                .contains(&name.as_str());
        match &mut self.open {
            Some((open, depth)) if *open == name => {
                if closing {
                    *depth -= 1;
                    if *depth == 0 {
                        self.open = None;
                    }
                } else if !void {
                    *depth += 1;
                }
            }
            Some(_) => {}
            None => {
                if !closing && !void && opens(&name, tag) {
                    self.open = Some((name, 1));
                }
            }
        }
    }
}

/// A page's HTML with every RFC 3339 moment in its text marked as [`when`] marks it, so that
/// every page shows times one way, in the reader's language and zone, however its code wrote
/// them. Attributes, verbatim elements ([`VERBATIM_TAGS`]) and data ([`holds_data`]: a slide's
/// name with a time in it stays the name) are left alone.
pub fn moments(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut verbatim = Verbatim::default();
    let opens = |name: &str, tag: &str| VERBATIM_TAGS.contains(&name) || holds_data(tag);
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if verbatim.inside() {
            out.push_str(text);
        } else {
            mark_moments(text, &mut out);
        }
        let Some(gt) = rest[lt..].find('>') else {
            out.push_str(&rest[lt..]);
            return out;
        };
        verbatim.tag(&rest[lt + 1..lt + gt], opens);
        out.push_str(&rest[lt..=lt + gt]);
        rest = &rest[lt + gt + 1..];
    }
    if verbatim.inside() {
        out.push_str(rest);
    } else {
        mark_moments(rest, &mut out);
    }
    out
}

/// Appends `text` (escaped HTML text) to `out` with its RFC 3339 moments marked.
fn mark_moments(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut at = 0;
    while at + 16 <= bytes.len() {
        if looks_like_moment(&bytes[at..at + 16]) && (at == 0 || !bytes[at - 1].is_ascii_digit()) {
            let end = at
                + text[at..]
                    .find(|c: char| !(c.is_ascii_digit() || ":.+-TZ".contains(c)))
                    .unwrap_or(text.len() - at);
            // A sentence's full stop after a moment is not part of it.
            let candidate = text[at..end].trim_end_matches(['.', ':', '-', '+']);
            let end = at + candidate.len();
            if time::OffsetDateTime::parse(
                candidate,
                &time::format_description::well_known::Rfc3339,
            )
            .is_ok()
            {
                out.push_str(&text[copied..at]);
                out.push_str(&when(candidate));
                copied = end;
                at = end;
                continue;
            }
        }
        at += 1;
    }
    out.push_str(&text[copied..]);
}

/// `dddd-dd-ddTdd:dd`
fn looks_like_moment(b: &[u8]) -> bool {
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15];
    digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}

/// Where a page that follows something in progress says it updates itself, with a button to
/// pause (`grassroots.js` reloads it every `seconds` unless paused, hidden, or being typed in).
/// Not `<meta http-equiv="refresh">`: that cannot be paused.
pub fn live_updates(seconds: u32) -> String {
    let words =
        crate::i18n::tr("This page updates every {} s.").replace("{}", &seconds.to_string());
    format!(r#"<p class="live-updates muted" data-refresh="{seconds}">{words}</p>"#)
}

/// A whole page: the header (the node, the pages the account may open, the account), the title
/// and `body`.
pub fn page(node_title: &str, title: &str, user: Option<&Account>, body: &str) -> Html<String> {
    use crate::i18n::tr;
    let lang = crate::nav::lang();
    let path = crate::nav::current().map(|c| c.path).unwrap_or_default();
    let (nav, user_html) = match user {
        Some(account) => (
            crate::nav::render(account),
            format!(
                r#"<span class="who">{} ({})</span>{}<form method="post" action="/logout"><button type="submit">{}</button></form>"#,
                escape(&account.username),
                tr(account.role.as_str()),
                crate::i18n::switch_form(lang, &path),
                tr("Sign out"),
            ),
        ),
        None => (String::new(), String::new()),
    };
    let body = moments(&crate::i18n::own_words(body));
    Html(format!(
        r##"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {node}</title><link rel="stylesheet" href="/static/grassroots.css"><script src="/static/grassroots.js"></script></head>
<body><a class="skip" href="#main">{skip}</a><header><span class="title">Grassroots · {node}</span>{nav}{user_html}</header>
<main id="main"><h1>{title}</h1>
{body}
</main></body></html>"##,
        lang = lang.tag(),
        skip = tr("Skip to the page"),
        title = escape(&crate::i18n::tr_any(title)),
        node = escape(node_title),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_show_each_step_and_turnarounds_from_the_first() {
        assert_eq!(
            minutes_between("2026-11-26T06:00:00Z", "2026-11-26T07:30:00Z"),
            Some(90.0)
        );
        assert_eq!(minutes_between("yesterday", "2026-11-26T07:30:00Z"), None);
        let html = timeline(
            &[
                ("Referred", Some("2026-11-26T06:00:00Z".into())),
                ("Answered", Some("2026-11-26T06:45:00Z".into())),
                ("Delivered", None),
            ],
            &[("Turnaround", 1), ("To delivery", 2)],
        );
        assert!(
            html.contains(r#"<dd id="turnaround">45.0 min</dd>"#),
            "{html}"
        );
        assert!(html.contains("<dt>Delivered</dt><dd>—</dd>"), "{html}");
        assert!(html.contains("<dt>To delivery</dt><dd>—</dd>"), "{html}");
    }

    #[test]
    fn moments_in_text_are_marked_and_nowhere_else() {
        let html = r#"<td>2026-12-01T11:26:05.5Z</td><pre>2026-12-01T11:26:05Z</pre><a data-at="2026-12-01T11:26:05Z">at 2026-12-01T19:26:05+08:00.</a><td>12026-12-01T11:26:05Z 2026-13-01T11:26:05Z</td><td translate="no"><b>scan 2026-12-01T11:26:05Z</b></td>"#;
        assert_eq!(
            moments(html),
            r#"<td><time class="nowrap" datetime="2026-12-01T11:26:05.5Z">2026-12-01 11:26 UTC</time></td><pre>2026-12-01T11:26:05Z</pre><a data-at="2026-12-01T11:26:05Z">at <time class="nowrap" datetime="2026-12-01T19:26:05+08:00">2026-12-01 11:26 UTC</time>.</a><td>12026-12-01T11:26:05Z 2026-13-01T11:26:05Z</td><td translate="no"><b>scan 2026-12-01T11:26:05Z</b></td>"#
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
