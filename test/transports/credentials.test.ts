/**
 * Connection credentials on servers that ask for them, started by this file: a Redis server whose
 * only user is an ACL user with a password; NATS servers that take a token, users and passwords,
 * a user's NKey, and JWTs an operator issued (a `.creds` file; the keys and JWTs are made here
 * with nats.io's own libraries); and the shared Kafka broker's SASL listener (PLAIN and SCRAM
 * users, made by scripts/servers.sh). The right credentials (as options, or in the URL) carry a request there
 * and back; wrong ones are TRANSPORT_AUTH at create, and no error says the secret.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from '@nats-io/jwt'
import { createAccount, createOperator, createUser } from '@nats-io/nkeys'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { Orrery, type TransportOptions } from '../../ts/node.js'
import { expectRefused } from '../bad-input.js'
import { ENGINE } from '../engine.js'
import { freePort, NATS_SERVER, SPAWN_SKIP, serve, serveRedis, stopAll } from './spawned.js'

const dir = mkdtempSync(join(tmpdir(), 'orrery-credentials-'))
const REDIS_PASSWORD = 'redis-Pa55word-of-the-test'
const NATS_TOKEN = 'nats-T0ken-of-the-test'
const NATS_PASSWORD = 'nats-Pa55word-of-the-test'
// The Kafka broker's SASL users (scripts/servers/kafka.properties, scripts/servers.sh).
const KAFKA_USERS = {
  PLAIN: { username: 'orrery-plain', password: 'plain-s3cret' },
  'SCRAM-SHA-256': { username: 'orrery-scram256', password: 'scram256-s3cret' },
  'SCRAM-SHA-512': { username: 'orrery-scram512', password: 'scram512-s3cret' },
} as const
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
// A user the NKey server knows by its public key, and one it does not.
const nkeyUser = createUser()
const NKEY_SEED = text(nkeyUser.getSeed())
const STRANGER_SEED = text(createUser().getSeed())
// An operator, the account it issued (with JetStream), a user of that account; and a user of an
// account the server has never heard of.
const operator = createOperator()
const system = createAccount()
const account = createAccount()
const credsUser = createUser()
const foreignUser = createUser()
let CREDS = ''
let FOREIGN_CREDS = ''
let USER_JWTS: string[] = []
const SECRETS = [
  REDIS_PASSWORD,
  NATS_TOKEN,
  NATS_PASSWORD,
  'wrong-Secret-given',
  ...Object.values(KAFKA_USERS).map((u) => u.password),
  NKEY_SEED,
  STRANGER_SEED,
  text(credsUser.getSeed()),
  text(foreignUser.getSeed()),
]
let redisPort = 0
let tokenPort = 0
let usersPort = 0
let nkeyPort = 0
let operatorPort = 0

/** A nats-server config with JetStream in a directory of its own and these lines (an authorization block, an operator). */
function natsConfig(name: string, port: number, authorization: string): string {
  const path = join(dir, `${name}.conf`)
  writeFileSync(path, `listen: "127.0.0.1:${port}"\njetstream { store_dir: "${join(dir, name)}" }\n${authorization}\n`)
  return path
}

/**
 * The config lines of a server that trusts the operator, with its accounts preloaded (the system
 * account JetStream needs, and `orrery`); fills in the two .creds.
 */
async function operatorMode(): Promise<string> {
  const operatorJwt = await encodeOperator('orrery-test-operator', operator, { system_account: system.getPublicKey() })
  // An account's limits left out are 0 (no connection at all): every one unlimited, and for
  // `orrery` JetStream too, since Orrery's channels are streams.
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 }
  const systemJwt = await encodeAccount('SYS', system, { limits: unlimited }, { signer: operator })
  const jetstream = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 }
  const accountJwt = await encodeAccount('orrery', account, { limits: { ...unlimited, ...jetstream } }, { signer: operator })
  USER_JWTS = [await encodeUser('orrery-user', credsUser, account), await encodeUser('stranger', foreignUser, createAccount())]
  CREDS = text(fmtCreds(USER_JWTS[0]!, credsUser))
  FOREIGN_CREDS = text(fmtCreds(USER_JWTS[1]!, foreignUser))
  return [
    `operator: "${operatorJwt}"`,
    `system_account: ${system.getPublicKey()}`,
    'resolver: MEMORY',
    `resolver_preload: { ${system.getPublicKey()}: "${systemJwt}", ${account.getPublicKey()}: "${accountJwt}" }`,
  ].join('\n')
}

