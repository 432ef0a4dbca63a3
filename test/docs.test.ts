/**
 * The code in README.md and docs/*.md is the code of examples/: every ```ts block is preceded by
 * `<!-- example: examples/<file>.ts -->` (the whole file) or `<!-- example: examples/<file>.ts#<region> -->`
 * (the lines between `// #region <region>` and `// #endregion`, their common indentation removed),
 * and must equal it exactly.
 * test/examples.test.ts runs those files, so every snippet compiles under strict and runs.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const ROOT = join(import.meta.dirname, '..')
const MARKER = /^\/\/ #(region|endregion)\b/

const pages = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
]

interface Block {
  readonly page: string
  readonly line: number
  readonly source: string | undefined
  readonly code: string
}

/** Every ```ts block of a page, with the example comment on the line before it, if any. */
function blocks(page: string): Block[] {
  const lines = readFileSync(join(ROOT, page), 'utf8').split('\n')
  const found: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue
    const end = lines.indexOf('```', i + 1)
    if (end < 0) throw new Error(`${page}:${i + 1}: the code block never closes`)
    const source = /^<!-- example: (\S+) -->$/.exec(lines[i - 1] ?? '')?.[1]
    found.push({ page, line: i + 1, source, code: lines.slice(i + 1, end).join('\n') })
    i = end
  }
  return found
}

/** `lines` without the indentation they all share. */
function dedent(lines: string[]): string[] {
  const indents = lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)![0].length)
  const cut = indents.length > 0 ? Math.min(...indents) : 0
  return lines.map((l) => l.slice(cut))
}

/** The text a source names: a whole example file, or one region of it, without region markers. */
function sourceText(source: string): string {
  const [file = '', region] = source.split('#')
  const path = join(ROOT, file)
  if (!file.startsWith('examples/') || !existsSync(path)) throw new Error(`no example file ${file}`)
  const lines = readFileSync(path, 'utf8').replace(/\n$/, '').split('\n')
  if (region === undefined) return lines.filter((l) => !MARKER.test(l.trim())).join('\n')
  const start = lines.findIndex((l) => l.trim() === `// #region ${region}`)
  if (start < 0) throw new Error(`${file} has no region ${region}`)
  const inside: string[] = []
  let depth = 1
  for (const line of lines.slice(start + 1)) {
    const marker = MARKER.exec(line.trim())?.[1]
    if (marker === 'region') depth++
    if (marker === 'endregion' && --depth === 0) return dedent(inside).join('\n')
    if (!marker) inside.push(line)
  }
  throw new Error(`${file}: region ${region} never ends`)
}

describe('docs are code', () => {
  const all = pages.flatMap(blocks)

  it('finds code blocks in README.md and docs/', () => {
    expect(all.length).toBeGreaterThan(5)
  })

  it('README.md has one ts block under "## Quick start": examples/quickstart.ts', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const section = readme.slice(readme.indexOf('## Quick start\n'), readme.indexOf('\n## ', readme.indexOf('## Quick start\n') + 1))
    expect(section.match(/^```ts$/gm)).toHaveLength(1)
    expect(blocks('README.md').find((b) => b.source === 'examples/quickstart.ts')).toBeDefined()
  })

  for (const block of all) {
    it(`${block.page}:${block.line} is ${block.source ?? '(no source)'}`, () => {
      if (block.source === undefined)
        throw new Error(`${block.page}:${block.line}: a ts block needs <!-- example: examples/<file>.ts[#region] --> on the line before it`)
      expect(block.code).toBe(sourceText(block.source))
    })
  }
})
