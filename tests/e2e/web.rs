//! The web page: Supervisor's GET actions driven by the seed's own `curl -L … -u admin:PASS`
//! commands, cross-site refusals, read-only callers, the message shown, the live event
//! stream, and (in `web_browser.py`) the page in a real headless Chromium.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);
const PASSWORD: &str = "s3cret pass";
const READER: &str = "web-reader-token-0123456789";

/// A daemon with a password on its TCP listener and a read-only token.
fn daemon() -> Daemon {
    Daemon::start_with(
        &format!(
            "[daemon]\ntokens_file = \"{{dir}}/tokens\"\n\
             [daemon.credentials.\"tcp://127.0.0.1:0\"]\nusername = \"admin\"\npassword = \"{PASSWORD}\"\n\
             [program.ping]\ncommand = \"sleep 1000\"\nstartsecs = 0\n\
             [program.idle]\ncommand = \"sleep 1000\"\nstartsecs = 0\nautostart = false\n"
        ),
        &[("tokens", &format!("grafana read-only {READER}\n"))],
        &["--listen", "tcp://127.0.0.1:0"],
    )
}

/// Runs curl with `args`; returns its exit code and what it printed (headers included when
/// asked for with -i).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-s", "--max-time", "30"]).args(args).output().expect("curl runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[test]
fn the_seeds_curl_commands_change_state_and_show_supervisors_message() {
    let d = daemon();
    let addr = d.tcp_address();
    let auth = format!("admin:{PASSWORD}");
    let seed = |name: &str, action: &str| {
        // Exactly the seed's command line, with this daemon's address.
        let url = format!("http://{addr}/index.html?processname={name}&action={action}");
        let (code, page) = curl(&["-L", &url, "-u", &auth]);
        assert_eq!(code, 0, "curl -L {url}: {page}");
        page
    };
    d.wait_state("ping", "RUNNING", 10 * SECS);
    let pid = d.process("ping")["pid"].as_u64();

    let page = seed("ping", "stop");
    assert!(page.contains("Process ping stopped"), "the redirect lands on the message: {page}");
    assert_eq!(d.state("ping"), "STOPPED", "stop really stopped it");
    assert!(page.contains("data-name=\"ping\" data-group=\"ping\" data-state=\"STOPPED\""), "{page}");

    let page = seed("ping", "start");
    assert!(page.contains("Process ping started"), "{page}");
    assert_eq!(d.state("ping"), "RUNNING");

    let before = d.process("ping")["pid"].as_u64();
    assert_ne!(before, pid, "a new child after stop and start");
    let page = seed("ping", "restart");
    assert!(page.contains("Process ping restarted"), "{page}");
    assert_eq!(d.state("ping"), "RUNNING");
    assert_ne!(d.process("ping")["pid"].as_u64(), before, "restart made a new child");

    let page = seed("ping", "clearlog");
    assert!(page.contains("Log for ping cleared"), "{page}");
    let page = seed("nosuch", "start");
    assert!(page.contains("No such process named nosuch"), "{page}");
    let page = seed("idle", "stop");
    assert!(page.contains("unexpected rpc fault [70] NOT_RUNNING: idle"), "Supervisor's words: {page}");

    // The redirect itself: 303 (never a cacheable 301) to a relative URL.
    let (_, head) =
        curl(&["-i", &format!("http://{addr}/index.html?processname=idle&action=start"), "-u", &auth]);
    assert!(status_line(&head).contains("303"), "{head}");
    assert!(head.to_ascii_lowercase().contains("location: ./?message=process%20idle%20started"), "{head}");
    assert_eq!(d.state("idle"), "RUNNING");

    for (action, message) in [("stopall", "All stopped at "), ("restartall", "All restarted at ")] {
        let (_, page) = curl(&["-L", &format!("http://{addr}/index.html?action={action}"), "-u", &auth]);
        assert!(page.contains(message), "{action}: {page}");
    }
    assert_eq!((d.state("ping"), d.state("idle")), ("RUNNING".into(), "RUNNING".into()));

    // HEAD is safe: it never acts.
    let (_, head) =
        curl(&["-I", &format!("http://{addr}/index.html?processname=ping&action=stop"), "-u", &auth]);
    assert!(status_line(&head).contains("200"), "{head}");
    assert_eq!(d.state("ping"), "RUNNING");
    // Without credentials nothing happens, and the browser is asked for them.
    let (_, head) = curl(&["-i", &format!("http://{addr}/index.html?processname=ping&action=stop")]);
    assert!(status_line(&head).contains("401") && head.contains("Basic realm="), "{head}");
    assert_eq!(d.state("ping"), "RUNNING");
    // Every change went to the audit log with its caller.
    assert!(d.log().contains("user admin requested web stop ping"), "{}", d.log());
}

