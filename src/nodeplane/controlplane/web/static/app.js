// nodeplane web UI: GraphQL calls (JSON + session cookie), row menus, dialogs, the deploy
// wizard, rows pushed to the nodes page (2-second polling where that cannot work) and polling
// of the node and executors pages, updating phases and metrics in place. No build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
// An attribute selector for a value that came from the server (ids, roles, field paths).
const byAttr = (name, value) => `[${name}="${CSS.escape(String(value))}"]`;
const POLL_MS = 2000;

class ApiError extends Error {
  constructor(error) {
    super(error.message || "request failed");
    this.code = (error.extensions || {}).code;
    this.field = (error.extensions || {}).field;
  }
}

async function gql(query, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  let body;
  try {
    body = await response.json();
  } catch (_) {
    throw new ApiError({ message: `server answered ${response.status}` });
  }
  if (body.errors && body.errors.length) throw new ApiError(body.errors[0]);
  return body.data;
}

function toast(message, kind = "info") {
  const box = $("#toast");
  if (!box) return;
  box.textContent = message;
  box.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 6000);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// The page's CSP requires Trusted Types for DOM sinks that parse HTML: this policy is the only
// one, and it only ever parses the server's own rendering of the page being shown (into an
// inert document, whose rows then replace the live ones). Nothing else may build DOM from HTML.
const pageHtml = window.trustedTypes
  ? window.trustedTypes.createPolicy("nodeplane-page", { createHTML: (html) => html })
  : { createHTML: (html) => html };

async function fetchOwnPage() {
  const response = await fetch(location.href, { credentials: "same-origin" });
  return new DOMParser().parseFromString(pageHtml.createHTML(await response.text()), "text/html");
}

// ---------- formatting ----------
function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.floor((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
const dash = (v) => (v === null || v === undefined ? "—" : String(v));

// ---------- phase badge and markers ----------
function setBadge(root, phase) {
  const badge = $("[data-phase]", root);
  if (!badge) return;
  const p = phase.toLowerCase();
  if (badge.textContent !== p) {
    badge.textContent = p;
    badge.className = `badge phase-${p}`;
  }
}
function setMarkers(root, node) {
  const box = $("[data-markers]", root);
  if (!box) return;
  box.replaceChildren();
  if (node.pendingChange && !node.deletedAt)
    box.append(el("span", { class: "marker pending", title: `The executor has not applied revision ${node.revision} yet` }, "pending change"));
  if (node.stale)
    box.append(el("span", { class: "marker stale", title: "The executor is offline: this is the last state it reported" }, "stale"));
}
function setMenu(root, node) {
  const menu = $("[data-menu]", root);
  if (!menu) return;
  const deleting = !!node.deletedAt;
  const running = node.desiredState === "RUNNING";
  const canMutate = document.body.dataset.canMutate !== "0";
  const enabled = { START: !deleting && !running, STOP: !deleting && running, RESTART: !deleting && running, DELETE: !deleting };
  for (const b of $$("[data-action]", menu)) b.disabled = !canMutate || !enabled[b.dataset.action];
}

// ---------- menus ----------
function closeMenus(except) {
  for (const m of $$("[data-menu]")) {
    if (m === except) continue;
    $(".menu-list", m).hidden = true;
    $("[data-menu-button]", m).setAttribute("aria-expanded", "false");
  }
}
document.addEventListener("click", (e) => {
  const button = e.target.closest("[data-menu-button]");
  if (button) {
    const menu = button.closest("[data-menu]");
    const list = $(".menu-list", menu);
    const open = list.hidden;
    closeMenus(menu);
    list.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) { const first = $("button:not([disabled])", list); if (first) first.focus(); }
    return;
  }
  if (!e.target.closest(".menu-list")) closeMenus();
});
document.addEventListener("keydown", (e) => {
  const list = e.target.closest && e.target.closest(".menu-list");
  if (e.key === "Escape" && list) {
    const menu = list.closest("[data-menu]");
    closeMenus();
    $("[data-menu-button]", menu).focus();
    return;
  }
  if (list && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
    e.preventDefault();
    const items = $$("button:not([disabled])", list);
    const i = items.indexOf(e.target);
    const next = items[(i + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length];
    if (next) next.focus();
  }
});

// ---------- lifecycle actions and delete ----------
const LIFECYCLE = `mutation($id: UUID!, $action: LifecycleAction!) {
  requestNodeLifecycleAction(nodeId: $id, action: $action) { id phase desiredState revision } }`;
const DELETE = `mutation($id: UUID!, $retain: Boolean!) { deleteNode(nodeId: $id, retainData: $retain) { id phase } }`;

function nodeHolder(target) {
  return target.closest("[data-node-id]") || $("#node-detail");
}

document.addEventListener("click", async (e) => {
  const item = e.target.closest("[data-action]");
  if (!item || item.disabled) return;
  const holder = nodeHolder(item);
  const id = holder.dataset.nodeId;
  const name = holder.dataset.nodeName;
  closeMenus();
  if (item.dataset.action === "DELETE") { openDelete(id, name); return; }
  try {
    const verb = item.dataset.action.toLowerCase();
    await gql(LIFECYCLE, { id, action: item.dataset.action });
    toast(`${verb} requested for ${name}`);
    refreshNow();
  } catch (err) {
    toast(err.message, "error");
  }
});

let lastFocus = null;
function openDelete(id, name) {
  const dialog = $("#delete-dialog");
  lastFocus = document.activeElement;
  dialog.dataset.nodeId = id;
  dialog.dataset.nodeName = name;
  $("[data-delete-name]", dialog).textContent = name;
  $("#delete-confirm", dialog).value = "";
  $("[data-delete-error]", dialog).textContent = "";
  $("[data-delete-submit]", dialog).disabled = true;
  dialog.showModal();
  $("#delete-confirm", dialog).focus();
}
document.addEventListener("input", (e) => {
  if (e.target.id === "delete-confirm") {
    const dialog = $("#delete-dialog");
    $("[data-delete-submit]", dialog).disabled = e.target.value !== dialog.dataset.nodeName;
  }
});
document.addEventListener("submit", async (e) => {
  if (!e.target.matches("[data-delete-form]")) return;
  e.preventDefault();
  const dialog = $("#delete-dialog");
  const form = e.target;
  if (form.confirm.value !== dialog.dataset.nodeName) return;
  const retain = form.retain.value === "keep";
  try {
    await gql(DELETE, { id: dialog.dataset.nodeId, retain });
    dialog.close();
    toast(`deleting ${dialog.dataset.nodeName} (${retain ? "keeping" : "deleting"} data)`);
    refreshNow();
  } catch (err) {
    $("[data-delete-error]", dialog).textContent = err.message;
  }
});
document.addEventListener("click", (e) => {
  const cancel = e.target.closest("[data-dialog-cancel]");
  if (cancel) {
    cancel.closest("dialog").close();
    if (lastFocus) lastFocus.focus();
  }
});

// ---------- copy ----------
document.addEventListener("click", async (e) => {
  const b = e.target.closest("[data-copy]");
  if (!b) return;
  const source = $(b.dataset.copy);
  const text = "value" in source && source.tagName === "INPUT" ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text);
    toast("copied");
  } catch (_) {
    if (source.select) source.select();
    toast("press Ctrl+C to copy");
  }
});

