//! The header's navigation: the pages the signed-in account may open, the current one marked.
//!
//! Each node declares its pages once ([`NavItem`]), with the same role lists its router guards
//! them with, so that nobody is shown a link that answers 403 (`tests/ui.rs` opens every
//! link for every role). The router installs [`scope`] as a layer: it keeps the node's pages and
//! the request's path for the request's task, and [`crate::pages::page`] reads them there, so
//! that the twenty-odd handlers that render a page need not carry both through their signatures.

use std::cell::Cell;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::accounts::{Account, StaffRole};
use crate::i18n::{tr, Lang, LANG_COOKIE};
use crate::pages::escape;

/// A page in the header.
#[derive(Debug, Clone, Copy)]
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    /// Who may open it: the role list its route is guarded with.
    pub roles: &'static [StaffRole],
    /// Refused to an account limited to regions (pages about the whole network).
    pub whole_network: bool,
}

impl NavItem {
    /// A page any account of `roles` may open.
    pub const fn new(href: &'static str, label: &'static str, roles: &'static [StaffRole]) -> Self {
        Self {
            href,
            label,
            roles,
            whole_network: false,
        }
    }

    /// A page about the whole network: refused to accounts limited to regions.
    pub const fn whole_network(self) -> Self {
        Self {
            whole_network: true,
            ..self
        }
    }

    /// The first page of `nav` that `account` may open: where signing in without a page in
    /// mind leads.
    pub fn home<'a>(nav: &'a [NavItem], account: &Account) -> Option<&'a NavItem> {
        nav.iter().find(|item| item.admits(account))
    }

    /// Whether `account` may open this page.
    pub fn admits(&self, account: &Account) -> bool {
        let limited = !account.regions.is_empty();
        self.roles.contains(&account.role) && (!self.whole_network || !limited)
    }

    /// Whether the page at `path` is this one or one of its own (`/referrals/abc` is under
    /// "Referrals").
    fn holds(&self, path: &str) -> bool {
        match self.href {
            "/" => path == "/",
            href => {
                path == href
                    || path
                        .strip_prefix(href)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

/// What a page needs to know about the request it answers.
#[derive(Debug, Clone)]
pub struct PageContext {
    pub nav: &'static [NavItem],
    pub path: String,
    /// The page's language: the browser's, until the signed-in account's choice is known.
    pub lang: Cell<Lang>,
}

tokio::task_local! {
    static CONTEXT: PageContext;
}

/// Middleware: the node's pages, the request's path and its language (the language cookie, else
/// the browser's), for [`current`] while the request runs.
pub async fn scope(
    State(nav): State<&'static [NavItem]>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let chosen = crate::auth::cookie(headers, LANG_COOKIE).and_then(|code| Lang::parse(&code));
    let browser = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .and_then(Lang::from_accept_language);
    let context = PageContext {
        nav,
        path: request.uri().path().to_string(),
        lang: Cell::new(chosen.or(browser).unwrap_or_default()),
    };
    let (mut response, lang) = CONTEXT
        .scope(context, async {
            let response = next.run(request).await;
            (response, lang())
        })
        .await;
    // For the layers outside the scope (`openapi::json_errors` puts refusals in this language).
    response.extensions_mut().insert(lang);
    response
}

/// The context of the request being answered, if the router installed [`scope`].
pub fn current() -> Option<PageContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// The language of the request being answered (English outside a request).
pub fn lang() -> Lang {
    CONTEXT.try_with(|c| c.lang.get()).unwrap_or_default()
}

/// Runs `f` as if answering a request in `lang` (for tests of translated output).
#[cfg(test)]
pub(crate) fn with_lang_for_test<T>(lang: Lang, f: impl FnOnce() -> T) -> T {
    let context = PageContext {
        nav: &[],
        path: "/".into(),
        lang: Cell::new(lang),
    };
    CONTEXT.sync_scope(context, f)
}

/// The signed-in account chose a language: it wins over the browser's for this request.
pub fn prefer(lang: Option<Lang>) {
    if let Some(lang) = lang {
        let _ = CONTEXT.try_with(|c| c.lang.set(lang));
    }
}

/// The header's navigation for `account`: the pages it may open, the current one marked
/// (`aria-current`). On a narrow screen the list folds behind a "Menu" button (grassroots.js).
pub fn render(account: &Account) -> String {
    let Some(context) = current() else {
        return String::new();
    };
    let current = context
        .nav
        .iter()
        .filter(|item| item.holds(&context.path))
        .max_by_key(|item| item.href.len())
        .map(|item| item.href);
    let links: String = context
        .nav
        .iter()
        .filter(|item| item.admits(account))
        .map(|item| {
            let marked = if Some(item.href) == current {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(
                r#"<li><a href="{}"{marked}>{}</a></li>"#,
                escape(item.href),
                escape(tr(item.label))
            )
        })
        .collect();
    if links.is_empty() {
        return String::new();
    }
    format!(
        r#"<nav class="site-nav" aria-label="{pages}"><button type="button" class="menu-toggle" aria-expanded="false" aria-controls="site-nav-list" hidden>{menu}</button><ul id="site-nav-list">{links}</ul></nav>"#,
        pages = tr("Pages"),
        menu = tr("Menu"),
    )
}
