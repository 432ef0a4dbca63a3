import { fileURLToPath } from 'node:url'

import { playwright } from '@vitest/browser-playwright'
import type { Plugin } from 'vite'
import { defineConfig } from 'vitest/config'

import { NATS_AUTH_SKIP, natsAuth } from './test/transports/nats-auth.js'
import { peerLines, startPeer, stopPeer } from './test/transports/nats-peer.js'

// One suite, every engine: the same files run once with the native engine and once with the
// wasm engine in Node, and once more in Debian's chromium with the browser entry (wasm).
const engineSuite = ['test/**/*.test.ts']
const notEngineSuite = ['test/browser/**', '**/node_modules/**']
// Files that run in one engine project only, each with why the engine does not matter to them.
const ONE_ENGINE: Record<string, string> = {
  // The pages run the wasm engine themselves; the Node side serves files, or serves a Control over
  // HTTP whose answers are the same JSON on both engines (test/control*.test.ts checks that on both).
  'test/dashboard/**': 'the dashboard in chromium: the page is wasm whichever project runs it',
  'test/transport-asking.test.ts': "the transports' asking and catch-up helpers alone, no engine and no broker",
  'test/transports/nats-wire.test.ts': "the native engine's NATS wire alone (the wasm engine has none: its pulls are nats.js's)",
}

// Files that cannot run in a browser page, each with what it needs from Node. Everything else in
// the suite runs in chromium; a file that needs Node for a test or two skips just those
// (`it.skipIf(IN_BROWSER)` with the reason, test/engine.ts).
const NODE_ONLY: Record<string, string> = {
  'test/dashboard/**': 'drives Debian\'s chromium from Node (playwright) against the dashboard Vite serves; the page runs its own wasm engine',
  'test/docs.test.ts': 'reads README.md and docs/ from disk (node:fs)',
  'test/cli/**': 'the orrery command: node:util parseArgs, node:http servers, child processes serving the API',
  'test/bus-durable.test.ts': 'durable bus channels live on disk; its crash test kills child processes',
  'test/durability.test.ts': 'durable stores live on disk; crash tests kill child processes',
  'test/examples.test.ts': 'runs each example as a Node child process',
  'test/inspect.test.ts': "how objects print through Node's util.inspect (node:util)",
  'test/leak.test.ts': 'a child process with --expose-gc measures memory',
  'test/metrics.test.ts': "prom-client, which needs Node's modules (the Node entry alone loads it), and the Grafana board read from disk",
  'test/node-loader.test.ts': "Node's engine loader: the N-API addon, files on disk, process.emitWarning",
  'test/observability.test.ts': 'pino writing to a node:stream, and prom-client, which the Node entry alone loads',
  'test/poisoned-engine.test.ts': 'a child process whose engine is poisoned must still exit',
  'test/store-damage.test.ts': 'damages store files on disk',
  'test/store-poisoned.test.ts': 'a panic inside a store call, watched from a child process',
  'test/workers.test.ts': 'worker threads share one native core',
  'test/redis-driver.test.ts': 'a Redis server over TCP (node-redis); a page has no raw sockets',
  'test/workflow-crash.test.ts': 'a durable store on disk; child processes running workflows are killed with SIGKILL',
  'test/http/**': 'the HTTP API: Fastify on node:http, and schemathesis run as a child process',
  // All but those over NATS WebSocket (nats-ws, shared-store-ws, nats-credentials), which a page can do.
  'test/transports/!(nats-ws|shared-store-ws|nats-credentials).test.ts': 'real broker servers over TCP (node:net, node-redis); a page has no raw sockets',
}

const CHROMIUM = process.env['ORRERY_CHROMIUM'] ?? '/usr/bin/chromium'

// Node has a global WebSocket from 22 on; Node 20 only with this flag (the nats-over-WebSocket tests).
const NODE_EXEC_ARGV = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-websocket'] : []

// The tests import the Node entry (ts/node.ts); in the page the same imports reach the browser
// entry, so one file serves every project.
const nodeEntry = fileURLToPath(new URL('ts/node.ts', import.meta.url))
const browserEntry = fileURLToPath(new URL('ts/browser.ts', import.meta.url))
const browserEntryForTests: Plugin = {
  name: 'orrery-browser-entry',
  enforce: 'pre',
  async resolveId(source, importer, options) {
    if (!/(^|\/)node\.(js|ts)$/.test(source)) return null
    const resolved = await this.resolve(source, importer, { ...options, skipSelf: true })
    return resolved?.id === nodeEntry ? browserEntry : resolved
  },
}

export default defineConfig({
  test: {
    testTimeout: 20_000,
    // Starts the broker servers the transport tests need (scripts/servers.sh; ORRERY_SERVERS
    // chooses which, or `external` / `none`) and provides their URLs: inject('redisUrl').
    globalSetup: ['test/transports/global-setup.ts'],
    projects: [
      { extends: true, test: { name: 'native', include: engineSuite, exclude: notEngineSuite, env: { ORRERY_ENGINE: 'native' }, execArgv: NODE_EXEC_ARGV } },
      { extends: true, test: { name: 'wasm', include: engineSuite, exclude: [...notEngineSuite, ...Object.keys(ONE_ENGINE)], env: { ORRERY_ENGINE: 'wasm' }, execArgv: NODE_EXEC_ARGV } },
      {
        extends: true,
        plugins: [browserEntryForTests],
        // nats.js's WebSocket client, which the page imports on its first ws:// transport: bundled
        // up front, so its first use does not reload the page mid-test.
        optimizeDeps: { include: ['@nats-io/nats-core', '@nats-io/jetstream'] },
        test: {
          name: 'browser',
          include: engineSuite,
          exclude: [...Object.keys(NODE_ONLY), '**/node_modules/**'],
          env: { ORRERY_ENGINE: 'wasm', ORRERY_BROWSER: '1' },
          browser: {
            enabled: true,
            headless: true,
            // Debian's chromium, never a downloaded one (scripts/setup.sh installs it).
            provider: playwright({
              launchOptions: {
                executablePath: CHROMIUM,
                args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
              },
            }),
            instances: [{ browser: 'chromium' }],
            screenshotFailures: false,
            // Run in this (Node) process for a page: a Node process on the far side of NATS
            // (test/transports/nats-ws.test.ts), NATS servers that ask for credentials
            // (nats-credentials.test.ts).
            commands: {
              natsAuthServers: () => natsAuth(),
              natsAuthSkip: () => NATS_AUTH_SKIP ?? null,
              natsPeerStart: (_, url: string, prefix: string, strong?: string) => startPeer(url, prefix, undefined, undefined, strong),
              natsPeerLines: (_, pid: number) => peerLines(pid),
              natsPeerStop: (_, pid: number) => stopPeer(pid),
            },
          },
        },
      },
    ],
  },
})
