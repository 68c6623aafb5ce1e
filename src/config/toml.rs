//! The native TOML front end: the main file, the files its `[include]` names, and `MINDER_…`
//! environment variables, merged by figment into one [`RawConfig`].
//!
//! figment does the merging (later files over earlier ones, the environment over all) and
//! remembers which file each value came from; toml_edit gives the line it is on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Num, Value};
use figment::{Figment, Profile, Provider as _, Source};
use toml_edit::ImDocument;

use super::diag::{line_of, ConfigErrors, Diagnostic, Origin};
use super::expand::{self, Vars};
use super::raw::{Raw, RawConfig, RawSection, RawValue, SectionKind};
use super::Context;

/// The prefix of environment variables that override the files:
/// `MINDER_DAEMON__LOGLEVEL=debug`, `MINDER_PROGRAM__WEB__AUTOSTART=false`.
pub const ENV_PREFIX: &str = "MINDER_";

/// The parsed files, kept to find the line of a key; each file is read once, and figment
/// merges the same text (see [`FileText`]).
struct Sources {
    docs: HashMap<PathBuf, ImDocument<String>>,
}

impl Sources {
    fn parse(&mut self, path: &Path) -> Result<(), Diagnostic> {
        let text = super::file::read_to_string(path)
            .map_err(|e| Diagnostic::new(Origin::file(path, None), "", e.to_string()))?;
        let doc = ImDocument::parse(text.clone()).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            let msg = e.message().trim().to_string();
            Diagnostic::new(Origin::file(path, line), "", format!("TOML syntax error: {msg}"))
        })?;
        self.docs.insert(path.to_path_buf(), doc);
        Ok(())
    }

    /// The line of the value at `keys` in `path`, if it is written there.
    fn line(&self, path: &Path, keys: &[&str]) -> Option<u32> {
        let doc = self.docs.get(path)?;
        let mut item = doc.as_item();
        for k in keys {
            item = item.as_table_like()?.get(k)?;
        }
        item.span().map(|s| line_of(doc.raw(), s.start))
    }

    fn origin(&self, figment: &Figment, value: &Value, keys: &[&str]) -> Origin {
        match figment.get_metadata(value.tag()).and_then(|m| m.source.as_ref()) {
            Some(Source::File(path)) => Origin::file(path, self.line(path, keys)),
            _ => Origin::Env { var: format!("{ENV_PREFIX}{}", keys.join("__").to_uppercase()) },
        }
    }
}

/// A file already read (and checked) by [`Sources::parse`], given to figment as text with the
/// file as its source: figment reading the path again could meet a different file there (a
/// FIFO, say) than the one checked.
struct FileText {
    path: PathBuf,
    text: String,
}

impl FileText {
    fn of(sources: &Sources, path: &Path) -> FileText {
        let text = sources.docs.get(path).map(|d| d.raw().to_string()).unwrap_or_default();
        FileText { path: path.to_path_buf(), text }
    }
}

