//! The fleet's configuration: Cesi's `cesi.conf.toml`, read unmodified, plus native keys.
//!
//! Cesi's file has a `[cesi]` table (`database`, `activity_log`, `admin_username`,
//! `admin_password`) and one `[[nodes]]` per supervisord (`name`, `environment`, `host`, `port`,
//! `username`, `password`). minder-fleet reads exactly that, and also:
//! - in `[[nodes]]`: `kind = "supervisord"` (the default: XML-RPC, polled) or `"minderd"`
//!   (gRPC, pushed), `address` (`unix:///path`, `tcp://host:port` or `http://host:port`, instead
//!   of `host`/`port`; `https://host:port` for TLS to a minderd node, with `tls_ca`, and
//!   `tls_cert`/`tls_key` for mutual TLS, `tls_domain` for the name to expect), and `token` (a
//!   bearer token for minderd's `tokens_file`) or `token_file` (a file holding it);
//! - `[[discover]]`: nodes found in DNS ([`crate::discover`]): `name` (their names' prefix),
//!   `dns`, `port`, `interval` (seconds, default 30), and the credentials, TLS, `kind` (default
//!   minderd) and `environment` every node found shares;
//! - a `[fleet]` table: `poll_interval`, `call_timeout`, `action_timeout` (seconds) and
//!   `fanout` (how many nodes one action works on at once).
//!
//! `[cesi]` is optional: `database` (Cesi's `sqlite:///users.db` URI or a plain path, relative
//! to this file's directory; default `fleet.db` beside it) holds the users and the activity
//! table; `activity_log` is Cesi's text file, appended too when set (relative to this file's
//! directory); `admin_username`/`admin_password`, given both or neither, make the first
//! administrator at start (see `users`).
//!
//! Every error names the file, the line and the key, and says what is allowed. Cesi's shipped
//! default password (`admin`) is refused: Cesi's first bug report is that admin/admin works.
//! Node passwords and tokens are kept in [`Secret`], whose `Debug` prints nothing, so no log
//! line or API answer can carry them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minder::address::Address;
use toml_edit::{ImDocument, Item, Table, Value};

pub use crate::discover::DiscoverConfig;

/// A credential: kept, sent to its node, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How the fleet talks to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Supervisor's XML-RPC at `/RPC2` with Basic auth, polled (supervisord, or minderd's
    /// XML-RPC front end).
    Supervisord,
    /// minderd's gRPC: a `WatchEvents` stream, pushed.
    Minderd,
}

/// TLS to a minderd node: the PEM files, read when the configuration is.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca: Vec<u8>,
    /// A client certificate and its key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Secret)>,
    /// The name to expect in the node's certificate (default: the host connected to).
    pub domain: Option<String>,
}

/// One node, as configured.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub environment: String,
    pub kind: NodeKind,
    pub address: Address,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub tls: Option<TlsConfig>,
    /// Where it was configured (`file:line`), for messages.
    pub origin: String,
}

/// The keys [`Access`] is read from, in `[[nodes]]` and `[[discover]]` alike.
const ACCESS_KEYS: &[&str] = &[
    "environment",
    "kind",
    "username",
    "password",
    "token",
    "token_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_domain",
];

/// A node's configuration but its name, address and origin: what `[[nodes]]` and
/// `[[discover]]` share.
struct Access {
    environment: String,
    kind: NodeKind,
    username: Option<String>,
    password: Option<Secret>,
    token: Option<Secret>,
    tls: Option<TlsConfig>,
}

impl Access {
    fn node(self, name: String, address: Address, origin: String) -> NodeConfig {
        let Access { environment, kind, username, password, token, tls } = self;
        NodeConfig { name, environment, kind, address, username, password, token, tls, origin }
    }
}

