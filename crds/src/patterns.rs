//! What Slipway accepts in each string field of its specs: one [`Shape`] per kind of value.
//!
//! The CRD schema's CEL rules are built from these constants, and the controller's remote layer
//! (`slipway_controller::remote::validate`) checks the very same shapes with the `regex` crate
//! before anything runs on a host. So a value the API server accepts is never refused remotely,
//! and a value refused remotely never got past the API server. `tests/validation-corpus.yaml`
//! holds values each shape must accept or refuse; both sides are tested against it.
//!
//! Patterns stay in the subset that RE2 (CEL's `matches`) and Rust's `regex` read alike: anchored
//! `^...$`, character classes and groups, no lookaround, no backreferences. Every pattern refuses
//! a leading `-` (an option injected into git, ssh or compose) and control characters, unless its
//! doc says otherwise.

use kube::core::{Message, Rule};

/// Substrings and suffixes a value must not have, on top of its pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub substrings: &'static [&'static str],
    pub suffixes: &'static [&'static str],
    /// Completes "`<field>` ...", saying what to fix.
    pub message: &'static str,
}

/// One kind of value: its pattern, its length in characters, and what else it must not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Key of this shape in `crds/tests/validation-corpus.yaml`.
    pub name: &'static str,
    /// Anchored regular expression, read alike by RE2 and Rust's `regex`.
    pub pattern: &'static str,
    pub min_len: usize,
    pub max_len: usize,
    /// Completes "`<field>` must be ...", saying what a valid value looks like.
    pub must_be: &'static str,
    pub forbidden: Option<Forbidden>,
}

/// A branch or tag name: what `git check-ref-format` accepts, minus everything a shell or git
/// option parser could misread (no leading `-` or `.`, no `@`, `~`, `^`, `:`, spaces, quotes...).
pub const REF_NAME: Shape = Shape {
    name: "refName",
    pattern: "^[A-Za-z0-9_][A-Za-z0-9._/+-]*$",
    min_len: 1,
    max_len: 200,
    must_be: "a git ref name made of letters, digits and . _ / + - that does not start with - or . \
              (no spaces or shell characters such as ; $ ` | & < > ( ) * ? or quotes)",
    forbidden: Some(Forbidden {
        substrings: &["..", "//", "/.", ".lock/"],
        suffixes: &["/", ".", ".lock"],
        message: "is not a name git accepts: it must not contain '..', '//', '/.' or '.lock/', \
                  nor end with '/', '.' or '.lock'",
    }),
};

/// A commit id: 7 to 64 hexadecimal characters, abbreviated or full, SHA-1 (40) or SHA-256 (64).
pub const COMMIT: Shape = Shape {
    name: "commit",
    pattern: "^[0-9a-fA-F]{7,64}$",
    min_len: 7,
    max_len: 64,
    must_be: "7 to 64 hexadecimal characters (a commit id, abbreviated or full), such as 4f1c2ab",
    forbidden: None,
};

/// An absolute directory on the host other than `/`, without `.` or `..` segments.
pub const HOST_PATH: Shape = Shape {
    name: "hostPath",
    pattern: "^(/[A-Za-z0-9._-]+)+/?$",
    min_len: 1,
    max_len: 1024,
    must_be: "an absolute path below / such as /srv/shop, made of letters, digits and . _ / - \
              (no spaces, no shell characters, no empty segments)",
    forbidden: Some(Forbidden {
        substrings: &["/../", "/./"],
        suffixes: &["/..", "/."],
        message: "must not contain '..' or '.' segments",
    }),
};

/// A compose file, relative to the host path, that stays inside it.
pub const COMPOSE_FILE: Shape = Shape {
    name: "composeFile",
    pattern: "^[A-Za-z0-9_][A-Za-z0-9._/-]*$",
    min_len: 1,
    max_len: 255,
    must_be: "a path relative to host.path such as deploy/compose.yml, made of letters, digits and \
              . _ / -, starting with a letter, digit or _",
    forbidden: Some(Forbidden { substrings: &[".."], suffixes: &[], message: "must not contain '..'" }),
};

