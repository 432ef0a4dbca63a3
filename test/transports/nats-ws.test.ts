/**
 * A nats transport over WebSocket (`ws://`, the NATS server's websocket listener on 18443,
 * scripts/servers/nats.conf), run by all three projects: in chromium (the browser entry, where it is
 * the only transport a page can use) and in Node on both engines. Two Orrery instances in one page
 * or process stand for two processes; a Node process on TCP (test/fixtures/nats-peer.mjs, started
 * through vitest's browser commands from a page) talks with the page through the same streams.
 * Also: what a browser refuses at create, and the option checks of WebSocket servers.
 */
import type { Observable } from 'rxjs'
import { afterAll, describe, expect, inject, it } from 'vitest'

import { Agent, type AgentContext, type Delivery, isOrreryError, type Message, Orrery, type OrreryOptions } from '../../ts/node.js'
import { expectRefused } from '../bad-input.js'
import { ENGINE, IN_BROWSER } from '../engine.js'
import type { PeerEnd, PeerLine } from './nats-peer.js'

declare module 'vitest/browser' {
  interface BrowserCommands {
    /**
     * Starts test/fixtures/nats-peer.mjs on the Node side (vitest.config.ts), with a strong store
     * namespace `strong` if given (shared-store-ws.test.ts); resolves with its pid once ready.
     */
    natsPeerStart(url: string, prefix: string, strong?: string): Promise<number>
    /** What that peer printed so far. */
    natsPeerLines(pid: number): Promise<PeerLine[]>
    /** Stops it and says how it ended. */
    natsPeerStop(pid: number): Promise<PeerEnd>
  }
}

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? (import.meta as unknown as { env: Env }).env

