// reportqa search page. Passage text is always inserted as text nodes, never as HTML.
(function () {
  "use strict";

  const DEBOUNCE_MS = 220;
  const $ = (id) => document.getElementById(id);
  const input = $("q");
  const form = $("search-form");
  const resultsEl = $("results");
  const statusEl = $("status");
  const errorEl = $("error");
  const answerEl = $("answer");
  const answerText = $("answer-text");
  const answerMeta = $("answer-meta");
  const docFilter = $("doc-filter");
  const docSelect = $("doc");
  const MAX_DOCUMENTS = 5000;  // the select lists at most this many (GET /v1/index pages of 1000)

  let timer = null;
  let seq = 0;            // only the newest request may paint
  let controller = null;  // aborts the request it replaces
  let lastShown = null;   // "mode|query" on screen
  let pendingKey = null;  // "mode|query" of the request in flight
  let doc = "";           // the document searches are limited to ("" = all); from the URL or the select
  let lastData = null;    // the response on screen, painted again once document titles are known
  let multiDoc = false;   // the index holds more than one document: show titles and the filter

  function mode() {
    return form.querySelector('input[name="mode"]:checked').value;
  }

  function setMode(m) {
    const radio = form.querySelector(`input[name="mode"][value="${m === "ask" ? "ask" : "search"}"]`);
    radio.checked = true;
    $("go").textContent = m === "ask" ? "Ask" : "Search";
    docFilter.hidden = !multiDoc || m === "ask";  // /v1/ask searches every document
    $("hint").textContent = m === "ask"
      ? "Press Enter to ask. The answer cites the passages it comes from."
      : "Results appear as you type. ↓ ↑ move through them, Enter opens the source.";
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // Text with [start, end) spans marked; every piece goes in as a text node.
  function highlighted(text, spans) {
    const frag = document.createDocumentFragment();
    let pos = 0;
    const sorted = (spans || []).filter((s) => s[0] >= pos && s[1] > s[0]).sort((a, b) => a[0] - b[0]);
    for (const [a, b] of sorted) {
      if (a < pos) continue;
      if (a > pos) frag.append(document.createTextNode(text.slice(pos, a)));
      frag.append(el("mark", {}, text.slice(a, b)));
      pos = b;
    }
    if (pos < text.length) frag.append(document.createTextNode(text.slice(pos)));
    return frag;
  }

  function setStatus(msg, busy) {
    statusEl.textContent = msg || "";
    resultsEl.setAttribute("aria-busy", busy ? "true" : "false");
    document.body.classList.toggle("loading", !!busy);
  }

  function showError(msg) {
    errorEl.textContent = msg;
    errorEl.hidden = !msg;
  }

  function clearResults() {
    resultsEl.replaceChildren();
    answerEl.hidden = true;
    answerText.replaceChildren();
    answerMeta.textContent = "";
  }

  function passageItem(r, label) {
    const c = r.citation;
    const path = (c.heading_path && c.heading_path.length ? c.heading_path : [c.doc_title]).join(" › ");
    const lines = c.line_start === c.line_end ? `line ${c.line_start}` : `lines ${c.line_start}–${c.line_end}`;
    const head = el("div", { class: "passage-head" },
      el("span", { class: "num", "aria-hidden": "true" }, label));
    if (multiDoc) head.append(el("span", { class: "doc", title: c.doc_id }, c.doc_title || c.doc_id));
    head.append(el("span", { class: "path" }, path));
    const body = el("p", { class: "passage-text" });
    body.append(highlighted(r.text, r.highlights));
    const meta = el("div", { class: "passage-meta" });
    if (c.url) {
      meta.append(el("a", { href: c.url, target: "_blank", rel: "noopener noreferrer", class: "source" },
        multiDoc ? "Open the source" : "Open in the report"));
      meta.append(" · ");
    }
    meta.append(el("span", { class: "lines" }, `${c.doc_id} · ${lines}`));
    const li = el("li", {
      class: "result", tabindex: "-1", "data-n": String(r.n || r.rank),
      "aria-label": multiDoc ? `${label} ${c.doc_title || c.doc_id}: ${path}` : `${label} ${path}`,
    }, head, body, meta);
    return li;
  }

  function renderSearch(data) {
    clearResults();
    if (!data.results.length) {
      setStatus("No passages match. Try other words, or ask a question in Ask mode.", false);
      return;
    }
    data.results.forEach((r) => resultsEl.append(passageItem(r, String(r.rank))));
    const n = data.results.length;
    setStatus(`${n} passage${n === 1 ? "" : "s"} · ${Math.round(data.took_ms)} ms`, false);
  }

  function renderAsk(data) {
    clearResults();
    answerEl.hidden = false;
    answerEl.classList.toggle("abstained", !data.answerable);
    if (data.answerable) {
      answerText.append(document.createTextNode(data.answer.text + " "));
      for (const n of data.answer.citations) {
        const btn = el("button", { type: "button", class: "cite", "data-cite": String(n),
          "aria-label": `Go to passage ${n}` }, `[${n}]`);
        btn.addEventListener("click", () => focusPassage(n));
        answerText.append(btn);
      }
      answerMeta.textContent = `Confidence ${Math.round(data.confidence * 100)}% · extracted from the report`;
    } else {
      answerText.textContent = data.answer.text;
      answerMeta.textContent = data.passages.length
        ? "Not in the report. The closest passages are below, in case they help." : "Not in the report.";
    }
    data.passages.forEach((p) => resultsEl.append(passageItem(p, `[${p.n}]`)));
    setStatus(data.answerable ? "Answer found" : "The report does not answer this", false);
  }

  function focusPassage(n) {
    const item = resultsEl.querySelector(`li[data-n="${n}"]`);
    if (!item) return;
    item.classList.add("flash");
    setTimeout(() => item.classList.remove("flash"), 1200);
    item.focus();
    item.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  // how: null (from the URL), "replace" (typing) or "push" (Enter, mode change: a history entry)
  async function run(query, m, how) {
    query = query.trim();
    const d = m === "ask" ? "" : doc;
    const key = `${m}|${d}|${query}`;
    if (how) updateUrl(query, m, how);
    if (!query) {
      seq++;
      pendingKey = null;
      if (controller) controller.abort();
      clearResults();
      showError("");
      setStatus("", false);
      lastShown = key;
      lastData = null;
      return;
    }
    // nothing new to fetch, unless another query is in flight (it would paint over this one)
    if (how !== "push" && (key === pendingKey || (key === lastShown && !pendingKey))) return;
    const mine = ++seq;
    pendingKey = key;
    if (controller) controller.abort();
    controller = new AbortController();
    setStatus(m === "ask" ? "Looking for an answer…" : "Searching…", true);
    showError("");
    try {
      const resp = m === "ask"
        ? await fetch("/v1/ask", {
            method: "POST", signal: controller.signal,
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ question: query, k: 5 }),
          })
        : await fetch(`/v1/search?${new URLSearchParams(
          { q: query, k: "10", mode: "hybrid", ...(d ? { doc_id: d } : {}) })}`, { signal: controller.signal });
      const data = await resp.json().catch(() => ({}));
      if (mine !== seq) return;
      pendingKey = null;
      if (!resp.ok) {
        const why = data.message || (typeof data.detail === "string" ? data.detail : "") || resp.statusText;
        clearResults();
        setStatus("", false);
        showError(resp.status >= 500
          ? `The search service is unavailable right now (${resp.status}). Please try again in a moment.`
          : `That query cannot be searched: ${why}`);
        lastShown = null;
        lastData = null;
        return;
      }
      lastShown = key;
      lastData = { m, data };
      if (m === "ask") renderAsk(data); else renderSearch(data);
      if (data.index_version) showVersion(data.index_version);
    } catch (err) {
      if (err.name === "AbortError" || mine !== seq) return;
      pendingKey = null;
      clearResults();
      setStatus("", false);
      showError("The search service cannot be reached. Check your connection and try again.");
      lastShown = null;
    }
  }

  function showVersion(v) {
    $("index-version").textContent = `Index ${v} · `;
  }

  function updateUrl(query, m, how) {
    const params = new URLSearchParams();
    if (query) params.set("q", query);
    if (m === "ask") params.set("mode", "ask");
    if (doc) params.set("doc", doc);
    const url = params.toString() ? `/?${params}` : "/";
    if (url === location.pathname + location.search) return;
    if (how === "replace") history.replaceState({ q: query, mode: m, doc }, "", url);
    else history.pushState({ q: query, mode: m, doc }, "", url);
  }

  function fromUrl() {
    const p = new URLSearchParams(location.search);
    const q = p.get("q") || "";
    const m = p.get("mode") === "ask" ? "ask" : "search";
    doc = p.get("doc") || "";
    selectDoc(doc);
    input.value = q;
    setMode(m);
    run(q, m, null);
  }

  // typing: debounced, URL replaced (one history entry per committed search, not per key)
  input.addEventListener("input", () => {
    clearTimeout(timer);
    if (mode() === "ask") return;  // asking waits for Enter: answers are for whole questions
    timer = setTimeout(() => run(input.value, mode(), "replace"), DEBOUNCE_MS);
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(timer);
    run(input.value, mode(), "push");
  });

  form.querySelectorAll('input[name="mode"]').forEach((radio) =>
    radio.addEventListener("change", () => {
      setMode(mode());
      if (input.value.trim()) run(input.value, mode(), "push");
      input.focus();
    }));

  // keyboard: ↓/↑ through results, Enter opens the source, Escape back to the box
  document.addEventListener("keydown", (e) => {
    const items = Array.from(resultsEl.querySelectorAll("li.result"));
    const i = items.indexOf(document.activeElement);
    if (e.key === "ArrowDown" && items.length && (document.activeElement === input || i >= 0)) {
      e.preventDefault();
      items[Math.min(i + 1, items.length - 1)].focus();
    } else if (e.key === "ArrowUp" && i >= 0) {
      e.preventDefault();
      if (i === 0) input.focus(); else items[i - 1].focus();
    } else if (e.key === "Enter" && i >= 0) {
      const link = items[i].querySelector("a.source");
      if (link) { e.preventDefault(); link.click(); }
    } else if (e.key === "Escape" && i >= 0) {
      input.focus();
    }
  });

  function selectDoc(id) {
    if (id && !Array.from(docSelect.options).some((o) => o.value === id)) {
      docSelect.append(el("option", { value: id }, id));  // from the URL, before (or without) the list
    }
    docSelect.value = id;
  }

  docSelect.addEventListener("change", () => {
    doc = docSelect.value;
    if (input.value.trim()) run(input.value, mode(), "push"); else updateUrl("", mode(), "push");
  });

  // The documents of the index, for the filter (only shown when there is more than one)
  async function loadDocuments() {
    const docs = [];
    let offset = 0;
    while (offset !== null && docs.length < MAX_DOCUMENTS) {
      const resp = await fetch(`/v1/index?${new URLSearchParams({ offset: String(offset), limit: "1000" })}`);
      if (!resp.ok) return;
      const page = await resp.json();
      docs.push(...page.documents);
      if (page.total <= 1) return;
      offset = page.next_offset;
    }
    multiDoc = true;
    docs.sort((a, b) => (a.title || a.doc_id).localeCompare(b.title || b.doc_id));
    const current = doc;
    docSelect.replaceChildren(el("option", { value: "" }, "All documents"),
      ...docs.map((d) => el("option", { value: d.doc_id, title: d.doc_id },
        d.title && d.title !== d.doc_id ? `${d.title} (${d.doc_id})` : d.doc_id)));
    selectDoc(current);
    setMode(mode());
    // passages already on screen get their document titles
    if (lastData && !pendingKey) (lastData.m === "ask" ? renderAsk : renderSearch)(lastData.data);
  }

  window.addEventListener("popstate", fromUrl);
  fetch("/readyz").then((r) => r.json()).then((d) => d.index_version && showVersion(d.index_version))
    .catch(() => {});
  fromUrl();
  input.focus();
  loadDocuments().catch(() => {});
})();
