import { useEffect, useMemo, useRef, useState } from 'preact/hooks'

import { runState } from '../../../ts/workflows/state.js'
import { type LiveHub, useLive } from '../live.js'
import { RunGraph } from '../run-graph.js'
import { Action, Badge, duration, Panel, Payload, Problem, time, tone } from '../ui.js'
import { VirtualList } from '../virtual-list.js'
import type { RunDetail, RunState, RunStatus, RunView, WorkflowEvent } from '../views.js'
import { type Span, spans } from '../waterfall.js'

const STATUSES: RunStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled', 'compensated', 'compensation-failed']
/** How long the time-travel cursor rests before the run's state is folded again. */
const FOLD_AFTER_MS = 60
const FINAL = new Set<RunStatus>(['completed', 'failed', 'cancelled', 'compensated', 'compensation-failed'])

export function RunsView({ hub, initial }: { hub: LiveHub; initial?: string | undefined }) {
  const client = hub.client
  const [status, setStatus] = useState<RunStatus>()
  const runs = useLive(hub, () => client.runs({ ...(status ? { status } : {}), limit: 1000 }), [status])
  const [chosen, setChosen] = useState<string | undefined>(initial)
  const list = useMemo(() => [...(runs.data ?? [])].sort((a, b) => b.startedAt - a.startedAt), [runs.data])
  const id = chosen ?? list[0]?.id
  return (
    <div class="runs">
      <Problem error={runs.error} />
      <Panel
        title={`Runs (${list.length})`}
        extra={
          <nav class="chips">
            <button type="button" class={status === undefined ? 'selected' : ''} onClick={() => setStatus(undefined)}>
              all
            </button>
            {STATUSES.map((s) => (
              <button type="button" key={s} class={status === s ? 'selected' : ''} onClick={() => setStatus(s)}>
                {s}
              </button>
            ))}
          </nav>
        }
      >
        <VirtualList
          testId="runs"
          rows={list}
          rowHeight={28}
          height={Math.min(200, Math.max(56, list.length * 28))}
          row={(r: RunView) => (
            <button type="button" class={`rowbtn runs-grid ${r.id === id ? 'selected' : ''}`} onClick={() => setChosen(r.id)} data-run={r.id}>
              <span class="mono" title={r.id}>
                {r.id}
              </span>
              <span title={`${r.definition}@${r.version}`}>
                {r.definition}
                <span class="muted">@{r.version.slice(0, 14)}</span>
              </span>
              <Badge status={r.status} />
              <span class="muted">{time(r.startedAt)}</span>
              <span class="muted">{r.finishedAt === undefined ? 'running' : duration(r.finishedAt - r.startedAt)}</span>
            </button>
          )}
        />
      </Panel>
      {!client.readOnly && (
        <StartRun
          hub={hub}
          started={(run) => {
            setChosen(run)
            runs.reload()
          }}
        />
      )}
      {id !== undefined && <Run key={id} hub={hub} id={id} />}
    </div>
  )
}

/** The meta a fold of the first `k` events reads: running until its run-finished event. */
function stateAt(run: RunDetail, k: number): RunState {
  // Without its definition (no longer kept) a run is shown as it is now.
  if (k >= run.history.length || run.definitionDoc === undefined) return run.state
  const events = run.history.slice(0, k)
  let finished: WorkflowEvent | undefined
  for (let i = events.length - 1; i >= 0; i--) {
    if (events[i]!.type === 'run-finished') {
      finished = events[i]
      break
    }
  }
  const meta = {
    id: run.id,
    definition: run.definition,
    version: run.version,
    generation: run.generation,
    startedAt: run.startedAt,
    status: finished?.type === 'run-finished' ? finished.status : ('running' as const),
    ...(finished ? { finishedAt: finished.at } : {}),
  }
  return runState(run.definitionDoc, meta, events)
}

