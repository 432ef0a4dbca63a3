/**
 * Signed messages on a broker transport (the `signing` option): an HMAC-SHA256 over what the
 * receiver will act on (the frame, which holds id, time and body; the channel, or the reply
 * address; a request's reply address and timeout) and the time it was written, carried beside the
 * frame with the id of the key that made it. A receiver with the same keys refuses what does not
 * verify (`signature`) and what was written again (`replay`): a signed time too far from the
 * broker's time of the entry, or a signature already seen at another broker position. Drivers
 * call `sign` as they write and `accept` / `acceptReply` as they read, before anything reaches
 * the core.
 */
import { type _HMAC, hmac } from '@noble/hashes/hmac.js'
import { sha256 } from '@noble/hashes/sha2.js'

import { options as checkOptions, keysOf, onlyKeys, refuse, refuseSecret } from '../check.js'
import { LAYOUT as FRAME } from '../frame.js'
import { OrreryError } from '../errors.js'
import type { Egress, Refusal, Refused } from './driver.js'
import { platform } from './platform.js'
import type { Route } from './records.js'

/** What signing uses of Node's `node:crypto` (its HMAC runs in C++: ~1.6-2.2 µs a message against ~2.7-4.1 for @noble/hashes). */
interface NodeHmac {
  update(data: Uint8Array): NodeHmac
  digest(encoding: 'hex'): string
}
interface NodeCrypto {
  createHmac(algorithm: 'sha256', key: Uint8Array): NodeHmac
}

/**
 * Node's crypto module, taken synchronously from the running process (`process.getBuiltinModule`,
 * Node 20.16 and later) so no bundle for a page ever names it; undefined in a browser, where
 * @noble/hashes signs instead (both make the same MAC).
 */
function nodeCrypto(): NodeCrypto | undefined {
  if (platform() !== 'node') return undefined
  const process = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
  return process?.getBuiltinModule?.('node:crypto') as NodeCrypto | undefined
}

/**
 * The `signing` option of a redis, nats or kafka transport. Every key in `keys` verifies; only
 * `sign` signs, so keys rotate by adding the new one everywhere, then signing with it, then
 * removing the old one.
 */
export interface SigningOptions {
  /** Secrets by key id (letters, digits, `_`, `-`, `.`; at most 64): a string (its UTF-8 bytes) or bytes, at least 16 bytes each. */
  keys: Readonly<Record<string, string | Uint8Array>>
  /** The id of the key this process signs with (one of `keys`). */
  sign: string
  /**
   * How far a message's signed time may be from the broker's time of its entry, and how long a
   * signature is remembered to refuse a copy of it (default 60,000 ms; 1,000 to 86,400,000).
   */
  replayWindowMs?: number
}

/** A checked `signing` option: the secrets as bytes. */
export interface CheckedSigning {
  readonly keys: ReadonlyMap<string, Uint8Array>
  readonly sign: string
  readonly replayWindowMs: number
}

const KEY_ID = /^[A-Za-z0-9_.-]{1,64}$/
const MIN_SECRET_BYTES = 16
const DEFAULT_WINDOW_MS = 60_000
const MIN_WINDOW_MS = 1_000
const MAX_WINDOW_MS = 86_400_000
const SIGNING_KEYS = keysOf<SigningOptions>()(['keys', 'sign', 'replayWindowMs'])

const utf8 = new TextEncoder()

/**
 * Refuses a wrong key id. An id is no secret, but a secret may be written where an id belongs: a
 * string shown must be shorter than any secret can be (a typo in a short id is then found by
 * reading it); anything longer is described, never shown.
 */
function refuseId(name: string, value: unknown, must: string): never {
  if (typeof value === 'string' && utf8.encode(value).length < MIN_SECRET_BYTES) refuse('option', name, value, must)
  refuseSecret(name, value, must)
}

