/**
 * A strong store namespace on Redis (see store/strong.ts). Under the transport's key prefix: a
 * hash of values (`…:v`), a hash of each key's `<revision> <wall> <expires> <writer>` (`…:m`;
 * expires 0 without a TTL), the namespace's revision counter (`…:rev`), a stream of changes
 * (`…:log`), its settings (`…:cfg`: how many older records a key keeps), and with history a list
 * per key of its last records, newest first (`…:h:<key>`). Every write is one Lua script, so the
 * check, the new revision, the hashes, the history and the change are one atomic step on the
 * server: the broker decides which of two racing compare-and-sets wins. A mirror loads both
 * hashes and the stream's last id in one script, then reads the stream from there on a blocking
 * connection of its own; revisions are consecutive, so a gap (the stream trimmed past what the
 * mirror read) is seen and the mirror loads again.
 */
import { isProgrammingError, OrreryError } from '../errors.js'
import {
  historyMismatch,
  partOf,
  type StrongBackend,
  type StrongRecord,
  type StrongResult,
  type StrongTxnResult,
  type StrongWrite,
} from '../store/strong-backend.js'
import type { SharedTransport } from '../store/shared.js'
import type { Connection, RedisDriver } from './redis.js'

/** Changes the stream keeps (approximately: `MAXLEN ~`); a mirror further behind loads again. */
const LOG_MAX = 10_000
/** How long one blocking read waits, in ms. */
const BLOCK_MS = 1_000
/** How long the reader waits after a failed read before it tries again. */
const RETRY_MS = 250

/**
 * KEYS: values, meta, counter, log, then (with history) each write's history list. ARGV: the
 * number of writes n, wall, writer, maxlen, history h, then six per write: key, value ('' and op
 * 'd' for a delete, 's' for a sweep), op, conditional ('1'/'0'), expected, expires ('0': none).
 * Every condition is checked first; if one fails nothing is written and it returns {0, its index
 * from 0, the key's revision}; else each write takes the next revision, its change says which of
 * the n it is (`t`: '<index>/<n>', when n > 1), with h > 0 it goes first in its key's history
 * list (trimmed to h + 1: `<op> <revision> <wall> <expires> <writer bytes>\n<writer><value>`),
 * and it returns {1, revision...}. A value whose expiry is not after the wall counts as absent
 * to a condition, but to a sweep's.
 */
const WRITE = `local n = tonumber(ARGV[1])
local wall = tonumber(ARGV[2])
local h = tonumber(ARGV[5])
for i = 1, n do
  local b = 5 + (i - 1) * 6
  local m = redis.call('HGET', KEYS[2], ARGV[b + 1])
  local cur = 0
  if m then
    local r, x = string.match(m, '^(%d+) %d+ (%d+) ')
    if r then
      cur = tonumber(r)
      local expires = tonumber(x)
      if ARGV[b + 3] ~= 's' and expires > 0 and expires <= wall then cur = 0 end
    else
      cur = tonumber(string.match(m, '^(%d+)'))
    end
  end
  if ARGV[b + 4] == '1' and cur ~= tonumber(ARGV[b + 5]) then return {0, i - 1, cur} end
end
local out = {1}
for i = 1, n do
  local b = 5 + (i - 1) * 6
  local key = ARGV[b + 1]
  local rev = redis.call('INCR', KEYS[3])
  local change = {'MAXLEN', '~', ARGV[4], '*', 'r', rev, 'k', key, 'w', ARGV[2], 'n', ARGV[3]}
  if n > 1 then
    table.insert(change, 't')
    table.insert(change, (i - 1) .. '/' .. n)
  end
  if ARGV[b + 3] == 'p' then
    redis.call('HSET', KEYS[1], key, ARGV[b + 2])
    redis.call('HSET', KEYS[2], key, rev .. ' ' .. ARGV[2] .. ' ' .. ARGV[b + 6] .. ' ' .. ARGV[3])
    table.insert(change, 'x')
    table.insert(change, ARGV[b + 6])
    table.insert(change, 'v')
    table.insert(change, ARGV[b + 2])
  else
    redis.call('HDEL', KEYS[1], key)
    redis.call('HDEL', KEYS[2], key)
  end
  redis.call('XADD', KEYS[4], unpack(change))
  if h > 0 then
    local v = ''
    local x = '0'
    if ARGV[b + 3] == 'p' then
      v = ARGV[b + 2]
      x = ARGV[b + 6]
    end
    redis.call('LPUSH', KEYS[4 + i], ARGV[b + 3] .. ' ' .. rev .. ' ' .. ARGV[2] .. ' ' .. x .. ' ' .. string.len(ARGV[3]) .. '\\n' .. ARGV[3] .. v)
    redis.call('LTRIM', KEYS[4 + i], 0, h)
  end
  out[i + 1] = rev
end
return out`

