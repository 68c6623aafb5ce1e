//! The supervisord.conf front end: reads supervisord's INI dialect exactly as supervisord 4.3
//! does, follows its `[include]`, and produces a [`RawConfig`] of string values that remember
//! their file and line.
//!
//! supervisord reads its file with Python's `configparser.RawConfigParser` (its subclass
//! `UnhosedConfigParser` in `options.py`) with `inline_comment_prefixes=(';', '#')` and
//! `strict=False`. The line loop below is a port of CPython 3's `RawConfigParser._read`, so
//! the odd cases come out the same: `;` and `#` start a comment only at the start of a line or
//! after whitespace (`a;b` is a value, `a ;b` is `a`); a more indented line continues the value
//! before it (joined with "\n", blank lines kept inside, trailing ones dropped); `:` separates
//! a key as well as `=`; keys are lowercased, section names are not; a section given twice is
//! one section; `[DEFAULT]` is inherited by every section. Nothing is expanded here except
//! `%(here)s` in a file that has an `[include]`, because supervisord does that one textually
//! as it reads each file (see `Sheet::replace_here`); every other `%(name)s` is left to
//! `resolve`.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::diag::{line_of, ConfigErrors, Diagnostic, Origin};
use super::expand::{self, Vars};
use super::file::ReadError;
use super::raw::{Raw, RawConfig, RawSection, RawValue, SectionKind};
use super::values::normpath;
use super::Context;

/// Python's `str.isspace`: Unicode white space, plus the ASCII separators \x1c-\x1f that
/// Python counts and Rust's `char::is_whitespace` does not.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// What a section header names, by supervisord's spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Class {
    Known(SectionKind, String),
    Include,
    Default,
    Unknown(String),
}

fn classify(header: &str) -> Class {
    match header {
        "supervisord" => return Class::Known(SectionKind::Daemon, String::new()),
        "supervisorctl" => return Class::Known(SectionKind::Ctl, String::new()),
        "unix_http_server" => return Class::Known(SectionKind::UnixServer, String::new()),
        "inet_http_server" => return Class::Known(SectionKind::InetServer, String::new()),
        "include" => return Class::Include,
        "DEFAULT" => return Class::Default,
        _ => {}
    }
    let Some((prefix, name)) = header.split_once(':') else {
        return Class::Unknown(header.to_string());
    };
    let kind = match prefix {
        "program" => SectionKind::Program,
        "group" => SectionKind::Group,
        "eventlistener" => SectionKind::EventListener,
        "fcgi-program" => SectionKind::FcgiProgram,
        "rpcinterface" => SectionKind::RpcInterface,
        "unix_http_server" => SectionKind::UnixServer,
        "inet_http_server" => SectionKind::InetServer,
        _ => return Class::Unknown(header.to_string()),
    };
    // supervisord strips the name (`process_or_group_name`), so `[program: web ]` is "web".
    Class::Known(kind, py_strip(name).to_string())
}

/// A hint for a section supervisord would ignore: usually a typo or wrong case.
fn unknown_section_hint(header: &str) -> String {
    let lower = header.to_lowercase();
    let known = [
        "supervisord",
        "supervisorctl",
        "unix_http_server",
        "inet_http_server",
        "include",
        "program:",
        "group:",
        "eventlistener:",
        "fcgi-program:",
        "rpcinterface:",
    ];
    if lower != header && matches!(classify(&lower), Class::Known(..) | Class::Include) {
        return format!(" (section names are case-sensitive: did you mean [{lower}]?)");
    }
    if lower.starts_with("ctlplugin:") {
        return " (supervisorctl plugins are Python; minder has none)".into();
    }
    if let Some(k) = known.iter().find(|k| py_strip(&lower).starts_with(*k)) {
        return format!(" (did you mean [{}...]? there are blanks around the name)", k);
    }
    String::new()
}

/// One option being read: its lines (joined with "\n" at the end) and where it began.
#[derive(Debug)]
struct Opt {
    lines: Vec<String>,
    origin: Origin,
}

#[derive(Debug)]
struct Section {
    /// `[header]` as first written, for messages.
    label: String,
    class: Class,
    origin: Origin,
    options: BTreeMap<String, Opt>,
}

