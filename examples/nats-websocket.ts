// Channels across processes from a browser page: a nats transport over WebSocket (the NATS
// server's `websocket` listener). Run by test/examples.test.ts in Node on both engines against the
// test server (scripts/servers.sh, ws://127.0.0.1:18443; ORRERY_NATS_WS_URL names another); the
// code is the same in a page, where `import { Orrery } from 'orrery'` is the browser entry. The
// region is the code block of docs/transports.md, "In a browser: NATS over WebSocket". Two
// Orrery instances stand for two tabs.
import assert from 'node:assert/strict'
import { Orrery } from 'orrery'

// In a page there is no process.env: the URL is the app's to know.
const url = process.env['ORRERY_NATS_WS_URL'] ?? 'ws://127.0.0.1:18443'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const room = `example-${process.pid}-${Date.now().toString(36)}`

// #region browser
const options = {
  // ws:// or wss:// (TLS): the server's websocket listener, never nats:// in a page.
  transports: { bus: { kind: 'nats', servers: url } },
  bindings: { [`${room}.*`]: 'bus' },
} as const
const tab = await Orrery.create(options) // npm i @nats-io/nats-core @nats-io/jetstream
const other = await Orrery.create(options) // another tab, another browser, or a Node process over nats://

const said: string[] = []
other.bus.subscribe<string>(`${room}.chat`).subscribe((m) => said.push(m.payload))
other.bus.respond<string, number>(`${room}.length`, (req) => req.payload.length, { group: 'counters' })

await tab.bus.publish(`${room}.chat`, 'hello from a page')
assert.equal((await tab.bus.request<number>(`${room}.length`, 'four')).payload, 4)

while (said.length < 1) await new Promise((r) => setTimeout(r, 10))
assert.deepEqual(said, ['hello from a page'])
await tab.shutdown()
await other.shutdown()
// #endregion
