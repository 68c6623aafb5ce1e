//! The fleet's web UI and its live routes, served by the fleet binary itself.
//!
//! The pages are minderd's own: the same template (`assets/index.html`), stylesheet and
//! script, compiled in with `include_str!` (no CDN), with the fleet's panels
//! (`assets/fleet.html`: counts, nodes by environment, users and activity for admins;
//! `assets/login.html`: the login form) put in the template's `{{panels}}` slot, and
//! `data-mode="fleet"` telling the script to render the fleet: a node column, grouping by
//! environment and node or by Supervisor group across nodes, a filter on names and states,
//! actions as `fetch` POSTs to `/api/v2`, rows kept live by `api/fleet/events`, and a log view
//! that follows `api/fleet/nodes/<node>/processes/<p>/log/stream`.
//!
//! - `GET /`, `/index.html`: the dashboard; `GET /login`: the login form; `GET
//!   /assets/minder.{css,js}`. Every URL in them is relative (a proxy may serve the fleet
//!   under a path prefix), and the pages carry the same Content-Security-Policy as minderd's
//!   (own assets only, no inline script or style, no framing). Everything a node sends is put
//!   in the page with `textContent`, never as HTML.
//! - `GET /api/fleet/events`, `GET /api/fleet/nodes/<node>/processes/<p>/log/stream`: the
//!   streams of [`crate::stream`]; names are checked as every `/api/v2` route checks them
//!   (plain, and reported by the node), so nothing a client invents reaches a node.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;

use crate::activity::Entry;
use crate::api::{find_node, find_process, ApiError};
use crate::auth::Caller;
use crate::Fleet;

const PAGE: &str = include_str!("../../assets/index.html");
const CSS: &str = include_str!("../../assets/minder.css");
const JS: &str = include_str!("../../assets/minder.js");
const FLEET: &str = include_str!("../../assets/fleet.html");
const LOGIN: &str = include_str!("../../assets/login.html");

/// The pages, the assets and the streams; [`crate::api::router`] puts them behind the same
/// authentication as `/api/v2` (which lets `/login` and `/assets/` through, and sends a
/// browser without a session from `/` to `login`).
pub fn router() -> Router<Arc<Fleet>> {
    Router::new()
        .route("/", get(dashboard))
        .route("/index.html", get(dashboard))
        .route("/login", get(login))
        .route("/assets/minder.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route("/assets/minder.js", get(|| async { asset(JS, "text/javascript; charset=utf-8") }))
        .route("/api/fleet/events", get(events))
        .route("/api/fleet/nodes/{node}/processes/{process}/log/stream", get(log_stream))
}

/// Headers every page carries: nothing but its own assets runs or loads, it is never framed
/// and never cached, and it sends no Referer.
fn secure(h: &mut HeaderMap) {
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // Revalidated each time: an upgraded fleet serves its own script at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// minderd's template with the fleet's parts; `panels` and `account` are the fleet's markup.
fn render(mode: &str, readonly: bool, panels: &str, account: &str, rows: &str) -> Response {
    let html = PAGE
        .replace("{{title}}", "minder-fleet")
        .replace("{{mode}}", mode)
        .replace("{{readonly}}", if readonly { "true" } else { "false" })
        .replace("{{account}}", account)
        .replace("{{message}}", "<div id=\"message\" class=\"status_msg\" role=\"status\" hidden></div>")
        .replace("{{panels}}", panels)
        .replace(
            "{{global}}",
            "<label class=\"pick\">State <select id=\"statefilter\"><option value=\"\">any</option>\
             <option>RUNNING</option><option>STARTING</option><option>BACKOFF</option><option>STOPPING</option>\
             <option>STOPPED</option><option>EXITED</option><option>FATAL</option><option>UNKNOWN</option></select></label>\
             <label class=\"pick\">Group by <select id=\"groupby\"><option value=\"node\">environment and node</option>\
             <option value=\"group\">Supervisor group</option><option value=\"none\">nothing</option></select></label>",
        )
        .replace("{{selhead}}", "")
        .replace("{{nodehead}}", "<th class=\"node\">Node</th>")
        .replace("{{rows}}", rows)
        .replace("{{product}}", "minder-fleet")
        .replace("{{version}}", minder::VERSION);
    let mut r = html.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure(h);
    r
}

/// The dashboard; a viewer's says so (`data-readonly`), and its script draws no action.
async fn dashboard(Extension(caller): Extension<Caller>) -> Response {
    render(
        "fleet",
        !caller.can_act(),
        FLEET,
        "<span id=\"who\" class=\"who\"></span> <button type=\"button\" id=\"logout\">Log out</button>",
        "<tr class=\"empty\"><td colspan=\"8\">Loading…</td></tr>\n",
    )
}

async fn login() -> Response {
    render("login", true, LOGIN, "", "")
}

/// `GET /api/fleet/events`: the nodes of the caller's environments only.
async fn events(State(fleet): State<Arc<Fleet>>, Extension(caller): Extension<Caller>) -> Response {
    crate::stream::events(fleet, move |environment| caller.sees(environment))
}

/// `GET …/log/stream?channel=stdout|stderr`.
async fn log_stream(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Path((name, wanted)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let stderr = match query(req.uri().query().unwrap_or(""), "channel").as_deref() {
        None | Some("stdout") => false,
        Some("stderr") => true,
        Some(_) => return Err(ApiError(StatusCode::BAD_REQUEST, "channel is stdout or stderr".into())),
    };
    let node = find_node(&fleet, &caller, &name)?;
    let p = find_process(&node, &wanted)?;
    let source = node.follow(&p.full_name(), stderr).await;
    let entry = Entry::new(&caller.username, "log follow", if source.is_ok() { "success" } else { "error" });
    let channel = if stderr { "stderr" } else { "stdout" };
    fleet.auth().activity.record(entry.node(&name).process(&p.full_name()).detail(channel));
    let source = source.map_err(|e| ApiError::from_call(&name, &e))?;
    Ok(crate::stream::follow_log(&fleet, source))
}

/// The first value of `key` in a query string (these values are plain words: no decoding).
fn query(q: &str, key: &str) -> Option<String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_in_the_fleet_pages_is_relative_and_nothing_is_inline() {
        for part in [FLEET, LOGIN, PAGE] {
            for attr in ["href=\"", "src=\"", "action=\""] {
                for (i, _) in part.match_indices(attr) {
                    let url = &part[i + attr.len()..];
                    assert!(
                        !url.starts_with('/') && !url.contains("://"),
                        "{attr}{}",
                        &url[..url.len().min(40)]
                    );
                }
            }
            assert!(!part.contains("<script>") && !part.contains("style=\""), "the CSP forbids inline code");
        }
        for needle in
            ["fetch('/", "fetch(\"/", "fetch(`/", "EventSource('/", "EventSource(\"/", "EventSource(`/"]
        {
            assert!(!JS.contains(needle), "{needle}");
        }
        // Node data goes into the page as text only.
        assert!(!JS.contains("innerHTML") && !JS.contains("insertAdjacentHTML"), "no HTML from data");
    }

    #[test]
    fn the_template_has_no_slot_left() {
        let Ok(page) = String::from_utf8(
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                render("fleet", true, FLEET, "", "").into_body(),
            ))
            .and_then(Result::ok)
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default(),
        ) else {
            panic!("not UTF-8")
        };
        assert!(page.contains("data-mode=\"fleet\"") && page.contains("data-readonly=\"true\""));
        assert!(!page.contains("{{"), "a slot was not filled");
        assert_eq!(query("a=b&channel=stderr", "channel").as_deref(), Some("stderr"));
    }
}
