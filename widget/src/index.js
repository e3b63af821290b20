// Parley chat widget. Embedded with
//   <script src="https://HOST/widget.js" data-chatbot="PUBLIC_KEY" async></script>
// Wire protocol: docs/protocol.md. Rendered in a Shadow DOM; no cookies; only the visitor id, the
// conversation id (and a nudge counter) in localStorage; tokens live in memory. A page view starts
// no conversation: the socket opens when the visitor opens the chat or acts, and the server starts
// the conversation when the visitor first speaks.
import { h, icon, ICONS } from './dom.js';
import { md, safeUrl, link } from './md.js';
import { pickLang, catalog } from './i18n.js';

/* global __CSS__, __VERSION__ */
const W = window;
const D = document;

// The credit line: label and link resolved by the server (chatbot → workspace → server default);
// the link is http(s) only (checked in SQL) and opens outside the host page.
const poweredBy = (p, fallback) => (p.url
  ? h('a', { class: 'pl-by', href: p.url, target: '_blank', rel: 'noopener noreferrer' }, p.label || fallback)
  : h('span', { class: 'pl-by' }, p.label || fallback));

const boot = () => {
  if (W.Parley?.version) return;
  const script = D.currentScript || D.querySelector('script[data-chatbot]');
  const key = script?.dataset.chatbot;
  if (!key) return console.warn('[parley] missing data-chatbot');
  const api = (script.dataset.api || new URL(script.src || '', location.href).origin).replace(/\/+$/, '');

  // ---- storage (may throw: blocked storage, sandboxed frames) -------------------------------
  const CID = `parley:${key}:cid`;
  const VID = `parley:${key}:vid`;
  const NUDGES = `parley:${key}:nudges`;
  const load = (k) => {
    try { return localStorage.getItem(k); } catch { return null; }
  };
  const store = (k, v) => {
    try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v); } catch { /* ignore */ }
  };

  // ---- events for window.Parley.on ----------------------------------------------------------
  const handlers = {};
  const emit = (ev, arg) => (handlers[ev] || []).forEach((fn) => {
    try { fn(arg); } catch (e) { console.error(e); }
  });

  const uuid = () => {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    return [...b].map((v, i) => ([4, 6, 8, 10].includes(i) ? '-' : '') + (v + 256).toString(16).slice(1)).join('');
  };

  // ---- session (REST) -----------------------------------------------------------------------
  let token, tokenUntil = 0, refreshTimer, cfg, conversationId, staleToken;

  const post = async (path, body) => {
    const r = await fetch(api + path, {
      method: 'POST', mode: 'cors', credentials: 'omit',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(j.error?.message || `HTTP ${r.status}`), { status: r.status });
    return j;
  };

  const session = async (refresh) => {
    let s;
    if (refresh && token) {
      try { s = await post('/api/widget/sessions/refresh', { token }); } catch { /* new session below */ }
    }
    if (!s) {
      const body = {
        chatbot_key: key, conversation_id: load(CID), visitor_id: load(VID), page_url: location.href,
        referrer: D.referrer, locale: navigator.language,
      };
      try {
        s = await post('/api/widget/sessions', body);
      } catch (e) {
        // A stored conversation the server no longer accepts: start a new one.
        if (!body.conversation_id || !(e.status >= 400 && e.status < 500) || e.status === 403 || e.status === 429) throw e;
        body.conversation_id = null;
        s = await post('/api/widget/sessions', body);
      }
    }
    if (conversationId && s.conversation_id !== conversationId) resetLog();
    adopt(s);
    if (s.visitor_id) store(VID, s.visitor_id);
    cfg ||= s.config || {};
    return s;
  };

  // A token (and its conversation, once there is one) from a session or a `conversation` frame.
  const adopt = (s) => {
    token = s.token;
    staleToken = 0;
    // Lifetime clamped to what the protocol allows (≤ 15 min), robust to clock skew.
    const ttl = Math.min(Math.max(Date.parse(s.expires_at) - Date.now(), 1e4), 9e5) || 6e5;
    tokenUntil = Date.now() + ttl;
    clearTimeout(refreshTimer);
    const again = () => session(1).catch(() => { refreshTimer = setTimeout(again, 3e4); });
    refreshTimer = setTimeout(again, ttl * 0.8);
    conversationId = s.conversation_id;
    store(CID, conversationId);
  };

  // ---- WebSocket ----------------------------------------------------------------------------
  let ws, busy, online, attempt = 0, retryTimer, lastSeen = 0, lastRx = 0, replayUntil = 0, everOnline;
  const pending = new Map(); // client_id -> message frame, until the server echoes it
  let outbox = []; // other frames queued while offline, sent once on reconnect
  const wsUrl = api.replace(/^http/, 'ws') + '/ws/visitor';

  const send = (f) => {
    if (online) ws.send(JSON.stringify(f));
    return online;
  };
  const queue = (f) => send(f) || (outbox.push(f), ws || connect());

  const retry = () => {
    clearTimeout(retryTimer);
    const base = Math.min(3e4, 500 * 2 ** attempt++); // 0.25–0.5 s, 0.5–1 s, … ≤ 30 s, with jitter
    retryTimer = setTimeout(connect, base / 2 + (Math.random() * base) / 2);
  };

  const drop = () => {
    const s = ws;
    ws = null;
    if (s) {
      s.onclose = s.onmessage = null;
      s.close();
    }
    setOnline(false);
    retry();
  };

  async function connect() {
    clearTimeout(retryTimer);
    if (ws || busy) return;
    busy = 1;
    try {
      if (staleToken || !token || Date.now() > tokenUntil) await session(1);
    } catch {
      busy = 0;
      return retry();
    }
    busy = 0;
    const sock = (ws = new WebSocket(wsUrl));
    let ready;
    sock.onopen = () => sock.send(JSON.stringify({
      type: 'hello', token, last_seen_id: lastSeen, page_url: location.href, referrer: D.referrer,
      locale: navigator.language,
    }));
    sock.onmessage = (e) => {
      lastRx = Date.now();
      let f;
      try { f = JSON.parse(e.data); } catch { return; }
      if (f.type === 'ready') {
        ready = 1;
        attempt = 0;
        if (!lastSeen) replayUntil = Date.now() + 800;
        setStatus(f.status);
        setOnline(true);
        for (const m of pending.values()) send(m);
        const q = outbox;
        outbox = [];
        q.forEach(send);
      } else if (ui) handle(f);
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      // hello refused: refresh the token before the next try (1013: the server's database is
      // away for now, the token is fine; the backoff below retries)
      if (!ready && e.code !== 1013) staleToken = 1;
      ws = null;
      setOnline(false);
      retry();
    };
  }

  // Heartbeat: ping every 25 s; nothing heard since the previous ping means a dead socket.
  // (Not a fixed silence limit: background tabs may run this timer only once a minute.)
  let pinged = 0;
  setInterval(() => {
    if (!online) return;
    if (pinged > lastRx) return drop();
    pinged = Date.now();
    send({ type: 'ping' });
  }, 25e3);
  W.addEventListener('online', () => {
    attempt = 0;
    if (!ws) connect();
  });
  W.addEventListener('offline', () => ws && drop());

  // ---- UI -----------------------------------------------------------------------------------
  let ui, t, root, wrap, launcher, badge, panel, log, input, stateEl, subEl, typingEl, chips, humanBtn, freshBtn, nudge, seenEl;
  let isOpen, wantOpen, unread = 0, status, readSent = 0, typingTimer, myTyping = false, typingOff, leadBox, rated, told;
  const byId = new Map(); // message id -> element (dedupe)
  const byCid = new Map(); // client_id -> pending visitor bubble
  const streams = new Map(); // stream_id -> {text, el, b}
  const finished = new Set(); // stream ids whose final message arrived

  const fill = (s, n) => s.replace('{n}', n);
  // The visitor's actions come from the server's registry (config.actions: key, label, states):
  // each is offered while the conversation's status is in its states (before the first message: bot).
  const act = (k) => (cfg.actions || []).find((a) => a.key === k) || { states: [] };
  const offered = (k) => act(k).states.includes(status || 'bot');
  const btn = (props, ...kids) => h('button', { type: 'button', ...props }, ...kids);

  const setOnline = (on) => {
    online = on;
    everOnline ||= on;
    if (!ui) return;
    wrap.classList.toggle('pl-off', !on && !!everOnline);
    stateEl.textContent = on || !everOnline ? '' : navigator.onLine === false ? t.off : t.re;
    if (on) markRead();
  };

  const setStatus = (s) => {
    status = s || status;
    if (!ui) return;
    humanBtn.hidden = !offered('human');
    freshBtn.hidden = !offered('new');
    if (humanBtn.hidden) log.querySelectorAll('.pl-offer').forEach((b) => b.remove());
    subEl.textContent = { waiting_human: t.waiting, human: t.human_on, closed: t.closed }[status] || '';
  };

  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const add = (el, force) => {
    const stick = force || nearBottom();
    log.append(el);
    if (stick) log.scrollTop = log.scrollHeight;
    return el;
  };

  const resetLog = () => {
    if (!ui) return;
    byId.clear();
    byCid.clear();
    streams.clear();
    lastSeen = readSent = 0;
    [...log.children].slice(1).forEach((c) => c.remove());
  };

  const thumbs = (id) => {
    const row = h('div', { class: 'pl-fb' });
    for (const v of ['up', 'down']) {
      row.append(btn({
        class: `pl-${v}`, 'aria-label': t[v], 'aria-pressed': 'false',
        onclick(e) {
          queue({ type: 'feedback', message_id: id, value: v });
          e.currentTarget.setAttribute('aria-pressed', 'true');
          for (const b of row.children) b.disabled = true;
          input.focus();
        },
      }, icon(ICONS.thumb)));
    }
    return row;
  };

  // One message element. Visitor text is shown verbatim; bot/agent text as markdown-lite.
  const bubble = (m) => {
    const a = m.author;
    if (a === 'system') return h('div', { class: 'pl-sys', dir: 'auto' }, m.body);
    const visitor = a === 'visitor';
    const who = a === 'agent' ? m.author_name || t.agent : visitor ? t.you : t.bot;
    const el = h('div', { class: `pl-m pl-${a === 'agent' ? 'agent' : visitor ? 'visitor' : 'bot'}` },
      h('span', { class: 'pl-sr' }, `${who}: `),
      a === 'agent' && h('div', { class: 'pl-name', 'aria-hidden': 'true' }, who),
      h('div', { class: 'pl-b', dir: 'auto' }, visitor ? m.body : md(m.body)));
    const cites = (m.citations || []).filter((c) => c && (c.title || c.url));
    if (cites.length) {
      el.append(h('ol', { class: 'pl-cites', 'aria-label': t.sources }, cites.map((c) => {
        const u = safeUrl(c.url);
        const label = c.title || c.url;
        return h('li', { value: +c.n || null }, u ? link(u, label) : label);
      })));
    }
    if (a === 'bot' && m.id) el.append(thumbs(m.id));
    if (m.offer_human && offered('human')) {
      el.append(btn({ class: 'pl-offer', onclick: (e) => { queue({ type: 'human' }); e.currentTarget.remove(); } }, act('human').label));
    }
    if (visitor) el.append(h('div', { class: 'pl-meta' }, t.queued));
    return el;
  };

  const showTyping = (on) => {
    clearTimeout(typingOff);
    typingEl.hidden = !on;
    if (on) typingOff = setTimeout(() => showTyping(false), 15e3);
  };

  const markRead = () => {
    if (isOpen && online && lastSeen > readSent && D.visibilityState !== 'hidden') {
      readSent = lastSeen;
      send({ type: 'read', message_id: lastSeen });
    }
  };

  const setUnread = (n) => {
    unread = n;
    badge.hidden = !n;
    badge.textContent = n > 9 ? '9+' : n || '';
    launcher.setAttribute('aria-label', isOpen ? t.close : n ? `${t.open} (${fill(t.unread, n)})` : t.open);
  };

  const onMessage = (m) => {
    // Stored messages are deduped by id; an unstored notice (id null) is just shown.
    if (!m || byId.has(m.id)) return;
    if (m.id > lastSeen) lastSeen = m.id;
    const el = bubble(m);
    const old = (m.client_id && byCid.get(m.client_id)) || (m.stream_id && streams.get(m.stream_id)?.el);
    if (m.client_id) {
      pending.delete(m.client_id);
      byCid.delete(m.client_id);
    }
    if (m.stream_id) {
      streams.delete(m.stream_id);
      finished.add(m.stream_id);
      log.setAttribute('aria-busy', !!streams.size);
    }
    if (old) old.replaceWith(el);
    else add(el, m.author === 'visitor');
    if (m.id != null) byId.set(m.id, el);
    if (m.author === 'visitor') chips.hidden = true;
    else {
      showTyping(false);
      if (!isOpen && Date.now() > replayUntil) setUnread(unread + 1);
    }
    markRead();
    emit('message', m);
  };

  const onStream = (f) => {
    if (finished.has(f.stream_id)) return;
    let s = streams.get(f.stream_id);
    if (!s) {
      s = { text: '' };
      s.el = add(bubble({ author: 'bot', body: '' }));
      s.el.classList.add('pl-streaming');
      s.b = s.el.querySelector('.pl-b');
      streams.set(f.stream_id, s);
      log.setAttribute('aria-busy', 'true');
      showTyping(false);
    }
    const stick = nearBottom();
    s.text += f.delta || '';
    s.b.replaceChildren(md(s.text));
    if (stick) log.scrollTop = log.scrollHeight;
  };

  const seen = (id) => {
    let target;
    for (const [mid, el] of byId) if (mid <= id && el.classList.contains('pl-visitor')) target = el;
    target?.append(seenEl);
  };

  const leadForm = (fields) => {
    if (leadBox) return;
    const want = (fields?.length ? fields : ['name', 'email']).filter((f) => ['name', 'email', 'phone'].includes(f));
    const inputs = want.map((f) => h('input', {
      name: f, required: true, autocomplete: f === 'phone' ? 'tel' : f,
      type: f === 'email' ? 'email' : f === 'phone' ? 'tel' : 'text',
    }));
    leadBox = add(h('form', {
      class: 'pl-card', 'aria-label': t.lead,
      onsubmit(e) {
        e.preventDefault();
        const f = { type: 'lead' };
        inputs.forEach((i) => (f[i.name] = i.value.trim()));
        queue(f);
        leadBox.replaceWith(h('div', { class: 'pl-sys' }, t.leadThanks));
        input.focus();
      },
    }, h('p', {}, t.lead), inputs.map((i) => h('label', {}, h('span', {}, t[i.name]), i)),
    h('button', { type: 'submit', class: 'pl-primary' }, t.submit)), true);
    if (isOpen) inputs[0]?.focus();
  };

  // Another of the visitor's conversations (an id), or none until the visitor speaks (null).
  const switchTo = async (id) => {
    const old = ws;
    ws = null;
    online = false;
    if (old) {
      old.onclose = old.onmessage = null;
      old.close();
    }
    clearTimeout(retryTimer);
    pending.clear();
    outbox = [];
    store(CID, id);
    conversationId = null;
    resetLog();
    leadBox = null;
    rated = told = 0;
    // No socket until this session is in: one opened meanwhile would still carry the old token.
    let s;
    busy = 1;
    try { s = await session(); } finally { busy = 0; }
    status = null;
    setStatus(s.status);
    chips.hidden = !!s.conversation_id || pending.size > 0;
    if (s.conversation_id || pending.size || outbox.length) connect();
    input.focus();
  };

  const history = async () => {
    const { conversations: list = [] } = await post('/api/widget/conversations', { token }).catch(() => ({}));
    add(h('div', { class: 'pl-card', role: 'group', 'aria-label': t.history }, h('p', {}, t.history),
      list.map((c) => btn({
        class: 'pl-chip pl-conv', 'aria-current': c.id === conversationId ? 'true' : null,
        onclick: () => switchTo(c.id),
      }, `${new Date(c.last_activity_at).toLocaleDateString(lang)} · ${c.preview || '…'}`))), true);
  };

  const rating = () => {
    if (rated) return;
    rated = 1;
    const { label } = act('rate');
    const box = h('div', { class: 'pl-card', role: 'group', 'aria-label': label }, h('p', {}, label));
    const row = h('div', { class: 'pl-stars' });
    for (let n = 1; n <= 5; n++) {
      row.append(btn({
        'aria-label': fill(t.star, n),
        onclick() {
          queue({ type: 'rating', score: n });
          box.replaceChildren(h('p', {}, t.thanks));
          input.focus();
        },
      }, '★'));
    }
    box.append(row);
    add(box, true);
  };

  const handle = (f) => {
    switch (f.type) {
      case 'message': return onMessage(f.message);
      case 'stream': return onStream(f);
      case 'typing': return f.author !== 'visitor' && showTyping(f.on);
      case 'read': return seen(f.message_id);
      case 'status':
        setStatus(f.status);
        if (f.status !== 'waiting_human') told = 0; // a later handoff may find nobody again
        if (f.available === false && !told) { // nobody online: say so (once), offer to leave a message
          told = 1;
          add(h('div', { class: 'pl-sys', dir: 'auto' }, t.nobody), true);
          f.lead_sent || leadForm();
        }
        return offered('rate') && rating();
      case 'lead_request': return leadForm(f.fields);
      case 'conversation': // a new conversation (the first message, or writing after an ended one)
        adopt(f);
        rated = told = 0;
        return setStatus(f.status);
      case 'error':
        if (f.client_id && byCid.has(f.client_id)) {
          const el = byCid.get(f.client_id);
          const m = pending.get(f.client_id);
          if (f.retry_after > 0 && m) { // refused for now (a rate limit): the same message goes again then
            el.classList.add('pl-held');
            return setTimeout(() => pending.get(f.client_id) === m && send(m), f.retry_after * 1e3);
          }
          pending.delete(f.client_id);
          el.classList.add('pl-failed');
          el.lastChild.textContent = t.failed;
          byCid.delete(f.client_id);
        }
    }
  };

  const say = (body) => {
    body = String(body || '').trim();
    if (!body) return;
    const f = { type: 'message', client_id: uuid(), body };
    pending.set(f.client_id, f);
    if (ui) {
      const el = add(bubble({ author: 'visitor', body }), true);
      el.classList.add('pl-pending');
      byCid.set(f.client_id, el);
      chips.hidden = true;
    }
    typing(false);
    send(f);
    if (!ws) connect();
  };

  const typing = (on) => {
    clearTimeout(typingTimer);
    if (on) typingTimer = setTimeout(() => typing(false), 3e3);
    if (myTyping !== on) {
      myTyping = on;
      send({ type: 'typing', on });
    }
  };

  const open = () => {
    if (!ui) return (wantOpen = 1);
    if (isOpen) return;
    isOpen = true;
    panel.hidden = false;
    wrap.classList.add('pl-open');
    nudge.hidden = true;
    launcher.setAttribute('aria-expanded', 'true');
    launcher.replaceChildren(icon(ICONS.down), badge);
    setUnread(0);
    log.scrollTop = log.scrollHeight;
    input.focus();
    markRead();
    emit('open');
    if (!ws) connect();
  };

  const close = () => {
    wantOpen = 0;
    if (!isOpen) return;
    const hadFocus = !!root.activeElement;
    isOpen = false;
    panel.hidden = true;
    wrap.classList.remove('pl-open');
    launcher.setAttribute('aria-expanded', 'false');
    launcher.replaceChildren(launcherIcon(), badge);
    setUnread(unread);
    if (hadFocus) launcher.focus();
    emit('close');
  };

  const launcherIcon = () => icon(ICONS[cfg.branding?.launcher_icon] || ICONS.chat);

  // Text colour on the brand colour: black or white, whichever has the higher WCAG contrast.
  const onColor = (hex) => {
    const x = hex.length < 5 ? hex.replace(/\w/g, '$&$&') : hex;
    const L = [1, 3, 5].reduce((s, i, k) => {
      const c = parseInt(x.substr(i, 2), 16) / 255;
      return s + [0.2126, 0.7152, 0.0722][k] * (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    }, 0);
    return (L + 0.05) / 0.05 > 1.05 / (L + 0.05) ? '#000' : '#fff';
  };

  const trap = (e) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      return close();
    }
    if (e.key !== 'Tab') return;
    const f = [...panel.querySelectorAll('a[href],button:not([disabled]),textarea,input,[tabindex="0"]')]
      .filter((x) => x.getClientRects().length);
    const a = root.activeElement;
    if (e.shiftKey ? a === f[0] || !panel.contains(a) : a === f[f.length - 1]) {
      e.preventDefault();
      f[e.shiftKey ? f.length - 1 : 0].focus();
    }
  };

  const match = (p) => {
    if (!p) return true;
    const where = /^https?:/.test(p) ? location.href : location.pathname + location.search;
    if (!p.includes('*')) return where.includes(p);
    return new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(where);
  };

  const nudges = () => {
    let shown;
    const max = cfg.max_nudges ?? 1;
    for (const n of cfg.nudges || []) {
      if (!n?.text || !match(n.url_pattern)) continue;
      setTimeout(() => {
        const count = +load(NUDGES) || 0;
        if (shown || isOpen || count >= max) return;
        shown = 1;
        store(NUDGES, count + 1);
        nudge.firstChild.textContent = n.text;
        nudge.hidden = false;
      }, (+n.after_seconds || 0) * 1e3);
    }
  };

  let lang;
  const build = () => {
    lang = pickLang(cfg.language, navigator.languages || [], navigator.language);
    t = catalog(lang);
    const b = cfg.branding || {};
    const color = /^#([\da-f]{3}){1,2}$/i.test(b.primary_color) ? b.primary_color : '#4f46e5';
    const avatar = /^https:/.test(b.avatar_url) && safeUrl(b.avatar_url);
    const host = h('parley-chat');
    root = host.attachShadow({ mode: 'open' });
    badge = h('span', { class: 'pl-badge', 'aria-hidden': 'true', hidden: true });
    launcher = btn({
      class: 'pl-launch', 'aria-expanded': 'false', 'aria-controls': 'pl-panel',
      onclick: () => (isOpen ? close() : open()),
    }, launcherIcon(), badge);
    input = h('textarea', {
      rows: 1, maxlength: 4000, 'aria-label': t.ph, placeholder: t.ph,
      onkeydown(e) {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          submit();
        }
      },
      oninput() {
        input.style.height = 'auto';
        input.style.height = `${Math.min(input.scrollHeight, 120)}px`;
        typing(!!input.value);
      },
    });
    const submit = () => {
      say(input.value);
      input.value = '';
      input.style.height = '';
      input.focus();
    };
    const title = b.title || cfg.name || t.title;
    stateEl = h('div', { class: 'pl-state', role: 'status' });
    subEl = h('div', { class: 'pl-sub', 'aria-live': 'polite' });
    typingEl = h('div', { class: 'pl-typing', hidden: true }, t.typing);
    seenEl = h('div', { class: 'pl-seen' }, t.seen);
    log = h('div', { class: 'pl-log', role: 'log', 'aria-live': 'polite', 'aria-label': t.log, tabindex: '0' },
      h('div', { class: 'pl-m pl-bot pl-greet' }, h('div', { class: 'pl-b', dir: 'auto' }, md(cfg.greeting || ''))));
    if (!cfg.greeting) log.firstChild.hidden = true;
    chips = h('div', { class: 'pl-chips', role: 'group', 'aria-label': t.starters },
      (cfg.starters || []).map((s) => btn({ class: 'pl-chip', onclick: () => say(s) }, s)));
    humanBtn = btn({ class: 'pl-human', hidden: true, onclick: () => { queue({ type: 'human' }); humanBtn.hidden = true; input.focus(); } }, act('human').label);
    const histBtn = btn({ class: 'pl-link pl-hist', onclick: history }, t.history);
    freshBtn = btn({ class: 'pl-link pl-fresh', onclick: () => switchTo(null) }, act('new').label);
    panel = h('div', {
      class: 'pl-panel', id: 'pl-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'pl-title',
      hidden: true, onkeydown: trap,
    },
    h('div', { class: 'pl-head' },
      avatar && h('img', { class: 'pl-av', src: avatar, alt: '', onerror: (e) => e.target.remove() }),
      h('div', { class: 'pl-ttl' }, h('h2', { id: 'pl-title', dir: 'auto' }, title), subEl),
      btn({ class: 'pl-x', 'aria-label': t.close, onclick: close }, icon(ICONS.close))),
    stateEl, log, typingEl, chips,
    h('form', { class: 'pl-form', onsubmit: (e) => { e.preventDefault(); submit(); } }, input,
      h('button', { type: 'submit', class: 'pl-send', 'aria-label': t.send }, icon(ICONS.send))),
    h('div', { class: 'pl-foot' }, humanBtn, histBtn, freshBtn, !b.hide_powered_by && poweredBy(b.powered_by || {}, t.by)));
    nudge = h('div', { class: 'pl-nudge', role: 'status', hidden: true },
      btn({ class: 'pl-nt', dir: 'auto', onclick: open }),
      btn({ class: 'pl-x', 'aria-label': t.dismiss, onclick: () => (nudge.hidden = true) }, icon(ICONS.close)));
    wrap = h('div', { class: 'pl', lang, dir: 'ltr', 'data-pos': b.position === 'left' ? 'left' : 'right' },
      nudge, panel, launcher);
    wrap.style.setProperty('--pl-p', color);
    wrap.style.setProperty('--pl-on', onColor(color));
    root.append(h('style', { text: __CSS__ }), wrap);
    (D.body || D.documentElement).append(host);
    ui = 1;
    setUnread(0);
    setStatus(status);
    setOnline(online);
  };

  let tries = 0;
  const init = async () => {
    let s;
    try {
      s = await session();
    } catch (e) {
      if (e.status >= 400 && e.status < 500) return console.warn('[parley]', e.message);
      if (tries++ < 4) setTimeout(init, 3e3 * tries);
      return;
    }
    status = s.status;
    build();
    if (conversationId) connect(); // resume; otherwise the socket waits for the visitor
    nudges();
    if (wantOpen) open();
  };

  W.Parley = {
    version: __VERSION__,
    open,
    close,
    identify: (d = {}) => queue({ type: 'lead', name: d.name, email: d.email, phone: d.phone }),
    on(ev, fn) {
      (handlers[ev] ||= []).push(fn);
      return () => (handlers[ev] = handlers[ev].filter((x) => x !== fn));
    },
  };
  D.addEventListener('visibilitychange', () => markRead());
  D.readyState === 'loading' ? D.addEventListener('DOMContentLoaded', init) : init();
};

boot();
