//! Supervisor's XML-RPC wire format, both halves of it, in one codec:
//! - the server half (minderd's `/RPC2`): decoding a `methodCall`, encoding a `methodResponse`
//!   or a fault, byte for byte as Python's `xmlrpc.client.dumps(..., methodresponse=True)`
//!   writes them (which is what supervisord sends, and what its clients' parsers have only ever
//!   seen);
//! - the client half (minder-fleet talking to supervisord): encoding a `methodCall` as Python's
//!   `xmlrpc.client` does, and decoding a `methodResponse` into a value or a [`Fault`].
//!
//! The decoder is what stands between the network and the program, in both directions (a
//! node the fleet polls is as untrusted as a client minderd serves), so it is strict about size
//! and lenient about spelling, for calls and responses alike:
//! - no document type declaration is accepted, so no entity can be defined and expanded (the
//!   "billion laughs"); only XML's five predefined entities and character references exist;
//! - nesting deeper than [`MAX_DEPTH`] and more than [`MAX_VALUES`] values are refused before
//!   they are built, so a hostile document costs at most its own size (which the HTTP layer on
//!   either side bounds) and a small, fixed stack;
//! - as Python's parser does, a `<value>` with no type element is a string, `<i4>`, `<int>` and
//!   `<i8>` are integers, `<nil/>` is none, and whitespace between elements is ignored.
//!
//! Turning parameters into what a method wants (Python's conversions of strings to numbers and
//! booleans, which clients such as supervisord-monitor rely on) is the dispatcher's job, on the
//! [`Value`]s this module produces.

use std::fmt::Write as _;

use base64::Engine as _;
use quick_xml::events::Event;

/// How deeply values may nest (arrays and structs inside each other).
pub const MAX_DEPTH: usize = 32;
/// How many values one call may carry in all.
pub const MAX_VALUES: usize = 100_000;

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Double(f64),
    String(String),
    /// `dateTime.iso8601`, kept as written.
    DateTime(String),
    Base64(Vec<u8>),
    Array(Vec<Value>),
    /// Members in the order they came (Python's dicts keep it too).
    Struct(Vec<(String, Value)>),
    Nil,
}

impl Value {
    /// A struct from `(name, value)` pairs.
    pub fn record<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Struct(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The member `name` of a struct.
    pub fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// A decoded `methodCall`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// A fault a server answered instead of a value: supervisord's `faultCode` (its `Faults`
/// numbers) and `faultString` (`NAME` or `NAME: detail`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{string} (fault {code})")]
pub struct Fault {
    pub code: i64,
    pub string: String,
}

/// Why a document is not a call (or response) this side will act on this server will run. The message never repeats more than
/// a short piece of the client's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not well-formed XML: {0}")]
    Syntax(String),
    #[error("document type declarations are not accepted")]
    Doctype,
    #[error("values nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_VALUES} values in one call")]
    TooMany,
    #[error("not an XML-RPC call or response: {0}")]
    Shape(String),
}

/// The XML of a request reduced to what XML-RPC is made of: elements and their text.
#[derive(Debug, PartialEq)]
enum Token {
    Open(String),
    Close(String),
    /// Character data, references resolved; consecutive pieces are joined.
    Text(String),
}

/// At most this much of a client's text goes into an error message.
const ECHO: usize = 64;

fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn tokens(body: &[u8]) -> Result<Vec<Token>, DecodeError> {
    let syntax = |e: &dyn std::fmt::Display| DecodeError::Syntax(echo(&e.to_string()));
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().expand_empty_elements = true;
    reader.config_mut().check_end_names = true;
    let mut out: Vec<Token> = Vec::new();
    let mut depth = 0usize;
    let push_text = |out: &mut Vec<Token>, s: &str| match out.last_mut() {
        Some(Token::Text(t)) => t.push_str(s),
        _ => out.push(Token::Text(s.to_string())),
    };
    loop {
        match reader.read_event().map_err(|e| syntax(&e))? {
            Event::Start(e) => {
                depth += 1;
                // Elements per value level: value, type, member/data, name; the budget is in
                // values, checked again by the parser, but the raw nesting is bounded here so
                // that a document of nothing but open tags is refused early.
                if depth > 4 * MAX_DEPTH + 8 {
                    return Err(DecodeError::TooDeep);
                }
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                out.push(Token::Open(name));
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                out.push(Token::Close(String::from_utf8_lossy(e.name().as_ref()).into_owned()));
            }
            Event::Empty(_) => unreachable!("expand_empty_elements is set"),
            Event::Text(t) => push_text(&mut out, &t.decode().map_err(|e| syntax(&e))?),
            Event::CData(t) => push_text(&mut out, &t.decode().map_err(|e| syntax(&e))?),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| syntax(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| syntax(&e))?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_string(),
                            None => {
                                return Err(DecodeError::Syntax(format!("unknown entity &{};", echo(&name))))
                            }
                        }
                    }
                };
                push_text(&mut out, &resolved);
            }
            Event::DocType(_) => return Err(DecodeError::Doctype),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(DecodeError::Syntax("the document ends inside an element".into()));
    }
    Ok(out)
}

