// The admin page: progress, reviewers' quality, agreement, disputes and their adjudication.
// Untrusted text (names, prompts, responses, rationales) goes in with textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.hash.slice(1)).get("t") || "";
  const headers = { "Authorization": "Bearer " + token };
  const SVG = "http://www.w3.org/2000/svg";
  let current = null; // the task being adjudicated

  const say = (message, isError) => {
    $("status").textContent = message;
    $("status").classList.toggle("error", Boolean(isError));
  };
  const percent = (value) => (value === null || value === undefined ? "n/a" : `${(100 * value).toFixed(0)}%`);
  const seconds = (value) => (value === null || value === undefined ? "n/a" : `${value.toFixed(0)} s`);
  const tiersText = (tiers) => (tiers ? tiers.map((tier) => tier.join(" = ")).join(" > ") : "");

  // texts may be conversations (lists of {role, content}); show them as "role: content" lines
  const asText = (value) => (Array.isArray(value) ? value.map((m) => `${m.role}: ${m.content}`).join("\n") : String(value));

  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = asText(value);
    if (className) td.className = className;
    row.append(td);
    return td;
  }

  function button(text, onClick, secondary) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (secondary) b.className = "secondary";
    b.addEventListener("click", onClick);
    return b;
  }

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: Object.assign({ "Content-Type": "application/json" }, headers),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }

  function alphaChart(points) {
    const box = $("alpha-trend");
    box.replaceChildren();
    const known = points.filter((p) => p.alpha !== null);
    if (!known.length) {
      box.textContent = "n/a (needs tasks with two or more rankings)";
      return;
    }
    const width = 520, height = 120, pad = 28;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "alpha-chart");
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Krippendorff's alpha over time");
    const x = (i) => pad + (known.length === 1 ? 0 : (i * (width - 2 * pad)) / (known.length - 1));
    const y = (alpha) => height - pad - ((Math.max(-1, Math.min(1, alpha)) + 1) / 2) * (height - 2 * pad);
    for (const level of [-1, 0, 1]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", String(pad)); line.setAttribute("x2", String(width - pad));
      line.setAttribute("y1", String(y(level))); line.setAttribute("y2", String(y(level)));
      svg.append(line);
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", "2"); label.setAttribute("y", String(y(level) + 4));
      label.textContent = String(level);
      svg.append(label);
    }
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", known.map((p, i) => `${x(i)},${y(p.alpha)}`).join(" "));
    svg.append(line);
    box.append(svg);
    const list = document.createElement("p");
    list.id = "alpha-points";
    list.textContent = known.map((p) => `${p.alpha.toFixed(2)} after ${p.rankings} rankings (${p.until.replace("T", " ").slice(0, 16)})`).join(" · ");
    box.append(list);
  }

  async function setQuality(name, override) {
    try {
      const data = await api("POST", `/api/admin/reviewers/${encodeURIComponent(name)}/quality`, { override });
      say(`${name} is now ${data.status}${data.override ? ` (${data.override} by an admin)` : ""}.`);
      await load();
    } catch (error) { say(error.message, true); }
  }

  async function load() {
    const response = await fetch("/api/admin/stats", { headers });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) { say(data.error || `HTTP ${response.status}`, true); return; }
    say(`Updated ${new Date().toLocaleTimeString()}`);

    const summary = $("summary");
    summary.replaceChildren();
    const alpha = data.krippendorff_alpha_ordinal;
    const s = data.settings;
    const judged = [s.judgements.ratings ? "1-7 ratings" : null, s.judgements.flags.length ? `flags (${s.judgements.flags.join(", ")})` : null,
      `rationale ${s.judgements.rationale}`].filter(Boolean).join(", ");
    for (const [term, value] of [
      ["Tasks", `${data.tasks.total} (${data.tasks.started} started, ${data.tasks.complete} complete at overlap ${data.overlap})`],
      ["Answers", `${data.annotations.rankings} rankings, ${data.annotations.skips} skips, ${data.annotations.undone} undone`],
      ["Gold items", `${data.gold.items} (served at rate ${s.gold_rate}; ${data.gold.answers} answers; warn below ${percent(s.gold_warn_below)}, block below ${percent(s.gold_block_below)} after ${s.gold_min_answers})`],
      ["Minimum time per task", s.min_seconds ? `${s.min_seconds} s` : "off"],
      ["Judgements", judged],
      ["App feedback", `${data.feedback.choices} choices, ${data.feedback.thumbs_up} thumbs up, ${data.feedback.thumbs_down} thumbs down from ${data.feedback.apps} app(s)`],
      ["Krippendorff's α (ordinal)", alpha === null ? "n/a (needs tasks with two or more rankings)" : alpha.toFixed(3)],
    ]) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      summary.append(dt, dd);
    }
    alphaChart(data.alpha_over_time);

    const reviewers = $("reviewers").querySelector("tbody");
    reviewers.replaceChildren();
    for (const r of data.reviewers) {
      const row = document.createElement("tr");
      row.dataset.name = r.name;
      cell(row, r.name);
      cell(row, r.status + (r.override ? ` (${r.override})` : ""), `status status-${r.status}`);
      for (const value of [r.ranked, r.skipped, r.undone, seconds(r.median_seconds),
        r.gold_answered ? `${percent(r.gold_accuracy)} of ${r.gold_answered}` : "n/a",
        percent(r.agreement_with_majority), r.compared_pairs, r.too_fast, r.unchanged_order, r.all_bad, r.flags_raised]) cell(row, value);
      const actions = document.createElement("td");
      if (r.status === "blocked") actions.append(button("Restore", () => setQuality(r.name, "restored")));
      else actions.append(button("Block", () => setQuality(r.name, "blocked"), true));
      if (r.override) actions.append(button("Automatic", () => setQuality(r.name, null), true));
      row.append(actions);
      reviewers.append(row);
    }

    const tasks = $("disputed-tasks").querySelector("tbody");
    tasks.replaceChildren();
    for (const t of data.disputed_tasks) {
      const row = document.createElement("tr");
      row.dataset.task = t.task_id;
      for (const value of [t.task_id, t.disputed_pairs, percent(t.lowest_agreement)]) cell(row, value);
      const actions = document.createElement("td");
      actions.append(button("Adjudicate", () => openTask(t.task_id)));
      row.append(actions);
      tasks.append(row);
    }

    const decided = $("adjudicated").querySelector("tbody");
    decided.replaceChildren();
    for (const a of data.adjudications) {
      const row = document.createElement("tr");
      row.dataset.task = a.task_id;
      for (const value of [a.task_id, a.decision, tiersText(a.ranking), a.adjudicator, a.note || ""]) cell(row, value);
      decided.append(row);
    }

    $("disputed-rule").textContent = `(the leading side has at most ${percent(data.min_agreement)} of the votes)`;
    const disputed = $("disputed").querySelector("tbody");
    disputed.replaceChildren();
    for (const pair of data.disputed_pairs) {
      const row = document.createElement("tr");
      for (const value of [pair.group, pair.chosen, pair.rejected, pair.votes_chosen, pair.votes_rejected, pair.votes_tied, percent(pair.agreement)]) cell(row, value);
      disputed.append(row);
    }
  }

  // ---- adjudication ----

  async function openTask(taskId) {
    let task;
    try { task = await api("GET", `/api/admin/tasks/${encodeURIComponent(taskId)}`); } catch (error) { say(error.message, true); return; }
    current = task;
    $("adjudicate").hidden = false;
    $("adjudicate-task").textContent = "#" + task.id;
    $("adjudicate-prompt").textContent = asText(task.prompt);
    const list = $("adjudicate-responses");
    list.replaceChildren();
    for (const response of task.responses) {
      const item = document.createElement("li");
      const place = document.createElement("input");
      place.type = "number";
      place.min = "1";
      place.max = String(task.responses.length);
      place.className = "place";
      place.dataset.response = response.id;
      place.setAttribute("aria-label", `Place of response ${response.id}`);
      const id = document.createElement("span");
      id.className = "response-id";
      id.textContent = response.id;
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = asText(response.text);
      item.append(place, id, text);
      list.append(item);
    }
    const answers = $("adjudicate-answers").querySelector("tbody");
    answers.replaceChildren();
    for (const a of task.answers) {
      const row = document.createElement("tr");
      const ratings = a.ratings ? Object.entries(a.ratings).map(([id, value]) => `${id}: ${value}`).join(", ") : "";
      const flags = a.flags ? Object.entries(a.flags).map(([id, names]) => `${id}: ${names.join(", ")}`).join("; ") : "";
      for (const value of [a.annotator, a.kind === "skip" ? `skipped: ${a.skip_reason}` : tiersText(a.ranking) + (a.all_bad ? " (all bad)" : ""),
        ratings, flags, a.rationale || ""]) cell(row, value);
      answers.append(row);
    }
    $("adjudicate").scrollIntoView();
    list.querySelector("input").focus();
  }

  function placesToTiers() {
    const byPlace = new Map();
    for (const input of $("adjudicate-responses").querySelectorAll("input.place")) {
      const place = Number(input.value);
      if (!input.value || !Number.isInteger(place) || place < 1) throw new Error(`Give response ${input.dataset.response} a place (1 = best).`);
      if (!byPlace.has(place)) byPlace.set(place, []);
      byPlace.get(place).push(input.dataset.response);
    }
    return [...byPlace.keys()].sort((a, b) => a - b).map((place) => byPlace.get(place));
  }

  async function decide(decision) {
    if (!current) return;
    const body = { decision, adjudicator: $("adjudicator").value.trim() || null, note: $("adjudicate-note").value.trim() || null };
    try {
      if (decision === "ranking") body.ranking = placesToTiers();
      await api("POST", `/api/admin/tasks/${encodeURIComponent(current.id)}/adjudication`, body);
      say(decision === "ranking" ? `Task ${current.id} decided: ${tiersText(body.ranking)}.` : `Task ${current.id} discarded.`);
      current = null;
      $("adjudicate").hidden = true;
      $("adjudicate-note").value = "";
      await load();
    } catch (error) { say(error.message, true); }
  }

  $("adjudicate-decide").addEventListener("click", () => decide("ranking"));
  $("adjudicate-discard").addEventListener("click", () => decide("discard"));
  $("adjudicate-cancel").addEventListener("click", () => { current = null; $("adjudicate").hidden = true; });
  $("adjudicate-responses").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); decide("ranking"); }
  });

  async function download(format) {
    const response = await fetch(`/api/admin/export?format=${encodeURIComponent(format)}`, { headers });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      say(data.error || `HTTP ${response.status}`, true);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `${format}.jsonl`;
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(url);
  }

  $("refresh").addEventListener("click", () => load());
  document.querySelectorAll("button[data-format]").forEach((b) => b.addEventListener("click", () => download(b.dataset.format)));
  if (!token) say("This page needs the admin link (it ends in #t=...), printed by `rlhf annotate serve`.", true);
  else { load(); setInterval(() => { if (!current) load(); }, 15000); }
})();
