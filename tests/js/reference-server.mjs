// The graphql-ws reference server (Node, in memory) serving the same surface the load
// generator uses: `generateReport` enqueues a job that reports four steps of `stepDelayMs`
// and completes; `requestProgress(id)` yields the current state, then every later one, and
// ends after the terminal state. Each state carries `version` and `updatedAt` (its write
// time), like Streamer's. Usage: node reference-server.mjs PORT
// Prints `listening on ws://127.0.0.1:PORT/graphql` once ready.
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { buildSchema } from 'graphql';

const schema = buildSchema(`
  enum RequestStatus { QUEUED RUNNING RETRYING COMPLETED FAILED CANCELLED }
  type Report { url: String! rows: Int! sizeBytes: Int! }
  type AsyncRequest {
    id: ID! action: String! status: RequestStatus! progress: Float! message: String
    version: Int! attempts: Int! createdAt: String! updatedAt: String! output: Report
  }
  input GenerateReportInput { from: String! to: String! rows: Int = 1000 stepDelayMs: Int = 300 }
  type Query { request(id: ID!): AsyncRequest }
  type Mutation { generateReport(input: GenerateReportInput!): AsyncRequest! }
  type Subscription { requestProgress(id: ID!): AsyncRequest! }
`);

const requests = new Map(); // id -> state
const listeners = new Map(); // id -> Set<(state) => void>
let nextId = 0;

function write(id, change) {
  const state = { ...requests.get(id), ...change, updatedAt: new Date().toISOString() };
  state.version += 1;
  requests.set(id, state);
  for (const listener of listeners.get(id) ?? []) listener(state);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(id, input) {
  await sleep(0);
  write(id, { status: 'RUNNING', attempts: 1 });
  const steps = ['reading', 'aggregating', 'rendering', 'uploading'];
  for (const [n, message] of steps.entries()) {
    await sleep(input.stepDelayMs);
    write(id, { progress: (n + 1) / (steps.length + 1), message });
  }
  write(id, {
    status: 'COMPLETED', progress: 1,
    output: { url: `https://reports.example/${id}.csv`, rows: input.rows, sizeBytes: input.rows * 64 },
  });
}

async function* follow(id) {
  const queue = [];
  let wake = null;
  const listener = (state) => { queue.push(state); wake?.(); };
  if (!listeners.has(id)) listeners.set(id, new Set());
  listeners.get(id).add(listener);
  try {
    let last = requests.get(id);
    if (!last) throw new Error(`no request with id "${id}"`);
    yield { requestProgress: last };
    while (!['COMPLETED', 'FAILED', 'CANCELLED'].includes(last.status)) {
      while (queue.length === 0) await new Promise((resolve) => (wake = resolve));
      last = queue.shift();
      yield { requestProgress: last };
    }
  } finally {
    listeners.get(id).delete(listener);
  }
}

const roots = {
  request: ({ id }) => requests.get(id) ?? null,
  generateReport: ({ input }) => {
    const id = `req-${++nextId}`;
    const now = new Date().toISOString();
    const state = {
      id, action: 'generateReport', status: 'QUEUED', progress: 0, message: null,
      version: 1, attempts: 0, createdAt: now, updatedAt: now, output: null,
    };
    requests.set(id, state);
    run(id, { rows: 1000, stepDelayMs: 300, ...input });
    return state;
  },
  requestProgress: ({ id }) => follow(id),
};

const port = Number(process.argv[2] ?? 4100);
const server = createServer();
const wss = new WebSocketServer({ server, path: '/graphql' });
useServer({ schema, roots: { query: roots, mutation: roots, subscription: roots } }, wss);
server.listen(port, '127.0.0.1', () => {
  console.log(`listening on ws://127.0.0.1:${server.address().port}/graphql`);
});