/// Walks the tokens of a call.
struct Parser {
    tokens: std::iter::Peekable<std::vec::IntoIter<Token>>,
    values: usize,
}

impl Parser {
    /// Skips text that is only whitespace (between elements).
    fn skip_space(&mut self) -> Result<(), DecodeError> {
        while let Some(Token::Text(t)) = self.tokens.peek() {
            if !t.trim().is_empty() {
                return Err(DecodeError::Shape(format!("unexpected text {:?}", echo(t.trim()))));
            }
            self.tokens.next();
        }
        Ok(())
    }

    fn open(&mut self, name: &str) -> Result<(), DecodeError> {
        self.skip_space()?;
        match self.tokens.next() {
            Some(Token::Open(n)) if n == name => Ok(()),
            other => Err(self.expected(&format!("<{name}>"), other)),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), DecodeError> {
        self.skip_space()?;
        match self.tokens.next() {
            Some(Token::Close(n)) if n == name => Ok(()),
            other => Err(self.expected(&format!("</{name}>"), other)),
        }
    }

    /// Whether the next element opens `name` (after whitespace).
    fn at_open(&mut self, name: &str) -> Result<bool, DecodeError> {
        self.skip_space()?;
        Ok(matches!(self.tokens.peek(), Some(Token::Open(n)) if n == name))
    }

    fn expected(&self, what: &str, got: Option<Token>) -> DecodeError {
        let got = match got {
            None => "the end".to_string(),
            Some(Token::Open(n)) => format!("<{}>", echo(&n)),
            Some(Token::Close(n)) => format!("</{}>", echo(&n)),
            Some(Token::Text(t)) => format!("text {:?}", echo(&t)),
        };
        DecodeError::Shape(format!("expected {what}, found {got}"))
    }

    /// The text inside an element whose open tag was just read, and its close tag.
    fn text_until(&mut self, name: &str) -> Result<String, DecodeError> {
        let text = match self.tokens.peek() {
            Some(Token::Text(_)) => match self.tokens.next() {
                Some(Token::Text(t)) => t,
                _ => unreachable!("peeked"),
            },
            _ => String::new(),
        };
        match self.tokens.next() {
            Some(Token::Close(n)) if n == name => Ok(text),
            other => Err(self.expected(&format!("</{name}>"), other)),
        }
    }

    fn call(&mut self) -> Result<Call, DecodeError> {
        self.open("methodCall")?;
        self.open("methodName")?;
        let method = self.text_until("methodName")?.trim().to_string();
        let mut params = Vec::new();
        if self.at_open("params")? {
            self.open("params")?;
            while self.at_open("param")? {
                self.open("param")?;
                params.push(self.value(1)?);
                self.close("param")?;
            }
            self.close("params")?;
        }
        self.close("methodCall")?;
        self.skip_space()?;
        if let Some(t) = self.tokens.next() {
            return Err(self.expected("the end of the document", Some(t)));
        }
        Ok(Call { method, params })
    }

    fn response(&mut self) -> Result<Result<Value, Fault>, DecodeError> {
        self.open("methodResponse")?;
        let answer = if self.at_open("fault")? {
            self.open("fault")?;
            let v = self.value(1)?;
            self.close("fault")?;
            let code = match v.member("faultCode") {
                Some(Value::Int(n)) => *n,
                _ => return Err(DecodeError::Shape("a fault without an integer faultCode".into())),
            };
            let string = match v.member("faultString") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(DecodeError::Shape("a fault without a faultString".into())),
            };
            Err(Fault { code, string })
        } else {
            // Exactly one parameter: that is what a response is.
            self.open("params")?;
            self.open("param")?;
            let v = self.value(1)?;
            self.close("param")?;
            self.close("params")?;
            Ok(v)
        };
        self.close("methodResponse")?;
        self.skip_space()?;
        if let Some(t) = self.tokens.next() {
            return Err(self.expected("the end of the document", Some(t)));
        }
        Ok(answer)
    }

