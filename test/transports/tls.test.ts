/**
 * TLS settings passed through to each backend's client: a Redis server and a NATS server of this
 * file's own, started with TLS on a certificate authority made here (openssl) and verifying their
 * clients, are reached with `tls: { ca, cert, key }`, and refused (TRANSPORT_UNAVAILABLE) without
 * the client certificate, without the CA, or with another CA. For Kafka, a TLS listener of Node's
 * own shows the client trusted it by `ca` and presented `cert` (a broker with an SSL listener is
 * one more JVM these tests do without).
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer as createTlsServer, type TLSSocket } from 'node:tls'
import { promisify } from 'node:util'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { Orrery, type TlsOptions, type TransportOptions } from '../../ts/node.js'
import { expectRefused } from '../bad-input.js'
import { ENGINE } from '../engine.js'
import { freePort, NATS_SERVER, SPAWN_SKIP as SKIP, serve, serveRedis, stopAll } from './spawned.js'

const run = promisify(execFile)
const dir = mkdtempSync(join(tmpdir(), 'orrery-tls-'))
const file = (name: string) => join(dir, name)

/** A key and a certificate signed by `ca` (self-signed without one), for `cn` and these extensions. */
async function certificate(name: string, cn: string, ca: string | undefined, extensions: string[]): Promise<void> {
  writeFileSync(file(`${name}.ext`), `${extensions.join('\n')}\n`)
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-subj', `/CN=${cn}`]
  if (ca === undefined) {
    await run('openssl', ['req', '-x509', ...key, '-out', file(`${name}.crt`), '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE'])
    return
  }
  await run('openssl', ['req', ...key, '-out', file(`${name}.csr`)])
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    file(`${name}.csr`),
    '-CA',
    file(`${ca}.crt`),
    '-CAkey',
    file(`${ca}.key`),
    '-set_serial',
    String(Math.floor(Math.random() * 1e9)),
    '-days',
    '2',
    '-extfile',
    file(`${name}.ext`),
    '-out',
    file(`${name}.crt`),
  ])
}

let pem: { ca: string; otherCa: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string }
let redisPort = 0
let natsPort = 0
/** A NATS server that offers TLS (on the same certificate) and takes plain connections too. */
let optionalPort = 0

beforeAll(async () => {
  if (SKIP !== undefined) return
  await certificate('ca', 'orrery test CA', undefined, [])
  await certificate('other-ca', 'another CA', undefined, [])
  await certificate('server', 'localhost', 'ca', ['subjectAltName=IP:127.0.0.1,DNS:localhost', 'extendedKeyUsage=serverAuth'])
  await certificate('client', 'orrery-client', 'ca', ['extendedKeyUsage=clientAuth'])
  const read = (name: string) => readFileSync(file(name), 'utf8')
  pem = {
    ca: read('ca.crt'),
    otherCa: read('other-ca.crt'),
    serverCert: read('server.crt'),
    serverKey: read('server.key'),
    clientCert: read('client.crt'),
    clientKey: read('client.key'),
  }

  redisPort = await freePort()
  natsPort = await freePort()
  optionalPort = await freePort()
  writeFileSync(
    file('nats-optional.conf'),
    [
      `listen: "127.0.0.1:${optionalPort}"`,
      `jetstream { store_dir: "${join(dir, 'js-optional')}" }`,
      `tls { cert_file: "${file('server.crt')}", key_file: "${file('server.key')}" }`,
      'allow_non_tls: true',
      '',
    ].join('\n'),
  )
  writeFileSync(
    file('nats.conf'),
    [
      `listen: "127.0.0.1:${natsPort}"`,
      `jetstream { store_dir: "${join(dir, 'js')}" }`,
      `tls { cert_file: "${file('server.crt')}", key_file: "${file('server.key')}", ca_file: "${file('ca.crt')}", verify: true, timeout: 2 }`,
      '',
    ].join('\n'),
  )
  await Promise.all([
    // TLS only (no plain port), and every client must present a certificate the CA signed.
    serveRedis(dir, { tlsPort: redisPort }, [
      '--tls-cert-file',
      file('server.crt'),
      '--tls-key-file',
      file('server.key'),
      '--tls-ca-cert-file',
      file('ca.crt'),
      '--tls-auth-clients',
      'yes',
    ]),
    serve(NATS_SERVER, ['-c', file('nats.conf')], natsPort),
    serve(NATS_SERVER, ['-c', file('nats-optional.conf')], optionalPort),
  ])
}, 60_000)

afterAll(() => {
  stopAll()
  rmSync(dir, { recursive: true, force: true })
})

/** An Orrery whose `secure.*` channels go through `transport`; closed at the end of the test. */
async function secured(transport: TransportOptions): Promise<Orrery> {
  return Orrery.create({ engine: ENGINE, transports: { main: transport }, bindings: { 'secure.*': 'main' } })
}

/** Connects through `transport` and answers a request across it (both directions carry data), then shuts down. */
async function answers(transport: TransportOptions): Promise<void> {
  const o = await secured(transport)
  try {
    const stop = o.bus.respond('secure.echo', (request) => ({ echoed: request.payload }))
    const reply = await o.bus.request('secure.echo', { over: 'tls' }, { timeout: 10_000 })
    expect(reply.payload).toEqual({ echoed: { over: 'tls' } })
    stop()
  } finally {
    await o.shutdown()
  }
}

