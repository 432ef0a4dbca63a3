/**
 * The two checks of the credentials tests (credentials.test.ts, nats-credentials.test.ts): the
 * right credentials carry a request through the transport and back; wrong ones are TRANSPORT_AUTH
 * at create, with no secret anywhere in the error or its causes. Browser-safe.
 */
import { expect } from 'vitest'

import { Orrery, type TransportOptions } from '../../ts/node.js'
import { expectRefused } from '../bad-input.js'
import { ENGINE } from '../engine.js'

/** Connects, answers a request through the transport, and shuts down. */
export async function works(transport: TransportOptions): Promise<void> {
  const o = await Orrery.create({ engine: ENGINE, transports: { main: transport }, bindings: { 'guarded.*': 'main' } })
  // What the bus reported meanwhile, told with a request that got no reply.
  const reported: string[] = []
  o.bus.events.subscribe((e) => {
    if ('error' in e) reported.push(`${e.type}: ${e.error instanceof Error ? e.error.message : String(e.error)}`)
  })
  try {
    const stop = o.bus.respond('guarded.echo', (request) => request.payload)
    const reply = await o.bus.request('guarded.echo', 'let in', { timeout: 10_000 }).catch((error: unknown) => {
      throw new Error(
        `${error instanceof Error ? error.message : String(error)}; the bus reported ${reported.length === 0 ? 'nothing' : reported.join(' | ')}`,
        {
          cause: error,
        },
      )
    })
    expect(reply.payload).toBe('let in')
    stop()
  } finally {
    await o.shutdown()
  }
}

/** TRANSPORT_AUTH at create, none of `secrets` in the error or its causes. */
export async function refused(transport: TransportOptions, secrets: readonly string[]): Promise<void> {
  const error = await expectRefused(
    () => Orrery.create({ engine: ENGINE, transports: { main: transport }, bindings: { 'guarded.*': 'main' } }),
    'TRANSPORT_AUTH',
  )
  let all = ''
  for (let e: unknown = error; e instanceof Error; e = e.cause) all += `${e.message}\n${e.stack}\n${JSON.stringify(e)}\n`
  for (const secret of secrets) expect(all).not.toContain(secret)
}
