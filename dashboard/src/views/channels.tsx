import { useEffect, useRef, useState } from 'preact/hooks'

import { Chart } from '../chart.js'
import { type LiveHub, useLive } from '../live.js'
import { Panel, Payload, Problem, time } from '../ui.js'
import { VirtualList } from '../virtual-list.js'
import type { ChannelView, GroupView, MessageView } from '../views.js'

/** Samples kept for the charts: two minutes at one a second. */
const KEEP = 120
/** Lines a chart draws: the busiest channels (groups with the most lag). */
const LINES = 6
const TAIL_KEEP = 500

interface Samples {
  times: number[]
  /** Per channel: published then, for rates. */
  published: Map<string, number[]>
  rates: Map<string, (number | null)[]>
  lag: Map<string, (number | null)[]>
}

const push = <T,>(list: T[], v: T) => {
  list.push(v)
  if (list.length > KEEP) list.shift()
}

export function ChannelsView({ hub }: { hub: LiveHub }) {
  const client = hub.client
  const channels = useLive(hub, () => client.channels(), [], { intervalMs: client.readOnly ? 0 : 1000, minGapMs: 1000 })
  const groups = useLive(hub, () => client.groups(), [], { intervalMs: client.readOnly ? 0 : 1000, minGapMs: 1000 })
  const samples = useRef<Samples>({ times: [], published: new Map(), rates: new Map(), lag: new Map() })
  const [, setTick] = useState(0)
  const [tailOf, setTailOf] = useState<string>()

  // One sample per channels answer: the rate is published since the last sample over the time between.
  useEffect(() => {
    const list = channels.data
    if (!list) return
    const s = samples.current
    const now = Date.now() / 1000
    const dt = s.times.length ? now - s.times.at(-1)! : 0
    push(s.times, now)
    const width = s.times.length
    for (const c of list) {
      const prev = s.published.get(c.name)?.at(-1)
      const rates = s.rates.get(c.name) ?? Array<number | null>(width - 1).fill(null)
      push(rates, prev === undefined || dt <= 0 ? null : Math.max(0, (c.stats.published - prev) / dt))
      s.rates.set(c.name, rates)
      const pub = s.published.get(c.name) ?? []
      push(pub, c.stats.published)
      s.published.set(c.name, pub)
    }
    for (const g of groups.data ?? []) {
      const key = `${g.channel}/${g.name}`
      const lag = s.lag.get(key) ?? Array<number | null>(width - 1).fill(null)
      push(lag, g.stats.backlog + g.stats.pending)
      s.lag.set(key, lag)
    }
    // Keep every line as long as the times (a channel gone stays null).
    for (const m of [s.rates, s.lag]) for (const v of m.values()) while (v.length < width) v.unshift(null)
    setTick((t) => t + 1)
  }, [channels.data])

  const s = samples.current
  const busiest = [...s.rates.entries()].sort((a, b) => (b[1].at(-1) ?? 0) - (a[1].at(-1) ?? 0)).slice(0, LINES)
  const laggiest = [...s.lag.entries()].sort((a, b) => (b[1].at(-1) ?? 0) - (a[1].at(-1) ?? 0)).slice(0, LINES)
  busiest.sort((a, b) => a[0].localeCompare(b[0]))
  laggiest.sort((a, b) => a[0].localeCompare(b[0]))

  return (
    <div class="channels">
      <Problem error={channels.error ?? groups.error} />
      {!client.readOnly && (
        <div class="columns">
          <Panel title="Throughput (published / s)">
            <Chart testId="throughput" times={s.times} series={busiest.map(([name, values]) => ({ name, values }))} unit="msg/s" />
          </Panel>
          <Panel title="Group lag (backlog + pending)">
            <Chart testId="lag" times={s.times} series={laggiest.map(([name, values]) => ({ name, values }))} unit="messages" />
          </Panel>
        </div>
      )}
      <Panel title={`Channels (${channels.data?.length ?? 0})`}>
        <table class="table" data-testid="channels">
          <thead>
            <tr>
              <th>channel</th>
              <th>published</th>
              <th>delivered</th>
              <th>retained</th>
              <th>subscribers</th>
              <th>groups</th>
              <th>dead-lettered</th>
              <th>transport</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(channels.data ?? []).map((c: ChannelView) => (
              <tr key={c.name} class={tailOf === c.name ? 'selected' : ''}>
                <td class="mono">{c.name}</td>
                <td>{c.stats.published.toLocaleString('en')}</td>
                <td>{c.stats.delivered.toLocaleString('en')}</td>
                <td>{c.stats.retained.toLocaleString('en')}</td>
                <td>{c.stats.subscribers}</td>
                <td data-col="groups">{c.stats.groups}</td>
                <td>{c.stats.deadLettered}</td>
                <td>{c.binding ? `${c.binding.transport} (${c.binding.kind})` : 'memory'}</td>
                <td>
                  {!client.readOnly && (
                    <button type="button" onClick={() => setTailOf(tailOf === c.name ? undefined : c.name)}>
                      {tailOf === c.name ? 'stop tail' : 'tail'}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Panel>
      <Panel title={`Groups (${groups.data?.length ?? 0})`}>
        <table class="table" data-testid="groups">
          <thead>
            <tr>
              <th>channel / group</th>
              <th>members</th>
              <th>backlog</th>
              <th>pending</th>
              <th>delivered</th>
              <th>acked</th>
              <th>nacked</th>
              <th>redelivered</th>
              <th>dead-lettered</th>
            </tr>
          </thead>
          <tbody>
            {(groups.data ?? []).map((g: GroupView) => (
              <tr key={`${g.channel}/${g.name}`}>
                <td class="mono">
                  {g.channel} / {g.name}
                </td>
                <td>{g.stats.members}</td>
                <td>{g.stats.backlog}</td>
                <td>{g.stats.pending}</td>
                <td>{g.stats.delivered.toLocaleString('en')}</td>
                <td>{g.stats.acked.toLocaleString('en')}</td>
                <td>{g.stats.nacked}</td>
                <td>{g.stats.redelivered}</td>
                <td>{g.stats.deadLettered}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Panel>
      {tailOf && <Tail hub={hub} channel={tailOf} nextSeq={channels.data?.find((c) => c.name === tailOf)?.stats.nextSeq ?? 0} />}
    </div>
  )
}

/** A channel's messages as they come (from the last 50 retained), batched per animation frame. */
function Tail({ hub, channel, nextSeq }: { hub: LiveHub; channel: string; nextSeq: number }) {
  const [rows, setRows] = useState<MessageView[]>([])
  const [selected, setSelected] = useState<MessageView>()
  useEffect(() => {
    let pending: MessageView[] = []
    let frame = 0
    let kept: MessageView[] = []
    const flush = () => {
      frame = 0
      kept = [...pending.reverse(), ...kept].slice(0, TAIL_KEEP)
      pending = []
      setRows(kept)
    }
    const stop = hub.client.tail(
      channel,
      (m) => {
        pending.push(m)
        frame ||= requestAnimationFrame(flush)
      },
      { from: 'latest' },
    )
    // The last 50 retained before the tail began (a log may hold fewer: it starts at the first kept).
    void hub.client.messages(channel, { from: Math.max(0, nextSeq - 50), limit: 50 }).then((old) => {
      kept = [...old].reverse().concat(kept).slice(0, TAIL_KEEP)
      setRows(kept)
    })
    return () => {
      stop()
      if (frame) cancelAnimationFrame(frame)
    }
    // Opened once per channel: later counters do not restart the tail.
  }, [hub, channel])
  return (
    <Panel title={`Tail of ${channel} (newest first, last ${TAIL_KEEP})`}>
      <div class="split">
        <VirtualList
          testId="tail"
          rows={rows}
          rowHeight={28}
          height={300}
          row={(m: MessageView) => (
            <button type="button" class={`rowbtn ${selected?.seq === m.seq ? 'selected' : ''}`} onClick={() => setSelected(m)}>
              <span class="mono">#{m.seq}</span> <span class="muted">{time(m.at)}</span> <Payload value={m.payload} inline />
            </button>
          )}
        />
        <div class="detail">
          {selected ? (
            <>
              <h3>
                #{selected.seq} <span class="muted">{selected.id}</span>
              </h3>
              <Payload value={selected.headers} />
              <Payload value={selected.payload} />
            </>
          ) : (
            <p class="muted">pick a message to read it</p>
          )}
        </div>
      </div>
    </Panel>
  )
}
