//! Sharding, as Flux does it: several controller instances each watch the Environments,
//! DeployRequests and Rollbacks that a label selector (`--watch-label-selector`) matches. The
//! selector filters the watches on the API server; in addition a request is acted on only by the
//! shard owning the Environment it names, so a request labelled for another shard than its
//! Environment waits instead of being deployed by a shard that does not own that host.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

/// The objects this instance reconciles: all of them, or those a label selector matches.
#[derive(Clone, Debug, Default)]
pub struct Shard {
    /// The selector as given (sent to the API server with every list and watch).
    text: Option<String>,
    selector: Selector,
}

impl Shard {
    /// Parses a label selector in the API server's syntax (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
    /// `k in (a,b)`, `k notin (a,b)`, joined by commas). Empty means every object.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Shard::default());
        }
        let expressions = split_requirements(text)?.into_iter().map(requirement).collect::<Result<Vec<_>, _>>()?;
        Ok(Shard { text: Some(text.to_owned()), selector: expressions.into_iter().collect() })
    }

    /// The selector for list and watch calls; `None` for every object.
    pub fn label_selector(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// Does this shard own an object with these labels?
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        self.text.is_none() || self.selector.matches(labels)
    }
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in label selector {text:?}"));
        }
    }
    out.push(text[start..].trim());
    if depth != 0 || out.iter().any(|r| r.is_empty()) {
        return Err(format!("invalid label selector {text:?}"));
    }
    Ok(out)
}

fn requirement(r: &str) -> Result<Expression, String> {
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        let valid = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            && k.matches('/').count() <= 1;
        if valid { Ok(k.to_owned()) } else { Err(format!("invalid label key {k:?} in selector")) }
    };
    let value = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            Ok(v.to_owned())
        } else {
            Err(format!("invalid label value {v:?} in selector"))
        }
    };
    let set = |s: &str| -> Result<BTreeSet<String>, String> {
        let inner = s
            .trim()
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or(format!("expected (values) in {r:?}"))?;
        inner.split(',').map(value).collect()
    };
    if let Some(k) = r.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key(k)?));
    }
    if let Some((k, v)) = r.split_once("!=") {
        return Ok(Expression::NotEqual(key(k)?, value(v)?));
    }
    if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
        return Ok(Expression::Equal(key(k)?, value(v)?));
    }
    let words: Vec<&str> = r.splitn(2, char::is_whitespace).collect();
    if let [k, rest] = words[..] {
        let rest = rest.trim_start();
        if let Some(values) = rest.strip_prefix("notin") {
            return Ok(Expression::NotIn(key(k)?, set(values)?));
        }
        if let Some(values) = rest.strip_prefix("in") {
            return Ok(Expression::In(key(k)?, set(values)?));
        }
        return Err(format!("invalid requirement {r:?} in label selector"));
    }
    Ok(Expression::Exists(key(r)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_match_as_the_api_server_does() {
        let a = labels(&[("slipway.dev/shard", "a"), ("tier", "prod")]);
        let b = labels(&[("slipway.dev/shard", "b")]);
        let none = labels(&[]);
        // selector, owns a, owns b, owns none
        let cases = [
            ("", true, true, true),
            ("slipway.dev/shard=a", true, false, false),
            ("slipway.dev/shard==a", true, false, false),
            ("slipway.dev/shard!=a", false, true, true),
            ("slipway.dev/shard in (a, c)", true, false, false),
            ("slipway.dev/shard notin (a,c)", false, true, true),
            ("slipway.dev/shard", true, true, false),
            ("!slipway.dev/shard", false, false, true),
            ("slipway.dev/shard in (a,b),tier=prod", true, false, false),
            ("slipway.dev/shard in (a,b), !tier", false, true, false),
        ];
        for (selector, want_a, want_b, want_none) in cases {
            let shard = Shard::parse(selector).unwrap();
            assert_eq!(
                (shard.owns(&a), shard.owns(&b), shard.owns(&none)),
                (want_a, want_b, want_none),
                "{selector:?}"
            );
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in ["a=b,", "(a", "a in b", "a in (b", "a=b c", "k=(v)", "a b c", ",", "a/b/c=d"] {
            assert!(Shard::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
