//! Supervisor's XML-RPC interface at `POST /RPC2` (API 3.0), on the same sockets as gRPC.
//!
//! A thin translation: the body is decoded by [`super::xmlrpc`], the caller is identified as
//! every front end does it ([`super::common::authenticate`]) and authorised by [`Operation`], and every
//! method calls the same [`Supervisor`] code as `grpc.rs`. What is Supervisor's own lives here:
//! method names and aliases, fault codes and their strings (`BAD_NAME: foo`), result shapes
//! (`ProcessInfo`, the status lists of group calls), and `readFile`/`tailFile`'s offsets.
//!
//! Hostile input: the body is bounded ([`MAX_BODY`]; a declared length beyond it is refused
//! with 413 before any of it is read) and must arrive within a deadline (408), the decoder refuses entities and deep nesting, and only
//! a two-part `namespace.method` without a leading underscore is ever looked up (the fix for
//! CVE-2017-11610): everything else is UNKNOWN_METHOD.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use minder::config::Role;

use super::common::{plain, Response};
use super::xmlrpc::{decode_call, encode_fault, encode_response, Value};
use crate::auth::{self, Access, Caller, Operation, Shield};
use crate::lifecycle::{ExitStatus, Kind};
use crate::logs::LogChannel;
use crate::process::{Fault, ProcessHandle};
use crate::supervisor::{DaemonState, Outcome, RequestError, Supervisor, Target};
use crate::update::UpdateError;

/// The largest request body read; a larger one gets 413.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Supervisor's API version, which supervisorctl insists on.
pub const API_VERSION: &str = "3.0";

/// Supervisor's fault codes (`supervisor.xmlrpc.Faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    UnknownMethod,
    IncorrectParameters,
    BadArguments,
    SignatureUnsupported,
    ShutdownState,
    BadName,
    BadSignal,
    NoFile,
    NotExecutable,
    Failed,
    AbnormalTermination,
    SpawnError,
    AlreadyStarted,
    NotRunning,
    Success,
    AlreadyAdded,
    StillRunning,
    CantReread,
}

impl Code {
    pub fn number(self) -> i64 {
        match self {
            Code::UnknownMethod => 1,
            Code::IncorrectParameters => 2,
            Code::BadArguments => 3,
            Code::SignatureUnsupported => 4,
            Code::ShutdownState => 6,
            Code::BadName => 10,
            Code::BadSignal => 11,
            Code::NoFile => 20,
            Code::NotExecutable => 21,
            Code::Failed => 30,
            Code::AbnormalTermination => 40,
            Code::SpawnError => 50,
            Code::AlreadyStarted => 60,
            Code::NotRunning => 70,
            Code::Success => 80,
            Code::AlreadyAdded => 90,
            Code::StillRunning => 91,
            Code::CantReread => 92,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::UnknownMethod => "UNKNOWN_METHOD",
            Code::IncorrectParameters => "INCORRECT_PARAMETERS",
            Code::BadArguments => "BAD_ARGUMENTS",
            Code::SignatureUnsupported => "SIGNATURE_UNSUPPORTED",
            Code::ShutdownState => "SHUTDOWN_STATE",
            Code::BadName => "BAD_NAME",
            Code::BadSignal => "BAD_SIGNAL",
            Code::NoFile => "NO_FILE",
            Code::NotExecutable => "NOT_EXECUTABLE",
            Code::Failed => "FAILED",
            Code::AbnormalTermination => "ABNORMAL_TERMINATION",
            Code::SpawnError => "SPAWN_ERROR",
            Code::AlreadyStarted => "ALREADY_STARTED",
            Code::NotRunning => "NOT_RUNNING",
            Code::Success => "SUCCESS",
            Code::AlreadyAdded => "ALREADY_ADDED",
            Code::StillRunning => "STILL_RUNNING",
            Code::CantReread => "CANT_REREAD",
        }
    }
}

/// A fault as Supervisor's `RPCError` makes it: `NAME`, or `NAME: detail`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFault {
    pub code: Code,
    pub text: String,
}

impl RpcFault {
    fn new(code: Code, detail: impl AsRef<str>) -> RpcFault {
        let detail = detail.as_ref();
        let text = if detail.is_empty() {
            code.name().to_string()
        } else {
            crate::frontend::common::bounded(format!("{}: {detail}", code.name()))
        };
        RpcFault { code, text }
    }

    fn bare(code: Code) -> RpcFault {
        RpcFault { code, text: code.name().to_string() }
    }
}

/// Why a call did not run: a fault for the client, or a caller not allowed to make it.
#[derive(Debug)]
enum Refused {
    Fault(RpcFault),
    Forbidden(String),
}

impl From<RpcFault> for Refused {
    fn from(f: RpcFault) -> Refused {
        Refused::Fault(f)
    }
}

type Reply = Result<Value, RpcFault>;

/// One method: its name, what it does (for authorisation and the audit log), its signature
/// (return type first, as `system.methodSignature` gives it) and its help.
struct Method {
    name: &'static str,
    op: Operation,
    signature: &'static [&'static str],
    help: &'static str,
}

const fn m(
    name: &'static str,
    op: Operation,
    signature: &'static [&'static str],
    help: &'static str,
) -> Method {
    Method { name, op, signature, help }
}

use Operation as O;

