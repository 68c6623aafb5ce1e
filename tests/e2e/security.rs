//! Who may connect and what they may do: tokens, supervisord's passwords, TLS and mutual TLS,
//! unix peer credentials, and the refusal to listen unprotected on a network.

use std::process::Command;
use std::time::Duration;

use minder::pb;

use crate::harness::{bin, code, stderr, stdout, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-0123456789";

fn ctl_tcp(addr: &str, extra: &[&str], args: &[&str]) -> std::process::Output {
    Command::new(bin("minder"))
        .arg("-s")
        .arg(format!("tcp://{addr}"))
        .args(extra)
        .args(args)
        .env_remove("MINDER_TOKEN")
        .output()
        .expect("minder runs")
}

fn with_tokens() -> (Daemon, String) {
    let tokens = format!("# name role token\nops admin {ADMIN}\ngrafana read-only {READER}\n");
    let d = Daemon::start_with(
        "[daemon]\ntokens_file = \"{dir}/tokens\"\n[program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\n",
        &[("tokens", &tokens)],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    (d, addr)
}

#[test]
fn tokens_authenticate_and_roles_limit() {
    let (d, addr) = with_tokens();
    d.wait_state("web", "RUNNING", 10 * SECS);
    // No token: refused, with the reason.
    let out = ctl_tcp(&addr, &[], &["status"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("credentials are required"), "{}", stderr(&out));
    let out = ctl_tcp(&addr, &["--token", "not-a-token-at-all"], &["status"]);
    assert!(stderr(&out).contains("the token is not valid"), "{}", stderr(&out));
    // A read-only token may look, not touch.
    let out = ctl_tcp(&addr, &["--token", READER], &["status", "web"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = ctl_tcp(&addr, &["--token", READER], &["stop", "web"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("token grafana is read-only and may not call StopProcesses"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.state("web"), "RUNNING");
    // An admin token may.
    let out = ctl_tcp(&addr, &["--token", ADMIN], &["stop", "web"]);
    assert_eq!(stdout(&out), "web: stopped\n", "{}", stderr(&out));
    // The audit log says who.
    assert!(d.log().contains("token ops requested stop web"), "{}", d.log());
    // Health needs no credentials (probes send none).
    let out = ctl_tcp(&addr, &["--token", ADMIN], &["start", "web"]);
    assert_eq!(code(&out), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_status_codes_for_missing_wrong_and_read_only_tokens() {
    let (d, addr) = with_tokens();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut c = pb::supervisor_client::SupervisorClient::new(channel.clone());
    let err = c.list_processes(pb::ListProcessesRequest::default()).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().starts_with("credentials are required"), "{err:?}");
    let with = |token: &'static str| {
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
            Ok(req)
        }
    };
    let mut wrong = pb::supervisor_client::SupervisorClient::with_interceptor(
        channel.clone(),
        with("wrong-token-0123456789"),
    );
    let err = wrong.list_processes(pb::ListProcessesRequest::default()).await.expect_err("wrong token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(err.message(), "the token is not valid");
    let mut reader = pb::supervisor_client::SupervisorClient::with_interceptor(channel.clone(), with(READER));
    assert!(reader.list_processes(pb::ListProcessesRequest::default()).await.is_ok());
    let err = reader
        .stop_processes(pb::StopProcessesRequest { names: vec!["web".into()], no_wait: false })
        .await
        .expect_err("read-only");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(err.message(), "token grafana is read-only and may not call StopProcesses");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let ok = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert!(ok.is_ok(), "health checks need no token");
    drop(d);
}

#[test]
fn supervisord_username_and_password() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    std::fs::write(
        &conf,
        format!(
            "[inet_http_server]\nport=127.0.0.1:{port}\nusername=user\npassword={{SHA}}82ab876d1387bfafe46cc1c8a2ef074eae50cb1d\n\
             [supervisord]\nlogfile=%(here)s/d.log\npidfile=%(here)s/d.pid\n\
             [supervisorctl]\nserverurl=http://127.0.0.1:{port}\nusername=user\npassword=thepassword\n\
             [program:web]\ncommand=sleep 100\nstartsecs=0\n"
        ),
    )
    .expect("write");
    let mut daemon = crate::harness::minderd_on(&conf);
    let ctl = |extra: &[&str]| {
        Command::new(bin("minder")).arg("-c").arg(&conf).args(extra).arg("status").output().expect("runs")
    };
    // supervisorctl's [supervisorctl] username and password are used, as supervisorctl uses them.
    wait_for("the daemon to answer with the configured password", 10 * SECS, || code(&ctl(&[])) == 0);
    let out = ctl(&["-p", "wrong"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("the username or password is not valid"), "{}", stderr(&out));
    crate::harness::sigterm(&daemon);
    assert!(daemon.wait().expect("exits").success());
}

#[test]
fn a_unix_socket_with_a_password_requires_it() {
    // supervisord asks for [unix_http_server]'s username and password on the socket too, and a
    // socket opened to everyone (chmod=0777) relies on that.
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        "[unix_http_server]\nfile=%(here)s/s.sock\nchmod=0777\nusername=user\npassword=123\n\
         [supervisord]\nlogfile=%(here)s/d.log\npidfile=%(here)s/d.pid\n\
         [supervisorctl]\nserverurl=unix://%(here)s/s.sock\nusername=user\npassword=123\n\
         [program:web]\ncommand=sleep 100\nstartsecs=0\n",
    )
    .expect("write");
    let mut daemon = crate::harness::minderd_on(&conf);
    let sock = format!("unix://{}", dir.path().join("s.sock").display());
    let ctl = |args: &[&str]| Command::new(bin("minder")).args(args).arg("status").output().expect("runs");
    // [supervisorctl]'s username and password are sent, as supervisorctl sends them.
    let with_config = ["-c", conf.to_str().expect("utf-8")];
    wait_for("the daemon to answer with the configured password", 10 * SECS, || {
        code(&ctl(&with_config)) == 0
    });
    let out = ctl(&["-s", &sock]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("this socket requires a username and password"), "{}", stderr(&out));
    let out = ctl(&["-s", &sock, "-u", "user", "-p", "124"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("the username or password is not valid"), "{}", stderr(&out));
    let out = ctl(&["-s", &sock, "-u", "user", "-p", "123"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    crate::harness::sigterm(&daemon);
    assert!(daemon.wait().expect("exits").success());
}

#[test]
fn credentials_for_port_0_protect_the_port_it_got() {
    // The credentials are configured for tcp://127.0.0.1:0; the listener reports the port the
    // kernel gave it, and must still ask for them there.
    let d = Daemon::start_with(
        "[daemon.credentials.\"tcp://127.0.0.1:0\"]\nusername = \"u\"\npassword = \"p\"\n\
         [program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\n",
        &[],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    let out = ctl_tcp(&addr, &[], &["status"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stderr(&out).contains("credentials are required"), "{}", stderr(&out));
    let out = ctl_tcp(&addr, &["-u", "u", "-p", "p"], &["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("web"), "{}", stdout(&out));
}

#[test]
fn a_pidfile_planted_as_a_link_in_a_shared_directory_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    // /tmp's shape: anyone may create entries, sticky. A local user plants pidfile -> a
    // root-owned file; minderd (root) must refuse to start rather than truncate the target.
    let dir = tempfile::tempdir().expect("dir");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("write");
    std::os::unix::fs::symlink(&victim, shared.join("minderd.pid")).expect("link");
    std::fs::write(dir.path().join("m.toml"), "").expect("write");
    let minderd = || {
        let mut cmd = Command::new(bin("minderd"));
        cmd.arg("-c")
            .arg(dir.path().join("m.toml"))
            .arg("--listen")
            .arg(format!("unix://{}/m.sock", dir.path().display()))
            .arg("-j")
            .arg(shared.join("minderd.pid"));
        cmd
    };
    let out = crate::harness::run_to_exit(minderd(), None);
    assert_eq!(code(&out), 1, "minderd must not start: {}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write the pidfile") && stderr(&out).contains("symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious\n");
    // The same directory without the link: the pidfile is written (a regular file there is fine).
    std::fs::remove_file(shared.join("minderd.pid")).expect("rm");
    let mut daemon = minderd().stdout(std::process::Stdio::null()).spawn().expect("minderd");
    let pid = daemon.id().to_string();
    wait_for("the pidfile", 10 * SECS, || {
        std::fs::read_to_string(shared.join("minderd.pid")).is_ok_and(|s| s.trim() == pid)
    });
    // The pidfile comes before the signal handlers: wait until it answers before SIGTERM.
    let sock = dir.path().join("m.sock");
    wait_for("minderd to answer", 10 * SECS, || crate::harness::ctl_at(&sock, &["version"]).status.success());
    crate::harness::sigterm(&daemon);
    assert!(daemon.wait().expect("exits").success());
}

#[test]
fn a_network_listener_without_authentication_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("m.toml"), "").expect("write");
    let run = |extra: &[&str]| {
        Command::new(bin("minderd"))
            .arg("-c")
            .arg(dir.path().join("m.toml"))
            .args(["--listen", "tcp://0.0.0.0:0"])
            .args(extra)
            .arg("--check-config")
            .output()
            .expect("runs")
    };
    // --check-config stops before listening: use the real start instead.
    let out = Command::new(bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .args(["--listen", "tcp://0.0.0.0:0"])
        .output()
        .expect("runs");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("refusing to listen at tcp://0.0.0.0:0 without authentication"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&run(&[])), 0, "checking the configuration listens nowhere");
    // With --insecure it starts (and is then shut down by this test).
    let mut child = Command::new(bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .args(["--listen", "tcp://0.0.0.0:0", "--listen"])
        .arg(format!("unix://{}/m.sock", dir.path().display()))
        .arg("--insecure")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let sock = dir.path().join("m.sock");
    wait_for("the insecure daemon to answer", 10 * SECS, || {
        crate::harness::ctl_at(&sock, &["version"]).status.success()
    });
    crate::harness::sigterm(&child);
    assert!(child.wait().expect("exits").success());
}

#[test]
fn unix_peer_credentials_are_checked() {
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::current()).expect("passwd").expect("me").name;
    let other = if me == "nobody" { "root" } else { "nobody" };
    let d = Daemon::start(&format!("[daemon]\nsocket_users = [\"{other}\"]\n"));
    let out = d.ctl(&["status"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out)
            .contains(&format!("uid {} ({me}) is not allowed to use this socket", nix::unistd::getuid())),
        "{}",
        stderr(&out)
    );
    drop(d);
    let d = Daemon::start(&format!(
        "[daemon]\nsocket_users = [\"{me}\"]\n[program.s]\ncommand = \"sleep 100\"\nautostart = false\n"
    ));
    assert_eq!(code(&d.ctl(&["start", "s"])), 0);
    let uid = nix::unistd::Uid::current();
    assert!(d.log().contains(&format!("uid {uid} ({me}) requested start s")), "{}", d.log());
}

/// `socket_users` and `socket_groups` by number are resolved as names are (a uid that is
/// not the caller's keeps it out, instead of an empty list letting everyone in), and a name
/// or number that does not resolve stops the configuration from loading.
#[test]
fn socket_users_and_groups_by_number_and_unknown_names() {
    let nobody = nix::unistd::User::from_name("nobody").expect("passwd").expect("a nobody user");
    let me = nix::unistd::User::from_uid(nix::unistd::getuid()).expect("passwd").expect("me");
    assert_ne!(me.uid, nobody.uid, "the test runs as someone other than nobody");
    let refused = format!("uid {} ({}) is not allowed to use this socket", me.uid, me.name);
    for setting in
        [format!("socket_users = [\"{}\"]", nobody.uid), format!("socket_groups = [\"{}\"]", nobody.gid)]
    {
        if me.gid == nobody.gid {
            continue;
        }
        let d = Daemon::start(&format!("[daemon]\n{setting}\n"));
        let out = d.ctl(&["status"]);
        assert_eq!(code(&out), 1, "{setting}");
        assert!(stderr(&out).contains(&refused), "{setting}: {}", stderr(&out));
    }
    let d = Daemon::start(&format!("[daemon]\nsocket_users = [\"{}\"]\n", me.uid));
    assert_eq!(code(&d.ctl(&["version"])), 0, "my own uid, by number, is let in");
    drop(d);
    let dir = tempfile::tempdir().expect("dir");
    for (setting, error) in [
        ("socket_users = [\"no-such-user-h3\"]", "no such user \"no-such-user-h3\" on this system"),
        ("socket_users = [\"4000000000\"]", "no such user \"4000000000\" on this system"),
        ("socket_groups = [\"no-such-group-h3\"]", "no such group \"no-such-group-h3\" on this system"),
    ] {
        std::fs::write(dir.path().join("m.toml"), format!("[daemon]\n{setting}\n")).expect("write");
        let out = Command::new(bin("minderd"))
            .arg("-c")
            .arg(dir.path().join("m.toml"))
            .arg("--check-config")
            .output()
            .expect("runs");
        assert_eq!(code(&out), 2, "{setting}");
        assert!(stderr(&out).contains(error), "{setting}: {}", stderr(&out));
    }
}

/// `{SHA}` passwords as Supervisor reads them: any value is accepted, and one that no SHA-1
/// digest can equal (not 40 lowercase hex digits) gets a warning that says so.
#[test]
fn sha_passwords_that_can_never_match_are_warned_about() {
    let dir = tempfile::tempdir().expect("dir");
    for (value, hint) in [
        ("{SHA}82AB876D1387BFAFE46CC1C8A2EF074EAE50CB1D", "write its hex digits in lowercase"),
        ("{SHA}secret", "40 lowercase hex digits"),
    ] {
        let conf = dir.path().join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[inet_http_server]\nport=127.0.0.1:9001\nusername=user\npassword={value}\n[supervisord]\n"
            ),
        )
        .expect("write");
        let out =
            Command::new(bin("minderd")).arg("-c").arg(&conf).arg("--check-config").output().expect("runs");
        assert_eq!(code(&out), 0, "accepted, as Supervisor accepts it: {}", stderr(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            text.contains("the {SHA} password can never match") && text.contains(hint),
            "{value}: {text}"
        );
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost, a client certificate from the CA, and
/// one from a CA the server does not know.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
        let ca = |cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let cert = params.self_signed(&key).expect("ca");
            (params, key, cert)
        };
        let (ca_params, ca_key, ca_cert) = ca("minder test CA");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        write("ca.pem", ca_cert.pem());
        let leaf = |names: Vec<String>, issuer: &Issuer<'_, &KeyPair>, prefix: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names).expect("params").signed_by(&key, issuer).expect("leaf");
            write(&format!("{prefix}.pem"), cert.pem());
            write(&format!("{prefix}.key"), key.serialize_pem());
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], &issuer, "server");
        leaf(vec!["client".into()], &issuer, "client");
        let (other_params, other_key, _) = ca("someone else's CA");
        leaf(vec!["intruder".into()], &Issuer::from_params(&other_params, &other_key), "intruder");
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// What a gRPC client gets from `addr` over TLS (trusting the test CA), presenting the
/// certificate `cert` (`client`, `intruder`) or none: the daemon's version, or the error with
/// its whole chain of causes.
fn tls_call(pki: &Pki, addr: &str, cert: Option<&str>) -> Result<String, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |name: &str| std::fs::read(pki.path(name)).expect("read a test file");
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.pem"))).domain_name("localhost");
    if let Some(c) = cert {
        tls = tls.identity(Identity::from_pem(read(&format!("{c}.pem")), read(&format!("{c}.key"))));
    }
    let chain = |e: &dyn std::error::Error| {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let endpoint =
            Endpoint::from_shared(format!("https://{addr}")).expect("uri").tls_config(tls).expect("tls");
        let channel = endpoint.connect().await.map_err(|e| chain(&e))?;
        let mut c = pb::supervisor_client::SupervisorClient::new(channel);
        c.get_daemon_info(pb::GetDaemonInfoRequest {}).await.map(|r| r.into_inner().version).map_err(|s| {
            format!(
                "{:?}: {}",
                s.code(),
                std::error::Error::source(&s).map_or_else(|| s.message().to_string(), chain)
            )
        })
    })
}

#[test]
fn mutual_tls_accepts_the_right_certificate_and_refuses_others() {
    let pki = Pki::new();
    let d = Daemon::start_with(
        &format!(
            "[daemon]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem")
        ),
        &[],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    let tls = |cert: &str| {
        vec![
            "--tls-ca".to_string(),
            pki.path("ca.pem"),
            "--tls-cert".into(),
            pki.path(&format!("{cert}.pem")),
            "--tls-key".into(),
            pki.path(&format!("{cert}.key")),
            "--tls-domain".into(),
            "localhost".into(),
        ]
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let out = ctl_tcp(&addr, &args(&tls("client")), &["version"]);
    assert_eq!(code(&out), 0, "the CA's client is let in: {}", stderr(&out));
    assert_eq!(tls_call(&pki, &addr, Some("client")), Ok(minder::VERSION.to_string()));
    // A certificate from another CA: refused in the handshake, which the daemon logs.
    let out = ctl_tcp(&addr, &args(&tls("intruder")), &["version"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    wait_for("the refusal in the log", 10 * SECS, || {
        d.log().contains(
            "authentication failed for 127.0.0.1: TLS handshake failed: invalid peer certificate: UnknownIssuer",
        )
    });
    // None: refused in the handshake too (the client sees the connection fail, never a gRPC
    // status; the log has it as one more failure of that peer, not a line of its own).
    let err = tls_call(&pki, &addr, None).expect_err("no client certificate");
    assert!(err.contains("transport error"), "{err}");
    let out = ctl_tcp(&addr, &["--tls-ca", &pki.path("ca.pem"), "--tls-domain", "localhost"], &["version"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // Plain text to a TLS port: no HTTP/2 comes back (the client sees the TLS alert as
    // garbage, or the connection closed, depending on which it reads first).
    let out = ctl_tcp(&addr, &[], &["version"]);
    assert_eq!(code(&out), 1);
    // Which of the two the client reports depends on whether the server's close reached it
    // before or after it read the TLS alert: both say the connection failed below gRPC.
    let err = stderr(&out);
    assert!(err.contains("h2 protocol error") || err.contains("minder: transport error"), "{err}");
}

#[test]
fn tls_with_a_token() {
    let pki = Pki::new();
    let d = Daemon::start_with(
        &format!(
            "[daemon]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntokens_file = \"{{dir}}/tokens\"\n",
            pki.path("server.pem"),
            pki.path("server.key"),
        ),
        &[("tokens", &format!("ops admin {ADMIN}\n"))],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    let ca = pki.path("ca.pem");
    let out = ctl_tcp(&addr, &["--tls-ca", &ca, "--tls-domain", "localhost", "--token", ADMIN], &["version"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = ctl_tcp(&addr, &["--tls-ca", &ca, "--tls-domain", "localhost"], &["version"]);
    assert_eq!(code(&out), 1, "TLS alone does not authenticate without client certificates");
    assert!(stderr(&out).contains("credentials are required"), "{}", stderr(&out));
}
