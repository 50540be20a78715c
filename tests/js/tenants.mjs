// Two tenants through the real graphql-ws client: tenant B can neither read, list, follow,
// cancel nor retry tenant A's request, and every answer B gets is the one an unknown id gets;
// A's job runs to its end. Missing, forged and expired tokens get no connection_ack (4403).
// Usage: node tenants.mjs WS_URL '{"a": TOKEN, "b": TOKEN, "forged": TOKEN, "expired": TOKEN}'
// Prints one JSON line and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.argv[2];
const tokens = JSON.parse(process.argv[3] ?? '{}');
assert.ok(url && tokens.a && tokens.b, 'usage: node tenants.mjs WS_URL TOKENS_JSON');

function client(token) {
  const connectionParams = token === undefined ? {} : { authorization: `Bearer ${token}` };
  return createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, connectionParams });
}

function all(client, payload) {
  return new Promise((resolve, reject) => {
    const values = [];
    client.subscribe(payload, {
      next: (value) => values.push(value),
      error: (error) => resolve({ values, error }),
      complete: () => resolve({ values }),
    });
  });
}

const a = client(tokens.a);
const b = client(tokens.b);
const unknown = 'no-such-request';
// What B gets for `id`, with the id itself masked, to compare with an unknown id's answer.
const masked = (answer, id) => JSON.parse(JSON.stringify(answer).replaceAll(id, '<id>'));

try {
  const enqueued = await all(a, {
    query: 'mutation { generateReport(input: {from: "2026-01-01", to: "2026-01-02", rows: 3, stepDelayMs: 150}) { id } }',
  });
  const id = enqueued.values[0].data.generateReport.id;
  const follow = all(a, { query: 'subscription($id: ID!) { requestProgress(id: $id) { status version } }', variables: { id } });

  const checks = {};
  for (const [name, query] of Object.entries({
    read: 'query($id: ID!) { request(id: $id) { id status } }',
    subscribe: 'subscription($id: ID!) { requestProgress(id: $id) { status } }',
    cancel: 'mutation($id: ID!) { cancelRequest(id: $id) { id status } }',
    retry: 'mutation($id: ID!) { retryRequest(id: $id) { id status } }',
  })) {
    const theirs = await all(b, { query, variables: { id } });
    const none = await all(b, { query, variables: { id: unknown } });
    assert.deepEqual(masked(theirs, id), masked(none, unknown), `${name}: same answer as an unknown id`);
    checks[name] = masked(theirs, id);
  }
  const listed = await all(b, { query: '{ requests { edges { node { id } } } }' });
  assert.deepEqual(listed.values[0].data.requests.edges, [], 'B lists nothing of A');
  const own = await all(a, { query: '{ requests { edges { node { id } } } }' });
  assert.deepEqual(own.values[0].data.requests.edges.map((e) => e.node.id), [id], 'A lists its own');

  const followed = await follow;
  assert.equal(followed.error, undefined);
  const states = followed.values.map((v) => v.data.requestProgress.status);
  assert.equal(states.at(-1), 'COMPLETED', 'A\'s job was not cancelled by B');

  // Refused credentials: the socket closes with 4403 before any acknowledgement.
  const refused = {};
  for (const [name, token] of Object.entries({ missing: undefined, forged: tokens.forged, expired: tokens.expired })) {
    let acknowledged = false;
    const c = createClient({
      url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true,
      connectionParams: token === undefined ? {} : { authorization: `Bearer ${token}` },
      on: { connected: () => (acknowledged = true) },
    });
    const { error } = await all(c, { query: '{ actions }' });
    assert.ok(error, `${name}: refused`);
    assert.equal(acknowledged, false, `${name}: no connection_ack`);
    refused[name] = error.code;
    await c.dispose();
  }
  console.log(JSON.stringify({ ok: true, checks, states, refused }));
} finally {
  await a.dispose();
  await b.dispose();
}
