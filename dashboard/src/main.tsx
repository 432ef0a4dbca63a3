/**
 * The dashboard's entry. What it shows comes from the address:
 *   ?api=<url>  (or ?api alone, or only #token=: this page's own origin, as `orrery serve` serves it), with the bearer
 *               token in #token=<token> (a fragment never reaches a server's logs) or typed in;
 *   ?snapshot=<url>            an exported snapshot, read-only;
 *   ?generate=<agents>,<events> a made-up snapshot of that size (trying the dashboard at scale);
 *   ?demo                      an Orrery, a mesh and workflows made in this page (the wasm engine).
 * Without any, the start page offers the same choices, and a snapshot file can be dropped on it.
 */
import './styles.css'

import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'

import { App, TABS, type Tab } from './app.js'
import type { ControlClient } from './client.js'
import { Start } from './start.js'

export interface Opened {
  client: ControlClient
  /** A snapshot's time (ages count from it). */
  at?: number | undefined
}

function Root() {
  const [opened, setOpened] = useState<Opened>()
  const [error, setError] = useState<string>()
  const params = new URLSearchParams(location.search)
  const tab = params.get('tab') as Tab | null
  useEffect(() => () => opened?.client.close(), [opened])
  if (!opened) return <Start params={params} onOpen={setOpened} error={error} onError={setError} />
  return (
    <App
      client={opened.client}
      at={opened.at}
      initialTab={tab && (TABS as readonly string[]).includes(tab) ? tab : undefined}
      onLeave={() => {
        history.replaceState(null, '', location.pathname)
        setError(undefined)
        setOpened(undefined)
      }}
    />
  )
}

render(<Root />, document.getElementById('app')!)
