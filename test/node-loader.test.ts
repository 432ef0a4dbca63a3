// The Node entry's engine loader, pointed at directories where the native addon cannot load:
// a corrupt addon for this platform (a load error), only another platform's addon, nothing built.
// The default then runs on the wasm engine after one warning; an explicit `native` fails.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, describe, expect, it } from 'vitest'

import { useEngineLoader } from '../ts/api.js'
import { Orrery } from '../ts/node.js'
import { NATIVE_FALLBACK_WARNING, nodeEngineLoader, type NodeEngineFiles } from '../ts/node-loader.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const realLoader = join(root, 'bindings/node/binding.cjs')
const builtAddon = readdirSync(join(root, 'bindings/node')).find((f) => /^orrery\..+\.node$/.test(f))!
const platform = `${process.platform}-${process.arch}`
const scratch = mkdtempSync(join(tmpdir(), 'orrery-loader-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** A copy of napi-rs's loader in a fresh directory, with the given addon files beside it. */
function nativeDir(name: string, addons: Record<string, Buffer>): string {
  const dir = join(scratch, name)
  mkdirSync(dir)
  copyFileSync(realLoader, join(dir, 'binding.cjs'))
  for (const [file, bytes] of Object.entries(addons)) writeFileSync(join(dir, file), bytes)
  return join(dir, 'binding.cjs')
}

function files(nativeLoader: string, sourceCheckout = true): NodeEngineFiles {
  return {
    nativeLoader,
    wasmGlue: join(root, 'bindings/wasm/pkg/web/orrery_wasm.js'),
    wasmModule: join(root, 'bindings/wasm/pkg/web/orrery_wasm_bg.wasm'),
    sourceCheckout,
  }
}

/** A loader whose warnings are collected instead of printed. */
function loader(f: NodeEngineFiles) {
  const warnings: { message: string; code: string }[] = []
  const load = nodeEngineLoader(f, (message, code) => warnings.push({ message, code }))
  return { load, warnings }
}

// ELF magic and then nothing a dynamic loader accepts.
const corrupt = Buffer.from('\x7fELF this is not a shared object', 'latin1')

describe('node engine loader', () => {
  it('loads the built native addon by default, without a warning', async () => {
    const { load, warnings } = loader(files(realLoader))
    expect((await load(undefined, undefined)).name).toBe('native')
    expect(warnings).toEqual([])
  })

  it('falls back to wasm once, with one warning naming the platform and how to silence it, when the addon fails to load', async () => {
    const { load, warnings } = loader(files(nativeDir('corrupt', { [builtAddon]: corrupt })))
    const first = await load(undefined, undefined)
    expect(first.name).toBe('wasm')
    expect(await load(undefined, '')).toBe(first)
    expect(warnings).toHaveLength(1)
    const [{ message, code }] = warnings as [{ message: string; code: string }]
    expect(code).toBe(NATIVE_FALLBACK_WARNING)
    expect(message).toContain(`the native engine failed to load on ${platform}`)
    expect(message).toContain(builtAddon)
    expect(message).toContain('ORRERY_ENGINE=wasm')
    expect(message).not.toMatch(/package-lock|node_modules/)

    // The fallback engine is a working engine: a message goes round on it.
    useEngineLoader((requested) => load(requested, undefined))
    const orrery = await Orrery.create()
    expect(orrery.engine).toBe('wasm')
    orrery.bus.respond<number, number>('double', (req) => req.payload * 2)
    expect((await orrery.bus.request<number>('double', 21)).payload).toBe(42)
    orrery.close()
    expect(warnings).toHaveLength(1)
  })

  it('warns through process.emitWarning with its code by default', async () => {
    const load = nodeEngineLoader(files(nativeDir('corrupt-default', { [builtAddon]: corrupt })))
    const seen = new Promise<Error & { code?: string }>((resolve) => process.once('warning', resolve))
    expect((await load(undefined, undefined)).name).toBe('wasm')
    const warning = await seen
    expect(warning.code).toBe(NATIVE_FALLBACK_WARNING)
    expect(warning.message).toContain('ORRERY_ENGINE=wasm')
  })

  it('fails with ENGINE_UNAVAILABLE, pointing to wasm, when native is asked for and cannot load', async () => {
    const { load, warnings } = loader(files(nativeDir('corrupt-explicit', { [builtAddon]: corrupt })))
    for (const [requested, fromEnv] of [
      ['native', undefined],
      [undefined, 'native'],
    ] as const) {
      const err = await load(requested, fromEnv).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toMatchObject({ name: 'OrreryError', code: 'ENGINE_UNAVAILABLE', details: { engine: 'native', platform } })
      const { message, cause } = err as Error
      expect(message).toContain('ORRERY_ENGINE=wasm')
      expect(message).not.toMatch(/package-lock|node_modules/)
      // The cause is the dynamic loader's own complaint, not napi-rs's wrapper around it.
      expect((cause as Error).message).toContain(builtAddon)
      expect((cause as Error).message).not.toMatch(/package-lock|Cannot find native binding/)
      expect((cause as Error).cause).toBeUndefined()
    }
    expect(warnings).toEqual([])
  })

  it("names the platform when the package carries only other platforms' addons", async () => {
    const other = 'orrery.sunos-sparc.node'
    const { load, warnings } = loader(files(nativeDir('other-platform', { [other]: corrupt })))
    const err = await load('native', undefined).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'ENGINE_UNAVAILABLE' })
    expect((err as Error).message).toContain(`this package has no native engine for ${platform} (looked for ${builtAddon}); it carries sunos-sparc`)
    expect((await load(undefined, undefined)).name).toBe('wasm')
    expect(warnings.map((w) => w.message)).toEqual([expect.stringContaining(`no native engine for ${platform}`)])
  })

  it('tells a source checkout to build the missing addon, and an installed package to reinstall', async () => {
    const empty = nativeDir('nothing-built', {})
    const checkout = await loader(files(empty, true))
      .load('native', undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(checkout).toMatchObject({ code: 'ENGINE_NOT_BUILT' })
    expect((checkout as Error).message).toContain('bash scripts/build.sh native')

    const installed = loader(files(empty, false))
    const err = await installed.load('native', undefined).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'ENGINE_NOT_BUILT' })
    expect((err as Error).message).toMatch(/package is incomplete.*Reinstall it/)
    expect((err as Error).message).not.toContain('scripts/')
    // The default still runs, on wasm, and says why.
    expect((await installed.load(undefined, undefined)).name).toBe('wasm')
    expect(installed.warnings[0]!.message).toContain('package is incomplete')
  })

  it('reports a missing wasm engine the same two ways', async () => {
    const missing = { ...files(realLoader), wasmModule: join(scratch, 'absent.wasm') }
    const checkout = await loader(missing)
      .load('wasm', undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(checkout).toMatchObject({ code: 'ENGINE_NOT_BUILT', details: { engine: 'wasm' } })
    expect((checkout as Error).message).toContain('bash scripts/build.sh wasm')
    const installed = await loader({ ...missing, sourceCheckout: false })
      .load(undefined, 'wasm')
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect((installed as Error).message).toMatch(/package is incomplete.*absent\.wasm/)
    expect((installed as Error).message).not.toContain('scripts/')
  })

  it('refuses an unknown engine name from the environment', async () => {
    await expect(loader(files(realLoader)).load(undefined, 'gpu')).rejects.toMatchObject({
      code: 'INVALID_OPTION',
      message: expect.stringContaining('ORRERY_ENGINE'),
    })
  })
})
