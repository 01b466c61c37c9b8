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
      brand: "Salon admin",
      loading: "Loading…",
      how1: "Open WhatsApp on the salon's phone.",
      how1here: "Open WhatsApp on this phone (the salon's).",
      how2: "Go to Settings → Linked devices → Link a device.",
      how3qr: "Point the phone at this QR code.",
      how3code: "Tap “Link with phone number instead” and enter the code below.",
      qrWait: "Waiting for the QR code…",
      qrNote: "The code refreshes by itself.",
      toCode: "Link with phone number instead",
      toQr: "Link with a QR code instead",
      phoneLabel: "Salon's phone number",
      phoneHint: "Country code first, for example {ex}.",
      phoneHintRegion: "For example {ex}. A number of {country} may also be written the local way; another country's starts with + and its code.",
      getCode: "Get code",
      codeFor: "Code for",
      codeIntro: "On the phone tap “Link with phone number instead” and enter:",
      codeValid: "Valid for {t}",
      codeExpired: "The code has expired. Request a new one.",
      wrongNumber: "Wrong number? Enter another one",
      linkedWait: "The phone is linked. Connecting to WhatsApp…",
      linkedStopped: "The phone is linked, but WhatsApp is not connected: see the message above.",
      doneTitle: "Done",
      doneText: "WhatsApp is connected. You can close this page.",
      donePhone: "Linked number:",
      expiredTitle: "This code expired",
      expiredText: "The time to link the phone ran out. Get a new one to continue.",
      renew: "Get a new code",
      errTitle: "This link does not work",
      errUnknownTitle: "This link is not valid any more",
      errUnknown: "Ask for a new one.",
      errNoToken: "The link is incomplete. Open the full link you received.",
      errExpired: "The link has expired or is not valid. Ask for a new link.",
      errForbidden: "This link belongs to another salon.",
      connLive: "Live",
      connReconnecting: "Connection lost, reconnecting…",
      connPolling: "Connection lost, checking every few seconds…",
      connConnecting: "Connecting…",
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
      badPhone: "Check the number: country code first, 8 to 15 digits, for example {ex}.",
      badPhoneRegion: "Check the number, for example {ex}.",
      codePending: "A code for another number is still valid. Cancel it to get one for this number.",
      alreadyLinked: "This salon's phone is already linked.",
      rateLimited: "Too many requests. Try again in {s} s.",
      noWorker: "The service is starting. Try again in a minute.",
      failed: "Could not get a code. Try again.",
      cancelFailed: "Could not cancel the code. Try again.",
      cancelOther: "Cancel that code",
    },
    ru: {
      title: "Подключение WhatsApp",
      brand: "Салон-админ",
      loading: "Загрузка…",
      how1: "Откройте WhatsApp на телефоне салона.",
      how1here: "Откройте WhatsApp на этом телефоне (телефоне салона).",
      how2: "Откройте Настройки → Связанные устройства → Привязка устройства.",
      how3qr: "Наведите камеру телефона на этот QR-код.",
      how3code: "Нажмите «Связать по номеру телефона» и введите код ниже.",
      qrWait: "Ждём QR-код…",
      qrNote: "Код обновляется сам.",
      toCode: "Связать по номеру телефона",
      toQr: "Привязать по QR-коду",
      phoneLabel: "Номер телефона салона",
      phoneHint: "Сначала код страны, например {ex}.",
      phoneHintRegion: "Например, {ex}. Номер из страны «{country}» можно записать и в местном формате; номер другой страны — с + и её кодом.",
      getCode: "Получить код",
      codeFor: "Код для номера",
      codeIntro: "На телефоне нажмите «Связать по номеру телефона» и введите:",
      codeValid: "Действует ещё {t}",
      codeExpired: "Срок действия кода истёк. Запросите новый.",
      wrongNumber: "Не тот номер? Ввести другой",
      linkedWait: "Телефон привязан. Подключаемся к WhatsApp…",
      linkedStopped: "Телефон привязан, но WhatsApp не подключён: см. сообщение выше.",
      doneTitle: "Готово",
      doneText: "WhatsApp подключён. Страницу можно закрыть.",
      donePhone: "Привязан номер:",
      expiredTitle: "Срок действия кода истёк",
      expiredText: "Время на привязку телефона вышло. Получите новый код, чтобы продолжить.",
      renew: "Получить новый код",
      errTitle: "Ссылка не работает",
      errUnknownTitle: "Эта ссылка больше не действует",
      errUnknown: "Попросите прислать новую.",
      errNoToken: "Ссылка неполная. Откройте ссылку целиком.",
      errExpired: "Срок действия ссылки истёк или она неверна. Запросите новую.",
      errForbidden: "Эта ссылка принадлежит другому салону.",
      connLive: "На связи",
      connReconnecting: "Связь потеряна, переподключаемся…",
      connPolling: "Связь потеряна, проверяем каждые несколько секунд…",
      connConnecting: "Подключаемся…",
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
      badPhone: "Проверьте номер: сначала код страны, от 8 до 15 цифр, например {ex}.",
      badPhoneRegion: "Проверьте номер, например {ex}.",
      codePending: "Код для другого номера ещё действует. Отмените его, чтобы получить код для этого номера.",
      alreadyLinked: "Телефон салона уже привязан.",
      rateLimited: "Слишком много запросов. Повторите через {s} с.",
      noWorker: "Сервис запускается. Повторите через минуту.",
      failed: "Не удалось получить код. Попробуйте ещё раз.",
      cancelFailed: "Не удалось отменить код. Попробуйте ещё раз.",
      cancelOther: "Отменить тот код",
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
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return (el && el.content) || "";
  };
  // filled in by the server (routes/page.py): the canonical company id ("" for a malformed
  // link) and the phone hints of the configured default region ("" = international only)
  const company = meta("salon-company");
  const REGION = meta("salon-phone-region");
  const EXAMPLE = meta("salon-phone-example") || "+7 912 345-67-89";
  const FETCH_TIMEOUT_MS = 10000;  // a request to a server that does not answer is given up
  const OPEN_TIMEOUT_MS = 10000;  // likewise a WebSocket that never opens
  const EXISTENCE_CHECK_MS = 15000;  // while nothing shows that the salon exists
  const S = {
    lang: "en", token: null, step: "loading", mode: "qr", lead: "qr", linked: false,
    connected: false, ws: null, attempts: 0, reconnectTimer: null, pollTimer: null,
    polling: false, lastMessageAt: 0, heartbeatS: 15, qrUrl: null, qrLoading: false,
    qrAgain: false, qrShown: false, code: null, codeTimer: null, codeErr: null, closed: false,
    trace: [], banner: null, passkey: null, willReconnect: true, banUntil: null, name: null,
    phone: null, failure: null, existenceTimer: null,
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
    renderTitle();
    renderPhoneHint();
    renderConn();
    renderCodeTtl();
    renderCodeError();
    renderBanner();
    renderFailure();
  }

  // ---- phones: shown as typed back, and masked once linked ----------------------------
  // calling codes of two digits (one: 1 and 7; every other: three), enough to group a number
  const CC2 = new Set(("20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 "
    + "56 57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98").split(" "));
  function formatPhone(digits, masked) {  // "+7 968 648 44 88", masked "+7 ••• ••• 44 88"
    if (!/^[1-9][0-9]{5,14}$/.test(digits || "")) return "";
    const ccLen = "17".includes(digits[0]) ? 1 : CC2.has(digits.slice(0, 2)) ? 2 : 3;
    const rest = digits.slice(ccLen);
    const head = rest.slice(0, -4), tail = rest.slice(-4);
    const parts = [];
    for (let i = 0; i < head.length; i += 3) parts.push(head.slice(i, i + 3));
    parts.push(tail.slice(0, 2), tail.slice(2));
    const shown = parts.filter(Boolean).map((p, i, all) => (
      masked && i < all.length - 2 ? "•".repeat(p.length) : p));
    return `+${digits.slice(0, ccLen)} ${shown.join(" ")}`;
  }
  function phoneOfJid(jid) {  // "79686484488:7@s.whatsapp.net" → "79686484488" (never a LID)
    const m = /^([0-9]{6,15})(?::[0-9]+)?@s\.whatsapp\.net$/.exec(jid || "");
    return m ? m[1] : null;
  }
  function regionName(code) {
    try { return new Intl.DisplayNames([S.lang], { type: "region" }).of(code) || code; } catch (e) { return code; }
  }
  // the example number as text that never breaks across lines (no-break spaces and hyphens)
  const example = () => EXAMPLE.replace(/ /g, "\u00a0").replace(/-/g, "\u2011");
  function renderPhoneHint() {
    const ex = example();
    $("phone-hint").textContent = REGION
      ? t("phoneHintRegion", { ex, country: regionName(REGION) })
      : t("phoneHint", { ex });
  }

  // ---- views -----------------------------------------------------------------------
  function setStep(step) {
    if (S.step === step) return;
    S.step = step;
    app.dataset.step = step;
    for (const s of ["loading", "link", "linked", "done", "expired", "error"]) {
      $(`step-${s}`).hidden = s !== step;
    }
    if (step !== "link") hidePasskey();
    trace(`step:${step}`);
  }
  function renderTitle() {
    document.title = S.name ? `${t("title")} — ${S.name}` : t("title");
    $("salon").textContent = S.name || "";
    $("salon").hidden = !S.name;
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
  // a phone cannot scan its own screen: on a small or touch-first screen the pairing code
  // leads, on a desktop the QR; the other path is one tap away on both
  function leadMode() {
    const m = (q) => !!(window.matchMedia && window.matchMedia(q).matches);
    const phoneSized = m("(max-width: 640px)");
    const touchFirst = m("(pointer: coarse)") || (navigator.maxTouchPoints > 0 && m("(hover: none)"));
    return phoneSized || touchFirst ? "code" : "qr";
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
  // the page stops here: nothing is checked any more, so the label says nothing either
  function fail(key, titleKey) {
    if (S.closed && S.failure) return;
    S.closed = true;
    S.failure = { key, title: titleKey || "errTitle" };
    trace(`fail:${key}`);
    renderFailure();
    setStep("error");
    banner(null);
    stopPolling();
    clearTimeout(S.reconnectTimer);
    clearInterval(S.existenceTimer);
    clearInterval(S.codeTimer);
    setConn("off");
    const ws = S.ws;
    S.ws = null;
    if (ws) { ws.onclose = null; ws.close(); }
  }
  function unknownSalon() {  // the salon is gone (or never was): its name goes too
    S.name = null;
    renderTitle();
    fail("errUnknown", "errUnknownTitle");
  }
  function renderFailure() {
    if (!S.failure) return;
    const title = $("error-title");
    title.dataset.i18n = S.failure.title;
    title.textContent = t(S.failure.title);
    $("error-text").textContent = t(S.failure.key);
  }
  function renderConn() {
    const key = {
      live: "connLive", reconnecting: "connReconnecting", polling: "connPolling",
      connecting: "connConnecting",
    }[app.dataset.conn];
    $("conn").textContent = key ? t(key) : "";
  }
  function setConn(state) {
    if (app.dataset.conn !== state) trace(`conn:${state}`);
    app.dataset.conn = state;
    renderConn();
  }

  // ---- HTTP ------------------------------------------------------------------------
  async function api(path, options) {
    const opts = Object.assign({ cache: "no-store" }, options || {});
    opts.headers = Object.assign({ Authorization: `Bearer ${S.token}` }, opts.headers || {});
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    opts.signal = abort.signal;
    try {
      const resp = await fetch(`/v1/sessions/${encodeURIComponent(company)}${path}`, opts);
      if (resp.status === 401) fail("errExpired");
      if (resp.status === 403) fail("errForbidden");
      return resp;
    } finally {
      clearTimeout(timer);
    }
  }
  // what a refused call says, the same for every button; `say(key, vars)` shows it (401 and
  // 403 stopped the page already, in `api`)
  function refused(resp, code, say, otherwise) {
    if (code === "already_linked") say("alreadyLinked");
    else if (resp.status === 429) say("rateLimited", { s: resp.headers.get("Retry-After") || "60" });
    else if (resp.status === 503) say("noWorker");
    else if (resp.status === 404 && code === "not_found") unknownSalon();
    else if (resp.status !== 401 && resp.status !== 403) say(otherwise);
  }
  async function errorCode(resp) {
    const body = await resp.json().catch(() => ({}));
    return (body && body.error && body.error.code) || null;
  }
  // The salon's name and whether it exists at all (the WebSocket's snapshot has neither):
  // on load, then while nothing else shows the salon is there; 404 is a link for a salon
  // that is gone (or never was).
  async function loadSession() {
    if (S.closed) return;
    let resp;
    try { resp = await api(""); } catch (e) { return; }  // offline: asked again later
    if (resp.status === 404) { trace("session:unknown"); unknownSalon(); return; }
    if (!resp.ok) return;
    const st = await resp.json().catch(() => null);
    if (st) learn(st);
  }
  function learn(st) {
    const name = (st.spec && st.spec.display_name) || null;
    if (name !== S.name) { S.name = name; renderTitle(); }
    if (st.phone) S.phone = st.phone;
  }
  function checkExistence() {
    if (S.closed || S.qrShown || S.code || S.linked || S.connected) return;
    loadSession();
  }
  async function loadQr() {
    if (S.linked || S.connected || S.mode !== "qr" || S.closed || !S.token) return;
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
        if (S.linked || S.connected || S.step !== "link") return;
        img.hidden = false;
        img.alt = "QR";
        $("qr-wait").hidden = true;
        S.qrShown = true;
        img.dataset.shownAt = String(Date.now());
        trace("qr:shown");
      } else if (resp.status === 409) {
        if (await errorCode(resp) === "link_expired") showExpired();  // ran out meanwhile
        else { S.linked = true; setStep("linked"); }
      } else if (resp.status === 404) {
        hideQr();
      }
    } catch (e) {
      // the network is down: the WebSocket reconnect or the polling brings the next QR
    } finally {
      S.qrLoading = false;
      if (S.qrAgain) { S.qrAgain = false; loadQr(); }
    }
  }
  function hideQr() {
    S.qrShown = false;
    $("qr").hidden = true;
    $("qr-wait").hidden = false;
  }

  // ---- state -----------------------------------------------------------------------
  function applyState(st, source) {
    if (S.closed) return;
    trace(`${source}:${st.phase || "unknown"}`);
    if (st.phone) S.phone = st.phone;
    if (st.connected) { done(); return; }  // the worker's live state: the socket is open
    const wasLinked = S.linked || S.connected;
    S.connected = false;
    S.linked = !!st.linked;
    if (S.linked) { setStep("linked"); setReconnecting(true); explainState(st); return; }
    if (wasLinked) forgetLink();  // unlinked since the page last heard: explained below
    if (st.phase === "LinkExpired") { showExpired(); explainState(st); return; }
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
    clearCode();
    const shown = formatPhone(S.phone, true);
    $("done-phone").textContent = shown;
    $("done-phone-line").hidden = !shown;
    setStep("done");
  }
  // the device is gone (a logout, seen live or in a later state): back to linking, with
  // nothing of the old link left on the screen
  function forgetLink() {
    S.linked = false;
    S.connected = false;
    S.phone = null;
    clearCode();
    hideQr();
    hidePasskey();
  }
  function showExpired() {
    clearCode();
    hideQr();
    hidePasskey();
    $("renew-error").hidden = true;
    setStep("expired");
  }
  function applyEvent(ev) {
    if (S.closed) return;
    trace(`event:${ev.type}`);
    const d = ev.data || {};
    switch (ev.type) {
      case "qr":
        if (!S.linked && !S.connected) { if (S.step !== "link") setStep("link"); loadQr(); }
        break;
      case "pairing_code":
        if (S.step !== "link" && !S.linked) setStep("link");
        if (S.mode !== "code") setMode("code");
        showCode({
          code: d.code, display: `${d.code.slice(0, 4)}-${d.code.slice(4)}`,
          expires_at: d.expires_at, phone: d.phone || null,
        });
        break;
      case "linked":  // WhatsApp accepted the device; not connected yet
        S.linked = true;
        if (d.phone) S.phone = d.phone;
        clearCode();
        hidePasskey();
        if (!S.connected) setStep("linked");
        break;
      case "connected":
        S.phone = S.phone || phoneOfJid(d.jid);
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
        forgetLink();
        setStep("link");
        explainLogout(d.reason);
        break;
      case "link_expired":
        if (!S.linked && !S.connected) showExpired();
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
  // c: {code, display, expires_at, phone (E.164 digits)}; the number it belongs to is
  // shown with it, and "wrong number?" cancels it
  function showCode(c) {
    if (!c || !c.code) return;
    S.code = c;
    try { sessionStorage.setItem(`salon.code.${company}`, JSON.stringify(c)); } catch (e) { /* private mode */ }
    $("code").textContent = c.display;
    const phone = formatPhone(c.phone, false);
    $("code-phone").textContent = phone;
    $("code-phone").parentElement.hidden = !phone;
    $("code-box").hidden = false;
    $("phone-form").hidden = true;
    codeError(null);
    clearInterval(S.codeTimer);
    S.codeTimer = setInterval(renderCodeTtl, 1000);
    renderCodeTtl();
    trace("code:shown");
  }
  function clearCode() {
    clearInterval(S.codeTimer);
    S.code = null;
    try { sessionStorage.removeItem(`salon.code.${company}`); } catch (e) { /* private mode */ }
    $("code-box").hidden = true;
    $("phone-form").hidden = false;
  }
  function renderCodeTtl() {
    if (!S.code || !S.code.expires_at) return;
    const left = Math.max(0, Math.round((Date.parse(S.code.expires_at) - Date.now()) / 1000));
    if (left <= 0) {
      clearCode();
      codeError("codeExpired");
      return;
    }
    const mm = Math.floor(left / 60), ss = String(left % 60).padStart(2, "0");
    $("code-ttl").textContent = t("codeValid", { t: `${mm}:${ss}` });
  }
  function codeError(key, vars, canCancel) {
    S.codeErr = key ? { key, vars: vars || {}, canCancel: !!canCancel } : null;
    renderCodeError();
  }
  function renderCodeError() {
    const el = $("code-error");
    const e = S.codeErr;
    $("cancel-other").hidden = !(e && e.canCancel);
    if (!e) { el.hidden = true; el.textContent = ""; delete el.dataset.key; return; }
    el.textContent = t(e.key, e.vars);
    el.dataset.key = e.key;
    el.hidden = false;
  }
  function badPhone() {
    codeError(REGION ? "badPhoneRegion" : "badPhone", { ex: example });
  }
  async function requestCode(ev) {
    ev.preventDefault();
    const phone = $("phone").value.trim();
    const digits = phone.replace(/[\s().+-]/g, "");
    // the server parses it (with the default region's national forms); this only catches
    // what no region would take
    const plausible = REGION ? /^[0-9]{5,17}$/ : /^[1-9][0-9]{7,14}$/;
    if (!plausible.test(digits)) { badPhone(); return; }
    $("get-code").disabled = true;
    try {
      const resp = await api("/pairing-code", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ phone }),
      });
      if (resp.ok) {
        const body = await resp.json();
        showCode(body);
        return;
      }
      const code = await errorCode(resp);
      if (resp.status === 422) badPhone();
      else if (code === "pairing_code_pending") codeError("codePending", {}, true);
      else if (code === "link_expired") showExpired();  // the onboarding ran out meanwhile
      else refused(resp, code, codeError, "failed");
    } catch (e) {
      codeError("failed");
    } finally {
      $("get-code").disabled = false;
    }
  }
  // "Wrong number?": the code ends on the worker (DELETE, idempotent) and the number can
  // be entered again at once
  async function cancelCode(ev) {
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      const resp = await api("/pairing-code", { method: "DELETE" });
      if (resp.ok) {
        trace("code:cancelled");
        clearCode();
        codeError(null);
        const input = $("phone");
        input.focus();
        input.select();
        return;
      }
      refused(resp, await errorCode(resp), codeError, "cancelFailed");
    } catch (e) {
      codeError("cancelFailed");
    } finally {
      button.disabled = false;
    }
  }

  // ---- an onboarding that ran out of time (phase LinkExpired) ---------------------------
  async function renew() {
    const button = $("renew");
    const error = (key, vars) => {
      const el = $("renew-error");
      el.textContent = t(key, vars);
      el.dataset.key = key;
      el.hidden = false;
    };
    button.disabled = true;
    $("renew-error").hidden = true;
    try {
      const resp = await api("/link/renew", { method: "POST" });
      if (resp.ok) {
        trace("link:renewed");
        if (S.step === "expired") { setStep("link"); loadQr(); }
        return;
      }
      const code = await errorCode(resp);
      if (code === "already_linked") { S.linked = true; setStep("linked"); }
      else refused(resp, code, error, "failed");
    } catch (e) {
      error("failed");
    } finally {
      button.disabled = false;
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
    setTimeout(() => { if (ws.readyState === WebSocket.CONNECTING) drop(ws, "ws:open-timeout"); },
      OPEN_TIMEOUT_MS);
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
  // A socket whose server stopped answering: its close handshake would wait for that same
  // silent server (the browser fires `close` only when the TCP connection dies, minutes
  // later), so the page lets it go, says so and reconnects now.
  function drop(ws, why) {
    if (S.ws !== ws) return;
    trace(why);
    S.ws = null;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    try { ws.close(); } catch (e) { /* already closing */ }
    trace("ws:closed");
    if (!S.closed) scheduleReconnect();
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
      if (S.polling || S.closed) return;  // one request at a time, also to a silent server
      S.polling = true;
      try {
        const resp = await api("");
        if (resp.status === 404) { trace("session:unknown"); unknownSalon(); return; }
        if (resp.ok) {
          const st = await resp.json();
          learn(st);
          applyState(st, "poll");
        }
      } catch (e) { /* offline: try again at the next tick */ } finally { S.polling = false; }
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
  // no message (heartbeats come every heartbeat_s) for 2.5 heartbeats: the socket is dead
  // without knowing it
  function watchdog() {
    if (S.ws && S.ws.readyState === WebSocket.OPEN
        && Date.now() - S.lastMessageAt > S.heartbeatS * 2500) {
      drop(S.ws, "ws:stale");
    }
  }

  // ---- start -------------------------------------------------------------------------
  function readToken() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = `salon.token.${company}`;
    let token = hash.get("token");
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);  // keep it out of view
    if (!company) return null;
    if (token) {
      try { sessionStorage.setItem(key, token); } catch (e) { /* private mode */ }
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
    $("cancel-code").addEventListener("click", cancelCode);
    $("cancel-other").addEventListener("click", cancelCode);
    $("renew").addEventListener("click", renew);
    $("phone").placeholder = EXAMPLE;
    S.lead = leadMode();
    app.dataset.lead = S.lead;
    trace(`lead:${S.lead}`);
    setMode(S.lead);
    setConn("connecting");
    applyLang();
    S.token = readToken();
    if (!company) { unknownSalon(); return; }  // a mangled link: the server found no id in it
    if (!S.token) { fail("errNoToken"); return; }
    try {
      const saved = JSON.parse(sessionStorage.getItem(`salon.code.${company}`) || "null");
      if (saved && Date.parse(saved.expires_at) > Date.now()) S.code = saved;
    } catch (e) { /* ignore */ }
    connect();
    loadSession();
    setInterval(watchdog, 1000);
    S.existenceTimer = setInterval(checkExistence, EXISTENCE_CHECK_MS);
  }
  start();
})();
