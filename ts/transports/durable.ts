/**
 * The `durable` transport: channels kept on disk by the native engine (a redb file beside the
 * in-memory bus, its own writer thread). Its channels are local channels, with every in-process
 * rule; the core stages their rows after every call (crates/core/src/bus/persist.rs). This file
 * is the facade's side: a commit once per turn of the event loop (group commit, as the durable
 * store does), and a publish that resolves once its commit is on disk.
 */
import type { BusCore, BusDiskCore } from '../engines/backend.js'
import { OrreryError } from '../errors.js'
import type { CheckedDurableOptions } from './config.js'

interface Waiter {
  readonly ticket: number
  readonly resolve: () => void
  readonly reject: (error: unknown) => void
}

/** TRANSPORT_UNAVAILABLE: the disk failed; nothing more is acknowledged. */
function diskError(transport: string, reason: string): OrreryError {
  return new OrreryError('TRANSPORT_UNAVAILABLE', `the durable transport "${transport}" cannot write: ${reason}`, {
    details: { transport, kind: 'durable' },
  })
}

/** UNSUPPORTED for durable transport `transport` on an engine that keeps the bus in memory (wasm). */
export function inMemoryOnly(transport: string): OrreryError {
  return new OrreryError(
    'UNSUPPORTED',
    `transport "${transport}" is durable, and the wasm engine keeps the bus in memory: use the native engine for a durable transport`,
    { details: { transport, kind: 'durable' } },
  )
}

export class DurableDisk {
  private submitting = false
  private committedKnown = 0
  private failure: string | undefined
  private listening = false
  private readonly waiters: Waiter[] = []
  private closed = false

  private constructor(
    private readonly disk: BusDiskCore,
    private readonly transport: string,
  ) {}

  /**
   * Opens the transport's file on `core` (before any channel is used): every durable channel
   * comes back from it. The wasm engine cannot: UNSUPPORTED, as for a durable store there.
   */
  static open(core: BusCore, transport: string, options: CheckedDurableOptions): DurableDisk {
    if (core.openDisk === undefined) throw inMemoryOnly(transport)
    return new DurableDisk(core.openDisk(options.path), transport)
  }

  /** Keeps a channel on disk (a binding matched it on first use). */
  makeDurable(channel: number): void {
    this.disk.makeDurable(channel)
  }

  /** Whether a channel is kept on disk (one read back from the file may be bound no more). */
  isDurable(channel: number): boolean {
    return this.disk.isDurable(channel)
  }

  /**
   * After a publish: resolves once everything staged so far is on disk (the publish's rows among
   * it), or undefined when nothing waits for a commit.
   */
  written(): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(diskError(this.transport, this.failure))
    const [submitted, committed] = this.disk.tickets() as [number, number]
    if (submitted < 0) return Promise.reject(diskError(this.transport, this.disk.failure() ?? 'a commit failed'))
    if (committed > this.committedKnown) this.committedKnown = committed
    if (submitted <= this.committedKnown) return undefined
    this.submitSoon()
    return new Promise((resolve, reject) => {
      this.waiters.push({ ticket: submitted, resolve, reject })
      if (!this.listening) {
        this.listening = true
        this.disk.setListener((c) => this.onCommit(c))
        // A commit may have landed before the listener was set.
        this.onCommit(this.disk.tickets()[1]!)
      }
    })
  }

  /**
   * Group commit: what a turn changed (publishes, acks, deliveries) goes to disk in one commit
   * when the turn ends.
   */
  submitSoon(): void {
    if (this.submitting || this.closed) return
    this.submitting = true
    queueMicrotask(() => {
      this.submitting = false
      if (this.closed) return
      try {
        this.disk.submit()
      } catch (error) {
        this.failure ??= (error as Error).message
        this.onCommit(-1)
      }
    })
  }

  /** The disk committed up to `committed` (-1: a commit failed). */
  private onCommit(committed: number): void {
    if (committed < 0) this.failure ??= this.disk.failure() ?? 'a commit failed'
    else if (committed > this.committedKnown) this.committedKnown = committed
    let done = 0
    while (done < this.waiters.length && this.waiters[done]!.ticket <= this.committedKnown) this.waiters[done++]!.resolve()
    this.waiters.splice(0, done)
    if (this.failure !== undefined) {
      const error = diskError(this.transport, this.failure)
      for (const waiter of this.waiters.splice(0)) waiter.reject(error)
    }
    if (this.waiters.length === 0 && this.listening) {
      this.listening = false
      // Cleared so an idle durable bus does not keep Node running.
      this.disk.setListener(null)
    }
  }

  /**
   * The bus closes: what the last turn staged is committed now, and waited for (a commit takes
   * well under a millisecond to a few), so a publish made just before settles as it landed: on
   * disk, or TRANSPORT_UNAVAILABLE if the disk failed. CLOSED is left for a disk already gone.
   */
  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.listening) {
      this.listening = false
      this.disk.setListener(null)
    }
    let committed: number | undefined
    try {
      this.disk.flush()
      committed = this.disk.tickets()[1]
    } catch {
      // The bus was freed first: what it staged was committed as it let go, unknown here.
    }
    if (committed !== undefined) this.onCommit(committed)
    const error = new OrreryError('CLOSED', 'the bus closed before the publish was known to be on disk: it may or may not be')
    for (const waiter of this.waiters.splice(0)) waiter.reject(error)
  }
}