const wsUrl = inject('natsWsUrl')
const tcpUrl = inject('natsUrl')
const NO_SERVERS = env['ORRERY_SERVERS'] === 'none'
const WHERE = IN_BROWSER ? 'a chromium page' : `Node (${ENGINE})`

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${IN_BROWSER ? 'page' : ENGINE}`
let counter = 0
/** A fresh channel prefix: each test its own streams. */
const fresh = () => `ws-${RUN}-${++counter}.`

const opened: Orrery[] = []
afterAll(async () => {
  await Promise.allSettled(opened.map((o) => o.shutdown()))
})

/** An Orrery whose channels under `prefix` live on the NATS server, reached over WebSocket. */
async function open(prefix: string, extra: Partial<OrreryOptions> = {}): Promise<Orrery> {
  const o = await Orrery.create({ transports: { main: { kind: 'nats', servers: wsUrl! } }, bindings: { [`${prefix}*`]: 'main' }, ...extra })
  opened.push(o)
  return o
}

async function until(done: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** Everything `source` emits, with when. */
function listen<T>(source: Observable<T>): { items: T[]; times: number[]; stop(): void } {
  const items: T[] = []
  const times: number[] = []
  const subscription = source.subscribe((item) => {
    items.push(item)
    times.push(Date.now())
  })
  return { items, times, stop: () => subscription.unsubscribe() }
}

/** The Node-side peer: vitest's browser commands from a page, a child process started here from Node. */
async function peer(): Promise<{
  start(url: string, prefix: string): Promise<number>
  lines(pid: number): Promise<PeerLine[]>
  stop(pid: number): Promise<PeerEnd>
}> {
  if (IN_BROWSER) {
    const { commands } = await import('vitest/browser')
    return { start: (u, p) => commands.natsPeerStart(u, p), lines: (pid) => commands.natsPeerLines(pid), stop: (pid) => commands.natsPeerStop(pid) }
  }
  const node = await import('./nats-peer.js')
  return { start: (u, p) => node.startPeer(u, p, ENGINE), lines: async (pid) => node.peerLines(pid), stop: (pid) => node.stopPeer(pid) }
}

const skip = NO_SERVERS ? 'ORRERY_SERVERS=none: no test servers on this run' : undefined

describe.skipIf(skip !== undefined)(`nats over WebSocket, from ${WHERE}`, { timeout: 60_000 }, () => {
  it('has its servers', () => {
    expect(wsUrl, "inject('natsWsUrl'): the global setup starts NATS with its websocket listener").toMatch(/^ws:\/\//)
    expect(tcpUrl).toMatch(/^nats:\/\//)
    // Node 20 has a WebSocket only with --experimental-websocket (vitest.config.ts passes it).
    expect(typeof (globalThis as { WebSocket?: unknown }).WebSocket).toBe('function')
  })

  it('publish and subscribe cross two instances; a bound channel says it is nats', async () => {
    const prefix = fresh()
    const [a, b] = [await open(prefix), await open(prefix)]
    expect(a.bus.binding(`${prefix}orders`)?.kind).toBe('nats')
    const early = listen(b.bus.subscribe<{ n: number }>(`${prefix}orders`))
    await a.bus.publish(`${prefix}orders`, { n: 0 })
    await a.bus.publishBatch([1, 2, 3].map((n) => ({ channel: `${prefix}orders`, payload: { n } })))
    await until(() => early.items.length >= 4, 20_000, 'b to see all four')
    expect(early.items.map((m) => m.payload.n)).toEqual([0, 1, 2, 3])
    // History: a subscriber from the earliest sees what came before it.
    const late = listen(a.bus.subscribe<{ n: number }>(`${prefix}orders`, { from: 'earliest' }))
    await until(() => late.items.length >= 4, 20_000, 'the history')
    expect(late.items.map((m) => m.payload.n)).toEqual([0, 1, 2, 3])
    early.stop()
    late.stop()
  })

  it('a consumer group across two instances: each message once, a nack redelivered with its count, a lease that runs out taken by the other', async () => {
    const prefix = fresh()
    const [a, b] = [await open(prefix), await open(prefix)]
    const ch = `${prefix}jobs`
    const done = new Map<number, string[]>()
    const attempts: Array<[number, number]> = []
    for (const [name, o] of [
      ['a', a],
      ['b', b],
    ] as const) {
      o.bus.group<number>(ch, 'workers', { from: 'earliest' }).consume((d: Delivery<number>) => {
        attempts.push([d.message.payload, d.attempt])
        if (d.message.payload % 5 === 0 && d.attempt === 1) throw new Error('first try fails')
        done.set(d.message.payload, [...(done.get(d.message.payload) ?? []), name])
      })
    }
    await a.bus.publishBatch(Array.from({ length: 20 }, (_, n) => ({ channel: ch, payload: n })))
    await until(() => done.size >= 20, 20_000, 'every job handled')
    expect([...done.entries()].filter(([, by]) => by.length !== 1)).toEqual([])
    for (const n of [0, 5, 10, 15]) expect(attempts.filter(([p]) => p === n).map(([, k]) => k)).toEqual([1, 2])

    // A member that holds messages and stops without acking: the other instance takes them once
    // the lease (visibility + max(1 s, 10 %) on JetStream) has run out.
    const held = `${prefix}held`
    const visibility = 500
    const c = await open(prefix)
    const holder = listen(c.bus.group<number>(held, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
    // The leases begin after the publish: the hand-over is timed from here.
    const sent = Date.now()
    await c.bus.publishBatch([0, 1, 2].map((payload) => ({ channel: held, payload })))
    await until(() => holder.items.length >= 3, 20_000, 'the holder to hold all 3')
    c.close() // abrupt: nothing released
    const taker = listen(b.bus.group<number>(held, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
    await until(() => taker.items.length >= 3, 20_000, 'the other instance to take the 3')
    expect(taker.items.map((d) => d.message.payload).sort()).toEqual([0, 1, 2])
    expect(taker.items.map((d) => d.attempt)).toEqual([2, 2, 2])
    expect(taker.times[0]! - sent).toBeGreaterThanOrEqual(visibility)
    for (const d of taker.items) d.ack()
    taker.stop()
  })

  it('request and reply cross instances; an error reply keeps its code', async () => {
    const prefix = fresh()
    const [a, b] = [await open(prefix), await open(prefix)]
    b.bus.respond<{ x: number }, number>(
      `${prefix}double`,
      (req) => {
        if (req.payload.x < 0) throw Object.assign(new Error('negative'), { code: 'NEGATIVE' })
        return req.payload.x * 2
      },
      { group: 'math' },
    )
    const replies = await Promise.all([1, 2, 3].map((x) => a.bus.request<number>(`${prefix}double`, { x }, { timeout: 10_000 })))
    expect(replies.map((r) => r.payload)).toEqual([2, 4, 6])
    const error = await a.bus.request(`${prefix}double`, { x: -1 }, { timeout: 10_000 }).catch((e: unknown) => e)
    expect(isOrreryError(error, 'HANDLER_ERROR')).toBe(true)
    expect((error as { details: { remoteCode?: string } }).details.remoteCode).toBe('NEGATIVE')
  })

  it('a mesh shared over WebSocket: an agent of one instance is found and reached from the other', async () => {
    class Echo extends Agent {
      static capabilities = [{ name: 'echo', version: '1.0.0' }]
      readonly heard: unknown[] = []
      constructor(context: AgentContext) {
        super(context)
        this.handle('echo', (payload) => {
          this.heard.push(payload)
        })
      }
    }
    const prefix = fresh()
    const options = { transports: { main: { kind: 'nats', servers: wsUrl!, prefix: `m${RUN.replace(/[^A-Za-z0-9]/g, '')}`.slice(0, 32) } } } as const
    const a = await Orrery.create(options)
    const b = await Orrery.create(options)
    opened.push(a, b)
    const meshA = await a.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
    meshA.define('echo', Echo)
    const [echo] = await meshA.spawn('echo')
    const meshB = await b.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
    await until(() => meshB.registry.find('echo').length === 1, 20_000, "b's registry to list a's agent")
    expect(meshB.registry.find('echo')[0]).toMatchObject({ remote: true, process: meshA.process })
    await meshB.send('echo', `hello from ${prefix}`)
    await until(() => (echo!.agent as Echo).heard.length === 1, 20_000, 'the agent to hear it')
    await meshA.shutdown()
    await until(() => meshB.registry.find('echo').length === 0, 20_000, "a's agent to leave b's registry")
    await meshB.shutdown()
  })

  it(`${IN_BROWSER ? 'the page' : 'this process'} over ws:// and a Node process over nats:// share streams, groups and requests`, async () => {
    const prefix = fresh()
    const side = await peer()
    const pid = await side.start(tcpUrl!, prefix)
    let ended: PeerEnd | undefined
    try {
      const o = await open(prefix)
      // A request the Node process answers (its group responder).
      const reply = await o.bus.request<{ text: string; engine: string; pid: number }>(`${prefix}upper`, 'from the page', { timeout: 10_000 })
      expect(reply.payload).toMatchObject({ text: 'FROM THE PAGE', pid })
      // Jobs its group takes, answered on another channel this side subscribes to.
      const done = listen(o.bus.subscribe<{ job: number; by: string }>(`${prefix}done`, { from: 'earliest' }))
      await o.bus.publishBatch([1, 2, 3].map((payload) => ({ channel: `${prefix}jobs`, payload })))
      await until(() => done.items.length >= 3, 20_000, 'the Node process to do the 3 jobs')
      expect(done.items.map((m: Message<{ job: number; by: string }>) => m.payload)).toEqual([1, 2, 3].map((job) => ({ job, by: 'node', attempt: 1 })))
      // A message it sees on its own subscription.
      await o.bus.publish(`${prefix}page`, { hello: 'node' })
      const end = Date.now() + 20_000
      while (!(await side.lines(pid)).some((l) => l.event === 'seen')) {
        if (Date.now() > end) throw new Error('timed out waiting for the Node process to see the message')
        await new Promise((r) => setTimeout(r, 20))
      }
      done.stop()
    } finally {
      ended = await side.stop(pid)
    }
    expect(ended.code, ended.stderr).toBe(0)
    expect(ended.lines.filter((l) => l.event === 'seen').map((l) => l.payload)).toEqual([{ hello: 'node' }])
    expect(ended.stderr).toBe('')
  })
})

