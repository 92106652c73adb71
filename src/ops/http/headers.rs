//! Security headers: every response says not to sniff its type and not to
//! be framed; the status page carries a Content-Security-Policy that allows
//! exactly what it uses.
//!
//! The page (`status.html`) has two inline scripts, an inline stylesheet and
//! `style` attributes in the HTML its script writes, a `data:` favicon, and
//! fetches `progress` from its own origin. Its scripts are allowed by their
//! SHA-256 hashes (computed here from the embedded page, so an edit of the
//! page cannot forget them), not by `'unsafe-inline'`: markup that reached
//! the page some other way (an inline event handler, an injected
//! `<script>`) does not run. Nothing else is loaded, and the page cannot be
//! framed (clickjacking) nor post a form anywhere.

use std::sync::LazyLock;

use axum::http::header::{CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::Response;

/// The policy of every response but the page: nothing may be loaded.
const NOTHING: &str = "default-src 'none'; frame-ancestors 'none'";

/// The status page's policy, with its scripts' hashes.
pub(super) static PAGE_POLICY: LazyLock<String> = LazyLock::new(|| page_policy(super::STATUS_PAGE));

/// The Content-Security-Policy of `page`: its inline scripts by hash.
fn page_policy(page: &str) -> String {
    let scripts: Vec<String> = inline_scripts(page)
        .map(|script| format!("'sha256-{}'", openssl::base64::encode_block(&openssl::sha::sha256(script.as_bytes()))))
        .collect();
    format!(
        "default-src 'none'; script-src {}; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        scripts.join(" ")
    )
}

/// The text of each `<script>` element of `page` (the page's own scripts
/// carry no attributes), as the browser hashes it.
fn inline_scripts(page: &str) -> impl Iterator<Item = &str> {
    page.split("<script>").skip(1).filter_map(|after| after.split_once("</script>").map(|(script, _)| script))
}

/// Adds the headers every response carries (a response that set its own
/// policy keeps it).
pub(super) async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.entry(CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(NOTHING));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_policy_names_each_inline_script_by_hash_and_allows_no_inline_script() {
        let policy = page_policy(super::super::STATUS_PAGE);
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        assert_eq!(super::super::STATUS_PAGE.matches("<script").count(), 2, "a script with attributes?");
        let scripts = policy.split(';').find(|d| d.trim().starts_with("script-src")).unwrap_or_default();
        assert!(!scripts.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'") && policy.contains("connect-src 'self'"), "{policy}");
    }

    #[test]
    fn a_script_hash_is_the_base64_sha256_of_its_text() {
        // `echo -n "alert(1)" | openssl dgst -sha256 -binary | base64`
        let policy = page_policy("<p><script>alert(1)</script>");
        assert!(policy.contains("'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"), "{policy}");
    }
}
