// The real graphql-ws client against the greeter, an app outside this workspace: enqueue
// `greet`, follow it, check its progress and typed output.
// Usage: node greeter.mjs ws://127.0.0.1:PORT/graphql
// Prints one JSON line (the states received) and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { all } from './collect.mjs';

const url = process.argv[2];
assert.ok(url, 'usage: node greeter.mjs WS_URL');

const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0 });

try {
  const [enqueued] = await all(client, {
    query: 'mutation { greet(input: { name: "Ada", times: 3 }) { id status } }',
  });
  assert.equal(enqueued.errors, undefined, JSON.stringify(enqueued.errors));
  const { id, status } = enqueued.data.greet;
  assert.equal(status, 'QUEUED');
  const results = await all(client, {
    // afterVersion 1: every state after QUEUED, from the history if it is already past.
    query: `subscription($id: ID!) { requestProgress(id: $id, afterVersion: 1) {
      status message version output { __typename ... on Greeting { text count } }
    } }`,
    variables: { id },
  });
  const states = results.map((r) => {
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data.requestProgress;
  });
  const last = states.at(-1);
  assert.equal(last.status, 'COMPLETED');
  assert.deepEqual(last.output, { __typename: 'Greeting', text: 'hello, Ada\nhello, Ada\nhello, Ada', count: 3 });
  for (let i = 1; i < states.length; i++) {
    assert.ok(states[i].version > states[i - 1].version, 'versions strictly increase');
  }
  console.log(JSON.stringify({ ok: true, states: states.map((s) => [s.status, s.message]) }));
} finally {
  await client.dispose();
}