/// Every method served, aliases included (41 names, as Supervisor 4.3).
const METHODS: &[Method] = &[
    m(
        "supervisor.getAPIVersion",
        O::ReadState,
        &["string"],
        "Return the version of the RPC API used by supervisord",
    ),
    m(
        "supervisor.getVersion",
        O::ReadState,
        &["string"],
        "Return the version of the RPC API used by supervisord (an alias of getAPIVersion)",
    ),
    m(
        "supervisor.getSupervisorVersion",
        O::ReadState,
        &["string"],
        "Return the version of the daemon (minderd)",
    ),
    m(
        "supervisor.getIdentification",
        O::ReadState,
        &["string"],
        "Return the identifying string of the daemon",
    ),
    m(
        "supervisor.getState",
        O::ReadState,
        &["struct"],
        "Return the current state of the daemon as a struct {statecode, statename}",
    ),
    m("supervisor.getPID", O::ReadState, &["int"], "Return the PID of the daemon"),
    m(
        "supervisor.readLog",
        O::ReadLogs,
        &["string", "int", "int"],
        "Read length bytes from the main log starting at offset",
    ),
    m(
        "supervisor.readMainLog",
        O::ReadLogs,
        &["string", "int", "int"],
        "Read length bytes from the main log starting at offset (an alias of readLog)",
    ),
    m("supervisor.clearLog", O::ClearLogs, &["boolean"], "Clear the main log"),
    m("supervisor.shutdown", O::Shutdown, &["boolean"], "Shut down the daemon"),
    m(
        "supervisor.restart",
        O::Configure,
        &["boolean"],
        "Restart the daemon: stop every process, read the configuration again, start",
    ),
    m(
        "supervisor.reloadConfig",
        O::Configure,
        &["array"],
        "Read the configuration again; return [[added, changed, removed]] group names",
    ),
    m(
        "supervisor.addProcessGroup",
        O::Configure,
        &["boolean", "string"],
        "Add the configured process group name",
    ),
    m(
        "supervisor.removeProcessGroup",
        O::Configure,
        &["boolean", "string"],
        "Remove the stopped process group name",
    ),
    m(
        "supervisor.startProcess",
        O::Start,
        &["boolean", "string", "boolean"],
        "Start a process (name, wait=True)",
    ),
    m(
        "supervisor.startProcessGroup",
        O::Start,
        &["array", "string", "boolean"],
        "Start every process of a group (name, wait=True)",
    ),
    m("supervisor.startAllProcesses", O::Start, &["array", "boolean"], "Start every process (wait=True)"),
    m(
        "supervisor.stopProcess",
        O::Stop,
        &["boolean", "string", "boolean"],
        "Stop a process (name, wait=True)",
    ),
    m(
        "supervisor.stopProcessGroup",
        O::Stop,
        &["array", "string", "boolean"],
        "Stop every process of a group (name, wait=True)",
    ),
    m("supervisor.stopAllProcesses", O::Stop, &["array", "boolean"], "Stop every process (wait=True)"),
    m(
        "supervisor.signalProcess",
        O::Signal,
        &["boolean", "string", "string"],
        "Send a signal (name or number) to a process",
    ),
    m(
        "supervisor.signalProcessGroup",
        O::Signal,
        &["array", "string", "string"],
        "Send a signal to every process of a group",
    ),
    m("supervisor.signalAllProcesses", O::Signal, &["array", "string"], "Send a signal to every process"),
    m("supervisor.getAllConfigInfo", O::ReadState, &["array"], "Return the configuration of every process"),
    m("supervisor.getProcessInfo", O::ReadState, &["struct", "string"], "Return the state of a process"),
    m("supervisor.getAllProcessInfo", O::ReadState, &["array"], "Return the state of every process"),
    m(
        "supervisor.readProcessStdoutLog",
        O::ReadLogs,
        &["string", "string", "int", "int"],
        "Read length bytes from a process's stdout log starting at offset",
    ),
    m(
        "supervisor.readProcessLog",
        O::ReadLogs,
        &["string", "string", "int", "int"],
        "Read from a process's stdout log (an alias of readProcessStdoutLog)",
    ),
    m(
        "supervisor.readProcessStderrLog",
        O::ReadLogs,
        &["string", "string", "int", "int"],
        "Read length bytes from a process's stderr log starting at offset",
    ),
    m(
        "supervisor.tailProcessStdoutLog",
        O::ReadLogs,
        &["array", "string", "int", "int"],
        "Tail a process's stdout log: [bytes, offset, overflow]",
    ),
    m(
        "supervisor.tailProcessLog",
        O::ReadLogs,
        &["array", "string", "int", "int"],
        "Tail a process's stdout log (an alias of tailProcessStdoutLog)",
    ),
    m(
        "supervisor.tailProcessStderrLog",
        O::ReadLogs,
        &["array", "string", "int", "int"],
        "Tail a process's stderr log: [bytes, offset, overflow]",
    ),
    m(
        "supervisor.clearProcessLogs",
        O::ClearLogs,
        &["boolean", "string"],
        "Clear a process's stdout and stderr logs",
    ),
    m(
        "supervisor.clearProcessLog",
        O::ClearLogs,
        &["boolean", "string"],
        "Clear a process's logs (an alias of clearProcessLogs)",
    ),
    m("supervisor.clearAllProcessLogs", O::ClearLogs, &["array"], "Clear every process's logs"),
    m(
        "supervisor.sendProcessStdin",
        O::SendStdin,
        &["boolean", "string", "string"],
        "Send chars to a process's stdin",
    ),
    m(
        "supervisor.sendRemoteCommEvent",
        O::SendEvent,
        &["boolean", "string", "string"],
        "Send an event that will be received by event listener subprocesses subscribing to the RemoteCommunicationEvent",
    ),
    m("system.listMethods", O::ReadState, &["array"], "Return the names of every method"),
    m("system.methodHelp", O::ReadState, &["string", "string"], "Return the help of a method"),
    m(
        "system.methodSignature",
        O::ReadState,
        &["array", "string"],
        "Return the signature of a method: [return type, parameter types...]",
    ),
    m(
        "system.multicall",
        O::ReadState,
        &["array", "array"],
        "Run several calls ({methodName, params}); each result, or fault struct, in order",
    ),
];