/// Where the lines being read go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Section(usize),
    Defaults,
    /// Read (so continuation lines find their option) but dropped: the sections that
    /// supervisord reads from the main file only, met in an included file.
    Ignored,
}

/// Every file read so far, merged as configparser merges them.
#[derive(Debug, Default)]
struct Sheet {
    sections: Vec<Section>,
    by_class: HashMap<Class, usize>,
    defaults: BTreeMap<String, Opt>,
    defaults_origin: Option<Origin>,
    ignored: BTreeMap<String, Opt>,
    warnings: Vec<Diagnostic>,
    errors: Vec<Diagnostic>,
}

impl Sheet {
    fn options_mut(&mut self, target: Target) -> &mut BTreeMap<String, Opt> {
        match target {
            Target::Section(i) => &mut self.sections[i].options,
            Target::Defaults => &mut self.defaults,
            Target::Ignored => &mut self.ignored,
        }
    }

    /// The target of a section header, creating or re-opening the section.
    fn open_section(&mut self, header: &str, origin: Origin, included: bool) -> Target {
        let class = classify(header);
        let label = format!("[{header}]");
        match &class {
            Class::Default => {
                if let Some(first) = &self.defaults_origin {
                    self.warnings.push(duplicate_section(&origin, &label, first));
                } else {
                    self.defaults_origin = Some(origin);
                }
                return Target::Defaults;
            }
            Class::Include if included => {
                self.warnings.push(Diagnostic::new(
                    origin,
                    label,
                    "ignored: supervisord does not follow an [include] inside an included file (only the main file's [include] counts)",
                ));
                self.ignored.clear();
                return Target::Ignored;
            }
            Class::Known(SectionKind::Ctl, _) if included => {
                self.warnings.push(Diagnostic::new(
                    origin,
                    label,
                    "ignored: supervisorctl reads [supervisorctl] from the main file only",
                ));
                self.ignored.clear();
                return Target::Ignored;
            }
            Class::Unknown(_) => {
                self.warnings.push(Diagnostic::new(
                    origin,
                    label,
                    format!(
                        "unknown section, ignored{} (supervisord ignores it silently)",
                        unknown_section_hint(header)
                    ),
                ));
                self.ignored.clear();
                return Target::Ignored;
            }
            _ => {}
        }
        if let Some(&i) = self.by_class.get(&class) {
            let first = self.sections[i].origin.clone();
            self.warnings.push(duplicate_section(&origin, &label, &first));
            return Target::Section(i);
        }
        self.sections.push(Section { label, class: class.clone(), origin, options: BTreeMap::new() });
        self.by_class.insert(class, self.sections.len() - 1);
        Target::Section(self.sections.len() - 1)
    }

