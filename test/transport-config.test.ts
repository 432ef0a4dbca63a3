/**
 * `Orrery.create({ transports, bindings })`: every option checked before anything connects (a
 * typed code naming the option), connection failures as TRANSPORT_UNAVAILABLE / TRANSPORT_AUTH
 * with nothing left open, `bus.binding`, the capability table, and the refusals of what a bound
 * channel's backend cannot do (CAPABILITY_UNSUPPORTED at the call, nothing published), the same
 * on both engines.
 */
import { afterEach, describe, expect, inject, it } from 'vitest'

import { type ErrorCode, Orrery, type OrreryOptions, TRANSPORT_CAPABILITIES } from '../ts/node.js'
import { expectRefused } from './bad-input.js'
import { ENGINE, IN_BROWSER } from './engine.js'

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? {}

/** The test Redis server (scripts/servers.sh, through the global setup), or the port it listens on. */
function redisUrl(): string {
  try {
    const url = (inject as (key: string) => unknown)('redisUrl')
    if (typeof url === 'string' && url !== '') return url
  } catch {
    // No global setup providing it: the port scripts/servers.sh uses.
  }
  return env['ORRERY_REDIS_URL'] ?? 'redis://127.0.0.1:16379'
}

/** Waits until `done()` holds (at most 5 s). */
async function until(done: () => boolean): Promise<void> {
  const end = Date.now() + 5_000
  while (!done()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** `values` with a hole (an entry left out, not `undefined`) at `at`. */
function withHole(values: readonly string[], at: number): unknown[] {
  const list: unknown[] = new Array(values.length + 1)
  values.forEach((value, i) => {
    list[i < at ? i : i + 1] = value
  })
  return list
}

const NO_SERVERS = env['ORRERY_SERVERS'] === 'none'
const CLOSED_PORT = 'redis://127.0.0.1:1'

const opened: Orrery[] = []
afterEach(async () => {
  for (const o of opened.splice(0)) await o.shutdown()
})

async function create(options: OrreryOptions): Promise<Orrery> {
  const o = await Orrery.create({ engine: ENGINE, ...options })
  opened.push(o)
  return o
}

describe(`transport options are checked before anything connects (${ENGINE})`, () => {
  // Every transport here points at a closed port: a check that let a value through would end in
  // TRANSPORT_UNAVAILABLE instead of the code asked for.
  const bad: Array<[string, unknown, unknown, ErrorCode, string]> = [
    ['transports not an object', 'redis', undefined, 'INVALID_OPTION', 'transports'],
    ['transports an array', [], undefined, 'INVALID_OPTION', 'transports'],
    ['a transport null', { main: null }, undefined, 'INVALID_OPTION', 'transports.main'],
    ['a transport left out', { main: undefined }, undefined, 'INVALID_OPTION', 'transports.main'],
    ['an unknown kind', { main: { kind: 'rabbitmq', url: CLOSED_PORT } }, undefined, 'INVALID_OPTION', 'transports.main.kind'],
    ['kind by prototype', { main: { kind: 'toString', url: CLOSED_PORT } }, undefined, 'INVALID_OPTION', 'transports.main.kind'],
    ['no url', { main: { kind: 'redis' } }, undefined, 'INVALID_OPTION', 'transports.main.url'],
    ['an http url', { main: { kind: 'redis', url: 'http://127.0.0.1:1' } }, undefined, 'INVALID_OPTION', 'transports.main.url'],
    ['not a url', { main: { kind: 'redis', url: 'localhost' } }, undefined, 'INVALID_OPTION', 'transports.main.url'],
    ['a url number', { main: { kind: 'redis', url: 6379 } }, undefined, 'INVALID_OPTION', 'transports.main.url'],
    ['a password number', { main: { kind: 'redis', url: CLOSED_PORT, password: 1 } }, undefined, 'INVALID_OPTION', 'transports.main.password'],
    [
      'a username with a lone surrogate',
      { main: { kind: 'redis', url: CLOSED_PORT, username: 'a\uD800' } },
      undefined,
      'INVALID_OPTION',
      'transports.main.username',
    ],
    ['tls a string', { main: { kind: 'redis', url: CLOSED_PORT, tls: 'yes' } }, undefined, 'INVALID_OPTION', 'transports.main.tls'],
    [
      'tls an unknown setting',
      { main: { kind: 'redis', url: CLOSED_PORT, tls: { cafile: 'ca.pem' } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.tls.cafile',
    ],
    ['tls.ca a number', { main: { kind: 'redis', url: CLOSED_PORT, tls: { ca: 5 } } }, undefined, 'INVALID_OPTION', 'transports.main.tls.ca'],
    ['tls.ca an empty list', { main: { kind: 'nats', servers: 'tls://127.0.0.1:1', tls: { ca: [] } } }, undefined, 'INVALID_OPTION', 'transports.main.tls.ca'],
    ['a nats server without a host', { main: { kind: 'nats', servers: 'nats://:14222' } }, undefined, 'INVALID_OPTION', 'transports.main.servers'],
    // The clients read no query: a setting given there would be dropped without a word.
    ['a nats server with a query', { main: { kind: 'nats', servers: 'NATS://127.0.0.1:1?tls=true' } }, undefined, 'INVALID_OPTION', 'transports.main.servers'],
    ['a nats server with a fragment', { main: { kind: 'nats', servers: 'tls://127.0.0.1:1/#x' } }, undefined, 'INVALID_OPTION', 'transports.main.servers'],
    [
      'a nats server on port 0',
      { main: { kind: 'nats', servers: ['nats://127.0.0.1:1', 'nats://127.0.0.1:0'] } },
      undefined,
      'INVALID_OPTION',
      'transports.main.servers[1]',
    ],
    [
      'a kafka sasl setting it does not know',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', sasl: { mechanism: 'PLAIN', username: 'u', password: 'p', x: 1 } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.sasl.x',
    ],
    [
      'tls.ca an empty string in a list',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', tls: { ca: ['pem', ''] } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.tls.ca[1]',
    ],
    ['tls.cert without key', { main: { kind: 'redis', url: CLOSED_PORT, tls: { cert: 'pem' } } }, undefined, 'INVALID_OPTION', 'transports.main.tls.cert'],
    [
      'tls.servername empty',
      { main: { kind: 'redis', url: CLOSED_PORT, tls: { servername: '' } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.tls.servername',
    ],
    [
      'tls.rejectUnauthorized a string',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', tls: { rejectUnauthorized: 'no' } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.tls.rejectUnauthorized',
    ],
    ['tls false with tls:// servers', { main: { kind: 'nats', servers: 'tls://127.0.0.1:1', tls: false } }, undefined, 'INVALID_OPTION', 'transports.main.tls'],
    // Holes in a list are left-out entries, refused as `undefined` is (map would skip them unchecked).
    [
      'a hole in nats servers',
      { main: { kind: 'nats', servers: withHole(['nats://127.0.0.1:1'], 0) } },
      undefined,
      'INVALID_OPTION',
      'transports.main.servers[0]',
    ],
    [
      'a hole in kafka brokers',
      { main: { kind: 'kafka', brokers: withHole(['127.0.0.1:1', '127.0.0.1:2'], 1) } },
      undefined,
      'INVALID_OPTION',
      'transports.main.brokers[1]',
    ],
    [
      'a hole in tls.ca',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', tls: { ca: withHole(['pem', 'pem'], 1) } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.tls.ca[1]',
    ],
    [
      'an empty kafka sasl username',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', sasl: { mechanism: 'PLAIN', username: '', password: 'p' } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.sasl.username',
    ],
    // Kafka sends the client id with a 16-bit length: a longer one crashed its client.
    [
      'a kafka clientId over 32,767 bytes',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', clientId: 'x'.repeat(32_768) } },
      undefined,
      'INVALID_OPTION',
      'transports.main.clientId',
    ],
    [
      'a kafka clientId over 32,767 bytes in UTF-8',
      { main: { kind: 'kafka', brokers: '127.0.0.1:1', clientId: 'é'.repeat(16_384) } },
      undefined,
      'INVALID_OPTION',
      'transports.main.clientId',
    ],
    [
      'tls settings with WebSocket servers',
      { main: { kind: 'nats', servers: 'wss://127.0.0.1:1', tls: { ca: 'pem' } } },
      undefined,
      'INVALID_OPTION',
      'transports.main.tls',
    ],
    ['keyPrefix a number', { main: { kind: 'redis', url: CLOSED_PORT, keyPrefix: 1 } }, undefined, 'INVALID_OPTION', 'transports.main.keyPrefix'],
    ['connectTimeoutMs 0', { main: { kind: 'redis', url: CLOSED_PORT, connectTimeoutMs: 0 } }, undefined, 'INVALID_OPTION', 'transports.main.connectTimeoutMs'],
    [
      'connectTimeoutMs a string',
      { main: { kind: 'redis', url: CLOSED_PORT, connectTimeoutMs: '10' } },
      undefined,
      'INVALID_OPTION',
      'transports.main.connectTimeoutMs',
    ],
    [
      'publishTimeoutMs past a timer',
      { main: { kind: 'redis', url: CLOSED_PORT, publishTimeoutMs: 2 ** 31 } },
      undefined,
      'INVALID_OPTION',
      'transports.main.publishTimeoutMs',
    ],
    [
      'publishTimeoutMs NaN',
      { main: { kind: 'redis', url: CLOSED_PORT, publishTimeoutMs: Number.NaN } },
      undefined,
      'INVALID_OPTION',
      'transports.main.publishTimeoutMs',
    ],
    ['a transport named with a space', { 'a b': { kind: 'memory' } }, undefined, 'INVALID_OPTION', 'transports'],
    ['bindings not an object', { main: { kind: 'redis', url: CLOSED_PORT } }, 'orders', 'INVALID_OPTION', 'bindings'],
    ['a binding to an unknown transport', { main: { kind: 'redis', url: CLOSED_PORT } }, { orders: 'other' }, 'INVALID_OPTION', 'bindings["orders"]'],
    ['a binding to a prototype name', { main: { kind: 'redis', url: CLOSED_PORT } }, { orders: 'toString' }, 'INVALID_OPTION', 'bindings["orders"]'],
    ['a binding value not a string', { main: { kind: 'redis', url: CLOSED_PORT } }, { orders: 1 }, 'INVALID_OPTION', 'bindings["orders"]'],
    ['a binding with * inside', { main: { kind: 'redis', url: CLOSED_PORT } }, { 'a*b': 'main' }, 'INVALID_OPTION', 'bindings'],
    ['a binding with a bad character', { main: { kind: 'redis', url: CLOSED_PORT } }, { é: 'main' }, 'INVALID_OPTION', 'bindings'],
    ['bindings without transports', undefined, { orders: 'main' }, 'INVALID_OPTION', 'bindings["orders"]'],
  ]
  for (const [label, transports, bindings, code, option] of bad) {
    it(`refuses ${label} with ${code} naming ${option}`, async () => {
      const err = (await expectRefused(() => Orrery.create({ engine: ENGINE, transports, bindings } as OrreryOptions), code)) as Error & {
        details: Record<string, unknown>
      }
      expect(err.details['option']).toBe(option)
    })
  }

  it('never shows a secret given to an option that holds one, or given where another value belongs', async () => {
    const S = 'Sup3rSecretValue-of-some-length'
    const N = 987654321987
    // Well-formed, made up: a user's NKey seed, and a .creds file holding another.
    const SEED = `SU${'Q'.repeat(56)}`
    const CREDS_SEED = `SU${'R'.repeat(56)}`
    const CREDS = `-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.eyJzdWIiOiJVIn0.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${CREDS_SEED}\n------END USER NKEY SEED------\n`
    const signing = (value: unknown) => ({ main: { kind: 'redis', url: CLOSED_PORT, signing: value } })
    const cases: Array<[unknown, string]> = [
      [signing(S), 'transports.main.signing'],
      [signing({ keys: S, sign: 'k1' }), 'transports.main.signing.keys'],
      [signing({ keys: [S], sign: 'k1' }), 'transports.main.signing.keys'],
      [signing({ keys: { [S.replace(/-/g, ' ')]: 'k1-but-a-secret-here' }, sign: 'k1' }), 'transports.main.signing.keys'],
      [signing({ keys: { k1: 'short-secret' }, sign: 'k1' }), 'transports.main.signing.keys.k1'],
      [signing({ keys: { k1: N }, sign: 'k1' }), 'transports.main.signing.keys.k1'],
      [signing({ keys: { k1: `${S}!` }, sign: S }), 'transports.main.signing.sign'],
      [signing({ keys: { k1: `${S}!` }, sign: `k1${'x'.repeat(70)}` }), 'transports.main.signing.sign'],
      [{ main: { kind: 'redis', url: CLOSED_PORT, password: N } }, 'transports.main.password'],
      [{ main: { kind: 'redis', url: CLOSED_PORT, password: `${S}\uD800` } }, 'transports.main.password'],
      [{ main: { kind: 'redis', url: `redis://u:${S}@127.0.0.1:99999` } }, 'transports.main.url'],
      [{ main: { kind: 'redis', url: `http://:${S}@127.0.0.1:1` } }, 'transports.main.url'],
      [{ main: `redis://:${S.slice(0, 12)}@h:1` }, 'transports.main'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', token: N } }, 'transports.main.token'],
      [{ main: { kind: 'redis', url: CLOSED_PORT, tls: S } }, 'transports.main.tls'],
      // A connection has one set of credentials: in the URLs or as options, the same everywhere.
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', token: S, user: 'u', pass: `${S}!` } }, 'transports.main.token'],
      [{ main: { kind: 'nats', servers: `nats://u:${S}@127.0.0.1:1`, token: `${S}!` } }, 'transports.main.token'],
      [{ main: { kind: 'nats', servers: `nats://u:${S}@x@127.0.0.1:1` } }, 'transports.main.servers'],
      [{ main: { kind: 'nats', servers: 'wss://127.0.0.1:1', tls: S } }, 'transports.main.tls'],
      [{ main: { kind: 'redis', url: CLOSED_PORT, tls: { cert: 'pem', key: [S] } } }, 'transports.main.tls.key'],
      [{ main: { kind: 'redis', url: CLOSED_PORT, tls: { cert: 'pem', key: 'pem', passphrase: [S] } } }, 'transports.main.tls.passphrase'],
      [{ main: { kind: 'nats', servers: [`nats://u:${S}@127.0.0.1:1`, `nats://u:${S}x@127.0.0.1:2`] } }, 'transports.main.servers[1]'],
      [{ main: { kind: 'nats', servers: [`nats://${S}@127.0.0.1:1`, 'nats://127.0.0.1:2', `nats://u:${S}@127.0.0.1:3`] } }, 'transports.main.servers[2]'],
      [{ main: { kind: 'nats', servers: `nats://${S}@127.0.0.1:1`, token: `${S}!` } }, 'transports.main.token'],
      [{ main: { kind: 'nats', servers: `nats://u:${S}@127.0.0.1:1`, pass: `${S}!` } }, 'transports.main.pass'],
      [{ main: { kind: 'nats', servers: `nats://u:${S}%ZZ@127.0.0.1:1` } }, 'transports.main.servers'],
      [{ main: { kind: 'redis', url: CLOSED_PORT, tls: { key: S } } }, 'transports.main.tls.key'],
      [{ main: { kind: 'nats', servers: 'tls://127.0.0.1:1', tls: { cert: 'pem', key: N } } }, 'transports.main.tls.key'],
      [{ main: { kind: 'kafka', brokers: '127.0.0.1:1', tls: { passphrase: S } } }, 'transports.main.tls.passphrase'],
      [{ main: { kind: 'kafka', brokers: '127.0.0.1:1', tls: { cert: 'pem', key: 'pem', passphrase: N } } }, 'transports.main.tls.passphrase'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', pass: ['x', S] } }, 'transports.main.pass'],
      [{ main: { kind: 'nats', servers: `nats://u:${S}@127.0.0.1:1/x y` } }, 'transports.main.servers'],
      [{ main: { kind: 'kafka', brokers: '127.0.0.1:1', sasl: S } }, 'transports.main.sasl'],
      [{ main: { kind: 'kafka', brokers: '127.0.0.1:1', sasl: { mechanism: 'PLAIN', username: 'u', password: N } } }, 'transports.main.sasl.password'],
      [{ main: { kind: 'kafka', brokers: '127.0.0.1:1', sasl: { mechanism: 'PLAIN', username: 'u' } } }, 'transports.main.sasl.password'],
      [{ main: { kind: 'kafka', brokers: `u:${S}@127.0.0.1:1` } }, 'transports.main.brokers'],
      // An `@` in a password: hidden up to the last one, where a URL parser finds the host.
      [{ main: { kind: 'nats', servers: `nats://u:p@${S}@127.0.0.1:0` } }, 'transports.main.servers'],
      [{ main: { kind: 'redis', url: `redis://u:p@${S}@127.0.0.1:0` } }, 'transports.main.url'],
      // A redis URL's user and password against the options (node-redis lets the URL's win), its
      // percent-encoding, and a query it would not read; a NATS user without a password.
      [{ main: { kind: 'redis', url: `redis://u:${S}@127.0.0.1:1`, password: `${S}!` } }, 'transports.main.password'],
      [{ main: { kind: 'redis', url: `redis://u:${S}@127.0.0.1:1`, username: 'v' } }, 'transports.main.username'],
      [{ main: { kind: 'redis', url: `redis://u:${S}%ZZ@127.0.0.1:1` } }, 'transports.main.url'],
      [{ main: { kind: 'redis', url: `redis://127.0.0.1:1/0?password=${S}` } }, 'transports.main.url'],
      [{ main: { kind: 'redis', url: `redis://127.0.0.1:1#${S}` } }, 'transports.main.url'],
      [{ main: { kind: 'redis', url: `redis://:${S}@127.0.0.1:1`, username: 'alice' } }, 'transports.main.username'],
      [{ main: { kind: 'redis', url: 'redis://u@127.0.0.1:1', password: S } }, 'transports.main.password'],
      // A query's secret stays out of refusals made before the query is looked at.
      [{ main: { kind: 'redis', url: `redis://127.0.0.1:0?password=${S}` } }, 'transports.main.url'],
      [{ main: { kind: 'redis', url: `redis://127.0.0.1?password=a@${S}` } }, 'transports.main.url'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', pass: S } }, 'transports.main.pass'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', user: 'u' } }, 'transports.main.user'],
      // Empty credentials, as options or in a URL: refused before connecting.
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', user: 'u', pass: '' } }, 'transports.main.pass'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', user: '', pass: S } }, 'transports.main.user'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', token: '' } }, 'transports.main.token'],
      [{ main: { kind: 'nats', servers: 'nats://u:@127.0.0.1:1' } }, 'transports.main.servers'],
      [{ main: { kind: 'nats', servers: `nats://:${S}@127.0.0.1:1` } }, 'transports.main.servers'],
      [{ main: { kind: 'nats', servers: 'nats://@127.0.0.1:1' } }, 'transports.main.servers'],
      // An NKey seed or a .creds file: well-formed, and one way to authenticate per connection.
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', nkeySeed: S } }, 'transports.main.nkeySeed'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', nkeySeed: N } }, 'transports.main.nkeySeed'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', nkeySeed: SEED.toLowerCase() } }, 'transports.main.nkeySeed'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', creds: S } }, 'transports.main.creds'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', creds: CREDS.replace(CREDS_SEED, S) } }, 'transports.main.creds'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', token: S, nkeySeed: SEED } }, 'transports.main.nkeySeed'],
      [{ main: { kind: 'nats', servers: `nats://u:${S}@127.0.0.1:1`, creds: CREDS } }, 'transports.main.creds'],
      [{ main: { kind: 'nats', servers: 'nats://127.0.0.1:1', nkeySeed: SEED, creds: CREDS } }, 'transports.main.creds'],
      [{ main: { kind: 'nats', servers: `nats://127.0.0.1:1?token=${S}` } }, 'transports.main.servers'],
      // A raw ? or # in a password or a token (not percent-encoded): still hidden.
      [{ main: { kind: 'nats', servers: `nats://u:${S}#1@127.0.0.1:1` } }, 'transports.main.servers'],
      [{ main: { kind: 'nats', servers: `nats://${S}?x@127.0.0.1:1` } }, 'transports.main.servers'],
    ]
    for (const [transports, option] of cases) {
      const err = (await expectRefused(() => Orrery.create({ engine: ENGINE, transports } as OrreryOptions), 'INVALID_OPTION')) as Error & {
        details: Record<string, unknown>
      }
      expect(err.details['option'], err.message).toBe(option)
      const said = `${err.message}\n${JSON.stringify(err.details)}\n${String(err)}`
      for (const secret of [S, S.slice(0, 12), S.replace(/-/g, ' '), 'short-secret', String(N), SEED, SEED.toLowerCase(), CREDS_SEED, 'eyJhbGci'])
        expect(said, said).not.toContain(secret)
    }
  })

  it('keeps Object.prototype untouched by a hostile bindings object', async () => {
    const bindings = JSON.parse('{"__proto__": "main"}') as Record<string, string>
    const o = await create({ transports: { main: { kind: 'memory' } }, bindings })
    expect(({} as Record<string, unknown>)['main']).toBeUndefined()
    // A channel literally named __proto__ is bound like any other; nothing else is.
    expect(o.bus.binding('__proto__')?.transport).toBe('main')
    expect(o.bus.binding('constructor')).toBeUndefined()
  })
})

