// The admin console: every salon live from one WebSocket (/v1/admin/ws: a snapshot, then
// coalesced changes), a phase filter, a search, pages of 50 rows, and the operator's
// actions behind a confirmation. The admin token is asked once and kept in this tab's
// sessionStorage; it travels as `Authorization: Bearer` and as the WebSocket subprotocol
// `bearer.<token>`, never in a URL.
"use strict";

(() => {
  const PAGE = 50;
  const TOKEN_KEY = "salon.admin.token";
  const PHASES = ["Pending", "Starting", "AwaitingLink", "PairingCodeIssued", "PasskeyRequired",
    "Connected", "Disconnected", "LoggedOut", "LinkExpired", "Suspended", "Failed"];
  const TEXTS = {
    en: {
      title: "Salon sessions", loading: "Loading…", signIn: "Sign in", signOut: "Sign out",
      tokenLabel: "Admin token",
      tokenNote: "Kept in this tab only (session storage), never in the address bar.",
      badToken: "This token is not valid.", notAdmin: "This is not the admin token (a salon's onboarding token cannot open the console).",
      unreachable: "The API cannot be reached. Try again.",
      search: "Company id or name", all: "All", empty: "No sessions match.",
      colSalon: "Salon", colPhase: "Phase", colLinked: "Linked", colConnected: "Connected",
      colPhone: "Phone", colLastConnected: "Last connected", colWorker: "Worker", colActions: "Actions",
      yes: "yes", no: "no", never: "never",
      healthy: "healthy", unhealthy: "unhealthy", unknown: "unknown", deleting: "deleting…",
      summary: "{a}–{b} of {n}", summaryNone: "0 of {n}", pageOf: "page {p} of {q}",
      prev: "← Previous", next: "Next →",
      connLive: "Live", connConnecting: "Connecting…", connReconnecting: "Connection lost, reconnecting…",
      link: "Link", restart: "Restart", logout: "Log out", delete: "Delete", renew: "Renew link",
      cancel: "Cancel", close: "Close", copy: "Copy", copied: "Copied",
      linkLabel: "Onboarding link (send it to the salon):", linkExpires: "Valid until {t}.",
      qLink: "Issue an onboarding link for {s}?", qLinkText: "Anyone with the link can link a phone to this salon until it expires.",
      qRestart: "Restart {s}?", qRestartText: "The WhatsApp connection is closed and opened again; the phone stays linked.",
      qRestartForce: "A pairing code is waiting to be entered on the phone. Restart anyway and discard it?",
      qLogout: "Log {s} out?", qLogoutText: "The device is removed from WhatsApp: the salon must link the phone again.",
      qDelete: "Delete {s}?", qDeleteText: "The session and its worker are removed; its WhatsApp credentials too (unless the session retains them).",
      qRenew: "Renew the link of {s}?", qRenewText: "The onboarding starts again: new QR codes and pairing codes for another period.",
      doneLink: "Link issued for {s}.", doneRestart: "Restart requested for {s}.", doneLogout: "{s} logged out.",
      doneDelete: "{s} is being deleted.", doneRenew: "Onboarding renewed for {s}.",
      failed: "It did not work: {m}",
      e_no_worker: "no worker runs for this session (is its pod up?)",
      e_already_linked: "the phone is already linked",
      e_not_found: "no such session", e_pairing_code_pending: "a pairing code is pending",
      e_worker_timeout: "the worker did not answer in time", e_network: "the API cannot be reached",
    },
    ru: {
      title: "Сессии салонов", loading: "Загрузка…", signIn: "Войти", signOut: "Выйти",
      tokenLabel: "Токен администратора",
      tokenNote: "Хранится только в этой вкладке (session storage), никогда в адресной строке.",
      badToken: "Токен неверный.", notAdmin: "Это не токен администратора (токен подключения салона не открывает консоль).",
      unreachable: "API недоступен. Попробуйте ещё раз.",
      search: "Id компании или название", all: "Все", empty: "Нет подходящих сессий.",
      colSalon: "Салон", colPhase: "Фаза", colLinked: "Привязан", colConnected: "Подключён",
      colPhone: "Телефон", colLastConnected: "Последнее подключение", colWorker: "Воркер", colActions: "Действия",
      yes: "да", no: "нет", never: "никогда",
      healthy: "в порядке", unhealthy: "не отвечает", unknown: "неизвестно", deleting: "удаляется…",
      summary: "{a}–{b} из {n}", summaryNone: "0 из {n}", pageOf: "стр. {p} из {q}",
      prev: "← Назад", next: "Вперёд →",
      connLive: "На связи", connConnecting: "Подключаемся…", connReconnecting: "Связь потеряна, переподключаемся…",
      link: "Ссылка", restart: "Перезапуск", logout: "Отвязать", delete: "Удалить", renew: "Продлить ссылку",
      cancel: "Отмена", close: "Закрыть", copy: "Копировать", copied: "Скопировано",
      linkLabel: "Ссылка для подключения (отправьте её салону):", linkExpires: "Действует до {t}.",
      qLink: "Выдать ссылку для подключения {s}?", qLinkText: "Любой, у кого есть ссылка, может привязать телефон к этому салону, пока она действует.",
      qRestart: "Перезапустить {s}?", qRestartText: "Соединение с WhatsApp закроется и откроется снова; телефон останется привязан.",
      qRestartForce: "На телефоне ждёт ввода код привязки. Всё равно перезапустить и сбросить его?",
      qLogout: "Отвязать {s}?", qLogoutText: "Устройство будет удалено из WhatsApp: салону придётся привязать телефон заново.",
      qDelete: "Удалить {s}?", qDeleteText: "Сессия и её воркер будут удалены, а также учётные данные WhatsApp (если сессия их не сохраняет).",
      qRenew: "Продлить ссылку {s}?", qRenewText: "Подключение начнётся снова: новые QR-коды и коды привязки ещё на один срок.",
      doneLink: "Ссылка для {s} выдана.", doneRestart: "Перезапуск {s} запрошен.", doneLogout: "{s} отвязан.",
      doneDelete: "{s} удаляется.", doneRenew: "Подключение {s} продлено.",
      failed: "Не получилось: {m}",
      e_no_worker: "для этой сессии не запущен воркер (работает ли её под?)",
      e_already_linked: "телефон уже привязан",
      e_not_found: "такой сессии нет", e_pairing_code_pending: "ожидается ввод кода привязки",
      e_worker_timeout: "воркер не ответил вовремя", e_network: "API недоступен",
    },
  };
  // what each action calls (the paths are relative to /v1/sessions/{company_id})
  const ACTIONS = {
    link: { method: "POST", path: "/tokens", body: {}, danger: false },
    restart: { method: "POST", path: "/restart", danger: false },
    logout: { method: "POST", path: "/logout", danger: true },
    delete: { method: "DELETE", path: "", danger: true },
    renew: { method: "POST", path: "/link/renew", danger: false },
  };

  const $ = (id) => document.getElementById(id);
  const S = {
    lang: "en", token: null, rows: new Map(), order: [], rev: 0, phase: null, query: "",
    page: 0, ws: null, attempt: 0, heartbeatS: 15, lastMessage: 0, pending: null,
    renderQueued: false, changedIds: new Set(), trace: [], renders: 0, firstRenderMs: null,
  };
  window.__admin = S;  // read by the browser tests and the benchmark
  const trace = (what) => { S.trace.push(what); if (S.trace.length > 500) S.trace.shift(); };

  // ---- language --------------------------------------------------------------------
  function pickLang() {
    const asked = new URLSearchParams(location.search).get("lang");
    let stored = null;
    try { stored = localStorage.getItem("salon.lang"); } catch (e) { /* ignore */ }
    const browser = (navigator.language || "en").toLowerCase().startsWith("ru") ? "ru" : "en";
    for (const l of [asked, stored, browser]) if (l && TEXTS[l]) return l;
    return "en";
  }
  function t(key, vars) {
    let text = (TEXTS[S.lang] && TEXTS[S.lang][key]) || TEXTS.en[key] || key;
    for (const [k, v] of Object.entries(vars || {})) text = text.replace(`{${k}}`, v);
    return text;
  }
  function applyLang() {
    document.documentElement.lang = S.lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    });
    document.querySelectorAll("[data-lang]").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.lang === S.lang));
    });
    renderConn();
    scheduleRender();
  }

  // ---- views -----------------------------------------------------------------------
  function setView(view) {
    $("admin").dataset.view = view;
    for (const v of ["loading", "login", "console"]) $(`view-${v}`).hidden = v !== view;
    $("signout").hidden = view !== "console";
    trace(`view:${view}`);
  }
  function setConn(conn) {
    $("admin").dataset.conn = conn;
    renderConn();
  }
  function renderConn() {
    const conn = $("admin").dataset.conn;
    $("conn").textContent = { live: t("connLive"), connecting: t("connConnecting"),
      reconnecting: t("connReconnecting") }[conn] || "";
  }
  let toastTimer = null;
  function toast(text) {
    $("toast").textContent = text;
    $("toast").hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { $("toast").hidden = true; }, 4000);
  }

  // ---- the token -------------------------------------------------------------------
  function saveToken(token) {
    S.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* private mode: kept in memory only */ }
  }
  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${S.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let json = null;
    try { json = resp.status === 204 ? null : await resp.json(); } catch (e) { json = null; }
    return { status: resp.status, json };
  }
  // 200: the token opens the console; else why not
  async function checkToken() {
    try {
      const r = await api("GET", "/v1/sessions?limit=1");
      if (r.status === 200) return null;
      if (r.status === 401) return "badToken";
      if (r.status === 403) return "notAdmin";
      return "unreachable";
    } catch (e) { return "unreachable"; }
  }
  function showLogin(why) {
    disconnect();
    setView("login");
    $("login-error").hidden = !why;
    $("login-error").textContent = why ? t(why) : "";
    $("token").focus();
  }
  async function signIn(token) {
    saveToken(token);
    const why = await checkToken();
    if (why) {
      if (why !== "unreachable") saveToken(null);
      showLogin(why);
      return;
    }
    $("token").value = "";
    setView("console");
    connect();
  }

  // ---- the WebSocket ---------------------------------------------------------------
  function disconnect() {
    if (S.ws) { S.ws.onclose = null; S.ws.close(); S.ws = null; }
    setConn("off");
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    setConn(S.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(`${proto}://${location.host}/v1/admin/ws`, ["salon.v1", `bearer.${S.token}`]);
    S.ws = ws;
    ws.onmessage = (m) => {
      S.lastMessage = Date.now();
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (msg.kind === "snapshot") onSnapshot(msg);
      else if (msg.kind === "changes") onChanges(msg);
    };
    ws.onopen = () => { S.attempt = 0; S.lastMessage = Date.now(); setConn("live"); trace("ws:open"); };
    ws.onclose = async (e) => {
      if (S.ws !== ws) return;
      S.ws = null;
      trace(`ws:close:${e.code}`);
      setConn("reconnecting");
      S.attempt += 1;
      if (S.attempt >= 2) {  // refused at the handshake? the browser cannot tell: ask
        const why = await checkToken();
        if (why === "badToken" || why === "notAdmin") { saveToken(null); showLogin(why); return; }
      }
      const delay = Math.min(30000, 1000 * 2 ** Math.min(S.attempt - 1, 5)) * (0.75 + Math.random() / 2);
      setTimeout(() => { if (S.token && !S.ws) connect(); }, delay);
    };
  }
  // a socket that stops answering is closed (the server sends heartbeats)
  setInterval(() => {
    if (S.ws && S.ws.readyState === 1 && Date.now() - S.lastMessage > 2500 * S.heartbeatS) {
      trace("ws:stale");
      S.ws.close();
    }
  }, 1000);

  function onSnapshot(msg) {
    S.heartbeatS = msg.heartbeat_s || 15;
    S.rows = new Map(msg.sessions.map((r) => [r.company_id, r]));
    S.order = msg.sessions.map((r) => r.company_id);
    S.rev = msg.rev;
    trace("snapshot");
    scheduleRender();
  }
  function onChanges(msg) {
    let added = false;
    for (const r of msg.sessions) {
      if (!S.rows.has(r.company_id)) added = true;
      S.rows.set(r.company_id, r);
      S.changedIds.add(r.company_id);
    }
    for (const id of msg.removed) S.rows.delete(id);
    if (added || msg.removed.length) S.order = [...S.rows.keys()].sort(byCompany);
    S.rev = msg.rev;
    trace(`changes:${msg.rev}`);
    scheduleRender();
  }
  function byCompany(a, b) {
    const x = a.replace("company_", ""), y = b.replace("company_", "");
    return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
  }

  // ---- the list --------------------------------------------------------------------
  function scheduleRender() {
    if (S.renderQueued) return;
    S.renderQueued = true;
    requestAnimationFrame(() => { S.renderQueued = false; render(); });
  }
  function matches(r) {
    if (S.phase && r.phase !== S.phase) return false;
    if (!S.query) return true;
    return r.company_id.includes(S.query) || (r.display_name || "").toLowerCase().includes(S.query);
  }
  function render() {
    if ($("admin").dataset.view !== "console") return;
    const counts = {};
    const shown = [];
    for (const id of S.order) {
      const r = S.rows.get(id);
      if (!r) continue;
      counts[r.phase] = (counts[r.phase] || 0) + 1;
      if (matches(r)) shown.push(r);
    }
    renderPhases(counts);
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    S.page = Math.min(S.page, pages - 1);
    const slice = shown.slice(S.page * PAGE, S.page * PAGE + PAGE);
    const body = document.createElement("tbody");
    body.id = "rows";
    for (const r of slice) body.appendChild(rowOf(r));
    $("rows").replaceWith(body);
    S.changedIds.clear();
    $("empty").hidden = shown.length > 0;
    $("summary").textContent = shown.length
      ? t("summary", { a: S.page * PAGE + 1, b: S.page * PAGE + slice.length, n: shown.length })
      : t("summaryNone", { n: shown.length });
    $("page-of").textContent = t("pageOf", { p: S.page + 1, q: pages });
    $("prev").disabled = S.page === 0;
    $("next").disabled = S.page >= pages - 1;
    S.renders += 1;
    if (S.firstRenderMs === null && S.rows.size) S.firstRenderMs = performance.now();
    trace(`render:${S.rev}`);
  }
  function renderPhases(counts) {
    const nav = $("phases");
    nav.textContent = "";
    const total = S.rows.size;
    const chip = (phase, label, n) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.phase = phase || "";
      b.textContent = `${label} (${n})`;
      b.setAttribute("aria-pressed", String((S.phase || "") === (phase || "")));
      nav.appendChild(b);
    };
    chip(null, t("all"), total);
    for (const p of PHASES) if (counts[p] || S.phase === p) chip(p, p, counts[p] || 0);
    for (const p of Object.keys(counts)) if (!PHASES.includes(p)) chip(p, p, counts[p]);
  }
  function cell(tr, label, cls) {
    const td = document.createElement("td");
    td.dataset.label = t(label);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function span(parent, cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    parent.appendChild(s);
    return s;
  }
  function when(iso) {
    if (!iso) return t("never");
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(S.lang === "ru" ? "ru-RU" : "en-GB",
      { dateStyle: "short", timeStyle: "short" });
  }
  function rowOf(r) {
    const tr = document.createElement("tr");
    tr.dataset.company = r.company_id;
    if (S.changedIds.has(r.company_id)) tr.className = "changed";
    const c = cell(tr, "colSalon", "company");
    span(c, "id", r.company_id);
    if (r.display_name) span(c, "dn", r.display_name);
    span(cell(tr, "colPhase", "phase-col"), "phase", r.phase).dataset.phase = r.phase;
    span(cell(tr, "colLinked", "linked"), r.linked ? "yes" : "no", t(r.linked ? "yes" : "no"));
    span(cell(tr, "colConnected", "connected"), r.connected ? "yes" : "no", t(r.connected ? "yes" : "no"));
    cell(tr, "colPhone", "phone").textContent = r.phone || "—";
    cell(tr, "colLastConnected", "last").textContent = when(r.last_connected_at);
    const h = r.worker_healthy === true ? "true" : r.worker_healthy === false ? "false" : "unknown";
    const health = span(cell(tr, "colWorker", "worker"), "health",
      r.deleting ? t("deleting") : t({ true: "healthy", false: "unhealthy", unknown: "unknown" }[h]));
    health.dataset.h = h;
    if (r.worker_reason) health.title = r.worker_reason;
    const actions = cell(tr, "colActions", "actions");
    const names = ["link", "restart", "logout", "delete"];
    if (r.phase === "LinkExpired") names.unshift("renew");
    for (const a of names) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.action = a;
      b.dataset.company = r.company_id;
      b.textContent = t(a);
      if (ACTIONS[a].danger) b.className = "danger";
      b.disabled = r.deleting;
      actions.appendChild(b);
    }
    return tr;
  }

  // ---- actions, each confirmed first ------------------------------------------------
  const Q = { link: ["qLink", "qLinkText"], restart: ["qRestart", "qRestartText"],
    logout: ["qLogout", "qLogoutText"], delete: ["qDelete", "qDeleteText"], renew: ["qRenew", "qRenewText"] };
  const DONE = { link: "doneLink", restart: "doneRestart", logout: "doneLogout", delete: "doneDelete",
    renew: "doneRenew" };
  function salonName(id) {
    const r = S.rows.get(id);
    return r && r.display_name ? `${r.display_name} (${id})` : id;
  }
  function ask(action, company, force) {
    S.pending = { action, company, force: !!force };
    const s = salonName(company);
    $("confirm-title").textContent = t(Q[action][0], { s });
    $("confirm-text").textContent = force ? t("qRestartForce") : t(Q[action][1]);
    $("confirm-error").hidden = true;
    $("link-box").hidden = true;
    const ok = $("confirm-ok");
    ok.hidden = false;
    ok.disabled = false;
    ok.textContent = t(action);
    ok.className = ACTIONS[action].danger ? "danger" : "";
    $("confirm-cancel").textContent = t("cancel");
    if (!$("confirm").open) $("confirm").showModal();
    trace(`confirm:${action}:${company}`);
  }
  async function confirmed() {
    const p = S.pending;
    if (!p) return;
    const a = ACTIONS[p.action];
    $("confirm-ok").disabled = true;
    let r;
    try {
      const path = `/v1/sessions/${encodeURIComponent(p.company)}${a.path}${p.force ? "?force=true" : ""}`;
      r = await api(a.method, path, a.body);
    } catch (e) { r = { status: 0, json: null }; }
    trace(`action:${p.action}:${p.company}:${r.status}`);
    if (r.status === 401 || r.status === 403) { closeDialog(); saveToken(null); showLogin("badToken"); return; }
    const code = r.json && r.json.error ? r.json.error.code : null;
    if (p.action === "restart" && !p.force && code === "pairing_code_pending") { ask("restart", p.company, true); return; }
    if (r.status >= 300 || r.status === 0) {
      const why = code && TEXTS.en[`e_${code}`] ? t(`e_${code}`)
        : r.status === 0 ? t("e_network") : (r.json && r.json.error && r.json.error.message) || `HTTP ${r.status}`;
      $("confirm-error").textContent = t("failed", { m: why });
      $("confirm-error").hidden = false;
      $("confirm-ok").disabled = false;
      return;
    }
    if (p.action === "link") {
      $("link-url").value = r.json.onboarding_url;
      $("link-expires").textContent = t("linkExpires", { t: when(r.json.expires_at) });
      $("link-box").hidden = false;
      $("confirm-title").textContent = t(DONE.link, { s: salonName(p.company) });
      $("confirm-text").textContent = t("qLinkText");
      $("confirm-ok").hidden = true;
      $("confirm-cancel").textContent = t("close");
      S.pending = null;
      return;
    }
    closeDialog();
    toast(t(DONE[p.action], { s: salonName(p.company) }));
  }
  function closeDialog() {
    S.pending = null;
    $("link-url").value = "";  // the link carries a token: not left in the page
    if ($("confirm").open) $("confirm").close();
  }
  async function copyLink() {
    const text = $("link-url").value;
    let ok = false;
    try { await navigator.clipboard.writeText(text); ok = true; } catch (e) {
      $("link-url").select();  // not a secure context (plain http on another host)
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
    }
    if (ok) { $("copy").textContent = t("copied"); trace("copied"); }
  }

  // ---- start -----------------------------------------------------------------------
  function start() {
    S.lang = pickLang();
    document.querySelectorAll("[data-lang]").forEach((b) => b.addEventListener("click", () => {
      S.lang = b.dataset.lang;
      try { localStorage.setItem("salon.lang", S.lang); } catch (e) { /* ignore */ }
      applyLang();
    }));
    applyLang();
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => { saveToken(null); S.rows = new Map(); S.order = []; showLogin(null); });
    $("search").addEventListener("input", () => { S.query = $("search").value.trim().toLowerCase(); S.page = 0; scheduleRender(); });
    $("phases").addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      S.phase = b.dataset.phase || null;
      S.page = 0;
      scheduleRender();
    });
    $("prev").addEventListener("click", () => { S.page = Math.max(0, S.page - 1); scheduleRender(); });
    $("next").addEventListener("click", () => { S.page += 1; scheduleRender(); });
    $("sessions").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-action]");
      if (b) ask(b.dataset.action, b.dataset.company, false);
    });
    $("confirm-ok").addEventListener("click", confirmed);
    $("confirm-cancel").addEventListener("click", () => { trace("confirm:cancel"); closeDialog(); });
    $("confirm").addEventListener("close", () => { S.pending = null; $("copy").textContent = t("copy"); });
    $("copy").addEventListener("click", copyLink);
    let token = null;
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (e) { token = null; }
    if (token) signIn(token); else showLogin(null);
  }
  start();
})();