    /// Reads one file's text into the sheet, as `RawConfigParser._read` does.
    fn read_text(&mut self, path: &Path, text: &str, included: bool) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let mut cursect: Option<Target> = None;
        let mut optname: Option<String> = None;
        let mut indent_level = 0usize;
        let mut bogus: Vec<Diagnostic> = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let lineno = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let origin = Origin::file(path, Some(lineno));
            let comment_start =
                if py_strip(line).starts_with(['#', ';']) { Some(0) } else { inline_comment_start(line) };
            let value = py_strip(&line[..comment_start.unwrap_or(line.len())]);
            if value.is_empty() {
                // A blank line inside a value is kept (and dropped again if it ends the
                // value); a comment line is not.
                if comment_start.is_none() {
                    if let (Some(t), Some(name)) = (cursect, &optname) {
                        if let Some(opt) = self.options_mut(t).get_mut(name) {
                            opt.lines.push(String::new());
                        }
                    }
                }
                continue;
            }
            let cur_indent = line.chars().take_while(|&c| py_isspace(c)).count();
            if let (Some(t), Some(name), true) = (cursect, &optname, cur_indent > indent_level) {
                if let Some(opt) = self.options_mut(t).get_mut(name) {
                    opt.lines.push(value.to_string());
                }
                continue;
            }
            indent_level = cur_indent;
            if let Some(header) = section_header(value) {
                cursect = Some(self.open_section(header, origin, included));
                optname = None;
                continue;
            }
            let Some(target) = cursect else {
                self.errors.push(Diagnostic::new(
                    origin,
                    "",
                    format!(
                        "{value:?} comes before any section header; the file must begin with a section such as [supervisord] (supervisord: \"File contains no section headers\")"
                    ),
                ));
                // supervisord stops at the first such line; so does minder, for this file.
                return;
            };
            let Some((name, val)) = option_line(value) else {
                bogus.push(Diagnostic::new(
                    origin,
                    "",
                    format!(
                        "cannot read {value:?}: a line must be a [section] header, an option (name = value or name: value), a comment (; or #) or an indented continuation of the option above"
                    ),
                ));
                continue;
            };
            if name.is_empty() {
                bogus.push(Diagnostic::new(
                    origin,
                    "",
                    format!("{value:?} has no option name before the '=' or ':'"),
                ));
                optname = None;
                continue;
            }
            let previous = self
                .options_mut(target)
                .insert(name.clone(), Opt { lines: vec![val.to_string()], origin: origin.clone() });
            if let (Some(prev), false) = (previous, target == Target::Ignored) {
                let section = match target {
                    Target::Section(i) => self.sections[i].label.as_str(),
                    _ => "[DEFAULT]",
                };
                self.warnings.push(Diagnostic::new(
                    origin,
                    format!("{section} {name}"),
                    format!("given again (first at {}); this later value is the one used", prev.origin),
                ));
            }
            optname = Some(name);
        }
        self.errors.extend(bogus);
    }

    /// supervisord's `expand_here`: once a file with an `[include]` has been read, and again
    /// after each included file, `%(here)s` in the values just read is replaced, as text, by
    /// that file's directory. (Textually, so `%%(here)s` becomes `%` and the directory — then
    /// a bare `%` — exactly as in supervisord.)
    fn replace_here(&mut self, file: &Path, dir: &str) {
        let all =
            self.sections.iter_mut().flat_map(|s| s.options.values_mut()).chain(self.defaults.values_mut());
        for opt in all {
            if opt.origin.path() == Some(file) {
                for line in &mut opt.lines {
                    if line.contains("%(here)s") {
                        *line = line.replace("%(here)s", dir);
                    }
                }
            }
        }
    }

    fn include_section(&self) -> Option<&Section> {
        self.by_class.get(&Class::Include).map(|&i| &self.sections[i])
    }
}

fn duplicate_section(origin: &Origin, label: &str, first: &Origin) -> Diagnostic {
    Diagnostic::new(
        origin.clone(),
        label.to_string(),
        format!(
            "this section is also given at {first}; supervisord merges the two (an option given in both takes the later value)"
        ),
    )
}

/// Where an inline comment starts: the first `;` or `#` at the start of the line or after
/// white space. This is CPython's loop verbatim, including its quirk: it looks at each
/// prefix's next occurrence in turn and stops at the first round that finds a comment, so in
/// `a;b ;c #d` the ` ;` is missed (the `;` of `a;b` used up the first round) and the comment
/// starts at ` #`.
fn inline_comment_start(line: &str) -> Option<usize> {
    let mut comment_start = usize::MAX;
    let mut prefixes: Vec<(char, Option<usize>)> = vec![(';', None), ('#', None)];
    while comment_start == usize::MAX && !prefixes.is_empty() {
        let mut next = Vec::new();
        for (prefix, last) in prefixes {
            let from = last.map_or(0, |i| i + 1);
            let Some(found) = line[from..].find(prefix).map(|i| i + from) else {
                continue;
            };
            next.push((prefix, Some(found)));
            let after_space = line[..found].chars().next_back().is_some_and(py_isspace);
            if found == 0 || after_space {
                comment_start = comment_start.min(found);
            }
        }
        prefixes = next;
    }
    (comment_start != usize::MAX).then_some(comment_start)
}

/// `[name]`: configparser's `\[(?P<header>.+)\]` matched at the start of the line, so the
/// name runs to the *last* `]` and anything after it is ignored.
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let close = rest.rfind(']')?;
    (close > 0).then(|| &rest[..close])
}

