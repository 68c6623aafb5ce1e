//! Conformance of minder's supervisord.conf reader with Supervisor 4.3 itself.
//!
//! `tests/conformance/` holds supervisord.conf files written for the purpose, each with the
//! effective configuration Supervisor 4.3.0 reads from it (`X.expected.json`, made by
//! `dump_supervisor.py`; see that directory's README.md). These tests load each file with
//! minder, put minder's effective configuration in the same shape, and compare them field by
//! field; configs Supervisor refuses (`invalid/`) must be refused too, naming the file, line
//! and option. Both sides see the same pinned machine (`context.json`): environment, host
//! name, and the corpus directory as the current directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minder::address::Address;
use minder::config::{self, Config, Context, GroupKind, LogTarget};
use serde_json::{json, Map, Value};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// The machine as `dump_supervisor.py` pins it for Supervisor.
fn context() -> Context {
    let text = std::fs::read_to_string(corpus().join("context.json")).expect("context.json");
    let v: Value = serde_json::from_str(&text).expect("context.json is JSON");
    let env: BTreeMap<String, String> = v["env"]
        .as_object()
        .expect("context.json has env")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Context {
        env,
        host_node_name: v["host_node_name"].as_str().unwrap_or_default().to_string(),
        cwd: corpus(),
        host_checks: true,
    }
}

/// Every `X.conf` that has an `X.expected.json`, outside `invalid/`.
fn corpus_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("corpus directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() && !p.ends_with("invalid") {
                walk(&p, out);
            } else if let Some(stem) =
                p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".expected.json"))
            {
                out.push(p.with_file_name(format!("{stem}.conf")));
            }
        }
    }
    let mut out = Vec::new();
    walk(&corpus(), &mut out);
    assert!(out.len() >= 10, "the corpus is missing: {out:?}");
    out
}

fn uid_of(user: &str) -> Option<u32> {
    match user.parse::<u32>() {
        Ok(uid) => Some(uid),
        Err(_) => nix::unistd::User::from_name(user).ok().flatten().map(|u| u.uid.as_raw()),
    }
}

fn name_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

fn path_value(p: &Option<PathBuf>) -> Value {
    p.as_ref().map_or(Value::Null, |p| Value::from(p.display().to_string()))
}

fn log_value(t: &LogTarget) -> Value {
    match t {
        LogTarget::None => Value::Null,
        LogTarget::Auto => Value::from("AUTO"),
        LogTarget::File(p) => Value::from(p.display().to_string()),
    }
}

fn owner_value(o: Option<minder::config::Owner>) -> Value {
    match o {
        None => Value::Null,
        Some(o) => json!([o.uid, o.gid.map_or(-1, i64::from)]),
    }
}