/** Checks a transport's `signing` option (`where` names it); undefined when it is left out. */
export function checkSigning(value: unknown, where: string): CheckedSigning | undefined {
  if (value === undefined) return undefined
  // A secret given where an object belongs is never shown (nor any value below that may be one).
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    refuseSecret(where, value, 'must be an object { keys: { <id>: <secret> }, sign: <id>, replayWindowMs? }')
  const o = checkOptions(value as Record<string, unknown>, where, 'option')
  onlyKeys(o, SIGNING_KEYS, where)
  const rawKeys = o['keys']
  if (rawKeys === null || typeof rawKeys !== 'object' || Array.isArray(rawKeys) || rawKeys instanceof Uint8Array)
    refuseSecret(`${where}.keys`, rawKeys, 'must be an object of secrets by key id')
  const keys = new Map<string, Uint8Array>()
  for (const id of Object.keys(rawKeys)) {
    const name = `${where}.keys.${id}`
    if (!KEY_ID.test(id)) refuseId(`${where}.keys`, id, 'must be keyed by ids of 1 to 64 letters, digits, _, - or .')
    const secret = (rawKeys as Record<string, unknown>)[id]
    let bytes: Uint8Array
    if (typeof secret === 'string') bytes = utf8.encode(secret)
    else if (secret instanceof Uint8Array) bytes = secret.slice()
    // The secret stays out of the message: only its type and length are told.
    else
      throw new OrreryError('INVALID_OPTION', `${name} must be a string or a Uint8Array of at least ${MIN_SECRET_BYTES} bytes`, { details: { option: name } })
    if (bytes.length < MIN_SECRET_BYTES)
      throw new OrreryError('INVALID_OPTION', `${name} must be at least ${MIN_SECRET_BYTES} bytes, not ${bytes.length}`, { details: { option: name } })
    keys.set(id, bytes)
  }
  if (keys.size === 0) refuse('option', `${where}.keys`, rawKeys, 'must hold at least one key')
  const sign = o['sign']
  if (typeof sign !== 'string' || !keys.has(sign)) refuseId(`${where}.sign`, sign, `must be the id of one of the keys (${[...keys.keys()].join(', ')})`)
  let replayWindowMs = DEFAULT_WINDOW_MS
  const window = o['replayWindowMs']
  if (window !== undefined) {
    if (typeof window !== 'number' || !(window >= MIN_WINDOW_MS && window <= MAX_WINDOW_MS))
      refuse('option', `${where}.replayWindowMs`, window, `must be a number of ms from ${MIN_WINDOW_MS} to ${MAX_WINDOW_MS}`)
    replayWindowMs = window
  }
  return { keys, sign, replayWindowMs }
}

/**
 * The most signatures remembered per transport (each ~150 bytes): past it the oldest are
 * forgotten first (and the transport warns once), so a copy of one of them written within its
 * window is not recognised. A transport remembers each signature for its window and a second
 * (`replayWindowMs + 1,000` ms): it stays under this below 100,000 / 61 s, about 1,600 messages/s
 * read with the default window.
 */
export const MAX_REMEMBERED = 100_000

/** Signatures are forgotten a bucket of signed time at a time: this many ms. */
const BUCKET_MS = 1_000

/**
 * Refused positions remembered per transport, so an entry read by both a mirror and a group of
 * this process is counted once.
 */
const MAX_REFUSED_POSITIONS = 10_000

/** Where a Kafka group delivery sits when the broker's time of it is not known: its partition's lane and offset. */
export interface LogOrder {
  readonly lane: string
  readonly offset: bigint
}

/** What one channel's readers remember: signatures seen (by MAC) where, and the newest time seen. */
interface Lane {
  readonly seen: Map<string, { readonly position: string; readonly signedAt: number }>
  /**
   * The same signatures by their signed time's bucket (its ms / BUCKET_MS), so they are forgotten
   * by time whatever order they came in (one sender's fast clock holds back only its own).
   */
  readonly buckets: Map<number, string[]>
  /** The first bucket not forgotten yet. */
  floor: number
  /** The newest broker time (or, where that is not known, signed time) read on the channel. */
  clock: number
}

