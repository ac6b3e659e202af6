// The reviewer's page. Plain JS, no build step.
//
// Safety: every piece of untrusted text (prompt, responses, names, messages) goes in with textContent.
// The one HTML string, the guidelines, is made by the server from markdown with raw HTML disabled
// (annotation/rendering.py), and the Content-Security-Policy forbids inline scripts besides.
//
// A ranking is a list of tiers of card labels, best first: [["B"], ["A", "D"], ["C"]] means B, then A
// and D tied, then C. The server only ever sees labels; it maps them to response ids itself.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.hash.slice(1)).get("t") || "";

  const state = {
    task: null, // the task as the server sent it
    shown: [], // card labels in the order shown: ["A", "B", ...]
    texts: {}, // label -> response text
    tiers: [], // the reviewer's current ranking
    confirmArmed: false, // the unchanged-order question was asked for this task
    busy: false,
    dragging: null,
  };

  // ---------------------------------------------------------------------------------------------
  // pure ranking operations: each returns new tiers
  // ---------------------------------------------------------------------------------------------

  const tierOf = (tiers, label) => tiers.findIndex((tier) => tier.includes(label));
  const without = (tiers, label) => tiers.map((tier) => tier.filter((l) => l !== label)).filter((tier) => tier.length);
  const sameTiers = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  function moveUp(tiers, label) {
    const i = tierOf(tiers, label);
    if (tiers[i].length > 1) { // leave the tie, just above it
      const rest = without(tiers, label);
      rest.splice(i, 0, [label]);
      return rest;
    }
    if (i === 0) return tiers;
    const out = tiers.slice();
    [out[i - 1], out[i]] = [out[i], out[i - 1]];
    return out;
  }

  function moveDown(tiers, label) {
    const i = tierOf(tiers, label);
    if (tiers[i].length > 1) { // leave the tie, just below it
      const rest = without(tiers, label);
      rest.splice(i + 1, 0, [label]);
      return rest;
    }
    if (i === tiers.length - 1) return tiers;
    const out = tiers.slice();
    [out[i], out[i + 1]] = [out[i + 1], out[i]];
    return out;
  }

  function moveToPlace(tiers, label, place) { // place is 1-based
    const rest = without(tiers, label);
    rest.splice(Math.min(Math.max(place - 1, 0), rest.length), 0, [label]);
    return rest;
  }

  function toggleTie(tiers, label) {
    const i = tierOf(tiers, label);
    if (tiers[i].length > 1) { // untie: just below its former group
      const rest = without(tiers, label);
      rest.splice(i + 1, 0, [label]);
      return rest;
    }
    if (i === 0) return tiers; // nothing above to tie with
    const out = tiers.map((tier) => tier.slice());
    out[i - 1].push(label);
    out.splice(i, 1);
    return out;
  }

  function dropNextTo(tiers, label, target, after) {
    if (label === target) return tiers;
    const rest = without(tiers, label);
    const j = tierOf(rest, target);
    rest.splice(after ? j + 1 : j, 0, [label]);
    return rest;
  }

  // ---------------------------------------------------------------------------------------------
  // talking to the server
  // ---------------------------------------------------------------------------------------------

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || ("request failed with HTTP " + response.status));
    return data;
  }

  function say(message, isError) {
    const status = $("status");
    status.textContent = message;
    status.classList.toggle("error", Boolean(isError));
    status.setAttribute("role", isError ? "alert" : "status");
  }

  async function run(action, successMessage) {
    if (state.busy) return;
    state.busy = true;
    document.body.classList.add("busy");
    try {
      const data = await action();
      renderOffer(data);
      if (successMessage) say(successMessage(data));
    } catch (error) {
      say(error.message, true);
    } finally {
      state.busy = false;
      document.body.classList.remove("busy");
    }
  }

  // ---------------------------------------------------------------------------------------------
  // rendering
  // ---------------------------------------------------------------------------------------------

  const isPair = () => state.shown.length === 2;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A prompt or response is a string, or a conversation: a list of {role, content} messages.
  function fillText(node, value) {
    node.replaceChildren();
    if (typeof value === "string") {
      node.textContent = value;
      return node;
    }
    for (const message of value) {
      const turn = el("div", "turn");
      turn.append(el("span", "role", String(message.role)), el("span", "content", String(message.content)));
      node.append(turn);
    }
    return node;
  }
  const textBlock = (className, value) => fillText(el("div", className), value);

  function renderOffer(data) {
    $("reviewer-name").textContent = data.reviewer;
    const p = data.progress;
    const answered = p.ranked + p.skipped;
    $("progress-bar").max = Math.max(answered + p.remaining, 1);
    $("progress-bar").value = answered;
    $("progress-text").textContent = `${p.ranked} ranked · ${p.skipped} skipped · ${p.remaining} left`;
    $("undo").disabled = answered === 0;
    // Server-rendered markdown with raw HTML disabled; never untrusted text (see top of file).
    $("guidelines-body").innerHTML = data.guidelines_html;

    const task = data.task;
    state.task = task;
    $("task").hidden = !task;
    $("done").hidden = Boolean(task);
    if (!task) return;

    state.shown = task.cards.map((card) => card.label);
    state.texts = Object.fromEntries(task.cards.map((card) => [card.label, card.text]));
    const previous = task.previous;
    state.tiers = previous && previous.ranking ? previous.ranking.map((tier) => tier.slice()) : state.shown.map((label) => [label]);
    state.confirmArmed = false;
    $("all-bad").checked = Boolean(previous && previous.all_bad);
    $("rationale").value = (previous && previous.rationale) || "";
    $("skip-reason").value = (previous && previous.skip_reason) || "";
    $("confirm").hidden = true;
    $("skip-form").hidden = true;
    $("task-id").textContent = "#" + task.id;
    fillText($("prompt"), task.prompt);

    const pair = isPair();
    $("pair").hidden = !pair;
    $("ranking").hidden = pair;
    $("ranking-heading").hidden = pair;
    $("submit").hidden = pair;
    $("keys-ranking").hidden = pair;
    $("keys-pair").hidden = !pair;
    if (pair) renderPair(); else renderRanking();
  }

  function renderPair() {
    const box = $("pair-cards");
    box.replaceChildren();
    for (const label of state.shown) {
      const card = el("div", "card pair-card");
      card.dataset.label = label;
      const head = el("div", "card-head");
      head.append(el("span", "label", label));
      card.append(head, textBlock("text response", state.texts[label]));
      box.append(card);
    }
  }

  function renderRanking(focusLabel) {
    const list = $("ranking");
    list.replaceChildren();
    let place = 1;
    state.tiers.forEach((tier) => {
      const item = el("li", "tier" + (tier.length > 1 ? " tied" : ""));
      const placeText = tier.length > 1 ? `${place}–${place + tier.length - 1}` : String(place);
      item.append(el("span", "place", placeText));
      const cards = el("div", "tier-cards");
      for (const label of tier) cards.append(makeCard(label, placeText, tier.length > 1));
      item.append(cards);
      list.append(item);
      place += tier.length;
    });
    if (focusLabel) {
      const card = list.querySelector(`.card[data-label="${focusLabel}"]`);
      if (card) card.focus();
    }
  }

  function makeCard(label, placeText, tied) {
    const card = el("div", "card");
    card.tabIndex = 0;
    card.draggable = true;
    card.dataset.label = label;
    card.setAttribute("aria-label", `Card ${label}, place ${placeText}${tied ? ", tied" : ""}`);
    const head = el("div", "card-head");
    head.append(el("span", "label", label));
    if (tied) head.append(el("span", "tie-badge", "tie"));
    const buttons = el("span", "card-buttons");
    for (const [action, text, title] of [["up", "▲", "Move up"], ["down", "▼", "Move down"], ["tie", tied ? "untie" : "tie ↑", "Tie with the card above"]]) {
      const button = el("button", "mini", text);
      button.type = "button";
      button.tabIndex = -1; // keyboard users move cards with keys; Tab goes card to card
      button.title = title;
      button.dataset.action = action;
      buttons.append(button);
    }
    head.append(buttons);
    card.append(head, textBlock("text response", state.texts[label]));
    return card;
  }

  function change(newTiers, focusLabel) {
    if (!sameTiers(newTiers, state.tiers)) {
      state.tiers = newTiers;
      $("confirm").hidden = true;
    }
    renderRanking(focusLabel);
  }

  // ---------------------------------------------------------------------------------------------
  // actions
  // ---------------------------------------------------------------------------------------------

  function submit(explicitTiers) {
    if (!state.task || state.busy) return;
    const allBad = $("all-bad").checked;
    let tiers = explicitTiers || state.tiers;
    if (!explicitTiers && sameTiers(tiers, state.shown.map((label) => [label]))) {
      if (allBad) {
        tiers = [state.shown.slice()]; // "all bad" without reordering states no preference among them
      } else if (!state.confirmArmed) {
        state.confirmArmed = true; // asked once; the next submit goes through
        $("confirm-text").textContent = `You have not changed the order (${state.shown.join(" > ")}). ` +
          "Submit it as your ranking? Press Enter again or “Submit anyway”.";
        $("confirm").hidden = false;
        return;
      }
    }
    const taskId = state.task.id;
    const rationale = $("rationale").value.trim();
    run(
      () => api("POST", `/api/tasks/${encodeURIComponent(taskId)}/ranking`, { ranking: tiers, all_bad: allBad, rationale: rationale || null }),
      () => `Saved your ranking of task ${taskId}.`,
    ).then(() => focusFirst());
  }

  function skip(reason) {
    if (!state.task) return;
    const taskId = state.task.id;
    run(() => api("POST", `/api/tasks/${encodeURIComponent(taskId)}/skip`, { reason }), () => `Skipped task ${taskId}.`)
      .then(() => focusFirst());
  }

  function undo() {
    run(() => api("POST", "/api/undo"), (data) => `Undone: task ${data.undone_task} is back; change your answer and submit again.`)
      .then(() => focusFirst());
  }

  function focusFirst() {
    const first = document.querySelector(isPair() ? "#pair-a" : "#ranking .card");
    if (first && !$("task").hidden) first.focus();
  }

  const pairChoice = { first: () => [["A"], ["B"]], tie: () => [["A", "B"]], second: () => [["B"], ["A"]] };

  // ---------------------------------------------------------------------------------------------
  // events
  // ---------------------------------------------------------------------------------------------

  $("submit").addEventListener("click", () => submit());
  $("confirm-yes").addEventListener("click", () => submit());
  $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; focusFirst(); });
  $("undo").addEventListener("click", undo);
  $("pair-a").addEventListener("click", () => submit(pairChoice.first()));
  $("pair-tie").addEventListener("click", () => submit(pairChoice.tie()));
  $("pair-b").addEventListener("click", () => submit(pairChoice.second()));
  $("skip").addEventListener("click", () => { $("skip-form").hidden = false; $("skip-reason").focus(); });
  $("skip-cancel").addEventListener("click", () => { $("skip-form").hidden = true; focusFirst(); });
  $("skip-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = $("skip-reason").value.trim();
    if (!reason) { say("Say why you skip this task.", true); return; }
    skip(reason);
  });

  $("ranking").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const label = button.closest(".card").dataset.label;
    const action = button.dataset.action;
    const next = action === "up" ? moveUp(state.tiers, label) : action === "down" ? moveDown(state.tiers, label) : toggleTie(state.tiers, label);
    change(next, label);
  });

  // drag and drop: the upper half of a card drops above its tier, the lower half below it
  const dropAfter = (event, card) => {
    const box = card.getBoundingClientRect();
    return event.clientY > box.top + box.height / 2;
  };
  const clearDropMarks = () => document.querySelectorAll(".drop-before, .drop-after").forEach((n) => n.classList.remove("drop-before", "drop-after"));
  const ranking = $("ranking");
  ranking.addEventListener("dragstart", (event) => {
    const card = event.target.closest(".card");
    if (!card) return;
    state.dragging = card.dataset.label;
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.dataset.label);
    card.classList.add("dragging");
  });
  ranking.addEventListener("dragover", (event) => {
    const card = event.target.closest(".card");
    if (!card || !state.dragging) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    clearDropMarks();
    card.classList.add(dropAfter(event, card) ? "drop-after" : "drop-before");
  });
  ranking.addEventListener("dragleave", (event) => {
    if (!ranking.contains(event.relatedTarget)) clearDropMarks();
  });
  ranking.addEventListener("drop", (event) => {
    const card = event.target.closest(".card");
    if (!card || !state.dragging) return;
    event.preventDefault();
    const label = state.dragging;
    clearDropMarks();
    change(dropNextTo(state.tiers, label, card.dataset.label, dropAfter(event, card)), label);
  });
  ranking.addEventListener("dragend", () => {
    state.dragging = null;
    clearDropMarks();
    document.querySelectorAll(".dragging").forEach((n) => n.classList.remove("dragging"));
  });

  document.addEventListener("keydown", (event) => {
    if (!state.task || state.busy || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest("textarea, input[type=text], #skip-form")) {
      if (event.key === "Escape") { $("skip-form").hidden = true; target.blur(); }
      return; // typing, not commanding
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (isPair()) {
      const choice = { a: "first", 1: "first", t: "tie", 2: "tie", b: "second", 3: "second" }[key];
      if (choice) { event.preventDefault(); submit(pairChoice[choice]()); }
      return;
    }
    const card = target.closest(".card");
    if (card && !target.closest("button")) {
      const label = card.dataset.label;
      let next = null;
      if (key === "ArrowUp") next = moveUp(state.tiers, label);
      else if (key === "ArrowDown") next = moveDown(state.tiers, label);
      else if (key === "t") next = toggleTie(state.tiers, label);
      else if (/^[1-9]$/.test(key)) next = moveToPlace(state.tiers, label, Number(key));
      if (next) { event.preventDefault(); change(next, label); return; }
    }
    if (key === "Enter" && !target.closest("button, summary, a")) {
      event.preventDefault();
      submit();
    } else if (key === "Escape") {
      $("confirm").hidden = true;
    }
  });

  // ---------------------------------------------------------------------------------------------
  // start
  // ---------------------------------------------------------------------------------------------

  if (!token) {
    say("This page needs your private link (it ends in #t=...). Ask the organiser for it.", true);
    $("done").hidden = true;
  } else {
    run(() => api("GET", "/api/next")).then(() => focusFirst());
  }
})();
