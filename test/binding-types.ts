/**
 * A type-level test, run by `tsc -p tsconfig.test.json` in the test command: the binding types
 * the engines are written against (`NativeBinding`, `WasmBinding`, written by hand in
 * ts/engines) must match what napi-rs and wasm-bindgen generate from the Rust
 * (`bindings/node/binding.d.cts`, `bindings/wasm/pkg/web/orrery_wasm.d.ts`). A function, class,
 * method or property the hand-written side names and the generated side lacks fails the check, as
 * does an argument list the generated function would not take as written (a count or a type) or
 * a result the hand-written side reads as something it is not. The error names the member.
 */
import type * as NativeGenerated from '../bindings/node/binding.cjs'
import type * as WasmGenerated from '../bindings/wasm/pkg/web/orrery_wasm.js'
import type { NativeBinding } from '../ts/engines/native.js'
import type { WasmBinding } from '../ts/engines/wasm.js'

type AnyFunction = (...args: never[]) => unknown
type AnyConstructor = abstract new (...args: never[]) => unknown

/**
 * A call as written on the hand-written side is one the generated side takes: the same number of
 * arguments (none missing, none extra) of types it accepts; what it returns is what the
 * hand-written side says (anything, where that side ignores the result).
 */
type CallMatches<H, G> = H extends (...args: infer HA) => infer HR
  ? G extends (...args: infer GA) => infer GR
    ? [HA] extends [GA]
      ? // biome-ignore lint/suspicious/noConfusingVoidType: a call declared to return nothing ignores its result
        [void] extends [HR]
        ? true
        : [GR] extends [HR]
          ? true
          : false
      : false
    : false
  : false

/** A class: its constructor's arguments as for a call, its instances' and its static members. */
type ClassMatches<H, G> = H extends abstract new (
  ...args: infer HA
) => infer HI
  ? G extends abstract new (
      ...args: infer GA
    ) => infer GI
    ? [HA] extends [GA]
      ? [Mismatches<HI, GI> | Mismatches<Omit<H, never>, G>] extends [never]
        ? true
        : false
      : false
    : false
  : false

type MemberMatches<H, G> = [H] extends [AnyConstructor] ? ClassMatches<H, G> : [H] extends [AnyFunction] ? CallMatches<H, G> : [G] extends [H] ? true : false

/** The names of the hand-written members the generated side lacks or declares differently. */
export type Mismatches<H, G> = {
  [K in keyof H]-?: K extends keyof G ? (MemberMatches<H[K], G[K]> extends true ? never : K) : K
}[keyof H]

/** Compiles only when `T` is `never`: the error shows the members that do not match. */
type Expect<T extends never> = T

export type NativeMatches = Expect<Mismatches<NativeBinding, typeof NativeGenerated>>
export type WasmMatches = Expect<Mismatches<WasmBinding, typeof WasmGenerated>>

// The checker checks itself: each of these differences must be found.
type Found<T extends true> = T
type Named<T> = [T] extends [never] ? false : true
export type SelfCheck = [
  Found<Named<Mismatches<{ f(a: number): void }, { g(a: number): void }>>>, // missing
  Found<Named<Mismatches<{ f(a: number): void }, { f(a: number, b: number): void }>>>, // too few arguments
  Found<Named<Mismatches<{ f(a: number, b: number): void }, { f(a: number): void }>>>, // too many
  Found<Named<Mismatches<{ f(a: number): void }, { f(a: string): void }>>>, // wrong type
  Found<Named<Mismatches<{ f(): number }, { f(): string }>>>, // wrong result
  Found<Named<Mismatches<{ C: new (a: number) => { m(): void } }, { C: new (a: number) => { n(): void } }>>>, // a method of a class
  Found<Named<Mismatches<{ C: { new (): object; s(a: number): void } }, { C: { new (): object; s(a: string): void } }>>>, // a static
]
// …and what does match is not flagged: a wider result type read narrower, an optional argument
// passed, members the hand-written side does not use.
export type SelfCheckMatches = Expect<
  Mismatches<
    { f(a: number): ArrayLike<number>; w(x: (() => void) | null): void; C: new (a: number) => { m(): void } },
    { f(a: number): number[]; w(x?: (() => void) | null): void; g(): void; C: new (a: number) => { m(): number; n(): void } }
  >
>

// The workflow classes are part of what is compared above: each side names them, so a method the
// engines add or drop (or a wider argument) fails the check like any other member.
type Has<K extends PropertyKey, T> = K extends keyof T ? true : false
export type WorkflowMembersChecked = [
  Found<Has<'NativeWorkflows', NativeBinding>>,
  Found<Has<'NativeWorkflows', typeof NativeGenerated>>,
  Found<Has<'WasmWorkflows', WasmBinding>>,
  Found<Has<'WasmWorkflows', typeof WasmGenerated>>,
]

// The calls of channels bound to a transport (bind, ingest, drainEgress, groupRoom, mirrorRoom) are named on
// both engines' bus classes, so the comparison above covers them.
type Instance<C> = C extends abstract new (...args: never[]) => infer I ? I : never
type RemoteCall = 'bind' | 'ingest' | 'drainEgress' | 'groupRoom' | 'mirrorRoom'
type HasAll<K extends PropertyKey, T> = [K] extends [keyof T] ? true : false
export type RemoteCallsChecked = [
  Found<HasAll<RemoteCall, Instance<NativeBinding['NativeBus']>>>,
  Found<HasAll<RemoteCall, Instance<(typeof NativeGenerated)['NativeBus']>>>,
  Found<HasAll<RemoteCall, Instance<WasmBinding['WasmBus']>>>,
  Found<HasAll<RemoteCall, Instance<(typeof WasmGenerated)['WasmBus']>>>,
]
