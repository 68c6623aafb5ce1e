//! supervisord's `%(name)s` expansions, with Python's %-format rules.
//!
//! supervisord runs every option value through Python's `value % expansions`; minder does the
//! same with the same results: `%(process_num)02d`, `%(program_name)-10s`, `%%` for a literal
//! percent sign, and an error for a bare `%` or an unknown name.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A value that may be substituted into an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Str(String),
    Int(i64),
}

/// The names available to one option, plus the daemon's environment as `ENV_NAME`.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    vars: BTreeMap<String, Var>,
}

impl Vars {
    pub fn new() -> Self {
        Vars::default()
    }

    /// Adds `ENV_X` for every variable X of `env`.
    pub fn with_env<'a>(mut self, env: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        for (k, v) in env {
            self.vars.insert(format!("ENV_{k}"), Var::Str(v.clone()));
        }
        self
    }

    pub fn set(&mut self, name: &str, value: Var) -> &mut Self {
        self.vars.insert(name.to_string(), value);
        self
    }

    pub fn str(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_string(), Var::Str(value.into()));
        self
    }

    pub fn int(mut self, name: &str, value: i64) -> Self {
        self.vars.insert(name.to_string(), Var::Int(value));
        self
    }

    /// The names other than `ENV_*`, for "available: ..." in messages.
    fn names(&self) -> String {
        let mut names: Vec<&str> =
            self.vars.keys().map(String::as_str).filter(|k| !k.starts_with("ENV_")).collect();
        names.push("ENV_<NAME>");
        names.join(", ")
    }
}

/// Why an expansion failed; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "a '%' must start an expansion like %(program_name)s; write '%%' for a literal '%' (at byte {at})"
    )]
    BarePercent { at: usize },
    #[error("'%(' at byte {at} has no closing ')'")]
    Unclosed { at: usize },
    #[error("%({name}) is not a known name here; available: {available}")]
    Unknown { name: String, available: String },
    #[error("%({name}){conv}: {why}")]
    Format { name: String, conv: char, why: String },
}

