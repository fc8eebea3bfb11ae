"use strict";
// tunelab ui: one page, no build step. Every number shown comes from the JSON API.
const $ = (sel) => document.querySelector(sel);
const state = { selected: null, records: [], since: 0, poll: null, chat: [] };

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(body && body.error ? body.error : String(body));
  return body;
}
const post = (path, data) => api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(data) });
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
function showError(el, message) { el.hidden = !message; el.textContent = message || ""; }

// ---- tabs
document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
function showTab(name) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "tab-" + name));
  if (name === "runs" || name === "compare" || name === "try") refreshRuns();
}

// ---- new run
function formData() {
  const f = $("#run-form"), options = {};
  f.querySelectorAll("[data-opt]").forEach((i) => { if (i.value.trim() !== "") options[i.dataset.opt] = i.value.trim(); });
  return { name: f.name.value.trim(), task: f.task.value, model: f.model.value.trim(), train: f.train.value.trim(),
           dev: f.dev.value.trim(), method: f.method.value, method_options: f.method_options.value,
           options, overrides: f.overrides.value };
}
let validateTimer = null, validateSeq = 0;
function scheduleValidate() { clearTimeout(validateTimer); validateTimer = setTimeout(validate, 250); }
async function validate() {
  const seq = ++validateSeq;
  try {
    const r = await post("/api/config", formData());
    if (seq !== validateSeq) return r;
    $("#yaml").textContent = r.yaml;
    showError($("#config-error"), r.error);
    $("#start-btn").disabled = !r.valid;
    $("#run-form").dataset.valid = r.valid ? "yes" : "no";
    return r;
  } catch (e) { showError($("#config-error"), e.message); }
}
$("#run-form").addEventListener("input", scheduleValidate);
$("#run-form").addEventListener("change", scheduleValidate);
$("#run-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const run = await post("/api/runs", formData());
    showError($("#config-error"), "");
    selectRun(run.name);
    showTab("runs");
  } catch (e) { showError($("#config-error"), e.message); }
});
$("#preview-btn").addEventListener("click", async () => {
  $("#preview").textContent = "reading the data...";
  try {
    const r = await post("/api/preview", { ...formData(), n: 3 });
    // data inspect marks trained tokens as [[...]]: shown highlighted
    $("#preview").innerHTML = esc(r.text).replace(/\[\[([\s\S]*?)\]\]/g, '<mark class="trained">$1</mark>');
  } catch (e) { $("#preview").textContent = ""; showError($("#config-error"), e.message); }
});
$("#f-upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  try {
    const r = await api("/api/upload/" + encodeURIComponent(file.name), { method: "PUT", body: file });
    $("#upload-status").textContent = `uploaded ${r.bytes} bytes to ${r.path}`;
    $("#f-train").value = r.path;
    loadOptions();
    scheduleValidate();
  } catch (e) { showError($("#config-error"), e.message); }
});
async function loadOptions() {
  const o = await api("/api/options");
  const fill = (sel, items, keep) => { const el = $(sel), v = el.value; el.innerHTML = items.map((x) => `<option value="${esc(x)}">${esc(x)}</option>`).join(""); if (keep && v) el.value = v; };
  fill("#f-task", o.tasks, true); fill("#f-method", o.methods, true);
  if (!$("#f-method").dataset.init) { $("#f-method").value = "lora"; $("#f-method").dataset.init = "1"; }
  fill("#models", o.models); fill("#datasets", [...o.data, ...o.files]);
}

