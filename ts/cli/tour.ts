/**
 * The scripted tour `orrery serve --tour` prints (and `npm start` shows in CI): the client commands
 * run against the server just started, each shown as the command line a person would type.
 */
import { parse } from './args.js'
import { publish, tail } from './channels.js'
import { ApiClient } from './client.js'
import type { Command } from './command.js'
import { dlq } from './dlq.js'
import type { Io } from './output.js'
import type { DeadLetterView } from './views.js'
import { runs } from './runs.js'
import { agents, status } from './status.js'

/** One step: the command, its arguments as typed, a line saying what it shows, and what to wait for first. */
type Step = [command: Command, argv: string[], about: string, before?: () => Promise<void>]

/** Polls `ok` every 20 ms for at most `ms` (the step then shows what there is). */
async function until(ok: () => Promise<boolean>, ms = 3_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await ok()) && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 20))
}

/** Quotes an argument for the shown command line where a shell would need it. */
const quoted = (arg: string) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)

/** Runs the tour against `url` with `token`, printing each command and its output on `io`. */
export async function tour(io: Io, url: string, token: string): Promise<void> {
  const client = new ApiClient(url, token)
  // The billing group dead-letters the order a moment after its publish.
  const deadLettered = () =>
    until(async () =>
      (await client.get<DeadLetterView[]>('/v1/channels/orders/dead-letters', { limit: 1000 })).some((d) => (d.payload as { id?: unknown }).id === 'tour-1'),
    )
  const steps: Step[] = [
    [status, [], 'the overview'],
    [agents, [], 'the demo mesh: pricers, stock and couriers (courier-2 reports itself degraded)'],
    [publish, ['tour', '{"hello":"orrery"}'], 'a message on a channel of its own'],
    [tail, ['tour', '--from', 'earliest', '--count', '1'], 'and the channel read back (server-sent events)'],
    [publish, ['orders', '{"id":"tour-1","sku":"","qty":1,"address":"1 Orbit Lane"}'], 'an order without a sku: the billing group cannot price it'],
    [dlq, ['list', 'orders', '--limit', '3'], "so it lands on orders' dead letters (the demo's own too)", deadLettered],
    [runs, ['start', 'fulfil-order', '{"id":"tour-2","sku":"lamp","qty":2,"address":"2 Orbit Lane"}', '--id', 'tour-2'], 'a workflow run'],
    [runs, ['signal', 'tour-2', 'approve', '{"by":"the tour"}', '--wait'], 'approved: it charges, ships and completes'],
  ]
  io.out(`\nA tour of the API (ORRERY_URL=${url} ORRERY_TOKEN=<the admin token>):`)
  for (const [command, argv, about, before] of steps) {
    await before?.()
    io.out(`\n# ${about}\n$ orrery ${[command.name, ...argv].map(quoted).join(' ')}`)
    await command.run(parse([...argv, '--url', url, '--token', token], command.options, command.name), io)
  }
}
