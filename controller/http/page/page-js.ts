/*
 * The status page's script: plain browser JavaScript, served as written (no build step). It
 * polls the status API and redraws from the answer. Agent ids, labels, errors and endpoints
 * come from the network: they only ever reach the page as text nodes (el() appends strings,
 * textContent), never as markup. The source holds no backtick or dollar-brace, as it sits in
 * a template literal.
 */
export const PAGE_JS = String.raw`(() => {
  "use strict";

  const POLL_MS = 2000;
  // A controller that takes the connection but never answers must still show as unreachable.
  const TIMEOUT_MS = 10000;
  // Past a few hundred rows the DOM, not the data, freezes the tab; the filter reaches the rest.
  const ROW_CAP = 500;
  // Worst first, as in the API; an agent's state is the worst of its backends'.
  const STATES = ["disconnected", "rejected", "drifted", "repairing", "unknown", "held", "pending", "not-sent", "in-sync"];
  const RANK = new Map(STATES.map((state, index) => [state, index]));
  const PHASE_LOOK = { applying: "pending", baking: "pending", paused: "held", halted: "rejected", completed: "in-sync", aborted: "rejected", "rolled-back": "drifted" };

  const view = { status: null, receivedAt: 0, error: null, timer: 0, inFlight: false };
  const searchTexts = new WeakMap();
  // Set at each render: a not-sent backend of a frozen fleet says why, not "waiting to send".
  let frozenReason = null;
  const byId = (id) => document.getElementById(id);

  /** An element whose string children become text nodes: data is never parsed as markup. */
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function titled(node, title) {
    node.title = title;
    return node;
  }

  function lookOf(state) {
    return RANK.has(state) ? state : "unknown";
  }

  function stateName(state) {
    return state === "in-sync" ? "in sync" : state === "not-sent" ? "not sent" : state;
  }

  function chip(state, count) {
    const node = el("span", "chip s-" + lookOf(state));
    if (count !== undefined) node.append(el("span", "n", formatCount(count)), " ");
    node.append(stateName(state));
    return node;
  }

  function formatCount(n) {
    return Number(n).toLocaleString("en-US");
  }

  /** Coarse past a minute, so that a row's text, and so the row, does not change every poll. */
  function formatAge(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function formatDuration(ms) {
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return formatAge(ms);
  }

  function formatClock(epochMs) {
    return new Date(epochMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function ago(now, then) {
    return titled(el("span", null, formatAge(now - then) + " ago"), formatClock(then));
  }

  /** Versions are content digests: the head tells them apart, the tooltip has the whole. */
  function version(text) {
    if (text === "") return el("span", "muted", "none");
    return titled(el("span", "mono", text.length > 8 ? text.slice(0, 8) + "…" : text), text);
  }

  /**
   * Puts rows (each with a data-key) into a table body in order, keeping every row that is
   * the same as before where it is: laying out hundreds of replaced rows every poll is what
   * would make a big fleet's tab stutter, and a kept row keeps its text selection.
   */
  function patchRows(body, rows) {
    const previous = new Map();
    for (const child of body.children) previous.set(child.dataset.key, child);
    const next = rows.map((row) => {
      const old = previous.get(row.dataset.key);
      if (old === undefined || !old.isEqualNode(row)) return row;
      previous.delete(row.dataset.key);
      return old;
    });
    const kept = new Set(next);
    let cursor = body.firstElementChild;
    const dropStale = () => {
      while (cursor !== null && !kept.has(cursor)) {
        const stale = cursor;
        cursor = cursor.nextElementSibling;
        stale.remove();
      }
    };
    for (const node of next) {
      dropStale();
      if (node === cursor) cursor = cursor.nextElementSibling;
      else body.insertBefore(node, cursor);
    }
    dropStale();
  }

  function keyed(row, key) {
    row.dataset.key = key;
    return row;
  }

  function emptyRow(text, columns) {
    const cell = el("td", "muted", text);
    cell.colSpan = columns;
    return keyed(el("tr", null, cell), "");
  }

  /** A stacked bar, in sync first so that it reads as progress. */
  function bar(states, total, className) {
    const node = el("div", className ? "bar " + className : "bar");
    // The counts next to it say the same in words.
    node.setAttribute("aria-hidden", "true");
    if (total <= 0) return node;
    for (const state of [...STATES].reverse()) {
      const n = states[state] || 0;
      if (n === 0) continue;
      const segment = titled(el("span", "s-" + state), formatCount(n) + " " + stateName(state));
      segment.style.width = (100 * n) / total + "%";
      node.append(segment);
    }
    return node;
  }

  function problemsOf(status) {
    return status.summary.agents - (status.summary.states["in-sync"] || 0);
  }

  function renderHeader(status) {
    byId("controller").textContent = "controller " + status.controller.version + ", up " + formatAge(status.generatedAt - status.controller.startedAt) +
      (status.controller.rolloutLeader === undefined ? "" : ", rollouts led by " + (status.controller.rolloutLeader === null ? "no replica now" : status.controller.rolloutLeader));
    const problems = problemsOf(status);
    document.title = (status.frozen ? "FROZEN · " : "") + (problems === 0 ? "in sync" : formatCount(problems) + " not in sync") + " · hafleet";
  }

  function renderFrozen(status) {
    byId("frozen").hidden = status.frozen === null;
    if (status.frozen === null) return;
    byId("frozen-detail").replaceChildren("Frozen ", ago(status.generatedAt, status.frozen.since), ": " + status.frozen.reason);
  }

  function tile(n, label, className) {
    return el("div", className ? "tile " + className : "tile", el("span", "n", n), label);
  }

  function renderSummary(status) {
    const summary = status.summary;
    const problems = problemsOf(status);
    const verdict =
      summary.agents === 0
        ? el("div", "verdict", "no agents")
        : problems === 0
          ? el("div", "verdict ok", "ALL IN SYNC")
          : el("div", "verdict bad", formatCount(problems) + " of " + formatCount(summary.agents) + " agents not in sync");
    verdict.dataset.testid = "verdict";
    const tiles = el("div", "tiles", tile(formatCount(summary.agents), "agents"), tile(formatCount(summary.connected), "connected"));
    for (const state of STATES) {
      const n = summary.states[state] || 0;
      const node = tile(formatCount(n), stateName(state), "state s-" + state + (n === 0 ? " zero" : ""));
      node.dataset.testid = "count-" + state;
      tiles.append(node);
    }
    tiles.append(verdict);
    // What the counts cover: this replica's agents only, or every replica's.
    const scope = el("div", "muted scope", "covers: " + (summary.scope || "this replica's agents"));
    scope.dataset.testid = "scope";
    byId("summary").replaceChildren(tiles, bar(summary.states, summary.agents, "fleet-bar"), scope);
  }

  function renderRollout(status) {
    const rollout = status.rollout;
    byId("rollout").hidden = rollout === null;
    const body = byId("rollout-body");
    if (rollout === null) return body.replaceChildren();
    // Redrawn every poll: an open history must stay open.
    const historyOpen = body.querySelector("details")?.open === true;
    const now = status.generatedAt;
    const wave = rollout.waves[rollout.wave];
    const line = el(
      "div",
      "rollout-line",
      el("span", "chip phase s-" + (PHASE_LOOK[rollout.phase] || "unknown"), rollout.phase),
      el("strong", null, "wave " + (rollout.wave + 1) + "/" + rollout.waves.length),
      wave ? el("span", null, formatCount(wave.acked) + "/" + formatCount(wave.agents) + " acked in this wave") : null,
      el("span", "muted", rollout.phase + " since ", ago(now, rollout.phaseSince)),
      el("span", null, "backends ", el("span", "mono", rollout.backends.join(", "))),
      el("span", "muted", "started ", ago(now, rollout.startedAt), " for: " + rollout.reason),
      el("span", "muted mono", rollout.id),
    );
    const parts = [line];
    if (rollout.haltReason !== null) {
      const halt = el("div", "halt", "Halt reason: " + rollout.haltReason);
      halt.dataset.testid = "rollout-halt";
      parts.push(halt);
    }
    const waves = el("div", "waves");
    rollout.waves.forEach((entry, index) => {
      waves.append(el("span", index === rollout.wave ? "current" : null, "wave " + (index + 1) + ": " + formatCount(entry.acked) + "/" + formatCount(entry.agents)));
    });
    parts.push(waves);
    if (rollout.history.length > 0) {
      const history = el("details", null, el("summary", null, "history: " + rollout.history.length + (rollout.history.length === 1 ? " event" : " events")), el("ol", null, ...rollout.history.map((entry) => el("li", null, el("span", "mono", formatClock(entry.at)), " " + entry.event))));
      history.open = historyOpen;
      parts.push(history);
    }
    body.replaceChildren(...parts);
  }

  function convergence(backend) {
    return backend.agents === 0 ? 1 : backend.inSync / backend.agents;
  }

  function renderBackends(status) {
    const backends = [...status.backends].sort((a, b) => convergence(a) - convergence(b) || (a.backend < b.backend ? -1 : 1));
    const rows = backends.map((backend) => {
      const problems = el("div", "chips");
      for (const state of STATES) if (state !== "in-sync" && backend.states[state] > 0) problems.append(chip(state, backend.states[state]));
      if (problems.childElementCount === 0) problems.append(el("span", "muted", "none"));
      const guard = discoveryCell(backend, status.generatedAt);
      const row = el(
        "tr",
        null,
        el("th", "mono", backend.backend),
        el("td", null, el("div", "converge", el("span", "ratio", formatCount(backend.inSync) + "/" + formatCount(backend.agents) + " in sync"), bar(backend.states, backend.agents))),
        el("td", null, problems),
        el("td", "num", formatCount(backend.servers)),
        el("td", null, version(backend.version)),
        el("td", null, guard),
      );
      row.firstChild.setAttribute("scope", "row");
      row.dataset.testid = "backend-row";
      return keyed(row, backend.backend);
    });
    if (rows.length === 0) rows.push(emptyRow("no backend configured", 6));
    patchRows(byId("backends-body"), rows);
  }

  // Discovery's health per backend: ok, failing since when with the error, held by the guard,
  // or never answered. Absent (an older controller): what the guard said, as before.
  function discoveryCell(backend, now) {
    let health = backend.discovery ?? { state: "ok", since: null, error: null };
    if (health.state === "ok" && backend.held !== null) health = { state: "held", since: null, error: backend.held };
    switch (health.state) {
      case "ok":
        return el("span", "muted", "ok");
      case "held":
        return el("span", "guard", el("span", "flag", "HELD BY GUARD"), " " + (health.error ?? backend.held ?? ""));
      case "never-answered":
        return el("span", "guard", el("span", "flag", "NEVER ANSWERED"), " nothing of it is pushed yet");
      default:
        return el("span", "guard", el("span", "flag", "FAILING"), ...(health.since === null ? [" "] : [" since ", ago(now, health.since), ": "]), health.error ?? "");
    }
  }

  function searchText(agent) {
    let text = searchTexts.get(agent);
    if (text === undefined) {
      const labels = Object.entries(agent.labels).map(([key, value]) => key + "=" + value);
      const backends = agent.backends.map((backend) => backend.backend + " " + backend.state);
      text = [agent.agent, agent.state, agent.peer, agent.replica || "", ...labels, ...backends].join("\n").toLowerCase();
      searchTexts.set(agent, text);
    }
    return text;
  }

  function byProblemThenId(a, b) {
    return (RANK.get(a.state) ?? -1) - (RANK.get(b.state) ?? -1) || (a.agent < b.agent ? -1 : a.agent > b.agent ? 1 : 0);
  }

  function backendDetail(backend, now) {
    switch (backend.state) {
      case "rejected":
        return [el("span", "err", backend.error ?? "rejected"), el("span", "muted", " version "), version(backend.desiredVersion)];
      case "repairing":
        return [el("span", "err", "repairing: " + (backend.error ?? "?"))];
      case "unknown":
        return ["acked; no report of what HAProxy runs yet"];
      case "drifted":
      case "held":
        return [el("span", "mono", backend.drift.map((entry) => entry.state + " " + entry.endpoint).join(", "))];
      case "pending":
        return backend.pendingSince === null ? ["sent"] : ["sent ", ago(now, backend.pendingSince)];
      case "not-sent":
        return frozenReason !== null ? ["frozen: " + frozenReason] : ["waiting to send ", version(backend.desiredVersion)];
      case "disconnected":
        return backend.appliedVersion === "" ? ["never acked ", version(backend.desiredVersion)] : ["ran ", version(backend.appliedVersion), ", desired ", version(backend.desiredVersion)];
      default:
        return [];
    }
  }

  function backendsCell(agent, now) {
    // A disconnected agent has every backend disconnected: only those it left behind on say more.
    const behind = (backend) => backend.state !== "disconnected" || backend.appliedVersion !== backend.desiredVersion;
    const problems = agent.backends.filter((backend) => backend.state !== "in-sync" && behind(backend));
    const current = agent.backends.filter((backend) => !behind(backend)).length;
    const inSync = agent.backends.filter((backend) => backend.state === "in-sync").length;
    const grid = el("div", "be");
    for (const backend of problems) {
      const detail = el("span", "detail", ...backendDetail(backend, now));
      if (backend.serving !== null) detail.append(el("span", backend.serving === 0 ? "err" : "muted", " · " + backend.serving + " serving"));
      grid.append(el("span", "mono", backend.backend), chip(backend.state), detail);
    }
    const rest = inSync === 0 ? null : el("div", "muted", (problems.length === 0 ? "all " : "+ ") + inSync + " in sync");
    if (rest !== null) rest.title = agent.backends.filter((backend) => backend.state === "in-sync").map((backend) => backend.backend).join(", ");
    const left = current === 0 ? null : el("div", "muted", (problems.length === 0 ? "all " : "+ ") + current + " at the desired version when it left");
    return el("td", null, problems.length > 0 ? grid : null, rest, left);
  }

  function connectionCell(agent, now) {
    const cell = el("td");
    if (agent.connected) cell.append(titled(el("span", "nowrap", "up " + formatAge(now - agent.connectedAt)), "connected " + formatClock(agent.connectedAt)));
    else cell.append(el("strong", "nowrap", "disconnected ", agent.disconnectedAt === null ? "" : ago(now, agent.disconnectedAt)));
    // Which replica holds it, when replicas share status; the peer address only that replica knows.
    const where = [agent.replica ? el("span", "nowrap replica", "replica " + agent.replica) : null, agent.peer ? el("span", "mono nowrap", agent.peer) : null].filter(Boolean);
    cell.append(" ", el("span", "muted", ...where.flatMap((part) => ["· ", part, " "]), "· ", el("span", "nowrap", "hafleet " + agent.hafleetVersion)));
    if (!agent.connected && agent.disconnectReason) cell.append(el("div", "reason", agent.disconnectReason));
    if (agent.problem) cell.append(el("div", "err", "PROBLEM: " + agent.problem));
    if (agent.cordoned) cell.append(el("div", "muted", "cordoned: " + agent.cordoned));
    return cell;
  }

  function agentRow(agent, now) {
    const labels = el("div", "labels", ...Object.entries(agent.labels).map(([key, value]) => el("span", "mono", key + "=" + value)));
    const id = el("th", null, el("span", "mono", agent.agent), agent.rolloutSide ? el("span", "side muted", agent.rolloutSide) : null);
    id.setAttribute("scope", "row");
    const row = el("tr", "agent s-" + lookOf(agent.state), el("td", null, chip(agent.state)), id, el("td", null, labels), backendsCell(agent, now), connectionCell(agent, now));
    row.dataset.testid = "agent-row";
    return keyed(row, agent.agent);
  }

  /** Redrawing while someone selects an agent id to copy would drop the selection every poll. */
  function selecting(node) {
    const selection = document.getSelection();
    return selection !== null && !selection.isCollapsed && node.contains(selection.anchorNode);
  }

  function renderAgents(status, byUser) {
    const body = byId("agents-body");
    if (!byUser && selecting(body)) return;
    const terms = byId("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const problemsOnly = byId("problems-only").checked;
    const matching = status.agents.filter((agent) => (!problemsOnly || agent.state !== "in-sync") && terms.every((term) => searchText(agent).includes(term)));
    matching.sort(byProblemThenId);
    const shown = matching.slice(0, ROW_CAP);
    const hidden = matching.length - shown.length;
    const total = status.agents.length;
    const rows = shown.map((agent) => agentRow(agent, status.generatedAt));
    if (rows.length === 0) rows.push(emptyRow(total === 0 ? "no agent has connected" : "no agent matches", 5));
    patchRows(body, rows);
    byId("agents-shown").textContent = matching.length === total ? formatCount(total) + " agents" : formatCount(matching.length) + " of " + formatCount(total) + " agents match";
    byId("agents-hidden").hidden = hidden === 0;
    byId("agents-hidden").textContent = "showing the first " + formatCount(shown.length) + ", " + formatCount(hidden) + " hidden: narrow the filter";
    byId("agents-more").hidden = hidden === 0;
    byId("agents-more-text").textContent = formatCount(hidden) + " more agents not shown: narrow the filter to see them";
  }

  const OUTCOME_LOOK = { "rolled-back": "s-drifted", superseded: "s-held", failed: "s-rejected", unknown: "s-unknown" };

  function renderChanges(status) {
    const now = status.generatedAt;
    const rows = status.changes.map((change) => {
      const backends = el("div", "chips", ...change.backends.map((entry) => el("span", null, el("span", "mono", entry.backend), " ", version(entry.version))));
      const outcome = change.outcome ?? (change.convergedMs === null ? "converging" : "converged");
      const ended = OUTCOME_LOOK[outcome];
      const converged =
        ended !== undefined
          ? el("span", null, el("span", "chip " + ended, outcome === "unknown" ? "unknown" : outcome.replace("-", " ")), change.outcomeDetail ? " " + change.outcomeDetail : "")
          : change.agents === 0
            ? el("span", "muted", "no agent affected")
            : change.convergedMs !== null
              ? el("strong", null, formatDuration(change.convergedMs))
              : el("span", "chip s-pending", "converging, " + formatAge(now - change.at) + " so far");
      const row = el("tr", null, el("td", null, ago(now, change.at)), el("td", null, backends), el("td", "num", formatCount(change.acked) + "/" + formatCount(change.agents)), el("td", "num", converged));
      row.dataset.testid = "change-row";
      return keyed(row, change.at + " " + change.backends.map((entry) => entry.backend + "@" + entry.version).join(" "));
    });
    if (rows.length === 0) rows.push(emptyRow("no change since the controller started", 4));
    patchRows(byId("changes-body"), rows);
  }

  function render(status) {
    frozenReason = status.frozen === null ? null : status.frozen.reason;
    renderHeader(status);
    renderFrozen(status);
    renderSummary(status);
    renderRollout(status);
    renderBackends(status);
    renderAgents(status, false);
    renderChanges(status);
  }

  function renderFreshness() {
    const node = byId("freshness");
    const link = byId("link");
    const age = byId("age");
    let linkText = "loading…";
    if (view.error !== null) linkText = "controller unreachable (" + view.error + ")";
    else if (view.status !== null) linkText = "live";
    // Only a change of link state is announced; the age ticks every second.
    if (link.textContent !== linkText) link.textContent = linkText;
    node.className = "freshness " + (view.error !== null ? "stale" : view.status !== null ? "live" : "");
    age.textContent = view.status === null ? "" : (view.error !== null ? ", data from " : ", updated ") + formatAge(Date.now() - view.receivedAt) + " ago";
  }

  function isFleetStatus(value) {
    return value !== null && typeof value === "object" && typeof value.generatedAt === "number" && typeof value.summary === "object" && Array.isArray(value.agents) && Array.isArray(value.backends) && Array.isArray(value.changes);
  }

  // Off loopback the API wants a token, which a browser cannot send on its own: the page asks for
  // a read token once and keeps it for this tab only (sessionStorage), never in the URL.
  const TOKEN_KEY = "hafleet.readToken";
  let askedForToken = false;

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { authorization: "Bearer " + token } : {};
  }

  function askForToken(refused) {
    if (askedForToken) return;
    askedForToken = true;
    const given = window.prompt(refused ? "The controller refused that token. Its read token (http.readTokenFile) or operator token:" : "This controller needs a token to show the fleet. Its read token (http.readTokenFile) or operator token:");
    if (given && given.trim() !== "") {
      sessionStorage.setItem(TOKEN_KEY, given.trim());
      askedForToken = false;
    }
  }

  async function fetchStatus() {
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch("api/v1/status", { cache: "no-store", headers: { accept: "application/json", ...authHeaders() }, signal: abort.signal });
      if (response.status === 401 || response.status === 403) {
        askForToken(response.status === 403);
        throw new Error(response.status === 401 ? "this controller needs a token (reload the page to enter one)" : "the token was refused (reload the page to enter another)");
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const status = await response.json().catch(() => null);
      if (!isFleetStatus(status)) throw new Error("not a fleet status");
      return status;
    } catch (error) {
      if (abort.signal.aborted) throw new Error("no answer in " + TIMEOUT_MS / 1000 + " s");
      // fetch rejects with a bare TypeError when nothing answered at all.
      throw error instanceof TypeError ? new Error("no connection") : error;
    } finally {
      clearTimeout(timeout);
    }
  }

  async function poll() {
    clearTimeout(view.timer);
    if (view.inFlight) return;
    view.inFlight = true;
    try {
      const status = await fetchStatus();
      try {
        render(status);
        view.status = status;
        view.receivedAt = Date.now();
        view.error = null;
      } catch (error) {
        // A page that cannot draw an answer must not claim to be live.
        view.error = "cannot show the answer: " + error.message;
        console.error(error);
      }
    } catch (error) {
      view.error = error.message;
    } finally {
      view.inFlight = false;
      renderFreshness();
      // A hidden tab does not poll: a big fleet's status is megabytes; it refreshes when shown.
      if (document.visibilityState !== "hidden") view.timer = setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") poll();
    else clearTimeout(view.timer);
  });
  const redrawAgents = () => {
    if (view.status !== null) renderAgents(view.status, true);
  };
  // Redrawing hundreds of rows on every keystroke would make typing lag on a big fleet.
  let typing = 0;
  byId("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(redrawAgents, 150);
  });
  byId("problems-only").addEventListener("change", redrawAgents);
  setInterval(renderFreshness, 1000);
  poll();
})();
`;
