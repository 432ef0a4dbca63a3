/**
 * NATS servers that ask for credentials, started on free loopback ports once per process, each
 * listening on TCP and on WebSocket: one takes a token, one a user and password, one a user's
 * NKey, and one trusts an operator whose account issued a user (a `.creds` file; a system account
 * for JetStream). The keys and JWTs are made here with nats.io's own libraries. What the tests
 * need (the URLs and the secrets) is plain data, so a page gets it through a vitest browser
 * command (vitest.config.ts). Node only.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from '@nats-io/jwt'
import { createAccount, createOperator, createUser } from '@nats-io/nkeys'

import { freePort, NATS_SERVER, SPAWN_SKIP, serve, stopAll } from './spawned.js'

export type AuthServer = 'token' | 'users' | 'nkey' | 'operator'

export interface NatsAuth {
  /** Each server's TCP URL (`nats://127.0.0.1:<port>`). */
  readonly tcp: Readonly<Record<AuthServer, string>>
  /** Each server's WebSocket URL (`ws://127.0.0.1:<port>`). */
  readonly ws: Readonly<Record<AuthServer, string>>
  /** The token server's token. */
  readonly token: string
  /** The password of user `orrery` on the users server. */
  readonly password: string
  /** The seed of the user the NKey server knows, and of one it does not. */
  readonly nkeySeed: string
  readonly strangerSeed: string
  /** The .creds of the operator's user, and of a user of an account the server never heard of. */
  readonly creds: string
  readonly foreignCreds: string
  /** The operator's user's seed alone (no JWT). */
  readonly credsSeed: string
  /** Every secret above and the user JWTs: what no error may show. */
  readonly secrets: readonly string[]
}

export { SPAWN_SKIP as NATS_AUTH_SKIP }

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

let started: Promise<NatsAuth> | undefined
/** Where the servers keep their configuration and JetStream data. */
let dir: string | undefined

/** The servers, started on the first call (the same ones after). */
export function natsAuth(): Promise<NatsAuth> {
  started ??= start()
  return started
}

/**
 * Kills the servers and removes their files (a test file's `afterAll`: a vitest worker may end
 * without its `exit` event, which left them behind).
 */
export function stopNatsAuth(): void {
  stopAll()
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  dir = undefined
  started = undefined
}

async function start(): Promise<NatsAuth> {
  if (SPAWN_SKIP !== undefined) throw new Error(`NATS servers with credentials cannot run here: ${SPAWN_SKIP}`)
  const home = mkdtempSync(join(tmpdir(), 'orrery-nats-auth-'))
  dir = home
  process.once('exit', stopNatsAuth)
  const token = 'nats-T0ken-of-the-test'
  const password = 'nats-Pa55word-of-the-test'
  const nkeyUser = createUser()
  const stranger = createUser()
  // An operator, the account it issued (with JetStream), a user of that account; and a user of an
  // account the server has never heard of.
  const operator = createOperator()
  const system = createAccount()
  const account = createAccount()
  const credsUser = createUser()
  const foreignUser = createUser()
  const operatorJwt = await encodeOperator('orrery-test-operator', operator, { system_account: system.getPublicKey() })
  // An account's limits left out are 0 (no connection at all): every one unlimited, and for
  // `orrery` JetStream too, since Orrery's channels are streams.
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 }
  const systemJwt = await encodeAccount('SYS', system, { limits: unlimited }, { signer: operator })
  const jetstream = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 }
  const accountJwt = await encodeAccount('orrery', account, { limits: { ...unlimited, ...jetstream } }, { signer: operator })
  const userJwts = [await encodeUser('orrery-user', credsUser, account), await encodeUser('stranger', foreignUser, createAccount())]
  const lines: Record<AuthServer, string> = {
    token: `authorization { token: "${token}" }`,
    users: `authorization { users: [ { user: "orrery", password: "${password}" } ] }`,
    nkey: `authorization { users: [ { nkey: "${nkeyUser.getPublicKey()}" } ] }`,
    operator: [
      `operator: "${operatorJwt}"`,
      `system_account: ${system.getPublicKey()}`,
      'resolver: MEMORY',
      `resolver_preload: { ${system.getPublicKey()}: "${systemJwt}", ${account.getPublicKey()}: "${accountJwt}" }`,
    ].join('\n'),
  }
  const names = Object.keys(lines) as AuthServer[]
  const tcp = {} as Record<AuthServer, string>
  const ws = {} as Record<AuthServer, string>
  await Promise.all(
    names.map(async (name) => {
      const [port, wsPort] = [await freePort(), await freePort()]
      const config = join(home, `${name}.conf`)
      writeFileSync(
        config,
        [
          `listen: "127.0.0.1:${port}"`,
          `websocket { listen: "127.0.0.1:${wsPort}", no_tls: true }`,
          `jetstream { store_dir: "${join(home, name)}" }`,
          lines[name],
          '',
        ].join('\n'),
      )
      // Killed when this process exits, which they must not keep from exiting (vitest's own, for a page).
      ;(await serve(NATS_SERVER, ['-c', config], port)).unref()
      tcp[name] = `nats://127.0.0.1:${port}`
      ws[name] = `ws://127.0.0.1:${wsPort}`
    }),
  )
  const creds = text(fmtCreds(userJwts[0]!, credsUser))
  const foreignCreds = text(fmtCreds(userJwts[1]!, foreignUser))
  const seeds = [nkeyUser, stranger, credsUser, foreignUser].map((u) => text(u.getSeed()))
  return {
    tcp,
    ws,
    token,
    password,
    nkeySeed: seeds[0]!,
    strangerSeed: seeds[1]!,
    creds,
    foreignCreds,
    credsSeed: seeds[2]!,
    secrets: [token, password, ...seeds, ...userJwts],
  }
}
