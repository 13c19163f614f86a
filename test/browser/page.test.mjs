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

test("filters: a category keeps every card in it, as include_items does over the API", async () => {
  await page.waitForSelector("#category-filter:not([hidden])", { timeout: 10000 });
  const all = (await apiGet("/products")).products;
  const cats = [...new Set(all.map((p) => p.category))].sort();
  const cat = cats[0];
  await page.selectOption("#filter-category", cat);
  await page.fill("#filter-min-price", "");
  await page.fill("#filter-max-price", "");
  await page.fill("#user-ids", String(USERS[0]));
  await page.click("#recommend");
  const include = all.filter((p) => p.category === cat).map((p) => p.product_id);
  const want = (await apiPost("/recommendations", { user_ids: [USERS[0]], top_n: TOP_N, details: true, include_items: include }))
    .results[String(USERS[0])];
  assert.ok(want.length > 0, "the category has recommendations");
  await page.waitForFunction((n) => document.querySelectorAll(".rec-cards .product-card").length === n, want.length, { timeout: 10000 });
  const shown = await page.$$eval(".rec-cards .product-card", (cs) => cs.map((c) => Number(c.getAttribute("data-product-id"))));
  assert.deepEqual(shown, want.map((w) => w.product_id));
  assert.ok(want.every((w) => w.category === cat));
  // A price range narrows it further.
  const prices = want.map((w) => Number(w.price)).sort((a, b) => a - b);
  await page.fill("#filter-max-price", String(prices[0]));
  await page.click("#recommend");
  const include2 = all.filter((p) => p.category === cat && Number(p.price) <= prices[0]).map((p) => p.product_id);
  const want2 = (await apiPost("/recommendations", { user_ids: [USERS[0]], top_n: TOP_N, details: true, include_items: include2 }))
    .results[String(USERS[0])];
  await page.waitForFunction((ids) => JSON.stringify([...document.querySelectorAll(".rec-cards .product-card")]
    .map((c) => Number(c.getAttribute("data-product-id")))) === JSON.stringify(ids), want2.map((w) => w.product_id), { timeout: 10000 });
  assert.ok(want2.every((w) => Number(w.price) <= prices[0] && w.category === cat));
  await page.selectOption("#filter-category", "");
  await page.fill("#filter-max-price", "");
});

test("explanations: each card says because of the history item that contributes most", async () => {
  await page.fill("#user-ids", String(USERS[0]));
  await page.click("#recommend");
  await page.waitForSelector(".rec-cards .product-card .because[data-source]", { timeout: 10000 });
  await page.waitForFunction(() => [...document.querySelectorAll(".rec-cards .product-card")]
    .every((c) => c.querySelector(".because[data-source]")), null, { timeout: 10000 });
  const cards = await page.$$eval(".rec-cards .product-card", (cs) => cs.map((c) => ({
    id: Number(c.getAttribute("data-product-id")), text: c.querySelector(".because").textContent,
    item: c.querySelector(".because").getAttribute("data-history-item") })));
  let cf = 0;
  for (const c of cards) {
    const d = await apiPost("/explanations", { user_id: USERS[0], product_id: c.id });
    if (d.contributions.length) {
      cf++;
      assert.equal(c.item, String(d.contributions[0].history_item));
      assert.ok(c.text.includes(d.contributions[0].product_name), `${c.text} names ${d.contributions[0].product_name}`);
    } else {
      assert.equal(c.text, "popular with other customers");
    }
  }
  assert.ok(cf > 0, "some cards come from collaborative filtering");
});

test("basket mode: picked products get recsys_recommend_for_items' answer", async () => {
  const picks = await page.$$eval(".rec-cards .product-card", (cs) => cs.slice(0, 2).map((c) => Number(c.getAttribute("data-product-id"))));
  for (const id of picks) await page.click(`.rec-cards .product-card[data-product-id="${id}"] .add-basket`);
  const listed = await page.$$eval("#basket-list li", (ls) => ls.map((l) => Number(l.getAttribute("data-product-id"))));
  assert.deepEqual(listed, picks);
  await page.click("#basket-recommend");
  const want = (await apiPost("/recommendations/items", { item_ids: picks, top_n: TOP_N, details: true })).results;
  assert.ok(want.length > 0);
  await page.waitForSelector(".basket-cards .product-card", { timeout: 10000 });
  const shown = await page.$$eval(".basket-cards .product-card", (cs) => cs.map((c) => Number(c.getAttribute("data-product-id"))));
  assert.deepEqual(shown, want.map((w) => w.product_id));
  assert.ok(!shown.some((id) => picks.includes(id)), "the basket's own items are not recommended back");
  assert.deepEqual(consoleErrors.filter((e) => !/422|Failed to load resource/.test(e)), []);
});
