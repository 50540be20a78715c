// The run dashboard: the viewer's runs through the public GraphQL API only, with the
// viewer's own token (kept in this tab's sessionStorage). Queries and mutations go over
// `POST /graphql`; a run's live state and its timeline (every version from its history) come
// from one `requestProgress(id, afterVersion: 0)` subscription over graphql-transport-ws.
// Built by `tsc -p clients/dashboard` into gateway/assets/dashboard/dashboard.js.

interface WsClient {
  subscribe(
    payload: { query: string; variables?: Record<string, unknown> },
    sink: {
      next(value: { data?: any; errors?: Array<{ message: string }> }): void;
      error(error: unknown): void;
      complete(): void;
    },
  ): () => void;
  dispose(): void;
}

declare const graphqlWs: { createClient(options: Record<string, unknown>): WsClient };

const TOKEN_KEY = 'streamer.token';
const STATUSES = ['QUEUED', 'RUNNING', 'RETRYING', 'WAITING', 'COMPLETED', 'FAILED', 'CANCELLED'];
const TERMINAL = ['COMPLETED', 'FAILED', 'CANCELLED'];
const PAGE = 20;
/** A child's row: fewer fields, so that a page of them stays within the complexity limit. */
const CHILD_FIELDS = 'id action status progress message updatedAt';
const RUN_FIELDS =
  'id action status progress message version attempts createdAt updatedAt parent { id } batch { total queued running completed failed cancelled }';

let socket: WsClient | null = null;
/** What the current view must stop when another one opens (a subscription, a timer). */
let leave: Array<() => void> = [];

function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

function socketUrl(): string {
  const configured =
    document.querySelector<HTMLMetaElement>('meta[name="streamer-websocket"]')?.content ?? '';
  return configured && !configured.startsWith('%')
    ? configured
    : location.origin.replace(/^http/, 'ws') + '/graphql';
}

function ws(): WsClient {
  if (!socket) {
    const bearer = token();
    socket = graphqlWs.createClient({
      url: socketUrl(),
      connectionParams: bearer ? { authorization: `Bearer ${bearer}` } : undefined,
      lazy: true,
    });
  }
  return socket;
}

/** Runs a query or mutation over HTTP; throws the first error's message. */
async function gql(query: string, variables: Record<string, unknown> = {}): Promise<any> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const bearer = token();
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const response = await fetch('/graphql', {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
  });
  const answer = await response.json();
  if (answer.errors?.length) throw new Error(answer.errors[0].message);
  return answer.data;
}

/** An element with attributes and children. */
function el(
  tag: string,
  attributes: Record<string, string> = {},
  ...children: Array<Node | string | null>
): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) {
    if (child !== null) element.append(child);
  }
  return element;
}

function bar(progress: number): HTMLElement {
  const fill = el('span');
  fill.style.width = `${Math.round(progress * 100)}%`;
  return el('span', { class: 'bar', 'data-test': 'progress', 'data-progress': String(progress) }, fill);
}

function statusTag(value: string): HTMLElement {
  return el('span', { class: `status ${value}`, 'data-test': 'status' }, value);
}

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleTimeString() : '';
}

function counts(batch: any): string {
  return batch
    ? `${batch.completed}/${batch.total} completed · ${batch.running} running · ${batch.queued} queued · ${batch.failed} failed · ${batch.cancelled} cancelled`
    : '';
}

function show(...content: Array<Node | string | null>): HTMLElement {
  const main = document.getElementById('main')!;
  main.replaceChildren(...content.filter((c): c is Node | string => c !== null));
  return main;
}

function failure(error: unknown): HTMLElement {
  return el('p', { class: 'error', 'data-test': 'error' }, String((error as Error).message ?? error));
}

function runRow(run: any, actions: HTMLElement | null = null): HTMLElement {
  return el(
    'tr',
    { 'data-test': 'run-row', 'data-id': run.id, 'data-status': run.status },
    el('td', {}, el('a', { href: `#/run/${encodeURIComponent(run.id)}` }, run.id)),
    el('td', {}, run.action),
    el('td', {}, statusTag(run.status)),
    el('td', {}, bar(run.progress), ' ', run.message ?? ''),
    el('td', {}, counts(run.batch)),
    el('td', {}, when(run.updatedAt)),
    el('td', {}, actions),
  );
}

