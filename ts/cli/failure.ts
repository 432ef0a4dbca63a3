/**
 * How the `orrery` command fails: a message on stderr and an exit code per class, so a script can
 * tell a mistake in its own command line (2) from a server it cannot reach (3) from a refusal by
 * the API or a command that cannot do its work here (1, with the API's or the command's code).
 */

/** Exit codes of the `orrery` command. */
export const EXIT = { ok: 0, api: 1, usage: 2, unreachable: 3 } as const

/** A failure the command reports and exits with. */
export class CliFailure extends Error {
  override readonly name = 'CliFailure'
  constructor(
    readonly exitCode: number,
    message: string,
    /** The API's error code (`UNAUTHORIZED`, `RUN_NOT_FOUND`, ...), or `USAGE` / `UNREACHABLE`. */
    readonly code: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message)
  }
}

/** A wrong command line: exit 2, with a pointer to the command's help. */
export function usageError(message: string, command?: string): CliFailure {
  const help = command === undefined ? 'orrery --help' : `orrery ${command} --help`
  return new CliFailure(EXIT.usage, `${message} (see ${help})`, 'USAGE')
}

/**
 * The command line is right but the command cannot do its work here (`bench` outside a source
 * checkout, a suite that fails): exit 1 with `code`, as a refusal by the API.
 */
export function cannotRun(message: string, code: string): CliFailure {
  return new CliFailure(EXIT.api, message, code)
}

/** No answer from the server: exit 3. */
export function unreachable(url: string, why: string): CliFailure {
  return new CliFailure(EXIT.unreachable, `cannot reach ${url}: ${why}`, 'UNREACHABLE')
}
