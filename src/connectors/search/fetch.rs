//! Reads the pages of the top hits (`fetch_top`) for the model, through a guard against
//! server-side request forgery: a search result (or a redirect it answers with) must not
//! make palaver read an address on its own network. Only http(s); every address a name
//! resolves to, on the first request and on every redirect, must be public unless
//! `allow_private` (or the name is in `allow_hosts`); bodies are capped and time-bounded.

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Most bytes read of a page.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Most characters of a page's text the model reads.
const MAX_PAGE_CHARS: usize = 4_000;
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub allow_private: bool,
    /// Names allowed even though they resolve to private addresses (lower case).
    pub allow_hosts: Vec<String>,
}

impl Guard {
    fn host_allowed(&self, host: &str) -> bool {
        self.allow_private || self.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether palaver may ask `url`: its scheme, and its address when the host is one.
    /// Names are checked when they resolve (`Resolve` below).
    fn check(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("only http and https pages are read, not `{}:`", url.scheme()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("the address has no host".to_owned()),
        };
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(format!("{ip} is a private address"))
        }
    }
}

/// Whether `ip` is on the public internet (not loopback, private, link-local, shared,
/// documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves names, then drops the addresses the guard refuses.
struct GuardedResolver(Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = guard.host_allowed(&host);
            let addrs: Vec<SocketAddr> = resolved.into_iter().filter(|a| allowed || is_public(a.ip())).collect();
            if addrs.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("`{host}` resolves only to private addresses").into();
                return Err(refused);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct PageFetcher {
    http: reqwest::Client,
    guard: Guard,
}

impl PageFetcher {
    pub fn new(guard: Guard, timeout: Duration) -> anyhow::Result<Self> {
        let redirects = guard.clone();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error("too many redirects");
                }
                match redirects.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }))
            .user_agent(concat!("palaver/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(PageFetcher { http, guard })
    }

    /// The text of each page (in order; `None` where it could not be read), read at once.
    pub async fn read_all<'a>(&self, urls: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<String>> {
        let reads = urls.map(|url| async move {
            let url = url?;
            match self.read(url).await {
                Ok(text) => Some(text),
                Err(error) => {
                    tracing::info!(%error, "a search hit's page was not read");
                    None
                }
            }
        });
        futures::future::join_all(reads).await
    }

    /// The main text of one page, trimmed to `MAX_PAGE_CHARS`.
    pub async fn read(&self, url: &str) -> Result<String, String> {
        let url = Url::parse(url).map_err(|e| format!("not an address: {e}"))?;
        self.guard.check(&url)?;
        let response = self.http.get(url).send().await.map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("the page answered {}", response.status()));
        }
        let html = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|t| t.contains("html"));
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| e.without_url().to_string())?;
            let room = MAX_PAGE_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_PAGE_BYTES {
                break;
            }
        }
        let body = String::from_utf8_lossy(&body);
        let text = if html { html_text(&body) } else { collapse_whitespace(&body) };
        Ok(text.chars().take(MAX_PAGE_CHARS).collect())
    }
}

/// The readable text of an HTML page: tags, scripts, styles and comments dropped, common
/// entities decoded, whitespace collapsed.
pub fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        rest = &rest[open..];
        let lower: String = rest.chars().take(9).collect::<String>().to_ascii_lowercase();
        let skip_to = if lower.starts_with("<!--") {
            Some("-->")
        } else if lower.starts_with("<script") {
            Some("</script")
        } else if lower.starts_with("<style") {
            Some("</style")
        } else if lower.starts_with("<noscript") {
            Some("</noscript")
        } else {
            None
        };
        if let Some(end) = skip_to {
            match find_ignore_case(rest, end) {
                Some(at) => rest = &rest[at + end.len()..],
                None => return collapse_whitespace(&decode_entities(&text)),
            }
        }
        match rest.find('>') {
            Some(close) => rest = &rest[close + 1..],
            None => rest = "",
        }
    }
    text.push_str(rest);
    collapse_whitespace(&decode_entities(&text))
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().find(needle)
}

fn decode_entities(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn only_http_pages_on_public_or_allowed_addresses_are_asked() {
        let guard = Guard::default();
        assert!(guard.check(&Url::parse("http://93.184.216.34/").unwrap()).is_ok());
        assert!(guard.check(&Url::parse("http://example.com/").unwrap()).is_ok(), "names are checked when resolved");
        assert!(guard.check(&Url::parse("http://127.0.0.1:8000/").unwrap()).is_err());
        assert!(guard.check(&Url::parse("http://[::1]/").unwrap()).is_err());
        assert!(guard.check(&Url::parse("file:///etc/passwd").unwrap()).is_err());
        let open = Guard { allow_private: true, ..Guard::default() };
        assert!(open.check(&Url::parse("http://127.0.0.1:8000/").unwrap()).is_ok());
    }

    #[test]
    fn a_page_reads_as_its_text_without_scripts_styles_or_tags() {
        let html = "<html><head><style>p{}</style><script>alert('x')</script></head>\
                    <body><!-- note --><h1>Title</h1><p>Fish &amp; chips</p>\n\n<p>done</p></body></html>";
        assert_eq!(html_text(html), "Title Fish & chips done");
    }
}