#[test]
fn cross_site_requests_cannot_change_state() {
    let d = daemon();
    let addr = d.tcp_address();
    let auth = format!("admin:{PASSWORD}");
    d.wait_state("ping", "RUNNING", 10 * SECS);
    let url = format!("http://{addr}/index.html");

    // A form on another site posting here: the browser sends its Origin (and Sec-Fetch-Site).
    let (_, r) =
        curl(&["-i", "-u", &auth, "-H", "Origin: http://evil.example", "-d", "action=stop ping", &url]);
    assert!(status_line(&r).contains("403"), "{r}");
    let (_, r) = curl(&[
        "-i",
        "-u",
        &auth,
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Sec-Fetch-Site: cross-site",
        "-d",
        "action=stopall",
        &url,
    ]);
    assert!(status_line(&r).contains("403"), "{r}");
    // An <img src> or link to a GET action from another site.
    let (_, r) = curl(&[
        "-i",
        "-u",
        &auth,
        "-H",
        "Sec-Fetch-Site: cross-site",
        &format!("{url}?processname=ping&action=stop"),
    ]);
    assert!(status_line(&r).contains("403"), "{r}");
    let (_, r) =
        curl(&["-i", "-u", &auth, "-H", "Sec-Fetch-Site: same-site", &format!("{url}?action=stopall")]);
    assert!(status_line(&r).contains("403"), "a sibling subdomain is another site too: {r}");
    assert_eq!(d.state("ping"), "RUNNING", "nothing was stopped");
    assert!(d.log().contains("was refused a cross-site stop"), "{}", d.log());

    // The page's own requests, and the address bar, still work.
    let (_, r) =
        curl(&["-i", "-u", &auth, "-H", &format!("Origin: http://{addr}"), "-d", "action=stop ping", &url]);
    assert!(status_line(&r).contains("303"), "{r}");
    assert_eq!(d.state("ping"), "STOPPED");
    let (_, r) = curl(&[
        "-i",
        "-u",
        &auth,
        "-H",
        "Sec-Fetch-Site: none",
        &format!("{url}?processname=ping&action=start"),
    ]);
    assert!(status_line(&r).contains("303"), "{r}");
    assert_eq!(d.state("ping"), "RUNNING");
}

#[test]
fn a_read_only_caller_sees_the_page_without_buttons_and_changes_nothing() {
    let d = daemon();
    let addr = d.tcp_address();
    d.wait_state("ping", "RUNNING", 10 * SECS);
    let bearer = format!("Authorization: Bearer {READER}");
    let (_, page) = curl(&["-i", "-H", &bearer, &format!("http://{addr}/")]);
    assert!(status_line(&page).contains("200"), "{page}");
    assert!(page.contains("data-name=\"ping\"") && page.contains("statusrunning"), "{page}");
    assert!(!page.contains("<button name=\"action\" value=\"stop"), "no action buttons: {page}");
    assert!(!page.contains("name=\"processname\""), "no selection: {page}");
    assert!(page.contains("data-readonly=\"true\""));
    for action in ["stop", "restart", "clearlog"] {
        let (_, r) = curl(&[
            "-i",
            "-H",
            &bearer,
            &format!("http://{addr}/index.html?processname=ping&action={action}"),
        ]);
        assert!(status_line(&r).contains("403"), "{action}: {r}");
    }
    let (_, r) = curl(&["-i", "-H", &bearer, "-d", "action=stopall", &format!("http://{addr}/index.html")]);
    assert!(status_line(&r).contains("403"), "{r}");
    assert_eq!(d.state("ping"), "RUNNING");
    // Refresh changes nothing, so a reader may use it.
    let (_, r) = curl(&["-L", "-H", &bearer, &format!("http://{addr}/index.html?action=refresh")]);
    assert!(r.contains("Page refreshed at "), "{r}");
    // And the live picture says read-only, so the script draws no buttons either.
    let (_, j) = curl(&["-H", &bearer, &format!("http://{addr}/status.json")]);
    let v: serde_json::Value = serde_json::from_str(&j).expect("status.json is JSON");
    assert_eq!(v["readonly"], true);
}