function laneAt(clock: number): Lane {
  return { seen: new Map(), buckets: new Map(), floor: Number.NEGATIVE_INFINITY, clock }
}

/** Each byte's two hex digits: a lookup per byte (~140 ns a MAC) instead of two (~350 ns). */
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

function hex(bytes: Uint8Array): string {
  let out = ''
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]!]!
  return out
}

/** Compares two strings of equal length in time that does not depend on where they differ. */
function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}

/** The reply token a reply's frame carries (0 when the frame is too short to hold one). */
function replyToken(frame: Uint8Array): number {
  if (frame.length < FRAME.headerLen) return 0
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(FRAME.offReply, true)
}

/** One transport's signing: its keys, and what its readers remember to refuse copies. */
export class Signing {
  /** Each key's HMAC with the key already absorbed: cloned per message instead of hashing the key again. */
  private readonly macs = new Map<string, _HMAC<never>>()
  private scratch: _HMAC<never> | undefined
  private readonly out = new Uint8Array(32)
  /** Where the text part of a MAC's input is encoded (TextEncoder.encode's fresh array cost ~700 ns a message). */
  private head = new Uint8Array(256)
  private readonly lanes = new Map<string, Lane>()
  /** How many signatures all lanes remember. */
  private remembered = 0
  /** Signatures forgotten before their window ended, for want of room (MAX_REMEMBERED). */
  private forgotten = 0
  /** Kafka partitions read without the broker's time: the highest offset read and the newest signed time up to it. */
  private readonly orders = new Map<string, { offset: bigint; newest: number }>()
  private readonly refusedAt = new Set<string>()
  readonly windowMs: number

  /** Node's crypto, when this process runs in Node (undefined: @noble/hashes). */
  private readonly node: NodeCrypto | undefined

  /** `hashes: 'noble'` makes the MAC with @noble/hashes in Node too (tests compare the two). */
  constructor(
    private readonly options: CheckedSigning,
    private readonly report: (refused: Refused) => void,
    hashes: 'platform' | 'noble' = 'platform',
  ) {
    this.node = hashes === 'noble' ? undefined : nodeCrypto()
    if (this.node === undefined) for (const [id, secret] of options.keys) this.macs.set(id, hmac.create(sha256, secret) as _HMAC<never>)
    this.windowMs = options.replayWindowMs
  }

  /** The MAC (hex) of `frame` as `subject` under key `id` at `signedAt`; undefined for an unknown key. */
  private mac(id: string, signedAt: number, kind: string, target: string, route: Route | undefined, frame: Uint8Array): string | undefined {
    const secret = this.options.keys.get(id)
    if (secret === undefined) return undefined
    // Every variable part is preceded by its length, so no two subjects read as the same bytes
    // (a reply address holding the separator cannot shift bytes between fields).
    const address = route?.address ?? ''
    const timeout = route === undefined ? '' : String(route.timeoutMs)
    const head = `orrery-sig-1|${id.length}|${id}|${signedAt}|${kind}|${target.length}|${target}|${address.length}|${address}|${timeout}|${frame.length}|`
    if (head.length * 3 > this.head.length) this.head = new Uint8Array(head.length * 3)
    const { written } = utf8.encodeInto(head, this.head)
    if (this.node !== undefined) return this.node.createHmac('sha256', secret).update(this.head.subarray(0, written)).update(frame).digest('hex')
    const h = this.macs.get(id)!._cloneInto(this.scratch)
    this.scratch = h
    h.update(this.head.subarray(0, written))
    h.update(frame)
    h.digestInto(this.out)
    return hex(this.out)
  }

