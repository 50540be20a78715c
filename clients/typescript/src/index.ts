/**
 * The Streamer client: start a long job with one call and follow it to its result over
 * graphql-transport-ws, on top of graphql-ws.
 *
 * ```ts
 * const client = createStreamerClient({ url: 'ws://127.0.0.1:4000/graphql' });
 * const report = await client.request('generateReport', { from: '2024-01-01', to: '2024-12-31' }, {
 *   onProgress: (progress, message) => console.log(`${Math.round(progress * 100)}% - ${message}`),
 * });
 * ```
 *
 * A dropped connection loses nothing: graphql-ws reconnects, and each followed request is
 * subscribed again after the last version it received, so every state arrives once, in order.
 */
import { createClient, type Client, type ClientOptions } from 'graphql-ws';

/** Where a request is in its life. */
export type RequestStatus =
  | 'QUEUED'
  | 'RUNNING'
  | 'RETRYING'
  | 'WAITING'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELLED';

/** The statuses a request ends in. */
export const TERMINAL_STATUSES: readonly RequestStatus[] = ['COMPLETED', 'FAILED', 'CANCELLED'];

/** Why a request failed, as its handler said. */
export interface RequestErrorInfo {
  code: string;
  message: string;
  retryable: boolean;
}

/** One state of a request: what `requestProgress` pushes, once per version. */
export interface RequestState<Output = unknown> {
  id: string;
  action: string;
  status: RequestStatus;
  /** 0.0 to 1.0. */
  progress: number;
  message: string | null;
  /** Strictly increases from one state to the next. */
  version: number;
  attempts: number;
  /** When the next attempt is due (RETRYING), RFC 3339. */
  nextAttemptAt: string | null;
  /** The handler's output (COMPLETED). */
  result: Output | null;
  error: RequestErrorInfo | null;
}

/**
 * The actions a server offers, by name, with their input and output types:
 * `streamer-codegen` writes this map from the server's schema.
 */
export type ActionMap = Record<string, { input: unknown; output: unknown }>;

/** What a map of actions must be: each action an input and an output (an interface will do). */
export type ActionsOf<T> = { [A in keyof T]: { input: unknown; output: unknown } };

/** Settings of {@link createStreamerClient}. */
export interface StreamerClientOptions {
  /** The server's WebSocket URL, `ws://…/graphql` or API Gateway's `wss://…/{stage}`. */
  url: ClientOptions['url'];
  /** The `connection_init` payload, e.g. `{ authorization: 'Bearer …' }`, or a function giving it. */
  connectionParams?: ClientOptions['connectionParams'];
  /** A WebSocket implementation where there is no global one (Node: `ws`). */
  webSocketImpl?: unknown;
  /** Milliseconds between pings (default 30 000, under API Gateway's 10-minute idle cut). */
  keepAlive?: number;
  /** Reconnection attempts in a row before a request fails (default 20). */
  retryAttempts?: number;
  /** Anything else for graphql-ws's `createClient`. */
  graphqlWs?: Partial<ClientOptions>;
}

/** How to enqueue a request. */
export interface EnqueueOptions {
  /** Repeating a key within its window returns the first request instead of a new one. */
  idempotencyKey?: string;
  /** Higher runs first; the server bounds it. */
  priority?: number;
}

/** How to run a request. */
export interface RequestOptions<Output = unknown> extends EnqueueOptions {
  /** Called once per state, in version order, never after the promise settles. */
  onProgress?: (progress: number, message: string | null, state: RequestState<Output>) => void;
  /** Aborting sends `cancelRequest`; the promise then rejects with {@link RequestCancelledError}. */
  signal?: AbortSignal;
}

/** How to follow a request. */
export interface FollowOptions {
  /** Only the states after this version (the request's history fills the gap). */
  afterVersion?: number;
}

/** GraphQL errors the server answered with (bad input, a quota, an unknown request). */
export class StreamerGraphQLError extends Error {
  /** The errors, as the server sent them. */
  readonly errors: readonly { message: string; extensions?: Record<string, unknown> }[];
  /** The first error's `extensions`. */
  readonly extensions: Record<string, unknown>;
  /** The first error's `extensions.code`, e.g. `BAD_USER_INPUT`, `QUOTA_EXCEEDED`. */
  readonly code: string | undefined;

  constructor(errors: readonly { message: string; extensions?: Record<string, unknown> }[]) {
    super(errors.map((e) => e.message).join('; ') || 'GraphQL error');
    this.name = 'StreamerGraphQLError';
    this.errors = errors;
    this.extensions = errors[0]?.extensions ?? {};
    const code = this.extensions['code'];
    this.code = typeof code === 'string' ? code : undefined;
  }
}