/// A compose project name (the compose v2 rule, which v1 also accepts).
pub const PROJECT_NAME: Shape = Shape {
    name: "projectName",
    pattern: "^[a-z0-9][a-z0-9_-]*$",
    min_len: 1,
    max_len: 63,
    must_be: "a compose project name: lowercase letters, digits, _ and -, starting with a letter or digit",
    forbidden: None,
};

/// A compose service name (compose spec: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
pub const SERVICE_NAME: Shape = Shape {
    name: "serviceName",
    pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    min_len: 1,
    max_len: 63,
    must_be: "a compose service name: letters, digits, _ . -, starting with a letter or digit",
    forbidden: None,
};

/// The name of a health check, shown in status and events.
pub const CHECK_NAME: Shape = Shape {
    name: "checkName",
    pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    min_len: 1,
    max_len: 63,
    must_be: "a short name such as backend or db-ready: letters, digits, _ . -, starting with a letter or digit",
    forbidden: None,
};

/// The name of a notification receiver, shown in status and events instead of its URL.
pub const RECEIVER_NAME: Shape = Shape {
    name: "receiverName",
    pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    min_len: 1,
    max_len: 63,
    must_be: "a short name such as qa-slack or oncall: letters, digits, _ . -, starting with a letter or digit",
    forbidden: None,
};

/// The path (and query) of an HTTP health check: printable ASCII without spaces, from `/`.
pub const HTTP_PATH: Shape = Shape {
    name: "httpPath",
    pattern: "^/[!-~]*$",
    min_len: 1,
    max_len: 1024,
    must_be: "a request path starting with / such as /health, without spaces, control or non-ASCII \
              characters (percent-encode them)",
    forbidden: None,
};

/// The URL of an HTTP check fetched from the controller: `http://` or `https://`, a host name or
/// IP address (no user or password), an optional port, then a path with query.
pub const CHECK_URL: Shape = Shape {
    name: "checkUrl",
    pattern: "^https?://([A-Za-z0-9_][A-Za-z0-9._-]*|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?(/[!-~]*)?$",
    min_len: 8,
    max_len: 2048,
    must_be: "an http:// or https:// URL such as https://shop.example.com/health: a host name or IP address \
              without user or password, an optional port, then a path without spaces, control or non-ASCII \
              characters (percent-encode them)",
    forbidden: None,
};

/// The host name or IP address Slipway connects to with ssh.
pub const HOST_ADDRESS: Shape = Shape {
    name: "hostAddress",
    pattern: "^[A-Za-z0-9_:][A-Za-z0-9_.:-]*$",
    min_len: 1,
    max_len: 253,
    must_be: "a host name or IP address (letters, digits, . : - _), not starting with - or .",
    forbidden: None,
};

/// The login name on the host.
pub const HOST_USER: Shape = Shape {
    name: "hostUser",
    pattern: "^[a-z_][a-z0-9_.-]*$",
    min_len: 1,
    max_len: 32,
    must_be: "a login name: lowercase letters, digits, _ . -, starting with a letter or _",
    forbidden: None,
};

/// Where the host clones the application from: `ssh://`, `https://`, `http://`, `git://` or
/// `file://` URL, or scp-like `user@host:path`. Host and user never start with `-`, and there
/// is no room for a `<transport>::` remote helper (`ext::` runs commands), `%`-escapes, query
/// strings, credentials (`user:password@`), spaces or shell characters.
pub const REPOSITORY_URL: Shape = Shape {
    name: "repositoryUrl",
    pattern: "^(\
              (ssh|https?|git|file)://\
              (([A-Za-z0-9_][A-Za-z0-9._~+-]*@)?([A-Za-z0-9_][A-Za-z0-9._-]*|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?)?\
              (/[A-Za-z0-9._~+@:/-]*)?\
              |\
              [A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9_][A-Za-z0-9._-]*:[A-Za-z0-9._~+/][A-Za-z0-9._~+@/-]*\
              )$",
    min_len: 1,
    max_len: 2048,
    must_be: "an ssh://, https://, http://, git:// or file:// URL or user@host:path, made of letters, \
              digits and . _ ~ + @ : / - (no spaces, %-escapes, queries, passwords or shell characters; \
              host and user must not start with -)",
    forbidden: None,
};

/// An issue reference such as `#45` or `SHOP-45`.
pub const ISSUE: Shape = Shape {
    name: "issue",
    pattern: "^#?[A-Za-z0-9][A-Za-z0-9._/#-]*$",
    min_len: 1,
    max_len: 128,
    must_be: "an issue reference such as #45 or SHOP-45",
    forbidden: None,
};