  /**
   * The signature written beside an egress record: `<key id>:<signed ms>:<mac>`. Acks and releases
   * carry none. `attempt` (a core request sent again: its delivery count before this one) is
   * signed with it, so a copy cannot change it and no two sendings share a signature.
   */
  sign(record: Egress, now = Date.now(), attempt?: number): string {
    const at = Math.floor(now)
    const id = this.options.sign
    let mac: string | undefined
    switch (record.kind) {
      case 'publish':
        mac = this.mac(id, at, 'm', record.channel, undefined, record.frame)
        break
      case 'dead':
        // A dead letter is a message of the dead-letter channel, signed when it is written there.
        mac = this.mac(id, at, 'm', record.deadLetter, undefined, record.frame)
        break
      case 'request':
        mac = this.mac(id, at, 'q', attemptTarget(record.channel, attempt), { address: record.replyTo, timeoutMs: record.timeoutMs }, record.frame)
        break
      case 'reply':
        mac = this.mac(id, at, 'r', record.address, undefined, record.frame)
        break
      default:
        throw new OrreryError('INTERNAL', `a ${record.kind} record carries no signature`)
    }
    return `${id}:${at}:${mac!}`
  }

  /**
   * Checks the signature `field` of a message read from the broker: its key, its MAC over what is
   * read (kind by `route`), its time. Returns the signed time and MAC, or undefined after
   * reporting the refusal.
   */
  private verify(
    field: string | undefined,
    kind: string,
    target: string,
    route: Route | undefined,
    frame: Uint8Array,
    channel: string | undefined,
    position: string,
    token?: number,
  ): { signedAt: number; mac: string } | undefined {
    let why: string
    const first = field === undefined ? -1 : field.indexOf(':')
    const second = first < 0 ? -1 : field!.indexOf(':', first + 1)
    if (field === undefined) why = 'it carries no signature'
    else if (first <= 0 || second < 0) why = 'its signature is malformed'
    else {
      const id = field.slice(0, first)
      // The signed time: 1 to 15 digits, read without a string round trip.
      let signedAt = 0
      let digits = second - first - 1
      if (digits < 1 || digits > 15) digits = -1
      for (let i = first + 1; i < second && digits > 0; i++) {
        const c = field.charCodeAt(i) - 48
        if (c < 0 || c > 9) digits = -1
        signedAt = signedAt * 10 + c
      }
      if (!this.options.keys.has(id)) why = `it is signed by key "${id.slice(0, 64)}", which is not one of this transport's keys`
      else if (digits < 0) why = 'its signature is malformed'
      else {
        const expected = this.mac(id, signedAt, kind, target, route, frame)!
        if (sameText(expected, field.slice(second + 1))) return { signedAt, mac: expected }
        why = `its signature (key "${id}") does not match its content`
      }
    }
    this.refuse('signature', channel, position, why, token)
    return undefined
  }

  /** Counts and reports a refusal (an entry read by several readers of this process counts once). */
  private refuse(reason: Refusal, channel: string | undefined, position: string, detail: string, token?: number): void {
    if (position !== '') {
      const key = `${channel ?? ''}\u0000${position}`
      if (this.refusedAt.has(key)) return
      this.refusedAt.add(key)
      if (this.refusedAt.size > MAX_REFUSED_POSITIONS) this.refusedAt.delete(this.refusedAt.values().next().value!)
    }
    // Where the broker still holds it (a group only stops delivering it): an operator can look.
    const where = position === '' ? detail : `${detail} (broker position ${position})`
    this.report(token === undefined ? { reason, channel, detail: where } : { reason, channel, detail: where, replyToken: token })
  }