function Run({ hub, id }: { hub: LiveHub; id: string }) {
  const client = hub.client
  // An ended run changes no more: its history (maybe 50,000 events) is read once.
  const ended = useRef<RunDetail | undefined>(undefined)
  const {
    data: run,
    error,
    reload,
  } = useLive(hub, async () => {
    if (ended.current) return ended.current
    const detail = await client.run(id)
    if (FINAL.has(detail.status)) ended.current = detail
    return detail
  }, [id])
  // The cursor: how many events the state shown folds; undefined follows the live end.
  const [cursor, setCursor] = useState<number>()
  const [shown, setShown] = useState<number>()
  const [picked, setPicked] = useState<string>()
  const length = run?.history.length ?? 0
  // The timeline and the waterfall follow the cursor at once (cheap); the state is folded again
  // only when the cursor rests for FOLD_AFTER_MS: a fold of 50,000 events takes about 150 ms, so a
  // fold per move would make a drag stutter.
  const at = Math.min(cursor ?? length, length)
  const folded = Math.min(shown ?? length, length)
  useEffect(() => {
    const timer = setTimeout(() => setShown(cursor), FOLD_AFTER_MS)
    return () => clearTimeout(timer)
  }, [cursor])
  const state = useMemo(() => (run ? stateAt(run, folded) : undefined), [run, folded])
  const allSpans = useMemo(() => (run ? spans(run.history, run.id) : []), [run])
  if (!run || !state) return <Problem error={error} />
  const events = run.history
  const t0 = events[0]?.at ?? run.startedAt
  const tAt = events[at - 1]?.at ?? t0
  const done = () => {
    reload()
    hub.schedule()
  }
  const live = !client.readOnly && !FINAL.has(run.status)
  const node = picked ? state.nodes[picked] : undefined
  return (
    <>
      <Panel title={`Run ${run.id}`} extra={<Badge status={state.status} />}>
        <Problem error={error} />
        <div class="run-head">
          <span>
            {run.definition}
            <span class="muted">@{run.version}</span>
          </span>
          <span>generation {run.generation}</span>
          <span>started {time(run.startedAt)}</span>
          <span>{run.finishedAt !== undefined ? `took ${duration(run.finishedAt - run.startedAt)}` : 'running'}</span>
          {state.waiting.length > 0 && <span>waiting for {state.waiting.map((w) => `${w.signal} (${w.node})`).join(', ')}</span>}
        </div>
        {live && <Steer hub={hub} run={run} state={state} done={done} />}
        <div class="travel">
          <label for="travel">
            history {at.toLocaleString('en')} / {length.toLocaleString('en')} events · {duration(tAt - t0)} in
            {run.historyTotal > length && ` (the first ${length.toLocaleString('en')} of ${run.historyTotal.toLocaleString('en')} kept)`}
          </label>
          <input
            id="travel"
            data-testid="travel"
            type="range"
            min={0}
            max={length}
            value={cursor ?? length}
            onInput={(e) => {
              const v = Number(e.currentTarget.value)
              setCursor(v >= length ? undefined : v)
            }}
          />
          <button type="button" disabled={at <= 0} onClick={() => setCursor(Math.max(0, at - 1))}>
            ◀
          </button>
          <button type="button" disabled={at >= length} onClick={() => setCursor(at + 1 >= length ? undefined : at + 1)}>
            ▶
          </button>
          <button type="button" disabled={cursor === undefined} onClick={() => setCursor(undefined)}>
            now
          </button>
        </div>
      </Panel>
      <div class="columns run-body">
        <Panel title="Definition">
          {run.definitionDoc ? (
            <RunGraph definition={run.definitionDoc} state={state} picked={picked} onPick={setPicked} />
          ) : (
            <p class="muted">
              its definition ({run.definition}@{run.version}) is no longer kept: the history alone is shown
            </p>
          )}
          {node && (
            <div class="detail">
              <h3>
                {picked} <Badge status={node.status} />
              </h3>
              {node.output !== undefined && <Payload value={node.output} />}
              {node.error && <Payload value={node.error} />}
              {node.reason && <p>reason: {node.reason}</p>}
            </div>
          )}
          {state.output !== undefined && (
            <>
              <h4>output</h4>
              <Payload value={state.output} />
            </>
          )}
          {state.error && (
            <>
              <h4>error</h4>
              <Payload value={state.error} />
            </>
          )}
        </Panel>
        <Timeline events={events} at={at} t0={t0} onPick={(k) => setCursor(k >= length ? undefined : k)} />
      </div>
      <Waterfall spans={allSpans} t0={t0} tAt={tAt} end={events.at(-1)?.at ?? t0} />
    </>
  )
}

function summary(e: WorkflowEvent): string {
  switch (e.type) {
    case 'step-started':
      return `${e.compensation ? 'compensate ' : ''}${e.step} attempt ${e.attempt} (${e.key})`
    case 'step-completed':
      return `${e.step} attempt ${e.attempt}: ${e.outcome}`
    case 'decided':
      return `${e.node} → ${e.value}`
    case 'signal':
      return e.name
    case 'retry':
      return `${e.step}${e.path ?? ''} attempt ${e.attempt} at +${e.when}`
    case 'node-done':
      return `${e.node}${e.path ?? ''}: ${e.outcome}${e.reason ? ` (${e.reason})` : ''}`
    case 'compensated':
      return `${e.step}: ${e.ok ? 'undone' : 'failed'}`
    case 'run-finished':
      return e.status
    case 'timer-fired':
      return `timer ${e.timer}`
    default:
      return ''
  }
}

