//! The REST API under `/api/v2`: Cesi's routes and JSON shapes, so scripts written for Cesi
//! keep working, plus the fleet's own group action across nodes.
//!
//! Every read is answered from the node tasks' published views ([`Node::view`]): a hung node
//! can make no read wait. Actions and log reads go to the one node named (or, for a group
//! action, to every node that has the group, at most `fanout` at a time), each under its own
//! deadline. Names in paths are checked ([`is_plain_name`]) and must be ones the node itself
//! reported, so nothing a client invents reaches a node. Bodies are bounded (64 KiB); every
//! error is JSON `{"status": "error", "message": …}` with a fitting HTTP status.
//!
//! Every route sits behind [`auth::authenticate`], which gives it a [`Caller`]: reads are for
//! everyone logged in, but only the nodes of the caller's environments exist for a restricted
//! user (others are absent from lists and 404 when named); actions need an operator or admin
//! (403 for a viewer, before anything reaches a node); users and the activity log need an
//! admin. Every action (denied ones too) and every log read goes to the activity log.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use futures_util::StreamExt as _;
use serde_json::{json, Value as Json_};

use crate::activity::Entry;
use crate::auth::{self, Caller};
use crate::config::is_plain_name;
use crate::model::{NodeView, Process};
use crate::node::{Action, CallError, Node, ProcessResult, Target};
use crate::Fleet;

/// The largest request body taken (no route needs more than a small JSON object).
pub const MAX_BODY: usize = 64 * 1024;

/// An error answer: `{"status": "error", "message": …}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"status": "error", "message": self.1}))).into_response()
    }
}

impl ApiError {
    pub(crate) fn from_call(node: &str, e: &CallError) -> ApiError {
        let code = match e {
            CallError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::NotConnected(_) => StatusCode::SERVICE_UNAVAILABLE,
            // A fault is the node's answer to the action: Cesi's 500 with its text.
            CallError::Fault(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        };
        let message = match e {
            CallError::Fault(f) => f.string.clone(),
            other => format!("node {node}: {other}"),
        };
        ApiError(code, message)
    }
}

type Answer = Result<Response, ApiError>;

fn ok(mut body: Json_) -> Answer {
    if let Some(o) = body.as_object_mut() {
        o.insert("status".into(), "success".into());
    }
    Ok(Json(body).into_response())
}

/// Adds `path` and `path/` (Cesi's routes end in a slash; scripts write either).
fn both(router: Router<Arc<Fleet>>, path: &str, route: MethodRouter<Arc<Fleet>>) -> Router<Arc<Fleet>> {
    router.route(path, route.clone()).route(&format!("{path}/"), route)
}

/// The whole HTTP application.
pub fn router(fleet: Arc<Fleet>) -> Router {
    let mut api = Router::new();
    api = both(api, "/nodes", get(nodes));
    api = both(api, "/nodes/{node}", get(node));
    api = both(api, "/nodes/{node}/processes", get(node_processes));
    api = both(api, "/nodes/{node}/processes/{process}", get(process));
    api = both(api, "/nodes/{node}/processes/{process}/{action}", get(process_action).post(process_action));
    api = both(api, "/nodes/{node}/all-processes/{action}", get(all_action).post(all_action));
    api = both(api, "/environments", get(environments));
    api = both(api, "/environments/{env}", get(environment));
    api = both(api, "/groups", get(groups));
    api = both(api, "/groups/{group}", get(group));
    api = both(api, "/groups/{group}/{action}", post(group_action));
    api = both(api, "/auth/login", post(auth::login));
    api = both(api, "/auth/logout", post(auth::logout));
    api = both(api, "/profile", get(auth::profile));
    api =
        both(api, "/profile/password", axum::routing::put(auth::change_password).post(auth::change_password));
    api = both(api, "/users", get(crate::users::list).post(crate::users::add));
    api = both(api, "/users/{user}", axum::routing::delete(crate::users::remove).put(crate::users::update));
    api = both(api, "/activitylogs", get(crate::activity::list).delete(crate::activity::clear));
    api = both(api, "/activitylogs/{limit}", get(crate::activity::list_limit));
    let api = api.fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) });
    Router::new()
        .nest("/api/v2", api)
        .merge(crate::web::router())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        // Every route above, and the fallback, is behind authentication (module doc).
        .layer(axum::middleware::from_fn_with_state(fleet.clone(), auth::authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(fleet)
}

/// The nodes the caller may see.
fn visible(fleet: &Fleet, caller: &Caller) -> Vec<Arc<Node>> {
    fleet.nodes().iter().filter(|n| caller.sees(&n.config.environment)).cloned().collect()
}

/// The node `name`, when it exists and the caller may see it (404 alike otherwise).
pub(crate) fn find_node(fleet: &Fleet, caller: &Caller, name: &str) -> Result<Arc<Node>, ApiError> {
    if !is_plain_name(name) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "not a node name".into()));
    }
    fleet
        .node(name)
        .filter(|n| caller.sees(&n.config.environment))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node named {name:?} in the fleet")))
}

