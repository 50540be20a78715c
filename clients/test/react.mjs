// useRequest under jsdom with the real React: a component runs generateReport, renders its
// progress, then its output. Usage: node react.mjs ws://127.0.0.1:PORT/graphql
import assert from 'node:assert/strict';
import { JSDOM } from 'jsdom';
import WebSocket from 'ws';
import { createElement as h } from 'react';
import { createRoot } from 'react-dom/client';
import { createStreamerClient } from '@streamer/client';
import { useRequest } from '@streamer/react';

const url = process.argv[2];
assert.ok(url, 'usage: node react.mjs WS_URL');
const dom = new JSDOM('<!doctype html><div id="root"></div>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.IS_REACT_ACT_ENVIRONMENT = false;

const client = createStreamerClient({ url, webSocketImpl: WebSocket });
const input = { from: '2026-01-01', to: '2026-01-31', rows: 25, stepDelayMs: 150 };

function Report() {
  const report = useRequest(client, 'generateReport');
  if (report.status === 'IDLE') {
    return h('button', { id: 'run', onClick: () => report.run(input) }, 'Run');
  }
  return h(
    'div',
    null,
    h('p', { id: 'status' }, report.status),
    h('p', { id: 'progress' }, `${Math.round(report.progress * 100)}% ${report.message ?? ''}`),
    report.output ? h('a', { id: 'output', href: report.output.url }, `${report.output.rows} rows`) : null,
  );
}

const container = document.getElementById('root');
const root = createRoot(container);
const seen = new Set();
try {
  root.render(h(Report));
  const until = async (check, what) => {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const progress = document.getElementById('progress')?.textContent;
      if (progress) seen.add(progress);
      if (check()) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.fail(`${what} in time; the page is ${container.innerHTML}`);
  };
  await until(() => document.getElementById('run'), 'the button renders');
  document.getElementById('run').dispatchEvent(new dom.window.MouseEvent('click', { bubbles: true }));
  await until(() => document.getElementById('output'), 'the output renders');
  assert.equal(document.getElementById('status').textContent, 'COMPLETED');
  assert.equal(document.getElementById('output').textContent, '25 rows');
  const midway = [...seen].filter((text) => !text.startsWith('0%') && !text.startsWith('100%'));
  assert.ok(midway.length >= 1, `progress rendered on the way: ${[...seen]}`);
  root.unmount();
  console.log(JSON.stringify({ ok: true, progress: [...seen] }));
} finally {
  await client.dispose();
}