impl figment::Provider for FileText {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("TOML file", Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// The singleton tables (`[daemon]`) and the tables of named tables (`[program.NAME]`) of
/// the native format, with the section each one is.
const SINGLETONS: &[(&str, SectionKind)] = &[
    ("daemon", SectionKind::Daemon),
    ("ctl", SectionKind::Ctl),
    ("unix_http_server", SectionKind::UnixServer),
    ("inet_http_server", SectionKind::InetServer),
];
const NAMED: &[(&str, SectionKind)] = &[
    ("program", SectionKind::Program),
    ("group", SectionKind::Group),
    ("eventlistener", SectionKind::EventListener),
    ("fcgi-program", SectionKind::FcgiProgram),
    ("rpcinterface", SectionKind::RpcInterface),
];

pub(super) fn read(main: &Path, ctx: &Context) -> Result<RawConfig, ConfigErrors> {
    let env = &ctx.env;
    let mut sources = Sources { docs: HashMap::new() };
    sources.parse(main).map_err(ConfigErrors::one)?;
    let mut warnings = Vec::new();
    let includes = include_files(main, &sources, env, &ctx.host_node_name, &mut warnings)?;
    let mut errors = Vec::new();
    for inc in &includes {
        if let Err(e) = sources.parse(inc) {
            errors.push(e);
        } else if sources.line(inc, &["include"]).is_some() || sources.docs[inc].contains_key("include") {
            warnings.push(Diagnostic::new(
                Origin::file(inc, sources.line(inc, &["include"])),
                "include",
                "ignored: an included file cannot include others (as in supervisord)",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors { errors });
    }
    warn_about_repeated_sections(main, &includes, &sources, &mut warnings);

    let mut figment = Figment::new().merge(FileText::of(&sources, main));
    for inc in &includes {
        figment = figment.merge(FileText::of(&sources, inc));
    }
    let env_provider = Env::prefixed(ENV_PREFIX)
        .split("__")
        .filter(|k| SINGLETONS.iter().chain(NAMED).any(|(table, _)| k.starts_with(&format!("{table}."))));
    let figment = figment.merge(env_provider);
    let mut data = figment
        .data()
        .map_err(|e| ConfigErrors::one(Diagnostic::new(Origin::file(main, None), "", e.to_string())))?;
    let root = data.remove(&Profile::Default).unwrap_or_default();

    let mut sections = Vec::new();
    for (key, value) in &root {
        let origin = sources.origin(&figment, value, &[key]);
        if key == "include" {
            continue;
        }
        if let Some((_, kind)) = SINGLETONS.iter().find(|(t, _)| t == key) {
            match value {
                Value::Dict(_, dict) => {
                    sections.push(section(&sources, &figment, *kind, "", dict, origin, &[key]))
                }
                _ => errors.push(Diagnostic::new(origin, key.clone(), format!("must be a table: [{key}]"))),
            }
        } else if let Some((_, kind)) = NAMED.iter().find(|(t, _)| t == key) {
            let Value::Dict(_, dict) = value else {
                errors.push(Diagnostic::new(
                    origin,
                    key.clone(),
                    format!("must be a table of tables: [{key}.NAME]"),
                ));
                continue;
            };
            for (name, body) in dict {
                let origin = sources.origin(&figment, body, &[key, name]);
                match body {
                    Value::Dict(_, opts) => {
                        sections.push(section(&sources, &figment, *kind, name, opts, origin, &[key, name]))
                    }
                    _ => errors.push(Diagnostic::new(
                        origin,
                        format!("{key}.{name}"),
                        format!("must be a table: [{key}.{name}]"),
                    )),
                }
            }
        } else {
            let known: Vec<&str> = SINGLETONS.iter().chain(NAMED).map(|(t, _)| *t).collect();
            warnings.push(Diagnostic::new(
                origin,
                key.clone(),
                format!("unknown section, ignored (known: {}, include)", known.join(", ")),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors { errors });
    }
    Ok(RawConfig {
        path: main.to_path_buf(),
        toml: true,
        sections,
        defaults: BTreeMap::new(),
        warnings,
        included: includes,
    })
}

fn section(
    sources: &Sources,
    figment: &Figment,
    kind: SectionKind,
    name: &str,
    dict: &Dict,
    origin: Origin,
    prefix: &[&str],
) -> RawSection {
    let options = dict
        .iter()
        .map(|(k, v)| {
            let mut keys = prefix.to_vec();
            keys.push(k);
            let origin = sources.origin(figment, v, &keys);
            (k.clone(), RawValue { value: to_raw(v), origin })
        })
        .collect();
    RawSection { kind, name: name.to_string(), options, origin }
}

fn to_raw(v: &Value) -> Raw {
    match v {
        Value::String(_, s) => Raw::Str(s.clone()),
        Value::Char(_, c) => Raw::Str(c.to_string()),
        Value::Bool(_, b) => Raw::Bool(*b),
        Value::Num(_, n) => num(*n),
        Value::Empty(_, _) => Raw::Str(String::new()),
        Value::Dict(_, d) => Raw::Table(d.iter().map(|(k, v)| (k.clone(), to_raw(v))).collect()),
        Value::Array(_, items) => Raw::List(items.iter().map(to_raw).collect()),
    }
}

fn num(n: Num) -> Raw {
    match n {
        Num::F32(x) => Raw::Float(x.into()),
        Num::F64(x) => Raw::Float(x),
        other => match other.to_i128().and_then(|i| i64::try_from(i).ok()) {
            Some(i) => Raw::Int(i),
            None => Raw::Float(other.to_f64().unwrap_or(f64::NAN)),
        },
    }
}

/// A section given in more than one file (`[program.web]` in the main file and in an
/// include, say) is merged by figment, an option given twice taking the later file's value.
/// That is rarely meant, so it is a warning, as the supervisord.conf front end gives.
fn warn_about_repeated_sections(
    main: &Path,
    includes: &[PathBuf],
    sources: &Sources,
    warnings: &mut Vec<Diagnostic>,
) {
    let mut first: BTreeMap<(String, String), Origin> = BTreeMap::new();
    for file in std::iter::once(main).chain(includes.iter().map(PathBuf::as_path)) {
        let Some(doc) = sources.docs.get(file) else { continue };
        for (key, item) in doc.iter() {
            let names: Vec<String> = if SINGLETONS.iter().any(|(t, _)| *t == key) {
                vec![String::new()]
            } else if NAMED.iter().any(|(t, _)| *t == key) {
                item.as_table_like()
                    .map(|t| t.iter().map(|(n, _)| n.to_string()).collect())
                    .unwrap_or_default()
            } else {
                continue;
            };
            for name in names {
                let keys: Vec<&str> = if name.is_empty() { vec![key] } else { vec![key, name.as_str()] };
                let here = Origin::file(file, sources.line(file, &keys));
                let label = keys.join(".");
                match first.get(&(key.to_string(), name.clone())) {
                    Some(there) => warnings.push(Diagnostic::new(
                        here,
                        label,
                        format!(
                            "this section is also given at {there}; the two are merged (an option given in both takes this later file's value)"
                        ),
                    )),
                    None => {
                        first.insert((key.to_string(), name), here);
                    }
                }
            }
        }
    }
}

/// The files `[include] files` names: globs relative to the main file's directory, each
/// pattern's matches sorted, duplicates and the main file itself left out.
fn include_files(
    main: &Path,
    sources: &Sources,
    env: &BTreeMap<String, String>,
    host: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<PathBuf>, ConfigErrors> {
    let doc = &sources.docs[main];
    let Some(item) = doc.get("include") else {
        return Ok(Vec::new());
    };
    let origin = Origin::file(main, sources.line(main, &["include"]));
    let files = item.as_table_like().and_then(|t| t.get("files"));
    let patterns: Vec<String> = match files.and_then(|f| f.as_value()) {
        Some(toml_edit::Value::String(s)) => s.value().split_whitespace().map(String::from).collect(),
        Some(toml_edit::Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a.iter() {
                match v.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => {
                        return Err(ConfigErrors::one(Diagnostic::new(
                            origin,
                            "include.files",
                            "expected a list of file patterns, like [\"conf.d/*.toml\"]",
                        )))
                    }
                }
            }
            out
        }
        _ => {
            return Err(ConfigErrors::one(Diagnostic::new(
                origin,
                "include.files",
                "required: a list of file patterns, like files = [\"conf.d/*.toml\"]",
            )))
        }
    };
    let dir = main.parent().unwrap_or(Path::new("/"));
    let vars = Vars::new()
        .with_env(env)
        .str("here", dir.display().to_string())
        .str("host_node_name", host.to_string());
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let pattern = expand::expand(&pattern, &vars).map_err(|e| {
            ConfigErrors::one(Diagnostic::new(origin.clone(), "include.files", e.to_string()))
        })?;
        let full = dir.join(&pattern);
        let matches = glob::glob(&full.to_string_lossy()).map_err(|e| {
            ConfigErrors::one(Diagnostic::new(
                origin.clone(),
                "include.files",
                format!("bad pattern {pattern:?}: {e}"),
            ))
        })?;
        // Directories and dangling links are skipped; anything else that is not a regular
        // file (a FIFO, a device) is kept, so that reading it refuses it by name instead of
        // dropping it.
        let mut found: Vec<PathBuf> =
            matches.filter_map(Result::ok).filter(|p| p.exists() && !p.is_dir()).collect();
        found.sort();
        if found.is_empty() {
            warnings.push(Diagnostic::new(
                origin.clone(),
                "include.files",
                format!("no file matches {pattern:?}"),
            ));
        }
        for f in found {
            if f != main && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}
