/**
 * What the CLI prints: human tables by default, JSON with --json, and progress (a spinner) only
 * where a person watches, that is when stderr is a terminal.
 */

/** Where a command writes, and how. */
export interface Io {
  /** A line (or lines) on stdout. */
  out(text: string): void
  /** A line on stderr. */
  err(text: string): void
  /** Whether stderr is a terminal (progress is shown only then). */
  readonly interactive: boolean
}

/** The process's own stdout and stderr. */
export const processIo: Io = {
  out: (text) => void process.stdout.write(`${text}\n`),
  err: (text) => void process.stderr.write(`${text}\n`),
  // biome-ignore lint/plugin: read once per command, not on a hot path.
  get interactive() {
    return process.stderr.isTTY === true
  },
}

/** A value as JSON on stdout: pretty for one document, one line per item for streams (`line`). */
export function printJson(io: Io, value: unknown, line = false): void {
  io.out(line ? JSON.stringify(value) : JSON.stringify(value, null, 2))
}

/** Rows under a header, columns padded to their widest cell; the last column is not padded. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/** Text in one line, cut to `max` characters. */
export function cut(text: string, max: number): string {
  const line = text.replace(/\s*\n\s*/g, ' ')
  return line.length > max ? `${line.slice(0, max - 3)}...` : line
}

/** A value as JSON in one line, cut to `max` characters. */
export function short(value: unknown, max = 60): string {
  return cut(value === undefined ? '-' : (JSON.stringify(value) ?? String(value)), max)
}

/** A duration in ms as `1h 2m`, `3m 4s`, `5.6 s` or `78 ms`. */
export function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const s = Math.floor(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
}

/** An epoch-ms time as local `HH:MM:SS.mmm`. */
export function clock(at: number): string {
  const d = new Date(at)
  const two = (n: number) => String(n).padStart(2, '0')
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`
}

/** How long ago `at` was, from `now`. */
export function ago(at: number, now = Date.now()): string {
  return `${duration(Math.max(0, now - at))} ago`
}

/** Counts as `a 1, b 2` (zeros left out), or `none`. */
export function counts(record: Record<string, number> | undefined): string {
  const parts = Object.entries(record ?? {})
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
  return parts.length === 0 ? 'none' : parts.join(', ')
}

const FRAMES = ['|', '/', '-', '\\']

/**
 * Shows `label` with a spinner on stderr while `work` runs, when stderr is a terminal; otherwise
 * runs it silently. The line is cleared when the work ends, either way it ends.
 */
export async function withProgress<T>(io: Io, label: string, work: (update: (label: string) => void) => Promise<T>): Promise<T> {
  if (!io.interactive) return work(() => undefined)
  let frame = 0
  let text = label
  const draw = () => process.stderr.write(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${text}`)
  draw()
  const timer = setInterval(draw, 100)
  try {
    return await work((next) => {
      text = next
    })
  } finally {
    clearInterval(timer)
    process.stderr.write('\r\x1b[2K')
  }
}