  /**
   * Whether a message read from `channel` at broker position `position` may go to the core: its
   * signature (`field`) verifies, and it is no copy. `at` is the broker's time of the entry (ms);
   * where a reader cannot know it (a Kafka group's records), their partition's order instead.
   * `more.appendedAfter`, when the reader knows it, is a time of this host's clock at which the
   * entry was not on the broker yet (it had read the stream without it then). `more.lane` names
   * what copies are looked for among (default: the channel's entries; a reader that sees each
   * message once, such as one core NATS subscription, has a lane of its own). `more.attempt` is
   * the delivery count a core request sent again carries (see `sign`). A refusal is reported
   * before this returns false.
   */
  accept(
    field: string | undefined,
    channel: string,
    route: Route | undefined,
    frame: Uint8Array,
    position: string,
    at: number | LogOrder,
    more: { readonly appendedAfter?: number | undefined; readonly lane?: string; readonly attempt?: number | undefined } = {},
  ): boolean {
    const { appendedAfter, lane: laneName = channel } = more
    const signed = this.verify(field, route === undefined ? 'm' : 'q', attemptTarget(channel, more.attempt), route, frame, channel, position)
    if (signed === undefined) return false
    const { signedAt, mac } = signed
    const window = this.windowMs
    // What the reader saw itself: the entry was not on the broker yet at `appendedAfter` (this
    // host's clock), whatever time its position claims (a Redis entry id is its writer's choice).
    if (appendedAfter !== undefined && appendedAfter - signedAt > window)
      return this.replay(
        channel,
        position,
        `it was signed at ${signedAt} and reached the broker after ${appendedAfter} (read without it then), more than replayWindowMs (${window} ms) later`,
      )
    let brokerTime: number
    if (typeof at === 'number') {
      brokerTime = at
      if (Math.abs(at - signedAt) > window)
        return this.replay(channel, position, `it was signed at ${signedAt} and written to the broker at ${at}, more than replayWindowMs (${window} ms) apart`)
    } else {
      // Without the broker's time: a record appended after one signed more than the window later
      // than itself was written again (an honest writer signs just before it appends).
      brokerTime = signedAt
      const order = this.orders.get(at.lane)
      if (order !== undefined && at.offset > order.offset && signedAt < order.newest - window)
        return this.replay(channel, position, `it was signed at ${signedAt}, more than replayWindowMs (${window} ms) before a message the log holds before it`)
      if (order === undefined) this.orders.set(at.lane, { offset: at.offset, newest: signedAt })
      else if (at.offset > order.offset) {
        order.offset = at.offset
        if (signedAt > order.newest) order.newest = signedAt
      }
    }
    let lane = this.lanes.get(laneName)
    if (lane === undefined) {
      lane = laneAt(brokerTime)
      this.lanes.set(laneName, lane)
    }
    // 64 bits of the MAC name it among what is remembered (a shorter key hashes faster; two
    // signatures share one with a chance of about 1 in 10^9 among 100,000).
    const key = mac.slice(0, 16)
    const before = lane.seen.get(key)
    if (before !== undefined) {
      // A redelivery of the same entry (a group's, a mirror read again) is legitimate.
      if (before.position === position) return true
      return this.replay(channel, position, `the same signed message was read at broker position ${before.position} before`)
    }
    this.remember(lane, key, position, signedAt, brokerTime)
    return true
  }

  /**
   * Whether a reply read at this process's reply address `address` may go to the core: signed for
   * that address, within the window of this host's clock (replies are not kept by the broker, so
   * it has no time of its own for them), and never seen before.
   */
  acceptReply(field: string | undefined, address: string, frame: Uint8Array, now = Date.now()): boolean {
    const token = replyToken(frame)
    const signed = this.verify(field, 'r', address, undefined, frame, undefined, '', token)
    if (signed === undefined) return false
    const { signedAt, mac } = signed
    if (Math.abs(now - signedAt) > this.windowMs) {
      this.refuse('replay', undefined, '', `a reply signed at ${signedAt} came at ${now}, more than replayWindowMs (${this.windowMs} ms) later`, token)
      return false
    }
    // Each reply is read once: a second sighting is a copy.
    let lane = this.lanes.get('')
    if (lane === undefined) {
      lane = laneAt(now)
      this.lanes.set('', lane)
    }
    const key = mac.slice(0, 16)
    if (lane.seen.has(key)) {
      this.refuse('replay', undefined, '', 'the same signed reply was read before', token)
      return false
    }
    this.remember(lane, key, '', signedAt, now)
    return true
  }

