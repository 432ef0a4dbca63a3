import type { LiveHub } from '../live.js'
import { useLive } from '../live.js'
import { Badge, duration, Panel, Problem, time } from '../ui.js'

export function OverviewView({ hub, now }: { hub: LiveHub; now: () => number }) {
  const { data, error } = useLive(hub, () => hub.client.overview(), [])
  return (
    <div class="overview">
      <Problem error={error} />
      {data && (
        <>
          <div class="cards">
            <Card label="engine" value={data.engine} />
            {/* Only a shared mesh has a process id: with none, no card. */}
            {data.process !== undefined && <Card label="process" value={data.process} />}
            <Card label="up" value={duration(data.uptimeMs)} />
            <Card label="agents" value={data.agents.total} />
            <Card label="channels" value={data.channels} />
            <Card label="groups" value={data.groups} />
            <Card label="dead letters" value={data.deadLetters} tone={data.deadLetters > 0 ? 'warn' : undefined} />
          </div>
          <div class="columns">
            <Panel title="Agents by health">
              <Counts counts={data.agents.byHealth} />
            </Panel>
            <Panel title="Agents by state">
              <Counts counts={data.agents.byState} />
            </Panel>
            <Panel title="Runs by status">{data.runs ? <Counts counts={data.runs} /> : <p class="muted">no workflows attached</p>}</Panel>
          </div>
          <p class="muted">
            {hub.client.readOnly ? 'snapshot taken' : 'as of'} {time(now())}
          </p>
        </>
      )}
    </div>
  )
}

function Card({ label, value, tone }: { label: string; value: string | number; tone?: string | undefined }) {
  return (
    <div class={`card ${tone ?? ''}`} data-card={label}>
      <div class="card-value">{typeof value === 'number' ? value.toLocaleString('en') : value}</div>
      <div class="card-label">{label}</div>
    </div>
  )
}

function Counts({ counts }: { counts: Record<string, number> }) {
  const entries = Object.entries(counts).filter(([, n]) => n > 0)
  if (entries.length === 0) return <p class="muted">none</p>
  return (
    <ul class="counts">
      {entries.map(([k, n]) => (
        <li key={k}>
          <Badge status={k} /> <b>{n.toLocaleString('en')}</b>
        </li>
      ))}
    </ul>
  )
}
