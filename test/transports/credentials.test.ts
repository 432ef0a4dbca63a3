/**
 * Connection credentials on servers that ask for them: a Redis server started by this file whose
 * only user is an ACL user with a password, and the shared Kafka broker's SASL listener (PLAIN
 * and SCRAM users, made by scripts/servers.sh). The right credentials (as options, or in the URL)
 * carry a request there and back; wrong ones are TRANSPORT_AUTH at create, and no error says the
 * secret. NATS's (token, user and password, NKey, .creds, over TCP and WebSocket) are in
 * nats-credentials.test.ts, which a page runs too.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { Orrery, type TransportOptions } from '../../ts/node.js'
import { expectRefused } from '../bad-input.js'
import { ENGINE } from '../engine.js'
import { refused, works } from './credential-checks.js'
import { freePort, SPAWN_SKIP, serveRedis, stopAll } from './spawned.js'

const dir = mkdtempSync(join(tmpdir(), 'orrery-credentials-'))
const REDIS_PASSWORD = 'redis-Pa55word-of-the-test'
// The Kafka broker's SASL users (scripts/servers/kafka.properties, scripts/servers.sh).
const KAFKA_USERS = {
  PLAIN: { username: 'orrery-plain', password: 'plain-s3cret' },
  'SCRAM-SHA-256': { username: 'orrery-scram256', password: 'scram256-s3cret' },
  'SCRAM-SHA-512': { username: 'orrery-scram512', password: 'scram512-s3cret' },
} as const
const SECRETS = [REDIS_PASSWORD, 'wrong-Secret-given', ...Object.values(KAFKA_USERS).map((u) => u.password)]
let redisPort = 0

beforeAll(async () => {
  if (SPAWN_SKIP !== undefined) return
  redisPort = await freePort()
  // The default user is off: only `orrery`, with its password, gets in.
  await serveRedis(dir, { port: redisPort }, ['--user', 'default', 'off', '--user', 'orrery', 'on', `>${REDIS_PASSWORD}`, '~*', '&*', '+@all'])
}, 60_000)

afterAll(() => {
  stopAll()
  rmSync(dir, { recursive: true, force: true })
})

const refuse = (transport: TransportOptions) => refused(transport, SECRETS)

describe.skipIf(SPAWN_SKIP !== undefined)(
  `credentials on servers that ask for them (${ENGINE})${SPAWN_SKIP === undefined ? '' : ` [skipped: ${SPAWN_SKIP}]`}`,
  { timeout: 30_000 },
  () => {
    it('redis: an ACL user and password, as options or in the URL, get in; a wrong password, another user or none are TRANSPORT_AUTH', async () => {
      const url = `redis://127.0.0.1:${redisPort}`
      await works({ kind: 'redis', url, username: 'orrery', password: REDIS_PASSWORD })
      await works({ kind: 'redis', url: `redis://orrery:${REDIS_PASSWORD}@127.0.0.1:${redisPort}` })
      await refuse({ kind: 'redis', url, username: 'orrery', password: 'wrong-Secret-given' })
      await refuse({ kind: 'redis', url, username: 'someone', password: REDIS_PASSWORD })
      await refuse({ kind: 'redis', url })
    })
  },
)

const kafkaSasl = inject('kafkaSaslBrokers')
const KAFKA_SKIP = kafkaSasl === undefined ? 'no Kafka SASL listener on this run (ORRERY_SERVERS leaves kafka out)' : undefined
describe.skipIf(KAFKA_SKIP !== undefined)(
  `credentials on Kafka's SASL listener (${ENGINE})${KAFKA_SKIP === undefined ? '' : ` [skipped: ${KAFKA_SKIP}]`}`,
  { timeout: 60_000 },
  () => {
    for (const [mechanism, user] of Object.entries(KAFKA_USERS) as Array<[keyof typeof KAFKA_USERS, { username: string; password: string }]>) {
      it(`kafka ${mechanism}: the user and password get in; a wrong password or another user is TRANSPORT_AUTH`, async () => {
        const brokers = kafkaSasl!
        await works({ kind: 'kafka', brokers, connectTimeoutMs: 10_000, sasl: { mechanism, ...user } })
        await refuse({ kind: 'kafka', brokers, connectTimeoutMs: 10_000, sasl: { mechanism, username: user.username, password: 'wrong-Secret-given' } })
        await refuse({ kind: 'kafka', brokers, connectTimeoutMs: 10_000, sasl: { mechanism, username: 'someone', password: user.password } })
      })
    }

    it('kafka: no credentials on a listener that asks for them: TRANSPORT_UNAVAILABLE at create, saying what such a listener does', async () => {
      // The broker closes the connection of a client that sends no SASL handshake; nothing says why.
      const error = await expectRefused(
        () =>
          Orrery.create({
            engine: ENGINE,
            transports: { main: { kind: 'kafka', brokers: kafkaSasl!, connectTimeoutMs: 5_000 } },
            bindings: { 'guarded.*': 'main' },
          }),
        'TRANSPORT_UNAVAILABLE',
      )
      expect(error.message).toContain(`unreachable at ${kafkaSasl}`)
      expect(error.message).toContain('a listener that asks for SASL credentials or TLS')
      // A broker that is not there says nothing of the kind.
      const down = await expectRefused(
        () =>
          Orrery.create({
            engine: ENGINE,
            transports: { main: { kind: 'kafka', brokers: '127.0.0.1:1', connectTimeoutMs: 2_000 } },
            bindings: { 'guarded.*': 'main' },
          }),
        'TRANSPORT_UNAVAILABLE',
      )
      expect(down.message).not.toContain('SASL')
    })
  },
)
