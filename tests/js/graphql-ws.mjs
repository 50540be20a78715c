// The real graphql-ws client against a running server: enqueue generateReport with a
// mutation, follow it with requestProgress, and check the progress sequence and the typed
// result. Usage: node graphql-ws.mjs ws://127.0.0.1:PORT/graphql
// Prints one JSON line (the states received) and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { all, once } from './collect.mjs';

const url = process.argv[2];
assert.ok(url, 'usage: node graphql-ws.mjs WS_URL');

const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, keepAlive: 10_000 });

try {
  const enqueued = await once(client, {
    query: 'mutation($input: GenerateReportInput!) { generateReport(input: $input) { id status version } }',
    variables: { input: { from: '2026-01-01', to: '2026-01-31', rows: 25, stepDelayMs: 80 } },
  });
  assert.equal(enqueued.errors, undefined);
  const { id, status } = enqueued.data.generateReport;
  assert.equal(status, 'QUEUED');

  // afterVersion 1: every state after QUEUED, however late this subscription arrives.
  const results = await all(client, {
    query: `subscription($id: ID!, $after: Int) { requestProgress(id: $id, afterVersion: $after) {
      id status progress message version attempts
      output { __typename ... on Report { url rows sizeBytes } }
    } }`,
    variables: { id, after: 1 },
  });
  const states = results.map((r) => {
    assert.equal(r.errors, undefined);
    return r.data.requestProgress;
  });

  for (let i = 1; i < states.length; i++) {
    assert.ok(states[i].version > states[i - 1].version, 'versions strictly increase');
    assert.ok(states[i].progress >= states[i - 1].progress, 'progress never decreases');
  }
  assert.deepEqual(states.map((s) => s.version), [2, 3, 4, 5, 6, 7], 'every version after the first, once');
  const running = states.filter((s) => s.status === 'RUNNING' && s.message);
  assert.ok(running.length >= 3, `at least three RUNNING states with messages, got ${running.length}`);
  const last = states.at(-1);
  assert.equal(last.status, 'COMPLETED');
  assert.equal(last.progress, 1);
  assert.deepEqual(last.output, {
    __typename: 'Report',
    url: `https://reports.example.com/${id}/2026-01-01-2026-01-31.csv`,
    rows: 25,
    sizeBytes: 1600,
  });
  console.log(JSON.stringify({ ok: true, id, states: states.map((s) => [s.status, s.version, s.message]) }));
  await client.dispose();
  process.exit(0);
} catch (error) {
  console.error(error instanceof Error ? error.stack : `${error?.type ?? typeof error} code=${error?.code} reason=${error?.reason} message=${error?.message}`);
  process.exit(1);
}
