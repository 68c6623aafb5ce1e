//! The fleet's users end to end: the real `minder-fleet` binary over real minderd nodes, with
//! users in its SQLite database. Roles are enforced on every route and a refused action never
//! reaches a node (its process keeps its pid, as minderd itself reports); logout revokes;
//! Basic auth serves scripts; a restricted user sees only its environments; forged cross-site
//! requests, failed-login floods and hostile bodies are refused cleanly; no password shows in
//! any answer, the activity log or the fleet's log. Every wait polls up to a deadline.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("root", "root-password-1");
const OPERATOR: (&str, &str) = ("olga", "operator-password-2");
const VIEWER: (&str, &str) = ("victor", "viewer-password-3");
const PROD_VIEWER: (&str, &str) = ("petra", "prod-viewer-password-4");

const NODE: &str = r#"
[program.app]
command = "sleep 100"
startsecs = 0

[group.web]
programs = ["app"]
"#;

/// Two minderd nodes (m1 in prod, m2 in staging) and a fleet with its admin from [cesi].
fn two_nodes(d: &Path) -> (Vec<Owned>, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (m1, s1) = minderd(d, "m1", NODE);
    let (m2, s2) = minderd(d, "m2", NODE);
    let conf = d.join("fleet.toml");
    std::fs::write(
        &conf,
        format!(
            "[cesi]\ndatabase = \"users.db\"\nactivity_log = \"activity.log\"\n\
             admin_username = \"{}\"\nadmin_password = \"{}\"\n\
             [[nodes]]\nname = \"m1\"\nenvironment = \"prod\"\nkind = \"minderd\"\naddress = \"unix://{}\"\n\
             [[nodes]]\nname = \"m2\"\nenvironment = \"staging\"\nkind = \"minderd\"\naddress = \"unix://{}\"\n",
            ADMIN.0,
            ADMIN.1,
            s1.display(),
            s2.display()
        ),
    )
    .expect("write the configuration");
    (vec![m1, m2], s1, s2, conf)
}

