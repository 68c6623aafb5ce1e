//! Fuzzing the configuration front ends and the expansion engine: whatever bytes a file
//! holds, reading it ends quickly with a configuration or with errors — never a panic, never
//! a hang.
//!
//! The seeds are the supervisord.conf corpus (tests/conformance, valid and invalid) and the
//! TOML files of tests/fuzz/; proptest mutates them (byte flips, insertions, deletions,
//! splices of other seeds) and also writes files from scratch out of the dialects' own tokens.
//! `MINDER_SOAK=1` runs many more cases (the reliability suite's long mode).
//!
//! Beyond "no panic", generated supervisord.conf files check properties: converting to TOML
//! and reading back gives the same configuration, argv is always the command as Python's
//! shlex.split makes it, and doubled `%` expand back to the text.

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

/// One generated `[program:x]`: options supervisord accepts, with values chosen to reach the
/// interesting cases (quotes and backslashes in commands, `%` in paths and environments,
/// numprocs with process_num templates, signals, log targets).
fn program_options() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let command = prop_oneof![
        Just("/bin/sleep 100".to_string()),
        Just("sh -c 'echo hi; exec sleep 100'".to_string()),
        Just(r#"bash -c "echo \$HOME""#.to_string()),
        Just(r#"printf '%%s\n' "a b" c\ d"#.to_string()),
        Just("cat %(here)s/in_%(process_num)d".to_string()),
        "[a-z/]{1,12}( [a-z0-9=.-]{1,8}){0,3}",
    ];
    let opt = prop_oneof![
        (-10i32..1000).prop_map(|n| ("priority", n.to_string())),
        any::<bool>().prop_map(|b| ("autostart", b.to_string())),
        prop_oneof![Just("true"), Just("false"), Just("unexpected")]
            .prop_map(|v| ("autorestart", v.to_string())),
        (0u32..100).prop_map(|n| ("startsecs", n.to_string())),
        (0u32..10).prop_map(|n| ("startretries", n.to_string())),
        proptest::collection::btree_set(0u8..5, 1..3)
            .prop_map(|c| ("exitcodes", c.iter().map(u8::to_string).collect::<Vec<_>>().join(","))),
        prop_oneof![Just("TERM"), Just("INT"), Just("HUP"), Just("KILL"), Just("QUIT"), Just("USR1")]
            .prop_map(|v| ("stopsignal", v.to_string())),
        (0u32..60).prop_map(|n| ("stopwaitsecs", n.to_string())),
        any::<bool>().prop_map(|b| ("killasgroup", b.to_string())),
        any::<bool>().prop_map(|b| ("redirect_stderr", b.to_string())),
        prop_oneof![
            Just("AUTO".to_string()),
            Just("NONE".to_string()),
            Just("%(here)s/%(program_name)s-%(process_num)d.log".to_string()),
            Just("%(here)s/100%%%%.log".to_string()),
        ]
        .prop_map(|v| ("stdout_logfile", v)),
        prop_oneof![Just("1MB"), Just("1024"), Just("50MB")]
            .prop_map(|v| ("stdout_logfile_maxbytes", v.to_string())),
        (0u32..20).prop_map(|n| ("stderr_logfile_backups", n.to_string())),
        prop_oneof![
            Just(r#"A="1",B="two words""#.to_string()),
            Just(r#"PCT="100%%",N="%(process_num)d""#.to_string()),
            Just("HOME_COPY=\"%(ENV_HOME)s\"".to_string()),
        ]
        .prop_map(|v| ("environment", v)),
        Just(("directory", "/tmp".to_string())),
        prop_oneof![Just("022"), Just("002"), Just("077")].prop_map(|v| ("umask", v.to_string())),
        any::<bool>().prop_map(|b| ("log_timestamps", b.to_string())),
    ];
    (command, proptest::collection::vec(opt, 0..8), 1u32..4, 0u32..3).prop_map(
        |(command, mut opts, numprocs, start)| {
            opts.push(("command", command));
            if numprocs > 1 {
                opts.push(("numprocs", numprocs.to_string()));
                opts.push(("numprocs_start", start.to_string()));
                opts.push(("process_name", "%(program_name)s_%(process_num)02d".to_string()));
            }
            opts
        },
    )
}

/// A supervisord.conf of generated programs, some of them gathered into `[group:x]` sections.
fn supervisord_conf() -> impl Strategy<Value = String> {
    (
        proptest::collection::btree_map("[a-z]{1,6}", program_options(), 1..5),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        (-5i32..1000),
    )
        .prop_map(|(programs, grouped, group_priority)| {
            let mut text = String::from("[supervisord]\nlogfile=%(here)s/d.log\n\n");
            for (name, opts) in &programs {
                text.push_str(&format!("[program:{name}]\n"));
                for (k, v) in opts {
                    text.push_str(&format!("{k}={v}\n"));
                }
                text.push('\n');
            }
            // Each chosen program once, into one group (supervisord allows a program in one
            // group only).
            let names: Vec<&String> = programs.keys().collect();
            let mut members: Vec<&str> =
                grouped.iter().map(|i| names[i.index(names.len())].as_str()).collect();
            members.sort_unstable();
            members.dedup();
            if !members.is_empty() {
                text.push_str(&format!(
                    "[group:grp0]\nprograms={}\npriority={group_priority}\n",
                    members.join(",")
                ));
            }
            text
        })
}

/// Loads `text` as `name` in `dir`, pinned to `dir` as the current directory.
fn load_text(
    dir: &Path,
    name: &str,
    text: &str,
) -> Result<minder::config::Config, minder::config::ConfigErrors> {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    let ctx = minder::config::Context {
        env: [("HOME".to_string(), "/home/fuzz".to_string())].into(),
        host_node_name: "fuzzhost".into(),
        cwd: dir.to_path_buf(),
        host_checks: true,
    };
    minder::config::load_in(&path, &ctx)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(200), ..ProptestConfig::default() })]

    /// INI -> Config -> TOML -> Config is the identity (but for the file name and warnings),
    /// and converting twice gives the same TOML: `minder config convert` loses nothing.
    #[test]
    fn converting_a_generated_supervisord_conf_keeps_it(text in supervisord_conf()) {
        let dir = tempfile::tempdir().expect("dir");
        let mut from_ini = load_text(dir.path(), "supervisord.conf", &text)
            .unwrap_or_else(|e| panic!("a generated configuration must be valid: {e}\n{text}"));
        let toml = minder::config::to_toml(&from_ini);
        let mut from_toml = load_text(dir.path(), "converted.toml", &toml)
            .unwrap_or_else(|e| panic!("the converted TOML does not load: {e}\n{toml}"));
        // Converting again gives the same TOML, but for the first line (the file it came from).
        let body = |t: &str| t.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default();
        prop_assert_eq!(body(&minder::config::to_toml(&from_toml)), body(&toml), "converting is not stable");
        from_ini.path = PathBuf::new();
        from_toml.path = PathBuf::new();
        from_ini.warnings.clear();
        from_toml.warnings.clear();
        prop_assert_eq!(from_ini, from_toml, "\n{}\n--- converted:\n{}", text, toml);
    }

    /// Invariants of every valid reading: each process's argv is its command split as Python's
    /// shlex.split does, and never empty; names are unique within a group; groups are in
    /// start order (priority, then name).
    #[test]
    fn a_generated_configuration_keeps_its_invariants(text in supervisord_conf()) {
        let dir = tempfile::tempdir().expect("dir");
        let c = load_text(dir.path(), "supervisord.conf", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for p in c.processes() {
            prop_assert!(!p.argv.is_empty());
            prop_assert_eq!(Ok(p.argv.clone()), minder::config::values::shlex_split(&p.command));
        }
        for g in &c.groups {
            let mut names: Vec<&str> = g.processes.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            prop_assert_eq!(n, names.len(), "duplicate process names in {}", g.name);
        }
        let order: Vec<(i32, &str)> = c.groups.iter().map(|g| (g.priority, g.name.as_str())).collect();
        let mut sorted = order.clone();
        sorted.sort();
        prop_assert_eq!(order, sorted);
    }

    /// Expansion leaves text with no `%` alone, and a text whose `%` are doubled comes back
    /// as written: the rule `to_toml` relies on to write literal values back.
    #[test]
    fn doubled_percent_signs_expand_to_the_text(text in "[ -~]{0,40}") {
        let vars = Vars::new().str("program_name", "web").int("process_num", 7).str("here", "/etc");
        prop_assert_eq!(expand(&text.replace('%', "%%"), &vars).ok(), Some(text.clone()));
        if !text.contains('%') {
            prop_assert_eq!(expand(&text, &vars).ok(), Some(text));
        }
    }
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