/// `name = value` or `name: value`: the name runs to the first `=` or `:`; both are stripped
/// and the name is lowercased (configparser's `optionxform`).
fn option_line(value: &str) -> Option<(String, &str)> {
    let at = value.find(['=', ':'])?;
    let name = value[..at].trim_end_matches(py_isspace).to_lowercase();
    Some((name, py_strip(&value[at + 1..])))
}

/// Reads `text` as a file's contents, or says why it cannot be.
fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = line_of(&String::from_utf8_lossy(good), good.len());
        Diagnostic::new(
            Origin::file(path, Some(line)),
            "",
            "is not valid UTF-8; supervisord reads configuration files as UTF-8 (convert it, e.g. with iconv)",
        )
    })?;
    if text.starts_with('\u{feff}') {
        return Err(Diagnostic::new(
            Origin::file(path, Some(1)),
            "",
            "begins with a byte-order mark, which supervisord cannot read (\"File contains no section headers\"); save the file as UTF-8 without BOM",
        ));
    }
    Ok(text)
}

fn dir_of(path: &Path) -> String {
    path.parent().unwrap_or(Path::new("/")).display().to_string()
}

pub(super) fn read(main: &Path, ctx: &Context) -> Result<RawConfig, ConfigErrors> {
    let bytes = super::file::read(main)
        .map_err(|e| ConfigErrors::one(Diagnostic::new(Origin::file(main, None), "", e.to_string())))?;
    let text = decode(main, bytes).map_err(ConfigErrors::one)?;
    let mut sheet = Sheet::default();
    let mut included = Vec::new();
    sheet.read_text(main, &text, false);
    if sheet.include_section().is_some() {
        let main_dir = dir_of(main);
        sheet.replace_here(main, &main_dir);
        for file in include_files(&mut sheet, main, ctx) {
            included.push(file.clone());
            match super::file::read(&file) {
                Ok(bytes) => match decode(&file, bytes) {
                    Ok(text) => {
                        sheet.read_text(&file, &text, true);
                        sheet.replace_here(&file, &dir_of(&file));
                    }
                    Err(e) => sheet.errors.push(e),
                },
                // A FIFO or a device would hang or exhaust supervisord; minder refuses it.
                Err(ReadError::Refused(why)) => {
                    sheet.errors.push(Diagnostic::new(Origin::file(&file, None), "[include] files", why))
                }
                Err(ReadError::Io(e)) => sheet.warnings.push(Diagnostic::new(
                    Origin::file(&file, None),
                    "[include] files",
                    format!("cannot read this included file, skipped (supervisord skips it silently): {e}"),
                )),
            }
        }
    }
    if !sheet.errors.is_empty() {
        return Err(ConfigErrors { errors: sheet.errors });
    }
    if !sheet.sections.iter().any(|s| s.class == Class::Known(SectionKind::Daemon, String::new())) {
        return Err(ConfigErrors::one(Diagnostic::new(
            Origin::file(main, None),
            "[supervisord]",
            "required: supervisord.conf must have a [supervisord] section (it may be empty)",
        )));
    }
    let to_raw = |options: BTreeMap<String, Opt>| -> BTreeMap<String, RawValue> {
        options
            .into_iter()
            .map(|(name, opt)| {
                let joined = opt.lines.join("\n");
                let value = joined.trim_end_matches(py_isspace).to_string();
                (name, RawValue { value: Raw::Str(value), origin: opt.origin })
            })
            .collect()
    };
    let sections = sheet
        .sections
        .into_iter()
        .filter_map(|s| match s.class {
            Class::Known(kind, name) => {
                Some(RawSection { kind, name, options: to_raw(s.options), origin: s.origin })
            }
            _ => None,
        })
        .collect();
    Ok(RawConfig {
        path: main.to_path_buf(),
        toml: false,
        sections,
        defaults: to_raw(sheet.defaults),
        warnings: sheet.warnings,
        included,
    })
}

