/** What a command of the `orrery` bin is: its name, its help, its options and what it does. */
import type { OptionSpec, Parsed } from './args.js'
import type { Io } from './output.js'

export interface Command {
  readonly name: string
  /** One line for `orrery --help`. */
  readonly summary: string
  /** `orrery <name> --help`: the synopsis and what each option does. */
  readonly help: string
  readonly options: OptionSpec
  run(parsed: Parsed, io: Io): Promise<void>
}

/** The help lines every client command ends with. */
export const CLIENT_HELP = `
  --url <url>      the API (default $ORRERY_URL, else http://127.0.0.1:7070)
  --token <token>  a bearer token (default $ORRERY_TOKEN)
  --json           JSON on stdout instead of a table`
