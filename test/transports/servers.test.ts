// The test servers themselves: the global setup (test/transports/global-setup.ts) started a Redis
// and handed its URL over, and that Redis is configured as the transport tests rely on. Spoken to
// over a bare TCP socket in RESP, so this checks the harness, not a client library.
import { connect, type Socket } from 'node:net'

import { afterEach, describe, expect, inject, it } from 'vitest'

import { ENGINE } from '../engine.js'

const url = inject('redisUrl')
const skip = process.env['ORRERY_SERVERS'] === 'none' ? 'ORRERY_SERVERS=none: no test servers on this run' : undefined

type Reply = string | null | Reply[] | { error: string }

/** Parses one RESP2 reply at `at`; undefined while the bytes so far do not hold a whole one. */
function parse(text: string, at: number): { reply: Reply; end: number } | undefined {
  const lineEnd = text.indexOf('\r\n', at)
  if (lineEnd < 0) return undefined
  const head = text[at]
  const line = text.slice(at + 1, lineEnd)
  const next = lineEnd + 2
  switch (head) {
    case '+':
    case ':':
      return { reply: line, end: next }
    case '-':
      return { reply: { error: line }, end: next }
    case '$': {
      const length = Number(line)
      if (length < 0) return { reply: null, end: next }
      if (text.length < next + length + 2) return undefined
      return { reply: text.slice(next, next + length), end: next + length + 2 }
    }
    case '*': {
      const items: Reply[] = []
      let end = next
      for (let i = 0; i < Number(line); i++) {
        const item = parse(text, end)
        if (item === undefined) return undefined
        items.push(item.reply)
        end = item.end
      }
      return { reply: items, end }
    }
    default:
      throw new Error(`not a RESP reply: ${JSON.stringify(text.slice(at, at + 40))}`)
  }
}

const sockets: Socket[] = []
afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy()
})

async function open(redisUrl: string): Promise<(...args: string[]) => Promise<Reply>> {
  const { hostname, port } = new URL(redisUrl)
  const socket = connect({ host: hostname, port: Number(port) })
  sockets.push(socket)
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  socket.setEncoding('utf8')
  let buffered = ''
  let waiting: ((reply: Reply) => void) | undefined
  socket.on('data', (chunk: string) => {
    buffered += chunk
    const parsed = parse(buffered, 0)
    if (parsed === undefined || waiting === undefined) return
    buffered = buffered.slice(parsed.end)
    const resolve = waiting
    waiting = undefined
    resolve(parsed.reply)
  })
  // One command at a time, as an array of bulk strings (RESP's request form).
  return (...args) =>
    new Promise<Reply>((resolve) => {
      waiting = resolve
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
    })
}

describe.skipIf(skip !== undefined)(`test servers (${ENGINE})${skip ? ` [skipped: ${skip}]` : ''}`, () => {
  it('the global setup provides the Redis it started, on 127.0.0.1 and away from the default port', () => {
    expect(url, "inject('redisUrl') is empty: test/transports/global-setup.ts did not start Redis").toBeDefined()
    const parsed = new URL(url!)
    expect(parsed.protocol).toBe('redis:')
    // A run with ORRERY_SERVERS=external brings its own server; only the project's own is pinned.
    if (process.env['ORRERY_SERVERS'] !== 'external') expect(parsed.host).toBe('127.0.0.1:16379')
  })

  it('that Redis answers PING and writes every command to its append-only file before replying', async () => {
    const redis = await open(url!)
    expect(await redis('PING')).toBe('PONG')
    expect(await redis('CONFIG', 'GET', 'appendonly')).toEqual(['appendonly', 'yes'])
    expect(await redis('CONFIG', 'GET', 'appendfsync')).toEqual(['appendfsync', 'always'])
    // Redis Streams with the commands the transport uses (7.0 and up: XAUTOCLAIM's deleted ids).
    const info = await redis('INFO', 'server')
    const version = /redis_version:(\d+)\.(\d+)/.exec(String(info))
    expect(version, String(info)).not.toBeNull()
    expect(Number(version![1]) * 100 + Number(version![2])).toBeGreaterThanOrEqual(700)
  })
})
