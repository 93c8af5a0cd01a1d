//! The playbook's quality standards as Preflight gates, judged on the files of the requested
//! commit (read from git on the host, before anything there changes). Pure: [`judge`] decides
//! from the files and the Environment's rules; preflight reads the files and acts.
//!
//! A finding never quotes a value from the compose file, only where it is (file, line, service)
//! and which key: the value may be the secret the gate is about.

use std::collections::BTreeSet;

use serde_json::Value;
use slipway_crds::QualityGate;

use crate::remote::{ONE_SHOT_LABEL, compose_label, parse_env_example};

/// What the gates read of a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionFiles {
    /// Each compose file the Environment names: its path (relative to the checkout) and text.
    /// A file absent at the commit is left out (compose itself then says so).
    pub compose: Vec<(String, String)>,
    /// `.env.example` at the checkout's root, when the revision has one.
    pub env_example: Option<String>,
    /// `.env` files tracked at the commit (the root's, and next to each compose file).
    pub env_tracked: Vec<String>,
    /// Migration files the release adds over the running release (`None`: no release runs).
    pub added_migrations: Option<Vec<String>>,
}

/// What the gates ask of the Environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `policy.production`, or a `production` tier.
    pub production: bool,
    /// `host.path`: a bind mount below it mounts the checkout.
    pub checkout: String,
    /// `migrations.service`, when migrations are declared.
    pub migration_service: Option<String>,
    /// `migrations.downgrade` is declared.
    pub downgrade_declared: bool,
}

/// One thing a gate found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub gate: QualityGate,
    pub file: String,
    /// 1-based; `None` for a finding about a whole file.
    pub line: Option<usize>,
    pub service: Option<String>,
    /// What is wrong and how to fix it; never a value from the file.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.gate, self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(service) = &self.service {
            write!(f, " service {service}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Every gate over `files`, in the order of [`QualityGate::ALL`].
pub fn judge(files: &RevisionFiles, rules: &Rules) -> Vec<Finding> {
    let mut out = Vec::new();
    let parsed: Vec<(&str, &str, Value)> =
        files.compose.iter().filter_map(|(path, text)| Some((path.as_str(), text.as_str(), parse(text)?))).collect();
    for (path, text, doc) in &parsed {
        out.extend(secrets_in_compose(path, text, doc));
    }
    for path in &files.env_tracked {
        out.push(Finding {
            gate: QualityGate::EnvFileCommitted,
            file: path.clone(),
            line: None,
            service: None,
            what: "is tracked in git at this commit: remove it from the repository (git rm --cached), list it \
                   in .gitignore and rotate the secrets it held; the Environment's envSecretRef renders it"
                .to_owned(),
        });
    }
    out.extend(env_example(&parsed, files.env_example.as_deref()));
    if rules.production {
        for (path, text, doc) in &parsed {
            out.extend(code_volumes(path, text, doc, &rules.checkout));
        }
        if let Some(added) = &files.added_migrations
            && !added.is_empty()
            && let Some(service) = &rules.migration_service
            && !rules.downgrade_declared
        {
            let shown: Vec<&str> = added.iter().take(5).map(String::as_str).collect();
            out.push(Finding {
                gate: QualityGate::NoRollbackPlan,
                file: shown.join(", ") + if added.len() > 5 { ", ..." } else { "" },
                line: None,
                service: Some(service.clone()),
                what: format!(
                    "the release adds {} migration file(s) and the Environment declares no migrations.downgrade: \
                     it could not be rolled back with its database; declare the downgrade command",
                    added.len()
                ),
            });
        }
    }
    // in gate order, then as a reader meets them in the files
    out.sort_by_key(|f| (QualityGate::ALL.iter().position(|g| *g == f.gate), f.file.clone(), f.line));
    out
}

/// A compose file as JSON, YAML merge keys applied; `None` when it is not YAML (compose itself
/// refuses it later, as `ComposeInvalid`).
fn parse(text: &str) -> Option<Value> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    doc.apply_merge().ok()?;
    serde_json::to_value(doc).ok()
}

