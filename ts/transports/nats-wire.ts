/**
 * The native engine's NATS wire: a group's pulls read and answered on a connection of the
 * addon's (async-nats on a tokio worker thread), so parsing and
 * writing leave the JS thread. The driver keeps every decision; see bindings/node/src/nats_wire.rs
 * for the records a pull hands over.
 */
import type { MsgHdrs } from '@nats-io/transport-node'
import type { NatsWireBinding, NatsWireOptions, OpenNatsWire } from '../engines/backend.js'

/**
 * Opens the wire with the engine's `open` (the native engine has one), unless
 * `ORRERY_NATS_WIRE=0` keeps groups' pulls on nats.js (to compare the two); it connects in the
 * background and says so (`connected`, `disconnected`, ...) to `events`.
 */
export function openWire(open: OpenNatsWire | undefined, options: NatsWireOptions, events: (event: string) => void): Wire | undefined {
  if (open === undefined || (typeof process !== 'undefined' && process.env.ORRERY_NATS_WIRE === '0')) return undefined
  let wire: Wire | undefined
  const binding = open(options, (event) => {
    if (wire === undefined) return
    if (event === 'connected') wire.connected = true
    else if (event === 'disconnected' || event === 'closed') wire.connected = false
    events(event)
  })
  wire = new Wire(binding)
  return wire
}

/** A credentials file's text, from its user JWT and seed. */
export function credsFile(jwt: string, seed: string): string {
  return `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`
}

/** One record of a pull's batch. */
export type WireRecord =
  | { readonly kind: 'delivery'; readonly delivery: WireDelivery }
  | { readonly kind: 'status'; readonly code: number; readonly description: string }
  | { readonly kind: 'ended' }

let pulls = 0

/** A turn's answers: settled once the server read them all (or failed). */
interface Batch {
  readonly promise: Promise<void>
  readonly resolve: () => void
  readonly reject: (e: Error) => void
}

/** The wire: pulls, and answers batched per turn (one crossing for a turn's acks). */
export class Wire {
  private readonly bodies = new Map<string, number[]>()
  /** Handles let go of this turn (after its answers go). */
  private forgotten: number[] = []
  private scheduled = false
  /** The batch this turn's answers join (sent at the end of the turn). */
  private next: Batch | undefined
  /** Batches sent and not settled yet. */
  private readonly out = new Set<Batch>()

  /** Whether its connection is up (it connects in the background first). */
  connected = false
  /** Set once closed: nothing it was given is known to be read any more. */
  private closed: Error | undefined

  constructor(readonly binding: NatsWireBinding) {}

  /** Closes the wire; answers not yet read by the server fail (they are owed nothing more). */
  close(): void {
    this.connected = false
    this.binding.close()
    this.bodies.clear()
    this.forgotten = []
    const closed = new Error('the NATS wire closed before the server read the answers')
    this.closed = closed
    this.next?.reject(closed)
    this.next = undefined
    for (const batch of this.out) batch.reject(closed)
    this.out.clear()
  }

  /**
   * Sends a pull to `subject`; each record it brings goes to `record`, in order, and what
   * `record` throws to `failed` (nothing may throw into the addon's callback: Node would treat
   * it as uncaught); the deliveries after one that threw are given back to the server (nak).
   * Returns its end.
   */
  pull(subject: string, request: string, record: (r: WireRecord) => void, failed: (error: unknown) => void): () => void {
    const id = ++pulls
    this.binding.pull(id, subject, request, (batch) => {
      let failure: unknown
      let threw = false
      for (const r of records(batch, this)) {
        if (threw) {
          if (r.kind === 'delivery') {
            r.delivery.nak()
            r.delivery.forget()
          }
          continue
        }
        try {
          record(r)
        } catch (error) {
          threw = true
          failure = error
        }
      }
      if (threw) failed(failure)
    })
    return () => this.binding.endPull(id)
  }

  /** Answers delivery `handle` with `body` (sent at the end of this turn, with the turn's others). */
  answer(handle: number, body: string): void {
    let handles = this.bodies.get(body)
    if (handles === undefined) {
      handles = []
      this.bodies.set(body, handles)
    }
    handles.push(handle)
    if (this.next === undefined) {
      let resolve = () => {}
      let reject: (e: Error) => void = () => {}
      const promise = new Promise<void>((res, rej) => {
        resolve = res
        reject = rej
      })
      // Awaited by whoever waits for the server (`settled`); a batch of naks or terms alone is
      // not, and its failure must not be an unhandled rejection.
      promise.catch(() => {})
      this.next = { promise, resolve, reject }
    }
    this.schedule()
  }

