// @streamer/client against a running server with the example app: request() resolves,
// retries, fails, is cancelled and refuses bad input as the contract says; enqueue() and
// follow() give every state once, in order.
// Usage: node request.mjs ws://127.0.0.1:PORT/graphql
// Prints one JSON line (what it saw) and exits non-zero on any failed check.
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  createStreamerClient,
  RequestCancelledError,
  RequestFailedError,
  StreamerGraphQLError,
} from '@streamer/client';

const url = process.argv[2];
assert.ok(url, 'usage: node request.mjs WS_URL');
const client = createStreamerClient({ url, webSocketImpl: WebSocket });
const report = (stepDelayMs, rows = 25) => ({ from: '2026-01-01', to: '2026-01-31', rows, stepDelayMs });

function recorder() {
  const calls = [];
  return {
    calls,
    onProgress: (progress, message, state) => calls.push({ progress, message, version: state.version, status: state.status }),
  };
}

function inOrderOnce(calls) {
  for (let i = 1; i < calls.length; i++) {
    assert.ok(calls[i].version > calls[i - 1].version, `versions strictly increase: ${JSON.stringify(calls)}`);
  }
}

const summary = {};
try {
  // A report: its typed output, after progress with messages.
  const progress = recorder();
  const output = await client.request('generateReport', report(60), { onProgress: progress.onProgress });
  assert.equal(output.rows, 25);
  assert.match(output.url, /^https:\/\//);
  assert.equal(typeof output.sizeBytes, 'number');
  const withMessages = progress.calls.filter((c) => c.message);
  assert.ok(withMessages.length >= 3, `at least three reports with messages: ${JSON.stringify(progress.calls)}`);
  inOrderOnce(progress.calls);
  assert.equal(progress.calls.at(-1).status, 'COMPLETED');
  summary.report = progress.calls.map((c) => [c.status, c.message]);

  // An import that fails twice, retryably, then succeeds.
  const flaky = recorder();
  const imported = await client.request('flakyImport', { failTimes: 2 }, { onProgress: flaky.onProgress });
  assert.deepEqual(imported, { imported: 42 });
  const retrying = flaky.calls.filter((c) => c.status === 'RETRYING');
  assert.ok(retrying.length >= 2, `RETRYING twice: ${JSON.stringify(flaky.calls)}`);
  inOrderOnce(flaky.calls);
  summary.flaky = flaky.calls.map((c) => c.status);

  // A job that fails for good: RequestFailedError with the handler's code.
  const failed = await client.request('generateReport', report(1, -1)).then(
    () => assert.fail('a failing job does not resolve'),
    (error) => error,
  );
  assert.ok(failed instanceof RequestFailedError, String(failed));
  assert.equal(failed.code, 'BAD_INPUT');
  assert.equal(failed.retryable, false);
  assert.equal(failed.attempts, 1);
  assert.ok(failed.requestId);
  summary.failed = { code: failed.code, attempts: failed.attempts };

  // Aborted mid-job: RequestCancelledError, and CANCELLED on the server.
  const controller = new AbortController();
  let calledAfter = 0;
  let settled = false;
  const cancelled = await client
    .request('generateReport', report(2000), {
      signal: controller.signal,
      onProgress: (_progress, _message, state) => {
        if (settled) calledAfter++;
        if (state.status === 'RUNNING') controller.abort();
      },
    })
    .then(
      () => assert.fail('an aborted request does not resolve'),
      (error) => error,
    );
  settled = true;
  assert.ok(cancelled instanceof RequestCancelledError, String(cancelled));
  const onServer = await client.execute('query($id: ID!) { request(id: $id) { status } }', { id: cancelled.requestId });
  assert.equal(onServer.request.status, 'CANCELLED');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(calledAfter, 0, 'onProgress is never called after the promise settles');
  summary.cancelled = onServer.request.status;

  // Input the schema refuses: the enqueue is refused with BAD_USER_INPUT.
  const refused = await client.request('generateReport', { from: 1 }).then(
    () => assert.fail('bad input does not resolve'),
    (error) => error,
  );
  assert.ok(refused instanceof StreamerGraphQLError, String(refused));
  assert.equal(refused.code, 'BAD_USER_INPUT');
  summary.refused = refused.code;

  // enqueue() then follow(): every state once, in order, ending after the terminal one; and
  // following again after a version gives only the rest.
  const { id, status } = await client.enqueue('generateReport', report(30), { idempotencyKey: `k-${Date.now()}` });
  assert.equal(status, 'QUEUED');
  const states = [];
  for await (const state of client.follow(id)) states.push(state);
  inOrderOnce(states);
  assert.equal(states.at(-1).status, 'COMPLETED');
  const rest = [];
  for await (const state of client.follow(id, { afterVersion: states[1].version })) rest.push(state.version);
  assert.deepEqual(rest, states.slice(2).map((s) => s.version));
  summary.follow = states.map((s) => s.version);

  console.log(JSON.stringify({ ok: true, ...summary }));
} finally {
  await client.dispose();
}
