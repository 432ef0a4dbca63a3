/** `orrery publish` and `orrery tail`: a message onto a channel, and a channel's messages live. */
import { CLIENT_OPTIONS, channelName, flagOf, jsonValue, type Parsed, positionals, stringOf, stringsOf, wholeNumber } from './args.js'
import { clientOf, segment } from './client.js'
import { CLIENT_HELP, type Command } from './command.js'
import { usageError } from './failure.js'
import { clock, type Io, printJson, short } from './output.js'
import type { MessageView } from './views.js'

/** A message in one line: sequence, time, id, payload. */
export function messageLine(m: MessageView): string {
  return `#${m.seq}  ${clock(m.at)}  ${short(m.payload, 100)}`
}

/** `k=v` headers from repeated --header options. */
function headersOf(parsed: Parsed): Record<string, string> | undefined {
  const given = stringsOf(parsed, 'header')
  if (given.length === 0) return undefined
  const headers: Record<string, string> = {}
  for (const h of given) {
    const at = h.indexOf('=')
    if (at <= 0) throw usageError(`--header must be name=value, not ${JSON.stringify(h)}`, 'publish')
    headers[h.slice(0, at)] = h.slice(at + 1)
  }
  return headers
}

export const publish: Command = {
  name: 'publish',
  summary: 'publish a JSON payload on a channel',
  help: `orrery publish <channel> <json> [options]

Publishes one message; prints its id.
  --header name=value  a header (repeatable)
  --key <id>           the message's id (a second publish with it is dropped within the
                       channel's dedup window)
  --priority <p>       low, normal, high or critical
  --ttl <ms>           expires unread after this many ms
${CLIENT_HELP}`,
  options: { ...CLIENT_OPTIONS, header: { type: 'string', multiple: true }, key: { type: 'string' }, priority: { type: 'string' }, ttl: { type: 'string' } },
  async run(parsed: Parsed, io: Io) {
    const [given = '', text = ''] = positionals(parsed, 'publish', ['channel', 'json'])
    const channel = channelName(given, 'publish')
    const body: Record<string, unknown> = { payload: jsonValue(text, '<json>', 'publish') }
    const headers = headersOf(parsed)
    if (headers !== undefined) body['headers'] = headers
    const key = stringOf(parsed, 'key')
    if (key !== undefined) body['key'] = key
    const priority = stringOf(parsed, 'priority')
    if (priority !== undefined) body['priority'] = priority
    const ttl = stringOf(parsed, 'ttl')
    if (ttl !== undefined) body['ttl'] = wholeNumber(ttl, '--ttl', 'publish', 1)
    const published = await clientOf(parsed).post<{ id: string; published: boolean }>(`/v1/channels/${segment(channel)}/messages`, body)
    if (flagOf(parsed, 'json')) printJson(io, published)
    else
      io.out(
        !published.published
          ? `not published on ${channel}: id ${published.id} was seen within its dedup window`
          : `published on ${channel} (id ${published.id})`,
      )
  },
}

export const tail: Command = {
  name: 'tail',
  summary: 'follow a channel: its messages as they are published',
  help: `orrery tail <channel> [options]

Prints the channel's messages as they come (server-sent events) until Ctrl-C.
  --from <where>   latest (default), earliest, or a sequence number
  --count <n>      stop after n messages
${CLIENT_HELP} (one message a line)`,
  options: { ...CLIENT_OPTIONS, from: { type: 'string' }, count: { type: 'string' } },
  async run(parsed: Parsed, io: Io) {
    const [given = ''] = positionals(parsed, 'tail', ['channel'])
    const channel = channelName(given, 'tail')
    const from = stringOf(parsed, 'from') ?? 'latest'
    if (from !== 'latest' && from !== 'earliest') wholeNumber(from, '--from', 'tail')
    const countText = stringOf(parsed, 'count')
    const count = countText === undefined ? Number.POSITIVE_INFINITY : wholeNumber(countText, '--count', 'tail', 1)
    const json = flagOf(parsed, 'json')
    const stop = new AbortController()
    const onSignal = () => stop.abort()
    process.once('SIGINT', onSignal)
    let seen = 0
    try {
      if (!json && io.interactive) io.err(`following ${channel} from ${from} (Ctrl-C ends)`)
      await clientOf(parsed).events(
        `/v1/channels/${segment(channel)}/tail`,
        { from },
        ({ event, data }) => {
          if (event !== 'message') return true
          const message = JSON.parse(data) as MessageView
          if (json) printJson(io, message, true)
          else io.out(messageLine(message))
          return ++seen < count
        },
        stop.signal,
      )
    } finally {
      process.off('SIGINT', onSignal)
    }
  },
}
