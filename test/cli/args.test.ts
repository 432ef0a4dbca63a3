/**
 * The `orrery` command line, run in this process (ts/cli/run.ts): help, usage errors (exit 2,
 * nothing sent), a server that cannot be reached or never answers (exit 3) and one that is not
 * Orrery's API (exit 1).
 * The commands against a real `orrery serve` are in serve.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { benchAt } from '../../ts/cli/bench.js'
import { ApiClient } from '../../ts/cli/client.js'
import { CliFailure, EXIT } from '../../ts/cli/failure.js'
import type { Io } from '../../ts/cli/output.js'
import { run } from '../../ts/cli/run.js'
import type { ServerEvent } from '../../ts/control/server-events.js'
import { ENGINE } from '../engine.js'

/** Runs a command line; what it printed, and its exit code. */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = []
  const err: string[] = []
  const io: Io = { out: (t) => void out.push(t), err: (t) => void err.push(t), interactive: false }
  const code = await run(argv, io)
  return { code, out: out.join('\n'), err: err.join('\n') }
}

describe(`orrery's command line (${ENGINE})`, () => {
  // A web server that is not Orrery's API: it counts what reaches it and answers 404 in HTML.
  let server: Server
  let url: string
  let requests = 0
  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++
      res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>no</h1>')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

  it('prints help: every command, and each command its own', async () => {
    const bare = await cli([])
    expect(bare.code).toBe(2)
    expect(bare.err).toMatch(/orrery <command>/)
    const help = await cli(['--help'])
    expect(help.code).toBe(0)
    for (const name of ['serve', 'status', 'agents', 'publish', 'tail', 'dlq', 'runs', 'bench']) {
      expect(help.out).toMatch(new RegExp(`^  ${name} `, 'm'))
      const own = await cli([name, '--help'])
      expect(own.code, name).toBe(0)
      expect(own.out, name).toMatch(new RegExp(`^orrery ${name}`))
      expect((await cli(['help', name])).out).toBe(own.out)
    }
    expect((await cli(['--version'])).out).toMatch(/^\d+\.\d+\.\d+/)
  })

  it.each([
    [['frobnicate'], /no command "frobnicate"/],
    [['status', '--bogus'], /Unknown option '--bogus'/],
    [['status', 'extra'], /unexpected argument "extra"/],
    [['agents', '--url'], /--url/],
    [['publish', 'orders'], /missing <json>/],
    [['publish', 'orders', '{bad'], /<json> must be JSON/],
    [['publish', 'orders', '1', '--header', 'novalue'], /--header must be name=value/],
    // A negative number after an option is its value (parseArgs alone calls it ambiguous).
    [['publish', 'orders', '1', '--ttl', '-5'], /: --ttl must be a whole number >= 1, not "-5" \(see orrery publish --help\)$/],
    [['publish', 'orders', '1', '--ttl=-5'], /: --ttl must be a whole number >= 1, not "-5"/],
    [['publish', '', '1'], /: the channel name is empty \(see orrery publish --help\)$/],
    [['publish', 'new orders', '1'], /: the channel name "new orders" may hold only ASCII letters, digits and \. _ - : \/ \* >/],
    [['publish', 'o'.repeat(256), '1'], /: the channel name "o+" is longer than 255 bytes/],
    [['tail', ''], /: the channel name is empty \(see orrery tail --help\)$/],
    [['tail', 'orders', '--from', '-1'], /--from must be a whole number >= 0, not "-1"/],
    [['dlq', 'list', 'a|b'], /: the channel name "a\|b" may hold only/],
    [['dlq', 'replay', '', '3'], /: the channel name is empty \(see orrery dlq --help\)$/],
    [['dlq', 'list', 'orders', '--limit', '-2'], /--limit must be a whole number >= 1, not "-2"/],
    [['tail'], /missing <channel>/],
    [['tail', 'orders', '--from', 'yesterday'], /--from must be a whole number/],
    [['tail', 'orders', '--count', '0'], /--count must be a whole number >= 1/],
    [['dlq'], /missing list, replay or discard/],
    [['dlq', 'purge', 'orders'], /unknown dlq action "purge"/],
    [['dlq', 'replay', 'orders'], /missing <seq>/],
    [['dlq', 'replay', 'orders', 'x1'], /<seq> must be a whole number/],
    [['dlq', 'discard', 'orders', '3', '--limit', '2'], /--limit is for dlq list/],
    [['dlq', 'list', 'orders', '--limit', '0'], /--limit must be a whole number >= 1/],
    [['runs'], /missing list, show, start, signal or cancel/],
    [['runs', 'rerun', 'x'], /unknown runs action "rerun"/],
    [['runs', 'show'], /missing <id>/],
    [['runs', 'signal', 'order-1'], /missing <name>/],
    [['runs', 'signal', 'order-1', 'approve', 'yes'], /<json payload> must be JSON/],
    [['runs', 'start', 'fulfil-order', '{}', 'more'], /unexpected argument "more"/],
    [['runs', 'list', '--wait'], /--wait is not an option of runs list/],
    [['runs', 'cancel', 'order-1', '--id', 'x'], /--id is not an option of runs cancel/],
    [['bench', 'nothing'], /unknown suite "nothing"/],
    [['bench', '--quick'], /--quick needs a suite/],
    [['serve', '--port', 'eighty'], /--port must be a whole number/],
    [['serve', '--port', '70000'], /--port must be at most 65535/],
    [['serve', '--engine', 'quantum'], /--engine must be native or wasm/],
    [['serve', '--token', 'short'], /--token must be at least 8 characters/],
    [['serve', '--token', 'has a space in it'], /--token must be at least 8 characters, without spaces/],
    [['serve', '--no-demo', '--tour'], /--tour shows the demo/],
    [['serve', 'now'], /unexpected argument "now"/],
    // A value that begins with '-' goes after '=' (parseArgs says so).
    [['status', '--token', '-abcdefgh'], /Option '--token' argument is ambiguous.*'--token=-XYZ'/],
  ])('%j is a usage error: exit 2, nothing sent', async (argv, message) => {
    const before = requests
    const result = await cli(argv[0] === 'bench' || argv[0] === 'serve' ? argv : [...argv, '--url', url])
    expect(result.err).toMatch(message)
    expect(result.err).toMatch(/^orrery: usage: .*\(see orrery/)
    expect(result.code).toBe(2)
    expect(result.out).toBe('')
    expect(requests).toBe(before)
  })

  it('a server that cannot be reached: exit 3 (and the JSON error shape with --json)', async () => {
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const dead = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const plain = await cli(['status', '--url', dead])
    expect(plain).toMatchObject({ code: 3, out: '' })
    expect(plain.err).toMatch(new RegExp(`^orrery: UNREACHABLE: cannot reach ${dead}: .*ECONNREFUSED`))
    const json = await cli(['runs', 'list', '--json', '--url', dead])
    expect(json.code).toBe(3)
    expect(JSON.parse(json.err)).toEqual({ error: { code: 'UNREACHABLE', message: expect.stringContaining(dead) } })
    // The environment names the server when --url does not.
    process.env['ORRERY_URL'] = dead
    try {
      expect((await cli(['agents'])).code).toBe(3)
    } finally {
      delete process.env['ORRERY_URL']
    }
    const bad = await cli(['status', '--url', 'not a url'])
    expect(bad.code).toBe(2)
    expect(bad.err).toMatch(/--url must be a URL/)
  })

  it('a stream from a server that takes the connection but never answers: unreachable (exit 3) after the timeout; a stream quiet after its headers is kept', async () => {
    // A plain TCP server: it accepts, then never writes a byte.
    const sockets: Socket[] = []
    const silent = createNetServer((socket) => void sockets.push(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const mute = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`
    try {
      const started = Date.now()
      const failure = await new ApiClient(mute, undefined, 300)
        .events('/v1/channels/orders/tail', {}, () => true)
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      const took = Date.now() - started
      expect(failure).toBeInstanceOf(CliFailure)
      expect(failure).toMatchObject({ exitCode: EXIT.unreachable, code: 'UNREACHABLE', message: `cannot reach ${mute}: no answer within 0.3 s` })
      expect(took).toBeGreaterThanOrEqual(290)
      expect(took).toBeLessThan(5000)
      expect(sockets).toHaveLength(1)
    } finally {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => silent.close(() => resolve()))
    }
    // Headers at once, then nothing for longer than the timeout, then an event: the timeout is the headers'.
    const quiet = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders()
      setTimeout(() => res.end('event: message\r\ndata: {"seq":1}\r\n\r\n'), 700)
    })
    await new Promise<void>((resolve) => quiet.listen(0, '127.0.0.1', resolve))
    try {
      const seen: ServerEvent[] = []
      await new ApiClient(`http://127.0.0.1:${(quiet.address() as AddressInfo).port}`, undefined, 300).events('/v1/events', {}, (e) => {
        seen.push(e)
        return undefined
      })
      expect(seen).toEqual([{ event: 'message', data: '{"seq":1}' }])
    } finally {
      await new Promise<void>((resolve) => quiet.close(() => resolve()))
    }
  })

  it('a server that is not the API: exit 1, with its status', async () => {
    const before = requests
    const result = await cli(['agents', '--url', url])
    expect(result.code).toBe(1)
    expect(result.err).toMatch(/^orrery: HTTP_404: 404 Not Found from .*\/v1\/agents \(is this an Orrery API\?\)/)
    expect(requests).toBe(before + 1)
  })

  it('bench outside a source checkout: exit 1 NOT_A_CHECKOUT, saying where the suites live', async () => {
    // An installed package: the CLI without benches/ or scripts/bench.sh beside it.
    const installed = mkdtempSync(join(tmpdir(), 'orrery-installed-'))
    try {
      const failure = await benchAt(installed)
        .run({ values: {}, positionals: [] }, { out: () => {}, err: () => {}, interactive: false })
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(failure).toBeInstanceOf(CliFailure)
      expect(failure).toMatchObject({
        exitCode: EXIT.api,
        code: 'NOT_A_CHECKOUT',
        message: expect.stringMatching(/^orrery bench needs a source checkout of Orrery: /),
      })
      expect((failure as CliFailure).message).toContain(installed)
    } finally {
      rmSync(installed, { recursive: true, force: true })
    }
  })

  it('bench lists the suites of this checkout', async () => {
    const list = await cli(['bench', '--json'])
    expect(list.code).toBe(0)
    const suites = JSON.parse(list.out) as { name: string; about: string }[]
    expect(suites.map((s) => s.name)).toEqual(expect.arrayContaining(['bus', 'store', 'registry', 'workflow', 'transports']))
    expect(suites.every((s) => s.about.length > 10)).toBe(true)
  })
})
