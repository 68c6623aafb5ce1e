// minderd's page, made live, and the fleet's page, built from the same template, styles and
// script (`data-mode` on <body> says which). minderd's page works without this script (the
// server renders the table and the forms post); with it, rows follow the daemon's events as
// they happen (server-sent events at `events`), actions are sent without leaving the page,
// the filter box works, and a process's stdout or stderr can be followed in the page.
// Every URL here is relative, so the page works behind a proxy under a path prefix.
'use strict';
// Shared by both pages (minderd's and the fleet's): what they build with.

// A URL relative to the page, without the credentials a page opened as
// http://user:pass@host/ carries in its own URL: fetch() refuses URLs with credentials (the
// browser still sends the ones it was given, for this origin).
function url(path) {
  const u = new URL(path, document.baseURI);
  u.username = '';
  u.password = '';
  return u.href;
}

// An element with attributes and children; text children are added as text, never as HTML,
// so nothing a daemon or a node reports can become markup.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// The log view both pages share: one followed log at a time, of which only the last
// LOG_KEEP characters stay on screen. `open(heading, stop)` closes the one shown (calling its
// `stop`) and returns how to add text to the new one; that does nothing once the view has
// been closed or another opened, so a late line or error of an old follow shows nowhere.
function logView() {
  const LOG_KEEP = 256 * 1024;
  const box = document.getElementById('log');
  const text = document.getElementById('logtext');
  const title = document.getElementById('logtitle');
  const follow = document.getElementById('logfollow');
  let stop = null;

  function close() {
    if (stop) stop();
    stop = null;
    box.hidden = true;
  }
  document.getElementById('logclose').addEventListener('click', close);

  function open(heading, stopper) {
    close();
    stop = stopper;
    title.textContent = heading;
    text.textContent = '';
    box.hidden = false;
    return more => {
      if (stop !== stopper) return;
      let t = text.textContent + more;
      if (t.length > LOG_KEEP) t = t.slice(t.length - LOG_KEEP);
      text.textContent = t;
      if (follow.checked) text.scrollTop = text.scrollHeight;
    };
  }
  return { open, box };
}

function timedelta(secs) {
  const days = Math.floor(secs / 86400);
  const rest = secs % 86400;
  const hms = Math.floor(rest / 3600) + ':' + String(Math.floor(rest % 3600 / 60)).padStart(2, '0') +
    ':' + String(rest % 60).padStart(2, '0');
  return days === 0 ? hms : days + (days === 1 ? ' day, ' : ' days, ') + hms;
}

