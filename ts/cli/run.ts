/**
 * The `orrery` command: finds the command, reads its options, runs it, and turns what went wrong
 * into a message on stderr and an exit code (failure.ts). `serve` is loaded only when asked for,
 * so a client command starts without the engine or the web server.
 */
import { readFileSync } from 'node:fs'

import { parse } from './args.js'
import { bench } from './bench.js'
import { publish, tail } from './channels.js'
import type { Command } from './command.js'
import { dlq } from './dlq.js'
import { CliFailure, EXIT, usageError } from './failure.js'
import { type Io, processIo, table } from './output.js'
import { runs } from './runs.js'
import { agents, status } from './status.js'

/** The commands, `serve` (loaded on use) first. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  serve: { summary: 'serve an Orrery: the HTTP API, the dashboard and a demo mesh', load: async () => (await import('./serve.js')).serve },
  ...Object.fromEntries([status, agents, publish, tail, dlq, runs, bench].map((c) => [c.name, { summary: c.summary, load: async () => c }])),
}

function helpText(): string {
  return `orrery <command> [arguments] [options]

${table(
  ['COMMAND', ''],
  Object.entries(COMMANDS).map(([name, c]) => [name, c.summary]),
)
  .split('\n')
  .slice(1)
  .map((l) => `  ${l}`)
  .join('\n')}

orrery <command> --help shows a command's arguments and options. Clients read --url and --token,
or ORRERY_URL and ORRERY_TOKEN (\`orrery serve\` prints both). Exit codes: 0 done, 1 refused by the
API or unable to run here (its code on stderr), 2 a wrong command line, 3 the server could not be
reached.`
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/** Runs the command line `argv` (without node and the script); resolves with the exit code. */
export async function run(argv: readonly string[], io: Io = processIo): Promise<number> {
  const [name, ...rest] = argv
  const json = rest.includes('--json')
  try {
    if (name === undefined) {
      io.err(helpText())
      return EXIT.usage
    }
    if (name === '--help' || name === '-h' || name === 'help') {
      const about = rest[0]
      if (about === undefined) io.out(helpText())
      else if (COMMANDS[about] !== undefined) io.out((await COMMANDS[about].load()).help)
      else throw usageError(`no command ${JSON.stringify(about)}`)
      return EXIT.ok
    }
    if (name === '--version' || name === '-v') {
      io.out(version())
      return EXIT.ok
    }
    const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
    if (entry === undefined) throw usageError(`no command ${JSON.stringify(name)}`)
    const command = await entry.load()
    const parsed = parse(rest, command.options, command.name)
    if (parsed.values['help'] === true) {
      io.out(command.help)
      return EXIT.ok
    }
    await command.run(parsed, io)
    return EXIT.ok
  } catch (error) {
    if (error instanceof CliFailure) {
      if (json)
        io.err(JSON.stringify({ error: { code: error.code, message: error.message, ...(error.details === undefined ? {} : { details: error.details }) } }))
      else io.err(`orrery: ${error.code === 'USAGE' ? 'usage' : error.code}: ${error.message}`)
      return error.exitCode
    }
    // Anything else is a failure of this process (serve's engine, a port in use): exit 1.
    const code = (error as { code?: unknown } | null)?.code
    const message = error instanceof Error ? error.message : String(error)
    io.err(`orrery: ${typeof code === 'string' ? code : 'error'}: ${message}`)
    return EXIT.api
  }
}
