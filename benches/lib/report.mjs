/** Results of a suite: the machine they came from, the JSON file, and the printed table. */
import { mkdir, rename, writeFile } from 'node:fs/promises'
import os from 'node:os'

export function machine() {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memory_gb: Math.round(os.totalmem() / 2 ** 30),
    loadavg_at_start: os.loadavg().map((l) => Math.round(l * 100) / 100),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  }
}

/** Writes via a `.tmp` file (git-ignored) so an interrupted run never leaves half a JSON file. */
export async function writeResults(file, scenarios, host) {
  await mkdir(new URL('.', file), { recursive: true })
  const tmp = new URL(`${file.href}.tmp`)
  await writeFile(tmp, `${JSON.stringify({ scenarios, machine: host, date: new Date().toISOString() }, null, 2)}\n`)
  await rename(tmp, file)
}

const number = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 })

const pair = (best, median, format) => (best === null ? '-' : `${format(best)} / ${format(median)}`)

/**
 * One row per contender, each figure as best / median. `reference ÷ this` compares the
 * reference's rate with the row's (the best with the best, the median with the median); derived
 * figures in `extra` show the median beside the best where it differs.
 */
export function formatTable(scenarios, reference, unit = 'msgs/s') {
  const rows = [['scenario', 'contender', `${unit} best / median`, 'p99 µs', `${reference} ÷ this`, 'extra']]
  for (const [scenario, contenders] of Object.entries(scenarios)) {
    const base = contenders[reference]
    for (const [contender, r] of Object.entries(contenders)) {
      const { rounds_msgs_per_sec: _spread, ...extra } = r.extra
      const ratio = (view) => base[view].msgs_per_sec / r[view].msgs_per_sec
      const figure = (k, v) => {
        const typical = r.median[k]
        const shown = typeof v === 'number' ? number.format(v) : v
        return typical !== undefined && typical !== v ? `${k}=${shown} (median ${number.format(typical)})` : `${k}=${shown}`
      }
      rows.push([
        contender === Object.keys(contenders)[0] ? scenario : '',
        contender,
        pair(r.best.msgs_per_sec, r.median.msgs_per_sec, (v) => number.format(v)),
        pair(r.best.p99_us, r.median.p99_us, (v) => number.format(v)),
        base ? pair(ratio('best'), ratio('median'), (v) => `${v.toFixed(2)}×`) : '-',
        [...(r.best.p50_us === undefined ? [] : [['p50_us', r.best.p50_us]]), ...Object.entries(extra)].map(([k, v]) => figure(k, v)).join(' '),
      ])
    }
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)))
  const numeric = [false, false, true, true, true, false]
  return rows
    .map((row) => row.map((cell, c) => (numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd())
    .join('\n')
}
