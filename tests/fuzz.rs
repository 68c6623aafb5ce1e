//! Fuzzing the configuration front ends and the expansion engine: whatever bytes a file
//! holds, reading it ends quickly with a configuration or with errors — never a panic, never
//! a hang.
//!
//! The seeds are the supervisord.conf corpus (tests/conformance, valid and invalid) and the
//! TOML files of tests/fuzz/; proptest mutates them (byte flips, insertions, deletions,
//! splices of other seeds) and also writes files from scratch out of the dialects' own tokens.
//! `MINDER_SOAK=1` runs many more cases (the reliability suite's long mode).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use minder::config::expand::{expand, Vars};
use proptest::prelude::*;

fn cases(quick: u32) -> u32 {
    if std::env::var_os("MINDER_SOAK").is_some() {
        quick * 50
    } else {
        quick
    }
}

/// The seed files, read once.
fn seeds() -> &'static [(PathBuf, Vec<u8>)] {
    static SEEDS: std::sync::OnceLock<Vec<(PathBuf, Vec<u8>)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut out = Vec::new();
        for dir in ["conformance", "conformance/invalid", "fuzz"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                if matches!(f.extension().and_then(|e| e.to_str()), Some("conf" | "toml" | "ini")) {
                    out.push((f.clone(), std::fs::read(&f).expect("a seed")));
                }
            }
        }
        assert!(out.len() >= 20, "the seed corpus is missing");
        out
    })
}

/// Writes `bytes` as a configuration file with extension `ext` and reads it, asserting it
/// neither panics (a panic fails the test) nor takes long.
fn read_back(bytes: &[u8], ext: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(format!("fuzz.{ext}"));
    std::fs::write(&path, bytes).expect("write");
    let started = Instant::now();
    let result = minder::config::load(&path);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "reading took {took:?}");
    if let Err(errors) = result {
        // Every error names where it is and what is wrong.
        for e in errors.errors {
            assert!(!e.message.is_empty(), "an empty error message");
        }
    }
}

/// A mutation of one seed.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Splice { at: usize, other: usize, from: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), proptest::collection::vec(prop_oneof![any::<u8>(), token_byte()], 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), any::<usize>(), any::<usize>(), 1usize..200)
            .prop_map(|(at, other, from, len)| Mutation::Splice { at, other, from, len }),
    ]
}

/// Bytes that matter to the dialects.
fn token_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'%'),
        Just(b'('),
        Just(b')'),
        Just(b'['),
        Just(b']'),
        Just(b'='),
        Just(b':'),
        Just(b';'),
        Just(b'#'),
        Just(b'\n'),
        Just(b'\r'),
        Just(b' '),
        Just(b'\t'),
        Just(b'"'),
        Just(b'\''),
        Just(b'{'),
        Just(b'}'),
        Just(b','),
        Just(b'\\')
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        let at = |n: usize, len: usize| if len == 0 { 0 } else { n % (len + 1) };
        match m {
            Mutation::Flip { at: i, bit } if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= 1 << bit;
            }
            Mutation::Flip { .. } => {}
            Mutation::Insert { at: i, bytes } => {
                let i = at(*i, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete { at: i, len } => {
                let i = at(*i, b.len());
                let end = (i + len).min(b.len());
                b.drain(i..end);
            }
            Mutation::Splice { at: i, other, from, len } => {
                let seeds = seeds();
                let o = &seeds[other % seeds.len()].1;
                let from = if o.is_empty() { 0 } else { from % o.len() };
                let piece = &o[from..(from + len).min(o.len())];
                let i = at(*i, b.len());
                b.splice(i..i, piece.iter().copied());
            }
        }
    }
    b
}

/// Lines made of the INI dialect's pieces.
fn ini_file() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[supervisord]".to_string()),
        Just("[supervisorctl]".to_string()),
        Just("[unix_http_server]".to_string()),
        Just("[inet_http_server]".to_string()),
        Just("[include]".to_string()),
        "[a-z]{1,5}".prop_map(|n| format!("[program:{n}]")),
        "[a-z]{1,5}".prop_map(|n| format!("[group:{n}]")),
        "[a-z]{1,5}".prop_map(|n| format!("[eventlistener:{n}]")),
        "[a-z]{1,5}".prop_map(|n| format!("[fcgi-program:{n}]")),
        "[ -~]{0,12}".prop_map(|n| format!("[{n}]")),
    ];
    let key = prop_oneof![
        Just("command"),
        Just("numprocs"),
        Just("process_name"),
        Just("environment"),
        Just("priority"),
        Just("autorestart"),
        Just("startsecs"),
        Just("stopsignal"),
        Just("exitcodes"),
        Just("programs"),
        Just("files"),
        Just("port"),
        Just("file"),
        Just("user"),
        Just("directory"),
        Just("stdout_logfile"),
        Just("stopasgroup"),
        Just("killasgroup"),
        Just("socket"),
        Just("events"),
        Just("umask"),
        Just("serverurl"),
        Just("logfile_maxbytes"),
        Just("numprocs_start"),
        Just("chmod"),
    ];
    let value = prop_oneof![
        "[ -~]{0,30}",
        Just("%(program_name)s_%(process_num)02d".to_string()),
        Just("%(ENV_HOME)s %(here)s %%".to_string()),
        Just("A=\"1,2\",B='x'".to_string()),
        Just("/bin/sh -c 'a ; b'".to_string()),
        "[0-9]{1,12}",
        Just("true".to_string()),
        Just("%(".to_string()),
    ];
    let line = prop_oneof![
        section,
        (key, prop_oneof![Just("="), Just(":"), Just(" = ")], value)
            .prop_map(|(k, s, v)| format!("{k}{s}{v}")),
        "[ \t][ -~]{0,20}".prop_map(String::from),
        Just(String::new()),
        "[;#][ -~]{0,20}".prop_map(String::from),
    ];
    proptest::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    #[test]
    fn mutated_seeds_never_panic(seed in any::<prop::sample::Index>(), muts in proptest::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        let (path, bytes) = &seeds[seed.index(seeds.len())];
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("conf");
        read_back(&apply(bytes, &muts), ext);
    }

    #[test]
    fn generated_ini_files_never_panic(text in ini_file()) {
        read_back(text.as_bytes(), "conf");
    }

    #[test]
    fn generated_toml_never_panics(text in ini_file()) {
        // The same pieces read as TOML: mostly syntax errors, which must be reported cleanly.
        read_back(text.replace("[program:", "[program.").as_bytes(), "toml");
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), toml in any::<bool>()) {
        read_back(&bytes, if toml { "toml" } else { "conf" });
    }

    #[test]
    fn expansion_never_panics(text in "[%()a-z0-9_ sdrx.+-]{0,40}") {
        let vars = Vars::new().str("program_name", "web").int("process_num", 7).str("here", "/etc");
        let _ = expand(&text, &vars);
    }
}