/// 403 for a caller who may not act (a viewer), recorded.
fn may_act(fleet: &Fleet, caller: &Caller, entry: impl FnOnce() -> Entry) -> Result<(), ApiError> {
    if caller.can_act() {
        return Ok(());
    }
    fleet.auth().activity.record(entry());
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!("{} is a viewer: actions need an operator or an admin", caller.username),
    ))
}

pub(crate) fn general(node: &Node, view: &NodeView) -> Json_ {
    json!({
        "name": node.config.name,
        "environment": node.config.environment,
        "connected": view.connected(),
        "kind": match node.config.kind {
            crate::config::NodeKind::Supervisord => "supervisord",
            crate::config::NodeKind::Minderd => "minderd",
        },
        "address": match &node.config.tls {
            Some(_) => node.config.address.to_string().replacen("tcp://", "https://", 1),
            None => node.config.address.to_string(),
        },
        "state": view.status,
        "last_error": view.last_error,
        "last_seen": view.last_seen.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
    })
}

pub(crate) fn node_json(node: &Node) -> Json_ {
    let view = node.view();
    json!({"general": general(node, &view), "processes": &*view.processes})
}

async fn nodes(State(fleet): State<Arc<Fleet>>, Extension(caller): Extension<Caller>) -> Answer {
    ok(json!({"nodes": visible(&fleet, &caller).iter().map(|n| node_json(n)).collect::<Vec<_>>()}))
}

async fn node(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Answer {
    let node = find_node(&fleet, &caller, &name)?;
    ok(json!({"node": node_json(&node)}))
}

/// The node's view, or 503 when it is not connected (Cesi: "Node is not connected").
fn connected_view(node: &Node) -> Result<NodeView, ApiError> {
    let view = node.view();
    if view.connected() {
        Ok(view)
    } else {
        let why = view.last_error.clone().unwrap_or_else(|| "not yet connected".into());
        Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("Node is not connected: {why}")))
    }
}

async fn node_processes(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Answer {
    let node = find_node(&fleet, &caller, &name)?;
    let view = connected_view(&node)?;
    ok(json!({"processes": &*view.processes}))
}

/// The process `wanted` (`group:name` or `name`) as the node last reported it.
pub(crate) fn find_process(node: &Node, wanted: &str) -> Result<Process, ApiError> {
    let plain = match wanted.split_once(':') {
        Some((g, n)) => is_plain_name(g) && is_plain_name(n),
        None => is_plain_name(wanted),
    };
    if !plain {
        return Err(ApiError(StatusCode::BAD_REQUEST, "not a process name: use NAME or GROUP:NAME".into()));
    }
    connected_view(node)?;
    node.find(wanted).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("no process {wanted:?} on node {}", node.config.name))
    })
}

async fn process(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path((name, wanted)): Path<(String, String)>,
) -> Answer {
    let node = find_node(&fleet, &caller, &name)?;
    let p = find_process(&node, &wanted)?;
    ok(json!({"process": p}))
}

