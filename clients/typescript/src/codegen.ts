#!/usr/bin/env node
/**
 * streamer-codegen: TypeScript types for a Streamer server's actions, from its schema.
 *
 *   npx streamer-codegen --url http://127.0.0.1:4000/graphql --out src/streamer.ts
 *   npx streamer-codegen --schema schema.graphql --out src/streamer.ts
 *
 * Writes one interface per input and output type and an `Actions` map, so that
 * `createStreamerClient<Actions>(…)` types `request` and `enqueue`. An action is a mutation
 * field with an `input` argument whose description names its output (`Output: \`Report\``).
 */
import { readFile, writeFile } from 'node:fs/promises';
import {
  buildClientSchema,
  buildSchema,
  getIntrospectionQuery,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isObjectType,
  isScalarType,
  isUnionType,
  type GraphQLNamedType,
  type GraphQLOutputType,
  type GraphQLSchema,
  type GraphQLType,
} from 'graphql';

/** What each built-in and Streamer scalar is in TypeScript. */
const SCALARS: Record<string, string> = {
  String: 'string',
  ID: 'string',
  Int: 'number',
  Float: 'number',
  Boolean: 'boolean',
  DateTime: 'string',
  JSON: 'unknown',
};

/** An action of the schema: its name, input type and output type. */
export interface Action {
  name: string;
  input: string;
  output: string;
}

/** The actions of `schema`: its mutations with an `input` argument and a named output. */
export function actions(schema: GraphQLSchema): Action[] {
  const mutation = schema.getMutationType();
  if (!mutation) return [];
  const found: Action[] = [];
  for (const field of Object.values(mutation.getFields())) {
    const input = field.args.find((arg) => arg.name === 'input');
    const output = /Output: `(\w+)`/.exec(field.description ?? '')?.[1];
    if (!input || !output) continue;
    const inputType = isNonNullType(input.type) ? input.type.ofType : input.type;
    if (!isInputObjectType(inputType)) continue;
    found.push({ name: field.name, input: inputType.name, output });
  }
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

function tsType(type: GraphQLType, nullable = true): string {
  if (isNonNullType(type)) return tsType(type.ofType, false);
  const inner = isListType(type) ? `Array<${tsType(type.ofType)}>` : namedType(type);
  return nullable ? `${inner} | null` : inner;
}

function namedType(type: GraphQLNamedType): string {
  if (isScalarType(type)) return SCALARS[type.name] ?? 'unknown';
  return type.name;
}

function docComment(description: string | null | undefined, indent = ''): string {
  if (!description) return '';
  const lines = description.split('\n').map((line) => `${indent} * ${line}`.trimEnd());
  return `${indent}/**\n${lines.join('\n')}\n${indent} */\n`;
}

/** The TypeScript module for `schema`. */
export function generate(schema: GraphQLSchema, source: string): string {
  const found = actions(schema);
  const emitted = new Set<string>();
  const blocks: string[] = [];
  const emit = (name: string) => {
    if (emitted.has(name)) return;
    emitted.add(name);
    const type = schema.getType(name);
    if (!type) throw new Error(`the schema has no type ${name}`);
    if (isInputObjectType(type)) {
      const fields = Object.values(type.getFields()).map((field) => {
        // A nullable field, or one with a default, may be left out.
        const optional = !isNonNullType(field.type) || field.defaultValue !== undefined;
        const fieldType = tsType(field.type);
        const named = isNonNullType(field.type) ? field.type.ofType : field.type;
        const base = isListType(named) ? named.ofType : named;
        const nested = isNonNullType(base) ? base.ofType : base;
        if (isInputObjectType(nested) || isEnumType(nested)) emit(nested.name);
        return `${docComment(field.description, '  ')}  ${field.name}${optional ? '?' : ''}: ${fieldType};`;
      });
      blocks.push(`${docComment(type.description)}export interface ${name} {\n${fields.join('\n')}\n}`);
    } else if (isObjectType(type)) {
      const fields = Object.values(type.getFields()).map((field) => {
        let named: GraphQLOutputType = field.type;
        while (isNonNullType(named) || isListType(named)) named = named.ofType;
        if (isObjectType(named) || isEnumType(named) || isUnionType(named)) emit(named.name);
        return `${docComment(field.description, '  ')}  ${field.name}: ${tsType(field.type)};`;
      });
      blocks.push(`${docComment(type.description)}export interface ${name} {\n${fields.join('\n')}\n}`);
    } else if (isEnumType(type)) {
      const values = type.getValues().map((value) => JSON.stringify(value.name));
      blocks.push(`${docComment(type.description)}export type ${name} = ${values.join(' | ')};`);
    } else if (isUnionType(type)) {
      for (const member of type.getTypes()) emit(member.name);
      blocks.push(`export type ${name} = ${type.getTypes().map((t) => t.name).join(' | ')};`);
    }
  };
  for (const action of found) {
    emit(action.input);
    emit(action.output);
  }
  const map = found.map((a) => `  ${a.name}: { input: ${a.input}; output: ${a.output} };`);
  return [
    `// Generated by streamer-codegen from ${source}. Do not edit: run it again.`,
    '',
    ...blocks.map((block) => `${block}\n`),
    '/** The server\'s actions: `createStreamerClient<Actions>(…)`. */',
    `export interface Actions {\n${map.join('\n')}\n}`,
    '',
  ].join('\n');
}

async function schemaFrom(args: Map<string, string>): Promise<[GraphQLSchema, string]> {
  const file = args.get('--schema');
  if (file) return [buildSchema(await readFile(file, 'utf8')), file];
  const url = args.get('--url');
  if (!url) throw new Error('usage: streamer-codegen (--url URL | --schema FILE) [--out FILE] [--header "Name: value"]');
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const header = args.get('--header');
  if (header) {
    const at = header.indexOf(':');
    headers[header.slice(0, at).trim()] = header.slice(at + 1).trim();
  }
  const http = url.replace(/^ws(s?):/, 'http$1:');
  const response = await fetch(http, {
    method: 'POST',
    headers,
    body: JSON.stringify({ query: getIntrospectionQuery({ descriptions: true }) }),
  });
  const body = (await response.json()) as { data?: unknown; errors?: { message: string }[] };
  if (!response.ok || !body.data) {
    throw new Error(`introspection failed (${response.status}): ${body.errors?.map((e) => e.message).join('; ') ?? ''}`);
  }
  return [buildClientSchema(body.data as Parameters<typeof buildClientSchema>[0]), http];
}

async function main(argv: string[]): Promise<void> {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    const value = argv[i + 1];
    if (!key?.startsWith('--') || value === undefined) throw new Error(`unexpected argument ${key ?? ''}`);
    args.set(key, value);
  }
  const [schema, source] = await schemaFrom(args);
  const found = actions(schema);
  if (found.length === 0) throw new Error(`no actions in ${source}: is it a Streamer server?`);
  const module = generate(schema, source);
  const out = args.get('--out');
  if (out) {
    await writeFile(out, module);
    console.error(`streamer-codegen: ${found.length} actions (${found.map((a) => a.name).join(', ')}) → ${out}`);
  } else {
    process.stdout.write(module);
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('streamer-codegen')) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(`streamer-codegen: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
