#!/usr/bin/env bash
# `npm pack` of @streamer/client, installed into an empty project with `ws`, runs the
# snippet of the package's README against the server at $1.
set -euo pipefail
url=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(cd "$here/../typescript" && npm pack --silent --pack-destination "$work" | tail -n 1)
cd "$work"
npm init -y >/dev/null
npm pkg set type=module >/dev/null
npm install --no-audit --no-fund --loglevel=error --prefer-offline "./$tarball" ws@8 >/dev/null
cat > snippet.mjs <<'JS'
import WebSocket from 'ws';
import { createStreamerClient } from '@streamer/client';

const client = createStreamerClient({ url: process.argv[2], webSocketImpl: WebSocket });
const result = await client.request('generateReport', { from: '2024-01-01', to: '2024-12-31', stepDelayMs: 50 }, {
  onProgress: (progress, message) => console.log(`${Math.round(progress * 100)}% - ${message}`),
});
console.log('Report URL:', result.url);
await client.dispose();
JS
node snippet.mjs "$url"