// ---------- polling ----------
let refreshNow = () => {};
function poll(fn) {
  let timer = null;
  let busy = false;
  const tick = async () => {
    clearTimeout(timer);
    if (!busy && !document.hidden) {
      busy = true;
      try { await fn(); } catch (err) { console.warn("poll failed", err); }
      busy = false;
    }
    timer = setTimeout(tick, POLL_MS);
  };
  refreshNow = tick;
  timer = setTimeout(tick, POLL_MS);
}

const NODE_FIELDS = `id name phase desiredState revision observedRevision pendingChange stale
  observed observedAt deletedAt updatedAt`;
// The API's largest page of nodes.
const POLL_FIRST = 200;

// Failed connection attempts in a row after which the page stops waiting for its stream and
// polls instead, as it does where EventSource does not exist.
const STREAM_FAILURES = 5;

function updateNodeRow(row, n) {
  setBadge(row, n.phase);
  setMarkers(row, n);
  setMenu(row, n);
  const procs = (n.observed || {}).processes || [];
  $("[data-height]", row).textContent = procs.length ? dash(procs[0].height) : "—";
  const updated = $("[data-updated]", row);
  updated.dataset.updated = n.updatedAt || "";
  updated.textContent = ago(n.updatedAt);
}

function initNodesPage() {
  const table = $("#nodes-table");
  if (!table) return;
  const filterData = $("#nodes-filter");
  if (!filterData) return; // the page shows an error about its filters: nothing to follow
  const filter = JSON.parse(filterData.textContent);
  const takeOwnPage = async () => {
    const fresh = await fetchOwnPage();
    const body = $("#nodes-table tbody", fresh);
    if (body && !$(".menu-list:not([hidden])", table)) {
      $("tbody", table).replaceWith(body);
      const pager = $("#nodes-pager", fresh);
      if (pager && $("#nodes-pager")) $("#nodes-pager").replaceWith(pager);
    }
  };
  // The page shows one page of its list (pages.py PAGE_SIZES): only when that page is the whole
  // list does a node the page lacks mean one that entered its filters, and does the API's first
  // answer hold the same nodes as the page.
  const wholeList = () => {
    const pager = $("#nodes-pager");
    return !!pager && Number(pager.dataset.total) <= Number(pager.dataset.perPage);
  };
  const rowOf = (id) => $(`tr${byAttr("data-node-id", id)}`, table);
  const pollRows = async () => {
    const rows = $$("tbody tr[data-node-id]", table);
    // One page of a longer list, or one of more rows than one answer of the API (POLL_FIRST),
    // would never match the answer and be taken whole anyway: take it without asking first
    // (a page is at most 500 rows, so this costs the server one bounded page per poll).
    if (!wholeList() || rows.length > POLL_FIRST) return takeOwnPage();
    const data = await gql(`query($f: NodeFilter) { nodes(filter: $f, first: ${POLL_FIRST}) { items { ${NODE_FIELDS} } } }`, { f: filter });
    const items = data.nodes.items;
    const shown = new Set(rows.map((r) => r.dataset.nodeId));
    const same = items.length === rows.length && items.every((n) => shown.has(n.id));
    if (!same) return takeOwnPage(); // a node appeared or went away: the server's rendering
    for (const n of items) {
      const row = rowOf(n.id);
      if (row) updateNodeRow(row, n);
    }
  };
  // "x s ago" of rows the stream has no news of.
  setInterval(() => {
    for (const cell of $$("[data-updated]", table)) if (cell.dataset.updated) cell.textContent = ago(cell.dataset.updated);
  }, 10000);
  if (!window.EventSource) { poll(pollRows); return; }

  // Pushed rows (/nodes/stream, web/live.py): the server sends the rows of changed nodes that
  // match this page's filters, and names changed nodes that do not (`membership`). Only this
  // page knows what it shows, so it takes itself afresh when one it shows is named, or, when it
  // shows its whole list, a row it lacks arrives: rare, unlike the 2 s re-fetch of every row
  // that polling needs.
  let source = null;
  let failures = 0;
  let opened = false;
  let fetching = null;
  let again = false;
  // Rows that arrive while the page is being fetched may be newer than its rendering: they are
  // applied again to the rows that replace the shown ones.
  let arrived = new Map();
  const refetch = async () => {
    if (fetching) { again = true; return fetching; }
    fetching = (async () => {
      do {
        again = false;
        arrived = new Map();
        try { await takeOwnPage(); } catch (err) { console.warn("refresh failed", err); }
        for (const [id, n] of arrived) { const row = rowOf(id); if (row) updateNodeRow(row, n); }
      } while (again);
    })();
    try { await fetching; } finally { fetching = null; }
  };
  const stop = () => { if (source) { source.close(); source = null; } };
  const fallBack = () => { stop(); failures = STREAM_FAILURES; poll(pollRows); };
  const open = () => {
    if (source) return;
    source = new EventSource(`/nodes/stream${location.search}`);
    source.addEventListener("open", () => {
      failures = 0;
      // Whatever changed while the stream was away is not coming: take the page once.
      if (opened) refetch();
      opened = true;
    });
    source.addEventListener("rows", (e) => {
      const data = JSON.parse(e.data);
      let lacking = false;
      for (const n of data.rows) {
        if (fetching) arrived.set(n.id, n);
        const row = rowOf(n.id);
        if (row) updateNodeRow(row, n);
        else lacking = true;
      }
      // A row of another page of the list is not this page's: it is ignored.
      if (lacking && wholeList()) refetch();
    });
    source.addEventListener("membership", (e) => {
      const data = JSON.parse(e.data);
      if (data.all || (data.ids || []).some((id) => rowOf(id))) refetch();
    });
    source.addEventListener("error", () => {
      failures += 1;
      // CLOSED: the server refused the stream (signed out, bad filters); else it reconnects.
      if (!source || source.readyState === EventSource.CLOSED || failures >= STREAM_FAILURES) fallBack();
    });
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { stop(); return; }
    if (source || failures >= STREAM_FAILURES) return;
    opened = true; // the page may be behind: take it once the stream is open again
    open();
  });
  refreshNow = () => {}; // an action's result arrives on the stream
  if (!document.hidden) open();
}

