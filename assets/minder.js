// minderd's page, made live. The page works without this script (the server renders the
// table and the forms post); with it, rows follow the daemon's events as they happen
// (server-sent events at `events`), actions are sent without leaving the page, the filter box
// works, and a process's stdout or stderr can be followed in the page.
// Every URL here is relative, so the page works behind a proxy under a path prefix.
'use strict';
(function () {
  const body = document.body;
  const form = document.getElementById('status');
  const tbody = document.querySelector('#processes tbody');
  const message = document.getElementById('message');
  const live = document.getElementById('live');
  const filter = document.getElementById('filter');
  let readonly = body.dataset.readonly === 'true';
  let rows = new Map(); // name -> the row's data, as status.json gives it
  let received = 0; // performance.now() of the last row update, for the page's own timings

  // A URL relative to the page, without the credentials a page opened as
  // http://user:pass@host/ carries in its own URL: fetch() refuses URLs with credentials (the
  // browser still sends the ones it was given, for this origin).
  function url(path) {
    const u = new URL(path, document.baseURI);
    u.username = '';
    u.password = '';
    return u.href;
  }

  // The same actions per state as the server renders.
  function actions(state) {
    switch (state) {
      case 'RUNNING': return [['restart', 'Restart'], ['stop', 'Stop'], ['clearlog', 'Clear log']];
      case 'STARTING': case 'BACKOFF': return [['stop', 'Stop'], ['clearlog', 'Clear log']];
      case 'STOPPED': case 'EXITED': case 'FATAL': return [['start', 'Start'], ['clearlog', 'Clear log']];
      default: return [['clearlog', 'Clear log']];
    }
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  // The rest of a process's tree (its cgroup) beside its pid: `+N`, every pid in the title.
  function treeNote(pids) {
    if (!pids || pids.length < 2) return [];
    return [' ', el('span', { class: 'tree', title: 'its cgroup: ' + pids.join(' ') }, '+' + (pids.length - 1))];
  }

  function timedelta(secs) {
    const days = Math.floor(secs / 86400);
    const rest = secs % 86400;
    const hms = Math.floor(rest / 3600) + ':' + String(Math.floor(rest % 3600 / 60)).padStart(2, '0') +
      ':' + String(rest % 60).padStart(2, '0');
    return days === 0 ? hms : days + (days === 1 ? ' day, ' : ' days, ') + hms;
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
      el('td', { class: 'pid' }, p.pid ? String(p.pid) : '', ...treeNote(p.tree_pids)),
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
  // grows; only the last LOG_KEEP characters are kept on screen.
  const LOG_KEEP = 256 * 1024;
  const logBox = document.getElementById('log');
  const logText = document.getElementById('logtext');
  const logTitle = document.getElementById('logtitle');
  const logFollow = document.getElementById('logfollow');
  let following = null;

  function closeLog() {
    if (following) following.abort();
    following = null;
    logBox.hidden = true;
  }

  async function openLog(name, stream) {
    closeLog();
    const controller = new AbortController();
    following = controller;
    logTitle.textContent = name + ' ' + stream;
    logText.textContent = '';
    logBox.hidden = false;
    try {
      const r = await fetch(url('logtail/' + encodeURIComponent(name) + '/' + stream), {
        signal: controller.signal, credentials: 'same-origin',
      });
      if (!r.ok) {
        logText.textContent = r.status + ' ' + (await r.text());
        return;
      }
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let t = logText.textContent + value;
        if (t.length > LOG_KEEP) t = t.slice(t.length - LOG_KEEP);
        logText.textContent = t;
        if (logFollow.checked) logText.scrollTop = logText.scrollHeight;
      }
    } catch (e) {
      if (e.name !== 'AbortError') logText.textContent += '\n[' + e + ']';
    }
  }

  tbody.addEventListener('click', ev => {
    const a = ev.target.closest('a[data-tail]');
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    openLog(a.dataset.tail, a.dataset.stream || 'stdout');
  });
  document.getElementById('logclose').addEventListener('click', closeLog);

  window.minderReceived = () => received;
})();
