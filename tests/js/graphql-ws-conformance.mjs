// The real graphql-ws client against a running server, on what the reference server's tests
// check from the client's side: unsubscribing mid-stream stops the pushes; a document that
// does not validate reaches `error` with GraphQL errors; the client works on after both.
// Usage: node graphql-ws-conformance.mjs ws://127.0.0.1:PORT/graphql
import assert from 'node:assert/strict';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { once } from './collect.mjs';

const url = process.argv[2];
assert.ok(url, 'usage: node graphql-ws-conformance.mjs WS_URL');
const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

try {
  const enqueued = await once(client, {
    query: 'mutation { generateReport(input: {from: "2026-04-01", to: "2026-04-30", rows: 3, stepDelayMs: 150}) { id } }',
  });
  const id = enqueued.data.generateReport.id;

  // Unsubscribe after the first state: nothing more arrives for it but a push the server had
  // sent before the `complete` reached it (two frames in one read both reach `next`).
  let seen = 0;
  let afterUnsubscribe = 0;
  let unsubscribed = false;
  await new Promise((resolve, reject) => {
    const unsubscribe = client.subscribe(
      { query: 'subscription($id: ID!) { requestProgress(id: $id) { status version } }', variables: { id } },
      {
        next: () => {
          if (unsubscribed) afterUnsubscribe += 1;
          seen += 1;
          if (!unsubscribed) { unsubscribed = true; unsubscribe(); resolve(); }
        },
        error: reject,
        complete: () => {},
      },
    );
  });
  await sleep(800);
  // The job pushes four more states and its end in those 800 ms.
  assert.ok(seen <= 2, `seen ${seen}`);

  // A document that does not validate: `error` with GraphQL errors.
  const errors = await new Promise((resolve, reject) => {
    client.subscribe(
      { query: 'subscription { requestProgress(id: "x") { nope } }' },
      { next: () => reject(new Error('no next expected')), error: resolve, complete: () => reject(new Error('no complete expected')) },
    );
  });
  assert.ok(Array.isArray(errors) && errors[0].message.includes('nope'), JSON.stringify(errors));

  // Still working.
  const actions = await once(client, { query: '{ actions }' });
  assert.deepEqual(actions.data.actions, ['flakyImport', 'generateReport', 'monthlyReports']);
  console.log(JSON.stringify({ ok: true, afterUnsubscribe }));
  await client.dispose();
  process.exit(0);
} catch (error) {
  console.error(error instanceof Error ? error.stack : JSON.stringify(error));
  process.exit(1);
}
