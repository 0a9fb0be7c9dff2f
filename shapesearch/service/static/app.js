/* shapesearch web UI: job list, submit form and job page (no build step, no dependencies). */
"use strict";

(function () {
  const FINISHED = new Set(["STOPPED", "SUCCEEDED", "FAILED"]);
  const TOKEN = new URLSearchParams(window.location.search).get("token");
  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- HTTP

  function withToken(url) {
    if (!TOKEN) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (TOKEN) h["Authorization"] = "Bearer " + TOKEN;
    return h;
  }

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // One line from a failed response: FastAPI's {"detail": "..."} or its validation list.
  async function errorDetail(resp) {
    let text = "";
    try { text = await resp.text(); } catch (e) { /* ignore */ }
    let detail = null;
    try {
      const body = JSON.parse(text);
      detail = body && body.detail !== undefined ? body.detail : body;
    } catch (e) { detail = text.trim(); }
    if (Array.isArray(detail)) {
      detail = detail.map((d) => (d && d.msg ? (d.loc ? d.loc.join(".") + ": " : "") + d.msg : JSON.stringify(d)))
        .join("; ");
    } else if (detail && typeof detail === "object") {
      detail = JSON.stringify(detail);
    }
    if (!detail) {
      if (resp.status === 413) detail = "the file is too large";
      else if (resp.status === 401 || resp.status === 403) detail = "not authorized: open this page with ?token=…";
      else detail = resp.statusText || "request failed";
    }
    return `${detail} (HTTP ${resp.status})`.replace(/\s*\n\s*/g, " ");
  }

  async function api(method, path, body) {
    const opts = { method: method, headers: authHeaders(), cache: "no-store" };
    if (body !== undefined) opts.body = body;
    // fetch() sends the token as a header; URLs the browser loads itself (img, a, EventSource) carry it in the query
    const resp = await fetch(path, opts);
    if (!resp.ok) throw new HttpError(resp.status, await errorDetail(resp));
    if (resp.status === 204) return null;
    const type = resp.headers.get("content-type") || "";
    return type.includes("json") ? resp.json() : resp.text();
  }

  const artifactUrl = (id, name) =>
    withToken(`api/jobs/${encodeURIComponent(id)}/artifacts/${name.split("/").map(encodeURIComponent).join("/")}`);

  // the uploaded original is saved as input.<suffix>
  const ORIGINAL = /^input\.(png|jpe?g|gif|bmp|webp)$/i;

  // ---------------------------------------------------------------- formatting

  function fmtSeconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    s = Number(s);
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    const m = Math.floor(s / 60), r = Math.round(s % 60);
    if (m < 60) return `${m}m ${String(r).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }

  function fmtNum(x, digits) {
    if (x === null || x === undefined || x === "") return "";
    if (typeof x !== "number") return String(x);
    if (!isFinite(x)) return String(x);
    if (Number.isInteger(x) && digits === undefined) return String(x);
    const [mant, exp] = x.toPrecision(digits || 4).split("e");
    const m = mant.includes(".") ? mant.replace(/\.?0+$/, "") : mant;
    return exp === undefined ? m : m + "e" + exp;
  }

  function elapsedOf(job) {
    const p = job.progress || {};
    if (typeof p.elapsed === "number") return p.elapsed;
    if (job.started) return (job.finished || Date.now() / 1000) - job.started;
    return null;
  }

  // ---------------------------------------------------------------- progress bar

  function progressBar(job) {
    const wrap = document.createElement("div");
    wrap.className = "progress";
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.className = "fill";
    bar.appendChild(fill);
    const label = document.createElement("span");
    label.className = "label";
    wrap.appendChild(bar);
    wrap.appendChild(label);
    updateProgressBar(wrap, job);
    return wrap;
  }

  function updateProgressBar(wrap, job) {
    const p = job.progress || {};
    const fill = wrap.querySelector(".fill");
    const label = wrap.querySelector(".label");
    let frac = null;
    // searches report generation/generations; layer planning done/total
    const [n, total] = typeof p.generations === "number" ? [p.generation, p.generations] : [p.done, p.total];
    if (typeof n === "number" && typeof total === "number" && total > 0) {
      frac = Math.max(0, Math.min(1, n / total));
      label.textContent = `${n}/${total}`;
    } else {
      label.textContent = job.state === "PENDING" ? "queued" : job.state === "RUNNING" ? "starting…" : "";
    }
    if (job.state === "SUCCEEDED") frac = 1;
    fill.style.width = frac === null ? "0%" : (frac * 100).toFixed(1) + "%";
    wrap.dataset.state = job.state;
  }

  // ---------------------------------------------------------------- job list

  const tbody = () => $("#jobs tbody");
  let listTimer = null;
  let listBusy = false;
  let lastSubmitted = null;

  function cell(cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    if (text !== undefined) td.textContent = text;
    return td;
  }

  function actionButton(cls, text, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = text;
    b.title = title;
    return b;
  }

  function makeRow(job) {
    const tr = document.createElement("tr");
    tr.className = "job";
    tr.dataset.id = job.id;
    const idCell = cell("id");
    const link = document.createElement("a");
    link.href = "#/jobs/" + encodeURIComponent(job.id);
    link.textContent = job.id;
    idCell.appendChild(link);
    tr.appendChild(idCell);
    tr.appendChild(cell("kind"));
    tr.appendChild(cell("state"));
    const prog = cell("progress-cell");
    prog.appendChild(progressBar(job));
    tr.appendChild(prog);
    tr.appendChild(cell("cr"));
    tr.appendChild(cell("best-error"));
    tr.appendChild(cell("elapsed"));
    tr.appendChild(cell("eta"));
    const actions = cell("actions");
    const stop = actionButton("stop", "Stop", "stop this job");
    const del = actionButton("delete", "Delete", "delete this job and its files");
    stop.addEventListener("click", (ev) => { ev.stopPropagation(); stopJob(job.id); });
    del.addEventListener("click", (ev) => { ev.stopPropagation(); deleteJob(job.id); });
    actions.appendChild(stop);
    actions.appendChild(del);
    tr.appendChild(actions);
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("a, button")) return;
      location.hash = "#/jobs/" + encodeURIComponent(job.id);
    });
    return tr;
  }

  function updateRow(tr, job) {
    const p = job.progress || {};
    tr.querySelector(".kind").textContent = job.kind || "";
    const st = tr.querySelector(".state");
    st.textContent = job.state;
    st.dataset.state = job.state;
    tr.dataset.state = job.state;
    updateProgressBar(tr.querySelector(".progress"), job);
    tr.querySelector(".cr").textContent = fmtNum(p.best_cr, 4);
    tr.querySelector(".best-error").textContent = fmtNum(p.best_error, 3);
    tr.querySelector(".elapsed").textContent = fmtSeconds(elapsedOf(job));
    tr.querySelector(".eta").textContent = FINISHED.has(job.state) ? "" : fmtSeconds(p.eta);
    tr.querySelector("button.stop").hidden = FINISHED.has(job.state);
    tr.title = job.error ? job.error : "";
    tr.classList.toggle("new", job.id === lastSubmitted);
  }

  function renderJobs(jobs) {
    const body = tbody();
    const existing = new Map();
    for (const tr of body.querySelectorAll("tr.job")) existing.set(tr.dataset.id, tr);
    const seen = new Set();
    let prev = null;
    for (const job of jobs) {
      seen.add(job.id);
      let tr = existing.get(job.id);
      if (!tr) tr = makeRow(job);
      updateRow(tr, job);
      // keep the server's order (newest first) without rebuilding rows
      const want = prev ? prev.nextSibling : body.firstChild;
      if (tr !== want) body.insertBefore(tr, want);
      prev = tr;
    }
    for (const [id, tr] of existing) if (!seen.has(id)) tr.remove();
    $("#no-jobs").hidden = jobs.length > 0;
  }

  function setConnection(ok, text) {
    const c = $("#connection");
    c.textContent = text || (ok ? "connected" : "disconnected");
    c.classList.toggle("bad", !ok);
  }

  async function refreshJobs() {
    if (listBusy) return;
    listBusy = true;
    try {
      const jobs = await api("GET", "api/jobs");
      renderJobs(Array.isArray(jobs) ? jobs : (jobs && jobs.jobs) || []);
      setConnection(true);
    } catch (e) {
      setConnection(false, e instanceof HttpError ? e.message : "server unreachable");
    } finally {
      listBusy = false;
    }
  }

  function startListPolling() {
    stopListPolling();
    refreshJobs();
    listTimer = setInterval(refreshJobs, 1000);
  }

  function stopListPolling() {
    if (listTimer !== null) clearInterval(listTimer);
    listTimer = null;
  }

  async function stopJob(id) {
    try {
      await api("POST", `api/jobs/${encodeURIComponent(id)}/stop`);
      showError("");
    } catch (e) { showError(e.message); }
    refreshJobs();
    if (currentJobId === id) loadJob(id);
  }

  async function deleteJob(id) {
    try {
      await api("DELETE", `api/jobs/${encodeURIComponent(id)}`);
      showError("");
    } catch (e) { showError(e.message); }
    if (currentJobId === id) location.hash = "#/";
    refreshJobs();
  }

  // ---------------------------------------------------------------- submit form

  function showError(msg) {
    const el = $("#error");
    el.textContent = msg || "";
    el.hidden = !msg;
    if (msg && !$("#job").hidden) {
      const je = $("#job-error");
      je.textContent = msg;
    }
  }

  function showNotice(msg, id) {
    const el = $("#notice");
    el.textContent = "";
    if (!msg) return;
    el.appendChild(document.createTextNode(msg + " "));
    if (id) {
      const a = document.createElement("a");
      a.href = "#/jobs/" + encodeURIComponent(id);
      a.textContent = "open job " + id;
      el.appendChild(a);
    }
  }

  function readNumber(input, name, integer) {
    const raw = input.value.trim();
    if (raw === "") return undefined;
    const v = Number(raw);
    if (!isFinite(v)) throw new Error(`${name} must be a number, got ${raw}`);
    if (integer && !Number.isInteger(v)) throw new Error(`${name} must be an integer, got ${raw}`);
    return v;
  }

  function setPreview(file) {
    const img = $("#preview");
    const text = $("#drop-text");
    if (!file) {
      img.hidden = true;
      img.removeAttribute("src");
      text.textContent = "Drop an image here or click to choose one";
      return;
    }
    text.textContent = `${file.name} (${Math.max(1, Math.round(file.size / 1024))} KiB)`;
    if (file.type && file.type.startsWith("image/")) {
      if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
      img.dataset.url = URL.createObjectURL(file);
      img.src = img.dataset.url;
      img.hidden = false;
    } else {
      img.hidden = true;
    }
  }

  function setupForm() {
    const form = $("#submit-form");
    const file = $("#file");
    const drop = $("#drop");
    file.addEventListener("change", () => setPreview(file.files[0]));
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    }));
    ["dragleave", "dragend"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      drop.classList.remove("over");
      if (ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files.length) {
        file.files = ev.dataTransfer.files;
        setPreview(file.files[0]);
      }
    });

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError("");
      showNotice("");
      const f = file.files[0];
      if (!f) { showError("choose an image first"); return; }
      const params = {};
      try {
        const eps = readNumber($("#eps"), "ε", false);
        if (eps === undefined) throw new Error("ε is required");
        params.eps = eps;
        const gens = readNumber($("#generations"), "generations", true);
        if (gens !== undefined) params.generations = gens;
        const seed = readNumber($("#seed"), "seed", true);
        if (seed !== undefined) params.seed = seed;
      } catch (e) { showError(e.message); return; }

      const data = new FormData();
      data.append("file", f, f.name);
      data.append("params", JSON.stringify(params));
      const button = $("#submit");
      button.disabled = true;
      try {
        const res = await api("POST", "api/jobs/image", data);
        lastSubmitted = res && res.id;
        showNotice("Submitted.", lastSubmitted);
        await refreshJobs();
      } catch (e) {
        showError(e instanceof HttpError ? e.message : "could not reach the server: " + e.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  // ---------------------------------------------------------------- job page

  let currentJobId = null;
  let events = null;
  let jobTimer = null;
  let resultShownFor = null;

  function closeJobStreams() {
    if (events) { events.close(); events = null; }
    if (jobTimer !== null) { clearInterval(jobTimer); jobTimer = null; }
  }

  function setText(sel, text) { $(sel).textContent = text === undefined || text === null ? "" : String(text); }

  function setImage(sel, id, name, available) {
    const img = $(sel);
    const figure = img.closest("figure");
    if (!available) {
      img.removeAttribute("src");
      figure.hidden = true;
      return;
    }
    const url = artifactUrl(id, name);
    figure.hidden = false;
    if (img.getAttribute("src") !== url) img.src = url;
  }

  function clearJobPage() {
    for (const sel of ["#job-id", "#job-kind", "#job-state", "#job-error", "#shape", "#ranks", "#cr", "#rel-error",
      "#psnr", "#result-eps", "#input-shape", "#n-params", "#evaluations", "#wall", "#job-params", "#result-json"]) {
      setText(sel, "");
    }
    $("#job-progress").textContent = "";
    $("#downloads").textContent = "";
    for (const sel of ["#original", "#reconstruction", "#convergence"]) {
      $(sel).removeAttribute("src");
      $(sel).closest("figure").hidden = true;
    }
    $("#result").hidden = true;
    $("#downloads-title").hidden = true;
    $("#pending-note").hidden = true;
    resultShownFor = null;
  }

  function renderJob(job) {
    if (!job || job.id !== currentJobId) return;
    const p = job.progress || {};
    setText("#job-id", job.id);
    setText("#job-kind", job.kind);
    const st = $("#job-state");
    st.textContent = job.state;
    st.dataset.state = job.state;
    $("#job").dataset.state = job.state;
    setText("#job-error", job.error || "");

    const prog = $("#job-progress");
    let wrap = prog.querySelector(".progress");
    if (!wrap) { wrap = progressBar(job); prog.appendChild(wrap); }
    updateProgressBar(wrap, job);
    let stats = prog.querySelector(".stats");
    if (!stats) { stats = document.createElement("span"); stats.className = "stats"; prog.appendChild(stats); }
    const parts = [];
    if (p.best_cr !== undefined) parts.push("best CR " + fmtNum(p.best_cr, 4));
    if (p.best_error !== undefined) parts.push("best error " + fmtNum(p.best_error, 3));
    if (p.evaluations !== undefined) parts.push(p.evaluations + " evaluations");
    if (p.phase && !FINISHED.has(job.state)) parts.push("phase " + p.phase);
    const el = elapsedOf(job);
    if (el !== null) parts.push("elapsed " + fmtSeconds(el));
    if (!FINISHED.has(job.state) && p.eta !== undefined && p.eta !== null) parts.push("ETA " + fmtSeconds(p.eta));
    stats.textContent = parts.join(" · ");

    $("#job-stop").hidden = FINISHED.has(job.state);
    $("#pending-note").hidden = FINISHED.has(job.state);
    setText("#job-params", JSON.stringify(job.params || {}, null, 2));

    const arts = new Set(job.artifacts || []);
    const original = (job.artifacts || []).find((a) => ORIGINAL.test(a));
    setImage("#original", job.id, original || "input.png", Boolean(original));
    setImage("#reconstruction", job.id, "reconstruction.png", arts.has("reconstruction.png"));
    setImage("#convergence", job.id, "convergence.png", arts.has("convergence.png"));

    const ul = $("#downloads");
    const have = new Set(Array.from(ul.querySelectorAll("a.download")).map((a) => a.dataset.name));
    for (const name of job.artifacts || []) {
      if (have.has(name)) continue;
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.className = "download";
      a.dataset.name = name;
      a.href = artifactUrl(job.id, name);
      a.setAttribute("download", name);
      a.textContent = name;
      li.appendChild(a);
      ul.appendChild(li);
    }
    $("#downloads-title").hidden = ul.children.length === 0;

    if (job.state === "SUCCEEDED" && resultShownFor !== job.id) {
      resultShownFor = job.id;
      loadResult(job.id);
    }
  }

  function joinShape(x) {
    if (x === null || x === undefined) return "";
    if (typeof x === "string") return x;
    if (Array.isArray(x)) return x.join("×");
    if (typeof x === "object" && x.text) return x.text;
    return JSON.stringify(x);
  }

  async function loadResult(id) {
    let r;
    try {
      r = await api("GET", `api/jobs/${encodeURIComponent(id)}/result`);
    } catch (e) {
      if (id === currentJobId) {
        resultShownFor = null; // try again on the next update
        setText("#job-error", e.message);
      }
      return;
    }
    if (id !== currentJobId || !r || typeof r !== "object") return;
    $("#result").hidden = false;
    setText("#shape", joinShape(r.shape));
    setText("#ranks", Array.isArray(r.ranks) ? r.ranks.join(", ") : (r.ranks === undefined ? "" : r.ranks));
    setText("#cr", fmtNum(r.cr, 5));
    setText("#rel-error", fmtNum(r.rel_error, 4));
    setText("#psnr", r.psnr === undefined || r.psnr === null ? "" : fmtNum(r.psnr, 4) + " dB");
    setText("#result-eps", fmtNum(r.eps));
    setText("#input-shape", joinShape(r.input_shape));
    setText("#n-params", typeof r.params === "number" ? r.params.toLocaleString("en-US")
      : (r.params === undefined ? "" : JSON.stringify(r.params)));
    setText("#evaluations", fmtNum(r.evaluations));
    setText("#wall", fmtSeconds(r.wall_seconds));
    setText("#result-json", JSON.stringify(r, null, 2));
    // other kinds' results have other fields: show only the rows that have a value
    for (const dd of $("#result").querySelectorAll("dd")) {
      const empty = dd.textContent.trim() === "";
      dd.hidden = empty;
      if (dd.previousElementSibling) dd.previousElementSibling.hidden = empty;
    }
  }

  function pollJob(id) {
    if (jobTimer !== null) return;
    jobTimer = setInterval(async () => {
      const job = await fetchJob(id);
      if (job && FINISHED.has(job.state)) { clearInterval(jobTimer); jobTimer = null; }
    }, 1000);
  }

  async function fetchJob(id) {
    try {
      const job = await api("GET", `api/jobs/${encodeURIComponent(id)}`);
      renderJob(job);
      return job;
    } catch (e) {
      if (id === currentJobId) setText("#job-error", e.message);
      if (e instanceof HttpError && e.status === 404) closeJobStreams();
      return null;
    }
  }

  function followJob(id) {
    if (typeof EventSource === "undefined") { pollJob(id); return; }
    const es = new EventSource(withToken(`api/jobs/${encodeURIComponent(id)}/events`));
    events = es;
    es.onmessage = (ev) => {
      try { renderJob(JSON.parse(ev.data)); } catch (e) { /* not a job object: ignore */ }
    };
    // the server ends the stream when the job finishes; the browser reports that as an error and would reconnect,
    // so close it, read the job once more and fall back to polling if it is still going
    es.onerror = async () => {
      es.close();
      if (events === es) events = null;
      if (id !== currentJobId) return;
      const job = await fetchJob(id);
      if (job && !FINISHED.has(job.state) && id === currentJobId) pollJob(id);
    };
  }

  async function loadJob(id) {
    closeJobStreams();
    const job = await fetchJob(id);
    if (id !== currentJobId) return;
    if (job && !FINISHED.has(job.state)) followJob(id);
  }

  function setupJobPage() {
    $("#job-stop").addEventListener("click", () => { if (currentJobId) stopJob(currentJobId); });
    $("#job-delete").addEventListener("click", () => { if (currentJobId) deleteJob(currentJobId); });
  }

  // ---------------------------------------------------------------- routing

  function route() {
    const m = /^#\/jobs\/([^/?#]+)/.exec(location.hash);
    if (m) {
      const id = decodeURIComponent(m[1]);
      stopListPolling();
      $("#list-view").hidden = true;
      $("#job").hidden = false;
      if (id !== currentJobId) {
        currentJobId = id;
        clearJobPage();
      }
      document.title = "shapesearch · job " + id;
      loadJob(id);
    } else {
      closeJobStreams();
      currentJobId = null;
      $("#job").hidden = true;
      $("#list-view").hidden = false;
      document.title = "shapesearch";
      startListPolling();
    }
  }

  function init() {
    showError("");
    setupForm();
    setupJobPage();
    window.addEventListener("hashchange", route);
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