/// Timings and bounds of the node tasks and actions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How often a supervisord node is polled.
    pub poll_interval: Duration,
    /// The deadline of every connect and every read-only call to a node.
    pub call_timeout: Duration,
    /// The deadline of an action (start waits for RUNNING, as supervisord's does).
    pub action_timeout: Duration,
    /// How many nodes one fleet action works on at once.
    pub fanout: usize,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll_interval: Duration::from_secs(2),
            call_timeout: Duration::from_secs(3),
            action_timeout: Duration::from_secs(60),
            fanout: 32,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub path: PathBuf,
    /// `[cesi] database`, as written (see `users::database_path`).
    pub database: Option<String>,
    /// `[cesi] activity_log`, as written (relative to the configuration's directory).
    pub activity_log: Option<String>,
    /// `[cesi] admin_username`/`admin_password`: the first administrator, made or updated at
    /// start (optional: users may come from `minder-fleet user add` alone).
    pub admin: Option<(String, Secret)>,
    pub nodes: Vec<NodeConfig>,
    /// Nodes found in DNS ([`crate::discover`]).
    pub discover: Vec<DiscoverConfig>,
    pub timing: Timing,
}

/// Why a configuration was refused: every problem found, each with its place.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// The biggest configuration file read (a fleet of 10,000 nodes is about 2 MiB).
const MAX_FILE: u64 = 16 << 20;

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<FleetConfig, ConfigError> {
    load_with(path, true)
}

/// As [`load`], for `--check-config` away from the host the file is for: a token or TLS file
/// that is not there (a Secret mounted only in the cluster) is not an error; one that is there
/// is still read and checked.
pub fn check(path: &Path) -> Result<FleetConfig, ConfigError> {
    load_with(path, false)
}

fn load_with(path: &Path, host_checks: bool) -> Result<FleetConfig, ConfigError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ConfigError(vec![format!("{shown}: {e}")]))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(ConfigError(vec![format!("{shown}: not a regular file of at most 16 MiB")]));
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(vec![format!("{shown}: {e}")]))?;
    parse_with(&text, path, host_checks)
}

/// Parses a configuration's text; `path` is only for messages.
pub fn parse(text: &str, path: &Path) -> Result<FleetConfig, ConfigError> {
    parse_with(text, path, true)
}

