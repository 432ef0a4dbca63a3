/**
 * A run drawn from its definition: every node a box, containers around their children (a
 * sequence top to bottom, parallel branches and branch arms side by side, a loop's or forEach's
 * body inside it), each box coloured by the node's status in the state shown. A node inside
 * iterations sums up its instances instead of drawing each one (16,000 of them fit in one line).
 */
import type { NodeState, RunState, WorkflowDefinition } from '../../ts/browser.js'
import { Badge, tone } from './ui.js'

type Node = WorkflowDefinition['root']

export function RunGraph({
  definition,
  state,
  onPick,
  picked,
}: {
  definition: WorkflowDefinition
  state: RunState
  onPick: (id: string) => void
  picked: string | undefined
}) {
  return (
    <div class="graph" data-testid="run-graph">
      <Box node={definition.root} state={state} onPick={onPick} picked={picked} />
    </div>
  )
}

function what(node: Node): string {
  switch (node.kind) {
    case 'step':
      return 'fn' in node.run ? `fn ${node.run.fn}` : node.run.capability
    case 'child':
      return `workflow ${node.workflow}`
    case 'scatterGather':
    case 'delegate':
      return node.capability
    case 'sleep':
      return `${node.ms} ms`
    case 'waitFor':
      return `signal ${node.signal}`
    case 'forEach':
    case 'pipeline':
      return `over ${node.items}`
    case 'loop':
      return `≤ ${node.maxIterations}`
    case 'parallel':
      return `join ${typeof node.join === 'object' ? `quorum ${node.join.quorum}` : (node.join ?? 'all')}`
    default:
      return ''
  }
}

function Instances({ s }: { s: NodeState }) {
  if (!s.instances) return null
  const counts = new Map<string, number>()
  for (const i of Object.values(s.instances)) counts.set(i.status, (counts.get(i.status) ?? 0) + 1)
  return (
    <span class="instances">
      {[...counts].map(([status, n]) => (
        <span key={status} class={`count ${tone(status)}`} title={status}>
          {n.toLocaleString('en')} {status}
        </span>
      ))}
    </span>
  )
}

function Box({
  node,
  state,
  onPick,
  picked,
  label,
}: {
  node: Node
  state: RunState
  onPick: (id: string) => void
  picked: string | undefined
  label?: string
}) {
  const s = state.nodes[node.id]
  const status = s?.status ?? 'pending'
  const head = (
    <button type="button" class={`node-head ${picked === node.id ? 'picked' : ''}`} onClick={() => onPick(node.id)} data-node={node.id} data-status={status}>
      {label && <span class="arm">{label}</span>}
      <span class="node-id">{node.id}</span>
      <span class="node-kind">{node.kind}</span>
      <span class="node-what">{what(node)}</span>
      <Badge status={status} />
      {s && !s.instances && s.attempts > 1 && <span class="muted">{s.attempts} attempts</span>}
      {s && <Instances s={s} />}
    </button>
  )
  const inner = (children: { node: Node; label?: string }[], dir: 'col' | 'row') => (
    <div class={`children ${dir}`}>
      {children.map((c) => (
        <Box key={c.node.id} node={c.node} state={state} onPick={onPick} picked={picked} {...(c.label ? { label: c.label } : {})} />
      ))}
    </div>
  )
  let body = null
  switch (node.kind) {
    case 'sequence':
      body = inner(
        node.steps.map((n) => ({ node: n })),
        'col',
      )
      break
    case 'parallel':
      body = inner(
        node.branches.map((n) => ({ node: n })),
        'row',
      )
      break
    case 'branch':
      body = inner(
        [...node.arms.map((a, i) => ({ node: a.then, label: `when ${i + 1}` })), ...(node.otherwise ? [{ node: node.otherwise, label: 'otherwise' }] : [])],
        'row',
      )
      break
    case 'pipeline':
      body = inner(
        node.stages.map((n, i) => ({ node: n, label: `stage ${i}` })),
        'row',
      )
      break
    case 'loop':
    case 'forEach':
      body = inner([{ node: node.body }], 'col')
      break
  }
  return (
    <div class={`node ${body ? 'container' : 'leaf'} ${tone(status)}`}>
      {head}
      {body}
    </div>
  )
}
