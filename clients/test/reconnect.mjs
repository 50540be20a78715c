// @streamer/client while the server drops its socket mid-job (the test calls the local
// Management API's DELETE /@connections/{id} twice): every version arrives once, in order,
// and the promise resolves.
// Usage: node reconnect.mjs ws://127.0.0.1:PORT/graphql
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createStreamerClient } from '@streamer/client';

const url = process.argv[2];
assert.ok(url, 'usage: node reconnect.mjs WS_URL');
const client = createStreamerClient({ url, webSocketImpl: WebSocket });
let connections = 0;
client.graphql.on('connected', () => connections++);
try {
  const versions = [];
  const output = await client.request(
    'generateReport',
    { from: '2026-01-01', to: '2026-01-31', rows: 25, stepDelayMs: 900 },
    { onProgress: (_p, _m, state) => versions.push(state.version) },
  );
  assert.equal(output.rows, 25);
  for (let i = 1; i < versions.length; i++) {
    assert.equal(versions[i], versions[i - 1] + 1, `every version once, in order: ${versions}`);
  }
  console.log(JSON.stringify({ ok: true, versions, connections }));
} finally {
  await client.dispose();
}