/// The method `name` names, if it is one Supervisor's dispatcher would reach: exactly
/// `namespace.method`, neither part starting with an underscore.
fn lookup(name: &str) -> Option<&'static Method> {
    let (ns, method) = name.split_once('.')?;
    if ns.is_empty()
        || method.is_empty()
        || method.contains('.')
        || ns.starts_with('_')
        || method.starts_with('_')
    {
        return None;
    }
    METHODS.iter().find(|m| m.name == name)
}

/// The XML-RPC endpoint of one listener.
#[derive(Debug)]
pub struct Endpoint {
    pub sup: Arc<Supervisor>,
    pub daemon_log: Option<Arc<LogChannel>>,
    pub access: Arc<Access>,
    pub shield: Arc<Shield>,
    /// How long a request body may take to arrive ([`super::common::BODY_DEADLINE`]).
    pub body_deadline: std::time::Duration,
}

fn xml(body: String) -> Response {
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(body))));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/xml"));
    r
}

impl Endpoint {
    /// Serves one request to `/RPC2`.
    pub async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Result<Response, Infallible> {
        Ok(self.serve(req).await)
    }

    async fn serve(&self, req: http::Request<Incoming>) -> Response {
        if req.method() != http::Method::POST {
            return super::common::method_not_allowed("/RPC2", "POST");
        }
        // Each method is authorised once it is known; a caller is needed to read the body.
        let caller = match super::common::authenticate(&self.access, &self.shield, &req).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let body = match super::common::read_body(req, MAX_BODY, self.body_deadline).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let call = match decode_call(&body) {
            Ok(c) => c,
            Err(e) => return plain(http::StatusCode::BAD_REQUEST, &format!("Bad Request: {e}")),
        };
        match self.dispatch(&caller, &call.method, &call.params, true).await {
            Ok(v) => xml(encode_response(&v)),
            Err(Refused::Fault(f)) => xml(encode_fault(f.code.number(), &f.text)),
            Err(Refused::Forbidden(why)) => plain(http::StatusCode::FORBIDDEN, &format!("Forbidden: {why}")),
        }
    }

    /// Runs one call for `caller`; `top` is false inside a multicall, which cannot nest.
    async fn dispatch(
        &self,
        caller: &Caller,
        name: &str,
        params: &[Value],
        top: bool,
    ) -> Result<Value, Refused> {
        let Some(method) = lookup(name) else { return Err(RpcFault::bare(Code::UnknownMethod).into()) };
        if !auth::allowed(caller.role, method.op) {
            return Err(Refused::Forbidden(format!(
                "{} is read-only and may not call {}",
                caller.who,
                crate::frontend::common::bounded(name.to_string())
            )));
        }
        if !method.op.read_only() {
            auth::audit(caller, &audit_text(name, params));
        }
        if name == "system.multicall" {
            if !top {
                return Err(
                    RpcFault::new(Code::IncorrectParameters, "Recursive system.multicall forbidden").into()
                );
            }
            return self.multicall(caller, params).await.map_err(Refused::Fault);
        }
        self.call(name, params).await.map_err(Refused::Fault)
    }

