// Apollo Client 4 with GraphQLWsLink (graphql-ws underneath) against a running server: the
// generateReport mutation, then requestProgress followed to its end through client.subscribe.
// Usage: node apollo.mjs ws://127.0.0.1:PORT/graphql
// Prints one JSON line (the states received) and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import { ApolloClient, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.argv[2];
assert.ok(url, 'usage: node apollo.mjs WS_URL');

const ws = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, keepAlive: 10_000 });
const client = new ApolloClient({ link: new GraphQLWsLink(ws), cache: new InMemoryCache() });

try {
  const { data, error } = await client.mutate({
    mutation: gql`mutation($input: GenerateReportInput!) { generateReport(input: $input) { id status } }`,
    variables: { input: { from: '2026-02-01', to: '2026-02-28', rows: 7, stepDelayMs: 40 } },
  });
  assert.equal(error, undefined);
  const { id, status } = data.generateReport;
  assert.equal(status, 'QUEUED');

  const states = await new Promise((resolve, reject) => {
    const received = [];
    client
      .subscribe({
        query: gql`subscription($id: ID!) { requestProgress(id: $id) {
          id status progress version output { __typename ... on Report { rows url } }
        } }`,
        variables: { id },
      })
      .subscribe({
        next: (result) => {
          if (result.error) reject(result.error);
          else received.push(result.data.requestProgress);
        },
        error: reject,
        complete: () => resolve(received),
      });
  });

  for (let i = 1; i < states.length; i++) {
    assert.ok(states[i].version > states[i - 1].version, 'versions strictly increase');
  }
  const last = states.at(-1);
  assert.equal(last.status, 'COMPLETED');
  assert.deepEqual(last.output, {
    __typename: 'Report',
    rows: 7,
    url: `https://reports.example.com/${id}/2026-02-01-2026-02-28.csv`,
  });
  console.log(JSON.stringify({ ok: true, id, states: states.map((s) => [s.status, s.version]) }));
  await ws.dispose();
  process.exit(0);
} catch (error) {
  console.error(error instanceof Error ? error.stack : JSON.stringify(error));
  process.exit(1);
}