function renderNodeMetrics(node) {
  const observed = node.observed || {};
  const procs = observed.processes || [];
  const main = procs.find((p) => p.syncProgress !== null && p.syncProgress !== undefined) || procs[0] || {};
  const metric = (name) => $(`[data-metric="${name}"]`);
  const progress = main.syncProgress;
  metric("sync").textContent = progress === null || progress === undefined ? "—" : `${(progress * 100).toFixed(progress >= 0.9995 ? 0 : 1)} %`;
  metric("sync-bar").style.width = `${Math.round((progress || 0) * 100)}%`;
  metric("height").textContent = main.height === undefined || main.height === null ? "—"
    : `${main.height.toLocaleString()} / ${main.networkHeight === null || main.networkHeight === undefined ? "—" : main.networkHeight.toLocaleString()}`;
  metric("peers").textContent = dash(main.peers);
  const used = main.diskTotalBytes !== null && main.diskTotalBytes !== undefined && main.diskAvailableBytes !== null && main.diskAvailableBytes !== undefined
    ? main.diskTotalBytes - main.diskAvailableBytes : null;
  metric("disk").textContent = used === null ? "—" : `${bytes(used)} of ${bytes(main.diskTotalBytes)}`;
  metric("report").dataset.observedAt = node.observedAt || "";
  metric("report").textContent = ago(node.observedAt);
  const body = $("[data-processes]");
  body.replaceChildren();
  if (!procs.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: 8 }, "No report yet.")));
  const clients = (node.spec || {}).clients || {};
  for (const p of procs) {
    // The version the running client reports, when it does: during an upgrade, what runs now.
    const client = clients[p.role] ? `${clients[p.role].name} ${p.clientVersion || clients[p.role].version}` : "—";
    body.append(el("tr", { "data-role": p.role },
      el("td", {}, p.role), el("td", {}, client),
      el("td", {}, el("span", { class: `badge phase-${p.status}` }, p.status)),
      el("td", {}, dash(p.pid)), el("td", {}, dash(p.height)), el("td", {}, dash(p.peers)),
      el("td", {}, bytes(p.memoryBytes)), el("td", { class: "muted" }, p.message || "")));
  }
}

function initNodePage() {
  const head = $("#node-detail");
  if (!head) return;
  const initial = JSON.parse($("#node-data").textContent);
  let spec = initial.spec;
  const current = { revision: initial.revision };
  renderNodeMetrics({ ...initial, spec });
  poll(async () => {
    const data = await gql(`query($id: UUID!) { node(id: $id) { ${NODE_FIELDS} spec } }`, { id: head.dataset.nodeId });
    const n = data.node;
    if (!n) {
      setBadge(head, "deleted");
      $("[data-metric=report]").textContent = "node deleted";
      for (const b of $$("[data-action]", head)) b.disabled = true;
      return;
    }
    spec = n.spec;
    current.revision = n.revision;
    showPending(head, n);
    setBadge(head, n.phase);
    setMarkers(head, n);
    setMenu(head, n);
    $("[data-desired]").textContent = n.desiredState.toLowerCase();
    $("[data-revision]").textContent = n.revision;
    $("[data-observed-revision]").textContent = dash(n.observedRevision);
    renderNodeMetrics(n);
  });
  const form = $("[data-diff-form]");
  if (form) form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("[data-diff-result]");
    try {
      const changes = await revisionDiff(head.dataset.nodeId, Number(form.from.value), Number(form.to.value));
      out.replaceChildren(changes.length
        ? diffTable(changes, `Revision ${form.from.value}`, `Revision ${form.to.value}`)
        : el("p", { class: "muted" }, "No differences."));
    } catch (err) {
      out.replaceChildren(el("p", { class: "field-error" }, err.message));
    }
  });
  initEditDialog(head, () => ({ spec, revision: current.revision }));
  initRollbackDialog(head, () => current.revision);
  showPending(head, initial);
}

const DIFF_QUERY = `query($id: UUID!, $a: Int!, $b: Int!) { nodeRevisionDiff(nodeId: $id, fromRevision: $a, toRevision: $b) { path before after } }`;
const PREVIEW_QUERY = `query($input: UpdateNodeInput!) { nodeUpdatePreview(input: $input) { path before after } }`;
const UPDATE_MUTATION = `mutation($input: UpdateNodeInput!) { updateNode(input: $input) { id revision } }`;
const ROLLBACK_MUTATION = `mutation($id: UUID!, $to: Int!, $x: Int) { rollbackNode(nodeId: $id, toRevision: $to, expectedRevision: $x) { id revision } }`;
// What the edit dialog leaves out: lifecycle fields change through actions, not edits.
const LIFECYCLE_KEYS = ["desiredState", "restartGeneration"];

async function revisionDiff(nodeId, from, to) {
  const data = await gql(DIFF_QUERY, { id: nodeId, a: from, b: to });
  return data.nodeRevisionDiff || [];
}

function changeCount(n) { return `${n} change${n === 1 ? "" : "s"}`; }

