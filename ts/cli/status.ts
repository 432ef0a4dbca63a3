/** `orrery status` and `orrery agents`: the overview and the agents, as tables or JSON. */
import type { AgentView, Overview } from './views.js'
import { CLIENT_OPTIONS, flagOf, type Parsed, positionals } from './args.js'
import { clientOf } from './client.js'
import { CLIENT_HELP, type Command } from './command.js'
import { ago, counts, duration, type Io, printJson, table } from './output.js'

/** Prints an overview for a person. */
export function printOverview(io: Io, o: Overview): void {
  io.out(`engine    ${o.engine}${o.process === undefined ? '' : `, process ${o.process}`}, up ${duration(o.uptimeMs)}`)
  io.out(`agents    ${o.agents.total} (${counts(o.agents.byHealth)}; ${counts(o.agents.byState)})`)
  io.out(`bus       ${o.channels} channels, ${o.groups} groups, ${o.deadLetters} dead letters`)
  io.out(`runs      ${o.runs === undefined ? 'no workflows attached' : counts(o.runs as Record<string, number>)}`)
}

/** Prints agents as a table. */
export function printAgents(io: Io, agents: readonly AgentView[], now = Date.now()): void {
  if (agents.length === 0) return io.out('no agents')
  io.out(
    table(
      ['ID', 'TYPE', 'STATE', 'HEALTH', 'BREAKER', 'IN FLIGHT', 'LAST BEAT', 'CAPABILITIES', 'TAGS'],
      agents.map((a) => [
        a.remote ? `${a.id} (${a.process ?? 'remote'})` : a.id,
        a.type,
        a.state,
        a.health,
        a.breaker,
        String(a.inFlight),
        ago(a.lastBeat, now),
        a.capabilities.map((c) => `${c.name}@${c.version}`).join(' '),
        a.tags.join(' '),
      ]),
    ),
  )
}

export const status: Command = {
  name: 'status',
  summary: 'what the Orrery runs: engine, agents, channels, dead letters, runs',
  help: `orrery status [options]\n\nThe overview of a served Orrery.\n${CLIENT_HELP}`,
  options: CLIENT_OPTIONS,
  async run(parsed: Parsed, io: Io) {
    positionals(parsed, 'status', [])
    const overview = await clientOf(parsed).get<Overview>('/v1/overview')
    if (flagOf(parsed, 'json')) printJson(io, overview)
    else printOverview(io, overview)
  },
}

export const agents: Command = {
  name: 'agents',
  summary: 'the agents with their state, health, breaker and load',
  help: `orrery agents [options]\n\nEvery agent of the served mesh (remote ones too).\n${CLIENT_HELP}`,
  options: CLIENT_OPTIONS,
  async run(parsed: Parsed, io: Io) {
    positionals(parsed, 'agents', [])
    const list = await clientOf(parsed).get<AgentView[]>('/v1/agents')
    if (flagOf(parsed, 'json')) printJson(io, list)
    else printAgents(io, list)
  },
}