    async fn multicall(&self, caller: &Caller, params: &[Value]) -> Reply {
        arity(params, 1, 1)?;
        let Value::Array(calls) = &params[0] else {
            return Err(RpcFault::new(Code::IncorrectParameters, "multicall takes an array of calls"));
        };
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let name = c.member("methodName").and_then(|v| match v {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            });
            let params = match c.member("params") {
                Some(Value::Array(p)) => p.as_slice(),
                None => &[],
                Some(_) => {
                    out.push(fault_struct(&RpcFault::new(
                        Code::IncorrectParameters,
                        "params must be an array",
                    )));
                    continue;
                }
            };
            let result = match name {
                None => {
                    Err(Refused::Fault(RpcFault::new(Code::IncorrectParameters, "a call needs a methodName")))
                }
                // Inner calls cannot be multicalls, so this does not recurse further.
                Some(n) => Box::pin(self.dispatch(caller, n, params, false)).await,
            };
            out.push(match result {
                Ok(v) => v,
                Err(Refused::Fault(f)) => fault_struct(&f),
                Err(Refused::Forbidden(why)) => fault_struct(&RpcFault::new(Code::Failed, why)),
            });
        }
        Ok(Value::Array(out))
    }

    async fn call(&self, name: &str, p: &[Value]) -> Reply {
        let method = name.split_once('.').map_or(name, |(_, m)| m);
        let sup = &self.sup;
        if name.starts_with("system.") {
            return self.system(method, p);
        }
        match method {
            "getAPIVersion" | "getVersion" => {
                arity(p, 0, 0)?;
                Ok(API_VERSION.into())
            }
            "getSupervisorVersion" => {
                arity(p, 0, 0)?;
                Ok(minder::VERSION.into())
            }
            "getIdentification" => {
                arity(p, 0, 0)?;
                Ok(sup.facts().identifier.clone().into())
            }
            "getPID" => {
                arity(p, 0, 0)?;
                Ok(Value::Int(i64::from(sup.facts().pid)))
            }
            "getState" => {
                arity(p, 0, 0)?;
                let (code, name) = match sup.state() {
                    DaemonState::Running => (1, "RUNNING"),
                    DaemonState::Restarting => (0, "RESTARTING"),
                    DaemonState::Shutdown => (-1, "SHUTDOWN"),
                };
                Ok(Value::record([("statecode", Value::Int(code)), ("statename", name.into())]))
            }
            "getProcessInfo" => {
                arity(p, 1, 1)?;
                let name = string(&p[0])?;
                Ok(process_info(&self.one(&name)?))
            }
            "getAllProcessInfo" => {
                arity(p, 0, 0)?;
                Ok(Value::Array(sup.all_by_name().iter().map(process_info).collect()))
            }
            "getAllConfigInfo" => {
                arity(p, 0, 0)?;
                Ok(self.config_info())
            }
            "startProcess" | "stopProcess" => {
                arity(p, 1, 2)?;
                let name = string(&p[0])?;
                let wait = p.get(1).is_none_or(truthy);
                let start = method == "startProcess";
                match Target::parse(&name) {
                    Ok(Target::Process { .. }) => {}
                    // `GROUP:*` acts on the group, as supervisord's startProcess does.
                    Ok(Target::Group(g)) => return self.group_action(start, &g, wait).await,
                    _ => return Err(RpcFault::new(Code::BadName, &name)),
                }
                let sel = [name.clone()];
                let outcomes = if start { sup.start(&sel, wait).await } else { sup.stop(&sel, wait).await };
                single(&name, outcomes.map_err(|e| request_fault(e, &name))?)
            }
            "startProcessGroup" | "stopProcessGroup" => {
                arity(p, 1, 2)?;
                let group = string(&p[0])?;
                let wait = p.get(1).is_none_or(truthy);
                self.group_action(method == "startProcessGroup", &group, wait).await
            }
            "startAllProcesses" | "stopAllProcesses" => {
                arity(p, 0, 1)?;
                let wait = p.first().is_none_or(truthy);
                let all = ["all".to_string()];
                let outcomes = if method == "startAllProcesses" {
                    sup.start(&all, wait).await
                } else {
                    sup.stop(&all, wait).await
                };
                Ok(statuses(outcomes.map_err(|e| request_fault(e, "all"))?))
            }
            "signalProcess" => {
                arity(p, 2, 2)?;
                let name = string(&p[0])?;
                let sig = signal(&p[1])?;
                if !matches!(Target::parse(&name), Ok(Target::Process { .. })) {
                    return Err(RpcFault::new(Code::BadName, &name));
                }
                single(
                    &name,
                    sup.signal(std::slice::from_ref(&name), sig)
                        .await
                        .map_err(|e| request_fault(e, &name))?,
                )
            }
            "signalProcessGroup" => {
                arity(p, 2, 2)?;
                let group = string(&p[0])?;
                let sig = signal(&p[1])?;
                self.check_group(&group)?;
                let outcomes = sup.signal(&[format!("{group}:*")], sig).await;
                Ok(statuses(outcomes.map_err(|e| request_fault(e, &group))?))
            }
            "signalAllProcesses" => {
                arity(p, 1, 1)?;
                let sig = signal(&p[0])?;
                let outcomes = sup.signal(&["all".to_string()], sig).await;
                Ok(statuses(outcomes.map_err(|e| request_fault(e, "all"))?))
            }
            "readProcessStdoutLog" | "readProcessLog" | "readProcessStderrLog" => {
                arity(p, 3, 3)?;
                let name = string(&p[0])?;
                let (offset, length) = (int(&p[1])?, int(&p[2])?);
                let h = self.one(&name)?;
                let path = log_path(&h, method == "readProcessStderrLog");
                let path = existing(path)?;
                Ok(blocking(move || read_file(&path, offset, length)).await?.into())
            }
            "tailProcessStdoutLog" | "tailProcessLog" | "tailProcessStderrLog" => {
                arity(p, 3, 3)?;
                let name = string(&p[0])?;
                let (offset, length) = (int(&p[1])?, int(&p[2])?);
                let h = self.one(&name)?;
                match existing(log_path(&h, method == "tailProcessStderrLog")) {
                    Ok(path) => blocking(move || Ok(tail_file(&path, offset, length))).await,
                    Err(_) => Ok(Value::Array(vec!["".into(), Value::Int(0), Value::Bool(false)])),
                }
            }
            "readLog" | "readMainLog" => {
                arity(p, 2, 2)?;
                let (offset, length) = (int(&p[0])?, int(&p[1])?);
                let path = existing(self.daemon_log.as_ref().map(|c| c.path().to_path_buf()))?;
                Ok(blocking(move || read_file(&path, offset, length)).await?.into())
            }
            "clearLog" => {
                arity(p, 0, 0)?;
                let Some(log) = &self.daemon_log else {
                    return Err(RpcFault::new(Code::NoFile, "minderd logs to standard output"));
                };
                log.clear().map_err(|e| RpcFault::new(Code::Failed, e.to_string()))?;
                Ok(true.into())
            }
            "clearProcessLogs" | "clearProcessLog" => {
                arity(p, 1, 1)?;
                let name = string(&p[0])?;
                self.one(&name)?;
                single(
                    &name,
                    sup.clear_logs(std::slice::from_ref(&name)).await.map_err(|e| request_fault(e, &name))?,
                )
            }
            "clearAllProcessLogs" => {
                arity(p, 0, 0)?;
                let outcomes = sup.clear_logs(&["all".to_string()]).await;
                Ok(statuses(outcomes.map_err(|e| request_fault(e, "all"))?))
            }
            "sendProcessStdin" => {
                arity(p, 2, 2)?;
                let name = string(&p[0])?;
                let data = match &p[1] {
                    Value::String(s) => s.clone().into_bytes(),
                    Value::Base64(b) => b.clone(),
                    _ => return Err(RpcFault::new(Code::IncorrectParameters, "chars must be a string")),
                };
                let h = self.one(&name)?;
                match h.send_stdin(&data).await {
                    Ok(()) => Ok(true.into()),
                    Err(Fault::NotRunning) => Err(RpcFault::new(Code::NotRunning, &name)),
                    Err(f) => Err(fault(&f, &name)),
                }
            }
            "sendRemoteCommEvent" => {
                arity(p, 2, 2)?;
                let kind = string(&p[0])?;
                let data = string(&p[1])?;
                self.sup.send_remote_event(&kind, &data);
                Ok(true.into())
            }
            "reloadConfig" => {
                arity(p, 0, 0)?;
                self.reload_config().await
            }
            "addProcessGroup" => {
                arity(p, 1, 1)?;
                let name = string(&p[0])?;
                sup.add_group(&name).await.map_err(|e| update_fault(e, &name))?;
                Ok(true.into())
            }
            "removeProcessGroup" => {
                arity(p, 1, 1)?;
                let name = string(&p[0])?;
                sup.remove_group(&name).await.map_err(|e| update_fault(e, &name))?;
                Ok(true.into())
            }
            "shutdown" => {
                arity(p, 0, 0)?;
                if sup.request_shutdown() {
                    Ok(true.into())
                } else {
                    Err(RpcFault::bare(Code::ShutdownState))
                }
            }
            "restart" => {
                arity(p, 0, 0)?;
                if sup.state() != DaemonState::Running {
                    return Err(RpcFault::bare(Code::ShutdownState));
                }
                // As supervisord, the answer comes first; the restart runs after it.
                let sup = Arc::clone(sup);
                tokio::spawn(async move {
                    if let Err(e) = sup.reload(true).await {
                        tracing::error!("restart refused, nothing changed: {e}");
                    }
                });
                Ok(true.into())
            }
            _ => Err(RpcFault::bare(Code::UnknownMethod)),
        }
    }

    fn system(&self, method: &str, p: &[Value]) -> Reply {
        match method {
            "listMethods" => {
                arity(p, 0, 0)?;
                let mut names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
                names.sort_unstable();
                Ok(Value::Array(names.into_iter().map(Value::from).collect()))
            }
            "methodHelp" | "methodSignature" => {
                arity(p, 1, 1)?;
                let name = string(&p[0])?;
                let Some(m) = lookup(&name) else { return Err(RpcFault::bare(Code::SignatureUnsupported)) };
                Ok(if method == "methodHelp" {
                    m.help.into()
                } else {
                    Value::Array(vec![Value::Array(m.signature.iter().map(|t| Value::from(*t)).collect())])
                })
            }
            _ => Err(RpcFault::bare(Code::UnknownMethod)),
        }
    }

    /// One process by `NAME` or `GROUP:NAME`: BAD_NAME otherwise.
    fn one(&self, name: &str) -> Result<ProcessHandle, RpcFault> {
        self.sup.get(name).map_err(|e| request_fault(e, name))
    }

    fn check_group(&self, group: &str) -> Result<(), RpcFault> {
        if group.is_empty()
            || group.contains(':')
            || self.sup.list(&[format!("{group}:*")]).map(|(_, u)| !u.is_empty()).unwrap_or(true)
        {
            return Err(RpcFault::new(Code::BadName, group));
        }
        Ok(())
    }

    async fn group_action(&self, start: bool, group: &str, wait: bool) -> Reply {
        self.check_group(group)?;
        let sel = [format!("{group}:*")];
        let outcomes = if start { self.sup.start(&sel, wait).await } else { self.sup.stop(&sel, wait).await };
        Ok(statuses(outcomes.map_err(|e| request_fault(e, group))?))
    }

    /// supervisord's reloadConfig: the configuration is read again (nothing is applied) and
    /// the groups it adds, changes and removes are named.
    async fn reload_config(&self) -> Reply {
        let plan = self.sup.reread().await.map_err(|e| update_fault(e, ""))?;
        let (_, running_groups) = self.sup.running();
        let loaded = Arc::clone(&self.sup.loaded.lock().unwrap_or_else(|e| e.into_inner()));
        let configured: std::collections::BTreeSet<&str> =
            loaded.groups.iter().map(|g| g.name.as_str()).collect();
        let added: Vec<&str> =
            configured.iter().copied().filter(|g| !running_groups.contains_key(*g)).collect();
        let removed: Vec<&str> =
            running_groups.keys().map(String::as_str).filter(|g| !configured.contains(g)).collect();
        let mut changed = std::collections::BTreeSet::new();
        for g in
            plan.add.iter().map(|c| c.group.as_str()).chain(plan.change.iter().map(|(c, _)| c.group.as_str()))
        {
            changed.insert(g);
        }
        for (g, _) in &plan.remove {
            changed.insert(g.as_str());
        }
        let changed: Vec<&str> = changed
            .into_iter()
            .filter(|g| configured.contains(g) && running_groups.contains_key(*g))
            .collect();
        let names = |v: Vec<&str>| Value::Array(v.into_iter().map(Value::from).collect());
        Ok(Value::Array(vec![Value::Array(vec![names(added), names(changed), names(removed)])]))
    }

    /// supervisord's getAllConfigInfo: every configured process's settings, its keys in its
    /// order, and `'none'` for what is unset (XML-RPC has no None without an extension).
    fn config_info(&self) -> Value {
        use minder::config::LogTarget;
        let loaded = Arc::clone(&self.sup.loaded.lock().unwrap_or_else(|e| e.into_inner()));
        let available = self.sup.available();
        let none = || Value::from("none");
        // XML-RPC's <int> is 32-bit: Python's own marshaller refuses more, and Go's and
        // Java's clients fail to read it. What does not fit (startretries = infinite, kept as
        // u32::MAX; a maxbytes of 2 GiB or more) is reported as the largest int,
        // 2147483647: large, and honest in that no count reaches it.
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX).min(i64::from(i32::MAX)));
        let log = |t: &LogTarget| match t {
            LogTarget::None => none(),
            LogTarget::Auto => "auto".into(),
            LogTarget::File(p) => p.display().to_string().into(),
        };
        let mut out = Vec::new();
        for g in &loaded.groups {
            for c in &g.processes {
                let inuse = available.iter().any(|a| a.group == c.group && a.name == c.name && a.in_use);
                let uid = c
                    .user
                    .as_deref()
                    .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
                    .map_or_else(none, |u| Value::Int(i64::from(u.uid.as_raw())));
                let v = vec![
                    ("autostart", Value::Bool(c.autostart)),
                    ("directory", c.directory.as_ref().map_or_else(none, |d| d.display().to_string().into())),
                    ("uid", uid),
                    ("command", c.command.clone().into()),
                    (
                        "exitcodes",
                        Value::Array(c.exitcodes.iter().map(|e| Value::Int(i64::from(*e))).collect()),
                    ),
                    ("group", c.group.clone().into()),
                    ("group_prio", Value::Int(i64::from(g.priority))),
                    ("inuse", Value::Bool(inuse)),
                    ("killasgroup", Value::Bool(c.killasgroup)),
                    ("name", c.name.clone().into()),
                    ("process_prio", Value::Int(i64::from(c.priority))),
                    ("redirect_stderr", Value::Bool(c.redirect_stderr)),
                    ("startretries", int(u64::from(c.startretries))),
                    ("startsecs", int(c.startsecs.as_secs())),
                    ("stdout_capture_maxbytes", int(c.stdout_capture_maxbytes)),
                    ("stdout_events_enabled", Value::Bool(c.stdout_events_enabled)),
                    ("stdout_logfile", log(&c.stdout_logfile)),
                    ("stdout_logfile_backups", Value::Int(i64::from(c.stdout_logfile_backups))),
                    ("stdout_logfile_maxbytes", int(c.stdout_logfile_maxbytes)),
                    ("stdout_syslog", Value::Bool(c.stdout_syslog)),
                    ("stopsignal", Value::Int(c.stopsignal as i64)),
                    ("stopwaitsecs", int(c.stopwaitsecs.as_secs())),
                    ("stderr_capture_maxbytes", int(c.stderr_capture_maxbytes)),
                    ("stderr_events_enabled", Value::Bool(c.stderr_events_enabled)),
                    ("stderr_logfile", log(&c.stderr_logfile)),
                    ("stderr_logfile_backups", Value::Int(i64::from(c.stderr_logfile_backups))),
                    ("stderr_logfile_maxbytes", int(c.stderr_logfile_maxbytes)),
                    ("stderr_syslog", Value::Bool(c.stderr_syslog)),
                    ("serverurl", c.serverurl.clone().map_or_else(none, Value::from)),
                ];
                out.push(Value::record(v));
            }
        }
        Value::Array(out)
    }
}

