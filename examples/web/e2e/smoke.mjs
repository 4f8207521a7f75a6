// The page a newcomer sees after `make run`: loads BASE_URL/ in headless Chromium and
// checks that the app rendered (the task inbox, a start form per workflow the session
// lists) without a page or console error.
//
//   node e2e/smoke.mjs http://127.0.0.1:PORT [--screenshot FILE]

import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { chromium } from "playwright-core"

const args = process.argv.slice(2)
const base = args[0]?.replace(/\/+$/, "")
const shotAt = args.indexOf("--screenshot")
if (!base) {
  console.error("usage: node e2e/smoke.mjs BASE_URL [--screenshot FILE]")
  process.exit(2)
}
const session = await (await fetch(`${base}/ui/session.json`)).json()
const profile = mkdtempSync(join(tmpdir(), "dwf-smoke-chromium-"))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
})
const problems = []
try {
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(20_000)
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`))
  page.on("console", (m) => m.type() === "error" && problems.push(`console error: ${m.text()}`))
  const response = await page.goto(`${base}/`)
  if (response?.status() !== 200) throw new Error(`GET / answered ${response?.status()}`)
  await page.locator("#tasks").waitFor()
  await page.locator("#runs").waitFor()
  for (const workflow of session.workflows) {
    await page.locator(`details[data-workflow="${workflow.name}"]`).waitFor()
  }
  if (shotAt >= 0) await page.screenshot({ path: args[shotAt + 1], fullPage: true })
  if (problems.length) throw new Error(problems.join("\n"))
  console.log(`ok ${await page.title()}: the inbox and ${session.workflows.length} start forms`)
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
}
