// Runs in chromium: the browser entry (wasm engine, loaded the way a bundler serves it) goes
// through the same smoke scenario as the Node engines, then a deliberate panic.
import { Orrery } from '../../ts/browser.js'
import { panicTranscript, smokeTranscript } from '../smoke/cases.js'

declare global {
  interface Window {
    orreryResult?: { transcript?: unknown[]; panic?: [string, string]; nativeRefused?: string; error?: string }
  }
}

async function run(): Promise<void> {
  try {
    const transcript = await smokeTranscript(Orrery)
    const nativeRefused = await Orrery.create({ engine: 'native' }).then(() => 'created', (e: { code: string }) => e.code)
    const panic = await panicTranscript(await Orrery.create())
    window.orreryResult = { transcript, panic, nativeRefused }
  } catch (err) {
    window.orreryResult = { error: String((err as Error).stack ?? err) }
  }
  document.getElementById('out')!.textContent = JSON.stringify(window.orreryResult, null, 2)
}
void run()