// ---- runs
async function refreshRuns() {
  const { runs } = await api("/api/runs");
  const rows = runs.map((r) => {
    const pct = r.total_steps ? Math.min(1, r.step / r.total_steps) : 0;
    const buttons = (r.status === "running" ? `<button data-stop="${esc(r.name)}">Stop</button>` : "")
      + (r.status === "interrupted" ? `<button data-resume="${esc(r.name)}">Resume</button>` : "");
    return `<tr class="run-row" data-run="${esc(r.name)}"><td>${esc(r.name)}</td><td class="status-${r.status}">${r.status}</td>`
      + `<td><progress max="1" value="${pct}"></progress> ${r.step}/${r.total_steps ?? "?"}</td>`
      + `<td>${esc(r.task ?? "")}</td><td>${esc(r.method ?? "")}</td><td>${r.last_loss == null ? "" : r.last_loss.toFixed(4)}</td><td>${buttons}</td></tr>`;
  });
  $("#runs-table tbody").innerHTML = rows.join("");
  $("#compare-list").innerHTML = runs.map((r) => `<label class="inline"><input type="checkbox" value="${esc(r.name)}"> ${esc(r.name)} <span class="status-${r.status}">(${r.status})</span></label>`).join("");
  const tryable = runs.filter((r) => r.status === "finished");
  const current = $("#try-run").value;
  $("#try-run").innerHTML = '<option value="">pick a finished run</option>' + tryable.map((r) => `<option value="${esc(r.name)}" data-task="${esc(r.task)}">${esc(r.name)} (${esc(r.task)})</option>`).join("");
  if (current) $("#try-run").value = current;
  return runs;
}
$("#runs-table").addEventListener("click", async (ev) => {
  const t = ev.target;
  try {
    if (t.dataset.stop) { await post(`/api/runs/${encodeURIComponent(t.dataset.stop)}/stop`, {}); return refreshRuns(); }
    if (t.dataset.resume) { await post(`/api/runs/${encodeURIComponent(t.dataset.resume)}/resume`, {}); selectRun(t.dataset.resume); return refreshRuns(); }
  } catch (e) { alert(e.message); return; }
  const row = t.closest("tr.run-row");
  if (row) selectRun(row.dataset.run);
});
function selectRun(name) {
  state.selected = name; state.records = []; state.since = 0;
  $("#run-detail").hidden = false;
  $("#detail-name").textContent = name;
  clearInterval(state.poll);
  pollRun();
  state.poll = setInterval(pollRun, 1000);
}
async function pollRun() {
  const name = state.selected;
  if (!name) return;
  let r;
  try { r = await api(`/api/runs/${encodeURIComponent(name)}?since=${state.since}`); } catch (e) { $("#detail-status").textContent = e.message; return; }
  if (name !== state.selected) return;
  state.records.push(...r.records);
  state.since += r.records.length;
  $("#detail-status").innerHTML = `<span class="status-${r.status}" id="detail-state">${r.status}</span> · step ${r.step} of ${r.total_steps ?? "?"}` + (r.error ? ` · ${esc(r.error)}` : "");
  $("#detail-progress").value = r.total_steps ? Math.min(1, r.step / r.total_steps) : 0;
  $("#detail-eta").textContent = r.eta_s == null ? "" : `ETA ${Math.round(r.eta_s)} s`;
  $("#detail-log").textContent = r.log;
  const train = state.records.filter((x) => "train_loss" in x);
  const dev = state.records.filter((x) => x.split === "dev");
  const metric = r.metric || guessMetric(dev);
  $("#metric-caption").textContent = "dev " + (metric || "metric");
  draw($("#curve-loss"), train.map((x) => [x.step, x.train_loss]));
  draw($("#curve-lr"), train.map((x) => [x.step, x.lr]));
  draw($("#curve-metric"), dev.filter((x) => metric in x).map((x) => [x.step, x[metric]]));
  if (r.final) {
    $("#final").innerHTML = "final dev: " + Object.entries(r.final).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `<b>${esc(k)}</b> <span class="final-value" data-key="${esc(k)}">${v.toFixed(4)}</span>`).join(" · ");
  } else $("#final").textContent = "";
  if (r.status !== "running" && state.poll && r.records.length === 0) { clearInterval(state.poll); state.poll = null; refreshRuns(); }
}
function guessMetric(dev) {
  const keys = dev.length ? Object.keys(dev[dev.length - 1]).filter((k) => !["step", "split", "loss"].includes(k) && typeof dev[dev.length - 1][k] === "number") : [];
  return keys[0];
}
function draw(canvas, points) {
  canvas.dataset.points = String(points.length);
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 40;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  ctx.strokeStyle = "#9aa3b5"; ctx.strokeRect(pad, 10, W - pad - 10, H - pad - 10);
  if (!points.length) { ctx.fillStyle = "#9aa3b5"; ctx.fillText("no data yet", W / 2 - 25, H / 2); return; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-12);
  const X = (x) => pad + (x - x0) / (x1 - x0) * (W - pad - 10), Y = (y) => H - pad - (y - y0) / (y1 - y0 || 1) * (H - pad - 20);
  ctx.fillStyle = "#1d2330"; ctx.font = "11px sans-serif";
  ctx.fillText(y1.toPrecision(3), 2, 18); ctx.fillText(y0.toPrecision(3), 2, H - pad);
  ctx.fillText(String(x0), pad, H - pad + 14); ctx.fillText(String(x1), W - 40, H - pad + 14);
  ctx.strokeStyle = "#2f5bb7"; ctx.lineWidth = 2; ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
  ctx.stroke();
  ctx.fillStyle = "#2f5bb7"; points.forEach(([x, y]) => ctx.fillRect(X(x) - 2, Y(y) - 2, 4, 4));
}