/** The request ended FAILED. */
export class RequestFailedError extends Error {
  readonly requestId: string;
  readonly code: string;
  readonly retryable: boolean;
  readonly attempts: number;

  constructor(requestId: string, error: RequestErrorInfo | null, attempts: number) {
    super(error?.message ?? 'the request failed');
    this.name = 'RequestFailedError';
    this.requestId = requestId;
    this.code = error?.code ?? 'FAILED';
    this.retryable = error?.retryable ?? false;
    this.attempts = attempts;
  }
}

/** The request ended CANCELLED. */
export class RequestCancelledError extends Error {
  readonly requestId: string;

  constructor(requestId: string) {
    super(`request ${requestId} was cancelled`);
    this.name = 'RequestCancelledError';
    this.requestId = requestId;
  }
}

/** A Streamer client; see {@link createStreamerClient}. */
export interface StreamerClient<Actions extends ActionsOf<Actions> = ActionMap> {
  /**
   * Enqueues `action` with `input`, follows it, and resolves with its output once it is
   * COMPLETED; rejects with {@link RequestFailedError}, {@link RequestCancelledError} or, when
   * the server refuses to enqueue it, {@link StreamerGraphQLError}. Settles exactly once.
   */
  request<A extends keyof Actions & string>(
    action: A,
    input: Actions[A]['input'],
    options?: RequestOptions<Actions[A]['output']>,
  ): Promise<Actions[A]['output']>;
  /** Enqueues `action` with `input`: the new request (or the first one of its idempotency key). */
  enqueue<A extends keyof Actions & string>(
    action: A,
    input: Actions[A]['input'],
    options?: EnqueueOptions,
  ): Promise<{ id: string; status: RequestStatus; version: number }>;
  /** Every state of a request, in version order, each once; ends after the terminal one. */
  follow<Output = unknown>(id: string, options?: FollowOptions): AsyncIterableIterator<RequestState<Output>>;
  /** Asks the server to cancel a request: its state then. */
  cancel(id: string): Promise<RequestState>;
  /** Runs one GraphQL query or mutation over the socket: its `data`, or throws {@link StreamerGraphQLError}. */
  execute<Data = Record<string, unknown>>(query: string, variables?: Record<string, unknown>): Promise<Data>;
  /** The graphql-ws client underneath. */
  readonly graphql: Client;
  /** Closes the socket; requests still in flight reject. */
  dispose(): Promise<void>;
}

const STATE_FIELDS = 'id action status progress message version attempts nextAttemptAt result error { code message retryable }';

const ENQUEUE = `mutation StreamerEnqueue($action: String!, $payload: JSON!, $idempotencyKey: String, $priority: Int) {
  enqueue(action: $action, payload: $payload, idempotencyKey: $idempotencyKey, priority: $priority) { id status version }
}`;

const CANCEL = `mutation StreamerCancel($id: ID!) { cancelRequest(id: $id) { ${STATE_FIELDS} } }`;

const FOLLOW = `subscription StreamerFollow($id: ID!, $after: Int) {
  requestProgress(id: $id, afterVersion: $after) { ${STATE_FIELDS} }
}`;

