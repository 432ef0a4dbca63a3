/**
 * `orrery serve`: an Orrery with the demo shop (../demo/shop.ts), its metrics in a prom-client
 * registry when prom-client is installed, a Control over it, the HTTP API (serveHttp)
 * and the built dashboard on the same server, guarded by an admin token it prints. Stops on
 * SIGINT/SIGTERM (or, with --exit, once started and toured), closing what it opened.
 */
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import type { PromRegistry } from '../agents/metrics.js'
import { type Demo, startDemo } from '../demo/shop.js'
import { serveHttp } from '../http/server.js'
import { Orrery } from '../node.js'
import { flagOf, type Parsed, positionals, stringOf, wholeNumber } from './args.js'
import { DEFAULT_PORT } from './client.js'
import type { Command } from './command.js'
import { CliFailure, EXIT, usageError } from './failure.js'
import { type Io, printJson, withProgress } from './output.js'
import { tour } from './tour.js'

/** The built dashboard: dist/dashboard beside dist/cli (or ts/cli, from a checkout). */
const DASHBOARD = fileURLToPath(new URL('../../dist/dashboard', import.meta.url))

/**
 * prom-client's registry, when the optional peer is installed: the Orrery fills it (its bus, groups,
 * mesh and workflows) and /metrics serves it. Without prom-client, serve runs with metrics off.
 */
async function promRegistry(): Promise<PromRegistry | undefined> {
  try {
    const prom = (await import('prom-client')) as unknown as { Registry: new () => PromRegistry }
    return new prom.Registry()
  } catch {
    return undefined
  }
}

export const serve: Command = {
  name: 'serve',
  summary: 'serve an Orrery: the HTTP API, the dashboard and a demo mesh',
  help: `orrery serve [options]

Starts an Orrery with a demo mesh (agents, steady traffic, dead letters, workflow runs), the HTTP
API (/v1, OpenAPI at /openapi.json, /metrics) and the dashboard at /, and prints the URL and an
admin token. Ctrl-C stops it.
  --port <n>        the port (default ${DEFAULT_PORT}; 0: any free one)
  --host <host>     the address to listen on (default 127.0.0.1)
  --token <token>   the admin token (default: a new random one)
  --engine <name>   native or wasm (default: $ORRERY_ENGINE, else native)
  --no-demo         an empty Orrery: no agents, traffic or runs
  --tour            once serving, run a short tour of the API through the orrery commands
  --exit            stop once started (and toured), instead of serving until Ctrl-C
  --json            print {"url","token","dashboard","metrics"} as one JSON line instead of the banner`,
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    token: { type: 'string' },
    engine: { type: 'string' },
    'no-demo': { type: 'boolean' },
    tour: { type: 'boolean' },
    exit: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(parsed: Parsed, io: Io) {
    positionals(parsed, 'serve', [])
    const portText = stringOf(parsed, 'port')
    const port = portText === undefined ? DEFAULT_PORT : wholeNumber(portText, '--port', 'serve')
    if (port > 65_535) throw usageError(`--port must be at most 65535, not ${port}`, 'serve')
    const host = stringOf(parsed, 'host') ?? '127.0.0.1'
    const engine = stringOf(parsed, 'engine')
    if (engine !== undefined && engine !== 'native' && engine !== 'wasm')
      throw usageError(`--engine must be native or wasm, not ${JSON.stringify(engine)}`, 'serve')
    // Hex: a token that began with '-' would read as an option on the command lines it is pasted into.
    const token = stringOf(parsed, 'token') ?? randomBytes(18).toString('hex')
    if (token.length < 8 || /\s/.test(token)) throw usageError('--token must be at least 8 characters, without spaces', 'serve')
    const withDemo = !flagOf(parsed, 'no-demo')
    if (flagOf(parsed, 'tour') && !withDemo) throw usageError('--tour shows the demo: leave out --no-demo', 'serve')
    const json = flagOf(parsed, 'json')

    const opened: (() => Promise<void> | void)[] = []
    const close = async () => {
      for (const step of opened.reverse()) await step()
      opened.length = 0
    }
    try {
      const started = await withProgress(io, 'starting Orrery', async (update) => {
        const metrics = await promRegistry()
        const orrery = await Orrery.create({ ...(engine === undefined ? {} : { engine }), ...(metrics === undefined ? {} : { metrics }) })
        opened.push(() => orrery.close())
        let demo: Demo | undefined
        if (withDemo) {
          update('starting the demo mesh')
          demo = await startDemo(orrery)
          const running = demo
          opened.push(() => running.stop())
        }
        // The Orrery's registry (if any) is what the control serves at /metrics.
        const control = orrery.control(demo === undefined ? {} : { mesh: demo.mesh, workflows: demo.workflows, store: demo.store })
        opened.push(() => control.close())
        update('starting the HTTP server')
        const dashboard = existsSync(`${DASHBOARD}/index.html`) ? DASHBOARD : undefined
        const server = await serveHttp(control, { tokens: { [token]: ['admin'] }, port, host, ...(dashboard === undefined ? {} : { dashboard }) }).catch(
          (error: unknown) => {
            const code = (error as { code?: unknown }).code
            if (code === 'EADDRINUSE') {
              throw new CliFailure(EXIT.api, `port ${port} on ${host} is taken: choose another with --port (0: any free one)`, 'EADDRINUSE')
            }
            // A host that is no address of this machine, or a name that does not resolve.
            if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EACCES') {
              throw new CliFailure(
                EXIT.api,
                `cannot listen on ${host} port ${port}: choose another --host (an address of this machine, default 127.0.0.1)`,
                code,
              )
            }
            throw error
          },
        )
        opened.push(() => server.close())
        return { orrery, demo, url: server.url, dashboard: dashboard !== undefined, metrics: metrics !== undefined }
      })
      const { url } = started
      if (json) printJson(io, { url, token, dashboard: started.dashboard, metrics: started.metrics }, true)
      else {
        io.out(
          `\n== orrery serve: ${started.orrery.engine} engine, ${started.demo === undefined ? 'no demo' : 'the demo shop (agents, orders, fulfil-order runs)'}`,
        )
        io.out(started.dashboard ? `  dashboard  ${url}/#token=${token}` : '  dashboard  not built (bash scripts/build.sh dashboard)')
        io.out(`  API        ${url}/v1  (OpenAPI: ${url}/openapi.json)`)
        io.out(started.metrics ? `  metrics    ${url}/metrics` : '  metrics    off: prom-client is not installed (npm install prom-client)')
        io.out(`  token      ${token}  (admin)`)
        io.out(`  try        export ORRERY_URL=${url} ORRERY_TOKEN=${token}; npx orrery status`)
      }
      if (flagOf(parsed, 'tour')) await tour(io, url, token)
      if (flagOf(parsed, 'exit')) return
      if (!json) io.out(`\nServing until Ctrl-C.`)
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop)
          process.off('SIGTERM', stop)
          resolve()
        }
        process.on('SIGINT', stop)
        process.on('SIGTERM', stop)
      })
      if (!json) io.out('stopping')
    } finally {
      await close()
    }
  },
}
