/** The start page: connect to an API, open a snapshot (file, drop or URL), make a demo in the page. */
import { useEffect, useState } from 'preact/hooks'

import { httpClient } from './http-client.js'
import { explain } from './ui.js'
import type { Opened } from './main.js'
import { asSnapshot, snapshotClient } from './snapshot-client.js'

const TOKEN_KEY = 'orrery.dashboard.token'

async function openSnapshotText(text: string, source: string): Promise<Opened> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    throw new Error(`${source} is not JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
  const snapshot = asSnapshot(value)
  return { client: snapshotClient(snapshot, source), at: snapshot.at }
}

async function openDemo(): Promise<Opened> {
  const { startDemo } = await import('./demo.js')
  return { client: await startDemo() }
}

async function openGenerated(spec: string): Promise<Opened> {
  const [agents = 10_000, events = 50_000] = spec.split(',').map((n) => Number(n) || undefined)
  const { generateSnapshot } = await import('./generate.js')
  const snapshot = generateSnapshot({ agents, events })
  return { client: snapshotClient(snapshot, `generated: ${agents} agents, ${events} events`), at: snapshot.at }
}

/** Whether an API address (empty: this page's own origin) is this page's origin. */
function sameOrigin(api: string): boolean {
  try {
    return api === '' || new URL(api, location.href).origin === location.origin
  } catch {
    return false
  }
}

async function openApi(base: string, token: string): Promise<Opened> {
  const client = httpClient(base, token || undefined)
  await client.overview() // a wrong address or token shows here, not in every view
  if (token) sessionStorage.setItem(TOKEN_KEY, token)
  return { client }
}

export function Start({
  params,
  onOpen,
  error,
  onError,
}: {
  params: URLSearchParams
  onOpen: (o: Opened) => void
  error: string | undefined
  onError: (e: string) => void
}) {
  const hashToken = new URLSearchParams(location.hash.slice(1)).get('token')
  const stored = sessionStorage.getItem(TOKEN_KEY)
  const [api, setApi] = useState(params.get('api') ?? '')
  const [token, setToken] = useState(hashToken ?? stored ?? '')
  const [busy, setBusy] = useState<string>()
  const [dragging, setDragging] = useState(false)
  const open = (what: string, opening: () => Promise<Opened>) => {
    setBusy(what)
    opening().then(onOpen, (e: unknown) => {
      setBusy(undefined)
      onError(explain(e))
    })
  }
  // The address chooses at once.
  useEffect(() => {
    if (hashToken) history.replaceState(null, '', location.pathname + location.search)
    const snapshot = params.get('snapshot')
    const generate = params.get('generate')
    if (snapshot) open(`snapshot ${snapshot}`, async () => openSnapshotText(await (await fetch(snapshot)).text(), snapshot))
    else if (generate !== null) open('a generated snapshot', () => openGenerated(generate))
    else if (params.has('demo')) open('the demo', openDemo)
    // A token kept from before goes by itself only to this page's origin: a link whose ?api names
    // another server waits for a click on Connect, so it cannot take the token unseen.
    else if (hashToken || (params.has('api') && (stored === null || sameOrigin(api)))) open(`the API at ${api || location.origin}`, () => openApi(api, token))
  }, [])
  const readFile = (file: File) => open(file.name, async () => openSnapshotText(await file.text(), file.name))
  // A snapshot file dropped anywhere on the page opens.
  useEffect(() => {
    const over = (e: DragEvent) => {
      e.preventDefault()
      setDragging(true)
    }
    const leave = () => setDragging(false)
    const drop = (e: DragEvent) => {
      e.preventDefault()
      setDragging(false)
      const file = e.dataTransfer?.files[0]
      if (file) readFile(file)
    }
    document.addEventListener('dragover', over)
    document.addEventListener('dragleave', leave)
    document.addEventListener('drop', drop)
    return () => {
      document.removeEventListener('dragover', over)
      document.removeEventListener('dragleave', leave)
      document.removeEventListener('drop', drop)
    }
  })
  return (
    <div class={`start ${dragging ? 'dragging' : ''}`}>
      <h1>Orrery dashboard</h1>
      {busy && <p class="busy">opening {busy}…</p>}
      {error && (
        <p class="problem" role="alert">
          {error}
        </p>
      )}
      <div class="choices">
        <form
          class="choice"
          onSubmit={(e) => {
            e.preventDefault()
            open(`the API at ${api || location.origin}`, () => openApi(api, token))
          }}
        >
          <h2>Connect</h2>
          <p>
            to a running Orrery's HTTP API (<code>orrery serve</code>, or <code>serveHttp</code> in your process).
          </p>
          <input placeholder={`API address (default ${location.origin})`} value={api} onInput={(e) => setApi(e.currentTarget.value)} />
          <input type="password" placeholder="bearer token" value={token} onInput={(e) => setToken(e.currentTarget.value)} autocomplete="off" />
          <button type="submit" disabled={busy !== undefined}>
            connect
          </button>
        </form>
        <div class="choice">
          <h2>Open a snapshot</h2>
          <p>
            exported from a Control (<code>control.snapshot()</code>, <code>GET /v1/snapshot</code>, or "export snapshot" here), read-only; drop it anywhere on
            this page.
          </p>
          <input
            type="file"
            accept="application/json,.json"
            data-testid="snapshot-file"
            onChange={(e) => e.currentTarget.files?.[0] && readFile(e.currentTarget.files[0])}
          />
          <button type="button" disabled={busy !== undefined} onClick={() => open('a generated snapshot', () => openGenerated('10000,50000'))}>
            or a generated one: 10,000 agents, a 50,000-event run
          </button>
        </div>
        <div class="choice">
          <h2>Play</h2>
          <p>with a mesh in this page: an Orrery on the wasm engine, a few agents and workflows, live.</p>
          <button type="button" data-testid="demo" disabled={busy !== undefined} onClick={() => open('the demo', openDemo)}>
            start the demo
          </button>
        </div>
      </div>
    </div>
  )
}