#[test]
fn the_message_is_escaped_and_no_secret_reaches_the_page() {
    let d = daemon();
    let addr = d.tcp_address();
    let auth = format!("admin:{PASSWORD}");
    let (_, page) = curl(&[
        "-u",
        &auth,
        &format!("http://{addr}/?message=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%20onload%3D%22x"),
    ]);
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot; onload=&quot;x"), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains(PASSWORD) && !page.contains("YWRtaW4"), "no credentials in the page");
    // Every URL the page uses is relative, so it works under a proxy's path prefix.
    for attr in ["href=\"", "src=\"", "action=\""] {
        for (i, _) in page.match_indices(attr) {
            let url = &page[i + attr.len()..];
            assert!(
                !url.starts_with('/') && !url.contains("://"),
                "{attr}{}",
                &url[..url.find('"').unwrap_or(0)]
            );
        }
    }
    // A name of 20 KB is echoed bounded: in the redirect, and in the audit log.
    let long = "x".repeat(20_000);
    let (_, r) = curl(&[
        "-i",
        "-u",
        &auth,
        "-d",
        &format!("action=stop&processname={long}"),
        &format!("http://{addr}/index.html"),
    ]);
    assert!(status_line(&r).contains("303"), "{}", &r[..200.min(r.len())]);
    let location = r.lines().find(|l| l.to_ascii_lowercase().starts_with("location:")).unwrap_or("");
    assert!(
        location.contains("No%20such%20process%20named%20xxx") && location.len() < 2_000,
        "{} bytes",
        location.len()
    );
    let audit = d.log().lines().find(|l| l.contains("requested web stop xxx")).map(str::len);
    assert!(audit.is_some_and(|n| n < 2_000), "the audit line: {audit:?}");
    let (_, head) = curl(&["-I", "-u", &auth, &format!("http://{addr}/")]);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-security-policy:") && head.contains("frame-ancestors 'none'"), "{head}");
}