/// minder's configuration in the shape `dump_supervisor.py` prints Supervisor's.
fn effective(c: &Config) -> Value {
    let d = &c.daemon;
    let supervisord = json!({
        "logfile": if d.syslog { Value::from("syslog") } else { path_value(&d.logfile) },
        "logfile_maxbytes": d.logfile_maxbytes,
        "logfile_backups": d.logfile_backups,
        "loglevel": d.loglevel.name(),
        "pidfile": path_value(&d.pidfile),
        "umask": d.umask,
        "nodaemon": d.nodaemon,
        "silent": d.silent,
        "minfds": d.minfds,
        "minprocs": d.minprocs,
        "nocleanup": d.nocleanup,
        "childlogdir": d.childlogdir.display().to_string(),
        "user": d.user,
        "directory": path_value(&d.directory),
        "strip_ansi": d.strip_ansi,
        "environment": d.environment,
        "identifier": d.identifier,
    });
    let servers: Vec<Value> = d
        .listen
        .iter()
        .map(|a| {
            let creds = d.credentials.get(a);
            let mut s = json!({
                "username": creds.map(|c| c.username.clone()),
                "password": creds.map(|c| c.password.as_written()),
            });
            let extra = match a {
                Address::Unix(p) => json!({
                    "family": "unix",
                    "file": p.display().to_string(),
                    "chmod": d.socket_mode,
                    "chown": d.socket_owner.map_or(json!([-1, -1]), |o| owner_value(Some(o))),
                }),
                Address::Tcp(hp) => {
                    let (host, port) = hp.rsplit_once(':').unwrap_or((hp, "0"));
                    // Every interface: supervisord keeps an empty host, minder binds 0.0.0.0.
                    let host = if host == "0.0.0.0" { "" } else { host };
                    json!({
                        "family": "inet",
                        "host": host,
                        "port": port.parse::<u16>().unwrap_or(0),
                    })
                }
            };
            merge(&mut s, extra);
            s
        })
        .collect();
    let groups: Vec<Value> = c
        .groups
        .iter()
        .map(|g| {
            let mut v = json!({
                "name": g.name,
                "priority": g.priority,
                "members": g.processes.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            });
            let extra = match &g.kind {
                GroupKind::Programs => json!({"kind": "programs"}),
                GroupKind::EventListener(pool) => json!({
                    "kind": "eventlistener",
                    "buffer_size": pool.buffer_size,
                    "events": pool.events,
                    "result_handler": pool.result_handler,
                }),
                GroupKind::FcgiProgram(s) => json!({
                    "kind": "fcgi-program",
                    "socket": s.address.to_string(),
                    "socket_backlog": s.backlog,
                    "socket_mode": s.mode,
                    "socket_owner": owner_value(s.owner),
                }),
            };
            merge(&mut v, extra);
            v
        })
        .collect();
    let processes: Vec<Value> = c
        .processes()
        .map(|p| {
            let uid = p.user.as_deref().and_then(uid_of);
            let mut v = json!({
                "name": p.name,
                "group": p.group,
                "command": p.command,
                "priority": p.priority,
                "autostart": p.autostart,
                "autorestart": serde_json::to_value(p.autorestart).unwrap_or_default(),
                "startsecs": p.startsecs.as_secs(),
                "startretries": p.startretries,
                "exitcodes": p.exitcodes,
                "stopsignal": p.stopsignal.as_str().trim_start_matches("SIG"),
                "stopwaitsecs": p.stopwaitsecs.as_secs(),
                "stopasgroup": p.stopasgroup,
                "killasgroup": p.killasgroup,
                "uid": uid,
                "user": uid.and_then(name_of),
                "directory": path_value(&p.directory),
                "umask": p.umask,
                "environment": p.environment,
                "redirect_stderr": p.redirect_stderr,
                "serverurl": p.serverurl,
            });
            for (ch, t, mb, bu, cap, ev, sy) in [
                (
                    "stdout",
                    &p.stdout_logfile,
                    p.stdout_logfile_maxbytes,
                    p.stdout_logfile_backups,
                    p.stdout_capture_maxbytes,
                    p.stdout_events_enabled,
                    p.stdout_syslog,
                ),
                (
                    "stderr",
                    &p.stderr_logfile,
                    p.stderr_logfile_maxbytes,
                    p.stderr_logfile_backups,
                    p.stderr_capture_maxbytes,
                    p.stderr_events_enabled,
                    p.stderr_syslog,
                ),
            ] {
                merge(
                    &mut v,
                    json!({
                        format!("{ch}_logfile"): log_value(t),
                        format!("{ch}_logfile_maxbytes"): mb,
                        format!("{ch}_logfile_backups"): bu,
                        format!("{ch}_capture_maxbytes"): cap,
                        format!("{ch}_events_enabled"): ev,
                        format!("{ch}_syslog"): sy,
                    }),
                );
            }
            v
        })
        .collect();
    let client = c.client.as_ref().map(|cl| {
        json!({
            "serverurl": match &cl.serverurl {
                Address::Unix(p) => format!("unix://{}", p.display()),
                Address::Tcp(hp) => format!("http://{hp}"),
            },
            "username": cl.username,
            "password": cl.password,
            "prompt": cl.prompt,
            "history_file": path_value(&cl.history_file),
        })
    });
    let rpc: Vec<Value> = c
        .rpcinterfaces
        .iter()
        .map(|r| json!({"name": r.name, "factory": r.factory, "options": r.options}))
        .collect();
    let all = json!({
        "supervisord": supervisord,
        "servers": servers,
        "rpcinterfaces": rpc,
        "groups": groups,
        "processes": processes,
        "supervisorctl": client,
    });
    portable(all, &corpus().display().to_string())
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// The corpus directory as `@CORPUS@`, as the dump writes it.
fn portable(v: Value, dir: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(dir, "@CORPUS@")),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| portable(x, dir)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter().map(|(k, x)| (k.replace(dir, "@CORPUS@"), portable(x, dir))).collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

/// Every difference between Supervisor's value and minder's, as `path: supervisord X, minder Y`.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => diff(&p, wv, gv, out),
                    None => out.push(format!("{p}: supervisord {wv}, minder has no such field")),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}.{k}: minder has it, supervisord does not"));
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                // Name list items after their "name", when they have one.
                let label = wv
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), |n| format!("{i}={n}"));
                diff(&format!("{path}[{label}]"), wv, gv, out);
            }
        }
        (w, g) if w == g => {}
        // Numbers compare by value (Python ints and Rust floats of whole seconds).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (w, g) => out.push(format!("{path}: supervisord {w}, minder {g}")),
    }
}