/// The audit line of a call: the method and its parameters, never the data sent to stdin.
fn audit_text(name: &str, params: &[Value]) -> String {
    let shown: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if name == "supervisor.sendProcessStdin" && i == 1 => {
                format!("({} bytes)", s.len())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(a) => format!("[{} values]", a.len()),
            _ => "…".to_string(),
        })
        .collect();
    crate::frontend::common::bounded(format!("{name}({}) over XML-RPC", shown.join(", ")))
}

fn fault_struct(f: &RpcFault) -> Value {
    Value::record([("faultCode", Value::Int(f.code.number())), ("faultString", f.text.clone().into())])
}

fn arity(p: &[Value], min: usize, max: usize) -> Result<(), RpcFault> {
    if p.len() < min || p.len() > max {
        return Err(RpcFault::bare(Code::IncorrectParameters));
    }
    Ok(())
}

/// A string parameter; a number is taken as its decimal text.
fn string(v: &Value) -> Result<String, RpcFault> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(RpcFault::new(Code::IncorrectParameters, "a string was expected")),
    }
}

/// An integer parameter, converted as Python's `int()` would: strings of digits (with
/// surrounding whitespace, a sign, underscores between digits), booleans, and floats (cut).
fn int(v: &Value) -> Result<i64, RpcFault> {
    let bad = || RpcFault::new(Code::IncorrectParameters, "an integer was expected");
    match v {
        Value::Int(n) => Ok(*n),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Double(d) if d.is_finite() => Ok(d.trunc() as i64),
        Value::String(s) => python_int(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn python_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (sign, digits) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    clean.parse::<i64>().ok().map(|n| sign * n)
}

/// Python's truth value of a parameter: an empty string, 0, an empty array or struct, and nil
/// are false; any other string ("0" and "false" included, as in Python) is true.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Int(n) => *n != 0,
        Value::Double(d) => *d != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Base64(b) => !b.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Struct(m) => !m.is_empty(),
        Value::DateTime(_) => true,
        Value::Nil => false,
    }
}