fn parse_with(text: &str, path: &Path, host_checks: bool) -> Result<FleetConfig, ConfigError> {
    let shown = path.display().to_string();
    let doc = ImDocument::parse(text.to_string()).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        ConfigError(vec![format!("{shown}:{line}: not valid TOML: {}", e.message())])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut r = Reader { text, file: &shown, base, host_checks, errors: Vec::new() };
    let root = doc.as_table();

    for (key, item) in root.iter() {
        if !matches!(key, "cesi" | "nodes" | "fleet" | "discover") {
            r.err(item_span(item), key, "unknown table: expected [cesi], [[nodes]], [[discover]] or [fleet]");
        }
    }

    let mut cfg = FleetConfig {
        path: path.to_path_buf(),
        database: None,
        activity_log: None,
        admin: None,
        nodes: Vec::new(),
        discover: Vec::new(),
        timing: Timing::default(),
    };

    match root.get("cesi") {
        Some(Item::Table(t)) => {
            r.known(t, &["database", "activity_log", "admin_username", "admin_password"], "[cesi]");
            cfg.database = r.string(t, "database");
            cfg.activity_log = r.string(t, "activity_log");
            let user = r.string(t, "admin_username");
            let password = r.string(t, "admin_password");
            let at = t.get("admin_password").and_then(item_span).or_else(|| table_span(t));
            match (user, password) {
                (None, None) => {}
                (Some(u), _) if u.trim().is_empty() => r.err(
                    t.get("admin_username").and_then(item_span),
                    "admin_username",
                    "is empty: name the fleet's first administrator, or leave admin_username and admin_password out",
                ),
                (Some(_), Some(p)) if p == "admin" => r.err(
                    at,
                    "admin_password",
                    "is Cesi's shipped default `admin`, which minder-fleet refuses: set a password \
                     of your own (at least 8 characters) in [cesi] admin_password",
                ),
                (Some(_), Some(p)) if p.chars().count() < 8 => r.err(
                    at,
                    "admin_password",
                    "is shorter than 8 characters: set a longer one in [cesi] admin_password",
                ),
                (Some(u), Some(p)) => cfg.admin = Some((u, Secret::new(p))),
                (Some(_), None) => r.err(
                    at,
                    "admin_password",
                    "[cesi] admin_username needs admin_password (at least 8 characters, not Cesi's default `admin`)",
                ),
                (None, Some(_)) => r.err(at, "admin_username", "[cesi] admin_password needs admin_username"),
            }
        }
        Some(other) => r.err(item_span(other), "cesi", "must be a table: [cesi]"),
        // Users then come from the database alone (`minder-fleet user add`).
        None => {}
    }

    if let Some(item) = root.get("fleet") {
        match item {
            Item::Table(t) => {
                r.known(t, &["poll_interval", "call_timeout", "action_timeout", "fanout"], "[fleet]");
                if let Some(d) = r.seconds(t, "poll_interval") {
                    cfg.timing.poll_interval = d;
                }
                if let Some(d) = r.seconds(t, "call_timeout") {
                    cfg.timing.call_timeout = d;
                }
                if let Some(d) = r.seconds(t, "action_timeout") {
                    cfg.timing.action_timeout = d;
                }
                if let Some(v) = t.get("fanout") {
                    match v.as_integer() {
                        Some(n) if (1..=4096).contains(&n) => cfg.timing.fanout = n as usize,
                        _ => r.err(item_span(v), "fanout", "must be an integer from 1 to 4096"),
                    }
                }
            }
            other => r.err(item_span(other), "fleet", "must be a table: [fleet]"),
        }
    }

    match root.get("nodes") {
        None => {}
        Some(Item::ArrayOfTables(nodes)) => {
            for t in nodes.iter() {
                if let Some(n) = r.node(t) {
                    if let Some(prev) = cfg.nodes.iter().find(|p| p.name == n.name) {
                        let prev = prev.origin.clone();
                        r.err(
                            t.get("name").and_then(item_span),
                            "name",
                            &format!(
                                "node {:?} is already configured at {prev}: names must be unique",
                                n.name
                            ),
                        );
                    } else {
                        cfg.nodes.push(n);
                    }
                }
            }
        }
        Some(other) => r.err(item_span(other), "nodes", "must be an array of tables: [[nodes]]"),
    }

    match root.get("discover") {
        None => {}
        Some(Item::ArrayOfTables(entries)) => {
            for t in entries.iter() {
                if let Some(d) = r.discover(t) {
                    if cfg.discover.iter().any(|p| p.name == d.name) {
                        r.err(
                            t.get("name").and_then(item_span),
                            "name",
                            &format!("[[discover]] {:?} is given twice: prefixes must be unique", d.name),
                        );
                    } else {
                        cfg.discover.push(d);
                    }
                }
            }
        }
        Some(other) => r.err(item_span(other), "discover", "must be an array of tables: [[discover]]"),
    }

    if r.errors.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError(r.errors))
    }
}

/// What `--check-config` prints: the nodes and discovery entries, one per line, with no
/// credential (only whether one is set).
pub fn summary(c: &FleetConfig) -> String {
    let mut out =
        format!("# {}: {} nodes, {} [[discover]]\n", c.path.display(), c.nodes.len(), c.discover.len());
    let creds = |n: &NodeConfig| {
        let mut v = Vec::new();
        if n.username.is_some() || n.password.is_some() {
            v.push("basic");
        }
        if n.token.is_some() {
            v.push("token");
        }
        if n.tls.is_some() {
            v.push("tls");
        }
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join("+")
        }
    };
    let kind = |k: NodeKind| match k {
        NodeKind::Minderd => "minderd",
        NodeKind::Supervisord => "supervisord",
    };
    for n in &c.nodes {
        out.push_str(&format!(
            "node {} environment={} kind={} address={} auth={}\n",
            n.name,
            n.environment,
            kind(n.kind),
            n.address,
            creds(n)
        ));
    }
    for d in &c.discover {
        out.push_str(&format!(
            "discover {} dns={} port={} every={}s environment={} kind={} auth={}\n",
            d.name,
            d.dns,
            d.port,
            d.interval.as_secs_f64(),
            d.template.environment,
            kind(d.template.kind),
            creds(&d.template)
        ));
    }
    out
}

/// Whether `s` may name a node, an environment, a group or a process in a URL path: what
/// Supervisor's names are in practice, and nothing a path or a shell could read twice.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && !s.contains("..")
        && s.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn item_span(item: &Item) -> Option<std::ops::Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

