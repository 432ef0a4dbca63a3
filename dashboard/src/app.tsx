/** The dashboard around a client: the header, the tabs and the view of the tab chosen. */
import { useEffect, useMemo, useState } from 'preact/hooks'

import type { ControlClient } from './client.js'
import { LiveHub } from './live.js'
import { AgentsView } from './views/agents.js'
import { ChannelsView } from './views/channels.js'
import { DeadLettersView } from './views/dead-letters.js'
import { OverviewView } from './views/overview.js'
import { RunsView } from './views/runs.js'
import { StoreView } from './views/store.js'

export const TABS = ['overview', 'agents', 'channels', 'dead letters', 'runs', 'store'] as const
export type Tab = (typeof TABS)[number]

export function App({
  client,
  at,
  initialTab,
  onLeave,
}: {
  client: ControlClient
  at?: number | undefined
  initialTab?: Tab | undefined
  onLeave: () => void
}) {
  const hub = useMemo(() => new LiveHub(client), [client])
  useEffect(() => () => hub.close(), [hub])
  const [tab, setTab] = useState<Tab>(initialTab ?? 'overview')
  // A snapshot's ages count from when it was taken.
  const now = () => at ?? Date.now()
  return (
    <div class="app">
      <header class="top">
        <h1>Orrery</h1>
        <div class="tabs" role="tablist">
          {TABS.map((t) => (
            <button type="button" role="tab" key={t} aria-selected={t === tab} class={t === tab ? 'selected' : ''} onClick={() => setTab(t)} data-tab={t}>
              {t}
            </button>
          ))}
        </div>
        <span class="source" title={client.source}>
          {client.readOnly ? <span class="badge warn">snapshot</span> : <span class="badge ok">live</span>} {client.source}
        </span>
        {!client.readOnly && <SnapshotButton client={client} />}
        <button type="button" onClick={onLeave}>
          leave
        </button>
      </header>
      <main>
        {tab === 'overview' && <OverviewView hub={hub} now={now} />}
        {tab === 'agents' && <AgentsView hub={hub} now={now} />}
        {tab === 'channels' && <ChannelsView hub={hub} />}
        {tab === 'dead letters' && <DeadLettersView hub={hub} />}
        {tab === 'runs' && <RunsView hub={hub} />}
        {tab === 'store' && <StoreView hub={hub} />}
      </main>
    </div>
  )
}

/** Saves the Control's snapshot as a JSON file, to open offline later. */
function SnapshotButton({ client }: { client: ControlClient }) {
  const [error, setError] = useState<string>()
  return (
    <button
      type="button"
      title={error ?? 'save a snapshot to open offline'}
      onClick={() => {
        client.snapshot().then(
          (s) => {
            const a = document.createElement('a')
            a.href = URL.createObjectURL(new Blob([JSON.stringify(s)], { type: 'application/json' }))
            a.download = `orrery-snapshot-${new Date(s.at).toISOString().replace(/[:.]/g, '-')}.json`
            a.click()
            setTimeout(() => URL.revokeObjectURL(a.href), 10_000)
          },
          (e: unknown) => setError(e instanceof Error ? e.message : String(e)),
        )
      }}
    >
      export snapshot
    </button>
  )
}