(function () {
  const body = document.body;
  if ((body.dataset.mode || 'minderd') !== 'minderd') return;
  const form = document.getElementById('status');
  const tbody = document.querySelector('#processes tbody');
  const message = document.getElementById('message');
  const live = document.getElementById('live');
  const filter = document.getElementById('filter');
  let readonly = body.dataset.readonly === 'true';
  let rows = new Map(); // name -> the row's data, as status.json gives it
  let received = 0; // performance.now() of the last row update, for the page's own timings


  // The same actions per state as the server renders.
  function actions(state) {
    switch (state) {
      case 'RUNNING': return [['restart', 'Restart'], ['stop', 'Stop'], ['clearlog', 'Clear log']];
      case 'STARTING': case 'BACKOFF': return [['stop', 'Stop'], ['clearlog', 'Clear log']];
      case 'STOPPED': case 'EXITED': case 'FATAL': return [['start', 'Start'], ['clearlog', 'Clear log']];
      default: return [['clearlog', 'Clear log']];
    }
  }


  // What a process uses (its whole cgroup): CPU as a share of one core since the last sample,
  // and memory, where minderd measures them.
  const cpuSeen = new Map(); // name -> [cpu_seconds, performance.now() / 1000]
  function resources(p) {
    const parts = [];
    if (typeof p.cpu_percent === 'number') parts.push(p.cpu_percent.toFixed(1) + '% CPU');
    if (typeof p.memory_bytes === 'number') parts.push((p.memory_bytes / 1048576).toFixed(1) + ' MiB');
    return parts.length ? ' · ' + parts.join(' · ') : '';
  }

  // The rest of a process's tree (its cgroup) beside its pid: `+N`, every pid in the title.
  function treeNote(pids) {
    if (!pids || pids.length < 2) return [];
    return [' ', el('span', { class: 'tree', title: 'its cgroup: ' + pids.join(' ') }, '+' + (pids.length - 1))];
  }


  function button(value, label) {
    return el('button', { name: 'action', value: value }, label);
  }

  function renderRow(p) {
    const q = encodeURIComponent(p.name);
    const tr = el('tr', { 'data-name': p.name, 'data-group': p.group, 'data-state': p.state });
    if (!readonly) {
      const box = el('input', { type: 'checkbox', name: 'processname', value: p.name, 'aria-label': 'select ' + p.name });
      tr.append(el('td', { class: 'sel' }, box));
    }
    const acts = el('td', { class: 'actions' });
    if (!readonly) {
      for (const [verb, label] of actions(p.state)) acts.append(button(verb + ' ' + p.name, label), ' ');
    }
    acts.append(
      el('a', { href: 'logtail/' + q + '/stdout', target: '_blank', 'data-tail': p.name, 'data-stream': 'stdout' }, 'stdout'), ' ',
      el('a', { href: 'logtail/' + q + '/stderr', target: '_blank', 'data-tail': p.name, 'data-stream': 'stderr' }, 'stderr'));
    tr.append(
      el('td', { class: 'state' }, el('span', { class: p.class }, p.state.toLowerCase())),
      el('td', { class: 'desc' }, p.description),
      el('td', { class: 'name' }, el('a', { href: 'tail.html?processname=' + q, 'data-tail': p.name }, p.name)),
      el('td', { class: 'pid' }, p.pid ? String(p.pid) : '', ...treeNote(p.tree_pids),
        el('span', { class: 'res' }, p.pid ? resources(p) : '')),
      el('td', { class: 'uptime' }, p.uptime !== null && p.uptime !== undefined ? timedelta(p.uptime) : ''),
      el('td', { class: 'problem' }, p.problem || ''),
      acts);
    // For the uptime that ticks on in the page.
    tr.upSince = p.uptime !== null && p.uptime !== undefined ? performance.now() / 1000 - p.uptime : null;
    return tr;
  }

  function groupRow(group) {
    const th = el('th', { colspan: '8' }, el('span', { class: 'gname' }, group));
    if (!readonly) {
      th.append(' ', button('start ' + group + ':*', 'Start group'), ' ', button('stop ' + group + ':*', 'Stop group'),
        ' ', button('restart ' + group + ':*', 'Restart group'));
    }
    return el('tr', { class: 'group', 'data-group': group }, th);
  }

  function checked() {
    return new Set(Array.from(form.querySelectorAll('input[name=processname]:checked'), b => b.value));
  }

  // The whole table from `rows`, sorted by group then name, keeping what was selected.
  function renderAll() {
    const keep = checked();
    const list = Array.from(rows.values()).sort((a, b) =>
      a.group < b.group ? -1 : a.group > b.group ? 1 : a.process < b.process ? -1 : a.process > b.process ? 1 : 0);
    const real = new Set(list.filter(p => p.process !== p.group).map(p => p.group));
    const out = [];
    let last = null;
    for (const p of list) {
      if (p.group !== last && real.has(p.group)) out.push(groupRow(p.group));
      last = p.group;
      const tr = renderRow(p);
      const box = tr.querySelector('input[name=processname]');
      if (box && keep.has(p.name)) box.checked = true;
      out.push(tr);
    }
    if (out.length === 0) out.push(el('tr', { class: 'empty' }, el('td', { colspan: '8' }, 'No programs to manage')));
    tbody.replaceChildren(...out);
    applyFilter();
  }

  function update(p) {
    const isNew = !rows.has(p.name);
    rows.set(p.name, p);
    const old = Array.from(tbody.querySelectorAll('tr[data-name]')).find(tr => tr.dataset.name === p.name);
    if (isNew || !old) { renderAll(); return; }
    const tr = renderRow(p);
    const box = old.querySelector('input[name=processname]');
    const nbox = tr.querySelector('input[name=processname]');
    if (box && nbox) nbox.checked = box.checked;
    old.replaceWith(tr);
    applyFilter();
  }

  function showMessage(text, ok) {
    message.textContent = text;
    message.hidden = !text;
    message.classList.toggle('error', ok === false);
  }

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = new Set();
    for (const tr of tbody.querySelectorAll('tr[data-name]')) {
      const hay = (tr.dataset.name + ' ' + tr.dataset.group + ' ' + tr.dataset.state).toLowerCase();
      tr.hidden = !words.every(w => hay.includes(w));
      if (!tr.hidden) shown.add(tr.dataset.group);
    }
    for (const tr of tbody.querySelectorAll('tr.group')) tr.hidden = !shown.has(tr.dataset.group);
  }

  // Uptimes tick on between events.
  setInterval(() => {
    const now = performance.now() / 1000;
    for (const tr of tbody.querySelectorAll('tr[data-state=RUNNING]')) {
      if (tr.upSince === null || tr.upSince === undefined) continue;
      const up = Math.max(0, Math.floor(now - tr.upSince));
      tr.querySelector('td.uptime').textContent = timedelta(up);
      const cell = tr.querySelector('td.pid').firstChild;
      const pid = cell ? cell.textContent : '';
      tr.querySelector('td.desc').textContent = 'pid ' + pid + ', uptime ' + timedelta(up);
    }
  }, 1000);

  // CPU and memory, sampled every 5 s while the page is shown (events carry states only).
  async function sample() {
    if (document.visibilityState !== 'visible') return;
    let s;
    try {
      const r = await fetch(url('status.json'), { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      if (!r.ok) return;
      s = await r.json();
    } catch (e) {
      return;
    }
    const now = performance.now() / 1000;
    for (const p of s.processes) {
      const seen = cpuSeen.get(p.name);
      if (typeof p.cpu_seconds === 'number') {
        if (seen && seen[2] === p.pid && now > seen[1]) p.cpu_percent = Math.max(0, 100 * (p.cpu_seconds - seen[0]) / (now - seen[1]));
        cpuSeen.set(p.name, [p.cpu_seconds, now, p.pid]);
      }
      const known = rows.get(p.name);
      if (known) {
        known.cpu_percent = p.cpu_percent;
        known.memory_bytes = p.memory_bytes;
      }
      const tr = tbody.querySelector('tr[data-name="' + CSS.escape(p.name) + '"]');
      const cell = tr && tr.querySelector('td.pid span.res');
      if (cell) cell.textContent = p.pid ? resources(p) : '';
    }
  }
  setInterval(sample, 5000);

  // Live rows.
  function connect() {
    const events = new EventSource(url('events'));
    events.addEventListener('snapshot', e => {
      const s = JSON.parse(e.data);
      readonly = s.readonly;
      rows = new Map(s.processes.map(p => [p.name, p]));
      renderAll();
      live.hidden = false;
      live.classList.remove('off');
      live.textContent = 'live';
      received = performance.now();
      window.minderSnapshots = (window.minderSnapshots || 0) + 1;
    });
    events.addEventListener('process', e => {
      const p = JSON.parse(e.data);
      update(p);
      received = performance.now();
      // Event-to-screen latency: from the daemon's change to the frame that shows it.
      if (p.at) {
        requestAnimationFrame(() => {
          window.minderLatencies = window.minderLatencies || [];
          window.minderLatencies.push({ name: p.name, state: p.state, ms: Date.now() - p.at });
        });
      }
    });
    events.onerror = () => {
      live.classList.add('off');
      live.textContent = 'reconnecting';
    };
  }
  connect();

  // Actions, sent without leaving the page; the events show their effect.
  form.addEventListener('submit', async ev => {
    const btn = ev.submitter;
    if (!btn || btn.value === 'refresh') return; // a plain reload
    ev.preventDefault();
    const data = new URLSearchParams();
    data.append('action', btn.value);
    if (!btn.value.includes(' ')) {
      for (const name of checked()) data.append('processname', name);
    }
    btn.disabled = true;
    showMessage(btn.textContent + '…', true);
    try {
      const r = await fetch(url('index.html'), {
        method: 'POST', body: data, credentials: 'same-origin', headers: { Accept: 'application/json' },
      });
      const text = await r.text();
      let answer;
      try { answer = JSON.parse(text); } catch (_) { answer = { message: r.status + ' ' + text.trim(), ok: false }; }
      showMessage(answer.message, answer.ok && r.ok);
    } catch (e) {
      showMessage('The daemon did not answer: ' + e, false);
    } finally {
      btn.disabled = false;
    }
  });

  filter.hidden = false;
  filter.addEventListener('input', applyFilter);
  filter.addEventListener('keydown', e => { if (e.key === 'Enter') e.preventDefault(); });
  const all = document.getElementById('selectall');
  if (all) {
    all.addEventListener('change', () => {
      for (const b of tbody.querySelectorAll('tr:not([hidden]) input[name=processname]')) b.checked = all.checked;
    });
  }

  // Following a log in the page: the stream `logtail/NAME/stdout` (or stderr) is read as it
  // grows, into the shared log view.
  const logs = logView();

  async function openLog(name, stream) {
    const controller = new AbortController();
    const show = logs.open(name + ' ' + stream, () => controller.abort());
    try {
      const r = await fetch(url('logtail/' + encodeURIComponent(name) + '/' + stream), {
        signal: controller.signal, credentials: 'same-origin',
      });
      if (!r.ok) {
        show(r.status + ' ' + (await r.text()));
        return;
      }
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        show(value);
      }
    } catch (e) {
      if (e.name !== 'AbortError') show('\n[' + e + ']');
    }
  }

  tbody.addEventListener('click', ev => {
    const a = ev.target.closest('a[data-tail]');
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    openLog(a.dataset.tail, a.dataset.stream || 'stdout');
  });

  window.minderReceived = () => received;
})();