function Timeline({ events, at, t0, onPick }: { events: WorkflowEvent[]; at: number; t0: number; onPick: (k: number) => void }) {
  const [open, setOpen] = useState<WorkflowEvent>()
  return (
    <Panel title="History">
      <VirtualList
        testId="timeline"
        rows={events}
        rowHeight={26}
        height={360}
        follow={at > 0 ? at - 1 : 0}
        row={(e: WorkflowEvent, i) => {
          const text = summary(e)
          return (
            <button
              type="button"
              class={`rowbtn event ${i < at ? '' : 'future'} ${i === at - 1 ? 'selected' : ''}`}
              onClick={() => {
                setOpen(e)
                onPick(i + 1)
              }}
              data-seq={e.seq}
            >
              <span class="mono seq">{e.seq}</span>
              <span class="muted">+{duration(e.at - t0)}</span>
              <span class={`etype ${e.type}`} title={e.type}>
                {e.type}
              </span>
              <span class="summary" title={text}>
                {text}
              </span>
            </button>
          )
        }}
      />
      {open && <Payload value={open} />}
    </Panel>
  )
}

function Waterfall({ spans, t0, tAt, end }: { spans: Span[]; t0: number; tAt: number; end: number }) {
  const span = Math.max(1, end - t0)
  const shown = spans.filter((s) => s.start <= tAt)
  return (
    <Panel title={`Trace (${shown.length.toLocaleString('en')} attempts)`}>
      <VirtualList
        testId="waterfall"
        rows={shown}
        rowHeight={22}
        height={Math.min(320, Math.max(44, shown.length * 22))}
        row={(s: Span) => {
          const stop = s.end === undefined || s.end > tAt ? tAt : s.end
          const left = (100 * (s.start - t0)) / span
          const width = Math.max(0.15, (100 * (stop - s.start)) / span)
          const outcome = s.end === undefined || s.end > tAt ? 'running' : s.outcome === 'ok' ? 'ok' : s.outcome === 'transient' ? 'retrying' : 'failed'
          return (
            <div class="wf-row">
              <span class="wf-label mono ellipsis" title={`${s.step}${s.path} attempt ${s.attempt}`}>
                {s.compensation ? '↩ ' : ''}
                {s.step}
                {s.path}
                {s.attempt > 1 ? ` #${s.attempt}` : ''}
              </span>
              <span class="wf-track">
                <span class={`wf-bar ${tone(outcome)}`} style={{ left: `${left}%`, width: `${width}%` }} title={`${duration(stop - s.start)}`} />
              </span>
              <span class="muted wf-ms">{duration(stop - s.start)}</span>
            </div>
          )
        }}
      />
    </Panel>
  )
}

function Steer({ hub, run, state, done }: { hub: LiveHub; run: RunDetail; state: RunState; done: () => void }) {
  const waiting = state.waiting[0]?.signal ?? ''
  const [name, setName] = useState(waiting)
  const [payload, setPayload] = useState('{}')
  useEffect(() => {
    if (!name && waiting) setName(waiting)
  }, [waiting, name])
  return (
    <form class="steer" onSubmit={(e) => e.preventDefault()}>
      <input data-testid="signal-name" placeholder="signal name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <input class="mono" data-testid="signal-payload" placeholder="payload (JSON)" value={payload} onInput={(e) => setPayload(e.currentTarget.value)} />
      <Action label="signal" testId="signal" run={async () => hub.client.signalRun(run.id, name, parseJson(payload, 'payload'))} done={done} />
      <Action label="cancel run" kind="danger" testId="cancel" run={() => hub.client.cancelRun(run.id)} done={done} />
    </form>
  )
}

/** Starts a run of a defined workflow (its newest version) with a JSON input. */
function StartRun({ hub, started }: { hub: LiveHub; started: (id: string) => void }) {
  const definitions = useLive(hub, () => hub.client.definitions(), [], { intervalMs: 0 })
  const names = [...new Set((definitions.data ?? []).map((d) => d.name))].sort()
  const [name, setName] = useState('')
  const [input, setInput] = useState('')
  const [id, setId] = useState('')
  if (names.length === 0) return null
  const chosen = names.includes(name) ? name : names[0]!
  return (
    <form class="steer" onSubmit={(e) => e.preventDefault()}>
      <span class="muted">start a run of</span>
      <select data-testid="start-definition" value={chosen} onChange={(e) => setName(e.currentTarget.value)}>
        {names.map((n) => (
          <option key={n} value={n}>
            {n}
          </option>
        ))}
      </select>
      <input class="mono" data-testid="start-input" placeholder="input (JSON)" value={input} onInput={(e) => setInput(e.currentTarget.value)} />
      <input class="mono" placeholder="run id (optional)" value={id} onInput={(e) => setId(e.currentTarget.value)} />
      <Action
        label="start"
        testId="start-run"
        run={async () => {
          const run = await hub.client.startRun(chosen, parseJson(input, 'input'), id ? { id } : {})
          started(run.id)
        }}
      />
    </form>
  )
}

/** A typed JSON value, or undefined for nothing typed; a clear error for what is not JSON. */
function parseJson(text: string, what: string): unknown {
  if (text.trim() === '') return undefined
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new Error(`the ${what} is not JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
}