describe(`nats over WebSocket: what is refused, from ${WHERE}`, { timeout: 60_000 }, () => {
  const make = (main: Record<string, unknown>) => Orrery.create({ transports: { main: main as never }, bindings: { x: 'main' } })

  it.runIf(IN_BROWSER)('a page refuses nats://, redis, kafka and durable at create (UNSUPPORTED, saying what it can do); the engine stays usable', async () => {
    for (const servers of ['nats://127.0.0.1:14222', 'tls://u:s3cretPW@127.0.0.1:14222', ['nats://127.0.0.1:14222', 'nats://127.0.0.1:14223']]) {
      const error = (await expectRefused(() => make({ kind: 'nats', servers }), 'UNSUPPORTED')) as Error & { details: Record<string, unknown> }
      expect(error.message).toMatch(/ws:\/\/host:port or wss:\/\/host:port/)
      expect(error.message).not.toContain('s3cretPW')
      expect(error.details).toMatchObject({ transport: 'main', kind: 'nats', platform: 'browser' })
      expect(error.details['option']).toMatch(/^transports\.main\.servers/)
    }
    for (const main of [
      { kind: 'redis', url: 'redis://127.0.0.1:16379' },
      { kind: 'kafka', brokers: '127.0.0.1:19092' },
      { kind: 'durable', path: 'bus.db' },
    ]) {
      const error = (await expectRefused(() => make(main), 'UNSUPPORTED')) as Error & { details: Record<string, unknown> }
      expect(error.message).toContain('nats transport with ws:// or wss:// servers')
      expect(error.details).toEqual({ option: 'transports.main.kind', transport: 'main', kind: main.kind, platform: 'browser' })
    }
    const o = await Orrery.create()
    await o.bus.publish('x', 1)
    o.close()
  })

  it.runIf(IN_BROWSER)("the page never fetched nats.js's Node client or the socket watch", () => {
    const fetched = performance.getEntriesByType('resource').map((e) => e.name)
    // The check sees the modules a transport loads: the WebSocket client was fetched.
    expect(fetched.filter((url) => url.includes('nats-connect') || url.includes('nats-core')).length, fetched.join('\n')).toBeGreaterThan(0)
    expect(fetched.filter((url) => /transport-node|socket-watch/.test(url))).toEqual([])
  })

  it('WebSocket servers are checked before anything connects', async () => {
    // A TLS flag beside a WebSocket URL: the scheme says it.
    await expectRefused(() => make({ kind: 'nats', servers: 'wss://127.0.0.1:1', tls: true }), 'INVALID_OPTION')
    await expectRefused(() => make({ kind: 'nats', servers: 'ws://127.0.0.1:1', tls: false }), 'INVALID_OPTION')
    // Not a URL of either kind.
    for (const servers of ['ws://', 'ws:/127.0.0.1:1', 'http://127.0.0.1:1', 'ws://a b:1'])
      await expectRefused(() => make({ kind: 'nats', servers }), 'INVALID_OPTION')
    // One wire per transport (in a page too: a malformed option is INVALID_OPTION everywhere).
    await expectRefused(() => make({ kind: 'nats', servers: ['ws://127.0.0.1:1', 'nats://127.0.0.1:2'] }), 'INVALID_OPTION')
    await expectRefused(() => make({ kind: 'nats', servers: ['nats://127.0.0.1:2', 'ws://127.0.0.1:1'] }), 'INVALID_OPTION')
    // A password stays out of the message.
    const error = await expectRefused(() => make({ kind: 'nats', servers: 'ws://u:s3cretPW@127.0.0.1:1', tls: true }), 'INVALID_OPTION')
    expect(`${error.message}${JSON.stringify(error)}`).not.toContain('s3cretPW')
  })

  it('a WebSocket server that is not there: TRANSPORT_UNAVAILABLE within connectTimeoutMs, its password hidden; a path and wss:// pass the checks', async () => {
    for (const servers of ['ws://u:s3cretPW@127.0.0.1:1', 'ws://127.0.0.1:1/nats?x=1', ['wss://127.0.0.1:1', 'ws://127.0.0.1:1']]) {
      const started = Date.now()
      const error = await expectRefused(() => make({ kind: 'nats', servers, connectTimeoutMs: 1_000 }), 'TRANSPORT_UNAVAILABLE')
      expect(Date.now() - started).toBeLessThan(5_000)
      expect(`${error.message}${JSON.stringify(error)}`).not.toContain('s3cretPW')
      // A reason follows the address, or the message says none was given (a page's WebSocket gives none).
      expect(error.message, error.message).toMatch(/unreachable at .+: \S/)
    }
  })

  // Not in a page: a node:net server and a child process.
  it.skipIf(IN_BROWSER)('a WebSocket server that accepts the connection and never answers: create rejects and the process ends at once', async () => {
    const net = await import('node:net')
    const { spawn } = await import('node:child_process')
    const { fileURLToPath } = await import('node:url')
    const fixture = fileURLToPath(new URL('../fixtures/nats-unanswered.mjs', import.meta.url))
    const accepted = new Set<import('node:net').Socket>()
    const server = net.createServer((socket) => {
      accepted.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => accepted.delete(socket))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const url = `ws://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`
    try {
      for (const servers of [url, `${url},${url}`]) {
        const child = spawn(process.execPath, [...process.execArgv.filter((a) => a === '--experimental-websocket'), fixture, servers], {
          env: { ...process.env, ORRERY_ENGINE: ENGINE },
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        let out = ''
        let err = ''
        let rejectedAt = 0
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString()
          if (rejectedAt === 0 && out.includes('"rejected"')) rejectedAt = Date.now()
        })
        child.stderr.on('data', (chunk: Buffer) => {
          err += chunk.toString()
        })
        const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
        const lingering = setTimeout(() => child.kill('SIGKILL'), 15_000)
        const code = await exited
        clearTimeout(lingering)
        expect(out, err).toContain('"code":"TRANSPORT_UNAVAILABLE"')
        expect(code, `${servers}: the process stayed alive after create rejected (killed)`).toBe(0)
        expect(Date.now() - rejectedAt, servers).toBeLessThan(3_000)
      }
    } finally {
      for (const s of accepted) s.destroy()
      server.close()
    }
  })

  // Not in a page: a child process on Node 20 (a page always has WebSocket).
  it.skipIf(IN_BROWSER || Number(((globalThis as { process?: { versions: { node: string } } }).process?.versions.node ?? '22').split('.')[0]) >= 22)(
    'Node 20 without --experimental-websocket: ws:// is UNSUPPORTED at create, naming the remedy',
    async () => {
      const { execFile } = await import('node:child_process')
      const { fileURLToPath } = await import('node:url')
      const fixture = fileURLToPath(new URL('../fixtures/nats-unanswered.mjs', import.meta.url))
      const out = await new Promise<string>((resolve) =>
        execFile(process.execPath, [fixture, wsUrl!], { env: { ...process.env, ORRERY_ENGINE: ENGINE }, timeout: 15_000 }, (_, stdout) => resolve(stdout)),
      )
      expect(JSON.parse(out)).toMatchObject({ event: 'rejected', code: 'UNSUPPORTED', message: expect.stringContaining('--experimental-websocket') })
    },
  )

  // Last: it closes every instance of this file.
  // Not in a page: it opens a nats:// (TCP) transport beside the ws:// ones.
  it.skipIf(IN_BROWSER)('one kind of NATS connection per process: a nats:// transport waits for the ws:// ones to close, and the other way round', async () => {
    const tcp = { transports: { main: { kind: 'nats', servers: tcpUrl! } }, bindings: { 'x.*': 'main' } } as const
    const ws = { transports: { main: { kind: 'nats', servers: wsUrl! } }, bindings: { 'x.*': 'main' } } as const
    const open = await Orrery.create(ws)
    const error = (await expectRefused(() => Orrery.create(tcp), 'UNSUPPORTED')) as Error & { details: Record<string, unknown> }
    expect(error.details).toEqual({ transport: 'main', kind: 'nats', wire: 'tcp', open: 'websocket' })
    expect(error.message).toMatch(/one kind at a time/)
    // Once every WebSocket connection of this process has closed (they drain first), TCP connects.
    await Promise.allSettled([open, ...opened.splice(0)].map((o) => o.shutdown()))
    const overTcp = await poll(() => Orrery.create(tcp))
    await expectRefused(() => Orrery.create(ws), 'UNSUPPORTED')
    overTcp.close()
    const overWs = await poll(() => Orrery.create(ws))
    await overWs.bus.publish('x.ok', 1)
    await overWs.shutdown()
  })
})

/** `create` again until it is no longer refused UNSUPPORTED (a connection of the other kind still draining). */
async function poll(create: () => Promise<Orrery>): Promise<Orrery> {
  const end = Date.now() + 10_000
  for (;;) {
    try {
      return await create()
    } catch (error) {
      if (!isOrreryError(error, 'UNSUPPORTED') || Date.now() > end) throw error
      await new Promise((r) => setTimeout(r, 20))
    }
  }
}