fn signal(v: &Value) -> Result<minder::signal::Signal, RpcFault> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => return Err(RpcFault::bare(Code::BadSignal)),
    };
    minder::signal::parse(&text).map_err(|_| RpcFault::new(Code::BadSignal, &text))
}

/// The fault for a whole request refused by the supervisor.
fn request_fault(e: RequestError, name: &str) -> RpcFault {
    match e {
        RequestError::InvalidArgument(_) | RequestError::NotFound(_) => RpcFault::new(Code::BadName, name),
        RequestError::ShuttingDown => RpcFault::bare(Code::ShutdownState),
    }
}

fn update_fault(e: UpdateError, name: &str) -> RpcFault {
    match e {
        UpdateError::Config(errors) => RpcFault::new(Code::CantReread, errors.to_string()),
        UpdateError::BadName(_) => RpcFault::new(Code::BadName, name),
        UpdateError::StillRunning(_) => RpcFault::new(Code::StillRunning, name),
        UpdateError::AlreadyAdded(_) => RpcFault::new(Code::AlreadyAdded, name),
        UpdateError::ShuttingDown => RpcFault::bare(Code::ShutdownState),
    }
}

/// The fault for an action on one process that failed (the web page words its messages from it).
pub(crate) fn fault(f: &Fault, name: &str) -> RpcFault {
    match f {
        Fault::BadName(_) => RpcFault::new(Code::BadName, name),
        Fault::NoFile(m) => RpcFault::new(Code::NoFile, m),
        Fault::NotExecutable(m) => RpcFault::new(Code::NotExecutable, m),
        Fault::Failed(m) => RpcFault::new(Code::Failed, format!("{name}: {m}")),
        Fault::ShuttingDown => RpcFault::bare(Code::ShutdownState),
        Fault::AbnormalTermination => RpcFault::new(Code::AbnormalTermination, name),
        Fault::SpawnError(_) => RpcFault::new(Code::SpawnError, name),
        Fault::AlreadyStarted => RpcFault::new(Code::AlreadyStarted, name),
        Fault::NotRunning => RpcFault::new(Code::NotRunning, name),
    }
}

