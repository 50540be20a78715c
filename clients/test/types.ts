// Type checks of @streamer/client with the types streamer-codegen generated from the example
// app (./generated/actions.ts, written by the test): correct calls compile, wrong ones must
// not (each `@ts-expect-error` fails the check if its line compiles).
import { createStreamerClient, type RequestState } from '@streamer/client';
import type { Actions, Report } from './generated/actions.js';

const client = createStreamerClient<Actions>({ url: 'ws://127.0.0.1:4000/graphql' });

export async function correct(): Promise<void> {
  const report: Report = await client.request('generateReport', { from: '2024-01-01', to: '2024-12-31' }, {
    onProgress: (progress: number, message: string | null, state: RequestState<Report>) => {
      console.log(progress, message, state.version);
    },
  });
  const url: string = report.url;
  const rows: number = report.rows;
  const imported: number = (await client.request('flakyImport', { failTimes: 2 })).imported;
  const { id } = await client.enqueue('generateReport', { from: 'a', to: 'b', rows: 10, stepDelayMs: null });
  console.log(url, rows, imported, id);
}

export async function wrong(): Promise<void> {
  // @ts-expect-error: `from` is a string
  await client.request('generateReport', { from: 1, to: '2024-12-31' });
  // @ts-expect-error: `to` is required
  await client.request('generateReport', { from: '2024-01-01' });
  // @ts-expect-error: no such action
  await client.request('sendEmail', {});
  // @ts-expect-error: the output has no `imported`
  const n: number = (await client.request('generateReport', { from: 'a', to: 'b' })).imported;
  // @ts-expect-error: a report's url is a string
  const u: number = (await client.request('generateReport', { from: 'a', to: 'b' })).url;
  console.log(n, u);
}