/** KEYS as WRITE's: the stream's last id, the revision, and both hashes, at one point in time. */
const LOAD = `local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then id = last[1][1] end
return {id, tonumber(redis.call('GET', KEYS[3]) or '0'), redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}`

/** KEYS: settings; ARGV: the history asked for. Sets it unless set, and returns the namespace's. */
const SETTLE = `redis.call('HSETNX', KEYS[1], 'history', ARGV[1])
return redis.call('HGET', KEYS[1], 'history')`

/** KEYS as WRITE's; ARGV: key. The key's meta and value (nil, nil when absent). */
const READ = `return {redis.call('HGET', KEYS[2], ARGV[1]) or false, redis.call('HGET', KEYS[1], ARGV[1]) or false}`

const text = (b: unknown): string => (Buffer.isBuffer(b) ? b.toString('utf8') : String(b))

/** A key's meta, `<revision> <wall> <expires> <writer>` (expires 0: none). */
function parseMeta(meta: string): { revision: number; wall: number; expiresAt: number | undefined; writer: string } {
  const first = meta.indexOf(' ')
  const second = meta.indexOf(' ', first + 1)
  const third = meta.indexOf(' ', second + 1)
  const revision = Number(meta.slice(0, first))
  const wall = Number(meta.slice(first + 1, second))
  const expires = third < 0 ? undefined : meta.slice(second + 1, third)
  // Without an expiry field (written before TTLs): the rest is the writer, as the script reads it.
  if (expires === undefined || !/^\d+$/.test(expires)) return { revision, wall, expiresAt: undefined, writer: meta.slice(second + 1) }
  return { revision, wall, expiresAt: expiresOf(expires), writer: meta.slice(third + 1) }
}

/** An expiry as the script keeps it (digits; '0' or none at all: no TTL). */
function expiresOf(text: string | undefined): number | undefined {
  const n = text === undefined ? 0 : Number(text)
  return Number.isSafeInteger(n) && n > 0 ? n : undefined
}

