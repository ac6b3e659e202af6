// The reviewer's page. Plain JS, no build step.
//
// Safety: every piece of untrusted text (prompt, responses, names, messages) goes in with textContent.
// The one HTML string, the guidelines, is made by the server from markdown with raw HTML disabled
// (annotation/rendering.py), and the Content-Security-Policy forbids inline scripts besides.
//
// A ranking is a list of tiers of card labels, best first: [["B"], ["A", "D"], ["C"]] means B, then A
// and D tied, then C. The server only ever sees labels; it maps them to response ids itself.
//
// Projects may also ask for a 1-7 rating and flags per response (data.judgements): on a focused card,
// Shift+1..7 rates it and F then a number toggles a flag; the small buttons on each card do the same.
// The server measures time on task; under the project's minimum it answers 409 "too_fast" and the page
// asks the reviewer to confirm before sending the answer again.
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
    fastConfirmed: false, // the too-fast question was asked for this task: the next submit confirms it
    judgements: { ratings: false, flags: [], rationale: "optional", rating_min: 1, rating_max: 7 },
    ratings: {}, // label -> 1..7
    flags: {}, // label -> [flag names]
    flagMode: null, // the card label waiting for a flag number after F
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
    if (!response.ok) {
      const error = new Error((data && data.error) || ("request failed with HTTP " + response.status));
      error.data = data; // e.g. {"confirm": "too_fast", "seconds", "min_seconds"}
      throw error;
    }
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
      if (!data) return; // the action asked the reviewer something instead
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
    renderQuality(data.quality);
    if (data.judgements) state.judgements = data.judgements;
    renderJudgementSettings();

    const task = data.task;
    const blocked = Boolean(data.quality && data.quality.status === "blocked");
    state.task = task;
    $("task").hidden = !task;
    $("done").hidden = Boolean(task) || blocked;
    $("blocked").hidden = !blocked;
    if (!task) return;

    state.shown = task.cards.map((card) => card.label);
    state.texts = Object.fromEntries(task.cards.map((card) => [card.label, card.text]));
    const previous = task.previous;
    state.tiers = previous && previous.ranking ? previous.ranking.map((tier) => tier.slice()) : state.shown.map((label) => [label]);
    state.confirmArmed = false;
    state.fastConfirmed = false;
    state.flagMode = null;
    state.ratings = Object.assign({}, (previous && previous.ratings) || {});
    state.flags = Object.fromEntries(Object.entries((previous && previous.flags) || {}).map(([label, names]) => [label, names.slice()]));
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

  function renderQuality(quality) {
    const box = $("quality");
    const warned = Boolean(quality && quality.status === "warned" && quality.message);
    box.hidden = !warned;
    box.textContent = warned ? quality.message : "";
    $("blocked-text").textContent = quality && quality.status === "blocked" ? quality.message : "";
  }

  const judging = () => state.judgements.ratings || state.judgements.flags.length > 0;

  function renderJudgementSettings() {
    const j = state.judgements;
    $("rationale-wrap").hidden = j.rationale === "off";
    $("rationale-label").textContent = j.rationale === "required" ? "Rationale (required)" : "Rationale (optional)";
    $("keys-rating").hidden = !j.ratings;
    $("keys-flags").hidden = !j.flags.length;
    $("rating-range").textContent = `${j.rating_min}…${j.rating_max}`;
  }

  // the rating buttons and flag toggles under a card's text
  function judgeRow(label) {
    const row = el("div", "judge");
    const j = state.judgements;
    if (j.ratings) {
      const group = el("div", "rating");
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", `Rating of card ${label}`);
      group.append(el("span", "judge-label", "Rating"));
      for (let value = j.rating_min; value <= j.rating_max; value++) {
        const button = el("button", "mini rate" + (state.ratings[label] === value ? " selected" : ""), String(value));
        button.type = "button";
        button.tabIndex = -1;
        button.dataset.rate = String(value);
        button.setAttribute("aria-pressed", String(state.ratings[label] === value));
        group.append(button);
      }
      row.append(group);
    }
    if (j.flags.length) {
      const group = el("div", "flags" + (state.flagMode === label ? " flag-mode" : ""));
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", `Flags of card ${label}`);
      j.flags.forEach((name, index) => {
        const on = (state.flags[label] || []).includes(name);
        const button = el("button", "mini flag" + (on ? " on" : ""), `${index + 1} ${name}`);
        button.type = "button";
        button.tabIndex = -1;
        button.dataset.flag = name;
        button.setAttribute("aria-pressed", String(on));
        group.append(button);
      });
      if (state.flagMode === label) group.append(el("span", "flag-hint", "press a flag's number"));
      row.append(group);
    }
    return row;
  }

  function setRating(label, value) {
    state.ratings[label] = value;
    rerender(label);
  }

  function toggleFlag(label, name) {
    const names = state.flags[label] || [];
    state.flags[label] = names.includes(name) ? names.filter((n) => n !== name) : names.concat([name]);
    rerender(label);
  }

  function rerender(focusLabel) {
    if (isPair()) renderPair(focusLabel); else renderRanking(focusLabel);
  }

  function renderPair(focusLabel) {
    const box = $("pair-cards");
    box.replaceChildren();
    for (const label of state.shown) {
      const card = el("div", "card pair-card");
      card.dataset.label = label;
      if (judging()) card.tabIndex = 0; // focus a card to rate or flag it from the keyboard
      const head = el("div", "card-head");
      head.append(el("span", "label", label));
      card.append(head, textBlock("text response", state.texts[label]));
      if (judging()) card.append(judgeRow(label));
      box.append(card);
    }
    if (focusLabel) {
      const card = box.querySelector(`.card[data-label="${focusLabel}"]`);
      if (card) card.focus();
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
    if (judging()) card.append(judgeRow(label));
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

  function ask(text) {
    $("confirm-text").textContent = text;
    $("confirm").hidden = false;
  }

  function submit(explicitTiers) {
    if (!state.task || state.busy) return;
    const allBad = $("all-bad").checked;
    // what the project requires is checked first: the order question only makes sense for a complete answer
    const j = state.judgements;
    const unrated = j.ratings ? state.shown.filter((label) => !state.ratings[label]) : [];
    if (unrated.length) {
      say(`Rate every response first: card(s) ${unrated.join(", ")} have no rating (focus a card, then Shift+${j.rating_min}…${j.rating_max}).`, true);
      return;
    }
    const rationale = $("rationale").value.trim();
    if (j.rationale === "required" && !rationale) {
      say("This project asks for a rationale: say why you ranked them this way.", true);
      $("rationale").focus();
      return;
    }
    let tiers = explicitTiers || state.tiers;
    if (!explicitTiers && sameTiers(tiers, state.shown.map((label) => [label]))) {
      if (allBad) {
        tiers = [state.shown.slice()]; // "all bad" without reordering states no preference among them
      } else if (!state.confirmArmed) {
        state.confirmArmed = true; // asked once; the next submit goes through
        ask(`You have not changed the order (${state.shown.join(" > ")}). ` +
          "Submit it as your ranking? Press Enter again or “Submit anyway”.");
        return;
      }
    }
    const taskId = state.task.id;
    const body = { ranking: tiers, all_bad: allBad, rationale: rationale || null };
    if (j.ratings) body.ratings = Object.assign({}, state.ratings);
    const flags = Object.fromEntries(Object.entries(state.flags).filter(([, names]) => names.length));
    if (Object.keys(flags).length) body.flags = flags;
    if (state.fastConfirmed) body.confirm_too_fast = true;
    run(
      async () => {
        try {
          return await api("POST", `/api/tasks/${encodeURIComponent(taskId)}/ranking`, body);
        } catch (error) {
          if (error.data && error.data.confirm === "too_fast") {
            state.fastConfirmed = true; // asked once; the next submit confirms
            ask(`You spent only ${Math.round(error.data.seconds)} s on this task; the project asks for at least ` +
              `${Math.round(error.data.min_seconds)} s. Reread the responses, or press Enter again or “Submit anyway” ` +
              "(the answer will be marked as fast).");
            return null;
          }
          throw error;
        }
      },
      () => `Saved your ranking of task ${taskId}.`,
    ).then(() => { if ($("confirm").hidden) focusFirst(); });
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
    const first = document.querySelector(isPair() ? (judging() ? "#pair-cards .card" : "#pair-a") : "#ranking .card");
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

  const judgeClick = (event) => {
    const button = event.target.closest("button[data-rate], button[data-flag]");
    if (!button) return false;
    const label = button.closest(".card").dataset.label;
    if (button.dataset.rate) setRating(label, Number(button.dataset.rate));
    else toggleFlag(label, button.dataset.flag);
    return true;
  };
  $("pair-cards").addEventListener("click", judgeClick);

  $("ranking").addEventListener("click", (event) => {
    if (judgeClick(event)) return;
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
    const focusedCard = target.closest(".card");
    if (focusedCard && judging()) {
      const label = focusedCard.dataset.label;
      const digit = /^Digit([0-9])$/.exec(event.code || "") || /^Numpad([0-9])$/.exec(event.code || "");
      if (state.flagMode === label) { // F was pressed: a number toggles that flag, anything else leaves
        state.flagMode = null;
        const name = digit ? state.judgements.flags[Number(digit[1]) - 1] : undefined;
        event.preventDefault();
        if (name) toggleFlag(label, name); else rerender(label);
        return;
      }
      if (event.shiftKey && digit && state.judgements.ratings) {
        const value = Number(digit[1]);
        if (value >= state.judgements.rating_min && value <= state.judgements.rating_max) {
          event.preventDefault();
          setRating(label, value);
          return;
        }
      }
      if (key === "f" && state.judgements.flags.length) {
        event.preventDefault();
        state.flagMode = label;
        rerender(label);
        return;
      }
    }
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
