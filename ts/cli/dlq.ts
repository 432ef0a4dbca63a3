/** `orrery dlq list|replay|discard`: a channel's dead letters, and settling them. */
import { CLIENT_OPTIONS, channelName, flagOf, type Parsed, positionals, stringOf, wholeNumber } from './args.js'
import { clientOf, segment } from './client.js'
import { CLIENT_HELP, type Command } from './command.js'
import { usageError } from './failure.js'
import { clock, cut, type Io, printJson, short, table } from './output.js'
import type { DeadLetterView } from './views.js'

/** Prints dead letters as a table. */
export function printDeadLetters(io: Io, channel: string, letters: readonly DeadLetterView[]): void {
  if (letters.length === 0) return io.out(`no dead letters on ${channel}`)
  io.out(
    table(
      ['SEQ', 'AT', 'ORIGIN', 'DELIVERIES', 'REASON', 'PAYLOAD'],
      letters.map((d) => [String(d.seq), clock(d.at), `${d.originChannel}#${d.originSeq}`, String(d.deliveries), cut(d.reason, 60), short(d.payload, 50)]),
    ),
  )
}

export const dlq: Command = {
  name: 'dlq',
  summary: 'dead letters of a channel: list, replay or discard',
  help: `orrery dlq list <channel> [--limit <n>] [options]
orrery dlq replay <channel> <seq> [options]
orrery dlq discard <channel> <seq> [options]

<channel> is the origin channel (its dead letters live on <channel>.dead-letter); <seq> is a
dead letter's sequence number as \`list\` shows it. \`replay\` publishes the original payload and
headers to the origin channel again; \`discard\` drops it. Either settles it: \`list\` no longer
shows it.
${CLIENT_HELP}`,
  options: { ...CLIENT_OPTIONS, limit: { type: 'string' } },
  async run(parsed: Parsed, io: Io) {
    const action = parsed.positionals[0]
    const rest = { ...parsed, positionals: parsed.positionals.slice(1) }
    const json = flagOf(parsed, 'json')
    if (action === 'list') {
      const [given = ''] = positionals(rest, 'dlq', ['channel'])
      const channel = channelName(given, 'dlq')
      const limitText = stringOf(parsed, 'limit')
      const limit = limitText === undefined ? undefined : wholeNumber(limitText, '--limit', 'dlq', 1)
      const letters = await clientOf(parsed).get<DeadLetterView[]>(`/v1/channels/${segment(channel)}/dead-letters`, { limit })
      return json ? printJson(io, letters) : printDeadLetters(io, channel, letters)
    }
    if (action === 'replay' || action === 'discard') {
      if (stringOf(parsed, 'limit') !== undefined) throw usageError(`--limit is for dlq list, not dlq ${action}`, 'dlq')
      const [given = '', seqText = ''] = positionals(rest, 'dlq', ['channel', 'seq'])
      const channel = channelName(given, 'dlq')
      const seq = wholeNumber(seqText, '<seq>', 'dlq')
      const answer = await clientOf(parsed).post<{ id?: string }>(`/v1/channels/${segment(channel)}/dead-letters/${seq}/${action}`)
      if (json) return printJson(io, answer)
      return io.out(action === 'replay' ? `replayed dead letter #${seq} to ${channel} (id ${answer.id})` : `discarded dead letter #${seq} of ${channel}`)
    }
    throw usageError(action === undefined ? 'missing list, replay or discard' : `unknown dlq action ${JSON.stringify(action)} (list, replay, discard)`, 'dlq')
  },
}
