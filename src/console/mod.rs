//! The token console's own parts, below the admin plane that serves them:
//! the page's files, embedded at compile time (`assets`), the sign-in
//! sessions kept in memory (`session`), and here the names and checks a
//! browser request meets: the cookie, the CSRF header, the same-origin
//! check and the security headers of every console answer.
//!
//! It never authenticates or decides what a caller may do (`admin` does,
//! through the same `Caller` as a bearer), never reads the store, and never
//! holds a key or token value: a session keeps what the credential
//! resolved to, and a manager token only by its hash.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use thiserror::Error;

pub mod assets;
pub mod session;

pub use session::{SessionError, SessionView, Sessions, SignedIn};

/// Where the console is served on the admin listener.
pub const PATH: &str = "/console/";

/// The session cookie over TLS. `__Host-` makes the browser insist on
/// `Secure`, `Path=/` and no `Domain`, which is why it is only used when
/// the admin listener speaks TLS.
pub const COOKIE_TLS: &str = "__Host-hawzu_console";
/// The session cookie over plain HTTP (loopback, a port-forward).
pub const COOKIE_PLAIN: &str = "hawzu_console";

/// The header a console request carries its session's CSRF token in. A
/// session cookie is a credential of the admin API only with it.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-hawzu-csrf");

/// The Content-Security-Policy of every console answer: only the gate's
/// own files, no inline script or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The cookie name for a listener with or without TLS.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls { COOKIE_TLS } else { COOKIE_PLAIN }
}

/// `Set-Cookie` for a new session: `HttpOnly`, `SameSite=Strict`, `Path=/`,
/// `Secure` over TLS, and no longer than the session may live.
pub fn set_cookie(tls: bool, value: &str, max_age_secs: u64) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}",
        cookie_name(tls)
    ))
    .ok()
}

/// `Set-Cookie` that removes the session cookie (sign-out).
pub fn clear_cookie(tls: bool) -> HeaderValue {
    let v = if tls {
        "__Host-hawzu_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
    } else {
        "hawzu_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    };
    HeaderValue::from_static(v)
}

/// The session cookie of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCookie<'a> {
    None,
    One(&'a str),
    /// The cookie is there more than once: ambiguous, refused.
    Several,
}

/// Finds cookie `name` in every `Cookie` header of `headers`.
pub fn session_cookie<'h>(headers: &'h HeaderMap, name: &str) -> SessionCookie<'h> {
    let mut found = SessionCookie::None;
    let pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'));
    for pair in pairs {
        let Some((k, v)) = pair.trim().split_once('=') else {
            continue;
        };
        if k.trim() != name {
            continue;
        }
        found = match found {
            SessionCookie::None => SessionCookie::One(v.trim()),
            _ => return SessionCookie::Several,
        };
    }
    found
}

/// Why a browser request was refused as cross-site.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CrossSite {
    #[error("the browser says the request came from another site (Sec-Fetch-Site: {0})")]
    FetchSite(String),
    #[error("a change with the console's session needs an Origin header")]
    NoOrigin,
    #[error("the request's Origin is not this console's origin")]
    ForeignOrigin,
    #[error(
        "over plain HTTP the console takes a sign-in or a change only at an address or localhost, not at `{0}` (a name another site could point at this gate): open it at the address, or set tls.admin"
    )]
    NamedHost(String),
}

