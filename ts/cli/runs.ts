/** `orrery runs list|show|start|signal|cancel`: workflow runs. */
import { CLIENT_OPTIONS, flagOf, jsonValue, type Parsed, positionals, stringOf, wholeNumber } from './args.js'
import { type ApiClient, clientOf, segment } from './client.js'
import { CLIENT_HELP, type Command } from './command.js'
import { usageError } from './failure.js'
import { clock, duration, type Io, printJson, short, table, withProgress } from './output.js'
import type { RunDetail, RunEvent, RunView } from './views.js'

const ACTIONS = ['list', 'show', 'start', 'signal', 'cancel'] as const

/** Prints runs as a table. */
export function printRuns(io: Io, runs: readonly RunView[]): void {
  if (runs.length === 0) return io.out('no runs')
  io.out(
    table(
      ['ID', 'DEFINITION', 'STATUS', 'STARTED', 'TOOK'],
      runs.map((r) => [r.id, r.definition, r.status, clock(r.startedAt), r.finishedAt === undefined ? '-' : duration(r.finishedAt - r.startedAt)]),
    ),
  )
}

/** One history event in a line (node-done and decisions left out: the steps say it). */
function eventLine(event: RunEvent, t0: number): string | undefined {
  const e = event as RunEvent & Record<string, unknown>
  const head = `${String(e.seq).padStart(4)} ${`+${Math.round(e.at - t0)}`.padStart(7)} ms  `
  const error = e['error'] as { code?: string; message?: string } | undefined
  switch (e.type) {
    case 'started':
      return `${head}started${e['input'] === undefined ? '' : `         ${short(e['input'])}`}`
    case 'step-started':
      return `${head}step-started    ${e['step']} #${e['attempt']}${e['compensation'] === true ? ' (compensation)' : ''}`
    case 'step-completed':
      return `${head}step-completed  ${e['step']} #${e['attempt']} ${e['outcome']}${error === undefined ? ` -> ${short(e['output'])}` : `: ${error.message}`}`
    case 'retry':
      return `${head}retry           ${e['step']} #${e['attempt']}`
    case 'signal':
      return `${head}signal          ${e['name']} ${short(e['payload'])}`
    case 'compensated':
      return `${head}compensated     ${e['step']} ${e['ok'] === true ? 'ok' : 'FAILED'}`
    case 'run-finished':
      return `${head}run-finished    ${e['status']}${error === undefined ? ` -> ${short(e['output'])}` : ` (${error.code}: ${error.message})`}`
    default:
      return undefined
  }
}

/** Prints a run: what it is, then its history. */
export function printRun(io: Io, run: RunDetail): void {
  io.out(`run ${run.id}: ${run.definition} ${run.version.slice(0, 19)}, ${run.status}`)
  io.out(`started ${clock(run.startedAt)}${run.finishedAt === undefined ? '' : `, finished after ${duration(run.finishedAt - run.startedAt)}`}`)
  const t0 = run.history[0]?.at ?? run.startedAt
  for (const e of run.history) {
    const line = eventLine(e, t0)
    if (line !== undefined) io.out(line)
  }
  if (run.historyTotal > run.history.length) io.out(`(the first ${run.history.length} of ${run.historyTotal} events)`)
}