// A table of spec changes (path, before, after); every value goes in as text.
function diffTable(changes, beforeLabel, afterLabel) {
  const show = (v) => (v === null || v === undefined ? "—" : JSON.stringify(v));
  const table = el("table", { class: "table compact diff" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Path"), el("th", { scope: "col" }, beforeLabel), el("th", { scope: "col" }, afterLabel))));
  const tbody = el("tbody");
  for (const c of changes) tbody.append(el("tr", {}, el("td", {}, el("code", {}, c.path)), el("td", { class: "del" }, show(c.before)), el("td", { class: "add" }, show(c.after))));
  table.append(tbody);
  return table;
}

function initEditDialog(head, now) {
  const dialog = $("#edit-dialog");
  const open = $("[data-edit-open]", head.parentNode);
  if (!dialog || !open) return;
  const form = $("[data-edit-form]", dialog);
  const review = $("[data-edit-review]", dialog);
  const error = $("[data-edit-error]", dialog);
  const save = $("[data-edit-save]", dialog);
  let base = null; // the revision the dialog edits: saving elsewhere than there is a conflict
  let reviewed = null; // the spec text whose changes are shown
  const parsed = () => {
    try {
      const value = JSON.parse(form.spec.value);
      if (value && typeof value === "object" && !Array.isArray(value)) return value;
    } catch (_) { /* reported below */ }
    throw new Error("the spec is not a JSON object");
  };
  open.addEventListener("click", () => {
    const { spec, revision } = now();
    const editable = Object.fromEntries(Object.entries(spec).filter(([k]) => !LIFECYCLE_KEYS.includes(k)));
    form.spec.value = JSON.stringify(editable, null, 2);
    for (const select of $$("[data-edit-version]", dialog)) {
      const chosen = (spec.clients || {})[select.dataset.editVersion];
      if (chosen) select.value = chosen.version;
    }
    form.cause.value = "";
    base = revision;
    reviewed = null;
    review.replaceChildren();
    error.textContent = "";
    save.disabled = true;
    dialog.showModal();
    form.spec.focus();
  });
  form.spec.addEventListener("input", () => { save.disabled = true; reviewed = null; });
  // A version chosen from what the executor declares is written into the spec text.
  for (const select of $$("[data-edit-version]", dialog)) {
    select.addEventListener("change", () => {
      error.textContent = "";
      try {
        const value = parsed();
        const role = select.dataset.editVersion;
        value.clients = value.clients || {};
        value.clients[role] = { ...(value.clients[role] || {}), version: select.value };
        form.spec.value = JSON.stringify(value, null, 2);
        save.disabled = true;
        reviewed = null;
      } catch (err) {
        error.textContent = err.message;
      }
    });
  }
  $("[data-edit-preview]", dialog).addEventListener("click", async () => {
    error.textContent = "";
    review.replaceChildren();
    save.disabled = true;
    try {
      const text = form.spec.value;
      const data = await gql(PREVIEW_QUERY, { input: { nodeId: head.dataset.nodeId, spec: parsed(), expectedRevision: base } });
      const changes = data.nodeUpdatePreview || [];
      if (!changes.length) { review.append(el("p", { class: "muted" }, "No changes.")); return; }
      review.append(el("p", { class: "diff-count", "data-change-count": changes.length }, changeCount(changes.length)),
        diffTable(changes, `Revision ${base}`, "New"));
      reviewed = text;
      save.disabled = false;
    } catch (err) {
      error.textContent = err.message;
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (reviewed === null || reviewed !== form.spec.value) return;
    save.disabled = true;
    try {
      const input = { nodeId: head.dataset.nodeId, spec: parsed(), expectedRevision: base };
      if (form.cause.value.trim()) input.cause = form.cause.value.trim();
      const data = await gql(UPDATE_MUTATION, { input });
      dialog.close();
      toast(`saved revision ${data.updateNode.revision}`);
      location.reload();
    } catch (err) {
      error.textContent = err.message;
      save.disabled = false;
    }
  });
}

function initRollbackDialog(head, currentRevision) {
  const dialog = $("#rollback-dialog");
  if (!dialog) return;
  const form = $("[data-rollback-form]", dialog);
  const out = $("[data-rollback-diff]", dialog);
  const error = $("[data-rollback-error]", dialog);
  const submit = $("[data-rollback-submit]", dialog);
  let target = null;
  let base = null;
  for (const button of $$("[data-rollback]")) {
    button.addEventListener("click", async () => {
      target = Number(button.dataset.rollback);
      base = currentRevision();
      for (const slot of $$("[data-rollback-to]", dialog)) slot.textContent = target;
      out.replaceChildren(el("p", { class: "muted" }, "Loading the changes…"));
      error.textContent = "";
      submit.disabled = true;
      dialog.showModal();
      try {
        // The desired state and restart generation stay as they are: not part of what changes.
        const changes = (await revisionDiff(head.dataset.nodeId, base, target))
          .filter((c) => !LIFECYCLE_KEYS.includes(c.path));
        out.replaceChildren(el("p", { class: "diff-count", "data-change-count": changes.length }, changeCount(changes.length)),
          diffTable(changes, `Revision ${base} (current)`, `Revision ${target}`));
        submit.disabled = false;
      } catch (err) {
        out.replaceChildren();
        error.textContent = err.message;
      }
    });
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (target === null) return;
    submit.disabled = true;
    try {
      const data = await gql(ROLLBACK_MUTATION, { id: head.dataset.nodeId, to: target, x: base });
      dialog.close();
      toast(`rolled back to revision ${target} (revision ${data.rollbackNode.revision})`);
      location.reload();
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
    }
  });
}

// While the executor has not applied the spec revision: what is changing (the diff between the
// observed and the spec revision) and since when (the spec revision's time).
async function showPending(head, node) {
  const box = $("[data-pending]");
  if (!box) return;
  const inFlight = node.pendingChange && !node.deletedAt && node.observedRevision !== null && node.observedRevision !== undefined
    && node.observedRevision < node.revision;
  if (!inFlight) { box.hidden = true; box.dataset.key = ""; return; }
  const key = `${node.observedRevision}-${node.revision}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  try {
    const data = await gql(`query($id: UUID!, $a: Int!, $b: Int!) { nodeRevisions(nodeId: $id) { revision createdAt }
      nodeRevisionDiff(nodeId: $id, fromRevision: $a, toRevision: $b) { path before after } }`,
    { id: head.dataset.nodeId, a: node.observedRevision, b: node.revision });
    if (box.dataset.key !== key) return;
    const changes = data.nodeRevisionDiff || [];
    const written = (data.nodeRevisions || []).find((r) => r.revision === node.revision);
    $("[data-pending-summary]", box).textContent = `from revision ${node.observedRevision} to ${node.revision}: `
      + `${changeCount(changes.length)}, since ${written ? new Date(written.createdAt).toLocaleString() : "—"}`
      + (written ? ` (${ago(written.createdAt)})` : "");
    $("[data-pending-diff]", box).replaceChildren(diffTable(changes, `Revision ${node.observedRevision} (applied)`, `Revision ${node.revision}`));
    box.hidden = false;
  } catch (_) {
    box.dataset.key = "";
  }
}

function initExecutorsPage() {
  const table = $("#executors-table");
  if (!table) return;
  poll(async () => {
    const data = await gql(`{ executors { id status lastSyncAt nodeCount } }`);
    for (const e of data.executors) {
      const row = $(`tr${byAttr("data-executor-id", e.id)}`, table);
      if (!row) continue;
      const s = e.status.toLowerCase();
      const badge = $("[data-status]", row);
      badge.textContent = s;
      badge.className = `badge status-${s}`;
      $("[data-node-count]", row).textContent = e.nodeCount;
      $("[data-last-sync]", row).textContent = ago(e.lastSyncAt);
    }
    if (data.executors.some((e) => !$(`tr${byAttr("data-executor-id", e.id)}`, table)) && !$("dialog[open]")) {
      const body = $("#executors-table tbody", await fetchOwnPage());
      if (body) $("tbody", table).replaceWith(body);
    }
  });
  const open = $("#connect-open");
  const dialog = $("#connect-dialog");
  if (!open) return;
  open.addEventListener("click", () => {
    lastFocus = open;
    $("#connect-form").hidden = false;
    $("#connect-result").hidden = true;
    dialog.showModal();
    $("#connect-name").focus();
  });
  $("#connect-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("#connect-name").value.trim();
    const error = $("[data-error-for=name]", dialog);
    error.textContent = "";
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(name)) {
      error.textContent = "host name must be a DNS label: lowercase letters, digits and '-'";
      return;
    }
    try {
      const data = await gql(`mutation($n: String!) { createApiKey(name: $n, kind: EXECUTOR) { secret } }`, { n: name });
      const secret = data.createApiKey.secret;
      const url = JSON.parse($("#server-url").textContent);
      $("#connect-secret").value = secret;
      $("#connect-commands").textContent = [
        "pip install nodeplane   # or: pip install <this repository>",
        "mkdir -p /etc/nodeplane",
        `printf '%s\\n' '${secret}' > /etc/nodeplane/agent.key && chmod 600 /etc/nodeplane/agent.key`,
        "cat > /etc/nodeplane/agent.toml <<'TOML'",
        "[agent]",
        `name = "${name}"`,
        'data_dir = "/var/lib/nodeplane"',
        'driver = "auto"',
        "",
        "[control_plane]",
        `url = "${url}"`,
        'api_key_file = "/etc/nodeplane/agent.key"',
        "TOML",
        "nodeplane agent install",
        "nodeplane agent status",
      ].join("\n");
      $("#connect-form").hidden = true;
      $("#connect-result").hidden = false;
      $("#connect-secret").focus();
      $("#connect-secret").select();
    } catch (err) {
      ($(byAttr("data-error-for", err.field || "name"), dialog) || error).textContent = err.message;
    }
  });
  dialog.addEventListener("close", () => { if (!$("#connect-result").hidden) location.reload(); });
}

function initKeysPage() {
  const form = $("#key-form");
  if (form) form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = $("[data-error-for=name]", form);
    error.textContent = "";
    try {
      const data = await gql(`mutation($n: String!, $k: ApiKeyKind!) { createApiKey(name: $n, kind: $k) { secret apiKey { id } } }`,
        { n: form.name.value, k: form.kind.value });
      $("#key-secret").value = data.createApiKey.secret;
      $("#key-created").hidden = false;
      $("#key-secret").focus();
      $("#key-secret").select();
      const body = $("#keys-table tbody", await fetchOwnPage());
      if (body) $("#keys-table tbody").replaceWith(body);
      form.reset();
    } catch (err) {
      const slot = (err.field && $(byAttr("data-error-for", err.field), form)) || error;
      slot.textContent = err.message;
    }
  });
  document.addEventListener("click", async (e) => {
    const b = e.target.closest("[data-revoke]");
    if (!b) return;
    if (!confirm("Revoke this key? Anything using it stops working at once.")) return;
    try {
      await gql(`mutation($id: UUID!) { revokeApiKey(id: $id) { id } }`, { id: b.dataset.revoke });
      location.reload();
    } catch (err) {
      toast(err.message, "error");
    }
  });
}

// ---------- webhooks ----------
const WEBHOOK_FIELDS = `id url enabled`;

function showWebhookSecret(secret) {
  $("#webhook-secret").value = secret;
  $("#webhook-secret-box").hidden = false;
  $("#webhook-secret").focus();
  $("#webhook-secret").select();
}

async function refreshTable(selector) {
  const fresh = $(selector, await fetchOwnPage());
  const current = $(selector);
  if (fresh && current) current.replaceWith(fresh);
}

function initWebhooksPage() {
  if (!$("#webhooks-table")) return;
  const form = $("#webhook-form");
  if (form) form.addEventListener("submit", async (e) => {
    e.preventDefault();
    for (const p of $$("[data-error-for]", form)) p.textContent = "";
    const eventTypes = $$("input[name=eventTypes]:checked", form).map((i) => i.value);
    try {
      const data = await gql(`mutation($input: CreateWebhookEndpointInput!) {
        createWebhookEndpoint(input: $input) { secret endpoint { ${WEBHOOK_FIELDS} } } }`,
        { input: { url: form.url.value, description: form.description.value, eventTypes } });
      showWebhookSecret(data.createWebhookEndpoint.secret);
      await refreshTable("#webhooks-table");
      form.url.value = "";
      form.description.value = "";
    } catch (err) {
      const slot = (err.field && $(byAttr("data-error-for", err.field), form)) || $("[data-error-for=url]", form);
      slot.textContent = err.message;
    }
  });
  document.addEventListener("click", async (e) => {
    const test = e.target.closest("[data-webhook-test]");
    const toggle = e.target.closest("[data-webhook-toggle]");
    const rotate = e.target.closest("[data-webhook-rotate]");
    const remove = e.target.closest("[data-webhook-delete]");
    try {
      if (test) {
        test.disabled = true;
        await gql(`mutation($id: UUID!) { testWebhook(id: $id) { id } }`, { id: test.dataset.webhookTest });
        test.disabled = false;
        toast("Test delivery queued: see Deliveries for each attempt.");
      } else if (toggle) {
        const enabled = toggle.dataset.enabled !== "1";
        await gql(`mutation($input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $input) { id } }`,
          { input: { id: toggle.dataset.webhookToggle, enabled } });
        await refreshTable("#webhooks-table");
      } else if (rotate) {
        if (!confirm("Rotate this endpoint's secret? Deliveries are signed with the new one at once.")) return;
        const data = await gql(`mutation($id: UUID!) { rotateWebhookSecret(id: $id) { secret } }`, { id: rotate.dataset.webhookRotate });
        showWebhookSecret(data.rotateWebhookSecret.secret);
        await refreshTable("#webhooks-table");
      } else if (remove) {
        if (!confirm("Delete this endpoint and its deliveries?")) return;
        await gql(`mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) }`, { id: remove.dataset.webhookDelete });
        await refreshTable("#webhooks-table");
      }
    } catch (err) {
      if (test) test.disabled = false;
      toast(err.message, "error");
    }
  });
}

function initDeliveriesPage() {
  const table = $("#deliveries-table");
  if (!table) return;
  document.addEventListener("click", async (e) => {
    const b = e.target.closest("[data-redeliver]");
    if (!b) return;
    b.disabled = true;
    try {
      await gql(`mutation($id: UUID!) { redeliverWebhook(deliveryId: $id) { id } }`, { id: b.dataset.redeliver });
      toast("Redelivery queued.");
      await refreshTable("#deliveries-table");
    } catch (err) {
      b.disabled = false;
      toast(err.message, "error");
    }
  });
  // While a delivery is pending, its attempts appear as they are made.
  setInterval(async () => {
    if ($("#deliveries-table").dataset.pending !== "1" || document.hidden) return;
    try { await refreshTable("#deliveries-table"); } catch (_) { /* next tick */ }
  }, POLL_MS);
}

// ---------- deploy wizard ----------
const QUANTITY = /^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$/;
const NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

function initDeployPage() {
  const form = $("#deploy");
  if (!form) return;
  const executors = JSON.parse($("#executors-data").textContent);
  const step = (name) => $(`[data-step="${name}"]`, form);
  const fill = (select, values, label) => {
    select.replaceChildren(...values.map((v) => el("option", { value: v }, label ? label(v) : v)));
  };
  const state = () => {
    const executor = executors.find((e) => e.id === form.executor.value);
    const chains = executor ? (executor.capabilities || {}).chains || [] : [];
    const chain = chains.find((c) => c.chain === form.chain.value);
    return { executor, chains, chain };
  };
  const clearErrors = () => { for (const p of $$("[data-error-for]", form)) p.textContent = ""; };
  const showError = (field, message) => {
    const key = field || "_form";
    let slot = $(byAttr("data-error-for", key), form);
    for (let k = key; !slot && k.includes("."); ) { k = k.slice(0, k.lastIndexOf(".")); slot = $(byAttr("data-error-for", k), form); }
    slot = slot || $('[data-error-for="_form"]', form);
    slot.textContent = message;
    const input = slot.closest(".field, .step") && $("input, select, textarea", slot.closest(".field") || slot.closest(".step"));
    if (input) input.setAttribute("aria-invalid", "true");
    return slot;
  };

  function renderRoles() {
    const { chain } = state();
    const box = $("[data-roles]", form);
    const overrides = $("[data-overrides]", form);
    box.replaceChildren();
    overrides.replaceChildren();
    for (const role of (chain && chain.roles) || []) {
      const clientId = `w-client-${role.role}`;
      const versionId = `w-version-${role.role}`;
      const client = el("select", { id: clientId, "data-role-client": role.role });
      const version = el("select", { id: versionId, "data-role-version": role.role });
      if (!role.required) client.append(el("option", { value: "" }, "— none —"));
      for (const c of role.clients || []) client.append(el("option", { value: c.name }, c.name));
      const syncVersions = () => {
        const c = (role.clients || []).find((x) => x.name === client.value);
        fill(version, c ? c.versions : []);
        version.disabled = !c;
        review();
      };
      client.addEventListener("change", syncVersions);
      version.addEventListener("change", review);
      box.append(el("div", { class: "row role" },
        el("div", { class: "field" }, el("label", { for: clientId }, `${role.role} client`), client),
        el("div", { class: "field" }, el("label", { for: versionId }, `${role.role} version`), version)));
      syncVersions();
      const argsId = `w-args-${role.role}`;
      const args = el("textarea", { id: argsId, rows: 3, "data-role-args": role.role, spellcheck: "false", placeholder: "-printtoconsole" });
      const err = el("p", { class: "field-error", "data-error-for": `spec.overrides.args.${role.role}`, role: "alert" });
      args.addEventListener("input", () => { validateArgs(args, err, role); review(); });
      overrides.append(el("div", { class: "field" }, el("label", { for: argsId }, `Extra flags for ${role.role}`), args, err));
    }
    const common = el("p", { class: "field-error", "data-error-for": "spec.overrides", role: "alert" });
    overrides.append(common);
  }

  function flagName(flag) { return flag.replace(/^-+/, "").split("=")[0]; }
  function validateArgs(textarea, slot, role) {
    const client = (role.clients || []).find((c) => c.name === ($(byAttr("data-role-client", role.role), form) || {}).value);
    const managed = new Set(((client && client.managedFlags) || []).map(flagName));
    const problems = [];
    for (const line of textarea.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      if (!line.startsWith("-") || line.replace(/-/g, "") === "") problems.push(`${line}: a flag must start with '-'`);
      else if (managed.has(flagName(line))) problems.push(`${line}: managed by nodeplane, cannot be overridden`);
    }
    slot.textContent = problems.join("; ");
    textarea.setAttribute("aria-invalid", problems.length ? "true" : "false");
    return !problems.length;
  }

  function prefillResources() {
    const { chain } = state();
    const defaults = ((chain && chain.resourceDefaults) || {})[form.network.value] || {};
    form.cpuRequest.value = defaults.cpuRequest || "";
    form.memoryRequest.value = defaults.memoryRequest || "";
    form.storageSize.value = defaults.storageSize || "";
  }

  function spec() {
    const { chain } = state();
    const clients = {};
    const args = {};
    for (const role of (chain && chain.roles) || []) {
      const name = $(byAttr("data-role-client", role.role), form).value;
      if (!name) continue;
      clients[role.role] = { name, version: $(byAttr("data-role-version", role.role), form).value };
      const argsBox = $(byAttr("data-role-args", role.role), form);
      const flags = (argsBox ? argsBox.value : "").split("\n").map((l) => l.trim()).filter(Boolean);
      if (flags.length) args[role.role] = flags;
    }
    const resources = {};
    if (form.cpuRequest.value.trim()) resources.cpuRequest = form.cpuRequest.value.trim();
    if (form.memoryRequest.value.trim()) resources.memoryRequest = form.memoryRequest.value.trim();
    const s = {
      chain: form.chain.value,
      network: form.network.value,
      nodeType: form.nodeType.value,
      clients,
      resources,
      desiredState: form.desiredState.value,
    };
    if (form.storageSize.value.trim()) s.storage = { size: form.storageSize.value.trim() };
    if (Object.keys(args).length) s.overrides = { args };
    return s;
  }
  function review() { $("#w-review").textContent = JSON.stringify(spec(), null, 2); }

  function showFrom(name) {
    const order = ["executor", "chain", "clients", "resources", "overrides", "review"];
    const i = order.indexOf(name);
    order.forEach((s, j) => { step(s).hidden = j > i; });
  }

  form.executor.addEventListener("change", () => {
    clearErrors();
    const { chains } = state();
    if (!form.executor.value) { showFrom("executor"); return; }
    if (!chains.length) { showError("executorId", "this executor has not declared any chain it can run"); showFrom("executor"); return; }
    fill(form.chain, chains.map((c) => c.chain));
    form.chain.dispatchEvent(new Event("change"));
    showFrom("review");
  });
  form.chain.addEventListener("change", () => {
    const { chain } = state();
    fill(form.network, (chain && chain.networks) || []);
    fill(form.nodeType, (chain && chain.nodeTypes) || ["full"]);
    renderRoles();
    prefillResources();
    review();
  });
  form.network.addEventListener("change", () => { prefillResources(); review(); });
  form.nodeType.addEventListener("change", review);
  form.desiredState.addEventListener("change", review);
  for (const input of $$("[data-quantity]", form)) {
    input.addEventListener("input", () => {
      const v = input.value.trim();
      const slot = $("[data-error-for]", input.closest(".field"));
      const bad = v && !QUANTITY.test(v);
      slot.textContent = bad ? "a quantity like 2, 500m, 4Gi or 100Gi" : "";
      input.setAttribute("aria-invalid", bad ? "true" : "false");
      review();
    });
  }
  form.name.addEventListener("input", () => {
    const v = form.name.value;
    const slot = $('[data-error-for="name"]', form);
    const bad = v && (!NAME.test(v) || v.length > 63);
    slot.textContent = bad ? "use lowercase letters, digits and '-' (start and end with a letter or digit)" : "";
    form.name.setAttribute("aria-invalid", bad ? "true" : "false");
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    for (const i of $$("[aria-invalid]", form)) i.setAttribute("aria-invalid", "false");
    const button = $("#w-create");
    button.disabled = true;
    try {
      const data = await gql(`mutation($input: CreateNodeInput!) { createNode(input: $input) { id name } }`,
        { input: { executorId: form.executor.value, name: form.name.value, spec: spec() } });
      location.href = `/nodes/${data.createNode.id}`;
    } catch (err) {
      const slot = showError(err.field, err.message);
      const focusable = slot.closest(".field") && $("input, select, textarea", slot.closest(".field"));
      if (focusable) focusable.focus();
      button.disabled = false;
    }
  });
  showFrom("executor");
  if (executors.length === 1) {
    form.executor.value = executors[0].id;
    form.executor.dispatchEvent(new Event("change"));
  }
}

// ---------- the bell and alert settings ----------
const BELL_MS = 10000;
const BELL_QUERY = `{ openIncidentCount incidents(filter: {state: OPEN}, first: 5) {
  items { id rule severity subjectName nodeId openedAt } } }`;

function renderBell(bell, data) {
  const count = data.openIncidentCount;
  const badge = $("[data-bell-count]", bell);
  badge.textContent = String(count);
  badge.hidden = count === 0;
  $("[data-bell-button]", bell).setAttribute("aria-label", `Incidents: ${count} open`);
  const list = $("[data-bell-list]", bell);
  const items = data.incidents.items.map((i) => el("li", {},
    el("a", { href: i.nodeId ? `/nodes/${i.nodeId}` : "/executors" },
      el("span", { class: `level level-${i.severity === "critical" ? "error" : "warn"}` }, i.rule.toLowerCase()),
      ` ${i.subjectName}`),
    " ", el("span", { class: "muted small" }, ago(i.openedAt))));
  list.replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No open incidents.")]));
}

function initBell() {
  const bell = $("[data-bell]");
  if (!bell) return;
  const button = $("[data-bell-button]", bell);
  const panel = $("[data-bell-panel]", bell);
  const show = (open) => {
    panel.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
  };
  button.addEventListener("click", (e) => { e.stopPropagation(); show(panel.hidden); });
  document.addEventListener("click", (e) => { if (!bell.contains(e.target)) show(false); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !panel.hidden) { show(false); button.focus(); } });
  const refresh = async () => {
    if (document.hidden) return;
    try { renderBell(bell, await gql(BELL_QUERY)); } catch (_) { /* the next tick retries */ }
  };
  setInterval(refresh, BELL_MS);
}

function thresholdOf(row) {
  const input = $("input[name=threshold]", row);
  if (!input || input.value.trim() === "") return null;
  return Number(input.value);
}

async function saveAlertRow(row, mutation, variables) {
  const error = $("[data-error-for=threshold]", row);
  if (error) error.textContent = "";
  try {
    await gql(mutation, variables);
    toast("Alert settings saved");
    const fresh = await fetchOwnPage();
    const table = row.closest("table");
    const replacement = fresh.getElementById(table.id);
    if (replacement) table.replaceWith(replacement);
  } catch (err) {
    if (error && err.field === "threshold") error.textContent = err.message;
    else toast(err.message, "error");
  }
}

function initAlertSettings() {
  document.addEventListener("click", (e) => {
    const orgSave = e.target.closest("[data-save-alert-default]");
    if (orgSave) {
      const row = orgSave.closest("tr");
      saveAlertRow(row,
        `mutation($r: AlertRule!, $e: Boolean!, $t: Float) { setAlertDefault(rule: $r, enabled: $e, threshold: $t) { rule } }`,
        { r: orgSave.dataset.saveAlertDefault, e: $("input[name=enabled]", row).checked, t: thresholdOf(row) });
      return;
    }
    const nodeSave = e.target.closest("[data-save-node-alert]");
    if (nodeSave) {
      const row = nodeSave.closest("tr");
      const choice = $("select[name=enabled]", row).value;
      saveAlertRow(row,
        `mutation($n: UUID!, $r: AlertRule!, $e: Boolean, $t: Float) { setNodeAlertOverride(nodeId: $n, rule: $r, enabled: $e, threshold: $t) { rule } }`,
        { n: $("#node-detail").dataset.nodeId, r: nodeSave.dataset.saveNodeAlert,
          e: choice === "" ? null : choice === "true", t: thresholdOf(row) });
    }
  });
}

// ---------- node page: tabs and the live log ----------
// The log is a Server-Sent Events stream (/nodes/{id}/logs/stream) open only while the Logs tab
// shows: leaving the tab, or the page, ends the session and the executor stops tailing. Lines
// are text (textContent), never markup. At most LOG_KEEP lines stay on the page; while paused,
// at most LOG_KEEP wait, and the rest are counted as dropped.
const LOG_KEEP = 5000;
const LOG_END_MESSAGES = {
  logs_unavailable: "Logs are not available for this executor kind.",
  executor_offline: "The executor is offline; its logs cannot be read now.",
  executor_not_answering: "The executor did not answer; is it running a version with live logs?",
};

function initNodeTabs(onShow) {
  const tabs = $$("[role=tab][data-tab]");
  if (!tabs.length) return;
  const select = (name, focus) => {
    for (const tab of tabs) {
      const on = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
      $(`#${tab.getAttribute("aria-controls")}`).hidden = !on;
      if (on && focus) tab.focus();
    }
    onShow(name);
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      select(tab.dataset.tab, false);
      history.replaceState(null, "", tab.dataset.tab === "overview" ? location.pathname : `#${tab.dataset.tab}`);
    });
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const i = tabs.indexOf(tab) + (e.key === "ArrowRight" ? 1 : -1);
      select(tabs[(i + tabs.length) % tabs.length].dataset.tab, true);
    });
  }
  if (location.hash === "#logs") select("logs", false);
}

