// urql (@urql/core) with subscriptionExchange over graphql-ws against a running server: the
// generateReport mutation, then requestProgress followed to its end.
// Usage: node urql.mjs ws://127.0.0.1:PORT/graphql
// Prints one JSON line (the states received) and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import { Client, gql, subscriptionExchange } from '@urql/core';
import { createClient } from 'graphql-ws';
import { pipe, subscribe } from 'wonka';
import WebSocket from 'ws';

const url = process.argv[2];
assert.ok(url, 'usage: node urql.mjs WS_URL');

const ws = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, keepAlive: 10_000 });
// What the server sent for the subscription, as graphql-ws hands it to urql: urql repeats the
// last result when the operation completes, so ordering is checked on the wire.
const wire = [];
const client = new Client({
  url: url.replace(/^ws/, 'http'),
  exchanges: [
    subscriptionExchange({
      enableAllOperations: true,
      forwardSubscription(request) {
        const input = { ...request, query: request.query || '' };
        return {
          subscribe(sink) {
            const recording = {
              next: (value) => {
                if (value.data?.requestProgress) wire.push(value.data.requestProgress);
                sink.next(value);
              },
              error: (error) => sink.error(error),
              complete: () => sink.complete(),
            };
            return { unsubscribe: ws.subscribe(input, recording) };
          },
        };
      },
    }),
  ],
});

try {
  const enqueued = await client
    .mutation(gql`mutation($input: GenerateReportInput!) { generateReport(input: $input) { id status } }`, {
      input: { from: '2026-03-01', to: '2026-03-31', rows: 9, stepDelayMs: 40 },
    })
    .toPromise();
  assert.equal(enqueued.error, undefined);
  const { id, status } = enqueued.data.generateReport;
  assert.equal(status, 'QUEUED');

  const states = await new Promise((resolve, reject) => {
    const received = [];
    const query = gql`subscription($id: ID!) { requestProgress(id: $id) {
      id status version output { __typename ... on Report { rows } }
    } }`;
    const { unsubscribe } = pipe(
      client.subscription(query, { id }),
      subscribe((result) => {
        if (result.error) return reject(result.error);
        const state = result.data.requestProgress;
        received.push(state);
        if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(state.status)) {
          // urql keeps a subscription open until it is torn down; the server's `complete`
          // follows the terminal state.
          setTimeout(() => { unsubscribe(); resolve(received); }, 50);
        }
      }),
    );
  });

  for (let i = 1; i < wire.length; i++) {
    assert.ok(wire[i].version > wire[i - 1].version, `versions strictly increase: ${JSON.stringify(wire)}`);
  }
  assert.ok(wire.length >= 2, 'several states arrived');
  const last = states.at(-1);
  assert.equal(last.status, 'COMPLETED');
  assert.deepEqual(last.output, { __typename: 'Report', rows: 9 });
  console.log(JSON.stringify({ ok: true, id, states: wire.map((s) => [s.status, s.version]) }));
  await ws.dispose();
  process.exit(0);
} catch (error) {
  console.error(error instanceof Error ? error.stack : JSON.stringify(error));
  process.exit(1);
}