#[test]
fn minder_reads_the_corpus_as_supervisord_4_3_does() {
    let ctx = context();
    let mut failures = Vec::new();
    let files = corpus_files();
    for conf in &files {
        let name = conf.strip_prefix(corpus()).unwrap_or(conf).display().to_string();
        let expected_path = conf.with_extension("expected.json");
        let text = std::fs::read_to_string(&expected_path).expect("expected file");
        let mut want: Value = serde_json::from_str(&text).expect("expected JSON");
        assert_eq!(
            want["supervisor_version"], "4.3.0",
            "{name}: regenerate the expected files with Supervisor 4.3.0"
        );
        if let Value::Object(o) = &mut want {
            // Supervisor's own warnings are worded its way; minder's are checked elsewhere.
            o.remove("warnings");
            o.remove("supervisor_version");
        }
        let config = match config::load_in(conf, &ctx) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: minder refuses what supervisord reads:\n{e}"));
                continue;
            }
        };
        let got = effective(&config);
        let mut diffs = Vec::new();
        diff("", &want, &got, &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{name}:\n  {}", diffs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files differ from Supervisor 4.3:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// `; expect: LINE KEY` on a file's first line: the error must be at that line (`-`: no
/// line) and name that option (`-`: no option).
fn expectation(text: &str) -> (Option<u32>, Option<String>) {
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("; expect: ").expect("an invalid config starts with `; expect: LINE KEY`");
    let (line, key) = rest.split_once(' ').expect("; expect: LINE KEY");
    (line.parse().ok(), (key != "-").then(|| key.to_string()))
}

#[test]
fn configs_supervisord_refuses_are_refused_with_file_line_and_option() {
    let ctx = context();
    let dir = corpus().join("invalid");
    let mut confs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("invalid/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    confs.sort();
    assert!(confs.len() >= 10, "invalid/ is missing: {confs:?}");
    let mut failures = Vec::new();
    for conf in &confs {
        let name = conf.file_name().unwrap_or_default().to_string_lossy().to_string();
        // The proof that Supervisor refuses it too, made by regenerate.sh.
        if !conf.with_extension("supervisor.txt").is_file() {
            failures.push(format!("{name}: no {name}.supervisor.txt; run regenerate.sh"));
        }
        let text = std::fs::read_to_string(conf).expect("readable");
        let (line, key) = expectation(&text);
        match config::load_in(conf, &ctx) {
            Ok(_) => failures.push(format!("{name}: minder accepts it")),
            Err(e) => {
                let shown = e.to_string();
                let found = e.errors.iter().any(|d| {
                    let at_file = d.origin.path() == Some(conf.as_path());
                    let at_line = match &d.origin {
                        minder::config::Origin::File { line: l, .. } => *l == line,
                        _ => false,
                    };
                    let names = key.as_ref().is_none_or(|k| d.key == *k);
                    at_file && at_line && names
                });
                if !found {
                    failures.push(format!(
                        "{name}: expected an error at line {line:?} naming {key:?}, got:\n{shown}"
                    ));
                }
                if !shown.contains(&conf.display().to_string()) {
                    failures.push(format!("{name}: the message does not name the file:\n{shown}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// INI -> Config -> TOML -> Config gives the same Config (but for the file it was read from,
/// the files it included, and the wording of warnings).
#[test]
fn converting_to_toml_keeps_the_configuration() {
    let ctx = context();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for conf in corpus_files() {
        let name = conf.strip_prefix(corpus()).unwrap_or(&conf).display().to_string();
        let Ok(mut from_ini) = config::load_in(&conf, &ctx) else {
            failures.push(format!("{name}: does not load"));
            continue;
        };
        let toml = config::to_toml(&from_ini);
        let out = tmp.path().join(name.replace('/', "_").replace(".conf", ".toml"));
        std::fs::write(&out, &toml).expect("write");
        match config::load_in(&out, &ctx) {
            Ok(mut from_toml) => {
                from_ini.path = PathBuf::new();
                from_toml.path = PathBuf::new();
                from_ini.warnings.clear();
                from_toml.warnings.clear();
                // The converted file holds what the included files said; it includes nothing.
                from_ini.included.clear();
                from_toml.included.clear();
                if from_ini != from_toml {
                    let a = serde_json::to_value(&from_ini).unwrap_or_default();
                    let b = serde_json::to_value(&from_toml).unwrap_or_default();
                    let mut diffs = Vec::new();
                    diff("", &a, &b, &mut diffs);
                    failures.push(format!(
                        "{name}: differs after conversion (\"supervisord\" = from INI, \"minder\" = from TOML):\n  {}\n--- converted:\n{toml}",
                        diffs.join("\n  ")
                    ));
                }
            }
            Err(e) => failures
                .push(format!("{name}: the converted TOML does not load:\n{e}\n--- converted:\n{toml}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_options_and_sections_are_warned_about_with_file_and_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let conf = tmp.path().join("typo.conf");
    std::fs::write(
        &conf,
        "[supervisord]\n\n[program:web]\ncommand=/bin/cat\nauto_start=false\n\n[Program:api]\ncommand=/bin/cat\n",
    )
    .expect("write");
    let mut ctx = context();
    ctx.cwd = tmp.path().to_path_buf();
    let c = config::load_in(&conf, &ctx).expect("loads");
    let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    let at = |line: u32| format!("{}:{line}: ", conf.display());
    assert!(
        warnings.iter().any(|w| w.starts_with(&at(5))
            && w.contains("[program:web] auto_start")
            && w.contains("did you mean autostart?")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with(&at(7)) && w.contains("did you mean [program:api]")),
        "{warnings:?}"
    );
    // A typo is not a setting: web still autostarts.
    assert!(c.processes().all(|p| p.autostart));
}

#[test]
fn includes_warn_about_what_supervisord_skips() {
    let main = corpus().join("includes/main.conf");
    let c = config::load_in(&main, &context()).expect("loads");
    let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(has("no file matches"), "{warnings:?}");
    assert!(has("does not follow an [include] inside an included file"), "{warnings:?}");
    assert!(has("this section is also given at"), "{warnings:?}");
    let names: Vec<&str> = c.processes().map(|p| p.name.as_str()).collect();
    assert!(!names.contains(&"hidden") && !names.contains(&"never"), "{names:?}");
}

#[test]
fn the_effective_configuration_serializes_to_json() {
    let c = config::load_in(&corpus().join("listeners.conf"), &context()).expect("loads");
    let v = serde_json::to_value(&c).expect("serializes");
    let groups = v["groups"].as_array().expect("groups");
    let ordered = groups.iter().find(|g| g["name"] == "ordered").expect("the ordered pool");
    assert_eq!(ordered["kind"], "event-listener");
    assert_eq!(ordered["events"], json!(["SUPERVISOR_STATE_CHANGE"]));
    assert_eq!(ordered["processes"][0]["stopsignal"], "TERM");
    assert_eq!(ordered["processes"][0]["startsecs"], 1.0);
}

/// A reproducible corpus of commands made of the characters that matter to shlex.
fn shlex_corpus() -> Vec<String> {
    const PIECES: &[&str] =
        &["a", "b", " ", "  ", "\t", "\n", "\r", "\\", "'", "\"", "#", "$", "é", "\\\"", "\\\\", "''", "x y"];
    // A small linear congruential generator: the same corpus on every run, no dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..3000)
        .map(|_| {
            let len = next() % 12;
            (0..len).map(|_| PIECES[next() % PIECES.len()]).collect::<String>()
        })
        .collect()
}

/// minder splits `command` exactly as Python's `shlex.split` (which supervisord uses) does,
/// on a generated corpus, compared with Python itself when python3 is installed.
#[test]
fn commands_split_as_python_shlex_split_does() {
    use std::io::Write as _;
    let corpus = shlex_corpus();
    let script = "import json, shlex, sys\n\
        out = []\n\
        for s in json.load(sys.stdin):\n\
        \x20   try:\n\
        \x20       out.append(shlex.split(s))\n\
        \x20   except ValueError as e:\n\
        \x20       out.append(str(e))\n\
        json.dump(out, sys.stdout)\n";
    let child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("python3 is not installed: the fixed table in values.rs still checks shlex_split");
        return;
    };
    let input = serde_json::to_vec(&corpus).expect("JSON");
    child.stdin.take().expect("stdin").write_all(&input).expect("write to python3");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(out.status.success(), "python3 failed");
    let expected: Vec<Value> = serde_json::from_slice(&out.stdout).expect("python3 printed JSON");
    assert_eq!(expected.len(), corpus.len());
    let mut mismatches = Vec::new();
    for (s, want) in corpus.iter().zip(&expected) {
        let got = match config::values::shlex_split(s) {
            Ok(words) => json!(words),
            Err(e) => json!(e.to_string()),
        };
        if &got != want {
            mismatches.push(format!("{s:?}: python {want}, minder {got}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches.join("\n")
    );
}