/** Refused at create as TRANSPORT_UNAVAILABLE, saying no private key. */
async function refused(transport: TransportOptions): Promise<Error> {
  const error = await expectRefused(() => secured(transport), 'TRANSPORT_UNAVAILABLE')
  let all = ''
  for (let e: unknown = error; e instanceof Error; e = e.cause) all += `${e.message}\n${e.stack}\n`
  expect(all).not.toContain(pem.clientKey.split('\n')[1]!)
  return error
}

const mutual = (): TlsOptions => ({ ca: pem.ca, cert: pem.clientCert, key: pem.clientKey })

describe.skipIf(SKIP !== undefined)(`TLS settings reach each client (${ENGINE})${SKIP === undefined ? '' : ` [skipped: ${SKIP}]`}`, { timeout: 30_000 }, () => {
  it('redis: a private CA and a client certificate (as text or bytes) connect; a request goes and comes back', async () => {
    const url = `rediss://127.0.0.1:${redisPort}`
    for (const tls of [mutual(), { ca: [Buffer.from(pem.ca)], cert: Buffer.from(pem.clientCert), key: Buffer.from(pem.clientKey) }]) {
      await answers({ kind: 'redis', url, tls, connectTimeoutMs: 3_000 })
    }
  })

  it('redis: refused without the client certificate, without the CA, with another CA, or for another name', async () => {
    const url = `rediss://127.0.0.1:${redisPort}`
    const redis = (tls: TlsOptions | boolean): TransportOptions => ({ kind: 'redis', url, tls, connectTimeoutMs: 3_000 })
    await refused(redis({ ca: pem.ca }))
    const untrusted = await refused(redis({ cert: pem.clientCert, key: pem.clientKey }))
    expect(untrusted.message).toMatch(/certificate/i)
    await refused(redis({ ...mutual(), ca: pem.otherCa }))
    await refused(redis({ ...mutual(), servername: 'elsewhere.example' }))
    // Not verified, the server's certificate is taken: the client certificate is still needed.
    const o = await secured(redis({ cert: pem.clientCert, key: pem.clientKey, rejectUnauthorized: false }))
    await o.shutdown()
  })

  it('nats: tls:// with a private CA and a client certificate connects; a request goes and comes back', async () => {
    await answers({ kind: 'nats', servers: `tls://127.0.0.1:${natsPort}`, tls: mutual(), connectTimeoutMs: 3_000 })
  })

  it('redis: the scheme follows `tls`: settings on a redis:// URL connect with TLS, `tls: false` on a rediss:// URL without', async () => {
    await answers({ kind: 'redis', url: `redis://127.0.0.1:${redisPort}`, tls: mutual(), connectTimeoutMs: 3_000 })
    // The shared test server (when this run has one) takes plain connections only.
    const shared = inject('redisUrl')
    if (shared === undefined) return
    await answers({ kind: 'redis', url: shared.replace(/^redis:/, 'rediss:'), tls: false, connectTimeoutMs: 3_000 })
  })

  it('nats: `tls: false` keeps the connection plain though the server offers TLS (nats.js would upgrade, and not trust this CA)', async () => {
    const servers = `nats://127.0.0.1:${optionalPort}`
    await answers({ kind: 'nats', servers, tls: false, connectTimeoutMs: 3_000 })
    // Left out, nats.js upgrades; with the CA given it trusts the server.
    await refused({ kind: 'nats', servers, connectTimeoutMs: 3_000 })
    const upgraded = await secured({ kind: 'nats', servers, tls: { ca: pem.ca }, connectTimeoutMs: 3_000 })
    await upgraded.shutdown()
  })

  it('nats: refused without the client certificate or without the CA', async () => {
    const nats = (tls: TlsOptions): TransportOptions => ({ kind: 'nats', servers: `tls://127.0.0.1:${natsPort}`, tls, connectTimeoutMs: 3_000 })
    await refused(nats({ ca: pem.ca }))
    await refused(nats({ cert: pem.clientCert, key: pem.clientKey }))
  })

  it("kafka: the client trusts a listener by `ca` and presents `cert` (a TLS listener of Node's, which then hangs up)", async () => {
    const seen: string[] = []
    const failures: string[] = []
    const listener = createTlsServer(
      { key: pem.serverKey, cert: pem.serverCert, ca: pem.ca, requestCert: true, rejectUnauthorized: true },
      (socket: TLSSocket) => {
        const peer = socket.getPeerCertificate()
        seen.push(`${socket.authorized ? 'verified' : 'unverified'} ${peer.subject?.CN}`)
        socket.destroy()
      },
    )
    listener.on('tlsClientError', (error) => failures.push(error.message))
    const port = await new Promise<number>((resolve) => listener.listen(0, '127.0.0.1', () => resolve((listener.address() as { port: number }).port)))
    try {
      const kafka = (tls: TlsOptions): TransportOptions => ({ kind: 'kafka', brokers: `127.0.0.1:${port}`, tls, connectTimeoutMs: 2_000 })
      await refused(kafka(mutual()))
      expect(seen.length).toBeGreaterThan(0)
      expect(new Set(seen)).toEqual(new Set(['verified orrery-client']))
      // Without the CA the client refuses the listener: no connection gets through the handshake.
      seen.length = 0
      failures.length = 0
      await refused(kafka({ cert: pem.clientCert, key: pem.clientKey }))
      expect(seen).toEqual([])
      expect(failures.length).toBeGreaterThan(0)
    } finally {
      listener.close()
    }
  })
})
