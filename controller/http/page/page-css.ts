/*
 * The status page's style: dense tables, one colour per sync state (always next to the state's
 * name, never alone), and nothing that moves. State colours are CSS variables so a row, a chip
 * and a bar segment of the same state always match.
 */
export const PAGE_CSS = String.raw`
:root {
  --bg: #ffffff; --fg: #1b1f24; --muted: #5b636e; --line: #d5d9de; --head: #f3f5f7; --hover: #f7f9fb;
  --disconnected: #4b5563; --disconnected-bg: #e5e7eb;
  --rejected: #c81e1e; --rejected-bg: #fde4e4;
  --drifted: #c2410c; --drifted-bg: #ffedd5;
  --repairing: #b45309; --repairing-bg: #fde8d0;
  --unknown: #6d28d9; --unknown-bg: #ede9fe;
  --held: #a16207; --held-bg: #fef3c7;
  --pending: #1d4ed8; --pending-bg: #dbeafe;
  --not-sent: #6b7280; --not-sent-bg: #f1f2f4;
  --in-sync: #15803d; --in-sync-bg: #dcfce7;
  --top-height: 36px;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171b; --fg: #e3e6ea; --muted: #98a1ab; --line: #30363d; --head: #1c2127; --hover: #1a1f25;
    --disconnected: #9ca3af; --disconnected-bg: #2b2f36;
    --rejected: #f87171; --rejected-bg: #3b1717;
    --drifted: #fb923c; --drifted-bg: #3a2210;
    --repairing: #fdba74; --repairing-bg: #3a2a10;
    --unknown: #c4b5fd; --unknown-bg: #261d3f;
    --held: #facc15; --held-bg: #352b0b;
    --pending: #60a5fa; --pending-bg: #132a4a;
    --not-sent: #9ca3af; --not-sent-bg: #23272e;
    --in-sync: #4ade80; --in-sync-bg: #12301d;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 13px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.mono, code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12px; }
.muted { color: var(--muted); }
[hidden] { display: none !important; }

/* The bar stays in view (the freshness is in it); its fixed height is where table headers stick. */
.top { display: flex; align-items: center; gap: 16px; height: var(--top-height); padding: 0 16px; border-bottom: 1px solid var(--line); background: var(--head); position: sticky; top: 0; z-index: 2; white-space: nowrap; overflow: hidden; }
.top h1 { font-size: 15px; margin: 0; }
.top .freshness { margin: 0 0 0 auto; font-weight: 600; }
.freshness.live { color: var(--in-sync); }
.freshness.stale { color: var(--bg); background: var(--rejected); padding: 1px 8px; border-radius: 3px; }

.frozen { margin: 0; padding: 10px 16px; background: #b91c1c; color: #fff; font-size: 15px; }
.frozen strong { font-size: 22px; letter-spacing: 0.08em; margin-right: 12px; }

main { padding: 4px 16px 24px; }
section { margin-top: 14px; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); margin: 0 0 6px; }

.tiles { display: flex; flex-wrap: wrap; gap: 6px; align-items: stretch; }
.tile { border: 1px solid var(--line); border-radius: 4px; padding: 4px 10px; min-width: 92px; }
.tile .n { display: block; font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile.zero { opacity: 0.45; }
.tile.state { border-left: 5px solid var(--state); }
.verdict { font-weight: 650; padding: 4px 10px; border-radius: 4px; align-self: center; }
.verdict.ok { background: var(--in-sync-bg); color: var(--in-sync); }
.verdict.bad { background: var(--rejected-bg); color: var(--rejected); }

.bar { display: flex; height: 8px; min-width: 120px; background: var(--not-sent-bg); border-radius: 2px; overflow: hidden; }
.bar > span { background: var(--state); }
.fleet-bar { margin-top: 6px; height: 10px; }

.chip { display: inline-block; padding: 0 6px; border-radius: 3px; border: 1px solid var(--state); background: var(--state-bg); color: var(--state); font-weight: 600; white-space: nowrap; font-size: 12px; }
.chip .n { font-variant-numeric: tabular-nums; }
.s-disconnected { --state: var(--disconnected); --state-bg: var(--disconnected-bg); }
.s-rejected { --state: var(--rejected); --state-bg: var(--rejected-bg); }
.s-drifted { --state: var(--drifted); --state-bg: var(--drifted-bg); }
.s-repairing { --state: var(--repairing); --state-bg: var(--repairing-bg); }
.s-unknown { --state: var(--unknown); --state-bg: var(--unknown-bg); }
.s-held { --state: var(--held); --state-bg: var(--held-bg); }
.s-pending { --state: var(--pending); --state-bg: var(--pending-bg); }
.s-not-sent { --state: var(--not-sent); --state-bg: var(--not-sent-bg); }
.s-in-sync { --state: var(--in-sync); --state-bg: var(--in-sync-bg); }

table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 3px 8px; border-bottom: 1px solid var(--line); }
thead th { background: var(--head); font-weight: 600; color: var(--muted); font-size: 12px; position: sticky; top: var(--top-height); z-index: 1; }
tbody tr:hover { background: var(--hover); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.agent > td:first-child { border-left: 4px solid var(--state); }
tr.agent > th, .labels span, .nowrap { white-space: nowrap; }
.converge { display: flex; align-items: center; gap: 8px; white-space: nowrap; }
.converge .bar { flex: 1; max-width: 260px; }
.chips { display: flex; flex-wrap: wrap; gap: 4px; }
.guard { color: var(--held); font-weight: 600; }
.flag { display: inline-block; padding: 0 6px; border-radius: 3px; background: var(--held-bg); color: var(--held); border: 1px solid var(--held); font-weight: 700; font-size: 11px; margin-right: 6px; }

.be { display: grid; grid-template-columns: minmax(6em, max-content) max-content minmax(10em, 1fr); gap: 2px 8px; align-items: baseline; }
.be .detail { overflow-wrap: anywhere; }
.err { color: var(--rejected); }
/* Preferred widths: left to itself the table gives errors all the room and wraps every row. */
col.labels-column { width: 20%; }
col.connection-column { width: 27%; }
.labels { display: flex; flex-wrap: wrap; gap: 3px; }
.labels span { background: var(--head); border: 1px solid var(--line); border-radius: 3px; padding: 0 4px; }
.side { font-size: 11px; margin-left: 6px; }

.controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin-bottom: 6px; }
.controls input[type="search"] { width: 320px; padding: 3px 6px; font: inherit; border: 1px solid var(--line); border-radius: 3px; background: var(--bg); color: var(--fg); }
.hidden-note { color: var(--held); font-weight: 600; }
tfoot td { color: var(--held); font-weight: 600; }

.rollout-line { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: baseline; }
.phase { font-weight: 700; text-transform: uppercase; }
.halt { margin-top: 6px; padding: 6px 10px; border-left: 5px solid var(--rejected); background: var(--rejected-bg); color: var(--rejected); font-weight: 600; }
.waves { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 6px; }
.waves span { border: 1px solid var(--line); border-radius: 3px; padding: 0 6px; }
.waves .current { border-color: var(--pending); color: var(--pending); font-weight: 700; }
details { margin-top: 6px; }
details ol { margin: 4px 0; padding-left: 20px; }
`;
