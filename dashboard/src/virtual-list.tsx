/**
 * A list of any length with only the rows in view (and a few either side) in the DOM: rows have one
 * fixed height, so the first row in view is scrollTop / rowHeight and nothing needs measuring.
 * 10,000 agents or 50,000 events cost about 40 rows of DOM.
 */
import type { ComponentChildren } from 'preact'
import { useLayoutEffect, useRef, useState } from 'preact/hooks'

const OVERSCAN = 6

export interface VirtualListProps<T> {
  rows: readonly T[]
  rowHeight: number
  /** The list's height in px (it scrolls inside). */
  height: number
  row: (item: T, index: number) => ComponentChildren
  /** Keeps the row with this index in view (a time-travel cursor). */
  follow?: number | undefined
  testId?: string
}

export function VirtualList<T>({ rows, rowHeight, height, row, follow, testId }: VirtualListProps<T>) {
  const box = useRef<HTMLDivElement>(null)
  const [top, setTop] = useState(0)
  useLayoutEffect(() => {
    const el = box.current
    if (!el || follow === undefined) return
    const y = follow * rowHeight
    if (y < el.scrollTop || y + rowHeight > el.scrollTop + height) el.scrollTop = Math.max(0, y - height / 2)
  }, [follow, rowHeight, height])
  const first = Math.max(0, Math.floor(top / rowHeight) - OVERSCAN)
  const last = Math.min(rows.length, Math.ceil((top + height) / rowHeight) + OVERSCAN)
  const visible = []
  for (let i = first; i < last; i++) {
    visible.push(
      <div class="vrow" key={i} data-index={i} style={{ top: `${i * rowHeight}px`, height: `${rowHeight}px` }}>
        {row(rows[i]!, i)}
      </div>,
    )
  }
  return (
    <div class="vlist" ref={box} style={{ height: `${height}px` }} onScroll={(e) => setTop((e.currentTarget as HTMLDivElement).scrollTop)} data-testid={testId}>
      <div class="vspace" style={{ height: `${rows.length * rowHeight}px` }}>
        {visible}
      </div>
    </div>
  )
}
