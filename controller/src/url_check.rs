//! `http.url` health checks: a URL users reach (the public address behind the reverse proxy),
//! fetched from the controller itself rather than through the SSH forward. Only URLs on the
//! allow-list the controller was started with (`--http-url-allow`, chart value `httpUrlAllow`)
//! are fetched, so an Environment cannot make the controller probe cluster-internal addresses.
//! Redirects are never followed, and a response body never leaves this module: only the status
//! code and whether the body held what was expected.

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use slipway_crds::Environment;
use slipway_crds::conditions::reasons;

use crate::references::Problem;

/// How long one fetch may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Most body bytes read (to judge `expectJson`).
const BODY_CAP: usize = 64 * 1024;
/// The flag and the chart value that fill the allow-list, as messages name them.
pub const FLAG: &str = "--http-url-allow";
pub const CHART_VALUE: &str = "httpUrlAllow";

/// One allow-list entry: a URL prefix. A URL matches when its scheme, host and port are the
/// entry's and its path starts with the entry's path at a `/` boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

/// The allow-list and the HTTP client that fetches allowed URLs.
#[derive(Clone)]
pub struct UrlChecker {
    allow: Vec<Prefix>,
    client: reqwest::Client,
}

/// One declared `http.url` check of an Environment.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlCheck {
    pub name: String,
    pub url: String,
    pub expect_status: Option<u16>,
    pub expect_json: Option<Value>,
}

impl Default for UrlChecker {
    fn default() -> Self {
        UrlChecker::new(&[]).expect("an empty allow-list is valid")
    }
}

impl UrlChecker {
    /// The checker for `allow` (URL prefixes such as `https://shop.example.com/`); the error
    /// names an entry that is not an absolute http(s) URL without user or password.
    pub fn new(allow: &[String]) -> Result<UrlChecker, String> {
        let allow =
            allow.iter().filter(|a| !a.trim().is_empty()).map(|a| prefix(a.trim())).collect::<Result<_, _>>()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .user_agent("slipway-health-check")
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(UrlChecker { allow, client })
    }

    /// Is `url` on the allow-list (and of the shape the schema admits)?
    pub fn allowed(&self, url: &str) -> bool {
        if crate::remote::validate::field(&slipway_crds::patterns::CHECK_URL, "http.url", url).is_err() {
            return false;
        }
        let Ok(u) = Url::parse(url) else { return false };
        let Ok(p) = prefix(url) else { return false };
        u.username().is_empty()
            && u.password().is_none()
            && self.allow.iter().any(|a| {
                a.scheme == p.scheme
                    && a.host == p.host
                    && a.port == p.port
                    && (p.path == a.path
                        || (p.path.starts_with(&a.path)
                            && (a.path.ends_with('/') || p.path[a.path.len()..].starts_with('/'))))
            })
    }

    /// GET `check.url` once and judge the answer. The message quotes the status code, never
    /// the body.
    pub async fn run(&self, check: &UrlCheck) -> Result<String, String> {
        if !self.allowed(&check.url) {
            return Err(not_allowed_note(&check.url));
        }
        let url = &check.url;
        let resp = self.client.get(url).send().await.map_err(|e| format!("GET {url} failed: {}", describe(&e)))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        if check.expect_json.is_some() {
            let mut resp = resp;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("GET {url} returned {status}, reading its body failed: {}", describe(&e)))?
            {
                body.extend_from_slice(&chunk);
                if body.len() >= BODY_CAP {
                    body.truncate(BODY_CAP);
                    break;
                }
            }
        }
        judge(url, status, &body, check.expect_status, check.expect_json.as_ref())
    }
}

/// The reqwest error without its source chain's addresses repeated; never a body.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", TIMEOUT.as_secs());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Judges an answer: the status code (`expect_status`, default any 2xx; a redirect is never
/// followed) and, when given, whether the body is JSON containing `expect_json`. The body itself
/// is never quoted.
pub fn judge(
    url: &str,
    status: u16,
    body: &[u8],
    expect_status: Option<u16>,
    expect_json: Option<&Value>,
) -> Result<String, String> {
    let status_ok = match expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let want = expect_status.map(|s| s.to_string()).unwrap_or_else(|| "2xx".to_owned());
        let redirect = if (300..400).contains(&status) { "; redirects are not followed" } else { "" };
        return Err(format!("GET {url} returned {status} (expected {want}{redirect})"));
    }
    if let Some(expected) = expect_json {
        let Ok(actual) = serde_json::from_slice::<Value>(body) else {
            return Err(format!("GET {url} returned {status} with a body that is not JSON (expectJson)"));
        };
        if !crate::remote::health::json_subset(expected, &actual) {
            return Err(format!(
                "GET {url} returned {status} with a body that does not contain {expected} (expectJson)"
            ));
        }
        return Ok(format!("GET {url} returned {status} with the expected JSON"));
    }
    Ok(format!("GET {url} returned {status}"))
}

fn prefix(text: &str) -> Result<Prefix, String> {
    let bad = |why: &str| {
        format!("{FLAG} {text:?}: {why}; give an http:// or https:// URL prefix such as https://shop.example.com/")
    };
    let u = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("not http or https"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("it holds a user or password"));
    }
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    Ok(Prefix {
        scheme: u.scheme().to_owned(),
        host: host.to_ascii_lowercase(),
        port: u.port_or_known_default(),
        path: u.path().to_owned(),
    })
}

