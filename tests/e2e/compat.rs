//! A supervisord.conf, unmodified: run by minderd, found by minder through [supervisorctl].

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use crate::harness::{alive, bin, code, stderr, stdout, wait_for};

const SECS: Duration = Duration::from_secs(1);

/// The sample of shared/seed (the notes minder started from), paths made relative with
/// %(here)s, and ping replaced by a loop that needs no network.
const SEED: &str = r#"
[unix_http_server]
file=%(here)s/supervisor.sock   ; supervisord 的 sock 文件的路径
;chmod=0700                 ; sock 文件的权限(默认为 0700)

;[inet_http_server]         ; Web 管理页面(默认不启用)
;port=127.0.0.1:9001

[supervisord]
logfile=%(here)s/supervisord.log
;logfile_maxbytes=50MB
pidfile=%(here)s/supervisord.pid
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/supervisor.sock

[include]   ; 导入其它配置文件
files = supervisord.d/*.ini
"#;

const PING: &str = r#"
[program:ping]              ; 被管理的进程名
command=/bin/sh -c 'while true; do echo pong; sleep 1; done' ; 该进程的启动命令
directory=/tmp              ; 工作目录(执行 command 之前会切换到该目录)
;environment=A="1",B="2"    ; 设置环境变量
autostart=true              ; 当 supervisord 启动时是否自动启动该进程
autorestart=unexpected      ; 当进程启动成功之后退出时是否重启它
startsecs=1                 ; 进程启动之后保持运行多少秒,才视作进程启动成功了
startretries=3              ; 启动失败之后最多尝试重启多少次
stdout_logfile=%(here)s/../%(program_name)s_stdout.log
stdout_logfile_maxbytes=100MB
stdout_logfile_backups=0
stderr_logfile=%(here)s/../%(program_name)s_stderr.log
stderr_logfile_maxbytes=100MB
stderr_logfile_backups=0
"#;

fn ctl(conf: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("minder"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .env_remove("MINDER_SERVER")
        .output()
        .expect("runs")
}

/// The seed's sample runs as written: minderd daemonizes (nodaemon=false), writes its pidfile,
/// and minder finds it through [supervisorctl] serverurl.
#[test]
fn the_seed_sample_runs_as_written() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("supervisord.d")).expect("mkdir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(&conf, SEED).expect("write");
    std::fs::write(dir.path().join("supervisord.d/ping.ini"), PING).expect("write");
    let out = Command::new(bin("minderd")).arg("-c").arg(&conf).output().expect("minderd runs");
    assert_eq!(code(&out), 0, "minderd goes into the background: {}", stderr(&out));
    let pid: i32 = std::fs::read_to_string(dir.path().join("supervisord.pid"))
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    wait_for("ping to be RUNNING", 10 * SECS, || {
        stdout(&ctl(&conf, &["status", "ping"])).contains("RUNNING")
    });
    wait_for("pong in the log", 10 * SECS, || {
        std::fs::read_to_string(dir.path().join("ping_stdout.log")).is_ok_and(|s| s.contains("pong"))
    });
    let out = ctl(&conf, &["stop", "ping"]);
    assert_eq!(stdout(&out), "ping: stopped\n");
    let out = ctl(&conf, &["start", "ping"]);
    assert_eq!(stdout(&out), "ping: started\n");
    let out = ctl(&conf, &["restart", "ping"]);
    assert_eq!(stdout(&out), "ping: stopped\nping: started\n");
    let out = ctl(&conf, &["update"]);
    assert_eq!(stdout(&out), "No config updates to processes\n");
    let out = ctl(&conf, &["shutdown"]);
    assert_eq!(stdout(&out), "Shut down\n");
    wait_for("the daemon to exit", 30 * SECS, || !alive(pid));
    assert!(!dir.path().join("supervisord.pid").exists());
    assert!(std::fs::read_to_string(dir.path().join("supervisord.log"))
        .expect("log")
        .contains("spawned: 'ping'"));
}

#[test]
fn fcgi_program_gets_its_socket_as_stdin() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    // Each process accepts one connection on fd 0 and answers with its name.
    std::fs::write(
        &conf,
        r#"
[unix_http_server]
file=%(here)s/m.sock
[supervisord]
logfile=%(here)s/d.log
pidfile=%(here)s/d.pid
[supervisorctl]
serverurl=unix://%(here)s/m.sock
[fcgi-program:hello]
socket=unix://%(here)s/fcgi.sock
command=python3 -c "import os, socket; s = socket.socket(fileno=0); c, _ = s.accept(); c.sendall(os.environ['SUPERVISOR_PROCESS_NAME'].encode()); c.close(); import time; time.sleep(100)"
process_name=%(program_name)s_%(process_num)d
numprocs=2
startsecs=0
"#,
    )
    .expect("write");
    let mut daemon = crate::harness::minderd_on(&conf);
    wait_for("both processes", 10 * SECS, || {
        let s = stdout(&ctl(&conf, &["status"]));
        s.matches("RUNNING").count() == 2
    });
    let sock = dir.path().join("fcgi.sock");
    let mut names = Vec::new();
    for _ in 0..2 {
        let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("the program's socket accepts");
        let mut name = String::new();
        c.read_to_string(&mut name).expect("read");
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["hello_0", "hello_1"], "two processes served one socket");
    crate::harness::sigterm(&daemon);
    assert!(daemon.wait().expect("exits").success());
}

#[test]
fn check_config_prints_every_option_or_every_error() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        "[supervisord]\n[program:web]\ncommand=sleep 1\nnumprocs=2\nprocess_name=%(program_name)s_%(process_num)02d\n",
    )
    .expect("write");
    let out = Command::new(bin("minderd")).arg("--check-config").arg("-c").arg(&conf).output().expect("runs");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("[process.\"web:web_00\"]") && text.contains("[process.\"web:web_01\"]"), "{text}");
    assert!(text.contains("stopwaitsecs = 10.0") && text.contains("startretries = 3"), "{text}");
    let out = Command::new(bin("minderd"))
        .args(["--check-config", "--json", "-c"])
        .arg(&conf)
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["groups"][0]["processes"][1]["name"], "web_01");
    std::fs::write(
        &conf,
        "[supervisord]\n[program:web]\ncommand=echo 100%\nstopasgroup=true\nkillasgroup=false\n",
    )
    .expect("write");
    let out = Command::new(bin("minderd")).arg("--check-config").arg("-c").arg(&conf).output().expect("runs");
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("supervisord.conf:3: [program:web] command"), "{err}");
    assert!(err.contains("supervisord.conf:5: [program:web] killasgroup"), "{err}");
}

#[test]
fn config_convert_prints_equivalent_toml() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        "[supervisord]\n[program:web]\ncommand=sleep 1\nnumprocs=2\nprocess_name=%(program_name)s_%(process_num)02d\nautorestart=true\n",
    )
    .expect("write");
    let out = Command::new(bin("minder")).args(["config", "convert"]).arg(&conf).output().expect("runs");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let toml = stdout(&out);
    let converted = dir.path().join("converted.toml");
    std::fs::write(&converted, &toml).expect("write");
    // The TOML reads back to the same processes.
    let out = Command::new(bin("minderd"))
        .args(["--check-config", "--json", "-c"])
        .arg(&converted)
        .output()
        .expect("runs");
    assert_eq!(code(&out), 0, "{}\n{toml}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let procs = &v["groups"][0]["processes"];
    assert_eq!(procs[0]["name"], "web_00");
    assert_eq!(procs[1]["name"], "web_01");
    assert_eq!(procs[1]["autorestart"], "true");
}