function table(headings: string[], rows: HTMLElement[]): HTMLElement {
  return el(
    'table',
    {},
    el('thead', {}, el('tr', {}, ...headings.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows),
  );
}

/** Runs, newest first, filtered by status, action and parent, a page at a time; refreshed every second. */
async function runsView(params: URLSearchParams): Promise<void> {
  const filter = {
    status: params.get('status') || null,
    action: params.get('action') || '',
    parent: params.get('parent') || null,
  };
  const after = params.get('after');
  const { actions } = await gql('{ actions }');
  const select = (name: string, values: string[], current: string) =>
    el(
      'select',
      { name, 'data-test': `filter-${name}` },
      el('option', { value: '' }, 'any'),
      ...values.map((v) => {
        const option = el('option', { value: v }, v);
        if (v === current) option.setAttribute('selected', '');
        return option;
      }),
    );
  const form = el(
    'form',
    { class: 'filters' },
    el('label', {}, 'Status', select('status', STATUSES, filter.status ?? '')),
    el('label', {}, 'Action', select('action', actions, filter.action)),
    el('label', {}, 'Parent', el('input', { name: 'parent', value: filter.parent ?? '', 'data-test': 'filter-parent' })),
    el('button', { type: 'submit' }, 'Filter'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form as HTMLFormElement);
    const next = new URLSearchParams();
    for (const [key, value] of data) if (value) next.set(key, String(value));
    location.hash = `#/runs?${next}`;
  });
  const list = el('div', { 'data-test': 'runs' });
  show(el('h2', {}, 'Runs'), form, list);
  const refresh = async () => {
    try {
      const data = await gql(
        `query($status: RequestStatus, $parent: ID, $after: String) { requests(status: $status, parent: $parent, first: ${PAGE}, after: $after, newestFirst: true) { edges { node { ${RUN_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
        { status: filter.status, parent: filter.parent, after },
      );
      const runs = data.requests.edges
        .map((edge: any) => edge.node)
        .filter((run: any) => !filter.action || run.action === filter.action);
      const pages = el('p', {});
      if (data.requests.pageInfo.hasNextPage) {
        const next = new URLSearchParams(params);
        next.set('after', data.requests.pageInfo.endCursor);
        pages.append(el('a', { href: `#/runs?${next}`, 'data-test': 'next-page' }, 'Older runs →'));
      }
      list.replaceChildren(
        table(['Run', 'Action', 'Status', 'Progress', 'Children', 'Updated', ''], runs.map((run: any) => runRow(run))),
        pages,
      );
    } catch (error) {
      list.replaceChildren(failure(error));
    }
  };
  await refresh();
  const timer = setInterval(refresh, 1000);
  leave.push(() => clearInterval(timer));
}

