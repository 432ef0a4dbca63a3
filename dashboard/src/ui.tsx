/** Small pieces every view uses: status badges, payloads, action buttons, times. */
import type { ComponentChildren } from 'preact'
import { useState } from 'preact/hooks'

/** An error as a line: its code first when it has one (an OrreryError, the API's error shape). */
export function explain(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' && !error.message.startsWith(code) ? `${code}: ${error.message}` : error.message
}

/** A value as readable JSON: strings quoted, binary as `{ base64 }`, cut at `max` characters in a cell. */
export function pretty(value: unknown, indent = 2): string {
  if (value === undefined) return 'undefined'
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v), indent) ?? String(value)
  } catch {
    return String(value)
  }
}

export function Payload({ value, inline }: { value: unknown; inline?: boolean }) {
  if (inline) {
    const text = pretty(value, 0)
    return (
      <code class="inline-payload" title={text}>
        {text.length > 160 ? `${text.slice(0, 160)}…` : text}
      </code>
    )
  }
  return <pre class="payload">{pretty(value)}</pre>
}

const TONE: Record<string, string> = {
  healthy: 'ok',
  running: 'info',
  completed: 'ok',
  closed: 'ok',
  ok: 'ok',
  degraded: 'warn',
  'half-open': 'warn',
  retrying: 'warn',
  queued: 'muted',
  pending: 'muted',
  initializing: 'muted',
  starting: 'muted',
  skipped: 'muted',
  paused: 'warn',
  stopping: 'warn',
  compensating: 'warn',
  compensated: 'warn',
  cancelled: 'muted',
  stopped: 'muted',
  offline: 'muted',
  unhealthy: 'bad',
  open: 'bad',
  failed: 'bad',
  crashed: 'bad',
  'compensation-failed': 'bad',
}

export const tone = (status: string): string => TONE[status] ?? 'muted'

export function Badge({ status, label }: { status: string; label?: string }) {
  return <span class={`badge ${tone(status)}`}>{label ?? status}</span>
}

/** A button for an action that may be refused: the refusal shows beside it, and `done` runs after success. */
export function Action({
  label,
  run,
  done,
  kind,
  testId,
}: {
  label: string
  run: () => Promise<unknown>
  done?: () => void
  kind?: 'danger'
  testId?: string
}) {
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string>()
  return (
    <span class="action">
      <button
        type="button"
        class={kind ?? ''}
        disabled={busy}
        data-testid={testId}
        onClick={(e) => {
          e.stopPropagation()
          setBusy(true)
          setError(undefined)
          run()
            .then(
              () => done?.(),
              (err: unknown) => setError(explain(err)),
            )
            .finally(() => setBusy(false))
        }}
      >
        {label}
      </button>
      {error && (
        <span class="error" role="alert" title={error}>
          {error}
        </span>
      )}
    </span>
  )
}

export function time(ms: number | undefined): string {
  if (ms === undefined) return '—'
  const d = new Date(ms)
  return `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 23)}`
}

export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`
}

export function Panel({ title, children, extra }: { title: string; children: ComponentChildren; extra?: ComponentChildren }) {
  return (
    <section class="panel">
      <header>
        <h2>{title}</h2>
        {extra}
      </header>
      {children}
    </section>
  )
}

export function Problem({ error }: { error: string | undefined }) {
  return error ? (
    <p class="problem" role="alert">
      {error}
    </p>
  ) : null
}
