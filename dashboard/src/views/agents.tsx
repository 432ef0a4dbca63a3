import { useMemo, useState } from 'preact/hooks'

import { type LiveHub, useLive } from '../live.js'
import { Action, Badge, duration, Panel, Problem } from '../ui.js'
import { VirtualList } from '../virtual-list.js'
import type { AgentView } from '../views.js'

const ROW = 34

export function AgentsView({ hub, now }: { hub: LiveHub; now: () => number }) {
  const client = hub.client
  const { data, error, reload } = useLive(hub, () => client.agents(), [])
  const [filter, setFilter] = useState('')
  const rows = useMemo(() => {
    const all = data ?? []
    const f = filter.trim().toLowerCase()
    if (!f) return all
    return all.filter((a) => a.id.toLowerCase().includes(f) || a.type.toLowerCase().includes(f) || a.health.includes(f) || a.tags.some((t) => t.includes(f)))
  }, [data, filter])
  const maxLoad = useMemo(() => Math.max(1, ...(data ?? []).map((a) => a.inFlight)), [data])
  const at = now()
  const done = () => {
    reload()
    hub.schedule()
  }
  return (
    <Panel
      title={`Agents (${rows.length.toLocaleString('en')}${rows.length === data?.length ? '' : ` of ${data?.length.toLocaleString('en')}`})`}
      extra={<input type="search" placeholder="filter: id, type, health, tag" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />}
    >
      <Problem error={error} />
      <div class="thead agents-grid">
        <span>id</span>
        <span>type</span>
        <span>state</span>
        <span>health</span>
        <span>breaker</span>
        <span>load</span>
        <span>capabilities · tags</span>
        <span>beat</span>
        <span />
      </div>
      <VirtualList
        testId="agents"
        rows={rows}
        rowHeight={ROW}
        height={Math.max(200, window.innerHeight - 230)}
        row={(a: AgentView) => (
          <div class="agents-grid" data-agent={a.id}>
            <span class="mono" title={a.process ? `process ${a.process}` : undefined}>
              {a.id}
              {a.remote && <span class="tag">remote</span>}
            </span>
            <span>{a.type}</span>
            <Badge status={a.state} />
            <Badge status={a.health} />
            <Badge status={a.breaker} />
            <span class="load" title={`${a.inFlight} in flight`}>
              <span class="bar" style={{ width: `${(100 * a.inFlight) / maxLoad}%` }} />
              <span class="n">{a.inFlight}</span>
            </span>
            <span class="ellipsis">
              {a.capabilities.map((c) => `${c.name}@${c.version}`).join(', ')}
              {a.tags.map((t) => (
                <span class="tag" key={t}>
                  {t}
                </span>
              ))}
            </span>
            <span class="muted">{duration(Math.max(0, at - a.lastBeat))}</span>
            <span class="buttons">
              {!client.readOnly && !a.remote && (
                <>
                  {a.state === 'paused' ? (
                    <Action label="resume" testId={`resume-${a.id}`} run={() => client.resumeAgent(a.id)} done={done} />
                  ) : (
                    <Action label="pause" testId={`pause-${a.id}`} run={() => client.pauseAgent(a.id)} done={done} />
                  )}
                  <Action label="stop" kind="danger" testId={`stop-${a.id}`} run={() => client.stopAgent(a.id)} done={done} />
                </>
              )}
            </span>
          </div>
        )}
      />
    </Panel>
  )
}
