/**
 * A nats transport's credentials on servers that ask for them (test/transports/nats-auth.ts: a
 * token, a user and password, a user's NKey, an operator's user's .creds), over TCP in Node and
 * over WebSocket in Node and in a chromium page, where a browser dashboard joining a NATS bus
 * would use them. The right credentials carry a request there and back; wrong ones, or none, are
 * TRANSPORT_AUTH at create, and no error shows a secret.
 */
import { afterAll, describe, expect, it } from 'vitest'

import type { TransportOptions } from '../../ts/node.js'
import { ENGINE, IN_BROWSER } from '../engine.js'
import { refused, works } from './credential-checks.js'
import type { NatsAuth } from './nats-auth.js'

declare module 'vitest/browser' {
  interface BrowserCommands {
    /** test/transports/nats-auth.ts's servers, started on the Node side once (vitest.config.ts). */
    natsAuthServers(): Promise<NatsAuth>
    /** Why those servers cannot run on this run (null: they can). */
    natsAuthSkip(): Promise<string | null>
  }
}

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? (import.meta as unknown as { env: Env }).env

/** Why these servers cannot run on this run, if they cannot. */
async function skipReason(): Promise<string | undefined> {
  if (env['ORRERY_SERVERS'] === 'none') return 'ORRERY_SERVERS=none'
  if (IN_BROWSER) return (await (await import('vitest/browser')).commands.natsAuthSkip()) ?? undefined
  return (await import('./nats-auth.js')).NATS_AUTH_SKIP
}

async function servers(): Promise<NatsAuth> {
  if (IN_BROWSER) return (await import('vitest/browser')).commands.natsAuthServers()
  return (await import('./nats-auth.js')).natsAuth()
}

const skip = await skipReason()
const auth = skip === undefined ? await servers() : undefined
const WRONG = 'wrong-Secret-given'
const WHERE = IN_BROWSER ? 'a chromium page' : `Node (${ENGINE})`

afterAll(async () => {
  if (!IN_BROWSER && auth !== undefined) (await import('./nats-auth.js')).stopNatsAuth()
})

// A page opens no TCP connection: WebSocket only there.
const SCHEMES = IN_BROWSER ? (['ws'] as const) : (['nats', 'ws'] as const)

const refuse = (transport: TransportOptions) => refused(transport, [...auth!.secrets, WRONG])

describe.skipIf(skip !== undefined)(`NATS credentials in ${WHERE}${skip === undefined ? '' : ` [skipped: ${skip}]`}`, { timeout: 30_000 }, () => {
  for (const scheme of SCHEMES) {
    const url = (server: keyof NatsAuth['tcp']) => (scheme === 'ws' ? auth!.ws[server] : auth!.tcp[server])
    /** `url(server)` with `userinfo@` after the scheme. */
    const withUser = (server: keyof NatsAuth['tcp'], userinfo: string) => url(server).replace('://', `://${userinfo}@`)

    it(`${scheme}://: a token, as an option or in the URL, gets in; a wrong one or none is TRANSPORT_AUTH`, async () => {
      await works({ kind: 'nats', servers: url('token'), token: auth!.token })
      await works({ kind: 'nats', servers: withUser('token', auth!.token) })
      await refuse({ kind: 'nats', servers: url('token'), token: WRONG })
      await refuse({ kind: 'nats', servers: url('token') })
    })

    it(`${scheme}://: a user and password, as options or in the URL, get in; a wrong password or none is TRANSPORT_AUTH`, async () => {
      await works({ kind: 'nats', servers: url('users'), user: 'orrery', pass: auth!.password })
      await works({ kind: 'nats', servers: withUser('users', `orrery:${auth!.password}`) })
      await refuse({ kind: 'nats', servers: url('users'), user: 'orrery', pass: WRONG })
      await refuse({ kind: 'nats', servers: url('users') })
    })

    it(`${scheme}://: a user's NKey seed gets in; a seed the server does not know, or none, is TRANSPORT_AUTH`, async () => {
      await works({ kind: 'nats', servers: url('nkey'), nkeySeed: auth!.nkeySeed })
      // As read from a seed file, with its line end.
      await works({ kind: 'nats', servers: url('nkey'), nkeySeed: `${auth!.nkeySeed}\n` })
      await refuse({ kind: 'nats', servers: url('nkey'), nkeySeed: auth!.strangerSeed })
      await refuse({ kind: 'nats', servers: url('nkey') })
    })

    it(`${scheme}://: the .creds of a user the operator issued get in; those of an unknown account, a bare seed, or none are TRANSPORT_AUTH`, async () => {
      const { creds } = auth!
      await works({ kind: 'nats', servers: url('operator'), creds })
      // The same text as a secret store or another system may hand it over: CRLF line ends,
      // trimmed, on one line, or the seed's block first.
      const [jwtBlock, seedBlock] = creds.split(/\n\n[\s\S]*?(?=-----BEGIN USER NKEY SEED)/)
      expect([jwtBlock, seedBlock].map((block) => block?.split('\n')[0])).toEqual(['-----BEGIN NATS USER JWT-----', '-----BEGIN USER NKEY SEED-----'])
      for (const variant of [creds.replace(/\n/g, '\r\n'), creds.trim(), creds.replace(/\n/g, ' '), `${seedBlock}\n${jwtBlock}`])
        await works({ kind: 'nats', servers: url('operator'), creds: variant })
      await refuse({ kind: 'nats', servers: url('operator'), creds: auth!.foreignCreds })
      await refuse({ kind: 'nats', servers: url('operator'), nkeySeed: auth!.credsSeed })
      await refuse({ kind: 'nats', servers: url('operator') })
    })
  }
})
