// GraphiQL and the run dashboard in headless Chromium (Debian's, driven by playwright-core),
// against a running local server with JWT authentication:
//   node browser.mjs WS_URL TOKEN_A TOKEN_B SCREENSHOT_DIR
// Every request the pages make beyond the server is blocked and reported. Prints one JSON
// summary line; throws on the first failed check.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [wsUrl, tokenA, tokenB, shots] = process.argv.slice(2);
const base = wsUrl.replace(/^ws/, 'http').replace(/\/graphql$/, '');
mkdirSync(shots, { recursive: true });

async function gql(token, query, variables = {}) {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const answer = await response.json();
  if (answer.errors) throw new Error(JSON.stringify(answer.errors));
  return answer.data;
}

async function enqueue(token, action, payload) {
  const data = await gql(token, 'mutation($a: String!, $p: JSON!) { enqueue(action: $a, payload: $p) { id } }', { a: action, p: payload });
  return data.enqueue.id;
}

async function statusOf(token, id) {
  return (await gql(token, 'query($id: ID!) { request(id: $id) { status } }', { id })).request?.status;
}

async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const outside = [];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });

/** A page whose every request beyond the server is blocked and recorded. */
async function open(context) {
  const page = await context.newPage();
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith(wsUrl.replace(/\/graphql$/, ''))) return route.continue();
    outside.push(url);
    return route.abort();
  });
  page.on('pageerror', (error) => outside.push(`page error: ${error.message}`));
  return page;
}

const summary = {};
try {
  // GraphiQL: `{ actions }`, then a subscription followed to COMPLETED.
  const graphiql = await open(await browser.newContext());
  // The token is given once, to the dashboard; GraphiQL in the same tab uses it.
  await graphiql.goto(`${base}/dashboard`);
  await graphiql.fill('[data-test=token]', tokenA);
  await graphiql.dispatchEvent('[data-test=token]', 'change');
  await graphiql.goto(`${base}/?query=${encodeURIComponent('{ actions }')}`);
  await graphiql.locator('.graphiql-execute-button').click();
  await graphiql.locator('.result-window').getByText('generateReport').first().waitFor({ timeout: 20_000 });
  await graphiql.screenshot({ path: `${shots}/graphiql-query.png` });
  const followed = await enqueue(tokenA, 'generateReport', { from: '2026-01-01', to: '2026-01-31', rows: 5, stepDelayMs: 200 });
  const subscription = `subscription { requestProgress(id: "${followed}") { status progress message } }`;
  await graphiql.goto(`${base}/?query=${encodeURIComponent(subscription)}`);
  await graphiql.locator('.graphiql-execute-button').click();
  await graphiql.locator('.result-window').getByText('COMPLETED').first().waitFor({ timeout: 30_000 });
  await graphiql.screenshot({ path: `${shots}/graphiql-subscription.png` });
  summary.graphiql = 'ok';

  // The dashboard, as tenant A.
  const a = await open(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
  await a.goto(`${base}/dashboard`);
  await a.fill('[data-test=token]', tokenA);
  await a.dispatchEvent('[data-test=token]', 'change');
  const slow = await enqueue(tokenA, 'generateReport', { from: '2026-02-01', to: '2026-02-28', rows: 7, stepDelayMs: 400 });
  await a.locator(`[data-test=run-row][data-id="${slow}"]`).waitFor({ timeout: 10_000 });
  await a.screenshot({ path: `${shots}/dashboard-runs.png` });
  await a.click(`[data-test=run-row][data-id="${slow}"] a`);
  // Its progress rises live.
  const seen = new Set();
  await until('the run to complete in the page', async () => {
    const progress = await a.locator('[data-test=run] [data-test=progress]').getAttribute('data-progress').catch(() => null);
    if (progress !== null) seen.add(Number(progress));
    return (await a.locator('[data-test=run]').getAttribute('data-status')) === 'COMPLETED';
  });
  const rising = [...seen].sort((x, y) => x - y);
  assert.ok(rising.length >= 3, `progress seen rising: ${rising}`);
  await a.locator('[data-test=output]').getByText('reports.example.com').waitFor();
  const versions = await a.locator('[data-test=timeline-row]').count();
  assert.ok(versions >= 6, `the timeline has every version: ${versions}`);
  await a.screenshot({ path: `${shots}/dashboard-run.png`, fullPage: true });
  summary.live = { progress: rising, versions };

  // Cancels another.
  const doomed = await enqueue(tokenA, 'generateReport', { from: '2026-03-01', to: '2026-03-31', rows: 7, stepDelayMs: 2000 });
  await a.goto(`${base}/dashboard#/run/${doomed}`);
  await a.locator('[data-test=cancel]').click();
  await until('the cancel', async () => (await a.locator('[data-test=run]').getAttribute('data-status')) === 'CANCELLED');
  assert.equal(await statusOf(tokenA, doomed), 'CANCELLED');

  // Re-drives a failed one from the dead letters.
  const failing = await enqueue(tokenA, 'flakyImport', { failTimes: 5 });
  await until('the import to fail for good', async () => (await statusOf(tokenA, failing)) === 'FAILED');
  await a.goto(`${base}/dashboard#/dead`);
  const dead = a.locator(`[data-test=run-row][data-id="${failing}"]`);
  await dead.waitFor({ timeout: 10_000 });
  await a.screenshot({ path: `${shots}/dashboard-dead-letters.png` });
  await dead.locator('[data-test=redrive]').click();
  await until('the re-drive', async () => (await statusOf(tokenA, failing)) === 'COMPLETED');

  // A run enqueued from the form built from the input type.
  await a.goto(`${base}/dashboard#/new`);
  await a.selectOption('[data-test=new-action]', 'generateReport');
  await a.fill('[data-test=field-from]', '2026-04-01');
  await a.fill('[data-test=field-to]', '2026-04-30');
  await a.fill('[data-test=field-stepDelayMs]', '10');
  await a.screenshot({ path: `${shots}/dashboard-new.png` });
  await a.click('[data-test=enqueue]');
  await until('the new run', async () => (await a.locator('[data-test=run]').getAttribute('data-status').catch(() => null)) === 'COMPLETED');
  summary.actions = 'ok';

  // Tenant B sees none of it.
  const b = await open(await browser.newContext());
  await b.goto(`${base}/dashboard`);
  await b.fill('[data-test=token]', tokenB);
  await b.dispatchEvent('[data-test=token]', 'change');
  await b.locator('[data-test=runs] table').waitFor();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const theirs = await b.locator('[data-test=run-row]').count();
  assert.equal(theirs, 0, 'another tenant sees no runs');
  await b.goto(`${base}/dashboard#/run/${slow}`);
  await b.locator('[data-test=run] [data-test=error], [data-test=run] .error').first().waitFor({ timeout: 10_000 });
  assert.equal(await b.locator('[data-test=output]').textContent(), '');
  await b.screenshot({ path: `${shots}/dashboard-other-tenant.png` });
  summary.isolation = 'ok';
} finally {
  await browser.close();
}
assert.deepEqual(outside, [], 'nothing loaded from beyond the server');
console.log(JSON.stringify(summary));