/// The files the main file's `[include] files` names, as supervisord finds them: each
/// whitespace-separated pattern expanded (`%(here)s`, `%(host_node_name)s`, `%(ENV_X)s`),
/// joined to the main file's directory, globbed as Python's `glob.glob` does (`*` does not
/// match a leading dot or cross a `/`), and its matches taken in sorted order. A pattern that
/// matches nothing is a warning, as in supervisord.
fn include_files(sheet: &mut Sheet, main: &Path, ctx: &Context) -> Vec<PathBuf> {
    let Some(section) = sheet.include_section() else {
        return Vec::new();
    };
    let include_origin = section.origin.clone();
    let files = section
        .options
        .get("files")
        .or_else(|| sheet.defaults.get("files"))
        .map(|o| (o.lines.join("\n"), o.origin.clone()));
    let unknown: Vec<Diagnostic> = section
        .options
        .iter()
        .filter(|(k, _)| k.as_str() != "files")
        .map(|(k, o)| {
            Diagnostic::new(
                o.origin.clone(),
                format!("[include] {k}"),
                "unknown option, ignored ([include] has only files)",
            )
        })
        .collect();
    sheet.warnings.extend(unknown);
    let Some((files, origin)) = files else {
        sheet.errors.push(Diagnostic::new(
            include_origin,
            "[include] files",
            "required: [include] must say which files to read, e.g. files = conf.d/*.conf",
        ));
        return Vec::new();
    };
    let main_dir = main.parent().unwrap_or(Path::new("/"));
    let vars = Vars::new()
        .with_env(&ctx.env)
        .str("here", main_dir.display().to_string())
        .str("host_node_name", ctx.host_node_name.clone());
    let files = match expand::expand(files.trim_end_matches(py_isspace), &vars) {
        Ok(f) => f,
        Err(e) => {
            sheet.errors.push(Diagnostic::new(origin, "[include] files", e.to_string()));
            return Vec::new();
        }
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in files.split(py_isspace).filter(|p| !p.is_empty()) {
        let full = main_dir.join(pattern);
        let Some(text) = full.to_str() else {
            sheet.errors.push(Diagnostic::new(
                origin.clone(),
                "[include] files",
                format!("{} is not valid UTF-8", full.display()),
            ));
            continue;
        };
        // Python's non-recursive glob reads `**` as `*`; the glob crate would recurse.
        let mut collapsed = text.to_string();
        while collapsed.contains("**") {
            collapsed = collapsed.replace("**", "*");
        }
        let matches = match glob::glob_with(&collapsed, options) {
            Ok(m) => m,
            Err(e) => {
                sheet.errors.push(Diagnostic::new(
                    origin.clone(),
                    "[include] files",
                    format!("bad pattern {pattern:?}: {e}"),
                ));
                continue;
            }
        };
        let mut found: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
        if found.is_empty() {
            sheet.warnings.push(Diagnostic::new(
                origin.clone(),
                "[include] files",
                format!("no file matches {}", full.display()),
            ));
            continue;
        }
        // Python sorts the names as strings, not path components ("a-b" before "a/").
        found.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        for f in found {
            // A directory matched by a pattern is skipped silently, as configparser does.
            let f = normpath(&f);
            if f.is_dir() || f == main || out.contains(&f) {
                continue;
            }
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Sheet {
        let mut sheet = Sheet::default();
        sheet.read_text(Path::new("/etc/s.conf"), text, false);
        sheet
    }

    fn value(sheet: &Sheet, section: &str, key: &str) -> Option<String> {
        let class = classify(section);
        let s = &sheet.sections[*sheet.by_class.get(&class)?];
        let opt = s.options.get(key)?;
        Some(opt.lines.join("\n").trim_end_matches(py_isspace).to_string())
    }

    #[test]
    fn inline_comments_need_white_space_before_them() {
        // Each expected value is what Python 3.11's configparser gives with supervisord's
        // settings (checked with UnhosedConfigParser).
        let s = parse(
            "[program:x]\n\
             a = a;b ;c #d\n\
             b = x ;y\n\
             c = x#y ; z\n\
             d = x\t;tab\n\
             command=bash -c 'a ; b'\n\
             e=a;b\n\
             f=#whole\n\
             g = url#frag\n",
        );
        let v = |k| value(&s, "program:x", k);
        assert_eq!(v("a").as_deref(), Some("a;b ;c"));
        assert_eq!(v("b").as_deref(), Some("x"));
        assert_eq!(v("c").as_deref(), Some("x#y"));
        assert_eq!(v("d").as_deref(), Some("x"));
        assert_eq!(v("command").as_deref(), Some("bash -c 'a"));
        assert_eq!(v("e").as_deref(), Some("a;b"));
        assert_eq!(v("f").as_deref(), Some("#whole"));
        assert_eq!(v("g").as_deref(), Some("url#frag"));
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }

    #[test]
    fn continuation_lines_keys_and_separators() {
        let s = parse(
            "[program:x]\n\
             e:colon = v\n\
             UPPER = up\n\
             empty =\n\
             h = first\n  second\n\n  third\n   ; comment line\n  fourth\n\n\
             env=\n    A=\"1\",\n    B=\"2\"\n",
        );
        let v = |k| value(&s, "program:x", k);
        assert_eq!(v("e").as_deref(), Some("colon = v"));
        assert_eq!(v("upper").as_deref(), Some("up"));
        assert_eq!(v("empty").as_deref(), Some(""));
        assert_eq!(v("h").as_deref(), Some("first\nsecond\n\nthird\nfourth"));
        assert_eq!(v("env").as_deref(), Some("\nA=\"1\",\nB=\"2\""));
    }

    #[test]
    fn crlf_lone_cr_and_no_final_newline() {
        let s = parse("[program:x]\r\ncommand = a\r\n  b\rautostart=false");
        assert_eq!(value(&s, "program:x", "command").as_deref(), Some("a\nb"));
        assert_eq!(value(&s, "program:x", "autostart").as_deref(), Some("false"));
        let origin = &s.sections[0].options["autostart"].origin;
        assert_eq!(origin.to_string(), "/etc/s.conf:4");
    }

    #[test]
    fn section_headers_merge_and_keep_their_case() {
        let s = parse(
            "[program:x] ; comment\na=1\n[program:x]\nb=2\na=3\n[Program:y]\nc=1\n[program: z ]\nd=1\n[a]b]\n",
        );
        assert_eq!(value(&s, "program:x", "a").as_deref(), Some("3"));
        assert_eq!(value(&s, "program:x", "b").as_deref(), Some("2"));
        assert_eq!(value(&s, "program:z", "d").as_deref(), Some("1"));
        let text: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|w| w.contains("/etc/s.conf:3") && w.contains("also given at /etc/s.conf:1")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|w| w.starts_with("/etc/s.conf:5: [program:x] a: given again")
                && w.contains("first at /etc/s.conf:2")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|w| w.contains("[Program:y]") && w.contains("did you mean [program:y]")),
            "{text:?}"
        );
        assert!(text.iter().any(|w| w.contains("[a]b]")), "{text:?}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let s = parse("[supervisord]\nthis is not an option\n= nameless\n[program:x]\nok=1\n");
        let text: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("/etc/s.conf:2: cannot read \"this is not an option\""));
        assert!(text[1].starts_with("/etc/s.conf:3: "));
        let s = parse("; comment\ncommand=x\n[supervisord]\n");
        let text: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1);
        assert!(text[0].starts_with("/etc/s.conf:2: \"command=x\" comes before any section"));
    }

    #[test]
    fn an_indented_line_after_a_header_is_not_a_continuation() {
        let s = parse("[program:x]\n  command=a\n  autostart=false\n");
        assert_eq!(value(&s, "program:x", "command").as_deref(), Some("a"));
        assert_eq!(value(&s, "program:x", "autostart").as_deref(), Some("false"));
    }

    #[test]
    fn defaults_are_kept_apart() {
        let s = parse("[DEFAULT]\nautorestart=true\n[program:x]\ncommand=a\n");
        assert_eq!(s.defaults["autorestart"].lines, vec!["true".to_string()]);
        assert!(value(&s, "program:x", "autorestart").is_none());
    }

    #[test]
    fn here_is_replaced_as_text() {
        let mut s = parse("[program:x]\ncommand=%(here)s/run %%(here)s\n");
        s.replace_here(Path::new("/etc/s.conf"), "/etc");
        assert_eq!(value(&s, "program:x", "command").as_deref(), Some("/etc/run %/etc"));
    }
}