    /// One `<value>…</value>`, at nesting level `depth`.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(DecodeError::TooMany);
        }
        self.open("value")?;
        // Untyped: `<value>text</value>` is a string, whitespace and all.
        let leading = match self.tokens.peek() {
            Some(Token::Text(_)) => match self.tokens.next() {
                Some(Token::Text(t)) => Some(t),
                _ => unreachable!("peeked"),
            },
            _ => None,
        };
        if let Some(Token::Close(n)) = self.tokens.peek() {
            if n == "value" {
                self.tokens.next();
                return Ok(Value::String(leading.unwrap_or_default()));
            }
        }
        if let Some(t) = &leading {
            if !t.trim().is_empty() {
                return Err(DecodeError::Shape(format!("text {:?} before a typed value", echo(t.trim()))));
            }
        }
        let ty = match self.tokens.next() {
            Some(Token::Open(n)) => n,
            other => return Err(self.expected("a value", other)),
        };
        let v = match ty.as_str() {
            "string" => Value::String(self.text_until("string")?),
            "i4" | "int" | "i8" | "i1" | "i2" | "ex:i8" | "ex:i1" | "ex:i2" => {
                let t = self.text_until(&ty)?;
                Value::Int(
                    t.trim()
                        .parse()
                        .map_err(|_| DecodeError::Shape(format!("{:?} is not an integer", echo(t.trim()))))?,
                )
            }
            "boolean" => {
                let t = self.text_until("boolean")?;
                match t.trim() {
                    "0" => Value::Bool(false),
                    "1" => Value::Bool(true),
                    other => return Err(DecodeError::Shape(format!("bad boolean value {:?}", echo(other)))),
                }
            }
            "double" => {
                let t = self.text_until("double")?;
                Value::Double(
                    t.trim()
                        .parse()
                        .map_err(|_| DecodeError::Shape(format!("{:?} is not a number", echo(t.trim()))))?,
                )
            }
            "dateTime.iso8601" => Value::DateTime(self.text_until(&ty)?.trim().to_string()),
            "base64" => {
                let t = self.text_until("base64")?;
                let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                Value::Base64(
                    base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .map_err(|e| DecodeError::Shape(format!("bad base64: {e}")))?,
                )
            }
            "nil" | "ex:nil" => {
                self.text_until(&ty)?;
                Value::Nil
            }
            "array" => {
                self.open("data")?;
                let mut items = Vec::new();
                while self.at_open("value")? {
                    items.push(self.value(depth + 1)?);
                }
                self.close("data")?;
                self.close("array")?;
                Value::Array(items)
            }
            "struct" => {
                let mut members = Vec::new();
                while self.at_open("member")? {
                    self.open("member")?;
                    self.open("name")?;
                    let name = self.text_until("name")?;
                    members.push((name, self.value(depth + 1)?));
                    self.close("member")?;
                }
                self.close("struct")?;
                Value::Struct(members)
            }
            other => return Err(DecodeError::Shape(format!("unknown type <{}>", echo(other)))),
        };
        self.close("value")?;
        Ok(v)
    }
}

/// Decodes a `methodCall` document.
pub fn decode_call(body: &[u8]) -> Result<Call, DecodeError> {
    let tokens = tokens(body)?;
    Parser { tokens: tokens.into_iter().peekable(), values: 0 }.call()
}

/// Decodes a `methodResponse` document: the value it carries, or the fault. The same bounds
/// as [`decode_call`] apply (no DOCTYPE, [`MAX_DEPTH`], [`MAX_VALUES`]).
pub fn decode_response(body: &[u8]) -> Result<Result<Value, Fault>, DecodeError> {
    let tokens = tokens(body)?;
    Parser { tokens: tokens.into_iter().peekable(), values: 0 }.response()
}