/** Polls the run until it is no longer queued or running, with a spinner on a terminal. */
async function settled(client: ApiClient, io: Io, id: string): Promise<RunDetail> {
  return withProgress(io, `waiting for run ${id}`, async (update) => {
    for (;;) {
      const run = await client.get<RunDetail>(`/v1/runs/${segment(id)}`)
      if (run.status !== 'running' && run.status !== 'queued') return run
      update(`waiting for run ${id} (${run.history.length} events)`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  })
}

export const runs: Command = {
  name: 'runs',
  summary: 'workflow runs: list, show, start, signal, cancel',
  help: `orrery runs list [--status <s>] [--definition <name>] [--limit <n, default 100>] [options]
orrery runs show <id> [options]
orrery runs start <definition> [<json input>] [--id <id>] [--wait] [options]
orrery runs signal <id> <name> [<json payload>] [--wait] [options]
orrery runs cancel <id> [options]

--wait waits (with a spinner on a terminal) until the run is no longer queued or running, then shows it;
the exit code stays 0 whatever its outcome (read its status).
${CLIENT_HELP}`,
  options: {
    ...CLIENT_OPTIONS,
    status: { type: 'string' },
    definition: { type: 'string' },
    limit: { type: 'string' },
    id: { type: 'string' },
    wait: { type: 'boolean' },
  },
  async run(parsed: Parsed, io: Io) {
    const action = parsed.positionals[0]
    if (!ACTIONS.includes(action as (typeof ACTIONS)[number])) {
      throw usageError(
        action === undefined ? 'missing list, show, start, signal or cancel' : `unknown runs action ${JSON.stringify(action)} (${ACTIONS.join(', ')})`,
        'runs',
      )
    }
    const only: Record<string, readonly string[]> = { list: ['status', 'definition', 'limit'], start: ['id', 'wait'], signal: ['wait'] }
    for (const name of ['status', 'definition', 'limit', 'id', 'wait']) {
      if (parsed.values[name] !== undefined && !(only[action ?? '']?.includes(name) ?? false))
        throw usageError(`--${name} is not an option of runs ${action}`, 'runs')
    }
    const rest = { ...parsed, positionals: parsed.positionals.slice(1) }
    const json = flagOf(parsed, 'json')
    const client = clientOf(parsed)
    const show = (run: RunDetail) => (json ? printJson(io, run) : printRun(io, run))
    switch (action) {
      case 'list': {
        positionals(rest, 'runs', [])
        const limitText = stringOf(parsed, 'limit')
        const query = {
          status: stringOf(parsed, 'status'),
          definition: stringOf(parsed, 'definition'),
          limit: limitText === undefined ? undefined : wholeNumber(limitText, '--limit', 'runs', 1),
        }
        const list = await client.get<RunView[]>('/v1/runs', query)
        return json ? printJson(io, list) : printRuns(io, list)
      }
      case 'show': {
        const [id = ''] = positionals(rest, 'runs', ['id'])
        return show(await client.get<RunDetail>(`/v1/runs/${segment(id)}`))
      }
      case 'start': {
        const [definition = '', input] = positionals(rest, 'runs', ['definition'], ['json input'])
        const body: Record<string, unknown> = { definition }
        if (input !== undefined) body['input'] = jsonValue(input, '<json input>', 'runs')
        const id = stringOf(parsed, 'id')
        if (id !== undefined) body['id'] = id
        const started = await client.post<RunView>('/v1/runs', body)
        if (flagOf(parsed, 'wait')) return show(await settled(client, io, started.id))
        return json ? printJson(io, started) : io.out(`started run ${started.id} of ${started.definition} (${started.status})`)
      }
      case 'signal': {
        const [id = '', name = '', payload] = positionals(rest, 'runs', ['id', 'name'], ['json payload'])
        const body: Record<string, unknown> = { name }
        if (payload !== undefined) body['payload'] = jsonValue(payload, '<json payload>', 'runs')
        const answer = await client.post<RunView>(`/v1/runs/${segment(id)}/signal`, body)
        if (flagOf(parsed, 'wait')) return show(await settled(client, io, id))
        return json ? printJson(io, answer) : io.out(`signalled ${name} to run ${id} (${answer.status})`)
      }
      default: {
        const [id = ''] = positionals(rest, 'runs', ['id'])
        const answer = await client.post<RunView>(`/v1/runs/${segment(id)}/cancel`)
        return json ? printJson(io, answer) : io.out(`cancelled run ${id} (${answer.status})`)
      }
    }
  },
}