// ---- compare
$("#compare-btn").addEventListener("click", async () => {
  const names = [...document.querySelectorAll("#compare-list input:checked")].map((i) => i.value);
  try {
    const html = await api("/api/compare?" + names.map((n) => "run=" + encodeURIComponent(n)).join("&"));
    showError($("#compare-error"), "");
    $("#compare-frame").srcdoc = html;
  } catch (e) { showError($("#compare-error"), e.message); }
});

// ---- try it
$("#try-run").addEventListener("change", async () => {
  const opt = $("#try-run").selectedOptions[0], task = opt && opt.dataset.task;
  $("#try-encoder").hidden = !(task === "classification" || task === "token_classification");
  $("#try-chat").hidden = task !== "causal_lm";
  $("#answer").innerHTML = ""; state.chat = []; $("#chat-log").innerHTML = "";
  if (task === "causal_lm") {
    const { adapters } = await api("/api/adapters/" + encodeURIComponent(opt.value));
    $("#chat-adapter").innerHTML = adapters.map((a) => `<option>${esc(a)}</option>`).join("") || "<option value=''>(full model)</option>";
  }
});
$("#try-btn").addEventListener("click", async () => {
  showError($("#try-error"), "");
  $("#answer").textContent = "thinking...";
  try {
    const r = await post("/api/predict", { run: $("#try-run").value, text: $("#try-text").value, explain: $("#try-explain").checked });
    $("#answer").innerHTML = r.task === "classification" ? classified(r) : tagged(r);
    if (r.explanations) $("#answer").innerHTML += r.explanations.map(attributions).join("");
  } catch (e) { $("#answer").textContent = ""; showError($("#try-error"), e.message); }
});
function classified(r) {
  return `<div class="label">label: <b id="answer-label">${esc(r.label)}</b> (${(100 * r.probability).toFixed(1)}%)</div>`
    + r.probabilities.map((p) => `<div><span class="bar" style="width:${Math.round(200 * p.probability)}px"></span>${esc(p.label)} <span class="prob">${p.probability.toFixed(4)}</span></div>`).join("");
}
function tagged(r) {
  let out = "", at = 0;
  for (const e of r.entities) {
    out += esc(r.text.slice(at, e.start)) + `<span class="entity" data-type="${esc(e.type)}">${esc(r.text.slice(e.start, e.end))}<sub>${esc(e.type)}</sub></span>`;
    at = e.end;
  }
  return `<div class="tagged">${out + esc(r.text.slice(at))}</div><div>${r.entities.length} entities</div>`;
}
function attributions(e) {
  const scale = Math.max(1e-9, ...e.tokens.map((t) => Math.abs(t.score)));
  return "<div class='attr'>" + e.tokens.map((t) => `<span class="tok" title="${t.score.toFixed(4)}" style="background:rgba(${t.score >= 0 ? "0,160,60" : "210,30,30"},${(0.8 * Math.abs(t.score) / scale).toFixed(3)})">${esc(t.token)}</span>`).join(" ") + "</div>";
}
$("#chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  state.chat.push({ role: "user", content: text });
  const log = $("#chat-log");
  log.insertAdjacentHTML("beforeend", `<div class="msg-user">${esc(text)}</div>`);
  const reply = document.createElement("div"); reply.className = "msg-assistant"; log.appendChild(reply);
  try {
    const res = await fetch("/api/chat", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ run: $("#try-run").value, messages: state.chat, adapter: $("#chat-adapter").value || null }) });
    if (!res.ok) throw new Error((await res.json()).error);
    const reader = res.body.getReader(), dec = new TextDecoder();
    for (;;) { const { done, value } = await reader.read(); if (done) break; reply.textContent += dec.decode(value, { stream: true }); }
    reply.dataset.done = "yes";
    state.chat.push({ role: "assistant", content: reply.textContent });
  } catch (e) { reply.remove(); state.chat.pop(); showError($("#try-error"), e.message); }
});
$("#chat-reset").addEventListener("click", () => { state.chat = []; $("#chat-log").innerHTML = ""; });

loadOptions().then(validate);
refreshRuns();
setInterval(() => { if ($("#tab-runs").classList.contains("active")) refreshRuns(); }, 2000);