const TIER_PATTERN: &str = "^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$";
const TIER_MUST_BE: &str = "a tier label such as staging or production: letters, digits, . _ -, \
                            starting and ending with a letter or digit";

/// An Environment's tier: a Kubernetes label value, empty when unset.
pub const TIER: Shape =
    Shape { name: "tier", pattern: TIER_PATTERN, min_len: 0, max_len: 63, must_be: TIER_MUST_BE, forbidden: None };

/// A deploy window's cron schedule: five fields (minute hour day-of-month month day-of-week), as
/// Argo CD sync windows and crontab write them, or a nickname such as `@daily`.
pub const CRON_SCHEDULE: Shape = Shape {
    name: "cronSchedule",
    pattern: "^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*?][0-9A-Za-z*?/,#-]*( [0-9A-Za-z*?/,#-]+){4})$",
    min_len: 1,
    max_len: 120,
    must_be: "a cron schedule of five fields separated by single spaces (minute hour day-of-month month \
              day-of-week, such as \"0 22 * * 1-5\") or @yearly, @monthly, @weekly, @daily, @hourly",
    forbidden: None,
};

/// How long a deploy window stays open after each start: hours and minutes.
pub const WINDOW_DURATION: Shape = Shape {
    name: "windowDuration",
    pattern: "^([1-9][0-9]{0,3}h([0-9]{1,4}m)?|[1-9][0-9]{0,5}m)$",
    min_len: 2,
    max_len: 16,
    must_be: "a duration in hours and minutes such as 1h, 90m or 1h30m",
    forbidden: None,
};

/// An IANA time zone name.
pub const TIME_ZONE: Shape = Shape {
    name: "timeZone",
    pattern: "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$",
    min_len: 1,
    max_len: 64,
    must_be: "an IANA time zone name such as UTC or Europe/Berlin",
    forbidden: None,
};

/// Most deploy windows an Environment may declare.
pub const WINDOWS_MAX_ITEMS: usize = 20;

/// Most Environments `policy.promoteFrom` may name.
pub const PROMOTE_FROM_MAX_ITEMS: usize = 5;

/// The name of an Environment (a Kubernetes object name: DNS subdomain).
pub const ENVIRONMENT_NAME: Shape = Shape {
    name: "environmentName",
    pattern: "^[a-z0-9]([a-z0-9-]*[a-z0-9])?([.][a-z0-9]([a-z0-9-]*[a-z0-9])?)*$",
    min_len: 1,
    max_len: 253,
    must_be: "the name of an Environment: lowercase letters, digits, - and .",
    forbidden: None,
};

/// Free text for the record (a Rollback's reason): anything but control characters.
pub const REASON: Shape = Shape {
    name: "reason",
    pattern: "^[^[:cntrl:]]*$",
    min_len: 1,
    max_len: 1024,
    must_be: "one line of text, without control characters such as newlines or tabs",
    forbidden: None,
};

/// The first element of a command (argv[0]): a program, never empty, never an option.
pub const PROGRAM: Shape = Shape {
    name: "program",
    pattern: "^[^-\\x00][^\\x00]*$",
    min_len: 1,
    max_len: 1024,
    must_be: "a program name or path that does not start with - and contains no NUL character",
    forbidden: None,
};

/// Any element of a command: any text without NUL characters (argv cannot carry them).
pub const ARGUMENT: Shape = Shape {
    name: "argument",
    pattern: "^[^\\x00]*$",
    min_len: 0,
    max_len: 1024,
    must_be: "text without NUL characters",
    forbidden: None,
};

/// A text searched for in a service's log (`health.logErrorPatterns`): printable, one line.
/// Never sent to a host (the controller matches it), so a leading `-` is allowed.
pub const LOG_PATTERN: Shape = Shape {
    name: "logPattern",
    pattern: "^[^\\x00-\\x1f\\x7f]+$",
    min_len: 1,
    max_len: 200,
    must_be: "a line of text such as ERROR or panic: (no control characters such as newlines or tabs)",
    forbidden: None,
};

/// Most services one DeployRequest restarts.
pub const RESTART_MAX_ITEMS: usize = 20;

