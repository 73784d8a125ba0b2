// Debian's Chromium, headless, for the browser tests (never a downloaded browser). The flags keep it from calling
// out of this machine's closed network at start-up.
import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'
import type { Test } from 'tap'
import { within } from './wait.js'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const CHROMIUM_ARGS: readonly string[] = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

/** Whether Chromium is installed; when it is not, the test fails saying how to install it. */
export function chromiumInstalled (t: Test): boolean {
  if (existsSync(CHROMIUM)) return true
  t.fail(`Chromium not found at ${CHROMIUM}: install the Debian package "chromium" (apt-get install chromium) or set CHROMIUM_PATH; this test never downloads a browser`)
  return false
}

/** Launch it (with `extraArgs`), closed when the test ends. */
export async function launchChromium (t: Test, extraArgs: readonly string[] = []): Promise<Browser> {
  const browser = await within(chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 30_000 }), 35_000, 'launch Chromium')
  t.teardown(() => within(browser.close(), 10_000, 'browser.close()'))
  return browser
}
