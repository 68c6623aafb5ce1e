//! Signals by name or number, spelled as supervisord accepts them: `TERM`, `SIGTERM`, `term`,
//! or `15`.

use std::str::FromStr;

pub use nix::sys::signal::Signal;

/// Parses a signal as supervisord's `signal_number` does: a number, or a name with or without
/// the `SIG` prefix, in any case.
pub fn parse(text: &str) -> Result<Signal, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("{n} is not a signal number on this system"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map_err(|_| {
        format!("{text:?} is not a signal name; use a name like TERM, HUP, INT, QUIT, KILL, USR1, USR2, or a number")
    })
}

/// The signal's conventional name, `SIGTERM`.
pub fn name(sig: Signal) -> &'static str {
    sig.as_str()
}

/// The name of a raw signal number, or the number itself when it has no name here.
pub fn name_of(n: i32) -> String {
    Signal::try_from(n).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for s in ["TERM", "SIGTERM", "term", "SigTerm", "15", " TERM "] {
            assert_eq!(parse(s), Ok(Signal::SIGTERM), "{s}");
        }
        assert_eq!(parse("hup"), Ok(Signal::SIGHUP));
        assert!(parse("TERMINATE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99999").is_err());
        assert!(parse("").is_err());
    }
}