/// Most `health.logErrorPatterns`.
pub const LOG_PATTERNS_MAX_ITEMS: usize = 20;

/// Most elements of a command (migrations, exec checks).
pub const ARGV_MAX_ITEMS: usize = 64;

/// Every shape, for code that wants them all (compiling the patterns once, tests).
pub const ALL: &[&Shape] = &[
    &REF_NAME,
    &COMMIT,
    &HOST_PATH,
    &COMPOSE_FILE,
    &PROJECT_NAME,
    &SERVICE_NAME,
    &CHECK_NAME,
    &RECEIVER_NAME,
    &HTTP_PATH,
    &CHECK_URL,
    &HOST_ADDRESS,
    &HOST_USER,
    &REPOSITORY_URL,
    &ISSUE,
    &TIER,
    &ENVIRONMENT_NAME,
    &REASON,
    &CRON_SCHEDULE,
    &WINDOW_DURATION,
    &TIME_ZONE,
    &LOG_PATTERN,
    &PROGRAM,
    &ARGUMENT,
];

/// A CEL string literal holding `s` verbatim.
fn cel_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Shape {
    /// CEL: `var` matches the pattern.
    pub fn cel_matches(&self, var: &str) -> String {
        format!("{var}.matches({})", cel_string(self.pattern))
    }

    /// CEL: `var` has none of the forbidden substrings and suffixes (`None` without any).
    pub fn cel_allowed(&self, var: &str) -> Option<String> {
        let f = self.forbidden?;
        let contains = f.substrings.iter().map(|s| format!("!{var}.contains({})", cel_string(s)));
        let ends = f.suffixes.iter().map(|s| format!("!{var}.endsWith({})", cel_string(s)));
        Some(contains.chain(ends).collect::<Vec<_>>().join(" && "))
    }

    /// The pattern rule for a string field called `field` in messages.
    pub fn rule(&self, field: &str) -> Rule {
        Rule::new(self.cel_matches("self")).message(Message::Message(format!("{field} must be {}", self.must_be)))
    }

    /// The forbidden-substrings rule for a string field. Panics on a shape without one, which
    /// the crate's schema tests (and crdgen) catch at once.
    pub fn forbidden_rule(&self, field: &str) -> Rule {
        let (cel, f) = self.cel_allowed("self").zip(self.forbidden).expect("shape has forbidden parts");
        Rule::new(cel).message(Message::Message(format!("{field} {}", f.message)))
    }

    /// The pattern rule for a list whose every element is of this shape.
    pub fn each_rule(&self, field: &str) -> Rule {
        Rule::new(format!("self.all(x, {})", self.cel_matches("x")))
            .message(Message::Message(format!("{field} must each be {}", self.must_be)))
    }

    /// The forbidden-substrings rule for a list whose every element is of this shape.
    pub fn each_forbidden_rule(&self, field: &str) -> Rule {
        let (cel, f) = self.cel_allowed("x").zip(self.forbidden).expect("shape has forbidden parts");
        Rule::new(format!("self.all(x, {cel})")).message(Message::Message(format!("{field} each {}", f.message)))
    }
}

/// The rule for a command (argv list) that its first element is a [`PROGRAM`].
pub fn program_rule(field: &str) -> Rule {
    Rule::new(format!("self.size() == 0 || {}", PROGRAM.cel_matches("self[0]")))
        .message(Message::Message(format!("{field} must start with {}", PROGRAM.must_be)))
}

/// How a field's value relates to a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldShape {
    /// A string of this shape.
    One(&'static Shape),
    /// A list of strings, each of this shape.
    Each(&'static Shape),
    /// A command: up to [`ARGV_MAX_ITEMS`] [`ARGUMENT`]s, the first a [`PROGRAM`].
    Argv,
}

impl FieldShape {
    /// Key of the field's values in `crds/tests/validation-corpus.yaml`.
    pub fn corpus_key(&self) -> &'static str {
        match self {
            FieldShape::One(s) | FieldShape::Each(s) => s.name,
            FieldShape::Argv => "argv",
        }
    }
}

/// One validated field of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// `Environment`, `DeployRequest` or `Rollback`.
    pub kind: &'static str,
    /// JSON pointer to the field in an object whose `spec.health.checks` are, in this order,
    /// an http, a tcp and an exec check.
    pub pointer: &'static str,
    pub shape: FieldShape,
}

