// page.test.mjs - browser test of the recsys-proxy web page.
//
// Drives Debian's /usr/bin/chromium (headless) with playwright-core against a
// running proxy whose database has the recsys extension, a trained model and
// the demo shop:
//
//   RECSYS_URL=http://127.0.0.1:8000 [RECSYS_API_KEY=key] [SCREENSHOT=/tmp/page.png] \
//   [RECSYS_USERS=10,25,42] [CHROMIUM=/usr/bin/chromium] node --test page.test.mjs
//
// proxy/test/integration.sh runs it when node_modules is installed here.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = (process.env.RECSYS_URL || "http://127.0.0.1:8000").replace(/\/$/, "");
const KEY = process.env.RECSYS_API_KEY || "";
const USERS = (process.env.RECSYS_USERS || "10,25,42").split(",").map((s) => Number(s.trim()));
const TOP_N = 5;
const SHOT = process.env.SCREENSHOT || "";

let browser, page;
const consoleErrors = [];
const offsiteRequests = [];

async function apiPost(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (KEY) headers["X-API-Key"] = KEY;
  const r = await fetch(BASE + path, { method: "POST", headers, body: JSON.stringify(body) });
  assert.equal(r.status, 200, `${path} -> ${r.status}`);
  return r.json();
}
async function apiGet(path) {
  const r = await fetch(BASE + path, { headers: KEY ? { "X-API-Key": KEY } : {} });
  assert.equal(r.status, 200, `${path} -> ${r.status}`);
  return r.json();
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("request", (r) => { if (!r.url().startsWith(BASE)) offsiteRequests.push(r.url()); });
});

after(async () => {
  if (page && SHOT) await page.screenshot({ path: SHOT, fullPage: true });
  if (browser) await browser.close();
});

test("page loads with the model summary and the evaluation plot, nothing fetched off-site", async () => {
  await page.goto(BASE + "/");
  if (KEY) {
    await page.fill("#api-key", KEY);
    await page.dispatchEvent("#api-key", "change");
  }
  await page.waitForSelector("#model-summary", { timeout: 10000 });
  const model = await apiGet("/models/active");
  const summary = await page.textContent("#model-summary");
  assert.ok(summary.includes(String(model.model_id)), `model id ${model.model_id} in ${summary}`);
  const evals = await apiGet("/evaluations");
  if (evals.evaluations.length) {
    await page.waitForSelector("#eval-svg polyline.series-precision", { timeout: 10000 });
    await page.waitForSelector("#eval-svg polyline.series-recall");
    const shown = evals.evaluations.filter((e) => e.tune_stage !== "validation");
    const ks = new Set(shown.map((e) => e.k));
    const rows = await page.$$eval("#eval-table tr", (trs) => trs.length - 1);
    assert.equal(rows, ks.size, "one table row per K");
    // The newest evaluation of the smallest K, with its 95% CI when it has one.
    const k0 = Math.min(...ks);
    const e0 = shown.find((e) => e.k === k0);
    const cell = await page.$eval("#eval-table tr:nth-child(2) td:nth-child(2)", (td) => td.textContent);
    const want = e0.precision_lo == null ? Number(e0.precision).toFixed(3)
      : `${Number(e0.precision).toFixed(3)} [${Number(e0.precision_lo).toFixed(3)}, ${Number(e0.precision_hi).toFixed(3)}]`;
    assert.equal(cell, want, "precision with its CI");
    const points = await page.$eval("#eval-svg polyline.series-precision", (p) => p.getAttribute("points").trim().split(/\s+/).length);
    assert.equal(points, ks.size, "one plotted point per K");
  }
  assert.deepEqual(offsiteRequests, []);
});

test("typed user ids render the same recommendations as the API", async () => {
  await page.fill("#user-ids", USERS.join(", "));
  await page.fill("#top-n", String(TOP_N));
  await page.click("#recommend");
  await page.waitForSelector(`.user-block[data-user-id="${USERS[USERS.length - 1]}"] .rec-cards .product-card`, { timeout: 10000 });
  const api = await apiPost("/recommendations", { user_ids: USERS, top_n: TOP_N });
  for (const u of USERS) {
    const shown = await page.$$eval(`.user-block[data-user-id="${u}"] .rec-cards .product-card`,
      (cards) => cards.map((c) => Number(c.getAttribute("data-product-id"))));
    assert.deepEqual(shown, api.results[String(u)], `user ${u}`);
    const badges = await page.$$eval(`.user-block[data-user-id="${u}"] .rec-cards .badge`, (b) => b.map((x) => x.textContent));
    assert.equal(badges.length, shown.length, "a CF/popularity badge per card");
    for (const b of badges) assert.ok(b === "CF" || b === "POPULAR", b);
  }
  const firstName = await page.textContent(".rec-cards .product-card .name");
  assert.ok(firstName && !firstName.startsWith("Product "), `product names shown (got ${firstName})`);
  const price = await page.textContent(".rec-cards .product-card .price");
  assert.match(price, /^\$\d+\.\d\d$/);
  const hist = await apiGet(`/users/${USERS[0]}/history?limit=8`);
  const shownHist = await page.$$eval(`.user-block[data-user-id="${USERS[0]}"] .history-list li`,
    (lis) => lis.map((li) => Number(li.getAttribute("data-product-id"))));
  assert.deepEqual(shownHist, hist.history.map((h) => h.product_id), "history beside the recommendations");
});

test("clicking a product shows its similar items", async () => {
  const card = await page.$(".rec-cards .product-card");
  const pid = Number(await card.getAttribute("data-product-id"));
  await card.click();
  await page.waitForSelector(`#similar[data-product-id="${pid}"]`, { timeout: 10000 });
  const api = await apiGet(`/similar/${pid}?top_n=8`);
  const shown = await page.$$eval("#similar-cards .product-card", (cards) => cards.map((c) => Number(c.getAttribute("data-product-id"))));
  assert.deepEqual(shown, api.similar.map((s) => s.product_id));
  assert.ok(shown.length > 0, "the demo model has neighbours for a recommended product");
});

test("bad input shows an error instead of results", async () => {
  await page.fill("#user-ids", "12, abc");
  await page.click("#recommend");
  await page.waitForSelector("#error", { state: "visible" });
  assert.match(await page.textContent("#error"), /abc/);
  await page.fill("#user-ids", USERS.join(","));
  await page.fill("#top-n", "5000");
  await page.click("#recommend");
  await page.waitForFunction(() => /422/.test(document.getElementById("error").textContent));
  await page.fill("#top-n", String(TOP_N));
  await page.click("#recommend");
  await page.waitForSelector("#error", { state: "hidden" });
  await page.waitForSelector(".rec-cards .product-card");
  assert.deepEqual(consoleErrors.filter((e) => !/422|Failed to load resource/.test(e)), []);
});