function isTerminal(status: RequestStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

/** Waits about `250 ms × 2^retries` (at most 10 s), with jitter. */
function backoff(retries: number): Promise<void> {
  const base = Math.min(250 * 2 ** retries, 10_000);
  return new Promise((resolve) => setTimeout(resolve, base / 2 + Math.random() * base));
}

/**
 * A client of a Streamer server. `Actions` types `request` and `enqueue`; `streamer-codegen`
 * writes it from the server's schema.
 */
export function createStreamerClient<Actions extends ActionsOf<Actions> = ActionMap>(
  options: StreamerClientOptions,
): StreamerClient<Actions> {
  const graphql = createClient({
    url: options.url,
    connectionParams: options.connectionParams,
    webSocketImpl: options.webSocketImpl,
    keepAlive: options.keepAlive ?? 30_000,
    retryAttempts: options.retryAttempts ?? 20,
    // Every close that is not a protocol violation is worth another try: API Gateway ends
    // connections after 2 hours, and a deployment may drop them.
    shouldRetry: () => true,
    retryWait: backoff,
    // One socket for a request's enqueue and its subscription, and for calls close together.
    lazyCloseTimeout: 3_000,
    ...options.graphqlWs,
  });

  function execute<Data>(query: string, variables?: Record<string, unknown>): Promise<Data> {
    return new Promise<Data>((resolve, reject) => {
      let result: { data?: unknown; errors?: readonly { message: string; extensions?: Record<string, unknown> }[] } | undefined;
      graphql.subscribe<Record<string, unknown>>(
        { query, variables },
        {
          next: (value) => {
            result = value as typeof result;
          },
          error: (error) => reject(asError(error)),
          complete: () => {
            if (result?.errors?.length) reject(new StreamerGraphQLError(result.errors));
            else if (result?.data) resolve(result.data as Data);
            else reject(new Error('the server answered nothing'));
          },
        },
      );
    });
  }

  async function enqueue(action: string, input: unknown, opts: EnqueueOptions = {}) {
    const data = await execute<{ enqueue: { id: string; status: RequestStatus; version: number } }>(ENQUEUE, {
      action,
      payload: input,
      idempotencyKey: opts.idempotencyKey,
      priority: opts.priority,
    });
    return data.enqueue;
  }

  async function cancel(id: string): Promise<RequestState> {
    const data = await execute<{ cancelRequest: RequestState }>(CANCEL, { id });
    return data.cancelRequest;
  }

  function follow<Output>(id: string, opts: FollowOptions = {}): AsyncIterableIterator<RequestState<Output>> {
    // graphql-ws sends this payload again on every reconnection, as it is then: `after` is
    // kept at the last version received, so a new subscription starts where the old one
    // stopped and the server fills the gap from the request's history.
    const variables: { id: string; after: number | undefined } = { id, after: opts.afterVersion };
    const queue: RequestState<Output>[] = [];
    let last = opts.afterVersion ?? 0;
    let ended = false;
    let failure: unknown;
    let wake: (() => void) | undefined;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    const unsubscribe = graphql.subscribe<{ requestProgress: RequestState<Output> }>(
      { query: FOLLOW, variables },
      {
        next: (value) => {
          if (value.errors?.length) {
            failure = new StreamerGraphQLError(value.errors as StreamerGraphQLError['errors']);
            ended = true;
            notify();
            return;
          }
          const state = value.data?.requestProgress;
          if (!state || state.version <= last) return; // seen already (a resubscription)
          last = state.version;
          variables.after = state.version;
          queue.push(state);
          notify();
        },
        error: (error) => {
          failure = asError(error);
          ended = true;
          notify();
        },
        complete: () => {
          ended = true;
          notify();
        },
      },
    );
    let terminalSeen = false;
    const iterator: AsyncIterableIterator<RequestState<Output>> = {
      [Symbol.asyncIterator]() {
        return iterator;
      },
      async next(): Promise<IteratorResult<RequestState<Output>>> {
        for (;;) {
          const state = queue.shift();
          if (state) {
            if (isTerminal(state.status)) {
              terminalSeen = true;
              unsubscribe();
            }
            return { value: state, done: false };
          }
          if (terminalSeen || ended) {
            unsubscribe();
            if (failure && !terminalSeen) {
              const error = failure;
              failure = undefined;
              throw error;
            }
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
      },
      async return(): Promise<IteratorResult<RequestState<Output>>> {
        ended = true;
        unsubscribe();
        return { value: undefined, done: true };
      },
    };
    return iterator;
  }

  async function request(action: string, input: unknown, opts: RequestOptions = {}): Promise<unknown> {
    const { signal, onProgress } = opts;
    if (signal?.aborted) throw new RequestCancelledError('(not enqueued)');
    const { id } = await enqueue(action, input, opts);
    let cancelling: Promise<unknown> | undefined;
    const onAbort = () => {
      // The request ends CANCELLED on the server; the promise settles when that state arrives.
      cancelling ??= cancel(id).catch(() => undefined);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    try {
      for await (const state of follow(id)) {
        onProgress?.(state.progress, state.message, state);
        switch (state.status) {
          case 'COMPLETED':
            return state.result;
          case 'FAILED':
            throw new RequestFailedError(id, state.error, state.attempts);
          case 'CANCELLED':
            throw new RequestCancelledError(id);
          default:
        }
      }
      throw new Error(`request ${id}: its subscription ended before a final state`);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  return {
    request: request as StreamerClient<Actions>['request'],
    enqueue: enqueue as StreamerClient<Actions>['enqueue'],
    follow,
    cancel,
    execute,
    graphql,
    dispose: async () => {
      await graphql.dispose();
    },
  };
}

/** graphql-ws hands over errors as arrays of GraphQL errors, close events or errors. */
function asError(error: unknown): Error {
  if (error instanceof Error) return error;
  if (Array.isArray(error)) return new StreamerGraphQLError(error);
  if (error && typeof error === 'object' && 'code' in error) {
    const close = error as { code: number; reason?: string };
    return new Error(`the connection closed: ${close.code} ${close.reason ?? ''}`.trim());
  }
  return new Error(String(error));
}
