import { describe, expect, expectTypeOf, it } from 'vitest'
import { z } from 'zod'

import type { BusEvent } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { clocked, collect, errorOf, settle } from './helpers.js'

const Order = z.object({ sku: z.string().min(1), quantity: z.number().int().positive(), note: z.string().optional() })

describe(`schema validation (${ENGINE})`, () => {
  it('validates at publish: an invalid payload is refused with SCHEMA_INVALID naming the field', async () => {
    const { bus } = await clocked()
    const orders = bus.topic('orders', { schema: Order, schemaId: 'order@1.0' })
    const got = collect(orders.subscribe())
    await orders.publish({ sku: 'A-1', quantity: 2 })
    const err = await errorOf(() => orders.publish({ sku: 'A-2', quantity: -1 }))
    expect(err).toMatchObject({ name: 'OrreryError', code: 'SCHEMA_INVALID', details: { field: 'quantity', schema: 'order@1.0' } })
    expect(err?.message).toContain('field quantity')
    await settle()
    expect(got.map((m) => [m.payload.sku, m.schema])).toEqual([['A-1', 'order@1.0']])
    expect(bus.stats('orders').published).toBe(1)
    // Types flow from the schema to the handler.
    expectTypeOf(got[0]!.payload).toEqualTypeOf<{ sku: string; quantity: number; note?: string | undefined }>()
  })

  it('validates at receive: invalid messages are skipped and reported; groups dead-letter them', async () => {
    const { bus } = await clocked()
    const events = collect(bus.events)
    const orders = bus.topic('orders', { schema: Order })
    const typed = collect(orders.subscribe())
    const group = orders.group('billing')
    const billed = collect(group.join())
    await bus.publish('orders', { sku: '', quantity: 1 }) // a producer that skipped validation
    await orders.publish({ sku: 'ok', quantity: 1 })
    await settle(10)
    expect(typed.map((m) => m.payload.sku)).toEqual(['ok'])
    expect(billed.map((d) => d.message.payload.sku)).toEqual(['ok'])
    const invalid = events.filter((e): e is Extract<BusEvent, { type: 'schema-invalid' }> => e.type === 'schema-invalid')
    expect(invalid.length).toBe(2)
    expect(invalid[0]!.error.details['field']).toBe('sku')
    const dead = collect(bus.subscribe('orders.dead-letter', { from: 'earliest' }))
    await settle()
    expect(dead[0]!.headers['x-orrery-dead-letter-reason']).toMatch(/^schema-invalid: .*field sku/)
  })

  it('refuses a malformed schema id', async () => {
    const { bus } = await clocked()
    expect((await errorOf(() => bus.topic('orders', { schema: Order, schemaId: 'order-v1' })))?.code).toBe('INVALID_OPTION')
  })
})