/// The answer to an action on one process: true, or its fault.
fn single(name: &str, outcomes: Vec<Outcome>) -> Reply {
    match outcomes.into_iter().next() {
        None => Err(RpcFault::new(Code::BadName, name)),
        Some(o) if o.process.is_none() => Err(RpcFault::new(Code::BadName, name)),
        Some(o) => match o.result {
            Ok(()) => Ok(true.into()),
            Err(f) => Err(fault(&f, name)),
        },
    }
}

/// The answer to an action on a group or all: one `{name, group, status, description}` each.
fn statuses(outcomes: Vec<Outcome>) -> Value {
    Value::Array(
        outcomes
            .into_iter()
            .map(|o| {
                let (name, group) = match &o.process {
                    Some(h) => (h.config.name.clone(), h.config.group.clone()),
                    None => (o.selector.clone(), o.selector.clone()),
                };
                let (status, description) = match &o.result {
                    Ok(()) => (Code::Success.number(), "OK".to_string()),
                    Err(f) => {
                        let f = fault(f, &minder::config::full_name(&group, &name));
                        (f.code.number(), f.text)
                    }
                };
                Value::record([
                    ("name", Value::from(name)),
                    ("group", group.into()),
                    ("status", Value::Int(status)),
                    ("description", description.into()),
                ])
            })
            .collect(),
    )
}

fn epoch(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs() as i64)
}

/// supervisord's state codes.
pub fn state_code(k: Kind) -> i64 {
    match k {
        Kind::Stopped => 0,
        Kind::Starting => 10,
        Kind::Running => 20,
        Kind::Backoff => 30,
        Kind::Stopping => 40,
        Kind::Exited => 100,
        Kind::Fatal => 200,
        Kind::Unknown => 1000,
    }
}

/// A process as supervisord's `getProcessInfo` describes it, keys in its order.
pub fn process_info(h: &ProcessHandle) -> Value {
    let snap = h.snapshot();
    let c = &h.config;
    let path = |ch: &Option<Arc<LogChannel>>| {
        ch.as_ref().map(|c| c.path().display().to_string()).unwrap_or_default()
    };
    let stdout = path(&h.logs.stdout);
    let exitstatus = match snap.last_exit.as_ref().map(|e| e.status) {
        Some(ExitStatus::Code(c)) => i64::from(c),
        Some(ExitStatus::Signal { .. }) => -1,
        None => 0,
    };
    Value::record([
        ("name", Value::from(c.name.clone())),
        ("group", c.group.clone().into()),
        ("start", Value::Int(epoch(snap.start))),
        ("stop", Value::Int(epoch(snap.stop))),
        ("now", Value::Int(epoch(Some(SystemTime::now())))),
        ("state", Value::Int(state_code(snap.state))),
        ("statename", snap.state.name().into()),
        ("spawnerr", snap.spawn_error.clone().unwrap_or_default().into()),
        ("exitstatus", Value::Int(exitstatus)),
        ("logfile", stdout.clone().into()),
        ("stdout_logfile", stdout.into()),
        ("stderr_logfile", path(&h.logs.stderr).into()),
        ("pid", Value::Int(i64::from(snap.pid.unwrap_or(0)))),
        ("description", snap.description(&c.name).into()),
    ])
}

fn log_path(h: &ProcessHandle, stderr: bool) -> Option<PathBuf> {
    let ch = if stderr { &h.logs.stderr } else { &h.logs.stdout };
    ch.as_ref().map(|c| c.path().to_path_buf())
}

/// The log file, if it exists: NO_FILE otherwise (supervisord's `NO_FILE: path`).
fn existing(path: Option<PathBuf>) -> Result<PathBuf, RpcFault> {
    match path {
        Some(p) if p.exists() => Ok(p),
        Some(p) => Err(RpcFault::new(Code::NoFile, p.display().to_string())),
        None => Err(RpcFault::new(Code::NoFile, "None")),
    }
}

/// Runs file reading on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RpcFault> + Send + 'static,
) -> Result<T, RpcFault> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(RpcFault::new(Code::Failed, e.to_string())))
}