/// Appends `s` with XML's special characters escaped as Python's `xml.sax.saxutils.escape`
/// does. Characters XML 1.0 cannot carry at all (most C0 controls) become U+FFFD: Python
/// would write them raw and every client's parser would reject the whole response.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

fn encode_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::Int(n) => {
            let _ = write!(out, "<int>{n}</int>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
        }
        Value::Double(d) => {
            // Python writes repr(float): "1.0", not "1".
            let _ = write!(out, "<double>{d:?}</double>");
        }
        Value::String(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(b) => {
            // Python's base64.encodebytes: lines of 76 characters, each ending in a newline.
            out.push_str("<base64>\n");
            let text = base64::engine::general_purpose::STANDARD.encode(b);
            for line in text.as_bytes().chunks(76) {
                out.push_str(std::str::from_utf8(line).unwrap_or_default());
                out.push('\n');
            }
            out.push_str("</base64>");
        }
        Value::Nil => {
            // Python writes no newline after a nil.
            out.push_str("<nil/></value>");
            return;
        }
        Value::Array(items) => {
            out.push_str("<array><data>\n");
            for item in items {
                encode_value(out, item);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>\n");
            for (name, value) in members {
                out.push_str("<member>\n<name>");
                escape_into(out, name);
                out.push_str("</name>\n");
                encode_value(out, value);
                out.push_str("</member>\n");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>\n");
}

/// A `methodResponse` carrying `value`, as Python's `xmlrpc.client.dumps` writes it.
pub fn encode_response(value: &Value) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n");
    encode_value(&mut out, value);
    out.push_str("</param>\n</params>\n</methodResponse>\n");
    out
}

/// A fault response: `faultString` is supervisord's `NAME` or `NAME: detail`.
pub fn encode_fault(code: i64, message: &str) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse>\n<fault>\n");
    encode_value(
        &mut out,
        &Value::record([("faultCode", Value::Int(code)), ("faultString", Value::from(message))]),
    );
    out.push_str("</fault>\n</methodResponse>\n");
    out
}

/// A `methodCall` document, as Python's `xmlrpc.client` writes one (the fleet's calls to
/// supervisord, and tests).
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodCall>\n<methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName>\n<params>\n");
    for p in params {
        out.push_str("<param>\n");
        encode_value(&mut out, p);
        out.push_str("</param>\n");
    }
    out.push_str("</params>\n</methodCall>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(xml: &str) -> Result<Call, DecodeError> {
        decode_call(xml.as_bytes())
    }

    #[test]
    fn a_call_with_every_type() {
        let c = call(
            "<?xml version='1.0'?>\n<methodCall><methodName>supervisor.startProcess</methodName>\n\
             <params><param><value><string>web &amp; &lt;co&gt; &#233;</string></value></param>\
             <param><value>untyped  </value></param>\
             <param><value><boolean>1</boolean></value></param>\
             <param><value><i4> -42 </i4></value></param>\
             <param><value><double>1.5</double></value></param>\
             <param><value><base64>aGVs\nbG8=</base64></value></param>\
             <param><value><nil/></value></param>\
             <param><value><array><data><value><int>1</int></value><value>x</value></data></array></value></param>\
             <param><value><struct><member><name>a</name><value><string/></value></member></struct></value></param>\
             <param><value/></param>\
             </params></methodCall>",
        )
        .expect("decodes");
        assert_eq!(c.method, "supervisor.startProcess");
        assert_eq!(
            c.params,
            vec![
                Value::from("web & <co> é"),
                Value::from("untyped  "),
                Value::Bool(true),
                Value::Int(-42),
                Value::Double(1.5),
                Value::Base64(b"hello".to_vec()),
                Value::Nil,
                Value::Array(vec![Value::Int(1), Value::from("x")]),
                Value::record([("a", Value::from(""))]),
                Value::from(""),
            ]
        );
    }

    #[test]
    fn no_params_and_cdata() {
        let c = call("<methodCall><methodName>system.listMethods</methodName></methodCall>").expect("ok");
        assert_eq!((c.method.as_str(), c.params.len()), ("system.listMethods", 0));
        let c = call("<methodCall><methodName>a.b</methodName><params><param><value><string><![CDATA[<x>]]></string></value></param></params></methodCall>")
            .expect("ok");
        assert_eq!(c.params, vec![Value::from("<x>")]);
    }

    #[test]
    fn a_billion_laughs_is_refused_without_expanding_anything() {
        let lol = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n\
                   <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n]>\n\
                   <methodCall><methodName>&lol2;</methodName></methodCall>";
        assert_eq!(call(lol), Err(DecodeError::Doctype));
        // An entity nobody defined is an error, not an empty string.
        assert!(matches!(
            call("<methodCall><methodName>&lol;</methodName></methodCall>"),
            Err(DecodeError::Syntax(m)) if m.contains("&lol;")
        ));
    }

    #[test]
    fn deep_nesting_is_refused_before_it_costs_stack() {
        let n = 100_000;
        let doc = format!(
            "<methodCall><methodName>a.b</methodName><params><param>{}{}</param></params></methodCall>",
            "<value><array><data>".repeat(n),
            "</data></array></value>".repeat(n)
        );
        assert_eq!(call(&doc), Err(DecodeError::TooDeep));
        // Just inside the limit is fine.
        let ok = MAX_DEPTH;
        let doc = format!(
            "<methodCall><methodName>a.b</methodName><params><param>{}{}</param></params></methodCall>",
            "<value><array><data>".repeat(ok),
            "</data></array></value>".repeat(ok)
        );
        assert!(call(&doc).is_ok(), "{:?}", call(&doc));
        let too_deep = format!(
            "<methodCall><methodName>a.b</methodName><params><param>{}{}</param></params></methodCall>",
            "<value><array><data>".repeat(ok + 1),
            "</data></array></value>".repeat(ok + 1)
        );
        assert_eq!(call(&too_deep), Err(DecodeError::TooDeep));
    }

    #[test]
    fn too_many_values_are_refused() {
        let doc = format!(
            "<methodCall><methodName>a.b</methodName><params><param><value><array><data>{}</data></array></value></param></params></methodCall>",
            "<value/>".repeat(MAX_VALUES + 1)
        );
        assert_eq!(call(&doc), Err(DecodeError::TooMany));
    }

    #[test]
    fn malformed_documents_get_errors_that_do_not_echo_much() {
        let long = "x".repeat(10_000);
        for bad in [
            "".to_string(),
            "<methodCall>".to_string(),
            "<methodCall><methodName>a</methodCall>".to_string(),
            "<methodResponse/>".to_string(),
            format!("<methodCall><methodName>a</methodName><params><param><value><{long}/></value></param></params></methodCall>"),
            format!("<methodCall><methodName>a</methodName><params><param><value><int>{long}</int></value></param></params></methodCall>"),
            "<methodCall><methodName>a</methodName><params><param><value><boolean>true</boolean></value></param></params></methodCall>".into(),
            "<methodCall><methodName>a</methodName></methodCall><methodCall/>".into(),
            "\u{0}\u{1}garbage".into(),
        ] {
            let e = call(&bad).expect_err(&bad[..bad.len().min(80)]);
            assert!(e.to_string().len() < 300, "{e}");
        }
    }

    #[test]
    fn responses_are_written_as_python_writes_them() {
        let v = Value::record([
            ("name", Value::from("web")),
            ("pid", Value::Int(42)),
            ("ok", Value::Bool(true)),
            ("list", Value::Array(vec![Value::Double(1.0)])),
        ]);
        assert_eq!(
            encode_response(&v),
            "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>\n\
             <member>\n<name>name</name>\n<value><string>web</string></value>\n</member>\n\
             <member>\n<name>pid</name>\n<value><int>42</int></value>\n</member>\n\
             <member>\n<name>ok</name>\n<value><boolean>1</boolean></value>\n</member>\n\
             <member>\n<name>list</name>\n<value><array><data>\n<value><double>1.0</double></value>\n\
             </data></array></value>\n</member>\n</struct></value>\n</param>\n</params>\n</methodResponse>\n"
        );
        assert_eq!(
            encode_fault(10, "BAD_NAME: a<b"),
            "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n\
             <name>faultCode</name>\n<value><int>10</int></value>\n</member>\n<member>\n\
             <name>faultString</name>\n<value><string>BAD_NAME: a&lt;b</string></value>\n\
             </member>\n</struct></value>\n</fault>\n</methodResponse>\n"
        );
    }

    #[test]
    fn binary_and_nil_are_written_as_python_writes_them() {
        assert_eq!(
            encode_call("a.b", &[Value::Base64(vec![0, 255]), Value::Nil]),
            "<?xml version='1.0'?>\n<methodCall>\n<methodName>a.b</methodName>\n<params>\n<param>\n\
             <value><base64>\nAP8=\n</base64></value>\n</param>\n<param>\n<value><nil/></value></param>\n\
             </params>\n</methodCall>\n"
        );
        let long = encode_response(&Value::Base64(vec![7; 100]));
        assert!(long.contains(&format!("\n{}\n", "BwcH".repeat(19))), "76-character lines: {long}");
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same_values() {
        let params = vec![
            Value::from("tabs\tand\nnewlines & <tags>"),
            Value::Int(i64::from(i32::MAX) + 1),
            Value::Bool(false),
            Value::Double(-0.25),
            Value::Base64(vec![0, 255, 10]),
            Value::Nil,
            Value::Array(vec![Value::record([("k", Value::Array(vec![]))])]),
        ];
        let c = decode_call(encode_call("supervisor.x", &params).as_bytes()).expect("round trip");
        assert_eq!((c.method.as_str(), c.params), ("supervisor.x", params));
        // Characters XML cannot carry are replaced rather than making the response unreadable.
        let c = decode_call(encode_call("a.b", &[Value::from("bell\u{7}")]).as_bytes()).expect("ok");
        assert_eq!(c.params, vec![Value::from("bell\u{fffd}")]);
    }

    #[test]
    fn responses_and_faults_decode_to_what_was_encoded() {
        let v = Value::record([
            ("name", Value::from("web & co")),
            ("pid", Value::Int(42)),
            ("list", Value::Array(vec![Value::Bool(true), Value::Nil, Value::Double(0.5)])),
        ]);
        assert_eq!(decode_response(encode_response(&v).as_bytes()), Ok(Ok(v)));
        assert_eq!(
            decode_response(encode_fault(10, "BAD_NAME: web").as_bytes()),
            Ok(Err(Fault { code: 10, string: "BAD_NAME: web".into() }))
        );
        // supervisord's own spelling of a boolean answer, with Python's whitespace.
        let theirs = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n\
                      <value><boolean>1</boolean></value>\n</param>\n</params>\n</methodResponse>\n";
        assert_eq!(decode_response(theirs.as_bytes()), Ok(Ok(Value::Bool(true))));
    }

    #[test]
    fn hostile_responses_are_refused_as_calls_are() {
        let lol = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">]>\n\
                   <methodResponse><params><param><value>&lol;</value></param></params></methodResponse>";
        assert_eq!(decode_response(lol.as_bytes()), Err(DecodeError::Doctype));
        let n = MAX_DEPTH + 1;
        let deep = format!(
            "<methodResponse><params><param>{}{}</param></params></methodResponse>",
            "<value><array><data>".repeat(n),
            "</data></array></value>".repeat(n)
        );
        assert_eq!(decode_response(deep.as_bytes()), Err(DecodeError::TooDeep));
        let many = format!(
            "<methodResponse><params><param><value><array><data>{}</data></array></value></param></params></methodResponse>",
            "<value/>".repeat(MAX_VALUES + 1)
        );
        assert_eq!(decode_response(many.as_bytes()), Err(DecodeError::TooMany));
        for bad in [
            "<methodResponse><params></params></methodResponse>",
            "<methodResponse><params><param><value>a</value></param><param><value>b</value></param></params></methodResponse>",
            "<methodResponse><fault><value><struct></struct></value></fault></methodResponse>",
            "<methodResponse><fault><value><struct><member><name>faultCode</name><value><string>x</string></value></member></struct></value></fault></methodResponse>",
            "<methodCall><methodName>a</methodName></methodCall>",
            "<html><body>502 Bad Gateway</body></html>",
        ] {
            assert!(decode_response(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
