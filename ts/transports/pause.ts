/**
 * A reader's pause: a wait of at most some milliseconds that `wake()` ends early. Its timer is
 * cleared when woken, so a stopped reader leaves no timer keeping the process alive.
 */
export class Pause {
  private resume: (() => void) | undefined

  /** Resolves after `ms`, or at the next `wake()`, whichever comes first. */
  wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.resume = undefined
        resolve()
      }, ms)
      this.resume = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  /** Ends the wait in progress, if any. */
  wake(): void {
    const resume = this.resume
    this.resume = undefined
    resume?.()
  }
}
