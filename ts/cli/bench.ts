/**
 * `orrery bench [suite]`: the benchmark suites of a source checkout (benches/*.mjs, run through
 * scripts/bench.sh, which builds what is stale first). An installed package has no suites: the
 * command says where they live instead.
 */
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { flagOf, type Parsed, positionals } from './args.js'
import type { Command } from './command.js'
import { cannotRun, usageError } from './failure.js'
import { duration, type Io, printJson, table } from './output.js'

/** The package root: this file sits in ts/cli/ or dist/cli/. */
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** The suites of a checkout, with the first sentence of each file's doc comment. */
export function suites(root = ROOT): { name: string; about: string }[] {
  const dir = join(root, 'benches')
  if (!existsSync(join(root, 'scripts/bench.sh')) || !existsSync(dir)) return []
  return readdirSync(dir)
    .filter((f) => f.endsWith('.mjs'))
    .sort()
    .map((f) => {
      const comment = /\/\*\*([\s\S]*?)\*\//.exec(readFileSync(join(dir, f), 'utf8'))?.[1] ?? ''
      const text = comment
        .replace(/^\s*\* ?/gm, '')
        .replace(/\s+/g, ' ')
        .trim()
      // "The bus suite: what it runs. More..." -> "what it runs"
      const about = text.replace(/^The [\w-]+ suite: /, '')
      const sentence = /^(.*?\.)(\s|$)/.exec(about)?.[1] ?? about
      return { name: f.slice(0, -4), about: sentence.length > 110 ? `${sentence.slice(0, 107)}...` : sentence }
    })
}

/** `orrery bench` over the checkout at `root` (the package root: this file's ../..). */
export function benchAt(root: string): Command {
  return {
    name: 'bench',
    summary: 'list the benchmark suites, or run one (from a source checkout)',
    help: `orrery bench [--json]
orrery bench <suite> [--quick]

Without a suite: the suites and what each measures. With one: builds what is stale, then runs it
(each contender in a child process, rounds interleaved) and writes benches/results/<suite>.json.
  --quick   two short rounds, to check the harness (prints the table, writes no results)
  --json    the list as JSON`,
    options: { json: { type: 'boolean' }, quick: { type: 'boolean' } },
    async run(parsed: Parsed, io: Io) {
      const [suite] = positionals(parsed, 'bench', [], ['suite'])
      const known = suites(root)
      if (known.length === 0) {
        // The command line is right; this install is not where benches run (exit 1, not usage's 2).
        throw cannotRun(
          `orrery bench needs a source checkout of Orrery: its suites are benches/*.mjs, run by scripts/bench.sh, and ${root} has neither (an installed package does not ship them)`,
          'NOT_A_CHECKOUT',
        )
      }
      if (suite === undefined) {
        if (flagOf(parsed, 'quick')) throw usageError('--quick needs a suite', 'bench')
        if (flagOf(parsed, 'json')) return printJson(io, known)
        io.out(
          table(
            ['SUITE', 'WHAT IT MEASURES'],
            known.map((s) => [s.name, s.about]),
          ),
        )
        io.out('\nRun one: orrery bench <suite> (npm run bench -- <suite>); docs/performance.md has the results.')
        return
      }
      if (!known.some((s) => s.name === suite)) throw usageError(`unknown suite ${JSON.stringify(suite)} (${known.map((s) => s.name).join(', ')})`, 'bench')
      const t0 = performance.now()
      const env = flagOf(parsed, 'quick') ? { ...process.env, ORRERY_BENCH_QUICK: '1' } : process.env
      const child = spawn('bash', [join(root, 'scripts/bench.sh'), suite], { cwd: root, env, stdio: 'inherit' })
      const code = await new Promise<number>((resolve) => child.on('close', (status, signal) => resolve(status ?? (signal === null ? 1 : 128))))
      if (code !== 0) throw cannotRun(`bench ${suite} failed (exit ${code})`, 'BENCH_FAILED')
      io.err(`bench ${suite}: done in ${duration(performance.now() - t0)}`)
    },
  }
}

export const bench: Command = benchAt(ROOT)