fn table_span(t: &Table) -> Option<std::ops::Range<usize>> {
    t.span()
}

struct Reader<'a> {
    text: &'a str,
    file: &'a str,
    /// Relative file names (TLS) are relative to the configuration's directory.
    base: PathBuf,
    /// Whether a token or TLS file must be there ([`check`] says no).
    host_checks: bool,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn place(&self, span: Option<std::ops::Range<usize>>) -> String {
        match span {
            Some(s) => format!("{}:{}", self.file, line_of(self.text, s.start)),
            None => self.file.to_string(),
        }
    }

    fn err(&mut self, span: Option<std::ops::Range<usize>>, key: &str, what: &str) {
        let place = self.place(span);
        self.errors.push(format!("{place}: {key}: {what}"));
    }

    fn known(&mut self, t: &Table, allowed: &[&str], table: &str) {
        for (key, item) in t.iter() {
            if !allowed.contains(&key) {
                let what = format!("unknown key in {table}: allowed are {}", allowed.join(", "));
                self.err(item_span(item).or_else(|| t.key(key).and_then(|k| k.span())), key, &what);
            }
        }
    }

    fn string(&mut self, t: &Table, key: &str) -> Option<String> {
        let item = t.get(key)?;
        match item.as_value() {
            Some(Value::String(s)) => Some(s.value().clone()),
            _ => {
                self.err(item_span(item), key, "must be a string in quotes");
                None
            }
        }
    }

    fn seconds(&mut self, t: &Table, key: &str) -> Option<Duration> {
        let item = t.get(key)?;
        let secs = match item.as_value() {
            Some(Value::Integer(n)) => Some(*n.value() as f64),
            Some(Value::Float(f)) => Some(*f.value()),
            _ => None,
        };
        match secs {
            Some(s) if s > 0.0 && s <= 3600.0 => Some(Duration::from_secs_f64(s)),
            _ => {
                self.err(item_span(item), key, "must be a number of seconds, more than 0 and at most 3600");
                None
            }
        }
    }

    fn node(&mut self, t: &Table) -> Option<NodeConfig> {
        let before = self.errors.len();
        let origin = self.place(table_span(t));
        self.known(t, &[&["name", "host", "port", "address"], ACCESS_KEYS].concat(), "[[nodes]]");
        let name = self.string(t, "name");
        let name = match name {
            Some(n) if is_plain_name(&n) => n,
            Some(n) => {
                self.err(
                    t.get("name").and_then(item_span),
                    "name",
                    &format!("{n:?} is not a node name: use letters, digits, '-', '_', '.', '@' or '+'"),
                );
                String::new()
            }
            None => {
                self.err(table_span(t), "name", "every [[nodes]] needs a name");
                String::new()
            }
        };
        let host = self.string(t, "host");
        let port = t.get("port").and_then(|item| match item.as_value() {
            Some(Value::Integer(n)) if (1..=65535).contains(n.value()) => Some(*n.value() as u16),
            // Cesi's examples quote the port sometimes.
            Some(Value::String(s)) if s.value().parse::<u16>().is_ok_and(|p| p > 0) => s.value().parse().ok(),
            _ => {
                self.err(item_span(item), "port", "must be a port number from 1 to 65535");
                None
            }
        });
        let address_text = self.string(t, "address");
        let https = address_text.as_deref().is_some_and(|a| a.starts_with("https://"));
        let address = match (address_text, host, port) {
            (Some(a), None, None) => match a.replacen("https://", "tcp://", 1).parse::<Address>() {
                Ok(addr) => Some(addr),
                Err(e) => {
                    self.err(t.get("address").and_then(item_span), "address", &e);
                    None
                }
            },
            (Some(_), _, _) => {
                self.err(
                    t.get("address").and_then(item_span),
                    "address",
                    "give either address or host and port, not both",
                );
                None
            }
            (None, Some(h), Some(p)) if !h.is_empty() && !h.contains(['/', ' ', '@']) => {
                let host = if h.contains(':') && !h.starts_with('[') { format!("[{h}]") } else { h };
                Some(Address::Tcp(format!("{host}:{p}")))
            }
            (None, Some(h), Some(_)) => {
                self.err(
                    t.get("host").and_then(item_span),
                    "host",
                    &format!("{h:?} is not a host name or address"),
                );
                None
            }
            // A bad port was reported already.
            (None, Some(_), None) if t.contains_key("port") => None,
            (None, _, _) => {
                self.err(
                    table_span(t),
                    "host",
                    "every [[nodes]] needs host and port (or address = \"unix:///path\" or \"tcp://host:port\")",
                );
                None
            }
        };
        let access = self.access(t, NodeKind::Supervisord, https);
        if self.errors.len() > before {
            return None;
        }
        Some(access.node(name, address?, origin))
    }

    /// A `[[discover]]` entry: `name` (the nodes' prefix), `dns`, `port`, `interval`, and what
    /// a `[[nodes]]` takes for its credentials and TLS; `kind` defaults to minderd.
    fn discover(&mut self, t: &Table) -> Option<DiscoverConfig> {
        let before = self.errors.len();
        let origin = self.place(table_span(t));
        self.known(t, &[&["name", "dns", "port", "interval"], ACCESS_KEYS].concat(), "[[discover]]");
        let name = match self.string(t, "name") {
            Some(n) if is_plain_name(&n) && n.len() <= 100 => n,
            Some(n) => {
                self.err(
                    t.get("name").and_then(item_span),
                    "name",
                    &format!("{n:?} is not a prefix for node names: use letters, digits, '-', '_', '.'"),
                );
                String::new()
            }
            None => {
                self.err(
                    table_span(t),
                    "name",
                    "every [[discover]] needs a name: the prefix of its nodes' names",
                );
                String::new()
            }
        };
        let dns = match self.string(t, "dns") {
            Some(d)
                if !d.is_empty()
                    && d.len() <= 253
                    && d.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
            {
                Some(d)
            }
            Some(d) => {
                self.err(t.get("dns").and_then(item_span), "dns", &format!("{d:?} is not a DNS name"));
                None
            }
            None => {
                self.err(
                    table_span(t),
                    "dns",
                    "every [[discover]] needs dns: the name whose addresses are the nodes \
                     (e.g. the headless Service of the minderd DaemonSet)",
                );
                None
            }
        };
        let port = match t.get("port") {
            Some(item) => match item.as_value() {
                Some(Value::Integer(n)) if (1..=65535).contains(n.value()) => Some(*n.value() as u16),
                _ => {
                    self.err(item_span(item), "port", "must be a port number from 1 to 65535");
                    None
                }
            },
            None => {
                self.err(table_span(t), "port", "every [[discover]] needs port: where each node listens");
                None
            }
        };
        let interval = self.seconds(t, "interval").unwrap_or(Duration::from_secs(30));
        // TLS when any TLS setting is given (there is no address to say https://).
        let wants_tls = ["tls_ca", "tls_cert", "tls_key", "tls_domain"].iter().any(|k| t.contains_key(k));
        let mut access = self.access(t, NodeKind::Minderd, wants_tls);
        if self.errors.len() > before {
            return None;
        }
        let (dns, port) = (dns?, port?);
        // Nodes are reached by address: their certificates name the DNS name, unless told.
        if let Some(tls) = access.tls.as_mut() {
            tls.domain.get_or_insert_with(|| dns.clone());
        }
        let template = access.node(String::new(), Address::Tcp(format!("{dns}:{port}")), origin);
        Some(DiscoverConfig { name, dns, port, interval, template })
    }

    /// What a `[[nodes]]` and a `[[discover]]` (for each node it finds) read alike: the
    /// environment, the kind (`default` if not given), and how to log in to and talk to the
    /// node (TLS if `tls`).
    fn access(&mut self, t: &Table, default: NodeKind, tls: bool) -> Access {
        let environment = self.environment(t);
        let kind = self.kind(t, default);
        // Cesi writes username = "" for an [inet_http_server] without credentials.
        let username = self.string(t, "username").filter(|u| !u.is_empty());
        let password = self.string(t, "password").filter(|p| !p.is_empty()).map(Secret::new);
        let token = self.token(t, kind);
        let tls = self.tls(t, tls, kind);
        Access { environment, kind, username, password, token, tls }
    }

    fn environment(&mut self, t: &Table) -> String {
        // Cesi writes environment = "" for none, and shows such nodes under "default".
        match self.string(t, "environment") {
            Some(e) if e.is_empty() => "default".to_string(),
            Some(e) if is_plain_name(&e) => e,
            Some(e) => {
                self.err(
                    t.get("environment").and_then(item_span),
                    "environment",
                    &format!("{e:?} is not an environment name: use letters, digits, '-', '_', '.'"),
                );
                String::new()
            }
            None => "default".to_string(),
        }
    }

    fn kind(&mut self, t: &Table, default: NodeKind) -> NodeKind {
        match self.string(t, "kind").as_deref() {
            None => default,
            Some("supervisord") => NodeKind::Supervisord,
            Some("minderd") => NodeKind::Minderd,
            Some(other) => {
                self.err(
                    t.get("kind").and_then(item_span),
                    "kind",
                    &format!(
                        "{other:?} is not a kind of node: \"supervisord\" (XML-RPC) or \"minderd\" (gRPC)"
                    ),
                );
                default
            }
        }
    }

    /// `token`, or `token_file` (a file holding it, e.g. a mounted Kubernetes Secret; read at
    /// load, so SIGHUP picks up a new one).
    fn token(&mut self, t: &Table, kind: NodeKind) -> Option<Secret> {
        let inline = self.string(t, "token").filter(|p| !p.is_empty());
        let from_file = self.string(t, "token_file").and_then(|name| {
            let path = self.base.join(&name);
            let at = t.get("token_file").and_then(item_span);
            match std::fs::read(&path) {
                Ok(b) if b.len() > 4096 => {
                    self.err(at, "token_file", &format!("{} is larger than 4 KiB", path.display()));
                    None
                }
                Ok(b) => match String::from_utf8(b) {
                    Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    _ => {
                        self.err(
                            at,
                            "token_file",
                            &format!("{} holds no token (UTF-8 text)", path.display()),
                        );
                        None
                    }
                },
                Err(e) if !self.host_checks && e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    self.err(at, "token_file", &format!("cannot read {}: {e}", path.display()));
                    None
                }
            }
        });
        if inline.is_some() && t.contains_key("token_file") {
            self.err(
                t.get("token_file").and_then(item_span),
                "token_file",
                "give token or token_file, not both",
            );
        }
        let token = inline.or(from_file).map(Secret::new);
        if token.is_some() && kind == NodeKind::Supervisord {
            let key = if t.contains_key("token") { "token" } else { "token_file" };
            self.err(
                t.get(key).and_then(item_span),
                key,
                "tokens are for kind = \"minderd\" nodes; a supervisord node takes username and password",
            );
        }
        token
    }

    fn tls(&mut self, t: &Table, https: bool, kind: NodeKind) -> Option<TlsConfig> {
        let mut read = |key: &str| -> Option<Vec<u8>> {
            let name = self.string(t, key)?;
            let path = self.base.join(&name);
            match std::fs::read(&path) {
                Ok(b) if b.len() <= 1 << 20 => Some(b),
                Ok(_) => {
                    self.err(
                        t.get(key).and_then(item_span),
                        key,
                        &format!("{} is larger than 1 MiB", path.display()),
                    );
                    None
                }
                Err(e) if !self.host_checks && e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    self.err(
                        t.get(key).and_then(item_span),
                        key,
                        &format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        };
        let (ca, cert, key) = (read("tls_ca"), read("tls_cert"), read("tls_key"));
        let domain = self.string(t, "tls_domain");
        let given = t.contains_key("tls_ca") || t.contains_key("tls_cert") || t.contains_key("tls_key");
        let at = t.get("address").and_then(item_span).or_else(|| table_span(t));
        if !https {
            if given || domain.is_some() {
                self.err(at, "address", "TLS settings need an address of the form https://host:port");
            }
            return None;
        }
        if kind != NodeKind::Minderd {
            self.err(
                at,
                "address",
                "https:// is for kind = \"minderd\" nodes; supervisord serves XML-RPC without TLS",
            );
            return None;
        }
        if t.contains_key("tls_cert") != t.contains_key("tls_key") {
            self.err(
                at.clone(),
                "tls_cert",
                "tls_cert and tls_key go together (a client certificate and its key)",
            );
        }
        let Some(ca) = ca else {
            if !t.contains_key("tls_ca") {
                self.err(
                    at,
                    "tls_ca",
                    "an https:// node needs tls_ca: the CA certificate (PEM) that signed the node's",
                );
            }
            return None;
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, Secret::new(String::from_utf8_lossy(&k).into_owned()))),
            _ => None,
        };
        Some(TlsConfig { ca, identity, domain })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<FleetConfig, ConfigError> {
        parse(s, Path::new("cesi.conf.toml"))
    }

    const CESI: &str = r#"[cesi]
database = "sqlite:///users.db"
activity_log = "activity.log"
admin_username = "admin"
admin_password = "s3cret-enough"

[[nodes]]
name = "cesi-1"
environment = ""
host = "127.0.0.1"
port = 9001
username = "u"
password = "p"

[[nodes]]
name = "m1"
environment = "prod"
kind = "minderd"
address = "unix:///run/minder.sock"
token = "t0k"
"#;

    #[test]
    fn cesis_own_file_reads_unmodified_with_native_nodes_beside() {
        let c = parse_str(CESI).expect("valid");
        assert_eq!(c.admin.as_ref().map(|(u, p)| (u.as_str(), p.expose())), Some(("admin", "s3cret-enough")));
        assert_eq!(c.nodes.len(), 2);
        let n = &c.nodes[0];
        assert_eq!(
            (n.name.as_str(), n.environment.as_str(), n.kind),
            ("cesi-1", "default", NodeKind::Supervisord)
        );
        assert_eq!(n.address, Address::Tcp("127.0.0.1:9001".into()));
        assert_eq!(n.password.as_ref().map(Secret::expose), Some("p"));
        assert_eq!(c.nodes[1].kind, NodeKind::Minderd);
        assert_eq!(c.nodes[1].address, Address::Unix("/run/minder.sock".into()));
        // No secret in what a log line would print.
        assert!(c.nodes.iter().all(|n| n.tls.is_none()));
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("t0k") && !printed.contains("\"p\""),
            "{printed}"
        );
    }

    #[test]
    fn the_shipped_default_password_is_refused_with_what_to_do() {
        let e = parse_str(&CESI.replace("s3cret-enough", "admin")).expect_err("refused").to_string();
        assert_eq!(
            e,
            "cesi.conf.toml:5: admin_password: is Cesi's shipped default `admin`, which minder-fleet \
             refuses: set a password of your own (at least 8 characters) in [cesi] admin_password"
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_line_and_what_is_allowed() {
        let bad = "[cesi]\nadmin_username = \"a\"\nadmin_password = \"longenough\"\ncolour = 1\n\
                   [[nodes]]\nname = \"../x\"\nhost = \"h\"\nport = 70000\n\
                   [[nodes]]\nname = \"ok\"\nkind = \"k8s\"\naddress = \"unix:///s\"\n\
                   [[nodes]]\nname = \"ok\"\naddress = \"unix:///t\"\n[fleet]\nfanout = 0\n";
        let e = parse_str(bad).expect_err("refused").0;
        assert_eq!(
            e,
            vec![
                "cesi.conf.toml:4: colour: unknown key in [cesi]: allowed are database, activity_log, admin_username, admin_password",
                "cesi.conf.toml:17: fanout: must be an integer from 1 to 4096",
                "cesi.conf.toml:6: name: \"../x\" is not a node name: use letters, digits, '-', '_', '.', '@' or '+'",
                "cesi.conf.toml:8: port: must be a port number from 1 to 65535",
                "cesi.conf.toml:11: kind: \"k8s\" is not a kind of node: \"supervisord\" (XML-RPC) or \"minderd\" (gRPC)",
            ],
        );
        let e = parse_str("[cesi\n").expect_err("refused").to_string();
        assert!(e.starts_with("cesi.conf.toml:1: not valid TOML"), "{e}");
        let dup = format!("{CESI}\n[[nodes]]\nname = \"m1\"\naddress = \"tcp://h:1\"\n");
        let e = parse_str(&dup).expect_err("refused").to_string();
        assert!(e.contains("node \"m1\" is already configured at cesi.conf.toml:15"), "{e}");
    }

    #[test]
    fn tls_settings_are_checked_and_their_files_read_at_load() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").expect("write");
        let head =
            "[cesi]\nadmin_username = \"a\"\nadmin_password = \"longenough\"\n[[nodes]]\nname = \"n\"\n";
        let at = |body: &str| parse(&format!("{head}{body}"), &dir.path().join("fleet.toml"));
        let c =
            at("kind = \"minderd\"\naddress = \"https://h:1\"\ntls_ca = \"ca.pem\"\ntls_domain = \"x\"\n")
                .expect("valid");
        let tls = c.nodes[0].tls.as_ref().expect("tls");
        assert_eq!(
            (c.nodes[0].address.to_string().as_str(), tls.domain.as_deref()),
            ("tcp://h:1", Some("x"))
        );
        for (body, expected) in [
            ("kind = \"minderd\"\naddress = \"https://h:1\"\n", "tls_ca: an https:// node needs tls_ca"),
            (
                "kind = \"minderd\"\naddress = \"tcp://h:1\"\ntls_ca = \"ca.pem\"\n",
                "TLS settings need an address of the form https://",
            ),
            ("address = \"https://h:1\"\ntls_ca = \"ca.pem\"\n", "https:// is for kind = \"minderd\" nodes"),
            ("kind = \"minderd\"\naddress = \"https://h:1\"\ntls_ca = \"nope.pem\"\n", "tls_ca: cannot read"),
            (
                "kind = \"minderd\"\naddress = \"https://h:1\"\ntls_ca = \"ca.pem\"\ntls_cert = \"ca.pem\"\n",
                "tls_cert and tls_key go together",
            ),
        ] {
            let e = at(body).expect_err(body).to_string();
            assert!(e.contains(expected), "{body}: {e}");
        }
    }

    #[test]
    fn names_that_could_be_read_as_paths_are_not_plain() {
        for bad in ["", ".", "..", "a/b", "a..b", "a\\b", "a b", "a%2f", "a:b", "\u{0}"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        for good in ["web", "web-1", "w_01", "a.b", "ñ"] {
            assert!(is_plain_name(good), "{good:?}");
        }
    }
    #[test]
    fn discover_entries_are_checked_and_share_their_settings() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("token"), "s3cr3t-token\n").expect("write");
        let head = "[cesi]\nadmin_username = \"a\"\nadmin_password = \"longenough\"\n";
        let at = |body: &str| parse(&format!("{head}{body}"), &dir.path().join("fleet.toml"));
        let c = at("[[discover]]\nname = \"k8s\"\ndns = \"minder-nodes.minder.svc\"\nport = 9090\n\
                    token_file = \"token\"\nenvironment = \"prod\"\n")
        .expect("valid");
        let d = &c.discover[0];
        assert_eq!((d.name.as_str(), d.dns.as_str(), d.port), ("k8s", "minder-nodes.minder.svc", 9090));
        assert_eq!(d.interval, Duration::from_secs(30));
        assert_eq!(d.template.kind, NodeKind::Minderd);
        assert_eq!(d.template.token.as_ref().map(Secret::expose), Some("s3cr3t-token"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = at("[[discover]]\nname = \"a/b\"\ndns = \"x y\"\nport = 0\ntoken_file = \"nope\"\n")
            .expect_err("refused")
            .0;
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains(":5: name: \"a/b\" is not a prefix"), "{e:?}");
        assert!(e[1].contains(":6: dns: \"x y\" is not a DNS name"), "{e:?}");
        assert!(e[2].contains(":7: port: must be a port number"), "{e:?}");
        assert!(e[3].contains(":8: token_file: cannot read"), "{e:?}");
        let e = at("[[discover]]\nname = \"k\"\n").expect_err("refused").to_string();
        assert!(e.contains("needs dns") && e.contains("needs port"), "{e}");
        let e =
            at("[[discover]]\nname = \"k\"\ndns = \"h\"\nport = 1\nkind = \"supervisord\"\ntoken = \"t\"\n")
                .expect_err("refused")
                .to_string();
        assert!(e.contains("tokens are for kind = \"minderd\" nodes"), "{e}");
    }
}
