// The workspace page's time to first message: from the click on "Log in" until the
// chat shows the workspace's latest message (timed inside the page), in headless Chromium (Debian's, through
// playwright-core), each run in a fresh browser context (no cache, no stored login).
//
//   node bench/first-message.mjs --url URL [--runs 20] [--chromium /usr/bin/chromium]

import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    runs: { type: "string", default: "20" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
const base = args.url;
const email = `first-${Date.now()}@example.com`;
const password = "correct horse battery";
const post = async (path, body, token) => {
  const r = await fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
await post("/api/auth/register", { email, password, display_name: "First" });
const { access_token: token } = await post("/api/auth/login", { email, password });
const ws = await post("/api/workspaces", { name: "first message" }, token);
for (let i = 1; i <= 20; i++) await post(`/api/workspaces/${ws.id}/messages`, { body: `message ${i}` }, token);

const browser = await chromium.launch({ executablePath: args.chromium, args: ["--no-sandbox"] });
const times = [];
for (let run = 0; run < Number(args.runs); run++) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(base);
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", password);
  // Timed in the page: from the click's event to the DOM change that shows the
  // message (the browser driver's own round trips are not counted).
  await page.evaluate(() => {
    const t = (window.__timing = {});
    document.addEventListener("click", (e) => (t.click ??= e.timeStamp), true);
    new MutationObserver(() => {
      if (!t.shown && document.querySelector('[data-testid=messages] .message[data-seq="20"]')) {
        t.shown = performance.now();
      }
    }).observe(document.body, { subtree: true, childList: true });
  });
  await page.click("[data-testid=login]");
  await page.waitForSelector('[data-testid=messages] .message[data-seq="20"]');
  const t = await page.evaluate(() => window.__timing);
  times.push(t.shown - t.click);
  await context.close();
}
await browser.close();
times.sort((a, b) => a - b);
const at = (q) => Number(times[Math.min(times.length - 1, Math.floor(q * times.length))].toFixed(1));
console.log(JSON.stringify({ runs: times.length, p50_ms: at(0.5), p90_ms: at(0.9), max_ms: at(1), all_ms: times.map((t) => Number(t.toFixed(1))) }));
