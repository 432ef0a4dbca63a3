/**
 * Connection credentials on servers that ask for them, started by this file: a Redis server whose
 * only user is an ACL user with a password, a NATS server that takes a token, and one that takes
 * users and passwords. The right credentials (as options, or in the URL) carry a request there
 * and back; wrong ones are TRANSPORT_AUTH at create, and no error says the secret.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { Orrery, type TransportOptions } from '../../ts/node.js'
import { expectRefused } from '../bad-input.js'
import { ENGINE } from '../engine.js'
import { freePort, NATS_SERVER, SPAWN_SKIP, serve, serveRedis, stopAll } from './spawned.js'

const dir = mkdtempSync(join(tmpdir(), 'orrery-credentials-'))
const REDIS_PASSWORD = 'redis-Pa55word-of-the-test'
const NATS_TOKEN = 'nats-T0ken-of-the-test'
const NATS_PASSWORD = 'nats-Pa55word-of-the-test'
const SECRETS = [REDIS_PASSWORD, NATS_TOKEN, NATS_PASSWORD, 'wrong-Secret-given']
let redisPort = 0
let tokenPort = 0
let usersPort = 0

/** A nats-server config with JetStream in a directory of its own and this authorization block. */
function natsConfig(name: string, port: number, authorization: string): string {
  const path = join(dir, `${name}.conf`)
  writeFileSync(path, `listen: "127.0.0.1:${port}"\njetstream { store_dir: "${join(dir, name)}" }\nauthorization { ${authorization} }\n`)
  return path
}

beforeAll(async () => {
  if (SPAWN_SKIP !== undefined) return
  ;[redisPort, tokenPort, usersPort] = await Promise.all([freePort(), freePort(), freePort()])
  await Promise.all([
    // The default user is off: only `orrery`, with its password, gets in.
    serveRedis(dir, { port: redisPort }, ['--user', 'default', 'off', '--user', 'orrery', 'on', `>${REDIS_PASSWORD}`, '~*', '&*', '+@all']),
    serve(NATS_SERVER, ['-c', natsConfig('token', tokenPort, `token: "${NATS_TOKEN}"`)], tokenPort),
    serve(NATS_SERVER, ['-c', natsConfig('users', usersPort, `users: [ { user: "orrery", password: "${NATS_PASSWORD}" } ]`)], usersPort),
  ])
}, 60_000)

afterAll(() => {
  stopAll()
  rmSync(dir, { recursive: true, force: true })
})

/** Connects, answers a request through the transport, and shuts down. */
async function works(transport: TransportOptions): Promise<void> {
  const o = await Orrery.create({ engine: ENGINE, transports: { main: transport }, bindings: { 'guarded.*': 'main' } })
  try {
    const stop = o.bus.respond('guarded.echo', (request) => request.payload)
    const reply = await o.bus.request('guarded.echo', 'let in', { timeout: 10_000 })
    expect(reply.payload).toBe('let in')
    stop()
  } finally {
    await o.shutdown()
  }
}

/** TRANSPORT_AUTH at create, no secret in the error or its causes. */
async function refused(transport: TransportOptions): Promise<void> {
  const error = await expectRefused(
    () => Orrery.create({ engine: ENGINE, transports: { main: transport }, bindings: { 'guarded.*': 'main' } }),
    'TRANSPORT_AUTH',
  )
  let all = ''
  for (let e: unknown = error; e instanceof Error; e = e.cause) all += `${e.message}\n${e.stack}\n${JSON.stringify(e)}\n`
  for (const secret of SECRETS) expect(all).not.toContain(secret)
}

describe.skipIf(SPAWN_SKIP !== undefined)(
  `credentials on servers that ask for them (${ENGINE})${SPAWN_SKIP === undefined ? '' : ` [skipped: ${SPAWN_SKIP}]`}`,
  { timeout: 30_000 },
  () => {
    it('redis: an ACL user and password, as options or in the URL, get in; a wrong password, another user or none are TRANSPORT_AUTH', async () => {
      const url = `redis://127.0.0.1:${redisPort}`
      await works({ kind: 'redis', url, username: 'orrery', password: REDIS_PASSWORD })
      await works({ kind: 'redis', url: `redis://orrery:${REDIS_PASSWORD}@127.0.0.1:${redisPort}` })
      await refused({ kind: 'redis', url, username: 'orrery', password: 'wrong-Secret-given' })
      await refused({ kind: 'redis', url, username: 'someone', password: REDIS_PASSWORD })
      await refused({ kind: 'redis', url })
    })

    it('nats: a token, as an option or in the URL, gets in; a wrong one or none is TRANSPORT_AUTH', async () => {
      await works({ kind: 'nats', servers: `nats://127.0.0.1:${tokenPort}`, token: NATS_TOKEN })
      await works({ kind: 'nats', servers: `nats://${NATS_TOKEN}@127.0.0.1:${tokenPort}` })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${tokenPort}`, token: 'wrong-Secret-given' })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${tokenPort}` })
    })

    it('nats: a user and password, as options or in the URL, get in; a wrong password or none is TRANSPORT_AUTH', async () => {
      await works({ kind: 'nats', servers: `nats://127.0.0.1:${usersPort}`, user: 'orrery', pass: NATS_PASSWORD })
      await works({ kind: 'nats', servers: `nats://orrery:${NATS_PASSWORD}@127.0.0.1:${usersPort}` })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${usersPort}`, user: 'orrery', pass: 'wrong-Secret-given' })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${usersPort}` })
    })
  },
)