/// One piece of a compose value after interpolation is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    /// `${NAME}`, `$NAME`, `${NAME:-default}`, `${NAME:?message}`, `${NAME:+alternative}`.
    Var {
        name: String,
        /// The default or alternative text, itself interpolated (`None`: none given).
        default: Option<Vec<Piece>>,
    },
}

/// Reads compose interpolation: `$$` is a literal `$`; an unclosed `${` is literal text.
pub fn interpolation(s: &str) -> Vec<Piece> {
    let chars: Vec<char> = s.chars().collect();
    let mut out: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            lit.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                lit.push('$');
                i += 2;
            }
            Some('{') => {
                // the matching brace, nested `${...}` in a default included
                let mut depth = 0;
                let mut end = None;
                for (j, ch) in chars.iter().enumerate().skip(i + 1) {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else {
                    lit.extend(&chars[i..]);
                    break;
                };
                let inner: String = chars[i + 2..end].iter().collect();
                let name: String = inner.chars().take_while(|c| word(*c)).collect();
                let rest = &inner[name.len()..];
                let rest = rest.strip_prefix(':').unwrap_or(rest);
                let default = match rest.chars().next() {
                    Some('-' | '+') => Some(interpolation(&rest[1..])),
                    _ => None,
                };
                if !lit.is_empty() {
                    out.push(Piece::Literal(std::mem::take(&mut lit)));
                }
                out.push(Piece::Var { name, default });
                i = end + 1;
            }
            Some(n) if n.is_ascii_alphabetic() || *n == '_' => {
                let name: String = chars[i + 1..].iter().take_while(|c| word(**c)).collect();
                if !lit.is_empty() {
                    out.push(Piece::Literal(std::mem::take(&mut lit)));
                }
                i += 1 + name.chars().count();
                out.push(Piece::Var { name, default: None });
            }
            _ => {
                lit.push('$');
                i += 1;
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    out
}

/// The text a value holds in the file itself: literals and defaults, variables left out.
fn literal_text(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Literal(t) => t.clone(),
            Piece::Var { default: Some(d), .. } => literal_text(d),
            Piece::Var { default: None, .. } => String::new(),
        })
        .collect()
}

/// The value with each variable as `\0`, or as its default when that has literal text (a
/// default is written in the file).
fn template(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Literal(t) => t.clone(),
            Piece::Var { default: Some(d), .. } if !literal_text(d).trim().is_empty() => template(d),
            Piece::Var { .. } => "\0".to_owned(),
        })
        .collect()
}

/// `*PASSWORD*`, `*PASSWD*`, `*SECRET*`, `*TOKEN*`, `*_KEY` (not `*_FILE`: it names a file).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    !k.ends_with("_FILE")
        && (["PASSWORD", "PASSWD", "SECRET", "TOKEN"].iter().any(|w| k.contains(w)) || k.ends_with("_KEY"))
}

/// Does the value hold a URL with a password written in the file (`scheme://user:pw@host`)?
fn url_with_literal_password(pieces: &[Piece]) -> bool {
    let t = template(pieces);
    let Some((_, rest)) = t.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return false };
    let Some((_, password)) = userinfo.split_once(':') else { return false };
    !password.is_empty() && !password.contains('\0')
}

/// `KEY: value` pairs of an `environment` or `build.args` (map or `KEY=value` list); a list
/// item without `=` takes its value from the shell and is left out.
fn pairs(v: &Value) -> Vec<(String, String)> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::Object(m) => m.iter().filter_map(|(k, v)| Some((k.clone(), scalar(v)?))).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str()?.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

fn services(doc: &Value) -> Vec<(&String, &Value)> {
    doc.get("services").and_then(Value::as_object).map(|m| m.iter().collect()).unwrap_or_default()
}