/** One run: live state, timeline, output, children, and what can be done to it. */
async function runView(id: string): Promise<void> {
  const head = el('div', { 'data-test': 'run', 'data-id': id });
  const buttons = el('p', {});
  const output = el('pre', { 'data-test': 'output' }, '');
  const children = el('div', { 'data-test': 'children' });
  const timelineBody = el('tbody', {});
  const timeline = el(
    'table',
    { 'data-test': 'timeline' },
    el('thead', {}, el('tr', {}, ...['Version', 'Time', 'Status', 'Progress', 'Message', 'Attempts', 'Error'].map((h) => el('th', {}, h)))),
    timelineBody,
  );
  show(el('h2', {}, `Run ${id}`), head, buttons, el('h3', {}, 'Output'), output, el('h3', {}, 'Children'), children, el('h3', {}, 'Timeline'), timeline);

  const act = async (mutation: string) => {
    try {
      await gql(`mutation($id: ID!) { ${mutation}(id: $id) { id } }`, { id });
    } catch (error) {
      buttons.append(failure(error));
    }
  };
  const render = (state: any) => {
    head.setAttribute('data-status', state.status);
    head.replaceChildren(
      el('p', {}, statusTag(state.status), ' ', bar(state.progress), ' ', `${Math.round(state.progress * 100)}% `, state.message ?? ''),
      el('p', {}, `${state.action} · version ${state.version} · attempt ${state.attempts}`, state.parent ? ' · parent ' : '', state.parent ? el('a', { href: `#/run/${encodeURIComponent(state.parent.id)}` }, state.parent.id) : null),
      state.error ? el('p', { class: 'error' }, `${state.error.code}: ${state.error.message}`) : '',
    );
    buttons.replaceChildren();
    if (!TERMINAL.includes(state.status)) {
      const cancel = el('button', { 'data-test': 'cancel' }, 'Cancel');
      cancel.addEventListener('click', () => act('cancelRequest'));
      buttons.append(cancel);
    }
    if (state.status === 'FAILED') {
      const retry = el('button', { 'data-test': 'retry' }, 'Retry');
      retry.addEventListener('click', () => act('retryRequest'));
      buttons.append(retry);
    }
    output.textContent = state.result == null ? '' : JSON.stringify(state.result, null, 2);
    timelineBody.append(
      el(
        'tr',
        { 'data-test': 'timeline-row', 'data-version': String(state.version) },
        el('td', {}, String(state.version)),
        el('td', {}, when(state.updatedAt)),
        el('td', {}, statusTag(state.status)),
        el('td', {}, `${Math.round(state.progress * 100)}%`),
        el('td', {}, state.message ?? ''),
        el('td', {}, String(state.attempts)),
        el('td', {}, state.error ? state.error.code : ''),
      ),
    );
  };
  const loadChildren = async () => {
    try {
      const data = await gql(
        `query($id: ID!) { request(id: $id) { batch { total queued running completed failed cancelled } children(first: ${PAGE}) { edges { node { ${CHILD_FIELDS} } } pageInfo { hasNextPage } } } }`,
        { id },
      );
      if (!data.request) return;
      const rows = data.request.children.edges.map((edge: any) => runRow(edge.node));
      children.replaceChildren(
        el('p', {}, counts(data.request.batch)),
        rows.length ? table(['Run', 'Action', 'Status', 'Progress', 'Children', 'Updated', ''], rows) : 'none',
        data.request.children.pageInfo.hasNextPage ? el('a', { href: `#/runs?parent=${encodeURIComponent(id)}` }, 'All children →') : '',
      );
    } catch (error) {
      children.replaceChildren(failure(error));
    }
  };
  const stop = ws().subscribe(
    {
      query: `subscription($id: ID!) { requestProgress(id: $id, afterVersion: 0) { ${RUN_FIELDS} result error { code message } } }`,
      variables: { id },
    },
    {
      next: (value) => {
        if (value.errors?.length) {
          head.replaceChildren(failure(value.errors[0].message));
          return;
        }
        render(value.data.requestProgress);
        void loadChildren();
      },
      // A closed socket, or the operation's GraphQL errors (a request of another tenant is
      // as unknown as one that never was).
      error: (error) =>
        head.replaceChildren(
          failure(Array.isArray(error) ? new Error(error[0]?.message ?? 'error') : error),
        ),
      complete: () => undefined,
    },
  );
  leave.push(stop);
}

/** The FAILED runs, each with a re-drive. */
async function deadView(): Promise<void> {
  const list = el('div', { 'data-test': 'dead' });
  show(el('h2', {}, 'Dead letters'), el('p', {}, 'Runs that failed for good. Retry re-drives one with its whole retry budget.'), list);
  const refresh = async () => {
    try {
      const data = await gql(
        `{ requests(status: FAILED, first: ${PAGE}, newestFirst: true) { edges { node { ${RUN_FIELDS} error { code message } } } } }`,
      );
      const rows = data.requests.edges.map((edge: any) => {
        const run = edge.node;
        const retry = el('button', { 'data-test': 'redrive' }, 'Retry');
        retry.addEventListener('click', async () => {
          await gql('mutation($id: ID!) { retryRequest(id: $id) { id } }', { id: run.id });
          await refresh();
        });
        const row = runRow(run, retry);
        row.children[3]!.append(el('div', { class: 'error' }, `${run.error.code}: ${run.error.message}`));
        return row;
      });
      list.replaceChildren(rows.length ? table(['Run', 'Action', 'Status', 'Progress', 'Children', 'Updated', ''], rows) : 'No dead letters.');
    } catch (error) {
      list.replaceChildren(failure(error));
    }
  };
  await refresh();
  const timer = setInterval(refresh, 2000);
  leave.push(() => clearInterval(timer));
}

/** The named type under any list and non-null wrappers. */
function named(type: any): any {
  return type.ofType ? named(type.ofType) : type;
}