/// The Host a browser's request names when it must be refused as a
/// possible DNS rebinding: over plain HTTP, a request that carries
/// `Origin` or `Sec-Fetch-Site` (a browser sends one on every fetch) to a
/// DNS name other than `localhost`. A page whose name was pointed at this
/// gate is same-origin with it: it could send credentials and read the
/// answers. The CLI sends neither header, and may name the gate as it
/// likes.
pub fn rebound_host(headers: &HeaderMap, uri: &Uri, tls: bool) -> Option<String> {
    if tls || !(headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")) {
        return None;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    (!address_or_localhost(host)).then(|| host.chars().take(64).collect())
}

/// Whether `host` (a Host header: name or address, and a port) is an IP
/// address or `localhost`: what a plain-HTTP console is reached at
/// (loopback, a port-forward). A DNS name could be rebound by another
/// site to this gate, making its pages same-origin with the console.
fn address_or_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[v6]:port`, `v4:port`, `name:port`; a bare v6 has several `:`.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Whether a request that rides on the console's cookie came from the
/// console's own pages: a `Sec-Fetch-Site` other than `same-origin` is
/// refused, and a change (any method but GET) must carry an `Origin`
/// equal to this listener's (`http(s)://` + the Host it was sent to) —
/// over plain HTTP, a Host that is an address or `localhost`.
pub fn same_origin(
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    tls: bool,
) -> Result<(), CrossSite> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(CrossSite::FetchSite(
            String::from_utf8_lossy(site.as_bytes())
                .chars()
                .take(32)
                .collect(),
        ));
    }
    if method == Method::GET {
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN).ok_or(CrossSite::NoOrigin)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .ok_or(CrossSite::ForeignOrigin)?;
    if !tls && !address_or_localhost(host) {
        return Err(CrossSite::NamedHost(host.chars().take(64).collect()));
    }
    let scheme = if tls { "https://" } else { "http://" };
    let origin = origin.as_bytes();
    if origin.len() == scheme.len() + host.len()
        && origin.starts_with(scheme.as_bytes())
        && origin[scheme.len()..].eq_ignore_ascii_case(host.as_bytes())
    {
        Ok(())
    } else {
        Err(CrossSite::ForeignOrigin)
    }
}

/// The headers of every console answer: the CSP, no sniffing, no referrer,
/// no framing, and no caching (an answer may name tokens).
pub fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_console_is_reached_at_an_address_or_localhost_only() {
        for host in [
            "127.0.0.1:9091",
            "127.0.0.1",
            "[::1]:9091",
            "[::1]",
            "::1",
            "LOCALHOST:9091",
            "10.0.0.7:9091",
        ] {
            assert!(address_or_localhost(host), "{host}");
        }
        for host in [
            "rebound.example:9091",
            "127.0.0.1.nip.io:9091",
            "localhost.example",
            "gate:9091",
            "",
        ] {
            assert!(!address_or_localhost(host), "{host}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_once_and_refused_twice() {
        let h = headers(&[("cookie", "a=1; hawzu_console=abc ; b=2")]);
        assert_eq!(session_cookie(&h, COOKIE_PLAIN), SessionCookie::One("abc"));
        let h = headers(&[("cookie", "hawzu_console=a"), ("cookie", "hawzu_console=b")]);
        assert_eq!(session_cookie(&h, COOKIE_PLAIN), SessionCookie::Several);
        let h = headers(&[("cookie", "xhawzu_console=a")]);
        assert_eq!(session_cookie(&h, COOKIE_PLAIN), SessionCookie::None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let c = set_cookie(true, "v", 60).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.starts_with("__Host-hawzu_console=v; Path=/; HttpOnly; SameSite=Strict"));
        assert!(c.ends_with("; Secure"), "{c}");
        let c = set_cookie(false, "v", 60).unwrap();
        assert!(!c.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn changes_need_the_listeners_own_origin() {
        let uri: Uri = "/admin/v1/tokens".parse().unwrap();
        let post = Method::POST;
        let ok = headers(&[
            ("host", "127.0.0.1:9091"),
            ("origin", "http://127.0.0.1:9091"),
        ]);
        assert_eq!(same_origin(&ok, &post, &uri, false), Ok(()));
        assert_eq!(
            same_origin(&ok, &post, &uri, true),
            Err(CrossSite::ForeignOrigin)
        );
        let foreign = headers(&[
            ("host", "127.0.0.1:9091"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(
            same_origin(&foreign, &post, &uri, false),
            Err(CrossSite::ForeignOrigin)
        );
        let none = headers(&[("host", "127.0.0.1:9091")]);
        assert_eq!(
            same_origin(&none, &post, &uri, false),
            Err(CrossSite::NoOrigin)
        );
        assert_eq!(same_origin(&none, &Method::GET, &uri, false), Ok(()));
        let site = headers(&[
            ("host", "127.0.0.1:9091"),
            ("origin", "http://127.0.0.1:9091"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(matches!(
            same_origin(&site, &Method::GET, &uri, false),
            Err(CrossSite::FetchSite(_))
        ));
    }
}
