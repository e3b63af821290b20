/* Parley operator console: progressive enhancement only. Every page works without this file;
   with it the inbox stays live over /ws/agent, replies go out without a reload, "/" inserts
   canned replies, and waiting visitors can raise a desktop notification and a sound.
   All HTML inserted here was rendered (and escaped) by the server; text from frames is only
   ever set with textContent. */
(function () {
  "use strict";

  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function request(method, url, body) {
    var opts = { method: method, credentials: "same-origin",
                 headers: { "Accept": "application/json", "X-Requested-With": "fetch", "X-CSRF-Token": csrf } };
    if (body instanceof FormData) { opts.body = body; }
    else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    return fetch(url, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.status === 401) { location.href = "/console/sign-in?next=" + encodeURIComponent(location.pathname + location.search); }
        return { ok: r.ok, status: r.status, data: data };
      });
    });
  }

  /* ---------------------------------------------------------------- phone-width navigation */
  var navToggle = document.querySelector(".nav-toggle");
  if (navToggle) {
    var topbar = navToggle.closest(".topbar");
    topbar.classList.add("nav-js");
    navToggle.hidden = false;
    navToggle.addEventListener("click", function () {
      var open = topbar.classList.toggle("nav-open");
      navToggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  /* ---------------------------------------------------------------- small page helpers */
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el.matches && el.matches("select[data-autosubmit]")) { el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit(); }
  });
  document.addEventListener("submit", function (e) {
    var f = e.target, by = e.submitter;
    var ask = (by && by.dataset && by.dataset.confirm) || (f.dataset && f.dataset.confirm);
    if (ask && !window.confirm(ask)) { e.preventDefault(); }
  }, true);
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("[data-copy]");
    if (!b) { return; }
    var src = document.getElementById(b.dataset.copy);
    if (src && navigator.clipboard) {
      navigator.clipboard.writeText(src.textContent).then(function () { b.textContent = "Copied"; });
    }
  });

  /* Polling status rows (knowledge imports): replace the element's HTML until done. */
  function pollStatus(el) {
    var url = el.dataset.pollUrl;
    var tick = function () {
      request("GET", url).then(function (res) {
        if (!res.ok) { return; }
        if (res.data.html !== undefined) { el.innerHTML = res.data.html; }
        if (res.data.done) { if (el.dataset.reloadWhenDone) { location.reload(); } return; }
        setTimeout(tick, 1500);
      });
    };
    setTimeout(tick, 1000);
  }
  document.querySelectorAll("[data-poll-url]").forEach(pollStatus);

  /* Live preview of chatbot settings: the server signs a preview URL for the unsaved form. */
  var previewForm = document.getElementById("chatbot-form");
  var previewFrame = document.getElementById("preview-frame");
  if (previewForm && previewFrame) {
    var timer = null;
    var refreshPreview = function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        request("POST", previewForm.dataset.previewUrl, new FormData(previewForm)).then(function (res) {
          if (res.ok && res.data.url && res.data.url !== previewFrame.getAttribute("src")) {
            previewFrame.setAttribute("src", res.data.url);
          }
        });
      }, 700);
    };
    previewForm.addEventListener("input", refreshPreview);
    previewForm.addEventListener("change", refreshPreview);
  }

  /* ---------------------------------------------------------------- the inbox */
  var rowsEl = document.getElementById("inbox-rows");
  if (!rowsEl) { return; }
  var pane = document.getElementById("conversation-pane");
  var liveEl = document.getElementById("live-state");
  var lastEventId = null;
  var ws = null, retries = 0, pollTimer = null, listTimer = null;
  var streams = {};

  function conv() { return document.getElementById("conversation"); }
  function currentId() { var c = conv(); return c ? c.dataset.id : ""; }
  function setLive(state) { if (liveEl) { liveEl.dataset.state = state; liveEl.title = "Live updates: " + state; } }

  function refreshList() {
    clearTimeout(listTimer);
    listTimer = setTimeout(function () {
      var params = new URLSearchParams({ tab: rowsEl.dataset.tab || "all", c: currentId() });
      if (rowsEl.dataset.q) { params.set("q", rowsEl.dataset.q); }
      request("GET", "/console/inbox/list?" + params.toString()).then(function (res) {
        if (!res.ok) { return; }
        rowsEl.innerHTML = res.data.html;
        var counts = res.data.counts || {};
        document.querySelectorAll("[data-count]").forEach(function (el) {
          var k = el.dataset.count;
          if (counts[k] !== undefined) { el.textContent = counts[k]; }
        });
        var badge = document.getElementById("nav-waiting");
        if (badge) { badge.textContent = counts.waiting || 0; badge.hidden = !counts.waiting; }
      });
    }, 250);
  }

  function scrollDown() { var t = document.getElementById("transcript"); if (t) { t.scrollTop = t.scrollHeight; } }

  var fetching = false, fetchAgain = false;
  function fetchMessages() {
    var c = conv();
    if (!c) { return; }
    if (fetching) { fetchAgain = true; return; }
    fetching = true;
    request("GET", "/console/conversations/" + c.dataset.id + "/messages?read=1&after=" + (c.dataset.lastId || 0)).then(function (res) {
      fetching = false;
      if (res.ok && conv() === c) {
        var t = document.getElementById("transcript");
        if (res.data.html && t) {
          var tmp = document.createElement("ol");
          tmp.innerHTML = res.data.html;
          Array.prototype.slice.call(tmp.children).forEach(function (li) {
            if (!t.querySelector('li.msg[data-id="' + li.dataset.id + '"]')) { t.appendChild(li); }
          });
          t.querySelectorAll(".msg-streaming").forEach(function (el) { el.remove(); });
          streams = {};
        }
        var before = c.dataset.lastId;
        c.dataset.lastId = res.data.last_id;
        if (String(before) !== String(res.data.last_id)) {
          scrollDown();
          sendFrame({ type: "read", conversation_id: c.dataset.id, message_id: Number(res.data.last_id) });
        }
        if (res.data.status !== c.dataset.status) { refreshPane(); }
      }
      if (fetchAgain) { fetchAgain = false; fetchMessages(); }
    });
  }

  /* After a state change, swap the header (status, actions) and the visitor panel; the
     transcript only ever grows and the composer is kept, so nothing typed is lost. */
  function refreshPane() {
    var c = conv();
    if (!c) { return; }
    request("GET", "/console/conversations/" + c.dataset.id + "/pane?tab=" + encodeURIComponent(c.dataset.tab || "all")).then(function (res) {
      if (!res.ok || conv() !== c) { return; }
      var tmp = document.createElement("div");
      tmp.innerHTML = res.data.html;
      var fresh = tmp.querySelector("#conversation");
      if (!fresh) { return; }
      ["conv-head", "visitor"].forEach(function (cls) {
        var old = c.querySelector("." + cls), now = fresh.querySelector("." + cls);
        if (old && now) { old.replaceWith(now); }
      });
      var oldComp = c.querySelector("#composer"), newComp = fresh.querySelector("#composer");
      if (oldComp && !newComp) { oldComp.remove(); }
      if (!oldComp && newComp) { c.querySelector(".transcript-wrap").appendChild(newComp); }
      c.dataset.status = fresh.dataset.status;
      wireForms(c);
      fetchMessages();
    });
  }

  function sendFrame(obj) {
    if (ws && ws.readyState === 1) { ws.send(JSON.stringify(obj)); }
  }

  /* events from /ws/agent */
  function onEvent(ev) {
    if (typeof ev.id === "number") { lastEventId = Math.max(lastEventId || 0, ev.id); }
    refreshList();
    if (ev.conversation_id && ev.conversation_id === currentId()) {
      if (ev.kind === "message_added" || ev.kind === "note_added") { fetchMessages(); }
      else { refreshPane(); }
    }
    if (ev.kind === "human_requested") { alertWaiting(ev); }
  }

  function onStream(frame) {
    if (!frame.conversation_id || frame.conversation_id !== currentId()) { return; }
    var t = document.getElementById("transcript");
    if (!t) { return; }
    var li = streams[frame.stream_id];
    if (!li) {
      li = document.createElement("li");
      li.className = "msg msg-bot msg-streaming";
      var head = document.createElement("div"); head.className = "msg-head"; head.textContent = "Bot (typing)";
      var body = document.createElement("div"); body.className = "msg-body";
      li.appendChild(head); li.appendChild(body);
      t.appendChild(li);
      streams[frame.stream_id] = li;
    }
    li.querySelector(".msg-body").textContent += frame.delta || "";
    scrollDown();
  }

  function onTyping(frame) {
    var el = document.getElementById("typing");
    if (!el || frame.conversation_id !== currentId() || frame.author !== "visitor") { return; }
    el.hidden = !frame.on;
    clearTimeout(el._t);
    if (frame.on) { el._t = setTimeout(function () { el.hidden = true; }, 8000); }
  }

  function startPolling() {
    if (pollTimer) { return; }
    setLive("polling");
    pollTimer = setInterval(function () { refreshList(); fetchMessages(); }, 8000);
  }

  function connect() {
    request("POST", "/console/session/token").then(function (res) {
      if (!res.ok || !res.data.token) { startPolling(); return; }
      var proto = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(proto + location.host + "/ws/agent");
      ws.onopen = function () {
        ws.send(JSON.stringify({ type: "hello", token: res.data.token, last_event_id: lastEventId }));
      };
      ws.onmessage = function (m) {
        var frame;
        try { frame = JSON.parse(m.data); } catch (e) { return; }
        if (frame.type === "ready") {
          retries = 0; setLive("live");
          if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
          refreshList(); fetchMessages();  // anything that happened before the socket was up
        } else if (frame.type === "event" && frame.event) { onEvent(frame.event); }
        else if (frame.type === "stream") { onStream(frame); }
        else if (frame.type === "typing") { onTyping(frame); }
      };
      ws.onclose = function () {
        ws = null; setLive("off");
        retries += 1;
        if (retries >= 3) { startPolling(); }
        setTimeout(connect, Math.min(15000, 500 * Math.pow(2, retries)));
      };
    }, function () { startPolling(); setTimeout(connect, 10000); });
  }

  /* desktop notification + sound for visitors waiting for a human (opt-in) */
  var notifyBox = document.getElementById("notify-toggle");
  var notifyOn = false;
  try { notifyOn = localStorage.getItem("parley.notify") === "1"; } catch (e) { /* private mode */ }
  if (notifyBox) {
    notifyBox.checked = notifyOn;
    notifyBox.addEventListener("change", function () {
      notifyOn = notifyBox.checked;
      try { localStorage.setItem("parley.notify", notifyOn ? "1" : "0"); } catch (e) { /* ignore */ }
      if (notifyOn && window.Notification && Notification.permission === "default") { Notification.requestPermission(); }
      if (notifyOn) { beep(); }
    });
  }
  var audio = null;
  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var o = audio.createOscillator(), g = audio.createGain();
      o.type = "sine"; o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, audio.currentTime);
      g.gain.exponentialRampToValueAtTime(0.2, audio.currentTime + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.35);
      o.connect(g); g.connect(audio.destination); o.start(); o.stop(audio.currentTime + 0.4);
    } catch (e) { /* no audio */ }
  }
  function alertWaiting(ev) {
    document.body.dataset.lastAlert = ev.conversation_id || "";
    if (!notifyOn) { return; }
    beep();
    if (window.Notification && Notification.permission === "granted") {
      var n = new Notification("A visitor is waiting for a human", {
        body: "Open the inbox to answer.", tag: "parley-" + (ev.conversation_id || "")
      });
      n.onclick = function () { window.focus(); location.href = "/console/conversations/" + ev.conversation_id + "?tab=waiting"; };
    }
  }

  /* the open conversation: fetch-submitted actions, typing, canned replies */
  var canned = [];
  try { canned = JSON.parse((document.getElementById("canned-data") || {}).textContent || "[]"); } catch (e) { canned = []; }

  function showError(form, message) {
    var old = form.querySelector(".error.live");
    if (old) { old.remove(); }
    var el = document.createElement("small");
    el.className = "error live";
    el.setAttribute("role", "alert");
    el.textContent = message;
    var field = form.querySelector(".field") || form;
    field.appendChild(el);
  }

  function wireForms(c) {
    c.querySelectorAll("form[data-action]").forEach(function (form) {
      if (form.dataset.wired) { return; }
      form.dataset.wired = "1";
      form.addEventListener("submit", function (e) {
        e.preventDefault();
        var submitter = e.submitter;
        var url = (submitter && submitter.getAttribute("formaction")) || form.getAttribute("action");
        var data = new FormData(form);
        var buttons = form.querySelectorAll("button");
        buttons.forEach(function (b) { b.disabled = true; });
        request("POST", url, data).then(function (res) {
          buttons.forEach(function (b) { b.disabled = false; });
          if (!res.ok) {
            var err = (res.data && res.data.error) || {};
            showError(form, err.message || "That did not work; try again.");
            return;
          }
          var old = form.querySelector(".error.live"); if (old) { old.remove(); }
          if (form.id === "composer") {
            var box = document.getElementById("reply-body");
            box.value = ""; box.focus();
            fetchMessages();
            if (c.dataset.status !== "human") { refreshPane(); }
          } else {
            refreshPane();
          }
          refreshList();
        });
      });
    });
    var box = document.getElementById("reply-body");
    if (box && !box.dataset.wired) { box.dataset.wired = "1"; wireComposer(box, c.dataset.id); }
  }

  function wireConversation() {
    var c = conv();
    if (!c) { return; }
    wireForms(c);
    scrollDown();
  }

  function wireComposer(box, conversationId) {
    var menu = document.getElementById("canned-menu");
    var typingOn = false, typingTimer = null, selected = 0, matches = [];

    function currentToken() {
      var upto = box.value.slice(0, box.selectionStart);
      var m = /(^|\s)\/([a-z0-9_-]*)$/.exec(upto);
      return m ? { start: upto.length - m[2].length - 1, word: m[2] } : null;
    }
    function closeMenu() { menu.hidden = true; matches = []; }
    function render() {
      menu.innerHTML = "";
      matches.forEach(function (c, i) {
        var li = document.createElement("li");
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", i === selected ? "true" : "false");
        var code = document.createElement("code"); code.textContent = "/" + c.shortcut;
        var span = document.createElement("span"); span.textContent = c.body.length > 80 ? c.body.slice(0, 80) + "…" : c.body;
        li.appendChild(code); li.appendChild(span);
        li.addEventListener("mousedown", function (e) { e.preventDefault(); insert(c); });
        menu.appendChild(li);
      });
      menu.hidden = matches.length === 0;
    }
    function insert(c) {
      var tok = currentToken();
      if (!tok) { closeMenu(); return; }
      var before = box.value.slice(0, tok.start), after = box.value.slice(box.selectionStart);
      box.value = before + c.body + after;
      var pos = (before + c.body).length;
      box.setSelectionRange(pos, pos);
      closeMenu();
      box.focus();
    }
    box.addEventListener("input", function () {
      var tok = currentToken();
      if (tok && canned.length) {
        matches = canned.filter(function (c) { return c.shortcut.indexOf(tok.word) === 0; }).slice(0, 8);
        selected = 0; render();
      } else { closeMenu(); }
      if (!typingOn) { typingOn = true; sendFrame({ type: "typing", conversation_id: conversationId, on: true }); }
      clearTimeout(typingTimer);
      typingTimer = setTimeout(function () { typingOn = false; sendFrame({ type: "typing", conversation_id: conversationId, on: false }); }, 2500);
    });
    box.addEventListener("keydown", function (e) {
      if (!menu.hidden && matches.length) {
        if (e.key === "ArrowDown") { selected = (selected + 1) % matches.length; render(); e.preventDefault(); return; }
        if (e.key === "ArrowUp") { selected = (selected - 1 + matches.length) % matches.length; render(); e.preventDefault(); return; }
        if (e.key === "Enter" || e.key === "Tab") { insert(matches[selected]); e.preventDefault(); return; }
        if (e.key === "Escape") { closeMenu(); e.preventDefault(); return; }
      }
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        var f = box.form; f.requestSubmit ? f.requestSubmit() : f.submit();
      }
    });
    box.addEventListener("blur", function () { setTimeout(closeMenu, 150); });
  }

  wireConversation();
  connect();
})();
