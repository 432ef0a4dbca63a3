import { useState } from 'preact/hooks'

import { type LiveHub, useLive } from '../live.js'
import { Action, Panel, Payload, Problem, time } from '../ui.js'
import { VirtualList } from '../virtual-list.js'
import type { DeadLetterView } from '../views.js'

const SUFFIX = '.dead-letter'

export function DeadLettersView({ hub }: { hub: LiveHub }) {
  const client = hub.client
  const channels = useLive(hub, () => client.channels(), [])
  const origins = (channels.data ?? []).filter((c) => c.name.endsWith(SUFFIX)).map((c) => c.name.slice(0, -SUFFIX.length))
  const [chosen, setChosen] = useState<string>()
  const origin = chosen !== undefined && origins.includes(chosen) ? chosen : origins[0]
  return (
    <div class="dead-letters">
      <Problem error={channels.error} />
      {origins.length === 0 ? (
        <Panel title="Dead letters">
          <p class="muted">no channel has dead letters</p>
        </Panel>
      ) : (
        <>
          <nav class="chips">
            {origins.map((o) => (
              <button type="button" key={o} class={o === origin ? 'selected' : ''} onClick={() => setChosen(o)}>
                {o}
              </button>
            ))}
          </nav>
          {origin !== undefined && <Letters hub={hub} channel={origin} />}
        </>
      )}
    </div>
  )
}

function Letters({ hub, channel }: { hub: LiveHub; channel: string }) {
  const client = hub.client
  const { data, error, reload } = useLive(hub, () => client.deadLetters(channel, { limit: 1000 }), [channel])
  const [selected, setSelected] = useState<number>()
  const rows = data ?? []
  const letter = rows.find((d) => d.seq === selected) ?? rows[0]
  const done = () => {
    reload()
    hub.schedule()
  }
  return (
    <Panel title={`Dead letters of ${channel} (${rows.length})`}>
      <Problem error={error} />
      <div class="split">
        <VirtualList
          testId="dead-letters"
          rows={rows}
          rowHeight={30}
          height={Math.max(240, window.innerHeight - 260)}
          row={(d: DeadLetterView) => (
            <button type="button" class={`rowbtn ${letter?.seq === d.seq ? 'selected' : ''}`} onClick={() => setSelected(d.seq)} data-seq={d.seq}>
              <span class="mono">#{d.seq}</span> <span class="badge warn">{d.reason}</span> <span class="muted">×{d.deliveries}</span>{' '}
              <Payload value={d.payload} inline />
            </button>
          )}
        />
        <div class="detail" data-testid="dead-letter">
          {letter ? (
            <>
              <h3>
                #{letter.seq} from {letter.originChannel} #{letter.originSeq}
              </h3>
              <p>
                <span class="badge warn">{letter.reason}</span> after {letter.deliveries} {letter.deliveries === 1 ? 'delivery' : 'deliveries'},{' '}
                {time(letter.at)}
              </p>
              {!client.readOnly && (
                <p>
                  <Action label="replay" testId="replay" run={() => client.replayDeadLetter(channel, letter.seq)} done={done} />
                  <Action label="discard" kind="danger" testId="discard" run={() => client.discardDeadLetter(channel, letter.seq)} done={done} />
                </p>
              )}
              <h4>payload</h4>
              <Payload value={letter.payload} />
              <h4>headers</h4>
              <Payload value={letter.headers} />
            </>
          ) : (
            <p class="muted">none left</p>
          )}
        </div>
      </div>
    </Panel>
  )
}
