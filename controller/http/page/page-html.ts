/*
 * The status page's skeleton. Every URL in it is relative, so the page works wherever a proxy
 * mounts the controller (served at `PREFIX/`); everything that comes from the API is filled in
 * by app.js as text, never as markup.
 */
export const PAGE_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hafleet fleet status</title>
<link rel="stylesheet" href="app.css">
<script src="app.js" defer></script>
</head>
<body>
<header class="top">
  <h1>hafleet fleet status</h1>
  <span id="controller" class="muted" data-testid="controller"></span>
  <p id="freshness" class="freshness" data-testid="freshness"><span id="link" aria-live="polite">loading…</span><span id="age"></span></p>
</header>
<div id="frozen" class="frozen" data-testid="frozen-banner" role="alert" hidden>
  <strong>FROZEN</strong><span>nothing is pushed to any agent.</span> <span id="frozen-detail"></span>
</div>
<main>
  <section aria-labelledby="summary-heading" data-testid="summary">
    <h2 id="summary-heading">Fleet</h2>
    <div id="summary"></div>
  </section>

  <section id="rollout" aria-labelledby="rollout-heading" data-testid="rollout" hidden>
    <h2 id="rollout-heading">Rollout</h2>
    <div id="rollout-body"></div>
  </section>

  <section aria-labelledby="backends-heading" data-testid="backends">
    <h2 id="backends-heading">Backends by convergence</h2>
    <table>
      <thead><tr>
        <th scope="col">Backend</th>
        <th scope="col">Agents in sync</th>
        <th scope="col">Not in sync</th>
        <th scope="col" class="num">Servers</th>
        <th scope="col">Version</th>
        <th scope="col">Discovery</th>
      </tr></thead>
      <tbody id="backends-body"></tbody>
    </table>
  </section>

  <section aria-labelledby="agents-heading" data-testid="agents">
    <h2 id="agents-heading">Agents, problems first</h2>
    <div class="controls">
      <label>Filter <input id="filter" type="search" data-testid="agent-filter" placeholder="agent id, label, backend or state" autocomplete="off" spellcheck="false"></label>
      <label><input id="problems-only" type="checkbox" data-testid="problems-only"> problems only</label>
      <span id="agents-shown" data-testid="agents-shown"></span>
      <span id="agents-hidden" class="hidden-note" data-testid="agents-hidden" hidden></span>
    </div>
    <table data-testid="agents-table">
      <colgroup><col><col><col class="labels-column"><col><col class="connection-column"></colgroup>
      <thead><tr>
        <th scope="col">State</th>
        <th scope="col">Agent</th>
        <th scope="col">Labels</th>
        <th scope="col">Backends not in sync</th>
        <th scope="col">Connection</th>
      </tr></thead>
      <tbody id="agents-body"></tbody>
      <tfoot id="agents-more" hidden><tr><td colspan="5" id="agents-more-text"></td></tr></tfoot>
    </table>
  </section>

  <section aria-labelledby="changes-heading" data-testid="changes">
    <h2 id="changes-heading">Recent changes</h2>
    <table>
      <thead><tr>
        <th scope="col">When</th>
        <th scope="col">Backends (version)</th>
        <th scope="col" class="num">Acked</th>
        <th scope="col" class="num">Converged in</th>
      </tr></thead>
      <tbody id="changes-body"></tbody>
    </table>
  </section>
</main>
</body>
</html>
`;