fn secrets_in_compose(path: &str, text: &str, doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    for (service, svc) in services(doc) {
        let sections =
            [("environment", svc.get("environment")), ("build.args", svc.get("build").and_then(|b| b.get("args")))];
        for (section, values) in sections {
            for (key, value) in values.map(pairs).unwrap_or_default() {
                let pieces = interpolation(&value);
                let why = if url_with_literal_password(&pieces) {
                    "holds a URL with a password written in the compose file"
                } else if is_secret_key(&key) && !literal_text(&pieces).trim().is_empty() {
                    "looks secret and has a value written in the compose file"
                } else {
                    continue;
                };
                out.push(Finding {
                    gate: QualityGate::SecretInCompose,
                    file: path.to_owned(),
                    line: line_in_service(text, service, |l| starts_with_key(l, &key)),
                    service: Some(service.clone()),
                    what: format!(
                        "{section} key {key} {why}: write {key}: ${{{key}}} and put the value in the \
                         Environment's env Secret (listed in .env.example)"
                    ),
                });
            }
        }
    }
    out
}

/// Every string of a compose document's values, with the service it belongs to (if any).
fn strings<'a>(v: &'a Value, service: Option<&'a str>, out: &mut Vec<(Option<&'a str>, &'a str)>) {
    match v {
        Value::String(s) => out.push((service, s)),
        Value::Array(items) => items.iter().for_each(|i| strings(i, service, out)),
        Value::Object(m) => m.values().for_each(|i| strings(i, service, out)),
        _ => {}
    }
}

fn env_example(parsed: &[(&str, &str, Value)], example: Option<&str>) -> Vec<Finding> {
    let listed: BTreeSet<String> = example.map(parse_env_example).unwrap_or_default().into_iter().collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, text, doc) in parsed {
        let mut found = Vec::new();
        let Some(map) = doc.as_object() else { continue };
        for (key, value) in map {
            if key == "services" {
                for (service, svc) in services(doc) {
                    strings(svc, Some(service), &mut found);
                }
            } else {
                strings(value, None, &mut found);
            }
        }
        let mut uses = Vec::new();
        for (service, s) in found {
            for_each_var(&interpolation(s), &mut |name, has_default| {
                uses.push((service, name.to_owned(), has_default))
            });
        }
        if example.is_none() {
            if let Some((service, name, _)) = uses.iter().min_by_key(|(_, name, _)| line_of_var(text, name)) {
                out.push(Finding {
                    gate: QualityGate::EnvExampleMissing,
                    file: (*path).to_owned(),
                    line: line_of_var(text, name),
                    service: service.map(str::to_owned),
                    what: format!(
                        "the compose file uses variables (${{{name}}} first) but the revision has no .env.example: \
                         add one listing every variable the compose files use, without values"
                    ),
                });
            }
            continue;
        }
        for (service, name, has_default) in uses {
            if has_default || listed.contains(&name) || !seen.insert(name.clone()) {
                continue;
            }
            out.push(Finding {
                gate: QualityGate::EnvExampleMissing,
                file: (*path).to_owned(),
                line: line_of_var(text, &name),
                service: service.map(str::to_owned),
                what: format!(
                    "${{{name}}} has no default and .env.example does not list {name}: add it there (the \
                     template is out of date)"
                ),
            });
        }
    }
    out
}

/// Calls `f(name, has_default)` for each variable, defaults' own variables included.
fn for_each_var(pieces: &[Piece], f: &mut impl FnMut(&str, bool)) {
    for p in pieces {
        if let Piece::Var { name, default } = p {
            if !name.is_empty() {
                f(name, default.is_some());
            }
            if let Some(d) = default {
                for_each_var(d, f);
            }
        }
    }
}