function initLogs() {
  const panel = $("[data-logs]");
  if (!panel) return () => {};
  const form = $("[data-logs-form]", panel);
  const box = $("[data-logs-lines]", panel);
  const status = $("[data-logs-status]", panel);
  const pauseButton = $("[data-logs-pause]", panel);
  let source = null;
  let paused = false;
  let held = [];
  let heldDropped = 0;
  let stick = true;  // follow the end until the user scrolls up
  let retry = null;
  let visible = false;

  box.addEventListener("scroll", () => {
    stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  });

  const note = (cls, text) => el("div", { class: cls }, text);
  const append = (nodes) => {
    if (!nodes.length) return;
    box.append(...nodes);
    while (box.childElementCount > LOG_KEEP) box.firstElementChild.remove();
    if (stick) box.scrollTop = box.scrollHeight;
  };
  const render = (items) => {
    const nodes = [];
    for (const item of items) {
      if (item.dropped) nodes.push(note("log-dropped", `… ${item.dropped} lines dropped`));
      for (const [level, text] of item.lines) nodes.push(el("div", { class: `log-line log-${level}`, "data-level": level }, text));
    }
    append(nodes);
  };
  const setPaused = (value) => {
    paused = value;
    pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      const items = held;
      held = [];
      if (heldDropped) items.unshift({ lines: [], dropped: heldDropped });
      heldDropped = 0;
      render(items);
      status.textContent = source ? "Live." : status.textContent;
    }
  };
  const close = () => {
    clearTimeout(retry);
    retry = null;
    if (source) { source.close(); source = null; }
  };
  const wanted = () => new URLSearchParams({ role: form.role.value, level: form.level.value,
    tail: String(Math.max(0, Math.min(1000, Math.floor(Number(form.tail.value)) || 0))) }).toString();
  let current = "";
  const open = (tail) => {
    close();
    current = wanted();
    const params = new URLSearchParams(current);
    if (tail !== undefined) params.set("tail", String(tail));
    status.textContent = "Connecting…";
    const es = new EventSource(`${panel.dataset.stream}?${params}`);
    source = es;
    es.addEventListener("open", () => { if (source === es) status.textContent = paused ? "Paused." : "Live."; });
    es.addEventListener("lines", (e) => {
      if (source !== es) return;
      const item = JSON.parse(e.data);
      if (paused) {
        held.push(item);
        let count = held.reduce((n, h) => n + h.lines.length, 0);
        while (count > LOG_KEEP && held.length) {
          const first = held.shift();
          heldDropped += first.lines.length + (first.dropped || 0);
          count -= first.lines.length;
        }
        status.textContent = `Paused (${count} new lines waiting).`;
      } else {
        render([item]);
        status.textContent = "Live.";
      }
    });
    es.addEventListener("end", (e) => {
      if (source !== es) return;
      const data = JSON.parse(e.data || "{}");
      close();
      const text = data.code ? (LOG_END_MESSAGES[data.code] || data.message || data.code) : "The log ended.";
      status.textContent = text;
      append([note("log-note", text)]);
    });
    es.addEventListener("error", () => {
      if (source !== es) return;
      // The browser would reconnect and replay the tail; instead reconnect once, without a
      // tail, so no line shows twice.
      close();
      status.textContent = "Connection lost; reconnecting…";
      if (visible) retry = setTimeout(() => open(0), 3000);
    });
  };

  // A change that asks for the same stream (a field left without a new value) keeps it.
  form.addEventListener("change", () => { if (visible && wanted() !== current) { box.replaceChildren(); open(); } });
  form.addEventListener("submit", (e) => e.preventDefault());
  pauseButton.addEventListener("click", () => setPaused(!paused));
  $("[data-logs-clear]", panel).addEventListener("click", () => { box.replaceChildren(); held = []; heldDropped = 0; });
  window.addEventListener("pagehide", close);
  return (tab) => {
    visible = tab === "logs";
    if (visible && !source) { box.replaceChildren(); open(); }
    if (!visible) { close(); status.textContent = "Not connected."; }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  initBell();
  initAlertSettings();
  initNodesPage();
  initNodePage();
  initNodeTabs(initLogs());
  initExecutorsPage();
  initKeysPage();
  initWebhooksPage();
  initDeliveriesPage();
  initDeployPage();
  // Tick "x s ago" labels between polls.
  setInterval(() => {
    const report = $("[data-metric=report]");
    if (report && report.dataset.observedAt) report.textContent = ago(report.dataset.observedAt);
  }, 1000);
});
