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
      axes: [
        { stroke: '#9aa4b2', grid: { stroke: '#2a3140' } },
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
