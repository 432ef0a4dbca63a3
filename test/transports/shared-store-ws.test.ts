/**
 * Shared store namespaces over NATS WebSocket (`ws://`, scripts/servers/nats.conf's websocket
 * listener), run by all three projects: in chromium (the browser entry: a page's only transport)
 * and in Node on both engines. This side opens a strong namespace over ws:// beside a Node process
 * on nats:// (test/fixtures/nats-peer.mjs, the built package, started through vitest's browser
 * commands from a page): it reads the key that process wrote, its writes reach that process, and
 * a compare-and-set against it is decided by the broker. A replicated namespace between two
 * instances here stops with its last write delivered. In a page nothing of it may need Node's
 * Buffer (it did: every write failed).
 */
import { afterAll, describe, expect, inject, it } from 'vitest'

import { isOrreryError, Orrery } from '../../ts/node.js'
import { ENGINE, IN_BROWSER } from '../engine.js'
import type { PeerEnd, PeerLine } from './nats-peer.js'

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? (import.meta as unknown as { env: Env }).env

const wsUrl = inject('natsWsUrl')
const tcpUrl = inject('natsUrl')
const WHERE = IN_BROWSER ? 'a chromium page' : `Node (${ENGINE})`
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${IN_BROWSER ? 'page' : ENGINE}`
let counter = 0
const fresh = (what: string) => `ssw-${RUN}-${++counter}-${what}`

const opened: Orrery[] = []
afterAll(async () => {
  await Promise.allSettled(opened.map((o) => o.shutdown()))
})

async function open(): Promise<Orrery> {
  const o = await Orrery.create({ transports: { main: { kind: 'nats', servers: wsUrl! } } })
  opened.push(o)
  return o
}

async function until(done: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** The Node-side peer: vitest's browser commands from a page, a child process started here from Node. */
async function peer(): Promise<{
  start(url: string, prefix: string, strong: string): Promise<number>
  lines(pid: number): Promise<PeerLine[]>
  stop(pid: number): Promise<PeerEnd>
}> {
  if (IN_BROWSER) {
    const { commands } = await import('vitest/browser')
    return { start: (u, p, s) => commands.natsPeerStart(u, p, s), lines: (pid) => commands.natsPeerLines(pid), stop: (pid) => commands.natsPeerStop(pid) }
  }
  const node = await import('./nats-peer.js')
  return { start: (u, p, s) => node.startPeer(u, p, ENGINE, undefined, s), lines: async (pid) => node.peerLines(pid), stop: (pid) => node.stopPeer(pid) }
}

const skip = env['ORRERY_SERVERS'] === 'none' ? 'ORRERY_SERVERS=none: no test servers on this run' : undefined

describe.skipIf(skip !== undefined)(`shared store namespaces over NATS WebSocket, from ${WHERE}`, { timeout: 60_000 }, () => {
  it(`a strong namespace: ${IN_BROWSER ? 'the page' : 'this process'} over ws:// and a Node process over nats:// read and write each other's keys; the broker decides a compare-and-set`, async () => {
    const name = fresh('strong')
    const side = await peer()
    const pid = await side.start(tcpUrl!, `${name}.`, name)
    let ended: PeerEnd | undefined
    try {
      const o = await open()
      const errors: string[] = []
      const store = o.openStore({ replica: 'page' })
      store.events.subscribe((e) => errors.push(`${e.type}: ${e.type === 'shared-error' ? `${e.error.code} ${e.error.message}` : ''}`))
      const ns = await store.shared<string>(name, { transport: 'main', consistency: 'strong' })
      // The mirror loaded the key the Node process created before it was ready.
      expect(ns.get('node-key')).toMatchObject({ value: 'from node' })
      expect((await ns.fetch('node-key'))?.stamp.writer).toBe('node')
      // A write of this side reaches the Node process.
      const v = await ns.create('from-page', 'hello')
      await until(async () => (await side.lines(pid)).some((l) => l.event === 'key' && l['key'] === 'from-page'), 20_000, 'the Node process to see from-page')
      expect((await side.lines(pid)).find((l) => l.event === 'key')).toMatchObject({ key: 'from-page', value: 'hello', version: v })
      // A compare-and-set on a stale version is refused by the broker.
      const at = ns.get('node-key')!.version
      expect(await ns.put('node-key', 'page was here', { ifVersion: at })).toBeGreaterThan(at)
      await expect(ns.put('node-key', 'stale', { ifVersion: at })).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'VERSION_CONFLICT'))
      // A transaction from this side (an atomic batch over ws://): all or none.
      const tx = await store.shared<string>(`${name}-tx`, { transport: 'main', consistency: 'strong', history: 1 })
      const [first, second] = await tx.transaction().put('a', 'one').put('b', 'two').commit()
      expect(second).toBe(first! + 1)
      await expect(tx.transaction().put('c', 'three').create('a', 'again').commit()).rejects.toSatisfy(
        (e: unknown) => isOrreryError(e, 'VERSION_CONFLICT') && e.details['index'] === 1,
      )
      expect(await tx.fetch('c')).toBeUndefined()
      expect(tx.entries().map((e) => e.value)).toEqual(['one', 'two'])
      // History read back from the broker (direct gets over ws://).
      const again = await tx.put('a', 'uno')
      expect((await tx.history('a')).map((c) => [c.version, c.type === 'put' ? c.value : c.type])).toEqual([
        [first, 'one'],
        [again, 'uno'],
      ])
      expect(errors).toEqual([])
    } finally {
      ended = await side.stop(pid)
    }
    expect(ended.code, ended.stderr).toBe(0)
    expect(ended.lines.filter((l) => l.event === 'key').map((l) => l['key'])).toEqual(['from-page', 'node-key'])
    expect(ended.stderr).toBe('')
  })

  it('a strong namespace with a TTL: the value lapses in every instance at its deadline, and the key can be taken again', async () => {
    const name = fresh('strong-ttl')
    const [a, b] = [await open(), await open()]
    const na = await a.openStore({ replica: 'a' }).shared<string>(name, { transport: 'main', consistency: 'strong' })
    const nb = await b.openStore({ replica: 'b' }).shared<string>(name, { transport: 'main', consistency: 'strong' })
    const v = await na.create('lock', 'a', { ttl: 400 })
    const deadline = na.get('lock')!.expiresAt!
    await until(() => nb.get('lock')?.version === v, 10_000, 'b to mirror the lock')
    expect(nb.get('lock')?.expiresAt).toBe(deadline)
    await expect(nb.create('lock', 'b')).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'VERSION_CONFLICT'))
    await until(() => nb.get('lock') === undefined, 10_000, 'the lock to lapse in b')
    expect(Date.now()).toBeGreaterThanOrEqual(deadline)
    const taken = await nb.create('lock', 'b')
    expect(taken).toBeGreaterThan(v)
    await until(() => na.get('lock')?.version === taken, 10_000, "a to mirror b's lock")
    expect(na.get('lock')).toMatchObject({ value: 'b', expiresAt: undefined })
  })

  it('a replicated namespace: a put in the same turn as shutdown() reaches the other instance', async () => {
    const name = fresh('replicated')
    const [a, b] = [await open(), await open()]
    const na = await a.openStore({ replica: 'a' }).shared<number>(name, { transport: 'main' })
    const nb = await b.openStore({ replica: 'b' }).shared<number>(name, { transport: 'main' })
    na.put('last', 1)
    await a.shutdown()
    await until(() => nb.get('last')?.value === 1, 10_000, "b to merge a's last write")
  })
})
