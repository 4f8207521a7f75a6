// Browser end-to-end test of the example app, in headless Chromium driven by
// playwright-core, against a running `dwf serve --ui examples/web/dist` (auth on).
//
//   node e2e/run.mjs http://127.0.0.1:PORT [--screenshots DIR]
//
// Prints one line per scenario and the measured latencies; exits 1 on the first
// failure, with what the page showed. tests/browser/test_web_app.py starts the server
// and runs this script.

import { mkdtempSync, mkdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { chromium } from "playwright-core"

const args = process.argv.slice(2)
const base = args[0]?.replace(/\/+$/, "")
const shotsAt = args.indexOf("--screenshots")
const shots = shotsAt >= 0 ? args[shotsAt + 1] : undefined
if (!base) {
  console.error("usage: node e2e/run.mjs BASE_URL [--screenshots DIR]")
  process.exit(2)
}
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium"
const STEP_MS = 20_000
/** An answer counts as "quick" below this (the median is typically far lower). */
const QUICK_MS = 5_000

const session = await (await fetch(`${base}/ui/session.json`)).json()
const ns = `${base}${session.namespace}`
const auth = session.token ? { Authorization: `Bearer ${session.token}` } : {}

function runId(tag) {
  return `${session.run_prefix}e2e-${tag}-${Math.random().toString(36).slice(2, 8)}`
}

async function post(url, message) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...auth },
    body: JSON.stringify([message]),
  })
  if (!response.ok) throw new Error(`POST ${url}: ${response.status} ${await response.text()}`)
}

async function startExpense(id, reportId, amount = 500) {
  await post(`${ns}/index`, {
    type: "start",
    key: id,
    value: { run_id: id, workflow: "expense-approval", input: { report_id: reportId, items: [{ amount }] } },
    headers: { operation: "insert" },
  })
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const profile = mkdtempSync(join(tmpdir(), "dwf-e2e-chromium-"))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1100, height: 900 },
})
const page = context.pages()[0] ?? (await context.newPage())
page.setDefaultTimeout(STEP_MS)