/// Bind-mount sources of a long-running service that lie in the checkout.
fn code_volumes(path: &str, text: &str, doc: &Value, checkout: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let compose_dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    for (service, svc) in services(doc) {
        let profiled = svc.get("profiles").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
        let one_shot = compose_label(svc.get("labels"), ONE_SHOT_LABEL).is_some_and(|v| v == "true");
        if profiled || one_shot {
            continue;
        }
        let Some(volumes) = svc.get("volumes").and_then(Value::as_array) else { continue };
        for volume in volumes {
            let source = match volume {
                Value::String(s) => {
                    let mut parts = s.split(':');
                    match (parts.next(), parts.next()) {
                        (Some(src), Some(_)) => src.to_owned(),
                        _ => continue,
                    }
                }
                Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("bind") => {
                    match m.get("source").and_then(Value::as_str) {
                        Some(s) => s.to_owned(),
                        None => continue,
                    }
                }
                _ => continue,
            };
            if !in_checkout(&source, compose_dir, checkout) {
                continue;
            }
            out.push(Finding {
                gate: QualityGate::CodeVolumeInProduction,
                file: path.to_owned(),
                line: line_in_service(text, service, |l| {
                    l.contains(&format!("{source}:")) || (l.contains("source:") && l.contains(source.as_str()))
                }),
                service: Some(service.clone()),
                what: format!(
                    "bind-mounts {source} from the checkout into a long-running service: build the code into \
                     the image (COPY in its Dockerfile) for production"
                ),
            });
        }
    }
    out
}

/// Is a bind-mount source (relative to the compose file's directory `compose_dir`, itself
/// relative to the checkout) inside the checkout? A source built from variables is not judged.
fn in_checkout(source: &str, compose_dir: &str, checkout: &str) -> bool {
    if source.contains('$') {
        return false;
    }
    let checkout = checkout.trim_end_matches('/');
    if let Some(rest) = source.strip_prefix('/') {
        let abs = format!("/{}", rest.trim_end_matches('/'));
        return abs == checkout || abs.starts_with(&format!("{checkout}/"));
    }
    if !(source == "." || source == ".." || source.starts_with("./") || source.starts_with("../")) {
        // a named volume (or `~`, the deploy user's home)
        return false;
    }
    let mut depth: Vec<&str> = compose_dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            p => depth.push(p),
        }
    }
    true
}

/// Does a line (trimmed, perhaps a list item, perhaps quoted) start with `key` as a key?
fn starts_with_key(line: &str, key: &str) -> bool {
    let l = line.trim_start().trim_start_matches('-').trim_start().trim_start_matches(['"', '\'']);
    l.strip_prefix(key).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '=', '"', '\'', ' ']))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The 1-based line of the first line in `service`'s block that satisfies `pred`, or of the
/// service itself; `None` when the service's block is not found in the text.
fn line_in_service(text: &str, service: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let top = lines.iter().position(|l| l.trim_end() == "services:" || l.starts_with("services:"))?;
    let service_indent = lines[top + 1..].iter().find(|l| is_content(l)).map(|l| indent(l))?;
    let is_service = |l: &str| {
        let t = l.trim_start().trim_start_matches(['"', '\'']);
        indent(l) == service_indent
            && t.strip_prefix(service).is_some_and(|r| r.trim_start_matches(['"', '\'']).starts_with(':'))
    };
    let start = top + 1 + lines[top + 1..].iter().position(|l| is_service(l))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| is_content(l) && indent(l) <= service_indent)
        .map_or(lines.len(), |p| start + 1 + p);
    let found = (start + 1..end).find(|&i| is_content(lines[i]) && pred(lines[i]));
    Some(found.unwrap_or(start) + 1)
}

/// The 1-based line of the first use of variable `name` outside comments.
fn line_of_var(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            if !is_content(l) {
                return false;
            }
            let mut vars = Vec::new();
            for_each_var(&interpolation(l), &mut |n, _| vars.push(n.to_owned()));
            vars.iter().any(|v| v == name)
        })
        .map(|i| i + 1)
}

