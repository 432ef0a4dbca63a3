import { useState } from 'preact/hooks'

import { type LiveHub, useLive } from '../live.js'
import { Badge, Panel, Payload, Problem } from '../ui.js'
import { VirtualList } from '../virtual-list.js'
import type { EntryView } from '../views.js'

export function StoreView({ hub }: { hub: LiveHub }) {
  const client = hub.client
  const namespaces = useLive(hub, () => client.namespaces(), [])
  const [chosen, setChosen] = useState<string>()
  const list = namespaces.data ?? []
  const ns = chosen ?? list[0]?.name
  return (
    <div class="store">
      <Problem error={namespaces.error} />
      <nav class="chips">
        {list.map((n) => (
          <button type="button" key={n.name} class={n.name === ns ? 'selected' : ''} onClick={() => setChosen(n.name)}>
            {n.name} <span class="muted">{n.keys}</span> <Badge status="muted" label={n.mode} />
          </button>
        ))}
      </nav>
      {list.length === 0 && <p class="muted">no store namespaces</p>}
      {ns !== undefined && <Entries hub={hub} ns={ns} />}
    </div>
  )
}

function Entries({ hub, ns }: { hub: LiveHub; ns: string }) {
  const [prefix, setPrefix] = useState('')
  const { data, error } = useLive(hub, () => hub.client.entries(ns, { ...(prefix ? { prefix } : {}), limit: 1000 }), [ns, prefix])
  const [selected, setSelected] = useState<string>()
  const rows = data ?? []
  const entry = rows.find((e) => e.key === selected) ?? rows[0]
  return (
    <Panel
      title={`${ns} (${rows.length} keys shown)`}
      extra={<input type="search" placeholder="key prefix" value={prefix} onInput={(e) => setPrefix(e.currentTarget.value)} />}
    >
      <Problem error={error} />
      {hub.client.readOnly && <p class="muted">a snapshot keeps namespaces' sizes, not their entries</p>}
      <div class="split">
        <VirtualList
          testId="entries"
          rows={rows}
          rowHeight={28}
          height={Math.max(240, window.innerHeight - 280)}
          row={(e: EntryView) => (
            <button type="button" class={`rowbtn ${entry?.key === e.key ? 'selected' : ''}`} onClick={() => setSelected(e.key)}>
              <span class="mono">{e.key}</span> <span class="muted">v{e.version}</span> <Payload value={e.value} inline />
            </button>
          )}
        />
        <div class="detail">
          {entry && (
            <>
              <h3 class="mono">
                {entry.key} <span class="muted">version {entry.version}</span>
              </h3>
              <Payload value={entry.value} />
              {entry.stamp !== undefined && (
                <>
                  <h4>stamp</h4>
                  <Payload value={entry.stamp} />
                </>
              )}
            </>
          )}
        </div>
      </div>
    </Panel>
  )
}