/** Enqueue a run of an action from a form built from its input type, or from a template. */
async function newView(): Promise<void> {
  const data = await gql(
    '{ __schema { mutationType { fields { name args { name type { kind name ofType { kind name ofType { kind name } } } } } } } templates { name action version description } }',
  );
  const typed = data.__schema.mutationType.fields.filter((field: any) =>
    field.args.some((arg: any) => arg.name === 'input' && named(arg.type).kind === 'INPUT_OBJECT'),
  );
  const picker = el('select', { 'data-test': 'new-action' }, ...typed.map((field: any) => el('option', { value: field.name }, field.name)));
  const fields = el('div', {});
  const message = el('p', {});
  const form = el('form', { class: 'enqueue', 'data-test': 'new-form' }, el('label', {}, el('span', {}, 'Action'), picker), fields, el('button', { type: 'submit', 'data-test': 'enqueue' }, 'Enqueue'), message);
  const build = async () => {
    const field = typed.find((f: any) => f.name === (picker as HTMLSelectElement).value);
    const inputType = named(field.args.find((arg: any) => arg.name === 'input').type).name;
    const described = await gql(
      'query($name: String!) { __type(name: $name) { inputFields { name description defaultValue type { kind name ofType { kind name ofType { kind name } } } } } }',
      { name: inputType },
    );
    fields.replaceChildren(
      ...described.__type.inputFields.map((input: any) => {
        const type = named(input.type);
        const required = input.type.kind === 'NON_NULL' && input.defaultValue == null;
        const control = el('input', {
          name: input.name,
          'data-kind': type.kind === 'SCALAR' ? type.name : 'JSON',
          placeholder: type.kind === 'SCALAR' ? type.name : 'JSON',
          'data-test': `field-${input.name}`,
        });
        if (input.defaultValue != null) control.setAttribute('value', input.defaultValue.replace(/^"|"$/g, ''));
        if (required) control.setAttribute('required', '');
        return el('label', { title: input.description ?? '' }, el('span', {}, input.name + (required ? ' *' : '')), control);
      }),
    );
  };
  picker.addEventListener('change', () => void build());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const payload: Record<string, unknown> = {};
    for (const control of Array.from(fields.querySelectorAll('input'))) {
      if (control.value === '') continue;
      const kind = control.getAttribute('data-kind');
      payload[control.name] =
        kind === 'Int' || kind === 'Float' ? Number(control.value)
          : kind === 'Boolean' ? control.value === 'true'
            : kind === 'JSON' ? JSON.parse(control.value) : control.value;
    }
    try {
      const answer = await gql('mutation($action: String!, $payload: JSON!) { enqueue(action: $action, payload: $payload) { id } }', {
        action: (picker as HTMLSelectElement).value,
        payload,
      });
      location.hash = `#/run/${encodeURIComponent(answer.enqueue.id)}`;
    } catch (error) {
      message.replaceChildren(failure(error));
    }
  });
  const templates = data.templates.map((template: any) => {
    const run = el('button', { 'data-test': 'run-template' }, 'Run');
    run.addEventListener('click', async () => {
      const answer = await gql('mutation($name: String!) { enqueueTemplate(name: $name) { id } }', { name: template.name });
      location.hash = `#/run/${encodeURIComponent(answer.enqueueTemplate.id)}`;
    });
    return el('tr', {}, el('td', {}, template.name), el('td', {}, template.action), el('td', {}, `v${template.version}`), el('td', {}, template.description ?? ''), el('td', {}, run));
  });
  show(
    el('h2', {}, 'New run'),
    form,
    el('h3', {}, 'From a template'),
    templates.length ? table(['Template', 'Action', 'Version', 'Description', ''], templates) : el('p', {}, 'No templates.'),
  );
  if (typed.length) await build();
}

/** Routes run one after another: a view that is still loading never overwrites the next. */
let routing: Promise<void> = Promise.resolve();

function route(): Promise<void> {
  routing = routing.then(render);
  return routing;
}

async function render(): Promise<void> {
  for (const stop of leave) stop();
  leave = [];
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query ?? '');
  try {
    if (path?.startsWith('/run/')) await runView(decodeURIComponent(path.slice('/run/'.length)));
    else if (path === '/dead') await deadView();
    else if (path === '/new') await newView();
    else await runsView(params);
  } catch (error) {
    show(failure(error));
  }
}

function start(): void {
  const field = document.getElementById('token') as HTMLInputElement;
  field.value = token();
  field.addEventListener('change', () => {
    sessionStorage.setItem(TOKEN_KEY, field.value.trim());
    socket?.dispose();
    socket = null;
    void route();
  });
  window.addEventListener('hashchange', () => void route());
  void route();
}

start();