async fn process_action(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    method: axum::http::Method,
    Path((name, wanted, action)): Path<(String, String, String)>,
) -> Answer {
    let node = find_node(&fleet, &caller, &name)?;
    let activity = &fleet.auth().activity;
    if action == "log" {
        if method != axum::http::Method::GET {
            return Err(ApiError(StatusCode::METHOD_NOT_ALLOWED, "the log is read with GET".into()));
        }
        let p = find_process(&node, &wanted)?;
        let logs = node.tail(&p.full_name()).await;
        let entry = Entry::new(&caller.username, "log", if logs.is_ok() { "success" } else { "error" });
        activity.record(entry.node(&name).process(&p.full_name()));
        let logs = logs.map_err(|e| ApiError::from_call(&name, &e))?;
        return ok(json!({"logs": logs}));
    }
    let act = Action::parse(&action).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, "no such action: start, stop, restart or log".into())
    })?;
    let p = find_process(&node, &wanted)?;
    let full = p.full_name();
    may_act(&fleet, &caller, || Entry::new(&caller.username, &action, "denied").node(&name).process(&full))?;
    let results = node.act(act, &Target::Process(full.clone())).await;
    let failed = match &results {
        Ok(rs) => rs.iter().find(|r| r.status != "success").map(|r| r.message.clone()),
        Err(e) => Some(e.to_string()),
    };
    let entry = Entry::new(&caller.username, &action, if failed.is_none() { "success" } else { "error" });
    activity.record(entry.node(&name).process(&full).detail(failed.unwrap_or_default()));
    let results = results.map_err(|e| ApiError::from_call(&name, &e))?;
    match results.iter().find(|r| r.status != "success") {
        Some(failed) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, failed.message.clone())),
        // Cesi's words, its spelling kept: scripts compare them.
        None => {
            ok(json!({"message": format!("{name} {wanted} {action} event succesfully"), "results": results}))
        }
    }
}

async fn all_action(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
) -> Answer {
    let node = find_node(&fleet, &caller, &name)?;
    let act = Action::parse(&action)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such action: start, stop or restart".into()))?;
    let what = format!("{action} all");
    may_act(&fleet, &caller, || Entry::new(&caller.username, &what, "denied").node(&name))?;
    connected_view(&node)?;
    let results = node.act(act, &Target::All).await;
    let failed = match &results {
        Ok(rs) => rs.iter().filter(|r| r.status != "success").count(),
        Err(_) => 1,
    };
    let entry = Entry::new(&caller.username, &what, if failed == 0 { "success" } else { "error" });
    let detail = match &results {
        Ok(rs) => format!("{} processes, {failed} failed", rs.len()),
        Err(e) => e.to_string(),
    };
    fleet.auth().activity.record(entry.node(&name).detail(detail));
    let results = results.map_err(|e| ApiError::from_call(&name, &e))?;
    ok(json!({"message": "ok", "results": results}))
}

fn environment_names(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut names: Vec<String> = nodes.iter().map(|n| n.config.environment.clone()).collect();
    names.sort();
    names.dedup();
    names
}

fn environment_json(nodes: &[Arc<Node>], env: &str) -> Json_ {
    let members: Vec<Json_> =
        nodes.iter().filter(|n| n.config.environment == env).map(|n| node_json(n)).collect();
    json!({"name": env, "members": members})
}

async fn environments(State(fleet): State<Arc<Fleet>>, Extension(caller): Extension<Caller>) -> Answer {
    let nodes = visible(&fleet, &caller);
    let envs: Vec<Json_> = environment_names(&nodes).iter().map(|e| environment_json(&nodes, e)).collect();
    ok(json!({"environments": envs}))
}

async fn environment(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path(env): Path<String>,
) -> Answer {
    if !is_plain_name(&env) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "not an environment name".into()));
    }
    let nodes = visible(&fleet, &caller);
    if !environment_names(&nodes).contains(&env) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no environment named {env:?}")));
    }
    ok(json!({"environment": environment_json(&nodes, &env)}))
}