#[test]
fn the_event_stream_delivers_a_state_change() {
    let mut d = daemon();
    let addr = d.tcp_address();
    d.wait_state("ping", "RUNNING", 10 * SECS);
    let mut stream = Command::new("curl")
        .args(["-s", "-N", "-u", &format!("admin:{PASSWORD}"), &format!("http://{addr}/events")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    let out = stream.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let seen = |rx: &std::sync::mpsc::Receiver<String>,
                lines: &mut Vec<String>,
                want: &dyn Fn(&[String]) -> bool| {
        wait_for("an event", 10 * SECS, || {
            while let Ok(l) = rx.try_recv() {
                lines.push(l);
            }
            want(lines)
        });
    };
    seen(&rx, &mut lines, &|l| l.iter().any(|l| l.starts_with("data: ") && l.contains("\"processes\"")));
    assert!(lines.iter().any(|l| l == "event: snapshot"), "{lines:?}");
    let stopped = |l: &[String]| {
        l.windows(2).any(|w| {
            w[0] == "event: process"
                && w[1].contains("\"name\":\"ping\"")
                && w[1].contains("\"state\":\"STOPPED\"")
        })
    };
    assert!(!stopped(&lines));
    assert!(d.ctl(&["stop", "ping"]).status.success());
    seen(&rx, &mut lines, &stopped);
    // The daemon stopping ends the stream (a last snapshot, then the end) rather than holding
    // its shutdown until the drain deadline cuts it.
    let started = std::time::Instant::now();
    assert!(d.stop().success());
    let mut ended = false;
    wait_for("the event stream to end", 10 * SECS, || {
        ended = stream.try_wait().ok().flatten().is_some();
        ended
    });
    while let Ok(l) = rx.recv_timeout(SECS) {
        lines.push(l);
    }
    assert!(lines.iter().rev().take(4).any(|l| l.contains("\"processes\"")), "a last snapshot: {lines:?}");
    assert!(started.elapsed() < 10 * SECS, "shutdown took {:?}", started.elapsed());
}

/// The page in a real browser: headless Chromium, driven through chromedriver's WebDriver API
/// by `web_browser.py`. scripts/test installs Chromium; without it this test fails and says so.
#[test]
fn the_page_in_headless_chromium() {
    let have = |b: &str| {
        Command::new("sh").arg("-c").arg(format!("command -v {b}")).output().is_ok_and(|o| o.status.success())
    };
    assert!(
        have("chromedriver") && have("chromium"),
        "chromium and chromedriver are not installed: scripts/test installs them (apt-get install chromium chromium-driver)"
    );
    // A password on the listener, so the forged request carries the browser's cached
    // credentials: only the cross-site check stands between it and the process.
    let d = Daemon::start_with(
        "[daemon.credentials.\"tcp://127.0.0.1:0\"]\nusername = \"admin\"\npassword = \"browser-pw\"\n\
         [program.ping]\ncommand = \"sleep 1000\"\nstartsecs = 0\n\
         [program.talk]\ncommand = \"sh {dir}/talk.sh\"\nstartsecs = 0\n",
        &[("talk.sh", "i=0\nwhile true; do i=$((i+1)); echo \"line $i\"; sleep 0.2; done\n")],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    d.wait_state("ping", "RUNNING", 10 * SECS);
    d.wait_state("talk", "RUNNING", 10 * SECS);
    let script = d.path("web_browser.py");
    std::fs::write(&script, include_str!("web_browser.py")).expect("write the script");
    // Its WebDriver client, shared with the fleet's browser test: next to it, for `import`.
    std::fs::write(d.path("webdriver.py"), include_str!("webdriver.py")).expect("write the module");
    let minder = crate::harness::bin("minder");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&addr)
        .arg(&minder)
        .arg(&d.socket)
        .arg(d.dir.path())
        .arg("admin:browser-pw")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout:\n{stdout}\nstderr:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // The forged cross-site POST changed nothing.
    assert_eq!(d.state("talk"), "RUNNING");
    print!("{stdout}");
}

#[test]
fn the_page_shows_spawn_errors_and_exit_statuses() {
    let d = Daemon::start_with(
        "[program.broken]\ncommand = \"/nonexistent/bin/x\"\nstartsecs = 0\nstartretries = 0\n\
         [program.flap]\ncommand = \"sh -c 'exit 3'\"\nstartsecs = 1\nstartretries = 0\n\
         [program.crash]\ncommand = \"sh -c 'sleep 0.2; exit 3'\"\nstartsecs = 0\nautorestart = false\n\
         [program.done]\ncommand = \"sh -c 'exit 0'\"\nstartsecs = 0\nautorestart = false\n",
        &[],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    for name in ["broken", "flap"] {
        d.wait_state(name, "FATAL", 10 * SECS);
    }
    d.wait_state("done", "EXITED", 10 * SECS);
    d.wait_state("crash", "EXITED", 10 * SECS);
    let (_, page) = curl(&[&format!("http://{addr}/")]);
    let row = |name: &str| {
        let start = page
            .find(&format!("<tr data-name=\"{name}\""))
            .unwrap_or_else(|| panic!("no row {name}: {page}"));
        page[start..].split("</tr>").next().unwrap_or("").to_string()
    };
    let broken = row("broken");
    assert!(broken.contains("class=\"statuserror\">fatal<"), "{broken}");
    assert!(
        broken.contains("can&#39;t find command &#39;/nonexistent/bin/x&#39;"),
        "the spawn error: {broken}"
    );
    assert!(broken.contains("value=\"start broken\""), "FATAL offers Start: {broken}");
    let flap = row("flap");
    assert!(flap.contains("Exited too quickly"), "{flap}");
    let crash = row("crash");
    assert!(crash.contains("<td class=\"problem\">exit status 3</td>"), "{crash}");
    let done = row("done");
    assert!(done.contains("statusnominal\">exited<"), "{done}");
    assert!(done.contains("<td class=\"problem\">exit status 0 (expected)</td>"), "{done}");
    // The same in the JSON the live page draws from.
    let (_, j) = curl(&[&format!("http://{addr}/status.json")]);
    let v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
    let crash = v["processes"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "crash")).cloned();
    assert_eq!(crash.as_ref().map(|p| p["problem"].clone()), Some(serde_json::json!("exit status 3")), "{j}");
}
