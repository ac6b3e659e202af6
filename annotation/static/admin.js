// The admin page: progress, agreement and disputed pairs. Untrusted text goes in with textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.hash.slice(1)).get("t") || "";
  const headers = { "Authorization": "Bearer " + token };

  const say = (message, isError) => {
    $("status").textContent = message;
    $("status").classList.toggle("error", Boolean(isError));
  };
  const percent = (value) => (value === null || value === undefined ? "n/a" : `${(100 * value).toFixed(0)}%`);

  // texts may be conversations (lists of {role, content}); show them as "role: content" lines
  const asText = (value) => (Array.isArray(value) ? value.map((m) => `${m.role}: ${m.content}`).join("\n") : String(value));

  function cell(row, value) {
    const td = document.createElement("td");
    td.textContent = asText(value);
    row.append(td);
  }

  async function load() {
    const response = await fetch("/api/admin/stats", { headers });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) { say(data.error || `HTTP ${response.status}`, true); return; }
    say(`Updated ${new Date().toLocaleTimeString()}`);

    const summary = $("summary");
    summary.replaceChildren();
    const alpha = data.krippendorff_alpha_ordinal;
    for (const [term, value] of [
      ["Tasks", `${data.tasks.total} (${data.tasks.started} started, ${data.tasks.complete} complete at overlap ${data.overlap})`],
      ["Answers", `${data.annotations.rankings} rankings, ${data.annotations.skips} skips, ${data.annotations.undone} undone`],
      ["Krippendorff's α (ordinal)", alpha === null ? "n/a (needs tasks with two or more rankings)" : alpha.toFixed(3)],
    ]) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      summary.append(dt, dd);
    }

    const reviewers = $("reviewers").querySelector("tbody");
    reviewers.replaceChildren();
    for (const r of data.reviewers) {
      const row = document.createElement("tr");
      for (const value of [r.name, r.ranked, r.skipped, r.undone, r.all_bad, r.unchanged_order, percent(r.agreement_with_majority), r.compared_pairs]) cell(row, value);
      reviewers.append(row);
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
  document.querySelectorAll("button[data-format]").forEach((button) => button.addEventListener("click", () => download(button.dataset.format)));
  if (!token) say("This page needs the admin link (it ends in #t=...), printed by `rlhf annotate serve`.", true);
  else { load(); setInterval(load, 15000); }
})();