const fn field(kind: &'static str, pointer: &'static str, shape: FieldShape) -> Field {
    Field { kind, pointer, shape }
}

/// Every string field of the three specs that has a shape. The crate's tests check that the
/// generated schema enforces each of them, and that no other string field exists unnoticed.
pub const FIELDS: &[Field] = &[
    field("Environment", "/spec/policy/windows/0/schedule", FieldShape::One(&CRON_SCHEDULE)),
    field("Environment", "/spec/policy/windows/0/duration", FieldShape::One(&WINDOW_DURATION)),
    field("Environment", "/spec/policy/windows/0/timeZone", FieldShape::One(&TIME_ZONE)),
    field("Environment", "/spec/tier", FieldShape::One(&TIER)),
    field("Environment", "/spec/host/address", FieldShape::One(&HOST_ADDRESS)),
    field("Environment", "/spec/host/user", FieldShape::One(&HOST_USER)),
    field("Environment", "/spec/host/path", FieldShape::One(&HOST_PATH)),
    field("Environment", "/spec/repository/url", FieldShape::One(&REPOSITORY_URL)),
    field("Environment", "/spec/compose/files", FieldShape::Each(&COMPOSE_FILE)),
    field("Environment", "/spec/compose/projectName", FieldShape::One(&PROJECT_NAME)),
    field("Environment", "/spec/migrations/service", FieldShape::One(&SERVICE_NAME)),
    field("Environment", "/spec/migrations/upgrade", FieldShape::Argv),
    field("Environment", "/spec/migrations/current", FieldShape::Argv),
    field("Environment", "/spec/migrations/downgrade", FieldShape::Argv),
    field("Environment", "/spec/health/checks/0/name", FieldShape::One(&CHECK_NAME)),
    field("Environment", "/spec/health/checks/0/http/service", FieldShape::One(&SERVICE_NAME)),
    field("Environment", "/spec/health/checks/0/http/path", FieldShape::One(&HTTP_PATH)),
    field("Environment", "/spec/health/checks/3/http/url", FieldShape::One(&CHECK_URL)),
    field("Environment", "/spec/health/checks/1/tcp/service", FieldShape::One(&SERVICE_NAME)),
    field("Environment", "/spec/health/checks/2/exec/service", FieldShape::One(&SERVICE_NAME)),
    field("Environment", "/spec/health/checks/2/exec/command", FieldShape::Argv),
    field("Environment", "/spec/policy/promoteFrom", FieldShape::Each(&ENVIRONMENT_NAME)),
    field("Environment", "/spec/notifications/0/name", FieldShape::One(&RECEIVER_NAME)),
    field("Environment", "/spec/health/logErrorPatterns", FieldShape::Each(&LOG_PATTERN)),
    field("Environment", "/spec/health/logIgnorePatterns", FieldShape::Each(&LOG_PATTERN)),
    field("DeployRequest", "/spec/environment", FieldShape::One(&ENVIRONMENT_NAME)),
    field("DeployRequest", "/spec/revision/branch", FieldShape::One(&REF_NAME)),
    field("DeployRequest", "/spec/revision/tag", FieldShape::One(&REF_NAME)),
    field("DeployRequest", "/spec/revision/commit", FieldShape::One(&COMMIT)),
    field("DeployRequest", "/spec/issue", FieldShape::One(&ISSUE)),
    field("Environment", "/spec/revision/branch", FieldShape::One(&REF_NAME)),
    field("Environment", "/spec/revision/tag", FieldShape::One(&REF_NAME)),
    field("Environment", "/spec/revision/commit", FieldShape::One(&COMMIT)),
    field("Environment", "/spec/revision/issue", FieldShape::One(&ISSUE)),
    field("DeployRequest", "/spec/restart", FieldShape::Each(&SERVICE_NAME)),
    field("Rollback", "/spec/environment", FieldShape::One(&ENVIRONMENT_NAME)),
    field("Rollback", "/spec/to/tag", FieldShape::One(&REF_NAME)),
    field("Rollback", "/spec/to/release", FieldShape::One(&COMMIT)),
    field("Rollback", "/spec/reason", FieldShape::One(&REASON)),
];