  private replay(channel: string, position: string, detail: string): false {
    this.refuse('replay', channel, position, detail)
    return false
  }

  /**
   * Remembers a signature until the channel's clock is a window (and a second) past its signed
   * time: a copy written later has a broker time more than the window from it, so the time check
   * refuses it (the broker's clock only moves on; on Redis an entry id chosen by its writer must
   * still be above the stream's last, and a reader's own clock refuses what came later). One
   * already past that is not kept.
   */
  private remember(lane: Lane, mac: string, position: string, signedAt: number, time: number): void {
    if (time > lane.clock) lane.clock = time
    this.prune(lane)
    const bucket = Math.floor(signedAt / BUCKET_MS)
    if (bucket < lane.floor) return
    lane.seen.set(mac, { position, signedAt })
    const list = lane.buckets.get(bucket)
    if (list === undefined) lane.buckets.set(bucket, [mac])
    else list.push(mac)
    this.remembered++
    if (this.remembered > MAX_REMEMBERED) this.forgetOldest()
  }

  /** Forgets the lane's signatures whose bucket ended a window and a second before its clock. */
  private prune(lane: Lane): void {
    const last = Math.floor((lane.clock - this.windowMs - 1_000) / BUCKET_MS) - 1
    if (last < lane.floor) return
    // Bucket by bucket, or (after a long quiet, many empty buckets) the ones that are there.
    if (last - lane.floor > lane.buckets.size) {
      for (const bucket of [...lane.buckets.keys()]) if (bucket <= last) this.forgetBucket(lane, bucket)
    } else for (let bucket = lane.floor; bucket <= last; bucket++) this.forgetBucket(lane, bucket)
    lane.floor = last + 1
  }

  private forgetBucket(lane: Lane, bucket: number): void {
    const list = lane.buckets.get(bucket)
    if (list === undefined) return
    lane.buckets.delete(bucket)
    for (const mac of list) {
      const entry = lane.seen.get(mac)
      // Gone already (forgotten for room), or remembered again under another bucket: left.
      if (entry === undefined || Math.floor(entry.signedAt / BUCKET_MS) !== bucket) continue
      lane.seen.delete(mac)
      this.remembered--
    }
  }

  /** Forgets the first remembered signature of the lane that holds the most, for room (warned once). */
  private forgetOldest(): void {
    let largest: Lane | undefined
    for (const lane of this.lanes.values()) if (largest === undefined || lane.seen.size > largest.seen.size) largest = lane
    const oldest = largest?.seen.keys().next()
    if (oldest === undefined || oldest.done === true) return
    largest!.seen.delete(oldest.value)
    this.remembered--
    if (this.forgotten++ === 0)
      console.warn(
        `orrery: signing remembers at most ${MAX_REMEMBERED} signatures per transport (about ${Math.floor(MAX_REMEMBERED / ((this.windowMs + 1_000) / 1_000))} messages/s read over replayWindowMs ${this.windowMs} ms): more are read, so the oldest are forgotten before their window ends and a copy of one written within it is not refused (a shorter replayWindowMs, or fewer channels per transport, keeps them)`,
      )
  }

  /** @internal Which library makes the MACs (tests). */
  get hashes(): 'node:crypto' | '@noble/hashes' {
    return this.node === undefined ? '@noble/hashes' : 'node:crypto'
  }

  /** @internal Signatures remembered now, and forgotten for room so far (tests). */
  get memory(): { readonly remembered: number; readonly forgotten: number } {
    return { remembered: this.remembered, forgotten: this.forgotten }
  }
}

/** What a request's signature names as its channel: the channel, and the delivery count of a core request sent again. */
function attemptTarget(channel: string, attempt: number | undefined): string {
  return attempt === undefined ? channel : `${channel}\u0000${attempt}`
}