// Not in a page: redis and nats:// connect over TCP, for which a page has no socket.
describe.skipIf(IN_BROWSER)(`connecting (${ENGINE})`, () => {
  it('an unreachable server is TRANSPORT_UNAVAILABLE, at once for a refused connection', async () => {
    const started = Date.now()
    const err = await expectRefused(
      () => Orrery.create({ engine: ENGINE, transports: { main: { kind: 'redis', url: CLOSED_PORT, connectTimeoutMs: 3_000 } }, bindings: { x: 'main' } }),
      'TRANSPORT_UNAVAILABLE',
    )
    expect(Date.now() - started).toBeLessThan(2_500)
    expect(err.message).toContain('main')
  })

  it('the same user and password in a redis URL and as options are taken: the server is tried (TRANSPORT_UNAVAILABLE here)', async () => {
    const url = 'redis://u:p%40ss@127.0.0.1:1'
    await expectRefused(
      () => Orrery.create({ engine: ENGINE, transports: { main: { kind: 'redis', url, username: 'u', password: 'p@ss' } }, bindings: { x: 'main' } }),
      'TRANSPORT_UNAVAILABLE',
    )
  })

  it('TLS asked on a redis:// URL (or turned off on a rediss:// one) is tried as asked: TRANSPORT_UNAVAILABLE here, the password never shown', async () => {
    const secret = 'Sup3rSecret-in-the-url'
    for (const [url, tls] of [
      [`redis://:${secret}@127.0.0.1:1`, true],
      [`redis://:${secret}@127.0.0.1:1`, { rejectUnauthorized: true }],
      [`rediss://:${secret}@127.0.0.1:1`, false],
    ] as const) {
      const err = await expectRefused(
        () => Orrery.create({ engine: ENGINE, transports: { main: { kind: 'redis', url, tls, connectTimeoutMs: 3_000 } }, bindings: { x: 'main' } }),
        'TRANSPORT_UNAVAILABLE',
      )
      let all = ''
      for (let e: unknown = err; e instanceof Error; e = e.cause) all += `${e.message}\n${e.stack}\n`
      expect(all).not.toContain(secret)
    }
  })

  it('a server that never answers is TRANSPORT_UNAVAILABLE after connectTimeoutMs', async () => {
    // A listening socket that accepts, reads and says nothing (reading, it sees the client's end).
    const net = await import('node:net')
    const sockets = new Set<import('node:net').Socket>()
    const server = net.createServer((s) => {
      sockets.add(s)
      s.resume()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as { port: number }
    try {
      const started = Date.now()
      await expectRefused(
        () => Orrery.create({ engine: ENGINE, transports: { main: { kind: 'redis', url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 300 } } }),
        'TRANSPORT_UNAVAILABLE',
      )
      const took = Date.now() - started
      expect(took).toBeGreaterThanOrEqual(250)
      expect(took).toBeLessThan(3_000)
      // Nothing stays open: every connection it made was dropped.
      await until(() => [...sockets].every((s) => s.closed))
    } finally {
      for (const s of sockets) s.destroy()
      server.close()
    }
  })

  it.skipIf(NO_SERVERS)('refused credentials are TRANSPORT_AUTH', async () => {
    // The test server has no password: any password given is refused.
    await expectRefused(
      () => Orrery.create({ engine: ENGINE, transports: { main: { kind: 'redis', url: redisUrl(), password: 'not-the-password' } } }),
      'TRANSPORT_AUTH',
    )
    await expectRefused(
      () => Orrery.create({ engine: ENGINE, transports: { main: { kind: 'redis', url: redisUrl(), username: 'nobody', password: 'x' } } }),
      'TRANSPORT_AUTH',
    )
  })

  it.skipIf(NO_SERVERS)('one transport failing closes those that connected', async () => {
    await expectRefused(
      () =>
        Orrery.create({
          engine: ENGINE,
          transports: { good: { kind: 'redis', url: redisUrl() }, bad: { kind: 'redis', url: CLOSED_PORT } },
        }),
      'TRANSPORT_UNAVAILABLE',
    )
  })
})

describe(`bindings and capabilities (${ENGINE})`, () => {
  it('TRANSPORT_CAPABILITIES: memory can do everything, redis lacks what this session leaves out', () => {
    expect(Object.values(TRANSPORT_CAPABILITIES.memory).every(Boolean)).toBe(true)
    const lacks = Object.entries(TRANSPORT_CAPABILITIES.redis)
      .filter(([, has]) => !has)
      .map(([name]) => name)
      .sort()
    expect(lacks).toEqual(['from.seq', 'overflow.reject', 'priority', 'retention.maxBytes'])
    expect(Object.isFrozen(TRANSPORT_CAPABILITIES.redis)).toBe(true)
  })

  it('binds exact names, prefixes (longest first) and dead-letter channels; others stay local', async () => {
    const o = await create({
      transports: { a: { kind: 'memory' }, b: { kind: 'memory' } },
      bindings: { orders: 'a', 'jobs.*': 'a', 'jobs.hot.*': 'b' },
    })
    const bus = o.bus
    expect(bus.binding('orders')).toEqual({ transport: 'a', kind: 'memory', capabilities: TRANSPORT_CAPABILITIES.memory })
    expect(bus.binding('orders.dead-letter')?.transport).toBe('a')
    expect(bus.binding('jobs.x')?.transport).toBe('a')
    expect(bus.binding('jobs.hot.y')?.transport).toBe('b')
    expect(bus.binding('ordersx')).toBeUndefined()
    expect(bus.binding('jobs')).toBeUndefined()
    // A memory-bound channel is this process's bus.
    const got: unknown[] = []
    const sub = bus.subscribe('orders').subscribe((m) => got.push(m.payload))
    expect((await bus.publish('orders', 1)).published).toBe(true)
    await new Promise((r) => setTimeout(r, 0))
    expect(got).toEqual([1])
    sub.unsubscribe()
  })

  it('binding refuses a bad channel and is undefined without transports', async () => {
    const o = await create({})
    expect(o.bus.binding('orders')).toBeUndefined()
    const t = await create({ transports: { a: { kind: 'memory' } }, bindings: { '*': 'a' } })
    await expectRefused(() => t.bus.binding(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => t.bus.binding('a b'), 'INVALID_NAME')
    expect(t.bus.binding('anything')?.transport).toBe('a')
  })

  it('shutdown without transports closes like close, and twice is fine', async () => {
    const o = await Orrery.create({ engine: ENGINE })
    await o.shutdown()
    await o.shutdown()
    await expectRefused(() => o.bus.publish('x', 1), 'CLOSED')
  })
})

// Not in a page: redis is TCP (a page refuses it at create, tested in nats-ws.test.ts).
describe.skipIf(IN_BROWSER || NO_SERVERS)(`a URL's scheme in any case (${ENGINE})`, () => {
  it('REDIS:// and NATS:// are redis:// and nats://: both connect, and a message goes through each', async () => {
    let nats = env['ORRERY_NATS_URL'] ?? 'nats://127.0.0.1:14222'
    try {
      const url = (inject as (key: string) => unknown)('natsUrl')
      if (typeof url === 'string' && url !== '') nats = url
    } catch {
      // No global setup providing it: the port scripts/servers.sh uses.
    }
    const prefix = `case${Date.now().toString(36)}${ENGINE}`
    const upper = (url: string) => url.replace(/^[a-z]+:/, (scheme) => scheme.toUpperCase())
    const o = await create({
      transports: {
        r: { kind: 'redis', url: upper(redisUrl()), keyPrefix: `${prefix}:` },
        n: { kind: 'nats', servers: upper(nats), prefix },
      },
      bindings: { 'r.*': 'r', 'n.*': 'n' },
    })
    for (const channel of ['r.x', 'n.x']) {
      const got: unknown[] = []
      o.bus.subscribe(channel).subscribe((m) => got.push(m.payload))
      await o.bus.attached(channel)
      await o.bus.publish(channel, channel)
      await until(() => got.length === 1)
      expect(got).toEqual([channel])
    }
  })
})

describe.skipIf(IN_BROWSER || NO_SERVERS)(`what redis cannot do is refused before anything crosses (${ENGINE})`, () => {
  const prefix = `cfg-${Date.now().toString(36)}-${ENGINE}.`
  const open = () => create({ transports: { main: { kind: 'redis', url: redisUrl() } }, bindings: { [`${prefix}*`]: 'main' } })

  it('names the capability, the channel and the transport; nothing is published', async () => {
    const o = await open()
    const bus = o.bus
    const ch = `${prefix}refused`
    expect(bus.binding(ch)).toEqual({ transport: 'main', kind: 'redis', capabilities: TRANSPORT_CAPABILITIES.redis })
    const refusals: Array<[string, () => unknown]> = [
      ['priority', () => bus.publish(ch, 1, { priority: 'high' })],
      [
        'priority',
        () =>
          bus.publishBatch([
            { channel: `${prefix}local-too`, payload: 1 },
            { channel: ch, payload: 2, options: { priority: 'low' } },
          ]),
      ],
      ['from.seq', () => bus.subscribe(ch, { from: { seq: 0 } })],
      ['from.seq', () => bus.group(ch, 'g-seq', { from: { seq: 0 } })],
      ['overflow.reject', () => bus.subscribe(ch, { overflow: 'reject' })],
      ['retention.maxBytes', () => bus.channel(ch, { retention: { maxBytes: 1024 } })],
    ]
    for (const [capability, call] of refusals) {
      const err = (await expectRefused(call, 'CAPABILITY_UNSUPPORTED')) as Error & { details: Record<string, unknown> }
      expect(err.details).toMatchObject({ capability, channel: ch, transport: 'main', kind: 'redis' })
      expect(err.message).toContain(ch)
    }
    expect(bus.stats(ch).published).toBe(0)
    expect(bus.stats(`${prefix}local-too`).published).toBe(0)
    // What the backend can do still works on the same channel.
    expect((await bus.publish(ch, 'ok', { priority: 'normal' })).published).toBe(true)
  })
})