/// Expands every `%(name)X` in `text` and turns `%%` into `%`.
pub fn expand(text: &str, vars: &Vars) -> Result<String, ExpandError> {
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        out.push_str(&text[literal_start..i]);
        let at = i;
        i += 1;
        match bytes.get(i) {
            Some(b'%') => {
                out.push('%');
                i += 1;
            }
            Some(b'(') => {
                // Python allows nested parentheses inside the key.
                let mut depth = 1;
                let key_start = i + 1;
                let mut j = key_start;
                while j < bytes.len() && depth > 0 {
                    match bytes[j] {
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                if depth > 0 {
                    return Err(ExpandError::Unclosed { at });
                }
                let name = &text[key_start..j - 1];
                let (spec, next) = parse_spec(text, j).ok_or(ExpandError::BarePercent { at })?;
                let value = vars.vars.get(name).ok_or_else(|| ExpandError::Unknown {
                    name: name.to_string(),
                    available: vars.names(),
                })?;
                format_one(&mut out, name, value, &spec)?;
                i = next;
            }
            _ => return Err(ExpandError::BarePercent { at }),
        }
        literal_start = i;
    }
    out.push_str(&text[literal_start..]);
    Ok(out)
}

/// A conversion spec: `[flags][width][.precision][length]type`.
struct Spec {
    left: bool,
    zero: bool,
    plus: bool,
    space: bool,
    alt: bool,
    width: usize,
    precision: Option<usize>,
    conv: char,
}

fn parse_spec(text: &str, mut i: usize) -> Option<(Spec, usize)> {
    let b = text.as_bytes();
    let mut spec = Spec {
        left: false,
        zero: false,
        plus: false,
        space: false,
        alt: false,
        width: 0,
        precision: None,
        conv: 's',
    };
    while let Some(&c) = b.get(i) {
        match c {
            b'-' => spec.left = true,
            b'0' => spec.zero = true,
            b'+' => spec.plus = true,
            b' ' => spec.space = true,
            b'#' => spec.alt = true,
            _ => break,
        }
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        text[start..*i].parse::<usize>().ok()
    };
    spec.width = digits(&mut i).unwrap_or(0);
    if b.get(i) == Some(&b'.') {
        i += 1;
        spec.precision = Some(digits(&mut i).unwrap_or(0));
    }
    while matches!(b.get(i), Some(b'h' | b'l' | b'L')) {
        i += 1;
    }
    let conv = *b.get(i)?;
    if !b"diouxXeEfFgGcrsa".contains(&conv) {
        return None;
    }
    spec.conv = conv as char;
    Some((spec, i + 1))
}

fn format_one(out: &mut String, name: &str, value: &Var, spec: &Spec) -> Result<(), ExpandError> {
    let fail =
        |why: &str| ExpandError::Format { name: name.to_string(), conv: spec.conv, why: why.to_string() };
    let body = match (spec.conv, value) {
        ('s', Var::Str(s)) => truncate(s, spec.precision),
        ('r' | 'a', Var::Str(s)) => truncate(&python_repr(s), spec.precision),
        ('s' | 'r' | 'a', Var::Int(n)) => truncate(&n.to_string(), spec.precision),
        ('d' | 'i' | 'u', Var::Int(n)) => signed(*n, spec, |m| m.to_string()),
        ('x', Var::Int(n)) => signed(*n, spec, |m| alt(spec, "0x", format!("{m:x}"))),
        ('X', Var::Int(n)) => signed(*n, spec, |m| alt(spec, "0X", format!("{m:X}"))),
        ('o', Var::Int(n)) => signed(*n, spec, |m| alt(spec, "0o", format!("{m:o}"))),
        ('f' | 'F', Var::Int(n)) => {
            let p = spec.precision.unwrap_or(6);
            signed(*n, spec, |m| format!("{m}.{}", "0".repeat(p)).trim_end_matches('.').into())
        }
        (_, Var::Str(_)) => return Err(fail("needs a number, but this name is text")),
        _ => return Err(fail("this conversion is not supported; use s or d")),
    };
    pad(out, &body, spec);
    Ok(())
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

fn alt(spec: &Spec, prefix: &str, digits: String) -> String {
    if spec.alt {
        format!("{prefix}{digits}")
    } else {
        digits
    }
}

/// Formats a signed integer's magnitude with `digits`, then puts the sign in front.
fn signed(n: i64, spec: &Spec, digits: impl Fn(u64) -> String) -> String {
    let mut body = digits(n.unsigned_abs());
    if let Some(p) = spec.precision.filter(|_| !matches!(spec.conv, 'f' | 'F')) {
        while body.len() < p {
            body.insert(0, '0');
        }
    }
    let sign = if n < 0 {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    if spec.zero && !spec.left && spec.width > sign.len() + body.len() {
        let zeros = spec.width - sign.len() - body.len();
        format!("{sign}{}{body}", "0".repeat(zeros))
    } else {
        format!("{sign}{body}")
    }
}

fn pad(out: &mut String, body: &str, spec: &Spec) {
    let len = body.chars().count();
    if len >= spec.width {
        out.push_str(body);
    } else if spec.left {
        let _ = write!(out, "{body}{}", " ".repeat(spec.width - len));
    } else {
        let _ = write!(out, "{}{body}", " ".repeat(spec.width - len));
    }
}

/// Python's `repr` of a str, for `%(name)r`.
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::new().str("program_name", "web").int("process_num", 3).str("here", "/etc")
    }

    #[test]
    fn python_formats() {
        // Each expected value is what Python 3 prints for the same format and values.
        let cases = [
            ("%(program_name)s", "web"),
            ("%(program_name)s_%(process_num)02d", "web_03"),
            ("%(process_num)d", "3"),
            ("%(process_num)s", "3"),
            ("%(process_num)5d|", "    3|"),
            ("%(process_num)-5d|", "3    |"),
            ("%(process_num)+d", "+3"),
            ("%(process_num)03x", "003"),
            ("%(process_num)#o", "0o3"),
            ("%(program_name)6s|", "   web|"),
            ("%(program_name)-6s|", "web   |"),
            ("%(program_name).2s", "we"),
            ("%(program_name)r", "'web'"),
            ("%(process_num).3d", "003"),
            ("100%% of %(here)s", "100% of /etc"),
            ("no expansions", "no expansions"),
            ("%%(program_name)s", "%(program_name)s"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars()).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        assert_eq!(expand("50%", &vars()), Err(ExpandError::BarePercent { at: 2 }));
        assert_eq!(expand("a % b", &vars()), Err(ExpandError::BarePercent { at: 2 }));
        assert_eq!(expand("%(x", &vars()), Err(ExpandError::Unclosed { at: 0 }));
        assert_eq!(expand("%(here)", &vars()), Err(ExpandError::BarePercent { at: 0 }));
        let e = expand("%(nope)s", &vars()).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("program_name"), "{e}");
        let e = expand("%(program_name)d", &vars()).unwrap_err().to_string();
        assert!(e.contains("needs a number"), "{e}");
    }

    #[test]
    fn env_names() {
        let env = [("HOME".to_string(), "/root".to_string())];
        let v = Vars::new().with_env(env.iter().map(|(k, v)| (k, v)));
        assert_eq!(expand("%(ENV_HOME)s/x", &v).as_deref(), Ok("/root/x"));
    }
}
