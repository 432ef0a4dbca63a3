/**
 * A live line chart on uPlot: made once, then only `setData` as samples come (uPlot redraws a
 * canvas; nothing in the DOM changes). The series set is fixed per chart instance: a new set of
 * names makes a new chart.
 */
import 'uplot/dist/uPlot.min.css'

import { useEffect, useRef } from 'preact/hooks'
import uPlot from 'uplot'

const COLORS = ['#4f8cff', '#f5a524', '#2fbf71', '#e5484d', '#a06cff', '#00b5c8', '#ff7ab6', '#8c9096']

export interface ChartProps {
  /** Sample times, seconds since the epoch. */
  times: number[]
  series: { name: string; values: (number | null)[] }[]
  unit: string
  height?: number
  testId?: string
}

/**
 * The x axis's tick steps, in seconds: whole seconds only (uPlot's own steps go down to a
 * millisecond, which read ":58.500" on a chart of a few seconds' samples).
 */
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]

const two = (n: number) => String(n).padStart(2, '0')

/** A tick's time as HH:MM:SS, or HH:MM for steps of a minute or more; UTC, as the dashboard's other times. */
function clock(seconds: number, step: number): string {
  const d = new Date(seconds * 1000)
  const hm = `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`
  return step >= 60 ? hm : `${hm}:${two(d.getUTCSeconds())}`
}

/** Samples a line needs before it means anything (a rate needs two counts). */
const MIN_SAMPLES = 3

export function Chart(props: ChartProps) {
  if (props.times.length < MIN_SAMPLES) {
    return (
      <div class="chart waiting" style={{ height: `${props.height ?? 220}px` }} data-testid={props.testId}>
        collecting samples…
      </div>
    )
  }
  return <Plot {...props} />
}

function Plot({ times, series, unit, height = 220, testId }: ChartProps) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | undefined>(undefined)
  const names = series.map((s) => s.name).join('\u0000')
  useEffect(() => {
    const el = box.current
    if (!el) return
    const opts: uPlot.Options = {
      width: el.clientWidth || 600,
      height,
      // The x range is the samples' own: uPlot's default pads a short span by years.
      scales: { x: { time: true, range: (_u, min, max) => [min, Math.max(max, min + 1)] } },
      // Ticks fall on whole UTC seconds and minutes, as the labels read them.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      axes: [
        {
          stroke: '#9aa4b2',
          grid: { stroke: '#2a3140' },
          incrs: TIME_STEPS,
          // HH:MM:SS is about 60 px wide at the axis font: room for it and a gap.
          space: 80,
          values: (_u, splits, _axis, _space, step) => splits.map((s) => clock(s, step)),
        },
        { stroke: '#9aa4b2', grid: { stroke: '#2a3140' }, label: unit, size: 60 },
      ],
      series: [{}, ...series.map((s, i) => ({ label: s.name, stroke: COLORS[i % COLORS.length]!, width: 2, points: { show: false } }))],
      legend: { live: false },
    }
    const u = new uPlot(opts, [times, ...series.map((s) => s.values)] as uPlot.AlignedData, el)
    plot.current = u
    const resize = new ResizeObserver(() => u.setSize({ width: el.clientWidth, height }))
    resize.observe(el)
    return () => {
      resize.disconnect()
      u.destroy()
      plot.current = undefined
    }
  }, [names, height, unit])
  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData)
  })
  return <div class="chart" ref={box} data-testid={testId} />
}
