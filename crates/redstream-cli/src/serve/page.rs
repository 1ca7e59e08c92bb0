//! `GET /`: the dashboard page, one HTML document with its style and script inlined.
//!
//! The three files under `assets/` are embedded in the binary (`include_str!`); nothing is
//! fetched from the internet and there is no build step. The page is sent with a Content
//! Security Policy that allows exactly the embedded style and script (by their SHA-256), the
//! page's own origin for `fetch` and the WebSocket, and nothing else: no other script, frame,
//! form target or image source.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

const HTML: &str = include_str!("../../assets/dashboard.html");
const CSS: &str = include_str!("../../assets/dashboard.css");
const JS: &str = include_str!("../../assets/dashboard.js");

/// Where `dashboard.html` takes the style and the script.
const CSS_SLOT: &str = "/* dashboard.css */";
const JS_SLOT: &str = "/* dashboard.js */";

struct Page {
    html: String,
    csp: Option<HeaderValue>,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = HTML.replacen(CSS_SLOT, CSS, 1).replacen(JS_SLOT, JS, 1);
    let hash = |text: &str| STANDARD.encode(Sha256::digest(text.as_bytes()));
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        hash(JS),
        hash(CSS)
    );
    Page {
        html,
        csp: HeaderValue::from_str(&csp).ok(),
    }
});

pub(crate) async fn index() -> Response {
    let page = &*PAGE;
    let mut response = Html(page.html.as_str()).into_response();
    if let Some(csp) = &page.csp {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_its_style_and_script_once() {
        assert_eq!(HTML.matches(CSS_SLOT).count(), 1);
        assert_eq!(HTML.matches(JS_SLOT).count(), 1);
        assert!(PAGE.html.contains(CSS) && PAGE.html.contains(JS));
        assert!(!JS.contains("</script") && !CSS.contains("</style"));
        assert!(PAGE.csp.is_some());
        // Nothing from elsewhere (the SVG namespace is a name, not a download).
        for text in [HTML, CSS, JS] {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("//cdn") && !text.contains("@import"));
        }
    }
}
