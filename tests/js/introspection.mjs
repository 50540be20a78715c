// graphql-js' standard introspection query (what GraphiQL, codegen tools and Apollo's tooling
// send), over HTTP and over the socket with graphql-ws, under the server's default limits:
// both answers build a client schema that has the example's types.
// Usage: node introspection.mjs WS_URL
// Prints one JSON line and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import { buildClientSchema, getIntrospectionQuery } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.argv[2];
assert.ok(url, 'usage: node introspection.mjs WS_URL');
const query = getIntrospectionQuery();

const response = await fetch(url.replace(/^ws/, 'http'), {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ query }),
});
const overHttp = await response.json();
assert.equal(response.status, 200, JSON.stringify(overHttp));
assert.equal(overHttp.errors, undefined, JSON.stringify(overHttp.errors));

const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
const overSocket = await new Promise((resolve, reject) => {
  let result;
  client.subscribe({ query }, {
    next: (value) => { result = value; },
    error: reject,
    complete: () => resolve(result),
  });
});
await client.dispose();
assert.equal(overSocket.errors, undefined, JSON.stringify(overSocket.errors));

const types = [overHttp, overSocket].map((answer) => {
  const schema = buildClientSchema(answer.data);
  assert.ok(schema.getType('Report'), 'the Report type is introspected');
  return Object.keys(schema.getTypeMap()).length;
});
console.log(JSON.stringify({ queryBytes: query.length, types }));
