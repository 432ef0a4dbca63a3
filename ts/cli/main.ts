#!/usr/bin/env node
/** The `orrery` bin (package.json "bin"): docs/cli.md. */
import { run } from './run.js'

process.exitCode = await run(process.argv.slice(2))