/// The most a read returns at once, whatever length is asked for: the answer must fit in
/// memory twice (bytes, then XML).
const READ_MAX: u64 = 16 * 1024 * 1024;

/// supervisord's `readFile`: a negative offset reads the last `-offset` bytes (length must
/// then be 0); otherwise `length` bytes from `offset` (0: to the end).
fn read_file(path: &Path, offset: i64, length: i64) -> Result<String, RpcFault> {
    use std::io::{Read, Seek, SeekFrom};
    let failed = |_| RpcFault::bare(Code::Failed);
    let mut f = crate::logs::open_read(path).map_err(failed)?;
    let size = f.metadata().map_err(failed)?.len();
    let (from, want) = if offset < 0 {
        if length != 0 {
            return Err(RpcFault::bare(Code::BadArguments));
        }
        let back = offset.unsigned_abs();
        (size.saturating_sub(back), back)
    } else {
        if length < 0 {
            return Err(RpcFault::bare(Code::BadArguments));
        }
        let from = offset as u64;
        let want = if length == 0 { size.saturating_sub(from) } else { length as u64 };
        (from, want)
    };
    f.seek(SeekFrom::Start(from)).map_err(failed)?;
    let mut data = Vec::new();
    f.take(want.min(READ_MAX)).read_to_end(&mut data).map_err(failed)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// supervisord's `tailFile`: `[bytes, offset, overflow]`. When the file has grown past
/// `offset + length`, the last `length` bytes and overflow; the new offset is the file's size.
fn tail_file(path: &Path, offset: i64, length: i64) -> Value {
    use std::io::{Read, Seek, SeekFrom};
    let answer = |data: &[u8], offset: i64, overflow: bool| {
        Value::Array(vec![
            String::from_utf8_lossy(data).into_owned().into(),
            Value::Int(offset),
            Value::Bool(overflow),
        ])
    };
    let Ok(mut f) = crate::logs::open_read(path) else { return answer(b"", offset, false) };
    let Ok(sz) = f.metadata().map(|m| m.len() as i64) else { return answer(b"", offset, false) };
    let (mut offset, mut length) = (offset, length.min(READ_MAX as i64));
    let mut overflow = false;
    if sz > offset.saturating_add(length) {
        overflow = true;
        offset = sz - 1;
    }
    if offset.saturating_add(length) > sz {
        if offset > sz - 1 {
            length = 0;
        }
        offset = sz - length;
    }
    offset = offset.max(0);
    length = length.max(0);
    let mut data = Vec::new();
    if length > 0 && f.seek(SeekFrom::Start(offset as u64)).is_ok() {
        let _ = f.take(length as u64).read_to_end(&mut data);
    }
    answer(&data, sz, overflow)
}

/// Whether a role may call `name` (for tests and the web page later).
pub fn may_call(role: Role, name: &str) -> bool {
    lookup(name).is_some_and(|m| auth::allowed(role, m.op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_part_public_names_are_dispatched() {
        assert!(lookup("supervisor.getState").is_some());
        assert!(lookup("system.multicall").is_some());
        for bad in [
            "supervisor._dispatch",
            "supervisor.supervisord.options.warnings.linecache.os.system",
            "a.b.c",
            "getState",
            "_supervisor.getState",
            ".getState",
            "supervisor.",
        ] {
            assert!(lookup(bad).is_none(), "{bad}");
        }
        assert_eq!(METHODS.len(), 41);
    }

    #[test]
    fn parameters_are_converted_as_python_would() {
        assert_eq!(int(&Value::from(" -1000 ")).ok(), Some(-1000));
        assert_eq!(int(&Value::from("1_000")).ok(), Some(1000));
        assert!(int(&Value::from("1__0")).is_err());
        assert!(int(&Value::from("ten")).is_err());
        assert_eq!(int(&Value::Bool(true)).ok(), Some(1));
        assert!(truthy(&Value::from("0")), "a non-empty string is true in Python");
        assert!(!truthy(&Value::from("")));
        assert!(!truthy(&Value::Int(0)));
    }

    #[test]
    fn read_only_callers_read_and_nothing_else() {
        assert!(may_call(Role::ReadOnly, "supervisor.getAllProcessInfo"));
        assert!(may_call(Role::ReadOnly, "supervisor.tailProcessStdoutLog"));
        assert!(!may_call(Role::ReadOnly, "supervisor.stopProcess"));
        assert!(!may_call(Role::ReadOnly, "supervisor.clearLog"));
        assert!(may_call(Role::Admin, "supervisor.shutdown"));
    }

    #[test]
    fn tail_and_read_follow_supervisords_offsets() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        std::fs::write(&path, b"0123456789").expect("write");
        assert_eq!(read_file(&path, 0, 0).ok().as_deref(), Some("0123456789"));
        assert_eq!(read_file(&path, 2, 3).ok().as_deref(), Some("234"));
        assert_eq!(read_file(&path, -4, 0).ok().as_deref(), Some("6789"));
        assert_eq!(read_file(&path, -4, 2).map_err(|f| f.code), Err(Code::BadArguments));
        let t = |o, l| match tail_file(&path, o, l) {
            Value::Array(v) => v,
            _ => vec![],
        };
        // From the start with room for everything: all of it, no overflow.
        assert_eq!(t(0, 100), vec![Value::from("0123456789"), Value::Int(10), Value::Bool(false)]);
        // Grown past offset + length: the last `length` bytes, and overflow.
        assert_eq!(t(0, 4), vec![Value::from("6789"), Value::Int(10), Value::Bool(true)]);
        // Nothing new since the last offset.
        assert_eq!(t(10, 4), vec![Value::from(""), Value::Int(10), Value::Bool(false)]);
    }
}