fn json_body(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn roles_sessions_and_environments_are_enforced_on_every_route() {
    let dir = tempfile::Builder::new().prefix("fleet-auth-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_nodes, s1, _s2, conf) = two_nodes(d);
    let f = fleet(&conf);
    let admin = basic(ADMIN.0, ADMIN.1);
    let as_admin = [("Authorization", admin.as_str()), JSON];
    wait_for("both nodes connected", 20 * SECS, || {
        let a = f.req("GET", "/api/v2/nodes/", &as_admin, b"");
        a.json["nodes"]
            .as_array()
            .is_some_and(|ns| ns.len() == 2 && ns.iter().all(|n| n["general"]["connected"] == true))
    });
    let mut seen = String::new();

    // The admin adds the others through the API (Cesi's usertype works too).
    for (body, expect) in [
        (json!({"username": OPERATOR.0, "password": OPERATOR.1, "usertype": 1}), 200),
        (json!({"username": VIEWER.0, "password": VIEWER.1, "role": "viewer"}), 200),
        (
            json!({"username": PROD_VIEWER.0, "password": PROD_VIEWER.1, "role": "viewer", "environments": ["prod"]}),
            200,
        ),
        (json!({"username": VIEWER.0, "password": VIEWER.1, "role": "viewer"}), 409),
        (json!({"username": "shorty", "password": "short", "role": "viewer"}), 400),
        (json!({"username": "x", "password": "long-enough", "role": "superuser"}), 400),
    ] {
        let a = f.req("POST", "/api/v2/users/", &as_admin, &json_body(body.clone()));
        assert_eq!(a.status, expect, "{body}: {}", a.body);
        seen.push_str(&a.body);
    }
    let a = f.req("GET", "/api/v2/users/", &as_admin, b"");
    let roles: Vec<(String, String)> = a.json["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| (u["username"].as_str().unwrap_or("").into(), u["role"].as_str().unwrap_or("").into()))
        .collect();
    assert_eq!(
        roles,
        [("olga", "operator"), ("petra", "viewer"), ("root", "admin"), ("victor", "viewer")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    seen.push_str(&a.body);

    // A viewer logs in (JSON) and reads, but every action is refused before any node sees it.
    let login = f.req(
        "POST",
        "/api/v2/auth/login/",
        &[JSON, ("X-Forwarded-Proto", "https")],
        &json_body(json!({"username": VIEWER.0, "password": VIEWER.1})),
    );
    assert_eq!((login.status, login.json["user"]["role"].as_str()), (200, Some("viewer")), "{}", login.body);
    let set = login.header("set-cookie").expect("a cookie").to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(set.split("; ").any(|p| p == part), "{part} in {set}");
    }
    let viewer = cookie(&login.session().expect("session"));
    let as_viewer = [("Cookie", viewer.as_str()), JSON];
    let a = f.req("GET", "/api/v2/profile/", &as_viewer, b"");
    assert_eq!(
        a.json["user"],
        json!({"username": VIEWER.0, "role": "viewer", "environments": null}),
        "{}",
        a.body
    );
    let pid = pid_on(&s1, "web:app");
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "{pid}");
    for (method, path) in [
        ("POST", "/api/v2/nodes/m1/processes/web:app/stop/"),
        ("GET", "/api/v2/nodes/m1/processes/web:app/stop/"),
        ("POST", "/api/v2/nodes/m1/processes/web:app/restart"),
        ("GET", "/api/v2/nodes/m1/all-processes/stop/"),
        ("POST", "/api/v2/groups/web/restart/"),
        ("GET", "/api/v2/users/"),
        ("POST", "/api/v2/users/"),
        ("DELETE", "/api/v2/users/olga/"),
        ("GET", "/api/v2/activitylogs/"),
        ("DELETE", "/api/v2/activitylogs/"),
    ] {
        let a = f.req(method, path, &as_viewer, b"{}");
        assert_eq!(
            (a.status, a.json["status"].as_str()),
            (403, Some("error")),
            "viewer {method} {path}: {}",
            a.body
        );
    }
    let a = f.req("GET", "/api/v2/nodes/m1/processes/web:app/log/", &as_viewer, b"");
    assert_eq!(a.status, 200, "a viewer reads logs: {}", a.body);
    let a = f.req("GET", "/api/v2/groups/", &as_viewer, b"");
    assert_eq!(a.status, 200, "{}", a.body);

    // An operator logs in with a form, acts, and cannot manage users or read the log.
    let form = format!("username={}&password={}", OPERATOR.0, OPERATOR.1);
    let login = f.req(
        "POST",
        "/api/v2/auth/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(
        (login.status, login.json["user"]["role"].as_str()),
        (200, Some("operator")),
        "{}",
        login.body
    );
    assert!(!login.header("set-cookie").unwrap_or("").contains("Secure"), "plain HTTP: no Secure");
    let operator = cookie(&login.session().expect("session"));
    let as_operator = [("Cookie", operator.as_str()), JSON];
    let a = f.req("POST", "/api/v2/nodes/m1/processes/web:app/restart/", &as_operator, b"");
    assert_eq!(a.status, 200, "{}", a.body);
    wait_for("a new pid after the operator's restart", 10 * SECS, || {
        let now = pid_on(&s1, "web:app");
        now != pid && now.parse::<u32>().is_ok_and(|p| p > 0)
    });
    // The viewer's refused actions changed nothing: the only restart is the operator's.
    let pid = pid_on(&s1, "web:app");
    for (method, path) in [
        ("GET", "/api/v2/users/"),
        ("POST", "/api/v2/users/"),
        ("PUT", "/api/v2/users/victor/"),
        ("GET", "/api/v2/activitylogs/"),
        ("GET", "/api/v2/activitylogs/5/"),
        ("DELETE", "/api/v2/activitylogs/"),
    ] {
        let body = json_body(json!({"username": "evil", "password": "evil-password", "role": "admin"}));
        let a = f.req(method, path, &as_operator, &body);
        assert_eq!(a.status, 403, "operator {method} {path}: {}", a.body);
    }

    // A user restricted to prod sees only m1: m2 is absent from lists and 404 when named.
    let restricted = cookie(&f.login(PROD_VIEWER.0, PROD_VIEWER.1));
    let as_restricted = [("Cookie", restricted.as_str())];
    let a = f.req("GET", "/api/v2/nodes/", &as_restricted, b"");
    let names: Vec<&str> = a.json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["general"]["name"].as_str())
        .collect();
    assert_eq!(names, ["m1"], "{}", a.body);
    for path in [
        "/api/v2/nodes/m2/",
        "/api/v2/nodes/m2/processes/",
        "/api/v2/nodes/m2/processes/web:app/log/",
        "/api/v2/environments/staging/",
    ] {
        assert_eq!(f.req("GET", path, &as_restricted, b"").status, 404, "{path}");
    }
    let a = f.req("GET", "/api/v2/environments/", &as_restricted, b"");
    let envs: Vec<&str> =
        a.json["environments"].as_array().expect("envs").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(envs, ["prod"]);
    let a = f.req("GET", "/api/v2/groups/web/", &as_restricted, b"");
    assert_eq!(a.json["group"]["nodes"].as_array().map(Vec::len), Some(1), "{}", a.body);

    // Logout revokes: the old cookie is refused everywhere afterwards.
    let a = f.req("POST", "/api/v2/auth/logout/", &as_operator, b"");
    assert_eq!(a.status, 200);
    assert!(a.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")), "{:?}", a.headers);
    for (method, path) in [
        ("GET", "/api/v2/nodes/"),
        ("GET", "/api/v2/profile/"),
        ("POST", "/api/v2/nodes/m1/processes/web:app/stop/"),
    ] {
        let a = f.req(method, path, &as_operator, b"");
        assert_eq!(a.status, 401, "the logged-out cookie on {method} {path}: {}", a.body);
    }
    assert_eq!(pid_on(&s1, "web:app"), pid);

    // An admin's change of role applies to live sessions; a removed user's sessions end.
    let a = f.req("PUT", "/api/v2/users/victor/", &as_admin, &json_body(json!({"role": "operator"})));
    assert_eq!((a.status, a.json["user"]["role"].as_str()), (200, Some("operator")), "{}", a.body);
    assert_eq!(f.req("GET", "/api/v2/profile/", &as_viewer, b"").json["user"]["role"], "operator");
    let a = f.req("DELETE", "/api/v2/users/victor/", &as_admin, b"");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(f.req("GET", "/api/v2/nodes/", &as_viewer, b"").status, 401);
    // The last admin stays.
    assert_eq!(f.req("DELETE", "/api/v2/users/root/", &as_admin, b"").status, 409);

    // Basic for scripts: a user's own name and password; WWW-Authenticate only for non-browsers.
    let op_basic = basic(OPERATOR.0, OPERATOR.1);
    assert_eq!(f.req("GET", "/api/v2/nodes/", &[("Authorization", op_basic.as_str())], b"").status, 200);
    let wrong = basic(OPERATOR.0, "not-the-password");
    let a = f.req("GET", "/api/v2/nodes/", &[("Authorization", wrong.as_str())], b"");
    assert_eq!((a.status, a.header("www-authenticate").is_some()), (401, true), "{:?}", a.headers);
    let a = f.req("GET", "/api/v2/nodes/", &[("Sec-Fetch-Mode", "cors")], b"");
    assert_eq!((a.status, a.header("www-authenticate")), (401, None));
    // Pages redirect to the login page, relative; the login page itself is let through.
    let a = f.req("GET", "/", &[], b"");
    assert_eq!((a.status, a.header("location")), (303, Some("login")));
    assert_ne!(f.req("GET", "/login", &[], b"").status, 303);
    // A wrong password and an unknown name are told apart by nothing.
    let w1 = f.req(
        "POST",
        "/api/v2/auth/login/",
        &[JSON],
        &json_body(json!({"username": "root", "password": "wrong-password"})),
    );
    let w2 = f.req(
        "POST",
        "/api/v2/auth/login/",
        &[JSON],
        &json_body(json!({"username": "nobody", "password": "wrong-password"})),
    );
    assert_eq!((w1.status, &w1.json), (w2.status, &w2.json));
    assert_eq!(w1.status, 401);

    // The activity log: who did what, where, how it ended; filtered; admins only.
    let a = f.req("GET", "/api/v2/activitylogs/?user=victor&result=denied", &as_admin, b"");
    assert_eq!(a.status, 200, "{}", a.body);
    let denied = a.json["entries"].as_array().expect("entries");
    assert!(
        denied.iter().any(|e| e["action"] == "stop" && e["node"] == "m1" && e["process"] == "web:app"),
        "{}",
        a.body
    );
    let a = f.req("GET", "/api/v2/activitylogs/?user=olga&action=restart", &as_admin, b"");
    let e = &a.json["entries"][0];
    assert_eq!(
        (e["node"].as_str(), e["process"].as_str(), e["result"].as_str()),
        (Some("m1"), Some("web:app"), Some("success")),
        "{}",
        a.body
    );
    let a = f.req("GET", "/api/v2/activitylogs/3/?action=login", &as_admin, b"");
    let logins = a.json["entries"].as_array().expect("entries");
    assert!(logins.len() == 3 && logins.iter().all(|e| e["action"] == "login"), "{}", a.body);
    assert!(logins.iter().any(|e| e["result"] == "failed" && e["source"] == "127.0.0.1"), "{}", a.body);
    let a = f.req("GET", "/api/v2/activitylogs/", &as_admin, b"");
    let lines = a.json["logs"].as_array().expect("Cesi's lines").len();
    assert!(lines >= 10, "{}", a.body);
    for (user, action) in [
        ("root", "user add"),
        ("root", "user change"),
        ("root", "user remove"),
        ("olga", "logout"),
        ("victor", "log"),
    ] {
        assert!(
            a.json["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .any(|e| e["user"] == user && e["action"] == action),
            "{user} {action} in {}",
            a.body
        );
    }
    seen.push_str(&a.body);
    assert!(!a.body.contains("nobody"), "a name that is no user's is not recorded as typed: {}", a.body);
    assert_eq!(f.req("GET", "/api/v2/activitylogs/?password=x", &as_admin, b"").status, 400);
    // Clearing the log is itself recorded (the text file keeps every line).
    assert_eq!(f.req("DELETE", "/api/v2/activitylogs/", &as_admin, b"").status, 200);
    let a = f.req("GET", "/api/v2/activitylogs/", &as_admin, b"");
    let left: Vec<&str> =
        a.json["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(left, ["activity clear"], "{}", a.body);

    // No password anywhere: answers, the activity table and file, the fleet's log, the database.
    let file = std::fs::read_to_string(d.join("activity.log")).expect("Cesi's activity file");
    assert!(file.contains("olga restart web:app on m1: success"), "{file}");
    let db = std::fs::read(d.join("users.db")).expect("the database");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(d.join("users.db")).expect("meta").permissions().mode() & 0o777, 0o600);
    for (what, text) in [
        ("answers", seen),
        ("activity file", file),
        ("fleet log", f.log()),
        ("database", String::from_utf8_lossy(&db).into_owned()),
    ] {
        for pw in [ADMIN.1, OPERATOR.1, VIEWER.1, PROD_VIEWER.1, "not-the-password", "wrong-password"] {
            assert!(!text.contains(pw), "{pw} in the {what}");
        }
    }
}

#[test]
fn a_forged_cross_site_request_with_a_valid_cookie_reaches_no_node() {
    let dir = tempfile::Builder::new().prefix("fleet-csrf-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_nodes, s1, _s2, conf) = two_nodes(d);
    let f = fleet(&conf);
    let session = cookie(&f.login(ADMIN.0, ADMIN.1));
    wait_for("m1's web:app in the fleet", 20 * SECS, || {
        let a = f.req("GET", "/api/v2/nodes/m1/processes/web:app/", &[("Cookie", session.as_str())], b"");
        a.json["process"]["statename"] == "RUNNING"
    });
    let pid = pid_on(&s1, "web:app");
    for (method, path, extra) in [
        ("POST", "/api/v2/nodes/m1/processes/web:app/stop/", ("Sec-Fetch-Site", "cross-site")),
        ("POST", "/api/v2/nodes/m1/processes/web:app/stop/", ("Sec-Fetch-Site", "same-site")),
        ("GET", "/api/v2/nodes/m1/processes/web:app/stop/", ("Sec-Fetch-Site", "cross-site")),
        ("GET", "/api/v2/nodes/m1/all-processes/stop/", ("Sec-Fetch-Site", "cross-site")),
        ("POST", "/api/v2/groups/web/stop", ("Origin", "http://evil.example")),
        ("POST", "/api/v2/users/", ("Origin", "http://evil.example")),
        ("POST", "/api/v2/auth/login/", ("Sec-Fetch-Site", "cross-site")),
    ] {
        let body = json_body(json!({"username": "evil", "password": "evil-password", "role": "admin"}));
        let a = f.req(method, path, &[("Cookie", session.as_str()), JSON, extra], &body);
        assert_eq!(
            (a.status, a.json["status"].as_str()),
            (403, Some("error")),
            "{method} {path} {extra:?}: {}",
            a.body
        );
    }
    assert_eq!(pid_on(&s1, "web:app"), pid, "nothing reached the node");
    let users = f.req("GET", "/api/v2/users/", &[("Cookie", session.as_str())], b"");
    assert!(!users.body.contains("evil"), "{}", users.body);
    // The same request from the fleet's own page goes through: the check is what refused.
    let a = f.req(
        "POST",
        "/api/v2/nodes/m1/processes/web:app/stop/",
        &[
            ("Cookie", session.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", &format!("http://{}", f.addr)),
        ],
        b"",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    wait_for("m1's web:app stopped", 10 * SECS, || pid_on(&s1, "web:app") == "0");
}

/// Runs `flood(fleet address, thread number)` on `threads` threads while `session` asks the
/// fleet for its nodes 20 times (each must answer 200): each thread's result, how long the
/// floods took, and the 20 answers' times, sorted.
fn flood_meanwhile<T: Send + 'static>(
    f: &FleetProc,
    session: &str,
    threads: u8,
    flood: impl Fn(String, u8) -> T + Send + Clone + 'static,
) -> (Vec<T>, Duration, Vec<Duration>) {
    let started = Instant::now();
    let floods: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, flood) = (f.addr.clone(), flood.clone());
            std::thread::spawn(move || flood(addr, t))
        })
        .collect();
    let mut during = Vec::new();
    while during.len() < 20 {
        let a = f.req("GET", "/api/v2/nodes/", &[("Cookie", session)], b"");
        assert_eq!(a.status, 200, "{}", a.body);
        during.push(a.took);
    }
    let results = floods.into_iter().map(|t| t.join().expect("a flood thread")).collect();
    let took = started.elapsed();
    during.sort();
    (results, took, during)
}

#[test]
fn a_failed_login_flood_is_limited_without_argon2_and_the_fleet_stays_responsive() {
    let dir = tempfile::Builder::new().prefix("fleet-flood-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_nodes, _s1, _s2, conf) = two_nodes(d);
    let f = fleet(&conf);
    // Logged in before the flood, from the same address.
    let session = cookie(&f.login(ADMIN.0, ADMIN.1));
    let bad = json_body(json!({"username": "root", "password": "guess-guess"}));
    for i in 0..5 {
        let a = f.req("POST", "/api/v2/auth/login/", &[JSON], &bad);
        assert_eq!(a.status, 401, "failure {i}: {}", a.body);
    }
    // From now on: 429 with Retry-After, the right password too, for this address and name.
    let a = f.req(
        "POST",
        "/api/v2/auth/login/",
        &[JSON],
        &json_body(json!({"username": "root", "password": ADMIN.1})),
    );
    assert_eq!(a.status, 429, "{}", a.body);
    let retry: u64 = a.header("retry-after").and_then(|s| s.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    let basic_right = basic(ADMIN.0, ADMIN.1);
    assert_eq!(f.req("GET", "/api/v2/nodes/", &[("Authorization", &basic_right)], b"").status, 429);

    // A flood of 400 attempts on 8 connections, names varied: all refused at once, while the
    // session made before answers well within its deadline.
    let (codes, flood_took, during) = flood_meanwhile(&f, &session, 8, |addr, t| {
        (0..50)
            .map(|i| {
                let body = json_body(json!({"username": format!("u{t}-{i}"), "password": "guess-guess"}));
                request(&addr, "POST", "/api/v2/auth/login/", &[JSON], &body).status
            })
            .collect::<Vec<u16>>()
    });
    let codes: Vec<u16> = codes.into_iter().flatten().collect();
    eprintln!(
        "400 failed logins on 8 connections: {flood_took:?}; GET /api/v2/nodes/ meanwhile: median {:?}, max {:?}",
        during[during.len() / 2],
        during[during.len() - 1]
    );
    assert!(codes.iter().all(|&c| c == 429), "{codes:?}");
    assert!(during[during.len() - 1] < Duration::from_millis(500), "{during:?}");
    // No argon2 ran for a limited attempt: only verified failures are recorded as "failed".
    let a = f.req(
        "GET",
        "/api/v2/activitylogs/?action=login&result=failed",
        &[("Cookie", session.as_str())],
        b"",
    );
    assert_eq!(a.json["entries"].as_array().map(Vec::len), Some(5), "{}", a.body);
    let a = f.req(
        "GET",
        "/api/v2/activitylogs/?action=login&result=limited",
        &[("Cookie", session.as_str())],
        b"",
    );
    assert_eq!(a.json["entries"].as_array().map(Vec::len), Some(1), "{}", a.body);
    assert!(!f.log().contains("guess-guess"));
}

#[test]
fn failed_logins_from_many_addresses_leave_the_fleet_its_cores() {
    let dir = tempfile::Builder::new().prefix("fleet-many-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_nodes, _s1, _s2, conf) = two_nodes(d);
    let f = fleet(&conf);
    let session = cookie(&f.login(ADMIN.0, ADMIN.1));
    // 12 addresses, each with 5 wrong passwords for names of its own (each is an argon2 run),
    // then one more each, which is refused at once.
    let (codes, took, during) = flood_meanwhile(&f, &session, 12, |addr, i| {
        (0..6)
            .map(|j| {
                let body = json_body(json!({"username": format!("n{i}-{j}"), "password": "guess-guess"}));
                request_from([127, 0, 1, i + 2], &addr, "POST", "/api/v2/auth/login/", &[JSON], &body).status
            })
            .collect::<Vec<u16>>()
    });
    eprintln!(
        "60 failed logins (argon2 each) from 12 addresses: {took:?}; GET /api/v2/nodes/ meanwhile: median {:?}, max {:?}",
        during[during.len() / 2],
        during[during.len() - 1]
    );
    for c in &codes {
        assert_eq!(c, &[401, 401, 401, 401, 401, 429], "{codes:?}");
    }
    assert!(during[during.len() - 1] < Duration::from_millis(500), "{during:?}");
    // The first address is still limited; the session's own address is not.
    let a = request_from(
        [127, 0, 1, 2],
        &f.addr,
        "POST",
        "/api/v2/auth/login/",
        &[JSON],
        &json_body(json!({"username": ADMIN.0, "password": ADMIN.1})),
    );
    assert_eq!(a.status, 429);
    f.login(ADMIN.0, ADMIN.1);
}

#[test]
fn hostile_bodies_are_refused_in_json() {
    let dir = tempfile::Builder::new().prefix("fleet-bodies-").tempdir().expect("a temp dir");
    let d = dir.path();
    let conf = d.join("fleet.toml");
    std::fs::write(
        &conf,
        format!("[cesi]\nadmin_username = \"{}\"\nadmin_password = \"{}\"\n", ADMIN.0, ADMIN.1),
    )
    .expect("write");
    let f = fleet(&conf);
    let admin = basic(ADMIN.0, ADMIN.1);
    let big = format!("{{\"username\": \"root\", \"password\": \"{}\"}}", "x".repeat(200_000));
    for (path, auth, body, expect) in [
        ("/api/v2/auth/login/", false, big.as_bytes(), 413),
        ("/api/v2/auth/login/", false, b"{not json".as_slice(), 400),
        ("/api/v2/auth/login/", false, b"{\"username\": 5}".as_slice(), 400),
        ("/api/v2/auth/login/", false, b"[]".as_slice(), 400),
        ("/api/v2/users/", true, big.as_bytes(), 413),
        ("/api/v2/users/", true, b"{not json".as_slice(), 400),
        (
            "/api/v2/users/",
            true,
            b"{\"username\": \"a\", \"password\": \"long-enough\", \"role\": \"admin\", \"x\": 1}".as_slice(),
            400,
        ),
        (
            "/api/v2/users/",
            true,
            b"{\"username\": \"../etc\", \"password\": \"long-enough\", \"role\": \"admin\"}".as_slice(),
            400,
        ),
        (
            "/api/v2/users/",
            true,
            b"{\"username\": \"a\", \"password\": \"long-enough\", \"usertype\": 7}".as_slice(),
            400,
        ),
        ("/api/v2/profile/password/", true, b"{\"old_password\": 1}".as_slice(), 400),
    ] {
        let mut headers = vec![JSON];
        if auth {
            headers.push(("Authorization", admin.as_str()));
        }
        let a = f.req("POST", path, &headers, body);
        assert_eq!(
            (a.status, a.json["status"].as_str()),
            (expect, Some("error")),
            "{path} {}: {}",
            String::from_utf8_lossy(&body[..body.len().min(80)]),
            a.body
        );
        assert!(a.body.len() < 400, "errors do not echo much: {}", a.body.len());
    }
    // A form login without a password, and one with a wrong one.
    let a = f.req(
        "POST",
        "/api/v2/auth/login/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"username=root",
    );
    assert_eq!(a.status, 400);
    // The user list is unchanged and the fleet still serves.
    let a = f.req("GET", "/api/v2/users/", &[("Authorization", admin.as_str())], b"");
    assert_eq!(a.json["users"].as_array().map(Vec::len), Some(1), "{}", a.body);
}

#[test]
fn a_cesi_configuration_and_database_load_and_users_come_from_the_command_line() {
    let dir = tempfile::Builder::new().prefix("fleet-cesi-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_m1, s1) = minderd(d, "m1", NODE);
    // Cesi's own users table, as its SQLAlchemy model makes it, with a werkzeug hash.
    {
        let c = rusqlite::Connection::open(d.join("users.db")).expect("sqlite");
        c.execute_batch(
            "CREATE TABLE users (id INTEGER NOT NULL, username VARCHAR(16), password VARCHAR(64), usertype INTEGER, PRIMARY KEY (id));
             CREATE UNIQUE INDEX ix_users_username ON users (username);
             INSERT INTO users (username, password, usertype) VALUES ('cesi-admin', 'pbkdf2:sha256:150000$abc$def', 0);",
        )
        .expect("Cesi's table");
    }
    // Cesi's cesi.conf.toml, unmodified but for a password of its own and the node.
    let conf = d.join("cesi.conf.toml");
    std::fs::write(
        &conf,
        format!(
            "[cesi]\ndatabase = \"sqlite:///users.db\"\nactivity_log = \"activity.log\"\nadmin_username = \"admin\"\n\
             admin_password = \"{}\"\n\n[[nodes]]\nname = \"local\"\nenvironment = \"prod\"\nhost = \"localhost\"\n\
             port = \"9001\"\nusername = \"\"\npassword = \"\"\n\n[[nodes]]\nname = \"m1\"\nenvironment = \"prod\"\n\
             kind = \"minderd\"\naddress = \"unix://{}\"\n",
            ADMIN.1,
            s1.display()
        ),
    )
    .expect("write");
    let out = user_cli(
        &conf,
        &["add", "alice", "--role", "operator", "--environment", "prod"],
        "alice-password-5\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = user_cli(&conf, &["add", "bob", "--role", "viewer"], "short\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"), "{out:?}");
    let out = user_cli(&conf, &["add", "bob", "--role", "root"], "bob-password-66\n");
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown role");
    let f = fleet(&conf);
    wait_for("the word on Cesi's hashes in the log", 10 * SECS, || {
        f.log().contains("(cesi-admin)") && f.log().contains("user passwd NAME")
    });

    // Cesi's usertype 0 user from the configuration is an admin; alice, from the command line,
    // an operator restricted to prod; Cesi's werkzeug user cannot log in until given a password.
    let a = f.req("GET", "/api/v2/profile/", &[("Authorization", &basic("admin", ADMIN.1))], b"");
    assert_eq!(a.json["user"]["role"], "admin", "{}", a.body);
    let alice = cookie(&f.login("alice", "alice-password-5"));
    // The command line's change is in the activity log, with what it changed (no password).
    let a = f.req(
        "GET",
        "/api/v2/activitylogs/?action=user+add&result=success",
        &[("Authorization", &basic("admin", ADMIN.1))],
        b"",
    );
    let e = &a.json["entries"][0];
    assert_eq!(
        (e["source"].as_str(), e["detail"].as_str(), e["result"].as_str()),
        (Some("command line"), Some("user alice, role operator, environments prod"), Some("success")),
        "{}",
        a.body
    );
    assert!(!a.body.contains("alice-password-5"));
    let a = f.req("GET", "/api/v2/profile/", &[("Cookie", alice.as_str())], b"");
    assert_eq!(a.json["user"], json!({"username": "alice", "role": "operator", "environments": ["prod"]}));
    let a = f.req(
        "POST",
        "/api/v2/auth/login/",
        &[JSON],
        &json_body(json!({"username": "cesi-admin", "password": "pbkdf2:sha256:150000$abc$def"})),
    );
    assert_eq!(a.status, 401);

    // Changes made with the command line while the fleet runs apply at once.
    let out = user_cli(&conf, &["passwd", "cesi-admin"], "a-new-password-7\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a =
        f.req("GET", "/api/v2/profile/", &[("Authorization", &basic("cesi-admin", "a-new-password-7"))], b"");
    assert_eq!((a.status, a.json["user"]["role"].as_str()), (200, Some("admin")), "{}", a.body);
    let out = user_cli(&conf, &["list"], "");
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        list.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["alice", "operator", "prod"]),
        "{list}"
    );
    let out = user_cli(&conf, &["remove", "alice"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // (This once failed: the fleet closed a descriptor of its own database, which dropped
    // SQLite's locks, and the command line's exit took the WAL away from under the fleet.)
    let a = f.req("GET", "/api/v2/profile/", &[("Cookie", alice.as_str())], b"");
    assert_eq!(a.status, 401, "{}", a.body);

    // One's own password: the old one is needed; other sessions end.
    let s1c = cookie(&f.login("cesi-admin", "a-new-password-7"));
    let s2c = cookie(&f.login("cesi-admin", "a-new-password-7"));
    let wrong = json_body(json!({"oldPassword": "nope-nope-nope", "newPassword": "third-password-8"}));
    assert_eq!(
        f.req("PUT", "/api/v2/profile/password/", &[("Cookie", s1c.as_str()), JSON], &wrong).status,
        400
    );
    let right = json_body(json!({"old_password": "a-new-password-7", "new_password": "third-password-8"}));
    let a = f.req("PUT", "/api/v2/profile/password/", &[("Cookie", s1c.as_str()), JSON], &right);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(f.req("GET", "/api/v2/profile/", &[("Cookie", s1c.as_str())], b"").status, 200);
    assert_eq!(f.req("GET", "/api/v2/profile/", &[("Cookie", s2c.as_str())], b"").status, 401);
    let old = basic("cesi-admin", "a-new-password-7");
    assert_eq!(f.req("GET", "/api/v2/profile/", &[("Authorization", old.as_str())], b"").status, 401);
}

#[test]
fn with_no_admin_and_no_users_the_fleet_starts_and_says_how_to_add_one() {
    let dir = tempfile::Builder::new().prefix("fleet-empty-").tempdir().expect("a temp dir");
    let conf = dir.path().join("fleet.toml");
    std::fs::write(&conf, "").expect("write");
    let f = fleet(&conf);
    wait_for("the hint in the log", 10 * SECS, || f.log().contains("user add NAME --role admin"));
    assert!(dir.path().join("fleet.db").exists(), "the default database beside the configuration");
    let a = f.req("GET", "/api/v2/nodes/", &[], b"");
    assert_eq!(a.status, 401);
}

#[test]
fn user_add_on_a_terminal_asks_twice_and_echoes_nothing() {
    use std::io::{Read as _, Write as _};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::Builder::new().prefix("fleet-tty-").tempdir().expect("a temp dir");
    let conf = dir.path().join("fleet.toml");
    std::fs::write(&conf, "").expect("write");
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let slave = |fd: &std::os::fd::OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_minder-fleet"));
    cmd.arg("--config-file").arg(&conf).args(["user", "add", "tty", "--role", "viewer"]);
    cmd.stdin(slave(&pty.slave)).stdout(slave(&pty.slave)).stderr(slave(&pty.slave));
    let child = Owned(cmd.spawn().expect("minder-fleet runs"));
    drop(cmd);
    drop(pty.slave);
    let screen = Arc::new(Mutex::new(String::new()));
    let mut master = std::fs::File::from(pty.master);
    let mut writer = master.try_clone().expect("dup");
    let sink = screen.clone();
    // Ends with EIO once the child, the last holder of the terminal's other end, is gone.
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let shown = || screen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    wait_for("the first prompt", 10 * SECS, || shown().contains("New password: "));
    writer.write_all(b"typed-on-a-tty-9\n").expect("type");
    wait_for("the second prompt", 10 * SECS, || shown().contains("Again: "));
    writer.write_all(b"typed-on-a-tty-9\n").expect("type");
    wait_for("the answer", 10 * SECS, || shown().contains("added tty (viewer)"));
    assert!(!shown().contains("typed-on-a-tty"), "the password was echoed: {:?}", shown());
    drop(child);
    let f = fleet(&conf);
    let a = f.req("GET", "/api/v2/profile/", &[("Authorization", &basic("tty", "typed-on-a-tty-9"))], b"");
    assert_eq!(a.json["user"]["role"], "viewer", "{}", a.body);
}
