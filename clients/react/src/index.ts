/**
 * React bindings for `@streamer/client`.
 *
 * ```tsx
 * const report = useRequest(client, 'generateReport');
 * return (
 *   <>
 *     <button onClick={() => report.run({ from: '2024-01-01', to: '2024-12-31' })}>Run</button>
 *     {report.status === 'RUNNING' && <progress value={report.progress} />}
 *     {report.output && <a href={report.output.url}>Download</a>}
 *   </>
 * );
 * ```
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import {
  RequestCancelledError,
  RequestFailedError,
  type ActionsOf,
  type EnqueueOptions,
  type RequestState,
  type RequestStatus,
  type StreamerClient,
} from '@streamer/client';

/** What {@link useRequest} gives a component. */
export interface UseRequest<Input, Output> {
  /** Enqueues a request with `input` and follows it (a request run before is left alone). */
  run(input: Input, options?: EnqueueOptions): void;
  /** Cancels the current request on the server. */
  cancel(): void;
  /** The current request's latest state. */
  state: RequestState<Output> | null;
  /** `IDLE` before the first run, `ENQUEUING` until the server answers, then the request's status. */
  status: 'IDLE' | 'ENQUEUING' | RequestStatus;
  progress: number;
  message: string | null;
  /** The output, once COMPLETED. */
  output: Output | null;
  /** Why it did not complete: a refusal to enqueue, `RequestFailedError`, `RequestCancelledError`. */
  error: Error | null;
}

/**
 * Runs `action` through `client` and re-renders with each state of the request. On unmount
 * it stops following (the request goes on on the server; `cancel()` stops it there).
 */
export function useRequest<Actions extends ActionsOf<Actions>, A extends keyof Actions & string>(
  client: StreamerClient<Actions>,
  action: A,
): UseRequest<Actions[A]['input'], Actions[A]['output']> {
  type Output = Actions[A]['output'];
  const [state, setState] = useState<RequestState<Output> | null>(null);
  const [status, setStatus] = useState<UseRequest<unknown, Output>['status']>('IDLE');
  const [error, setError] = useState<Error | null>(null);
  // The run whose updates count: a newer run, or unmounting, ends the previous one's.
  const current = useRef<{ id?: string; stop: () => void } | null>(null);

  useEffect(
    () => () => {
      current.current?.stop();
      current.current = null;
    },
    [],
  );

  const run = useCallback(
    (input: Actions[A]['input'], options?: EnqueueOptions) => {
      current.current?.stop();
      let live = true;
      let following: AsyncIterableIterator<RequestState<Output>> | undefined;
      const started = {
        id: undefined as string | undefined,
        stop: () => {
          live = false;
          void following?.return?.();
        },
      };
      current.current = started;
      setState(null);
      setError(null);
      setStatus('ENQUEUING');
      void (async () => {
        try {
          const { id } = await client.enqueue(action, input, options);
          started.id = id;
          if (!live) return;
          following = client.follow<Output>(id);
          for await (const next of following) {
            if (!live) return;
            setState(next);
            setStatus(next.status);
            if (next.status === 'FAILED') setError(new RequestFailedError(id, next.error, next.attempts));
            if (next.status === 'CANCELLED') setError(new RequestCancelledError(id));
          }
        } catch (caught) {
          if (!live) return;
          setError(caught instanceof Error ? caught : new Error(String(caught)));
          setStatus((previous) => (previous === 'ENQUEUING' ? 'IDLE' : previous));
        }
      })();
    },
    [client, action],
  );

  const cancel = useCallback(() => {
    const id = current.current?.id;
    if (id) void client.cancel(id).catch(() => undefined);
  }, [client]);

  return {
    run,
    cancel,
    state,
    status,
    progress: state?.progress ?? 0,
    message: state?.message ?? null,
    output: state?.status === 'COMPLETED' ? (state.result as Output) : null,
    error,
  };
}