const problems = []
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`))
page.on("console", (message) => {
  if (message.type() === "error" && !/status of 40[49]/.test(message.text())) {
    problems.push(`console error: ${message.text()}`)
  }
})
page.on("dialog", (dialog) => void dialog.accept())

// Reads of streams in flight, to count the connections the page holds.
const inflight = new Map()
const isRead = (request) => request.method() === "GET" && request.url().includes("/v1/stream/")
page.on("request", (request) => {
  if (isRead(request)) inflight.set(request, new URL(request.url()).pathname)
})
page.on("requestfinished", (request) => inflight.delete(request))
page.on("requestfailed", (request) => inflight.delete(request))
function openReads() {
  const paths = [...inflight.values()]
  return {
    status: paths.filter((p) => p.endsWith("/status")).length,
    histories: paths.filter((p) => p.endsWith("/history")).length,
    all: paths,
  }
}

let failed = false
async function scenario(name, body) {
  const started = Date.now()
  try {
    await body()
    if (problems.length) throw new Error(problems.splice(0).join("\n"))
    console.log(`PASS ${name} (${Date.now() - started} ms)`)
  } catch (error) {
    failed = true
    console.log(`FAIL ${name}: ${error instanceof Error ? error.message : String(error)}`)
    try {
      console.log(`  page: ${page.url()}`)
      console.log(`  text: ${(await page.innerText("body")).slice(0, 3000).replace(/\n/g, "\n        ")}`)
      if (shots) await page.screenshot({ path: join(shots, `failure-${name.replace(/\W+/g, "-")}.png`), fullPage: true })
    } catch {
      // the page is gone
    }
  }
}

async function shot(name) {
  if (!shots) return
  mkdirSync(shots, { recursive: true })
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true })
}

/** Posts an answer to the run's inbox from the page (its own connection pool) and
 * returns the ms until `selector` matches, or null after 15 s. */
function timeAnswer(id, selector, approved) {
  return page.evaluate(
    async ({ ns, id, token, selector, approved }) => {
      const seen = new Promise((resolve) => {
        const observer = new MutationObserver(() => {
          if (document.querySelector(selector)) {
            observer.disconnect()
            resolve(performance.now())
          }
        })
        observer.observe(document.body, { subtree: true, childList: true, attributes: true })
      })
      const sid = `s-${crypto.randomUUID()}`
      const t0 = performance.now()
      const response = await fetch(`${ns}/runs/${id}/inbox`, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify([
          { type: "submission", key: sid, value: { submission_id: sid, request: "manager", value: { approved } }, headers: { operation: "insert" } },
        ]),
      })
      if (!response.ok) throw new Error(`inbox POST: ${response.status}`)
      const t1 = await Promise.race([seen, new Promise((resolve) => setTimeout(() => resolve(null), 15000))])
      return t1 === null ? null : t1 - t0
    },
    { ns: session.namespace, id, token: session.token, selector, approved },
  )
}

const latencies = { list: [], run: [], form: [] }

try {
  await scenario("start an expense from the form, answer it wrong then right", async () => {
    await page.goto(`${base}/#/`)
    await page.click('details[data-workflow="expense-approval"] summary')
    const form = page.locator('details[data-workflow="expense-approval"]')
    await form.locator("#start-expense-approval_report_id").fill("E2E-FORM-1")
    await form.locator("#start-expense-approval_items_0_amount").fill("420")
    await form.locator('button[type="submit"]').click()
    const started = form.locator('[data-outcome="accepted"] a.started-run')
    await started.waitFor()
    const id = (await started.innerText()).trim()
    if (!id.startsWith(session.run_prefix)) throw new Error(`unexpected run id ${id}`)

    const task = page.locator(`#tasks li[data-run-id="${id}"][data-status="waiting"]`)
    await task.waitFor()
    const prompt = await task.locator(".prompt").innerText()
    if (!prompt.includes("E2E-FORM-1 (420.00 EUR)")) throw new Error(`task prompt: ${prompt}`)
    await shot("inbox")

    await task.locator("a.task-link").click()
    await page.locator(`article.run[data-run-id="${id}"][data-run-status="waiting"]`).waitFor()
    const input = page.locator('section.dwf-input-form[data-input-key="manager"]')
    await input.waitFor()

    // The browser's own check: nothing is sent for an answer that fails the schema
    // (the comment is limited to 500 characters).
    const comment = input.locator('input[id$="_comment"]')
    await comment.fill("x".repeat(501))
    await input.locator('button[type="submit"]').click()
    await input.locator(".panel-danger, .error-detail").first().waitFor()
    if (await page.locator("li[data-rejection]").count()) throw new Error("an invalid answer was sent")

    // Sent anyway: the engine rejects it, and the page shows the engine's reason.
    await page.locator("label.engine-checks input").check()
    await input.locator('button[type="submit"]').click()
    const rejected = input.locator('[data-outcome="rejected"]')
    await rejected.waitFor()
    const said = await rejected.innerText()
    if (!said.includes("schema-invalid") || !said.includes("manager") || said.includes("xxxxx")) throw new Error(`rejection shown: ${said}`)
    await page.locator('li[data-rejection][data-reason="schema-invalid"]').waitFor()
    await shot("run-rejected")

    // A valid answer: accepted, the run completes and its output is shown.
    await page.locator("label.engine-checks input").uncheck()
    await comment.fill("Within budget.")
    await input.locator('input[type="checkbox"]').check()
    const clicked = Date.now()
    await input.locator('button[type="submit"]').click()
    await page.locator(`article.run[data-run-status="completed"]`).waitFor()
    const output = await page.locator("#run-output").innerText()
    latencies.form.push(Date.now() - clicked)
    for (const expected of ['"report_id": "E2E-FORM-1"', '"by": "manager"', '"paid": true']) {
      if (!output.includes(expected)) throw new Error(`output lacks ${expected}: ${output}`)
    }
    await page.locator('li[data-kind="input"][data-key="manager"][data-status="received"]').waitFor()
    await page.locator('li[data-kind="step"][data-key="pay"][data-status="completed"]').waitFor()
    await shot("run-completed")
  })

  await scenario("8 waiting runs in the list on one connection, answers still quick", async () => {
    const ids = Array.from({ length: 8 }, (_, i) => runId(`many${i}`))
    await page.goto(`${base}/#/`)
    await page.locator("#tasks").waitFor()
    await Promise.all(ids.map((id, i) => startExpense(id, `MANY-${i}`)))
    for (const id of ids) await page.locator(`#tasks li[data-run-id="${id}"][data-status="waiting"]`).waitFor()
    await page.waitForTimeout(300)
    const reads = openReads()
    if (reads.histories !== 0 || reads.status > 1) {
      throw new Error(`the list holds ${reads.status} status and ${reads.histories} history reads: ${reads.all.join(", ")}`)
    }
    await shot("inbox-eight")
    // Answer each from the page (its connection pool), timing the inbox POST until the
    // row shows the run completed in the list.
    for (const id of ids) {
      const ms = await timeAnswer(id, `#runs tr[data-run-id="${id}"][data-status="completed"]`, true)
      if (ms === null) throw new Error(`run ${id}: the completed row did not show within 15 s`)
      latencies.list.push(ms)
    }
    const slow = latencies.list.filter((ms) => ms > QUICK_MS)
    if (slow.length) throw new Error(`slow answers: ${slow.map(Math.round).join(", ")} ms`)
    for (const id of ids) {
      await page.locator(`#tasks li[data-run-id="${id}"]`).waitFor({ state: "detached" })
    }
  })

  await scenario("run page: the answer's row shows quickly after the inbox POST", async () => {
    for (let i = 0; i < 3; i++) {
      const id = runId(`page${i}`)
      await startExpense(id, `PAGE-${i}`)
      await page.goto(`${base}/#/runs/${id}`)
      await page.locator('section.dwf-input-form[data-input-key="manager"]').waitFor()
      const ms = await timeAnswer(id, 'li[data-kind="input"][data-key="manager"][data-status="received"]', false)
      if (ms === null) throw new Error(`run ${id}: the received input did not show within 15 s`)
      latencies.run.push(ms)
      await page.locator(`article.run[data-run-status="completed"]`).waitFor()
      const reads = openReads()
      if (reads.histories > 1) throw new Error(`the run page holds ${reads.histories} history reads`)
    }
  })

  await scenario("a prompt with HTML is shown as text", async () => {
    const id = runId("html")
    const evil = `<img src=x onerror="window.__xss=1"><b>bold</b>`
    await startExpense(id, evil)
    await page.goto(`${base}/#/`)
    const task = page.locator(`#tasks li[data-run-id="${id}"]`)
    await task.waitFor()
    const listed = await task.locator(".prompt").innerText()
    if (!listed.includes(evil)) throw new Error(`list prompt: ${listed}`)
    if ((await task.locator("img, b").count()) !== 0) throw new Error("the list rendered HTML from a prompt")
    await page.goto(`${base}/#/runs/${id}`)
    const prompt = page.locator('section.dwf-input-form[data-input-key="manager"] .dwf-prompt')
    await prompt.waitFor()
    const shown = await prompt.innerText()
    if (!shown.includes(evil)) throw new Error(`run page prompt: ${shown}`)
    if ((await page.locator("article.run img, article.run b").count()) !== 0) {
      throw new Error("the run page rendered HTML from a prompt")
    }
    if (await page.evaluate(() => "__xss" in window)) throw new Error("a script from a prompt ran")
    await shot("run-html-prompt")
  })
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
}

const fmt = (values) =>
  values.length
    ? `median ${Math.round(median(values))} ms (n=${values.length}, min ${Math.round(Math.min(...values))}, max ${Math.round(Math.max(...values))})`
    : "no samples"
console.log(`latency inbox POST -> run row visible in the task list: ${fmt(latencies.list)}`)
console.log(`latency inbox POST -> input row visible on the run page: ${fmt(latencies.run)}`)
console.log(`latency form submit click -> run output visible: ${fmt(latencies.form)}`)
process.exit(failed ? 1 : 0)
