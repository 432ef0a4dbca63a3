/**
 * Vitest global setup: the real broker servers the transport tests run against, started with
 * scripts/servers.sh and handed to the tests as URLs (`inject('redisUrl')`).
 *
 * ORRERY_SERVERS chooses them:
 * - unset: `redis`, `nats` and `kafka` (the servers this suite needs today; nats starts in 0.1 s,
 *   kafka in about 6 to 10 s on 2 cores, once per run);
 * - a comma list of redis, nats, kafka, or `all`: those are started;
 * - `external`: nothing is started; the URLs come from ORRERY_REDIS_URL, ORRERY_NATS_URL,
 *   ORRERY_NATS_WS_URL, ORRERY_KAFKA_BROKERS, ORRERY_KAFKA_SASL_BROKERS (the names
 *   `scripts/servers.sh env` prints);
 * - `none`: no servers; the server tests skip, saying so.
 *
 * Vitest runs a root globalSetup once for the root and once more for every project that extends the
 * root config (native, wasm, browser), all in its main process: the first call starts the servers,
 * the others wait for that start, and the last teardown stops them. Across processes servers.sh
 * shares them (`--for <pid>`): a server another test run started is joined and left to it, and one
 * started by hand is used and never stopped here.
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import type { TestProject } from 'vitest/node'

declare module 'vitest' {
  export interface ProvidedContext {
    /** redis://127.0.0.1:16379 (AOF, fsync always); undefined when no Redis is on this run. */
    redisUrl?: string
    /** nats://127.0.0.1:14222, JetStream with the default sync. */
    natsUrl?: string
    /** ws://127.0.0.1:18443, the same NATS server over WebSocket (no TLS). */
    natsWsUrl?: string
    /** 127.0.0.1:19092, single-node KRaft Kafka. */
    kafkaBrokers?: string
    /** 127.0.0.1:19096, the same broker's SASL listener (users in scripts/servers/kafka.properties and servers.sh). */
    kafkaSaslBrokers?: string
  }
}

type UrlKey = 'redisUrl' | 'natsUrl' | 'natsWsUrl' | 'kafkaBrokers' | 'kafkaSaslBrokers'

const SERVERS = ['redis', 'nats', 'kafka'] as const
type Server = (typeof SERVERS)[number]
const DEFAULT_SERVERS: readonly Server[] = ['redis', 'nats', 'kafka']

// The variables servers.sh's `env` prints, and what each becomes in the tests' context.
const URL_VARIABLES: Record<string, UrlKey> = {
  ORRERY_REDIS_URL: 'redisUrl',
  ORRERY_NATS_URL: 'natsUrl',
  ORRERY_NATS_WS_URL: 'natsWsUrl',
  ORRERY_KAFKA_BROKERS: 'kafkaBrokers',
  ORRERY_KAFKA_SASL_BROKERS: 'kafkaSaslBrokers',
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const SCRIPT = 'scripts/servers.sh'
const run = promisify(execFile)

type Plan = { mode: 'none' } | { mode: 'external' } | { mode: 'start'; servers: Server[] }

function plan(value: string | undefined): Plan {
  const text = (value ?? '').trim()
  if (text === '') return { mode: 'start', servers: [...DEFAULT_SERVERS] }
  if (text === 'none' || text === 'external') return { mode: text }
  const servers = new Set<Server>()
  for (const word of text.split(',').map((w) => w.trim())) {
    if (word === 'all') for (const s of SERVERS) servers.add(s)
    else if ((SERVERS as readonly string[]).includes(word)) servers.add(word as Server)
    else throw new Error(`ORRERY_SERVERS: unknown server "${word}" (use ${SERVERS.join(', ')}, all, external or none)`)
  }
  return { mode: 'start', servers: [...servers] }
}

async function servers(args: string[]): Promise<string> {
  try {
    // Kafka alone may take a minute and a half to answer on a busy machine.
    const { stdout } = await run('bash', [SCRIPT, ...args], { cwd: ROOT, timeout: 180_000, maxBuffer: 4 << 20 })
    return stdout
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string }
    throw new Error(`bash ${SCRIPT} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`)
  }
}

function urlsFrom(lines: Iterable<[string, string | undefined]>): Partial<Record<UrlKey, string>> {
  const urls: Partial<Record<UrlKey, string>> = {}
  for (const [name, value] of lines) {
    const key = URL_VARIABLES[name]
    if (key !== undefined && value) urls[key] = value
  }
  return urls
}

async function start(p: Plan): Promise<Partial<Record<UrlKey, string>>> {
  if (p.mode === 'none') return {}
  if (p.mode === 'external') {
    const urls = urlsFrom(Object.keys(URL_VARIABLES).map((name) => [name, process.env[name]]))
    if (Object.keys(urls).length === 0) {
      throw new Error(`ORRERY_SERVERS=external: set the servers' URLs (${Object.keys(URL_VARIABLES).join(', ')})`)
    }
    return urls
  }
  if (p.servers.length === 0) return {}
  try {
    await servers(['start', '--for', String(process.pid), ...p.servers])
  } catch (error) {
    // Those that did start are not left behind by a run that cannot go on.
    await servers(['stop', '--for', String(process.pid), ...p.servers]).catch(() => {})
    throw error
  }
  const env = await servers(['env', ...p.servers])
  return urlsFrom(env.split('\n').map((line) => line.split('=', 2) as [string, string | undefined]))
}

// Shared by every project's copy of this module (each project loads it anew) through the process.
const STATE = Symbol.for('orrery.test-servers')
interface State {
  users: number
  plan: Plan
  urls: Promise<Partial<Record<UrlKey, string>>>
}
const shared = globalThis as { [STATE]?: State }

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let state = shared[STATE]
  if (state === undefined) {
    const p = plan(process.env['ORRERY_SERVERS'])
    state = { users: 0, plan: p, urls: start(p) }
    shared[STATE] = state
  }
  state.users += 1
  const urls = await state.urls
  for (const [key, url] of Object.entries(urls) as [UrlKey, string][]) project.provide(key, url)
  const mine = state
  return async () => {
    mine.users -= 1
    if (mine.users > 0) return
    delete shared[STATE]
    if (mine.plan.mode === 'start' && mine.plan.servers.length > 0) await servers(['stop', '--for', String(process.pid), ...mine.plan.servers])
  }
}
