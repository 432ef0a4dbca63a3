// Requests and direct messages. Run by test/examples.test.ts on both engines; the regions are
// the code blocks of docs/requests.md.
import assert from 'node:assert/strict'
import { isOrreryError, Orrery } from 'orrery'

// #region respond
const orrery = await Orrery.create()
const { bus } = orrery

// The type arguments type the request's payload and the reply; neither is checked at run time
// (give the channel a schema through a topic when it must be).
const stop = bus.respond<{ a: number; b: number }, number>('math.add', (req) => req.payload.a + req.payload.b, { group: 'adders' })

// request() resolves with the reply message: its payload is the result.
const reply = await bus.request<number>('math.add', { a: 2, b: 3 }, { timeout: 1_000 })
assert.equal(reply.payload, 5)
assert.equal(reply.kind, 'response')
// #endregion

// #region errors
// A handler that throws: the caller gets HANDLER_ERROR with its message.
bus.respond<string, never>('fail', () => {
  throw new Error('no such user')
})
await assert.rejects(bus.request('fail', 'bob'), (err) => isOrreryError(err, 'HANDLER_ERROR') && /no such user/.test(err.message))

// Nobody listening: NO_RESPONDER at once. Nobody answering in time: TIMEOUT.
stop()
await assert.rejects(bus.request('math.add', { a: 1, b: 1 }), (err) => isOrreryError(err, 'NO_RESPONDER'))
bus.respond('slow', () => new Promise((resolve) => setTimeout(resolve, 200, 'late')))
await assert.rejects(bus.request('slow', null, { timeout: 20 }), (err) => isOrreryError(err, 'TIMEOUT'))
// #endregion

// #region direct
// Direct messages: send() publishes to the agent's inbox channel ('inbox.<name>').
const inbox = bus.inbox<string>('alice')[Symbol.asyncIterator]()
const received = inbox.next()
await bus.send('alice', 'hello', { sender: 'bob' })
const m = (await received).value
assert.equal(m?.payload, 'hello')
assert.equal(m?.sender, 'bob')
assert.equal(m?.channel, 'inbox.alice')
await inbox.return?.()
// #endregion

await new Promise((resolve) => setTimeout(resolve, 250)) // let the slow responder finish
orrery.close()