fn not_allowed_note(url: &str) -> String {
    format!(
        "{url} is not on the controller's allow-list for http.url checks (start it with {FLAG}=<URL prefix>, \
         chart value {CHART_VALUE})"
    )
}

/// The Environment's `http.url` checks.
pub fn declared(env: &Environment) -> Vec<UrlCheck> {
    env.spec
        .health
        .checks
        .iter()
        .filter_map(|c| {
            let h = c.http.as_ref()?;
            Some(UrlCheck {
                name: c.name.clone(),
                url: h.url.clone()?,
                expect_status: h.expect_status.and_then(|s| u16::try_from(s).ok()),
                expect_json: h.expect_json.as_ref().map(|m| serde_json::to_value(m).unwrap_or_default()),
            })
        })
        .collect()
}

/// Refuses an Environment with an `http.url` check outside the allow-list, before anything on
/// its host changes: the message names the Environment, each check and URL, and the fix.
pub fn gate(env: &Environment, checker: &UrlChecker) -> Result<(), Problem> {
    let refused: Vec<String> = declared(env)
        .iter()
        .filter(|c| !checker.allowed(&c.url))
        .map(|c| format!("check {} fetches {}", c.name, c.url))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(Problem {
        reason: reasons::URL_NOT_ALLOWED,
        message: format!(
            "Environment {:?}: {}, which the controller's allow-list for http.url checks does not hold: add a \
             matching URL prefix to the controller's {FLAG} flag (chart value {CHART_VALUE}), or remove the check; \
             nothing on the host was changed",
            kube::ResourceExt::name_any(env),
            refused.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checker(allow: &[&str]) -> UrlChecker {
        UrlChecker::new(&allow.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_allow_list_matches_origin_and_path_prefix() {
        let c = checker(&["https://shop.example.com/", "http://127.0.0.1:18080/api"]);
        for ok in [
            "https://shop.example.com/",
            "https://shop.example.com",
            "https://SHOP.example.com/health?x=1",
            "https://shop.example.com:443/health",
            "http://127.0.0.1:18080/api",
            "http://127.0.0.1:18080/api/health",
            "http://127.0.0.1:18080/api?x=1",
        ] {
            assert!(c.allowed(ok), "{ok}");
        }
        for refused in [
            "http://shop.example.com/",
            "https://shop.example.com.evil.com/",
            "https://shop.example.com:8443/",
            "https://evil.com/https://shop.example.com/",
            "https://user:pw@shop.example.com/",
            "http://127.0.0.1:18080/apix",
            "http://127.0.0.1:18080/",
            "http://127.0.0.1:18081/api",
            "http://10.0.0.1/",
            "not a url",
        ] {
            assert!(!c.allowed(refused), "{refused}");
        }
        assert!(!UrlChecker::default().allowed("https://shop.example.com/"), "an empty list allows nothing");
    }

    #[test]
    fn bad_entries_are_refused_at_startup() {
        for bad in ["shop.example.com", "ftp://x/", "https://u:p@x/"] {
            let e = UrlChecker::new(&[bad.to_owned()]).err().unwrap();
            assert!(e.contains("--http-url-allow") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn answers_are_judged_without_quoting_the_body() {
        let exp = json!({"status": "healthy"});
        let url = "https://shop.example.com/health";
        assert!(judge(url, 200, br#"{"status":"healthy"}"#, None, Some(&exp)).is_ok());
        let secret_body = br#"{"status":"degraded","token":"s3cr3t"}"#;
        for (status, body, want) in [(200, &secret_body[..], "does not contain"), (503, &secret_body[..], "503")] {
            let e = judge(url, status, body, None, Some(&exp)).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("s3cr3t") && !e.contains("degraded"), "the body leaked: {e}");
        }
        let e = judge(url, 200, b"<html>s3cr3t</html>", None, Some(&exp)).unwrap_err();
        assert!(e.contains("not JSON") && !e.contains("s3cr3t"), "{e}");
        let e = judge(url, 302, b"", None, None).unwrap_err();
        assert!(e.contains("redirects are not followed"), "{e}");
        assert!(judge(url, 302, b"", Some(302), None).is_ok());
    }

    #[test]
    fn the_gate_names_the_environment_the_url_and_the_fix() {
        let env: Environment = serde_json::from_value(json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "prod", "namespace": "team"},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "s", "key": "id"},
                "knownHostsSecretRef": {"name": "s", "key": "known_hosts"},
                "health": {"checks": [
                    {"name": "backend", "http": {"service": "backend", "port": 8000}},
                    {"name": "public", "http": {"url": "http://169.254.169.254/latest/meta-data/"}}
                ]}
            }
        }))
        .unwrap();
        let p = gate(&env, &checker(&["https://shop.example.com/"])).unwrap_err();
        assert_eq!(p.reason, reasons::URL_NOT_ALLOWED);
        for part in ["\"prod\"", "check public fetches http://169.254.169.254/latest/meta-data/", FLAG, CHART_VALUE] {
            assert!(p.message.contains(part), "{part}: {}", p.message);
        }
        assert!(gate(&env, &checker(&["http://169.254.169.254/latest/"])).is_ok());
        assert_eq!(declared(&env).len(), 1);
    }
}
