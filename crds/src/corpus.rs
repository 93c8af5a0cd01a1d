//! `tests/validation-corpus.yaml`: per kind of value (a [`crate::patterns::Shape`] name, or
//! `argv`), values that must be accepted and values that must be refused, by the API server's
//! schema and by the remote layer alike.
//!
//! A value is a string, a list of strings (for `argv`), or a generator for values too long to
//! write out: `{repeat: "a", times: 201, prefix: "", suffix: ""}` makes a string and
//! `{item: "true", times: 65}` a list.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One value of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Text(String),
    List(Vec<String>),
}

impl Sample {
    /// The value as JSON, ready to put into an object.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Sample::Text(s) => serde_json::Value::from(s.as_str()),
            Sample::List(l) => serde_json::Value::from(l.clone()),
        }
    }

    /// A short form for messages: long values cut, control characters escaped.
    pub fn label(&self) -> String {
        let short = |s: &str| {
            let mut out: String = format!("{s:?}").chars().take(60).collect();
            if s.chars().count() > 50 {
                out.push_str(&format!("…({} chars)", s.chars().count()));
            }
            out
        };
        match self {
            Sample::Text(s) => short(s),
            Sample::List(l) if l.len() > 4 => format!("[{} items: {}, …]", l.len(), short(&l[0])),
            Sample::List(l) => format!("[{}]", l.iter().map(|s| short(s)).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// Values of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cases {
    pub accept: Vec<Sample>,
    pub refuse: Vec<Sample>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Text(String),
    Repeat {
        repeat: String,
        times: usize,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        suffix: String,
    },
    Items {
        item: String,
        times: usize,
    },
    List(Vec<Raw>),
}

impl Raw {
    fn text(self) -> Result<String, String> {
        match self {
            Raw::Text(s) => Ok(s),
            Raw::Repeat { repeat, times, prefix, suffix } => Ok(format!("{prefix}{}{suffix}", repeat.repeat(times))),
            Raw::Items { .. } | Raw::List(_) => Err("a list inside a list".to_owned()),
        }
    }

    fn sample(self) -> Result<Sample, String> {
        match self {
            Raw::Items { item, times } => Ok(Sample::List(vec![item; times])),
            Raw::List(items) => Ok(Sample::List(items.into_iter().map(Raw::text).collect::<Result<_, _>>()?)),
            other => other.text().map(Sample::Text),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCases {
    accept: Vec<Raw>,
    refuse: Vec<Raw>,
}

/// Where the corpus lives in the source tree.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/validation-corpus.yaml")
}

/// Parses a corpus: kind → cases.
pub fn parse(yaml: &str) -> Result<BTreeMap<String, Cases>, String> {
    let raw: BTreeMap<String, RawCases> = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|(kind, c)| {
            let conv = |v: Vec<Raw>| v.into_iter().map(Raw::sample).collect::<Result<Vec<_>, _>>();
            let cases = Cases {
                accept: conv(c.accept).map_err(|e| format!("{kind}: {e}"))?,
                refuse: conv(c.refuse).map_err(|e| format!("{kind}: {e}"))?,
            };
            Ok((kind, cases))
        })
        .collect()
}

/// Reads and parses the corpus from the source tree (for tests).
pub fn load() -> BTreeMap<String, Cases> {
    let path = path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