  /**
   * Lets go of delivery `handle`: it will not be answered (again). At the end of this turn,
   * after the turn's answers, which still go.
   */
  forget(handle: number): void {
    this.forgotten.push(handle)
    this.schedule()
  }

  /** How many deliveries the wire keeps an answer's address for (read, and not answered or let go). */
  kept(): number {
    return this.binding.kept()
  }

  private schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true
      queueMicrotask(() => this.send())
    }
  }

  /** Settles once every answer given so far has been read by the server; rejects if one was not. */
  settled(): Promise<void> {
    if (this.closed !== undefined) return Promise.reject(this.closed)
    const waits = [...this.out].map((b) => b.promise)
    if (this.next !== undefined) waits.push(this.next.promise)
    return waits.length === 0 ? Promise.resolve() : Promise.all(waits).then(() => {})
  }

  private send(): void {
    this.scheduled = false
    const batch = this.next
    this.next = undefined
    if (batch !== undefined) this.sendAnswers(batch)
    if (this.forgotten.length > 0) {
      const handles = Uint32Array.from(this.forgotten)
      this.forgotten = []
      if (this.closed === undefined) this.binding.forget(handles)
    }
  }

  private sendAnswers(batch: Batch): void {
    this.out.add(batch)
    const settle = (error?: Error) => {
      if (!this.out.delete(batch)) return
      if (error === undefined) batch.resolve()
      else batch.reject(error)
    }
    let left = this.bodies.size
    let ok = true
    const bodies = [...this.bodies]
    this.bodies.clear()
    try {
      for (const [body, handles] of bodies) {
        this.binding.answer(Uint32Array.from(handles), body, (sent) => {
          ok &&= sent
          if (--left > 0) return
          settle(ok ? undefined : new Error('the NATS wire lost its connection before the server read the answers'))
        })
      }
    } catch (error) {
      // Closed meanwhile: what was not sent is not answered.
      settle(error instanceof Error ? error : new Error(String(error)))
    }
  }
}

/** A delivery read on the wire, answered by its handle there. */
export class WireDelivery {
  constructor(
    private readonly wire: Wire,
    private readonly handle: number,
    readonly seq: number,
    readonly info: { readonly deliveryCount: number; readonly timestampNanos: number },
    readonly headers: MsgHdrs | undefined,
    readonly data: Uint8Array,
  ) {}

  ack(): void {
    this.wire.answer(this.handle, '+ACK')
  }

  nak(delayMs?: number): void {
    this.wire.answer(this.handle, delayMs ? `-NAK ${JSON.stringify({ delay: Math.round(delayMs * 1e6) })}` : '-NAK')
  }

  term(): void {
    this.wire.answer(this.handle, '+TERM')
  }

  /** Lets it go: it will not be answered (again); an answer given this turn still goes. */
  forget(): void {
    this.wire.forget(this.handle)
  }
}

const text = new TextDecoder()

function* records(batch: Uint8Array, wire: Wire): Generator<WireRecord> {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength)
  let at = 0
  while (at < batch.length) {
    const kind = batch[at]
    if (kind === 0) {
      const handle = view.getUint32(at + 1, true)
      const deliveryCount = view.getUint32(at + 5, true)
      const seq = view.getFloat64(at + 9, true)
      const timestampNanos = view.getFloat64(at + 17, true)
      const headerBytes = view.getUint32(at + 25, true)
      const headers = headerBytes === 0 ? undefined : headersOf(text.decode(batch.subarray(at + 29, at + 29 + headerBytes)))
      at += 29 + headerBytes
      const dataBytes = view.getUint32(at, true)
      const data = batch.subarray(at + 4, at + 4 + dataBytes)
      at += 4 + dataBytes
      yield { kind: 'delivery', delivery: new WireDelivery(wire, handle, seq, { deliveryCount, timestampNanos }, headers, data) }
    } else if (kind === 1) {
      const code = view.getUint16(at + 1, true)
      const length = view.getUint16(at + 3, true)
      const description = text.decode(batch.subarray(at + 5, at + 5 + length))
      at += 5 + length
      yield { kind: 'status', code, description }
    } else {
      yield { kind: 'ended' }
      return
    }
  }
}

/** The headers a delivery carries, read as nats.js's `get` reads them (the first value, '' when none). */
function headersOf(block: string): MsgHdrs {
  const values = new Map<string, string>()
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const name = line.slice(0, colon)
    if (!values.has(name)) values.set(name, line.slice(colon + 1).trim())
  }
  return { get: (name: string) => values.get(name) ?? '', has: (name: string) => values.has(name) } as unknown as MsgHdrs
}