const bytesOf = (b: unknown): Uint8Array => (Buffer.isBuffer(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice() : new Uint8Array(0))

/** A record of a key's history list (undefined: not one this module wrote). */
function historyRecord(key: string, b: unknown): StrongRecord | undefined {
  if (!Buffer.isBuffer(b)) return undefined
  const nl = b.indexOf(0x0a)
  const [op, revision, wall, expires, writerBytes] = nl < 0 ? [] : b.toString('latin1', 0, nl).split(' ')
  const start = nl + 1 + Number(writerBytes)
  if (op === undefined || !Number.isSafeInteger(start) || start > b.length) return undefined
  const writer = b.toString('utf8', nl + 1, start)
  const base = { key, revision: Number(revision), wall: Number(wall), writer }
  if (op === 'p') return { ...base, value: bytesOf(b.subarray(start)), expiresAt: expiresOf(expires) }
  return op === 's' ? { ...base, value: undefined, swept: true } : { ...base, value: undefined }
}

/** A strong namespace `name` on the Redis server of `transport`, its keys keeping `history` older records (undefined: the namespace's). */
export function redisStrong(transport: SharedTransport, name: string, history: number | undefined): StrongBackend {
  return new RedisStrong(transport.driver as RedisDriver, transport.name, name, history)
}

class RedisStrong implements StrongBackend {
  readonly timeoutMs: number
  private readonly keys: string[]
  private readonly base: string
  private reader: Connection | undefined
  private closed = false
  /** The stream id read up to, and the revision the mirror holds everything up to. */
  private position = '0-0'
  private revision = 0
  /** Live keys as this reader last saw them: a reload deletes those gone meanwhile. */
  private readonly live = new Set<string>()
  history = 0

  constructor(
    private readonly driver: RedisDriver,
    readonly transport: string,
    private readonly name: string,
    private readonly asked: number | undefined,
  ) {
    this.timeoutMs = driver.publishTimeoutMs
    // The name's length first: no two namespace names make the same keys.
    const base = `${driver.keyPrefix}kv:${name.length}:${name}`
    this.base = base
    this.keys = [`${base}:v`, `${base}:m`, `${base}:rev`, `${base}:log`]
  }

  /** A key's history list. */
  private historyKey(key: string): string {
    return `${this.base}:h:${key}`
  }

  private eval(script: string, args: string[] | Array<string | Buffer>): Promise<unknown> {
    return this.driver.command(['EVAL', script, '4', ...this.keys, ...args])
  }

  async write(w: StrongWrite): Promise<StrongResult> {
    const result = await this.transact([w])
    return result.ok ? { ok: true, revision: result.revisions[0]! } : { ok: false, current: result.current }
  }

  async transact(writes: readonly StrongWrite[]): Promise<StrongTxnResult> {
    // Not held in the client's offline queue during an outage, to be applied whenever it ends.
    if (!this.driver.isReady)
      throw new OrreryError('TRANSPORT_UNAVAILABLE', `redis transport ${this.transport} is not connected: the write was not sent`, {
        details: { transport: this.transport, indeterminate: false },
      })
    // One wall and writer for the whole script: a transaction's writes are stamped alike.
    const { wall, writer } = writes[0]!
    const args: Array<string | Buffer> = [String(writes.length), String(wall), writer, String(LOG_MAX), String(this.history)]
    for (const w of writes) {
      args.push(
        w.key,
        w.value === undefined ? '' : Buffer.from(w.value.buffer, w.value.byteOffset, w.value.byteLength),
        w.value !== undefined ? 'p' : w.sweep === true ? 's' : 'd',
        w.expected === undefined ? '0' : '1',
        String(w.expected ?? 0),
        String(w.expiresAt ?? 0),
      )
    }
    const lists = this.history > 0 ? writes.map((w) => this.historyKey(w.key)) : []
    const reply = (await this.driver.command(['EVAL', WRITE, String(4 + lists.length), ...this.keys, ...lists, ...args])) as number[]
    if (reply[0] !== 1) return { ok: false, index: Number(reply[1]), current: Number(reply[2]) }
    // The mirror holds these keys now: a reload after a gap must say if they are gone.
    for (const w of writes) if (w.value !== undefined) this.live.add(w.key)
    return { ok: true, revisions: reply.slice(1).map(Number) }
  }

  async read(key: string): Promise<StrongRecord | undefined> {
    const [meta, value] = (await this.eval(READ, [key])) as [unknown, unknown]
    if (meta === null || meta === undefined) return undefined
    const { revision, wall, writer, expiresAt } = parseMeta(text(meta))
    this.live.add(key)
    return { key, revision, value: bytesOf(value), wall, writer, expiresAt }
  }

  async records(key: string): Promise<StrongRecord[]> {
    if (this.history === 0) {
      const record = await this.read(key)
      return record === undefined ? [] : [record]
    }
    const list = (await this.driver.command(['LRANGE', this.historyKey(key), '0', String(this.history)])) as unknown[]
    const records: StrongRecord[] = []
    for (const item of list) {
      const record = historyRecord(key, item)
      if (record !== undefined) records.unshift(record)
    }
    if (records.length > 0) return records
    // A key last written before the namespace kept history has no list yet: its current record.
    const current = await this.read(key)
    return current === undefined ? [] : [current]
  }

  async recordAt(key: string, revision: number): Promise<StrongRecord | undefined> {
    return (await this.records(key)).find((r) => r.revision === revision)
  }

  async start(onRecord: (record: StrongRecord) => void, onError: (error: unknown) => void, onReload: () => void): Promise<void> {
    // Whoever makes the namespace sets its history; a process that asks for another is refused.
    const kept = Number(text(await this.driver.command(['EVAL', SETTLE, '1', `${this.base}:cfg`, String(this.asked ?? 0)])))
    if (this.asked !== undefined && kept !== this.asked) throw historyMismatch(this.name, this.asked, kept)
    this.history = kept
    await this.load(onRecord)
    const reader = this.driver.readerConnection()
    this.reader = reader
    await reader.connect()
    void this.follow(reader, onRecord, onError, onReload)
  }

  /** Loads both hashes and where the stream stands, handing on every record (and deletions of keys gone since the last load). */
  private async load(onRecord: (record: StrongRecord) => void): Promise<void> {
    const [id, revision, values, metas] = (await this.eval(LOAD, [])) as [unknown, number, unknown[], unknown[]]
    const byKey = new Map<string, Uint8Array>()
    for (let i = 0; i + 1 < values.length; i += 2) byKey.set(text(values[i]), bytesOf(values[i + 1]))
    const seen = new Set<string>()
    for (let i = 0; i + 1 < metas.length; i += 2) {
      const key = text(metas[i])
      const meta = parseMeta(text(metas[i + 1]))
      seen.add(key)
      onRecord({ key, revision: meta.revision, value: byKey.get(key) ?? new Uint8Array(0), wall: meta.wall, writer: meta.writer, expiresAt: meta.expiresAt })
    }
    for (const key of this.live) if (!seen.has(key)) onRecord({ key, revision: Number(revision), value: undefined, wall: Date.now(), writer: '' })
    this.live.clear()
    for (const key of seen) this.live.add(key)
    this.position = text(id)
    this.revision = Number(revision)
  }

  /** Reads the change stream until closed; a failure is reported once per outage and the read tried again. */
  private async follow(reader: Connection, onRecord: (record: StrongRecord) => void, onError: (error: unknown) => void, onReload: () => void): Promise<void> {
    let failing = false
    while (!this.closed && !this.driver.isClosed) {
      try {
        const reply = (await reader.sendCommand(
          ['XREAD', 'COUNT', '512', 'BLOCK', String(BLOCK_MS), 'STREAMS', this.keys[3]!, this.position],
          this.driver.binaryOptions,
        )) as Array<[unknown, Array<[unknown, unknown[]]>]> | null
        failing = false
        for (const [id, fields] of reply?.[0]?.[1] ?? []) {
          const f = new Map<string, unknown>()
          for (let i = 0; i + 1 < fields.length; i += 2) f.set(text(fields[i]), fields[i + 1])
          const revision = Number(text(f.get('r')))
          if (revision > this.revision + 1) {
            // The stream was trimmed past what this mirror read: load the whole namespace again.
            await this.load(onRecord)
            onReload()
            break
          }
          this.position = text(id)
          if (revision <= this.revision) continue
          this.revision = revision
          const key = text(f.get('k'))
          const value = f.has('v') ? bytesOf(f.get('v')) : undefined
          if (value === undefined) this.live.delete(key)
          else this.live.add(key)
          const expiresAt = value === undefined ? undefined : expiresOf(f.has('x') ? text(f.get('x')) : undefined)
          onRecord({
            key,
            revision,
            value,
            wall: Number(text(f.get('w'))),
            writer: text(f.get('n')),
            expiresAt,
            part: partOf(f.has('t') ? text(f.get('t')) : undefined),
          })
        }
      } catch (error) {
        if (this.closed || this.driver.isClosed) return
        if (!failing)
          onError(
            // A bug here is reported as it is (INTERNAL on the store's events), not as an outage.
            isProgrammingError(error)
              ? error
              : new OrreryError('TRANSPORT_UNAVAILABLE', `redis transport ${this.transport}: reading a strong namespace's changes failed; retrying`, {
                  cause: error,
                  details: { transport: this.transport },
                }),
          )
        failing = true
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
      }
    }
    // The transport closed under an open namespace: its blocking connection must not keep the process alive.
    if (this.reader === reader) this.reader = undefined
    reader.destroy()
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.reader?.destroy()
    this.reader = undefined
  }
}