// The fleet's login form (data-mode="login"): posts the name and password as JSON and, once
// the session cookie is set, goes to the dashboard. Without the script the form posts itself.
(function () {
  if (document.body.dataset.mode !== 'login') return;
  const form = document.getElementById('login');
  const error = document.getElementById('loginerror');
  document.getElementById('status').hidden = true;
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    error.hidden = true;
    const data = { username: form.elements.username.value, password: form.elements.password.value };
    try {
      const r = await fetch(url('api/v2/auth/login/'), {
        method: 'POST', credentials: 'same-origin', body: JSON.stringify(data),
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      });
      if (r.ok) {
        location.replace(url('./'));
        return;
      }
      let text = r.status + ' ' + r.statusText;
      try { text = (await r.json()).message || text; } catch (_) { /* not JSON */ }
      error.textContent = text;
    } catch (e) {
      error.textContent = 'The fleet did not answer: ' + e;
    }
    error.hidden = false;
  });
})();

// The fleet's dashboard (data-mode="fleet"): every node's processes in minderd's table with a
// node column, kept live by the fleet's event stream (`api/fleet/events`: a snapshot, then
// each node's and each process's change), grouped by environment and node or by Supervisor
// group across nodes, filtered by words and state; counts and the nodes by environment above;
// actions are POSTs to the fleet's API, shown only to callers whose role may act; admins also
// get the users and the activity log. Everything from a node is set as text.
(function () {
  const body = document.body;
  if (body.dataset.mode !== 'fleet') return;
  const tbody = document.querySelector('#processes tbody');
  const message = document.getElementById('message');
  const live = document.getElementById('live');
  const filter = document.getElementById('filter');
  const stateFilter = document.getElementById('statefilter');
  const groupBy = document.getElementById('groupby');
  const countsBox = document.getElementById('counts');
  const nodesBox = document.getElementById('nodes');
  const form = document.getElementById('status');
  let nodes = new Map(); // node name -> { general, processes: [P] }
  let profile = { username: '', role: 'viewer' };
  let canAct = false;

  // Refresh is a page reload here: the rows are live anyway.
  for (const b of form.querySelectorAll('button[value=refresh]')) b.hidden = true;
  form.addEventListener('submit', ev => ev.preventDefault());

  function toLogin() {
    location.replace(url('login'));
  }

  // A call to the fleet's API: JSON in and out, the session cookie sent; 401 means the session
  // is over (logged out, expired): back to the login form.
  async function api(path, options) {
    const opts = Object.assign({ credentials: 'same-origin' }, options || {});
    opts.headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers['Content-Type'] = 'application/json';
      delete opts.json;
    }
    const r = await fetch(url(path), opts);
    if (r.status === 401) {
      toLogin();
      throw new Error('not logged in');
    }
    let answer = null;
    try { answer = await r.json(); } catch (_) { answer = null; }
    return { ok: r.ok, status: r.status, answer: answer || {} };
  }

  function showMessage(text, ok) {
    message.textContent = text;
    message.hidden = !text;
    message.classList.toggle('error', ok === false);
  }

  function fullName(p) {
    return p.group === p.name ? p.name : p.group + ':' + p.name;
  }

  function stateClass(state) {
    if (state === 'RUNNING') return 'statusrunning';
    if (state === 'FATAL' || state === 'BACKOFF') return 'statuserror';
    return 'statusnominal';
  }

  function actionsFor(state) {
    switch (state) {
      case 'RUNNING': return [['restart', 'Restart'], ['stop', 'Stop']];
      case 'STARTING': case 'BACKOFF': return [['stop', 'Stop']];
      case 'STOPPED': case 'EXITED': case 'FATAL': return [['start', 'Start']];
      default: return [['start', 'Start'], ['stop', 'Stop']];
    }
  }

  function button(attrs, label) {
    return el('button', Object.assign({ type: 'button' }, attrs), label);
  }

  function when(secs) {
    if (!secs) return 'never';
    const d = new Date(secs * 1000);
    const ago = Math.max(0, Math.round(Date.now() / 1000 - secs));
    return d.toLocaleTimeString() + (ago < 3600 ? ' (' + ago + ' s ago)' : '');
  }

  // --- counts and nodes -------------------------------------------------------------------

  function renderCounts() {
    const envs = new Set();
    let up = 0;
    let down = 0;
    const states = new Map();
    for (const n of nodes.values()) {
      envs.add(n.general.environment || '');
      if (n.general.connected) up++; else down++;
      for (const p of n.processes) states.set(p.statename, (states.get(p.statename) || 0) + 1);
    }
    const item = (label, value, cls) => el('span', { class: 'count ' + (cls || '') }, el('b', {}, String(value)), ' ' + label);
    const out = [item(envs.size === 1 ? 'environment' : 'environments', envs.size),
      item('nodes connected', up, 'ok'), item('not connected', down, down ? 'bad' : '')];
    for (const [state, n] of Array.from(states.entries()).sort()) {
      out.push(item(state.toLowerCase(), n, stateClass(state)));
    }
    countsBox.replaceChildren(...out);
  }

  function renderNodes() {
    const byEnv = new Map();
    for (const n of nodes.values()) {
      const env = n.general.environment || '';
      if (!byEnv.has(env)) byEnv.set(env, []);
      byEnv.get(env).push(n);
    }
    const out = [];
    for (const [env, list] of byEnv) {
      const cards = list.map(n => {
        const g = n.general;
        const card = el('div', { class: 'nodecard ' + (g.connected ? 'up' : 'down'), 'data-node': g.name, 'data-state': g.state },
          el('strong', {}, g.name), ' ',
          el('span', { class: 'badge' }, String(g.state).replace(/_/g, ' ')), ' ',
          // A connected minderd node is quiet until something changes: "seen" matters only
          // for a node that is not connected.
          el('span', { class: 'muted' }, g.connected ? n.processes.length + ' processes'
            : 'last seen ' + when(g.last_seen)));
        if (g.last_error) card.append(el('div', { class: 'problem' }, g.last_error));
        if (canAct && g.connected) {
          const acts = el('div', { class: 'nodeacts' });
          for (const [verb, label] of [['start', 'Start all'], ['stop', 'Stop all'], ['restart', 'Restart all']]) {
            acts.append(button({ 'data-nodeact': verb, 'data-node': g.name }, label), ' ');
          }
          card.append(acts);
        }
        return card;
      });
      out.push(el('div', { class: 'env', 'data-env': env }, el('h2', {}, env || '(no environment)'), ...cards));
    }
    if (out.length === 0) out.push(el('p', { class: 'muted' }, 'No nodes in the fleet'));
    nodesBox.replaceChildren(...out);
  }

  // --- the process table ------------------------------------------------------------------

  function renderRow(p) {
    const full = fullName(p);
    const tr = el('tr', {
      'data-node': p.node, 'data-env': p.environment, 'data-name': full, 'data-group': p.group, 'data-process': p.name,
      'data-state': p.statename,
    });
    const acts = el('td', { class: 'actions' });
    if (canAct) {
      for (const [verb, label] of actionsFor(p.statename)) {
        acts.append(button({ 'data-act': verb }, label), ' ');
      }
    }
    acts.append(button({ 'data-log': 'stdout', class: 'link' }, 'stdout'), ' ',
      button({ 'data-log': 'stderr', class: 'link' }, 'stderr'));
    const ended = ['EXITED', 'BACKOFF', 'FATAL'].includes(p.statename);
    const problem = p.spawnerr || (ended && p.stop ? 'exit status ' + p.exitstatus : '');
    tr.append(
      el('td', { class: 'node' }, p.node),
      el('td', { class: 'state' }, el('span', { class: stateClass(p.statename) }, p.statename.toLowerCase())),
      el('td', { class: 'desc' }, p.description || ''),
      el('td', { class: 'name' }, full),
      el('td', { class: 'pid' }, p.pid ? String(p.pid) : ''),
      el('td', { class: 'uptime' }, p.statename === 'RUNNING' ? p.uptime : ''),
      el('td', { class: 'problem' }, problem),
      acts);
    // For the uptime that ticks on in the page (the node said how long at `now`).
    const running = p.statename === 'RUNNING' && p.start > 0 && p.now >= p.start;
    tr.upSince = running ? performance.now() / 1000 - (p.now - p.start) : null;
    return tr;
  }

  function headerRow(kind, key, label, extra) {
    const th = el('th', { colspan: '8' }, el('span', { class: 'gname' }, label), ...(extra || []));
    return el('tr', { class: 'group', 'data-kind': kind, 'data-key': key }, th);
  }

  function renderTable() {
    const mode = groupBy.value;
    const order = new Map(Array.from(nodes.keys(), (n, i) => [n, i]));
    const all = [];
    for (const n of nodes.values()) for (const p of n.processes) all.push(p);
    const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    const byNode = (a, b) => (order.get(a.node) - order.get(b.node));
    if (mode === 'group') all.sort((a, b) => cmp(a.group, b.group) || byNode(a, b) || cmp(a.name, b.name));
    else if (mode === 'none') all.sort((a, b) => cmp(fullName(a), fullName(b)) || byNode(a, b));
    else all.sort((a, b) => cmp(a.environment, b.environment) || byNode(a, b) || cmp(a.group, b.group) || cmp(a.name, b.name));
    const out = [];
    let last = null;
    for (const p of all) {
      if (mode === 'group' && p.group !== last) {
        const extra = [];
        if (canAct) {
          for (const [verb, label] of [['start', 'Start group'], ['stop', 'Stop group'], ['restart', 'Restart group']]) {
            extra.push(' ', button({ 'data-groupact': verb, 'data-group': p.group }, label));
          }
        }
        out.push(headerRow('group', p.group, p.group + ' (every node)', extra));
        last = p.group;
      } else if (mode === 'node' && p.node !== last) {
        out.push(headerRow('node', p.node, (p.environment ? p.environment + ' · ' : '') + p.node));
        last = p.node;
      }
      out.push(renderRow(p));
    }
    if (all.length === 0) out.push(el('tr', { class: 'empty' }, el('td', { colspan: '8' }, 'No processes to show')));
    tbody.replaceChildren(...out);
    applyFilter();
  }

  function renderAll() {
    renderCounts();
    renderNodes();
    renderTable();
  }

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const state = stateFilter.value;
    const shown = new Set();
    for (const tr of tbody.querySelectorAll('tr[data-name]')) {
      const d = tr.dataset;
      const hay = (d.node + ' ' + d.env + ' ' + d.name + ' ' + d.group + ' ' + d.state).toLowerCase();
      tr.hidden = !words.every(w => hay.includes(w)) || (state !== '' && d.state !== state);
      if (!tr.hidden) {
        shown.add('group ' + d.group);
        shown.add('node ' + d.node);
      }
    }
    for (const tr of tbody.querySelectorAll('tr.group')) tr.hidden = !shown.has(tr.dataset.kind + ' ' + tr.dataset.key);
  }

  // Uptimes tick on between events, in the uptime cell and in Supervisor's description.
  setInterval(() => {
    const now = performance.now() / 1000;
    for (const tr of tbody.querySelectorAll('tr[data-state=RUNNING]')) {
      if (tr.upSince === null || tr.upSince === undefined) continue;
      const up = timedelta(Math.max(0, Math.floor(now - tr.upSince)));
      tr.querySelector('td.uptime').textContent = up;
      const desc = tr.querySelector('td.desc');
      if (desc.textContent.startsWith('pid ')) desc.textContent = 'pid ' + tr.querySelector('td.pid').textContent + ', uptime ' + up;
    }
  }, 1000);

  // One process changed: its row is replaced in place (the grouping does not move it).
  function updateProcess(nodeName, p) {
    const n = nodes.get(nodeName);
    if (!n) return;
    const i = n.processes.findIndex(q => q.name === p.name && q.group === p.group);
    if (i < 0) { n.processes.push(p); renderAll(); return; }
    n.processes[i] = p;
    renderCounts();
    const old = Array.from(tbody.querySelectorAll('tr[data-name]'))
      .find(tr => tr.dataset.node === nodeName && tr.dataset.name === fullName(p));
    if (!old) { renderTable(); return; }
    old.replaceWith(renderRow(p));
    applyFilter();
  }

  // --- live -------------------------------------------------------------------------------

  function connect() {
    const events = new EventSource(url('api/fleet/events'));
    events.addEventListener('snapshot', e => {
      const s = JSON.parse(e.data);
      nodes = new Map(s.nodes.map(n => [n.general.name, { general: n.general, processes: n.processes || [] }]));
      renderAll();
      live.hidden = false;
      live.classList.remove('off');
      live.textContent = 'live';
      window.fleetSnapshots = (window.fleetSnapshots || 0) + 1;
    });
    events.addEventListener('node', e => {
      const v = JSON.parse(e.data);
      const name = v.general.name;
      const n = nodes.get(name) || { general: v.general, processes: [] };
      n.general = v.general;
      if (v.processes) n.processes = v.processes;
      nodes.set(name, n);
      renderAll();
    });
    events.addEventListener('process', e => {
      const v = JSON.parse(e.data);
      updateProcess(v.node, v.process);
      window.fleetChanges = (window.fleetChanges || 0) + 1;
    });
    events.onerror = async () => {
      live.classList.add('off');
      live.textContent = 'reconnecting';
      // A stream refused for want of a session: the login form, not endless retries. A fleet
      // that does not answer at all (restarting) is retried by EventSource itself.
      try {
        const r = await fetch(url('api/v2/profile/'), { credentials: 'same-origin', headers: { Accept: 'application/json' } });
        if (r.status === 401) {
          events.close();
          toLogin();
        }
      } catch (_) { /* not answering: EventSource retries */ }
    };
  }

  // --- actions ----------------------------------------------------------------------------

  function enc(s) {
    return encodeURIComponent(s);
  }

  async function act(path, what, btn) {
    if (btn) btn.disabled = true;
    showMessage(what + '…', true);
    try {
      const r = await api(path, { method: 'POST' });
      const a = r.answer;
      let text = a.message || (r.ok ? 'done' : r.status + ' error');
      if (Array.isArray(a.nodes)) {
        const bad = a.nodes.filter(n => n.status !== 'success');
        text = a.nodes.length + ' node(s), ' + (a.failed || 0) + ' failure(s)' +
          bad.map(n => '; ' + n.node + ': ' + (n.message || (n.processes || []).filter(p => p.status !== 'success').map(p => p.name + ' ' + p.message).join(', '))).join('');
      }
      showMessage(what + ': ' + text, r.ok && a.status !== 'error');
    } catch (e) {
      showMessage(what + ': the fleet did not answer: ' + e, false);
    } finally {
      if (btn) btn.disabled = false;
    }
  }

  tbody.addEventListener('click', ev => {
    const btn = ev.target.closest('button');
    if (!btn) return;
    const tr = btn.closest('tr');
    if (btn.dataset.groupact) {
      const g = btn.dataset.group;
      act('api/v2/groups/' + enc(g) + '/' + btn.dataset.groupact + '/', btn.textContent + ' ' + g, btn);
    } else if (btn.dataset.act && tr && tr.dataset.node) {
      const p = tr.dataset.group + ':' + tr.dataset.process;
      act('api/v2/nodes/' + enc(tr.dataset.node) + '/processes/' + enc(p) + '/' + btn.dataset.act + '/',
        btn.textContent + ' ' + tr.dataset.name + ' on ' + tr.dataset.node, btn);
    } else if (btn.dataset.log && tr && tr.dataset.node) {
      openLog(tr.dataset.node, tr.dataset.group + ':' + tr.dataset.process, btn.dataset.log);
    }
  });

  nodesBox.addEventListener('click', ev => {
    const btn = ev.target.closest('button[data-nodeact]');
    if (!btn) return;
    const n = btn.dataset.node;
    act('api/v2/nodes/' + enc(n) + '/all-processes/' + btn.dataset.nodeact + '/', btn.textContent + ' on ' + n, btn);
  });

  filter.hidden = false;
  filter.addEventListener('input', applyFilter);
  filter.addEventListener('keydown', e => { if (e.key === 'Enter') e.preventDefault(); });
  stateFilter.addEventListener('change', applyFilter);
  groupBy.addEventListener('change', renderTable);

  // --- the log view: follows a process's stdout or stderr ----------------------------------

  const logs = logView();

  function openLog(node, process, channel) {
    const source = new EventSource(url('api/fleet/nodes/' + enc(node) + '/processes/' + enc(process) +
      '/log/stream?channel=' + channel));
    const show = logs.open(process + ' ' + channel + ' on ' + node, () => source.close());
    source.addEventListener('line', e => show(JSON.parse(e.data) + '\n'));
    source.addEventListener('skipped', e => {
      const v = JSON.parse(e.data);
      show(v.rotated ? '[the log was rotated]\n' : '[' + v.bytes + ' bytes skipped]\n');
    });
    source.addEventListener('failed', e => {
      show('[' + JSON.parse(e.data).message + ']\n');
      source.close();
    });
    // Reconnecting would show the tail again: the view stops, and says so.
    source.onerror = () => {
      show('[the log stream ended]\n');
      source.close();
    };
    logs.box.scrollIntoView({ block: 'nearest' });
  }

  // --- the caller, logout, and the admin's panels -------------------------------------------

  document.getElementById('logout').addEventListener('click', async () => {
    try {
      await fetch(url('api/v2/auth/logout/'), { method: 'POST', credentials: 'same-origin' });
    } finally {
      toLogin();
    }
  });

  async function loadUsers() {
    const r = await api('api/v2/users/');
    const users = r.answer.users || [];
    const rows = users.map(u => {
      const envs = Array.isArray(u.environments) ? u.environments.join(', ') : 'all';
      const del = u.username === profile.username ? '' : button({ 'data-deluser': u.username }, 'Remove');
      const role = el('select', { 'data-roleof': u.username, 'aria-label': 'role of ' + u.username });
      for (const r of ['viewer', 'operator', 'admin']) {
        const o = el('option', { value: r }, r);
        if (r === u.role) o.selected = true;
        role.append(o);
      }
      return el('tr', { 'data-user': u.username, 'data-role': u.role }, el('td', {}, u.username), el('td', {}, role), el('td', {}, envs), el('td', {}, del));
    });
    document.querySelector('#users tbody').replaceChildren(...rows);
  }

  function pick(o, keys) {
    for (const k of keys) if (o[k] !== undefined && o[k] !== null) return String(o[k]);
    return '';
  }

  async function loadActivity() {
    const r = await api('api/v2/activitylogs/200/');
    const a = r.answer;
    const list = a.entries || [];
    const words = document.getElementById('activityfilter').value.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = [];
    for (const e of list) {
      const result = pick(e, ['result']) + (e.detail ? ': ' + e.detail : '');
      const cells = [e.at ? new Date(e.at * 1000).toLocaleString() : '', pick(e, ['user']) + (e.source ? ' from ' + e.source : ''),
        pick(e, ['action']), pick(e, ['node']), pick(e, ['process']), result];
      if (!words.every(w => cells.join(' ').toLowerCase().includes(w))) continue;
      rows.push(el('tr', {}, ...cells.map(c => el('td', {}, c))));
    }
    document.querySelector('#activity tbody').replaceChildren(...rows);
  }

  function adminPanels() {
    const panel = document.getElementById('admin');
    panel.hidden = false;
    loadUsers().catch(() => {});
    loadActivity().catch(() => {});
    document.getElementById('activityreload').addEventListener('click', () => loadActivity().catch(() => {}));
    document.getElementById('activityfilter').addEventListener('input', () => loadActivity().catch(() => {}));
    const add = document.getElementById('adduser');
    add.addEventListener('submit', async ev => {
      ev.preventDefault();
      const f = add.elements;
      const envs = f.environments.value.split(',').map(s => s.trim()).filter(Boolean);
      const user = { username: f.username.value, password: f.password.value, role: f.role.value };
      if (envs.length) user.environments = envs;
      const r = await api('api/v2/users/', { method: 'POST', json: user });
      showMessage(r.answer.message || (r.ok ? 'User ' + user.username + ' added' : r.status + ' error'), r.ok);
      if (r.ok) add.reset();
      loadUsers().catch(() => {});
    });
    document.querySelector('#users tbody').addEventListener('change', async ev => {
      const sel = ev.target.closest('select[data-roleof]');
      if (!sel) return;
      const r = await api('api/v2/users/' + enc(sel.dataset.roleof) + '/', { method: 'PUT', json: { role: sel.value } });
      showMessage(r.answer.message || (r.ok ? sel.dataset.roleof + ' is now ' + sel.value : r.status + ' error'), r.ok);
      loadUsers().catch(() => {});
    });
    document.querySelector('#users tbody').addEventListener('click', async ev => {
      const btn = ev.target.closest('button[data-deluser]');
      if (!btn) return;
      const r = await api('api/v2/users/' + enc(btn.dataset.deluser) + '/', { method: 'DELETE' });
      showMessage(r.answer.message || (r.ok ? 'User removed' : r.status + ' error'), r.ok);
      loadUsers().catch(() => {});
    });
  }

  const passwd = document.getElementById('passwd');
  passwd.addEventListener('submit', async ev => {
    ev.preventDefault();
    const f = passwd.elements;
    const r = await api('api/v2/profile/password/', {
      method: 'PUT', json: { old_password: f.old_password.value, new_password: f.new_password.value },
    });
    showMessage(r.answer.message || (r.ok ? 'Password changed' : r.status + ' error'), r.ok);
    if (r.ok) passwd.reset();
  });

  async function start() {
    try {
      const r = await api('api/v2/profile/');
      if (r.ok && r.answer.user) profile = r.answer.user;
      else if (body.dataset.readonly !== 'true') profile = { username: '', role: 'admin' };
    } catch (_) {
      return; // going to the login form
    }
    canAct = profile.role === 'admin' || profile.role === 'operator';
    body.dataset.readonly = canAct ? 'false' : 'true';
    document.getElementById('who').textContent = profile.username ? profile.username + ' (' + profile.role + ')' : '';
    if (profile.role === 'admin') adminPanels();
    connect();
  }
  start();
})();
