import { PAGE_CSS } from "./page-css.js";
import { PAGE_HTML } from "./page-html.js";
import { PAGE_JS } from "./page-js.js";

/**
 * The fleet status page, keyed by URL path below wherever the controller is mounted. Embedded
 * as strings so that a bundled controller serves it with no file beside it.
 */
export const STATUS_PAGE: ReadonlyMap<string, { contentType: string; body: string }> = new Map([
  ["/", { contentType: "text/html; charset=utf-8", body: PAGE_HTML }],
  ["/app.js", { contentType: "text/javascript; charset=utf-8", body: PAGE_JS }],
  ["/app.css", { contentType: "text/css; charset=utf-8", body: PAGE_CSS }],
]);

/**
 * Headers to send with each of them. The page loads nothing but its own three files and the
 * status API, so the policy allows nothing else: should data ever reach the page as markup,
 * it could neither run a script nor load anything.
 */
export const STATUS_PAGE_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};