/// Cesi's groups tree: each Supervisor group, the environments it runs in, and in each the
/// nodes that have it (connected nodes only: the others' groups are not known now).
async fn groups(State(fleet): State<Arc<Fleet>>, Extension(caller): Extension<Caller>) -> Answer {
    let mut tree: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>> =
        Default::default();
    for n in visible(&fleet, &caller).iter() {
        let view = n.view();
        for p in view.processes.iter() {
            let members =
                tree.entry(p.group.clone()).or_default().entry(n.config.environment.clone()).or_default();
            if !members.contains(&n.config.name) {
                members.push(n.config.name.clone());
            }
        }
    }
    let groups: Vec<Json_> = tree
        .into_iter()
        .map(|(name, envs)| {
            let environments: Vec<Json_> =
                envs.into_iter().map(|(env, members)| json!({"name": env, "members": members})).collect();
            json!({"name": name, "environments": environments})
        })
        .collect();
    ok(json!({"groups": groups}))
}

async fn group(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path(g): Path<String>,
) -> Answer {
    if !is_plain_name(&g) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "not a group name".into()));
    }
    let nodes: Vec<Json_> = visible(&fleet, &caller)
        .iter()
        .filter_map(|n| {
            let view = n.view();
            let ps: Vec<&Process> = view.processes.iter().filter(|p| p.group == g).collect();
            (!ps.is_empty())
                .then(|| json!({"name": n.config.name, "environment": n.config.environment, "processes": ps}))
        })
        .collect();
    if nodes.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no connected node has a group named {g:?}")));
    }
    ok(json!({"group": {"name": g, "nodes": nodes}}))
}

/// What a group action may say in its (optional) body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupActionBody {
    /// Only the nodes of this environment.
    environment: Option<String>,
}

/// `POST /groups/<g>/<action>`: the action on group `g` of every connected node that has it
/// (among those the caller may see), `fanout` nodes at a time; one node's failure does not
/// stop the others.
async fn group_action(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path((g, action)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let opts: GroupActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        GroupActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(StatusCode::BAD_REQUEST, format!("the body is not a group action's JSON: {e}"))
        })?
    };
    if !is_plain_name(&g) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "not a group name".into()));
    }
    let act = Action::parse(&action)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such action: start, stop or restart".into()))?;
    let what = format!("{action} group {g}");
    may_act(&fleet, &caller, || Entry::new(&caller.username, &what, "denied"))?;
    let in_scope = |n: &&Arc<Node>| opts.environment.as_ref().is_none_or(|e| &n.config.environment == e);
    let mut targets = Vec::new();
    let mut not_connected = Vec::new();
    for n in visible(&fleet, &caller).iter().filter(in_scope) {
        let view = n.view();
        if view.processes.iter().any(|p| p.group == g) {
            targets.push(n.clone());
        } else if !view.connected() {
            not_connected.push(json!({
                "node": n.config.name,
                "status": "error",
                "message": format!("not connected: {}", view.last_error.unwrap_or_else(|| "not yet connected".into())),
                "processes": [],
            }));
        }
    }
    if targets.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no connected node has a group named {g:?}")));
    }
    let target = Target::Group(g.clone());
    let results: Vec<(String, Result<Vec<ProcessResult>, CallError>)> = futures_util::stream::iter(targets)
        .map(|n| {
            let target = target.clone();
            async move { (n.config.name.clone(), n.act(act, &target).await) }
        })
        .buffer_unordered(fleet.timing().fanout)
        .collect()
        .await;
    let activity = &fleet.auth().activity;
    let mut failed = 0usize;
    let mut per_node: Vec<Json_> = results
        .into_iter()
        .map(|(node, r)| {
            let json = match &r {
                Ok(ps) => {
                    let bad = ps.iter().filter(|p| p.status != "success").count();
                    failed += bad;
                    json!({"node": node, "status": if bad == 0 { "success" } else { "error" }, "processes": ps})
                }
                Err(e) => {
                    failed += 1;
                    json!({"node": node, "status": "error", "message": e.to_string(), "processes": []})
                }
            };
            let entry = Entry::new(&caller.username, &what, json["status"].as_str().unwrap_or("error"));
            activity.record(entry.node(&node).detail(json["message"].as_str().unwrap_or("")));
            json
        })
        .collect();
    per_node.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
    tracing::info!(group = %g, action = %action, nodes = per_node.len(), failed, "group action");
    Ok(Json(json!({
        "status": if failed == 0 { "success" } else { "error" },
        "group": g,
        "action": act,
        "failed": failed,
        "nodes": per_node,
        "not_connected": not_connected,
    }))
    .into_response())
}