/// Migration files among `added` paths: those under a `migrations`, `migrate` or `alembic`
/// directory, Python package markers and READMEs left out.
pub fn migration_files(added: &[String]) -> Vec<String> {
    added
        .iter()
        .filter(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            let (dirs, file) = parts.split_at(parts.len().saturating_sub(1));
            let file = file.first().copied().unwrap_or_default();
            dirs.iter().any(|d| matches!(*d, "migrations" | "migrate" | "alembic"))
                && !file.starts_with("__")
                && !file.to_ascii_lowercase().starts_with("readme")
                && !file.ends_with(".mako")
        })
        .cloned()
        .collect()
}

/// The findings that refuse (their gate not waived) and the names of the gates waived that
/// found something, in gate order.
pub fn split_waived(findings: Vec<Finding>, waive: &[QualityGate]) -> (Vec<Finding>, Vec<String>) {
    let (waived, refused): (Vec<Finding>, Vec<Finding>) = findings.into_iter().partition(|f| waive.contains(&f.gate));
    let mut names: Vec<String> = Vec::new();
    for f in &waived {
        if !names.iter().any(|n| n == f.gate.as_str()) {
            names.push(f.gate.as_str().to_owned());
        }
    }
    (refused, names)
}

/// The refusal's message: every finding (at most 10), then how to go on.
pub fn refusal_message(refused: &[Finding], what: &str) -> String {
    let mut listed: Vec<String> = refused.iter().take(10).map(ToString::to_string).collect();
    if refused.len() > 10 {
        listed.push(format!("and {} more", refused.len() - 10));
    }
    format!(
        "{what} does not meet the playbook: {}. Nothing on the host was changed; fix the revision, or list the \
         gate in the Environment's policy.waive",
        listed.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(production: bool) -> Rules {
        Rules {
            production,
            checkout: "/srv/shop".into(),
            migration_service: Some("backend".into()),
            downgrade_declared: false,
        }
    }

    fn files(compose: &str, example: Option<&str>) -> RevisionFiles {
        RevisionFiles {
            compose: vec![("docker-compose.yml".into(), compose.into())],
            env_example: example.map(str::to_owned),
            ..Default::default()
        }
    }

    fn gates(found: &[Finding]) -> Vec<(QualityGate, Option<usize>, Option<&str>)> {
        found.iter().map(|f| (f.gate, f.line, f.service.as_deref())).collect()
    }

    const CLEAN: &str = "\
services:
  db:
    image: postgres
    environment:
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}
      PGUSER: ${POSTGRES_USER}
    volumes:
      - db-data:/var/lib/postgresql/data
  backend:
    build:
      context: ./backend
      args:
        - PIP_INDEX_TOKEN
    environment:
      - DATABASE_URL=postgresql://shop:${POSTGRES_PASSWORD}@db/shop
      - LOG_LEVEL=${LOG_LEVEL:-info}
      - JWT_SECRET_FILE=/run/secrets/jwt
volumes:
  db-data:
";

    #[test]
    fn a_clean_compose_file_passes_every_gate() {
        let found = judge(&files(CLEAN, Some("POSTGRES_PASSWORD=\nPOSTGRES_USER=\n")), &rules(true));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn literal_secrets_are_found_in_maps_lists_and_build_args_without_their_values() {
        let compose = "\
services:
  # a comment naming API_TOKEN: here
  api:
    build:
      context: .
      args:
        NPM_TOKEN: npm_0123456789abcdef
    environment:
      SECRET_KEY: sk-live-hunter2
      API_KEY: \"${API_KEY:-dev-key-123}\"
      DEBUG: \"true\"
      PUBLIC_HOST: example.com
  worker:
    environment:
      - LOG_LEVEL=info
      - DB_PASSWORD=hunter2
      - REDIS_URL=redis://:p4ss@redis:6379/0
      - CACHE_TOKEN=
      - GITHUB_TOKEN
";
        let found = judge(&files(compose, Some("API_KEY=\n")), &rules(false));
        assert_eq!(
            gates(&found),
            [
                // build.args NPM_TOKEN, SECRET_KEY, API_KEY (its default)
                (QualityGate::SecretInCompose, Some(7), Some("api")),
                (QualityGate::SecretInCompose, Some(9), Some("api")),
                (QualityGate::SecretInCompose, Some(10), Some("api")),
                (QualityGate::SecretInCompose, Some(16), Some("worker")),
                (QualityGate::SecretInCompose, Some(17), Some("worker")),
            ]
        );
        let all: String = found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for value in ["npm_0123456789abcdef", "hunter2", "dev-key-123", "p4ss"] {
            assert!(!all.contains(value), "value {value} echoed: {all}");
        }
        assert!(all.contains("build.args key NPM_TOKEN"), "{all}");
        assert!(all.contains("environment key REDIS_URL holds a URL with a password"), "{all}");
        assert!(all.contains("SecretInCompose: docker-compose.yml:9 service api: environment key SECRET_KEY"), "{all}");
    }

    #[test]
    fn urls_are_judged_by_their_password_only() {
        let literal = |v: &str| url_with_literal_password(&interpolation(v));
        assert!(literal("postgresql://shop:hunter2@db/shop"));
        assert!(literal("postgresql://shop:${PW:-hunter2}@db/shop"), "a default is written in the file");
        assert!(!literal("postgresql://shop:${PW}@db/shop"));
        assert!(!literal("postgresql://${USER}:${PW:?}@db/shop"));
        assert!(!literal("postgresql://shop@db/shop"));
        assert!(!literal("https://example.com/a:b@c"), "a path is no userinfo");
        assert!(!literal("${DATABASE_URL}"));
    }

    #[test]
    fn interpolation_reads_what_compose_reads() {
        use Piece::*;
        assert_eq!(interpolation("a$$b"), [Literal("a$b".into())]);
        assert_eq!(
            interpolation("x${A:-d${B}}y$C"),
            [
                Literal("x".into()),
                Var {
                    name: "A".into(),
                    default: Some(vec![Literal("d".into()), Var { name: "B".into(), default: None }])
                },
                Literal("y".into()),
                Var { name: "C".into(), default: None },
            ]
        );
        assert_eq!(interpolation("${A:?msg}"), [Var { name: "A".into(), default: None }]);
        assert_eq!(interpolation("${A-}"), [Var { name: "A".into(), default: Some(vec![]) }]);
        assert_eq!(interpolation("cost: 5$ ${unclosed"), [Literal("cost: 5$ ${unclosed".into())]);
        assert!(is_secret_key("postgres_password") && is_secret_key("API_KEY") && is_secret_key("GH_TOKEN"));
        assert!(!is_secret_key("KEYBOARD") && !is_secret_key("JWT_SECRET_FILE") && !is_secret_key("MONKEY"));
    }

    #[test]
    fn env_example_must_exist_and_list_every_variable_without_default() {
        let compose = "\
services:
  app:
    image: app:${TAG:-latest}
    environment:
      # ${IN_A_COMMENT} is no use
      A: ${LISTED}
      B: ${UNLISTED:?set it}
      C: $BARE
      D: $${ESCAPED}
";
        let missing = judge(&files(compose, None), &rules(false));
        assert_eq!(gates(&missing), [(QualityGate::EnvExampleMissing, Some(3), Some("app"))]);
        assert!(missing[0].what.contains("no .env.example"), "{}", missing[0].what);
        let stale = judge(&files(compose, Some("# keys\nLISTED=\nexport TAG=\n")), &rules(false));
        assert_eq!(
            gates(&stale),
            [
                (QualityGate::EnvExampleMissing, Some(7), Some("app")),
                (QualityGate::EnvExampleMissing, Some(8), Some("app"))
            ]
        );
        assert!(stale[0].what.contains("${UNLISTED}"), "{}", stale[0].what);
        assert!(stale[1].what.contains("${BARE}"), "{}", stale[1].what);
        // no variables at all: no template needed
        assert!(judge(&files("services:\n  app:\n    image: app\n", None), &rules(false)).is_empty());
    }

    #[test]
    fn code_volumes_refuse_only_production_and_only_the_checkout() {
        let compose = "\
services:
  web:
    image: nginx
    volumes:
      - ./html:/usr/share/nginx/html:ro
      - logs:/var/log/nginx
      - /var/run/docker.sock:/var/run/docker.sock
  app:
    image: app
    volumes:
      - type: bind
        source: /srv/shop/app
        target: /app
      - type: volume
        source: data
        target: /data
  outside:
    image: app
    volumes:
      - ../other:/x
      - ${CODE_DIR}:/code
  tests:
    image: app
    profiles: [test]
    volumes:
      - .:/code
  seed:
    image: app
    labels:
      slipway.dev/one-shot: \"true\"
    volumes:
      - .:/code
";
        let f = RevisionFiles { compose: vec![("docker-compose.yml".into(), compose.into())], ..Default::default() };
        assert!(judge(&f, &rules(false)).iter().all(|x| x.gate != QualityGate::CodeVolumeInProduction));
        let found: Vec<Finding> =
            judge(&f, &rules(true)).into_iter().filter(|x| x.gate == QualityGate::CodeVolumeInProduction).collect();
        assert_eq!(
            gates(&found),
            [
                (QualityGate::CodeVolumeInProduction, Some(5), Some("web")),
                (QualityGate::CodeVolumeInProduction, Some(12), Some("app"))
            ]
        );
        // a compose file in a subdirectory: `..` is still the checkout, `../..` is not
        assert!(in_checkout("../app", "deploy", "/srv/shop"));
        assert!(!in_checkout("../../app", "deploy", "/srv/shop"));
        assert!(!in_checkout("/srv/shop2/x", "", "/srv/shop"));
        assert!(in_checkout("/srv/shop", "", "/srv/shop/"));
    }

    #[test]
    fn a_release_adding_migrations_needs_a_downgrade_in_production() {
        let mut f = files("services:\n  backend:\n    image: b\n", None);
        f.added_migrations = Some(migration_files(&[
            "backend/migrations/versions/0003_stock.py".into(),
            "backend/migrations/versions/__init__.py".into(),
            "backend/app/main.py".into(),
        ]));
        assert_eq!(f.added_migrations.as_deref().unwrap(), ["backend/migrations/versions/0003_stock.py"]);
        let found = judge(&f, &rules(true));
        assert_eq!(gates(&found), [(QualityGate::NoRollbackPlan, None, Some("backend"))]);
        assert!(found[0].to_string().contains("backend/migrations/versions/0003_stock.py"), "{}", found[0]);
        assert!(judge(&f, &rules(false)).is_empty(), "staging: no rollback plan needed");
        let declared = Rules { downgrade_declared: true, ..rules(true) };
        assert!(judge(&f, &declared).is_empty());
        f.added_migrations = None;
        assert!(judge(&f, &rules(true)).is_empty(), "a first release has nothing to roll back to");
    }

    #[test]
    fn waived_gates_are_named_once_and_refuse_nothing() {
        let mut f = files("services:\n  a:\n    environment:\n      X_TOKEN: t\n      Y_TOKEN: u\n", None);
        f.env_tracked = vec![".env".into()];
        let found = judge(&f, &rules(false));
        assert_eq!(found.len(), 3);
        let (refused, waived) = split_waived(found, &[QualityGate::SecretInCompose]);
        assert_eq!(waived, ["SecretInCompose"]);
        assert_eq!(gates(&refused), [(QualityGate::EnvFileCommitted, None, None)]);
        let message = refusal_message(&refused, "tag v2 (commit abc)");
        assert!(
            message.starts_with("tag v2 (commit abc) does not meet the playbook: EnvFileCommitted: .env: is tracked")
        );
        assert!(message.contains("policy.waive"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_yaml_is_left_to_compose() {
        assert!(judge(&files("services: [unclosed\n", None), &rules(true)).is_empty());
    }
}
