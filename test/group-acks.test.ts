import { describe, expect, it } from 'vitest'

import type { Delivery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { clocked, errorOf, settle } from './helpers.js'

// Acks made while deliveries are handed out share one crossing into the core; these check that
// nothing of that shows: every read sees them, room they make is used, a stale one still throws.
describe(`group acks sent together (${ENGINE})`, () => {
  it('an ack inside the handler is counted by stats and pending read right after it', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'workers')
    const seen: Array<{ acked: number; pending: number; listed: number }> = []
    group.join().subscribe((d) => {
      d.ack()
      const { acked, pending } = group.stats()
      seen.push({ acked, pending, listed: group.pending().length })
    })
    await bus.publishBatch([1, 2, 3].map((n) => ({ channel: 'jobs', payload: n })))
    await settle()
    expect(seen).toEqual([
      { acked: 1, pending: 2, listed: 2 },
      { acked: 2, pending: 1, listed: 1 },
      { acked: 3, pending: 0, listed: 0 },
    ])
  })

  it('room made by acks in the handler lets the rest through, past the size of one queue of acks', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'workers')
    const got: number[] = []
    group.join({ maxInFlight: 1 }).subscribe((d) => {
      got.push(d.message.payload)
      d.ack()
    })
    const wide: number[] = []
    const other = bus.group<number>('bulk', 'workers')
    other.join({ maxInFlight: 3000 }).subscribe((d) => {
      wide.push(d.message.payload)
      d.ack()
    })
    await bus.publishBatch(Array.from({ length: 5 }, (_, n) => ({ channel: 'jobs', payload: n })))
    await bus.publishBatch(Array.from({ length: 2500 }, (_, n) => ({ channel: 'bulk', payload: n })))
    await settle()
    expect(got).toEqual([0, 1, 2, 3, 4])
    expect(wide.length).toBe(2500)
    expect(group.stats()).toMatchObject({ delivered: 5, acked: 5, pending: 0 })
    expect(other.stats()).toMatchObject({ delivered: 2500, acked: 2500, pending: 0 })
  })

  it('a delivery whose lease ran out is STALE_ACK even when acked among fresh ones', async () => {
    const { bus, advance } = await clocked()
    const group = bus.group<number>('jobs', 'workers', { visibilityTimeout: 100 })
    const held: Array<Delivery<number>> = []
    group.join({ maxInFlight: 1 }).subscribe((d) => held.push(d))
    await bus.publish('jobs', 1)
    await settle()
    const first = held[0]!
    advance(150)
    bus.flush()
    // Its lease expired, and the message came back as a new delivery.
    const again = held[1]!
    expect(again.message.seq).toBe(first.message.seq)
    again.ack()
    expect((await errorOf(() => first.ack()))?.code).toBe('STALE_ACK')
    expect(group.stats()).toMatchObject({ acked: 1, redelivered: 1, pending: 0 })
  })

  it('an ack after the member left is STALE_ACK, and the ack before it still counts', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'workers')
    const held: Array<Delivery<number>> = []
    const sub = group.join().subscribe((d) => held.push(d))
    await bus.publishBatch([1, 2].map((n) => ({ channel: 'jobs', payload: n })))
    await settle()
    held[0]!.ack()
    sub.unsubscribe()
    expect((await errorOf(() => held[1]!.ack()))?.code).toBe('STALE_ACK')
    expect(group.stats()).toMatchObject({ acked: 1, members: 0 })
  })
  it('a delivery claimed away by another member while its batch is handed out is STALE_ACK at its ack', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'workers')
    const outcomes: string[] = []
    let claimed = -1
    group.join({ maxInFlight: 10 }).subscribe((d) => {
      if (d.message.payload === 1) {
        // Handling the first record of the batch, another member takes what is in flight,
        // including the second record, already drained but not handed out yet.
        const other = group.join({ maxInFlight: 10 })
        other.subscribe(() => {})
        claimed = group.claim(other.memberId(), { minIdle: 0 })
        return
      }
      try {
        d.ack()
        outcomes.push('acked')
      } catch (error) {
        outcomes.push((error as { code: string }).code)
      }
    })
    await bus.publishBatch([1, 2].map((n) => ({ channel: 'jobs', payload: n })))
    await settle()
    expect(claimed).toBe(2)
    expect(outcomes).toEqual(['STALE_ACK'])
    // Nothing was counted as acked, and later calls are not failed by a dropped queued ack.
    await bus.publish('other', 1)
    bus.flush()
    expect(group.stats().acked).toBe(0)
  })
})
