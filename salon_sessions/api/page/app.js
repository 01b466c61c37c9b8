// The onboarding page: shows the QR the worker pushes (or a pairing code on request) and
// moves to "done" only when a `connected` event arrives. It never restarts anything: a new
// QR is fetched only when the server says there is one.
// WhatsApp's reasons (a logout, a ban, a passkey request; names from
// core/whatsapp_reasons.py) are told in plain words, from the event when the page sees it,
// else from the state's `live.reason` when the page is opened later.
"use strict";

(() => {
  const TEXTS = {
    en: {
      title: "Connect WhatsApp",
      loading: "Loading…",
      how1: "Open WhatsApp on the salon's phone.",
      how2: "Go to Settings → Linked devices → Link a device.",
      how3qr: "Point the phone at this QR code.",
      how3code: "Tap “Link with phone number instead” and enter the code below.",
      qrWait: "Waiting for the QR code…",
      qrNote: "The code refreshes by itself.",
      toCode: "Link with phone number instead",
      toQr: "Scan a QR code instead",
      phoneLabel: "Salon's phone number",
      getCode: "Get code",
      codeIntro: "On the phone tap “Link with phone number instead” and enter:",
      codeValid: "Valid for {t}",
      codeExpired: "The code has expired. Request a new one.",
      linkedWait: "The phone is linked. Connecting to WhatsApp…",
      linkedStopped: "The phone is linked, but WhatsApp is not connected: see the message above.",
      doneTitle: "Done",
      doneText: "WhatsApp is connected. You can close this page.",
      errTitle: "This link does not work",
      errNoToken: "The link is incomplete. Open the full link you received.",
      errExpired: "The link has expired or is not valid. Ask for a new link.",
      errForbidden: "This link belongs to another salon.",
      connLive: "Live",
      connReconnecting: "Connection lost, reconnecting…",
      connPolling: "Connection lost, checking every few seconds…",
      disconnected: "The connection to WhatsApp was interrupted. It reconnects by itself.",
      loggedOut: "The phone removed this device. Link it again.",
      loggedOutLocked: "WhatsApp has locked this account. Unlock it in WhatsApp on the phone first, then link again.",
      loggedOutBanned: "WhatsApp has banned this number. It cannot be linked.",
      loggedOutRequest: "This device was unlinked here. Link it again to reconnect.",
      loggedOutCode: "WhatsApp removed this device (code {c}). Link it again.",
      passkeyTitle: "Confirm on the salon's phone",
      passkeyWhy: "WhatsApp asks for this account's passkey to confirm the new device. This page cannot answer that: a passkey works only on WhatsApp's own site.",
      passkeyDo1: "Look at the salon's phone. If WhatsApp shows a request, confirm it there.",
      passkeyDo2: "If nothing appears, link with the phone number instead, or try again later.",
      passkeyConfirm: "WhatsApp accepted the passkey. Confirm the new device on the phone.",
      passkeyCode: "The phone must show the same code:",
      passkeyGone: "The confirmation was not finished in time. Scan the new QR code or link with the phone number.",
      errStreamReplaced: "Another WhatsApp Web or desktop session took over this connection. Reconnecting once…",
      errStreamReplacedStop: "Another WhatsApp Web or desktop session took over this connection. Close WhatsApp on the other computer and contact support to reconnect.",
      errTemporaryBan: "WhatsApp has temporarily blocked this number{r}. Try again later.",
      errTemporaryBanUntil: "WhatsApp has temporarily blocked this number until {t}{r}. It reconnects by itself then.",
      errConnectFailure: "WhatsApp refused the connection{r}. We will retry.",
      errConnectFailureStop: "WhatsApp refused the connection{r}. It will not retry by itself: contact support.",
      why_sent_to_too_many_people: "messages to too many people",
      why_blocked_by_users: "too many people blocked it",
      why_created_too_many_groups: "too many groups created",
      why_sent_too_many_same_message: "the same message sent too many times",
      why_broadcast_list: "too many broadcast messages",
      why_service_unavailable: "WhatsApp is unavailable",
      why_internal_server_error: "a WhatsApp server error",
      why_client_outdated: "this app version is outdated",
      why_bad_user_agent: "this app is not accepted",
      why_client_unknown: "this app is not accepted",
      why_code: "code {c}",
      errGeneric: "Something went wrong on our side. We are retrying.",
      badPhone: "Check the number: country code first, 8 to 15 digits.",
      codePending: "A code for another number is still valid. Wait until it expires.",
      alreadyLinked: "This salon's phone is already linked.",
      rateLimited: "Too many requests. Try again in {s} s.",
      noWorker: "The service is starting. Try again in a minute.",
      failed: "Could not get a code. Try again.",
    },
    ru: {
      title: "Подключение WhatsApp",
      loading: "Загрузка…",
      how1: "Откройте WhatsApp на телефоне салона.",
      how2: "Откройте Настройки → Связанные устройства → Привязка устройства.",
      how3qr: "Наведите камеру телефона на этот QR-код.",
      how3code: "Нажмите «Связать по номеру телефона» и введите код ниже.",
      qrWait: "Ждём QR-код…",
      qrNote: "Код обновляется сам.",
      toCode: "Связать по номеру телефона",
      toQr: "Отсканировать QR-код",
      phoneLabel: "Номер телефона салона",
      getCode: "Получить код",
      codeIntro: "На телефоне нажмите «Связать по номеру телефона» и введите:",
      codeValid: "Действует ещё {t}",
      codeExpired: "Срок действия кода истёк. Запросите новый.",
      linkedWait: "Телефон привязан. Подключаемся к WhatsApp…",
      linkedStopped: "Телефон привязан, но WhatsApp не подключён: см. сообщение выше.",
      doneTitle: "Готово",
      doneText: "WhatsApp подключён. Страницу можно закрыть.",
      errTitle: "Ссылка не работает",
      errNoToken: "Ссылка неполная. Откройте ссылку целиком.",
      errExpired: "Срок действия ссылки истёк или она неверна. Запросите новую.",
      errForbidden: "Эта ссылка принадлежит другому салону.",
      connLive: "На связи",
      connReconnecting: "Связь потеряна, переподключаемся…",
      connPolling: "Связь потеряна, проверяем каждые несколько секунд…",
      disconnected: "Связь с WhatsApp прервалась. Она восстановится сама.",
      loggedOut: "Телефон отвязал это устройство. Привяжите его снова.",
      loggedOutLocked: "WhatsApp закрыл доступ к этому аккаунту. Сначала разблокируйте его в WhatsApp на телефоне, затем привяжите снова.",
      loggedOutBanned: "WhatsApp заблокировал этот номер. Привязать его нельзя.",
      loggedOutRequest: "Устройство отвязали здесь. Привяжите его снова, чтобы подключиться.",
      loggedOutCode: "WhatsApp отвязал это устройство (код {c}). Привяжите его снова.",
      passkeyTitle: "Подтвердите на телефоне салона",
      passkeyWhy: "WhatsApp просит ключ доступа (passkey) этого аккаунта, чтобы подтвердить новое устройство. Эта страница не может его передать: ключ доступа работает только на сайте самого WhatsApp.",
      passkeyDo1: "Посмотрите на телефон салона. Если WhatsApp показывает запрос, подтвердите его там.",
      passkeyDo2: "Если запроса нет, привяжите по номеру телефона или попробуйте позже.",
      passkeyConfirm: "WhatsApp принял ключ доступа. Подтвердите новое устройство на телефоне.",
      passkeyCode: "На телефоне должен быть тот же код:",
      passkeyGone: "Подтверждение не завершилось вовремя. Отсканируйте новый QR-код или привяжите по номеру телефона.",
      errStreamReplaced: "Другая сессия WhatsApp Web или WhatsApp для компьютера перехватила подключение. Переподключаемся…",
      errStreamReplacedStop: "Другая сессия WhatsApp Web или WhatsApp для компьютера перехватила подключение. Закройте WhatsApp на другом компьютере и обратитесь в поддержку.",
      errTemporaryBan: "WhatsApp временно заблокировал номер{r}. Попробуйте позже.",
      errTemporaryBanUntil: "WhatsApp временно заблокировал номер до {t}{r}. Потом подключение восстановится само.",
      errConnectFailure: "WhatsApp отказал в подключении{r}. Повторим попытку.",
      errConnectFailureStop: "WhatsApp отказал в подключении{r}. Само оно не восстановится: обратитесь в поддержку.",
      why_sent_to_too_many_people: "сообщения слишком многим людям",
      why_blocked_by_users: "его заблокировали слишком многие",
      why_created_too_many_groups: "создано слишком много групп",
      why_sent_too_many_same_message: "одно и то же сообщение слишком много раз",
      why_broadcast_list: "слишком много рассылок",
      why_service_unavailable: "WhatsApp недоступен",
      why_internal_server_error: "ошибка сервера WhatsApp",
      why_client_outdated: "версия приложения устарела",
      why_bad_user_agent: "приложение не принято",
      why_client_unknown: "приложение не принято",
      why_code: "код {c}",
      errGeneric: "У нас что-то пошло не так. Повторяем попытку.",
      badPhone: "Проверьте номер: сначала код страны, от 8 до 15 цифр.",
      codePending: "Код для другого номера ещё действует. Дождитесь окончания срока.",
      alreadyLinked: "Телефон салона уже привязан.",
      rateLimited: "Слишком много запросов. Повторите через {s} с.",
      noWorker: "Сервис запускается. Повторите через минуту.",
      failed: "Не удалось получить код. Попробуйте ещё раз.",
    },
  };
  // core/whatsapp_reasons.py: the logout names (whether a ban or refusal is retried comes
  // with it: `will_retry` in the event and in the state)
  const LOGOUT_TEXT = {
    logged_out: "loggedOut", device_removed: "loggedOut", locked: "loggedOutLocked",
    banned: "loggedOutBanned", on_request: "loggedOutRequest",
  };
  const CODE = /^code_([0-9]{1,6})$/;

  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const company = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const S = {
    lang: "en", token: null, step: "loading", mode: "qr", linked: false, connected: false,
    ws: null, attempts: 0, reconnectTimer: null, pollTimer: null, lastMessageAt: 0,
    heartbeatS: 15, qrUrl: null, qrLoading: false, qrAgain: false, code: null,
    codeTimer: null, closed: false, trace: [], banner: null, passkey: null,
    willReconnect: true, banUntil: null,
  };
  window.__salon = S;  // read by the browser tests
  const trace = (what) => { S.trace.push(what); };

  // ---- language --------------------------------------------------------------------
  function pickLang() {
    const asked = new URLSearchParams(location.search).get("lang");
    const stored = localStorage.getItem("salon.lang");
    const browser = (navigator.language || "en").toLowerCase().startsWith("ru") ? "ru" : "en";
    for (const l of [asked, stored, browser]) if (l && TEXTS[l]) return l;
    return "en";
  }
  function t(key, vars) {
    let text = (TEXTS[S.lang] && TEXTS[S.lang][key]) || TEXTS.en[key] || key;
    for (const [k, v] of Object.entries(vars || {})) {
      text = text.replace(`{${k}}`, typeof v === "function" ? v() : v);
    }
    return text;
  }
  function applyLang() {
    document.documentElement.lang = S.lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-lang]").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.lang === S.lang));
    });
    $("how3").textContent = t(S.mode === "code" ? "how3code" : "how3qr");
    renderConn();
    renderCodeTtl();
    renderBanner();
  }

  // ---- views -----------------------------------------------------------------------
  function setStep(step) {
    if (S.step === step) return;
    S.step = step;
    app.dataset.step = step;
    for (const s of ["loading", "link", "linked", "done", "error"]) $(`step-${s}`).hidden = s !== step;
    if (step !== "link") hidePasskey();
    trace(`step:${step}`);
  }
  // linked and not connected: "connecting…" while the worker reconnects by itself, else a
  // pointer to the banner that says why it does not (never a spinner that waits forever)
  function setReconnecting(again) {
    S.willReconnect = again;
    const el = $("linked-text");
    el.dataset.i18n = again ? "linkedWait" : "linkedStopped";
    el.textContent = t(el.dataset.i18n);
    $("linked-spinner").hidden = !again;
  }
  function setMode(mode) {
    S.mode = mode;
    app.dataset.mode = mode;
    $("qr-mode").hidden = mode !== "qr";
    $("code-mode").hidden = mode !== "code";
    $("how3").textContent = t(mode === "code" ? "how3code" : "how3qr");
    if (mode === "qr") loadQr();
  }
  // vars may be functions: they are called at each rendering, so a language switch
  // translates the parts too (the ban's reason, its local time)
  function banner(key, level, vars) {
    S.banner = key ? { key, level: level || "warn", vars: vars || {} } : null;
    renderBanner();
  }
  function renderBanner() {
    const el = $("banner");
    const b = S.banner;
    if (!b) { el.hidden = true; el.textContent = ""; delete el.dataset.key; return; }
    el.hidden = false;
    el.dataset.key = b.key;
    el.dataset.level = b.level;
    el.textContent = t(b.key, b.vars);
  }
  function fail(key) {
    S.closed = true;
    $("error-text").textContent = t(key);
    setStep("error");
    stopPolling();
    if (S.ws) S.ws.close();
  }
  function renderConn() {
    const key = { live: "connLive", reconnecting: "connReconnecting", polling: "connPolling" }[app.dataset.conn];
    $("conn").textContent = key ? t(key) : "";
  }
  function setConn(state) {
    app.dataset.conn = state;
    renderConn();
  }

  // ---- HTTP ------------------------------------------------------------------------
  async function api(path, options) {
    const opts = Object.assign({ cache: "no-store" }, options || {});
    opts.headers = Object.assign({ Authorization: `Bearer ${S.token}` }, opts.headers || {});
    const resp = await fetch(`/v1/sessions/${encodeURIComponent(company)}${path}`, opts);
    if (resp.status === 401) fail("errExpired");
    if (resp.status === 403) fail("errForbidden");
    return resp;
  }
  async function loadQr() {
    if (S.linked || S.connected || S.mode !== "qr" || S.closed) return;
    if (S.qrLoading) { S.qrAgain = true; return; }
    S.qrLoading = true;
    try {
      const resp = await api("/qr.svg");
      if (resp.ok) {
        const url = URL.createObjectURL(await resp.blob());
        const img = $("qr");
        await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = url; });
        if (S.qrUrl) URL.revokeObjectURL(S.qrUrl);
        S.qrUrl = url;
        img.hidden = false;
        img.alt = "QR";
        $("qr-wait").hidden = true;
        img.dataset.shownAt = String(Date.now());
        trace("qr:shown");
      } else if (resp.status === 409) {
        S.linked = true;
        setStep("linked");
      } else if (resp.status === 404) {
        $("qr").hidden = true;
        $("qr-wait").hidden = false;
      }
    } catch (e) {
      // the network is down: the WebSocket reconnect or the polling brings the next QR
    } finally {
      S.qrLoading = false;
      if (S.qrAgain) { S.qrAgain = false; loadQr(); }
    }
  }

  // ---- state -----------------------------------------------------------------------
  function applyState(st, source) {
    trace(`${source}:${st.phase || "unknown"}`);
    if (st.connected) { done(); return; }  // the worker's live state: the socket is open
    S.connected = false;
    S.linked = !!st.linked;
    if (S.linked) { setStep("linked"); setReconnecting(true); explainState(st); return; }
    setStep("link");
    explainState(st);
    if (st.qr_available) loadQr();
    if (st.live && st.live.pairing_code_pending && S.code) {
      if (S.mode !== "code") setMode("code");
      showCode(S.code);
    }
  }
  function done() {
    S.connected = true;
    S.linked = true;
    setReconnecting(true);
    S.banUntil = null;
    banner(null);
    clearInterval(S.codeTimer);
    setStep("done");
  }
  function applyEvent(ev) {
    trace(`event:${ev.type}`);
    const d = ev.data || {};
    switch (ev.type) {
      case "qr":
        if (!S.linked && !S.connected) { if (S.step !== "link") setStep("link"); loadQr(); }
        break;
      case "pairing_code":
        if (S.mode !== "code") setMode("code");
        showCode({ code: d.code, display: `${d.code.slice(0, 4)}-${d.code.slice(4)}`, expires_at: d.expires_at });
        break;
      case "linked":  // WhatsApp accepted the device; not connected yet
        S.linked = true;
        clearInterval(S.codeTimer);
        hidePasskey();
        if (!S.connected) setStep("linked");
        break;
      case "connected":
        done();
        break;
      case "disconnected":
        S.connected = false;
        setReconnecting(d.will_reconnect !== false);
        if (S.linked) {
          if (S.step === "done") setStep("linked");  // "done" says connected: no longer true
          banner("disconnected", "warn");
        } else if (S.passkey) {  // the login socket WhatsApp waited on is gone
          hidePasskey();
          banner("passkeyGone", "warn");
        }  // else the QR codes ran out and new ones come: nothing to tell the salon
        break;
      case "logged_out":
        S.linked = false; S.connected = false; S.code = null;
        $("qr").hidden = true; $("qr-wait").hidden = false; $("code-box").hidden = true;
        hidePasskey();
        setStep("link");
        explainLogout(d.reason);
        break;
      case "passkey_required":
        if (S.linked || S.connected) break;
        if (S.step !== "link") setStep("link");
        showPasskey(d.stage, d.code);
        break;
      case "error":
        if (d.code === "temporary_ban") explainBan(d.reason, d.retry_at);
        else if (d.code === "stream_replaced") explainReplaced(S.willReconnect);
        else if (d.code === "connect_failure") explainRefusal(d.reason, d.will_retry !== false);
        else banner("errGeneric", d.fatal ? "error" : "warn");
        break;
      default:
        break;
    }
  }

  // ---- WhatsApp's reasons -------------------------------------------------------------
  function why(reason) {  // " (plain words)" or "": a name this page does not know stays unsaid
    const code = CODE.exec(reason || "");
    if (code) return ` (${t("why_code", { c: code[1] })})`;
    const key = `why_${reason}`;
    return reason && TEXTS.en[key] ? ` (${t(key)})` : "";
  }
  function localTime(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return "";
    const locale = S.lang === "ru" ? "ru-RU" : "en-GB";
    const time = when.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    const day = when.toLocaleDateString(locale, { day: "numeric", month: "long" });
    return `${time}, ${day}`;
  }
  function explainLogout(reason) {
    const code = CODE.exec(reason || "");
    if (code) { banner("loggedOutCode", "error", { c: code[1] }); return; }
    banner(LOGOUT_TEXT[reason] || "loggedOut", "error");
  }
  function explainBan(reason, retryAt) {
    if (retryAt) S.banUntil = retryAt;
    const until = retryAt || S.banUntil;
    const r = () => why(reason);
    if (until) banner("errTemporaryBanUntil", "error", { t: () => localTime(until), r });
    else banner("errTemporaryBan", "error", { r });
  }
  function explainRefusal(reason, retry) {
    if (!retry) setReconnecting(false);
    banner(retry ? "errConnectFailure" : "errConnectFailureStop", retry ? "warn" : "error",
      { r: () => why(reason) });
  }
  function explainReplaced(willRetry) {
    if (!willRetry) setReconnecting(false);
    banner(willRetry ? "errStreamReplaced" : "errStreamReplacedStop", willRetry ? "warn" : "error");
  }
  // The state read on load (snapshot, poll): the same explanations without the event.
  function explainState(st) {
    const live = st.live || {};
    const reason = live.reason;
    if (st.phase === "PasskeyRequired" && !st.linked) {
      const stage = live.passkey_stage || "request";
      const code = live.passkey_code || null;
      if (!S.passkey || S.passkey.stage !== stage || S.passkey.code !== code) {
        showPasskey(stage, code);
      }
    } else if (S.passkey) {
      hidePasskey();
    }
    if (!reason || st.connected || reason === "passkey_required") return;
    const retry = live.will_retry !== false;
    if (reason === "stream_replaced") explainReplaced(retry);
    else if (live.last_error === "temporary_ban" && !LOGOUT_TEXT[reason]) {
      explainBan(reason, live.retry_at || null);
    } else if (live.last_error === "connect_failure" && !LOGOUT_TEXT[reason]) {
      explainRefusal(reason, retry);
    } else if (!st.linked && (LOGOUT_TEXT[reason] || CODE.test(reason))) {
      explainLogout(reason);
    }
  }
  function showPasskey(stage, code) {
    S.passkey = { stage, code: code || null };
    app.dataset.passkey = stage;
    const confirm = stage === "confirmation";
    $("passkey-request").hidden = confirm;
    $("passkey-confirm").hidden = !confirm;
    $("passkey-code").textContent = code || "";
    $("passkey-code-box").hidden = !(confirm && code);
    $("passkey").hidden = false;
    trace(`passkey:${stage}`);
  }
  function hidePasskey() {
    if (!S.passkey) return;
    S.passkey = null;
    delete app.dataset.passkey;
    $("passkey").hidden = true;
    trace("passkey:hidden");
  }

  // ---- pairing code ------------------------------------------------------------------
  function showCode(c) {
    if (!c || !c.code) return;
    S.code = c;
    try { sessionStorage.setItem(`salon.code.${company}`, JSON.stringify(c)); } catch (e) { /* private mode */ }
    $("code").textContent = c.display;
    $("code-box").hidden = false;
    $("code-error").hidden = true;
    clearInterval(S.codeTimer);
    S.codeTimer = setInterval(renderCodeTtl, 1000);
    renderCodeTtl();
  }
  function renderCodeTtl() {
    if (!S.code || !S.code.expires_at) return;
    const left = Math.max(0, Math.round((Date.parse(S.code.expires_at) - Date.now()) / 1000));
    if (left <= 0) {
      clearInterval(S.codeTimer);
      $("code-box").hidden = true;
      S.code = null;
      codeError("codeExpired");
      return;
    }
    const mm = Math.floor(left / 60), ss = String(left % 60).padStart(2, "0");
    $("code-ttl").textContent = t("codeValid", { t: `${mm}:${ss}` });
  }
  function codeError(key, vars) {
    const el = $("code-error");
    el.textContent = t(key, vars);
    el.dataset.key = key;
    el.hidden = false;
  }
  async function requestCode(ev) {
    ev.preventDefault();
    const phone = $("phone").value.trim();
    const digits = phone.replace(/[\s().+-]/g, "");
    if (!/^[1-9][0-9]{7,14}$/.test(digits)) { codeError("badPhone"); return; }
    $("get-code").disabled = true;
    try {
      const resp = await api("/pairing-code", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ phone }),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.ok) { showCode(body); return; }
      const code = body.error && body.error.code;
      if (resp.status === 422) codeError("badPhone");
      else if (code === "pairing_code_pending") codeError("codePending");
      else if (code === "already_linked") codeError("alreadyLinked");
      else if (resp.status === 429) codeError("rateLimited", { s: resp.headers.get("Retry-After") || "60" });
      else if (resp.status === 503) codeError("noWorker");
      else if (resp.status !== 401 && resp.status !== 403) codeError("failed");
    } catch (e) {
      codeError("failed");
    } finally {
      $("get-code").disabled = false;
    }
  }

  // ---- live updates: WebSocket with backoff, polling as the fallback -----------------
  function connect() {
    if (S.closed) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}/v1/sessions/${encodeURIComponent(company)}/ws`;
    let ws;
    try {
      ws = new WebSocket(url, ["salon.v1", `bearer.${S.token}`]);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    ws.onopen = () => {
      S.attempts = 0;
      S.lastMessageAt = Date.now();
      trace("ws:open");
      setConn("live");
      stopPolling();
    };
    ws.onmessage = (m) => {
      S.lastMessageAt = Date.now();
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (msg.kind === "snapshot") {
        S.heartbeatS = msg.heartbeat_s || S.heartbeatS;
        applyState(msg.state, "snapshot");
      } else if (msg.kind === "event") {
        applyEvent(msg.event);
      }
    };
    ws.onclose = () => {
      if (S.ws !== ws) return;
      S.ws = null;
      trace("ws:closed");
      if (!S.closed) scheduleReconnect();
    };
  }
  function scheduleReconnect() {
    clearTimeout(S.reconnectTimer);
    S.attempts += 1;
    const base = Math.min(30, 2 ** Math.min(S.attempts - 1, 5));
    const delay = base * (0.5 + Math.random() / 2) * 1000;
    setConn(S.attempts >= 2 ? "polling" : "reconnecting");
    if (S.attempts >= 2) startPolling();
    S.reconnectTimer = setTimeout(connect, delay);
  }
  function startPolling() {
    if (S.pollTimer || S.closed) return;
    trace("poll:start");
    const poll = async () => {
      try {
        const resp = await api("");
        if (resp.ok) applyState(await resp.json(), "poll");
      } catch (e) { /* offline: try again at the next tick */ }
    };
    poll();
    S.pollTimer = setInterval(poll, 3000);
  }
  function stopPolling() {
    if (!S.pollTimer) return;
    clearInterval(S.pollTimer);
    S.pollTimer = null;
    trace("poll:stop");
  }
  function watchdog() {  // no heartbeat for a while: the socket is dead without knowing it
    if (S.ws && S.ws.readyState === WebSocket.OPEN
        && Date.now() - S.lastMessageAt > S.heartbeatS * 2500) {
      trace("ws:stale");
      S.ws.close();
    }
  }

  // ---- start -------------------------------------------------------------------------
  function readToken() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = `salon.token.${company}`;
    let token = hash.get("token");
    if (token) {
      try { sessionStorage.setItem(key, token); } catch (e) { /* private mode */ }
      history.replaceState(null, "", location.pathname + location.search);  // keep it out of view
    } else {
      try { token = sessionStorage.getItem(key); } catch (e) { token = null; }
    }
    return token;
  }
  function start() {
    S.lang = pickLang();
    document.querySelectorAll("[data-lang]").forEach((b) => b.addEventListener("click", () => {
      S.lang = b.dataset.lang;
      try { localStorage.setItem("salon.lang", S.lang); } catch (e) { /* ignore */ }
      applyLang();
    }));
    $("to-code").addEventListener("click", () => setMode("code"));
    $("to-qr").addEventListener("click", () => setMode("qr"));
    $("phone-form").addEventListener("submit", requestCode);
    applyLang();
    $("salon").textContent = company;
    S.token = readToken();
    if (!S.token) { fail("errNoToken"); return; }
    try {
      const saved = JSON.parse(sessionStorage.getItem(`salon.code.${company}`) || "null");
      if (saved && Date.parse(saved.expires_at) > Date.now()) S.code = saved;
    } catch (e) { /* ignore */ }
    connect();
    setInterval(watchdog, 1000);
  }
  start();
})();
