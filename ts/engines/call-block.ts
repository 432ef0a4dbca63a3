/**
 * Call blocks: the hottest native calls take no arguments (a napi-rs function measured ~20 ns
 * without arguments and ~90 ns with one; a class method ~220 ns). Their target and arguments go
 * into a `Float64Array` the addon holds, and their results come back in it. One block per
 * loaded addon (per thread) and per use, kept on the addon's module object so that two copies
 * of this package's JS (two bundles) share it rather than each taking it over from the other.
 */
import { CALL_BLOCK } from './manifest.js'

/** The call block named `name` of `binding`, handed to the addon with `hand` on first use. */
export function callBlock(binding: object, name: string, hand: (block: Float64Array) => void, slots: number = CALL_BLOCK.slots): Float64Array {
  const key = Symbol.for(`orrery.${name}.callBlock`)
  const held = (binding as Record<symbol, Float64Array | undefined>)[key]
  if (held) return held
  const block = new Float64Array(slots)
  hand(block)
  Object.defineProperty(binding, key, { value: block })
  return block
}