beforeAll(async () => {
  if (SPAWN_SKIP !== undefined) return
  ;[redisPort, tokenPort, usersPort, nkeyPort, operatorPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()])
  const operatorLines = await operatorMode()
  await Promise.all([
    // The default user is off: only `orrery`, with its password, gets in.
    serveRedis(dir, { port: redisPort }, ['--user', 'default', 'off', '--user', 'orrery', 'on', `>${REDIS_PASSWORD}`, '~*', '&*', '+@all']),
    serve(NATS_SERVER, ['-c', natsConfig('token', tokenPort, `authorization { token: "${NATS_TOKEN}" }`)], tokenPort),
    serve(NATS_SERVER, ['-c', natsConfig('users', usersPort, `authorization { users: [ { user: "orrery", password: "${NATS_PASSWORD}" } ] }`)], usersPort),
    serve(NATS_SERVER, ['-c', natsConfig('nkey', nkeyPort, `authorization { users: [ { nkey: "${nkeyUser.getPublicKey()}" } ] }`)], nkeyPort),
    serve(NATS_SERVER, ['-c', natsConfig('operator', operatorPort, operatorLines)], operatorPort),
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
  for (const secret of [...SECRETS, ...USER_JWTS]) expect(all).not.toContain(secret)
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

    it("nats: a user's NKey seed gets in; a seed the server does not know, or none, is TRANSPORT_AUTH", async () => {
      await works({ kind: 'nats', servers: `nats://127.0.0.1:${nkeyPort}`, nkeySeed: NKEY_SEED })
      // As read from a seed file, with its line end.
      await works({ kind: 'nats', servers: `nats://127.0.0.1:${nkeyPort}`, nkeySeed: `${NKEY_SEED}\n` })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${nkeyPort}`, nkeySeed: STRANGER_SEED })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${nkeyPort}` })
    })

    it('nats: the .creds of a user the operator issued get in; those of an unknown account, a bare seed, or none are TRANSPORT_AUTH', async () => {
      await works({ kind: 'nats', servers: `nats://127.0.0.1:${operatorPort}`, creds: CREDS })
      // The same text as a secret store or another system may hand it over: CRLF line ends,
      // trimmed, on one line, or the seed's block first.
      const [jwtBlock, seedBlock] = CREDS.split(/\n\n[\s\S]*?(?=-----BEGIN USER NKEY SEED)/)
      expect([jwtBlock, seedBlock].map((block) => block?.split('\n')[0])).toEqual(['-----BEGIN NATS USER JWT-----', '-----BEGIN USER NKEY SEED-----'])
      for (const variant of [CREDS.replace(/\n/g, '\r\n'), CREDS.trim(), CREDS.replace(/\n/g, ' '), `${seedBlock}\n${jwtBlock}`])
        await works({ kind: 'nats', servers: `nats://127.0.0.1:${operatorPort}`, creds: variant })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${operatorPort}`, creds: FOREIGN_CREDS })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${operatorPort}`, nkeySeed: text(credsUser.getSeed()) })
      await refused({ kind: 'nats', servers: `nats://127.0.0.1:${operatorPort}` })
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
        await refused({ kind: 'kafka', brokers, connectTimeoutMs: 10_000, sasl: { mechanism, username: user.username, password: 'wrong-Secret-given' } })
        await refused({ kind: 'kafka', brokers, connectTimeoutMs: 10_000, sasl: { mechanism, username: 'someone', password: user.password } })
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
