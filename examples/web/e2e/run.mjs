// Browser end-to-end test of the example app, in headless Chromium driven by
// playwright-core, against a running `dwf serve --ui examples/web/dist` (auth on).
//
//   node e2e/run.mjs http://127.0.0.1:PORT [--screenshots DIR]
//
// DWF_BIN (the dwf command) and DWF_KEYS (the server's key file) let it mint a client
// token for one run, for the scenario that checks a page cannot use it on another.
// Prints one line per scenario and the measured latencies; a failed scenario prints
// what the page showed and makes the exit code 1. tests/browser/test_web_app.py starts
// the server and runs this script.

import { execFileSync } from "node:child_process"
import { mkdtempSync, mkdirSync, rmSync } from "node:fs"
import { createServer } from "node:http"
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
const problems = []
/** Every tab fails the scenario on a page error or an unexpected console error. */
function watch(tab) {
  tab.setDefaultTimeout(STEP_MS)
  tab.on("pageerror", (error) => problems.push(`page error: ${error.message}`))
  tab.on("console", (message) => {
    if (message.type() === "error" && !/status of 40[349]/.test(message.text())) {
      problems.push(`console error: ${message.text()}`)
    }
  })
  tab.on("dialog", (dialog) => void dialog.accept())
  return tab
}
const page = watch(context.pages()[0] ?? (await context.newPage()))
const newTab = async () => watch(await context.newPage())

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

async function shot(name, tab = page) {
  if (!shots) return
  mkdirSync(shots, { recursive: true })
  await tab.screenshot({ path: join(shots, `${name}.png`), fullPage: true })
}

const inputForm = (tab, key = "manager") => tab.locator(`section.dwf-input-form[data-input-key="${key}"]`)

/** Opens a start form. Not by clicking its summary: the lists above it grow as their
 * rows arrive, and a click aimed a moment earlier can land beside it. */
async function openDetails(details) {
  await details.locator("summary").waitFor()
  await details.evaluate((element) => {
    element.open = true
  })
  await details.locator("form").waitFor()
}

/** Answers the yes-or-no `approved` field: a Yes / No choice, neither chosen at first. */
async function choose(form, yes) {
  await form.locator('[role="radiogroup"] input[type="radio"]').nth(yes ? 0 : 1).check()
}

/** Opens run `id` in `tab` and waits for its pending manager form. */
async function openForm(tab, id) {
  await tab.goto(`${base}/#/runs/${encodeURIComponent(id)}`)
  const form = inputForm(tab)
  await form.locator('button[type="submit"]').waitFor()
  return form
}

/** What a run page shows, to compare two loads of it. */
function pageState(tab) {
  return tab.evaluate(() => ({
    status: document.querySelector("article.run")?.getAttribute("data-run-status"),
    timeline: [...document.querySelectorAll("ol.timeline > li")].map(
      (li) => `${li.getAttribute("data-kind")}:${li.getAttribute("data-key")}:${li.getAttribute("data-status")}`,
    ),
    rejections: [...document.querySelectorAll("li[data-rejection]")].map(
      (li) => `${li.getAttribute("data-rejection")}:${li.getAttribute("data-reason")}`,
    ),
    forms: [...document.querySelectorAll("section.dwf-input-form")].map(
      (f) => `${f.getAttribute("data-input-key")}:${f.getAttribute("data-status")}:${!!f.querySelector('button[type="submit"]')}`,
    ),
  }))
}

/** Clicks `submit` in `form` and returns the ms, measured in the page, from the form's
 * submit event to the first moment `selector` matches (null after 15 s). */
async function timeSubmit(tab, form, selector) {
  await tab.evaluate((selector) => {
    window.__timing = new Promise((resolve) => {
      let t0 = null
      document.addEventListener("submit", () => (t0 ??= performance.now()), { capture: true, once: true })
      const observer = new MutationObserver(() => {
        if (t0 !== null && document.querySelector(selector)) {
          observer.disconnect()
          resolve(performance.now() - t0)
        }
      })
      observer.observe(document.body, { subtree: true, childList: true, attributes: true })
      setTimeout(() => resolve(null), 15_000)
    })
  }, selector)
  await form.locator('button[type="submit"]').click()
  return tab.evaluate(() => window.__timing)
}

function mintToken(runIds, rights) {
  const dwf = process.env.DWF_BIN
  const keys = process.env.DWF_KEYS
  if (!dwf || !keys) throw new Error("set DWF_BIN and DWF_KEYS to mint a client token")
  const namespace = session.namespace.split("/").pop()
  const args = ["token", "client", "--keys", keys, "--namespace", namespace, "--rights", rights, "--ttl", "600"]
  for (const id of runIds) args.push("--run", id)
  return execFileSync(dwf, args, { encoding: "utf8" }).trim()
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

const latencies = { list: [], run: [], form: [], next: [] }

try {
  await scenario("start an expense from the form, answer it wrong then right", async () => {
    await page.goto(`${base}/#/`)
    const form = page.locator('details[data-workflow="expense-approval"]')
    await openDetails(form)
    await form.locator("#start-expense-approval_report_id").fill("E2E-FORM-1")
    await form.locator("#start-expense-approval_items_0_amount").fill("420")
    await form.locator('button[type="submit"]').click()
    const started = form.locator('[data-outcome="accepted"] a.started-run')
    await started.waitFor()
    const id = (await started.innerText()).trim()
    if (!id.startsWith(session.run_prefix)) throw new Error(`unexpected run id ${id}`)
    // A fresh form after a start: a second click cannot start the same run again.
    const left = await form.locator("#start-expense-approval_report_id").inputValue()
    if (left !== "") throw new Error(`the start form still holds ${left}`)

    const task = page.locator(`#tasks li[data-run-id="${id}"][data-status="waiting"]`)
    await task.waitFor()
    const prompt = await task.locator(".prompt").innerText()
    if (!prompt.includes("E2E-FORM-1 (420.00 EUR)")) throw new Error(`task prompt: ${prompt}`)
    await shot("inbox")

    await task.locator(".task-link a").click()
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
    // Nothing chosen for `approved`: the form asks for a choice and sends nothing (an
    // untouched yes-or-no field is not an answer of "no").
    await input.locator('button[type="submit"]').click()
    await input.locator(".panel-danger, .error-detail").first().waitFor()
    await page.waitForTimeout(300)
    if ((await page.locator("li[data-rejection]").count()) !== 1) throw new Error("an answer without a choice was sent")
    if (await input.locator('[data-outcome="accepted"]').count()) throw new Error("an answer without a choice was accepted")
    await choose(input, true)
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

  await scenario("20 waiting runs in the list plus an open run page: an answer within a second", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => runId(`many${i}`))
    await page.goto(`${base}/#/`)
    await page.locator("#tasks").waitFor()
    await Promise.all(ids.map((id, i) => startExpense(id, `MANY-${i}`)))
    for (const id of ids) await page.locator(`#tasks li[data-run-id="${id}"][data-status="waiting"]`).waitFor()
    await page.waitForTimeout(300)
    const reads = openReads()
    if (reads.histories !== 0 || reads.status > 1) {
      throw new Error(`the list holds ${reads.status} status and ${reads.histories} history reads: ${reads.all.join(", ")}`)
    }
    await shot("inbox-twenty")
    // A second tab on one of the runs: the whole origin's connections now hold the
    // list's read and the run's; the answer must not queue behind them.
    const tab = await newTab()
    try {
      const form = await openForm(tab, ids[0])
      await choose(form, true)
      const ms = await timeSubmit(tab, form, '[data-outcome="accepted"]')
      if (ms === null || ms > 1000) throw new Error(`the answer from the run page took ${ms === null ? "over 15 s" : `${Math.round(ms)} ms`}`)
      console.log(`  run page next to a list of 20: submit -> accepted in ${Math.round(ms)} ms`)
      await tab.locator('article.run[data-run-status="completed"]').waitFor()
    } finally {
      await tab.close()
    }
    // The rest answered from the list's tab, timing the inbox POST until the row shows
    // the run completed in the list.
    for (const id of ids.slice(1)) {
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

  await scenario("two tabs answer at once: one wins, the other is told it was already answered", async () => {
    const id = runId("race")
    await startExpense(id, "RACE")
    const other = await newTab()
    try {
      const forms = [await openForm(page, id), await openForm(other, id)]
      await choose(forms[0], true)
      await choose(forms[1], false)
      await forms[1].locator('input[id$="_comment"]').fill("No.")
      // Both tabs submit at the same instant (one clock on this machine), not one
      // click after the other.
      const at = Date.now() + 300
      for (const tab of [page, other]) {
        await tab.evaluate((at) => {
          const form = document.querySelector('section.dwf-input-form[data-input-key="manager"] form')
          setTimeout(() => form.requestSubmit(), at - Date.now())
        }, at)
      }
      const outcomes = await Promise.all(
        forms.map(async (form) => {
          const shown = form.locator("[data-outcome]")
          await shown.waitFor()
          return { outcome: await shown.getAttribute("data-outcome"), text: await shown.innerText() }
        }),
      )
      // The engine refuses the second answer as already-answered; when the run ended
      // first, as run-finished (it landed before the inbox was closed) or with a 409
      // (after): in every case the person is told the request was already answered.
      const winners = outcomes.filter((o) => o.outcome === "accepted")
      const loser = outcomes.find((o) => o.outcome !== "accepted")
      if (winners.length !== 1 || !loser || !["rejected", "run-ended"].includes(loser.outcome)) {
        throw new Error(`outcomes: ${JSON.stringify(outcomes)}`)
      }
      await (loser === outcomes[0] ? forms[0] : forms[1]).getByText(/^Already answered/).waitFor()
      console.log(`  the second answer: ${loser.outcome}: ${loser.text}`)
      for (const tab of [page, other]) await tab.locator('article.run[data-run-status="completed"]').waitFor()
      await shot("race-tab-1", page)
      await shot("race-tab-2", other)
    } finally {
      await other.close()
    }
  })

  await scenario("a reload mid-run shows the same state", async () => {
    const id = runId("reload")
    await startExpense(id, "RELOAD")
    await openForm(page, id)
    // A schema-invalid answer from elsewhere, so the page has a rejection to show too.
    await post(`${ns}/runs/${id}/inbox`, {
      type: "submission",
      key: `bad-${id}`,
      value: { submission_id: `bad-${id}`, request: "manager", value: { approved: "maybe" } },
      headers: { operation: "insert" },
    })
    await page.locator('li[data-rejection][data-reason="schema-invalid"]').waitFor()
    const before = await pageState(page)
    await page.reload()
    await inputForm(page).locator('button[type="submit"]').waitFor()
    await page.locator('li[data-rejection][data-reason="schema-invalid"]').waitFor()
    const after = await pageState(page)
    if (JSON.stringify(after) !== JSON.stringify(before)) {
      throw new Error(`before the reload ${JSON.stringify(before)}, after ${JSON.stringify(after)}`)
    }
    if (before.status !== "waiting" || !before.forms.includes("manager:pending:true")) {
      throw new Error(`unexpected state ${JSON.stringify(before)}`)
    }
    await shot("run-reloaded")
  })

  await scenario("an answer sent after the run ended is shown as such", async () => {
    const id = runId("late")
    await startExpense(id, "LATE")
    await openForm(page, id)
    // Reloaded with its live reads of this run held, the tab still shows the form after
    // the run has ended, as a tab that lost its connection would.
    const held = []
    let holding = true
    const pattern = `**/runs/${id}/history?*live=*`
    await page.route(pattern, (route) => (holding ? held.push(route) : route.continue()))
    try {
      await page.reload()
      const form = inputForm(page)
      await form.locator('button[type="submit"]').waitFor()
      await post(`${ns}/runs/${id}/inbox`, {
        type: "cancel",
        key: `c-${id}`,
        value: { cancel_id: `c-${id}`, reason: "ended by the test" },
        headers: { operation: "insert" },
      })
      const deadline = Date.now() + STEP_MS
      for (;;) {
        const head = await fetch(`${ns}/runs/${id}/history`, { method: "HEAD", headers: auth })
        if (head.headers.get("Stream-Closed") === "true") break
        if (Date.now() > deadline) throw new Error("the cancelled run's history was not closed")
        await new Promise((ok) => setTimeout(ok, 50))
      }
      await choose(form, true)
      await form.locator('button[type="submit"]').click()
      const shown = form.locator('[data-outcome="run-ended"]')
      await shown.waitFor()
      if (!(await shown.innerText()).includes("The run has ended")) throw new Error(await shown.innerText())
      await shot("run-ended-answer")
    } finally {
      holding = false
      await page.unroute(pattern)
      for (const route of held) await route.continue().catch(() => {})
    }
    // Once its reads go through, the page shows the run cancelled and the form closed.
    await page.locator('article.run[data-run-status="cancelled"]').waitFor()
    await inputForm(page).locator(".dwf-closed").waitFor()
  })

  await scenario("a run page opened before the run exists loads once it does", async () => {
    const id = runId("early")
    await page.goto(`${base}/#/runs/${id}`)
    await page.getByText(`Waiting for run ${id}`).waitFor()
    await page.waitForTimeout(1500)
    if (!(await page.getByText(`Waiting for run ${id}`).isVisible())) {
      throw new Error(`the page gave up: ${await page.innerText("main")}`)
    }
    await startExpense(id, "EARLY")
    await inputForm(page).locator('button[type="submit"]').waitFor()
    await page.locator(`article.run[data-run-id="${id}"][data-run-status="waiting"]`).waitFor()
  })

  await scenario("a page holding a token for one run can neither read nor answer another", async () => {
    const mine = runId("mine")
    const theirs = runId("theirs")
    await startExpense(mine, "MINE")
    await startExpense(theirs, "THEIRS")
    const token = mintToken([mine], "read,submit")
    const tab = await newTab()
    try {
      await tab.route("**/ui/session.json", (route) =>
        route.fulfill({ json: { ...session, token, expires_at: Math.floor(Date.now() / 1000) + 600 } }),
      )
      await openForm(tab, mine)
      await tab.goto(`${base}/#/runs/${theirs}`)
      const refused = tab.locator('p.error[role="alert"]')
      await refused.waitFor()
      const said = await refused.innerText()
      if (!said.includes(`Could not open run ${theirs}`) || !/403|not allowed|forbidden/i.test(said)) {
        throw new Error(`the page shows: ${said}`)
      }
      await shot("token-other-run", tab)
      const tried = await tab.evaluate(
        async ({ ns, theirs, token }) => {
          const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }
          const read = await fetch(`${ns}/runs/${theirs}/history?offset=-1`, { headers })
          const sid = `s-${crypto.randomUUID()}`
          const body = [{ type: "submission", key: sid, value: { submission_id: sid, request: "manager", value: { approved: true } }, headers: { operation: "insert" } }]
          const answer = await fetch(`${ns}/runs/${theirs}/inbox`, { method: "POST", headers, body: JSON.stringify(body) })
          return [read.status, answer.status]
        },
        { ns: session.namespace, theirs, token },
      )
      if (tried.join() !== "403,403") throw new Error(`reading and answering another run gave ${tried.join(", ")}`)
      // The other run is untouched: still waiting, nothing in its inbox.
      const inbox = await fetch(`${ns}/runs/${theirs}/inbox?offset=-1`, { headers: auth })
      const messages = inbox.ok ? await inbox.json() : []
      if (messages.length) throw new Error(`the other run's inbox holds ${JSON.stringify(messages)}`)
      // Its own run: answered from the page.
      await tab.goto(`${base}/#/runs/${mine}`)
      const own = await openForm(tab, mine)
      await choose(own, true)
      await own.locator('button[type="submit"]').click()
      await own.locator('[data-outcome="accepted"]').waitFor()
    } finally {
      await tab.close()
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
      // One read of this run's history; the page left a moment ago may still hold its
      // own for the provider's short close delay.
      const own = openReads().all.filter((path) => path.endsWith(`/runs/${id}/history`))
      if (own.length > 1) throw new Error(`the run page holds ${own.length} reads of its history`)
      await page.waitForTimeout(600)
      const left = openReads().all.filter((path) => !path.endsWith(`/runs/${id}/history`))
      if (left.length) throw new Error(`reads of pages left behind are still open: ${left.join(", ")}`)
    }
  })

  await scenario("a flooded run: the form says a refused answer leaves no record", async () => {
    // 1,001 junk answers: the engine records 1,000 rejections (SEC-034), and
    // past 1,000 submissions refuses every answer (INPUT-033), so a valid one is refused
    // without a record. The form must say so, not ask to send it again forever.
    const id = runId("flood")
    await startExpense(id, "FLOOD")
    await page.goto(`${base}/#/runs/${id}`)
    const form = inputForm(page)
    await form.locator('button[type="submit"]').waitFor()
    const status = await page.evaluate(
      async ({ ns, id, token }) => {
        const body = Array.from({ length: 1001 }, (_, i) => ({
          type: "submission",
          key: `flood-${i}`,
          value: { submission_id: `flood-${i}`, request: "manager", value: { approved: "maybe" } },
          headers: { operation: "insert" },
        }))
        const headers = { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) }
        // In appends of 16, the most the stream server takes from a client at once.
        for (let i = 0; i < body.length; i += 16) {
          const part = JSON.stringify(body.slice(i, i + 16))
          const response = await fetch(`${ns}/runs/${id}/inbox`, { method: "POST", headers, body: part })
          if (!response.ok) return response.status
        }
        return 200
      },
      { ns: session.namespace, id, token: session.token },
    )
    if (status >= 300) throw new Error(`the flood POST: ${status}`)
    await page.locator('ul.rejections[data-count="1000"]').waitFor({ timeout: 30_000 })
    // The newest first, and only the latest few of them.
    const shown = await page.locator("li[data-rejection]").evaluateAll((items) => items.map((li) => li.getAttribute("data-rejection")))
    if (shown.length !== 20) throw new Error(`the list shows ${shown.length} rejections`)
    await form.locator('[role="note"]').waitFor()
    await choose(form, true)
    await form.locator('button[type="submit"]').click()
    const said = form.locator('[data-outcome="unrecorded"]')
    await said.waitFor({ timeout: 15_000 })
    if (!(await said.innerText()).includes("No record of this answer")) throw new Error(await said.innerText())
    if ((await page.locator("article.run").getAttribute("data-run-status")) !== "waiting") throw new Error("the run moved")
    await shot("flooded-run")
  })

  await scenario("a prompt with HTML is shown as text", async () => {
    const id = runId("html")
    // HTML, and a right-to-left override that would show "approve" reversed.
    const evil = `<img src=x onerror="window.__xss=1"><b>bold</b> pay \u202Eevorppa`
    const expected = evil.replace("\u202E", "[U+202E]")
    await startExpense(id, evil)
    await page.goto(`${base}/#/`)
    const task = page.locator(`#tasks li[data-run-id="${id}"]`)
    await task.waitFor()
    const listed = await task.locator(".prompt").innerText()
    if (!listed.includes(expected)) throw new Error(`list prompt: ${listed}`)
    if ((await task.locator("img, b").count()) !== 0) throw new Error("the list rendered HTML from a prompt")
    await page.goto(`${base}/#/runs/${id}`)
    const prompt = page.locator('section.dwf-input-form[data-input-key="manager"] .dwf-prompt')
    await prompt.waitFor()
    const shown = await prompt.innerText()
    if (!shown.includes(expected)) throw new Error(`run page prompt: ${shown}`)
    const raw = await page.evaluate(() => document.body.innerText.includes("\u202E"))
    if (raw) throw new Error("a directional override reached the page as is")
    if ((await page.locator("article.run img, article.run b").count()) !== 0) {
      throw new Error("the run page rendered HTML from a prompt")
    }
    if (await page.evaluate(() => "__xss" in window)) throw new Error("a script from a prompt ran")
    await shot("run-html-prompt")
  })

  await scenario("a run this page's token may not read is listed without a link", async () => {
    const other = `other-${Date.now().toString(36)}`
    const token = mintToken([other], "start")
    const response = await fetch(`${ns}/index`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({
        type: "start",
        key: other,
        value: { run_id: other, workflow: "expense-approval", input: { report_id: "OTHER", items: [{ amount: 500 }] } },
        headers: { operation: "insert" },
      }),
    })
    if (!response.ok) throw new Error(`starting ${other}: ${response.status}`)
    await page.goto(`${base}/#/`)
    const row = page.locator(`#tasks li[data-run-id="${other}"]`)
    await row.waitFor()
    if ((await row.locator("a").count()) !== 0) throw new Error("a run the token cannot read is a link")
    await row.locator("[data-not-yours]").waitFor()
  })

  await scenario("on a 375 px wide screen nothing is wider than the screen", async () => {
    const id = runId("narrow")
    await startExpense(id, "NARROW-A-RATHER-LONG-REPORT-ID-THAT-MUST-WRAP-0123456789")
    const phone = await newTab()
    try {
      await phone.setViewportSize({ width: 375, height: 800 })
      for (const at of [`${base}/#/`, `${base}/#/runs/${id}`]) {
        await phone.goto(at)
        await phone.locator(at.endsWith("/#/") ? "#tasks" : 'section.dwf-input-form button[type="submit"]').waitFor()
        if (at.endsWith("/#/")) await openDetails(phone.locator('details[data-workflow="expense-approval"]'))
        const width = await phone.evaluate(() => document.documentElement.scrollWidth)
        if (width > 375) throw new Error(`${at} is ${width} px wide`)
      }
      await shot("narrow-run", phone)
    } finally {
      await phone.close()
    }
  })

  await scenario("another site cannot show the app in a frame", async () => {
    // Not watched: the refusal is a console error, and it is the point.
    // The other site: a page of its own origin (another port on 127.0.0.1) that frames
    // the app. Without the app's headers the frame shows it (checked by hand).
    const site = createServer((_, response) => {
      response.writeHead(200, { "Content-Type": "text/html" })
      response.end(`<iframe id="app" src="${base}/#/" width="800" height="600"></iframe>`)
    })
    await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve))
    const framer = await context.newPage()
    try {
      await framer.goto(`http://127.0.0.1:${site.address().port}/`)
      await framer.waitForTimeout(2000)
      if (framer.frames().length !== 2) throw new Error(`${framer.frames().length} frames`)
      const shown = await framer.frames()[1].locator("#tasks, .app").count().catch(() => 0)
      if (shown) throw new Error(`the app shows in another site's frame (${framer.frames()[1].url()})`)
    } finally {
      await framer.close()
      site.close()
    }
  })

  await scenario("latency: the form's submit to the next step shown, over 20 runs", async () => {
    for (let i = 0; i < 20; i++) {
      const id = runId(`lat${i}`)
      await startExpense(id, `LAT-${i}`)
      const form = await openForm(page, id)
      await choose(form, true)
      const ms = await timeSubmit(page, form, 'li[data-kind="step"][data-key="pay"][data-status="completed"]')
      if (ms === null) throw new Error(`run ${id}: the next step did not show within 15 s`)
      latencies.next.push(ms)
    }
  })
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
}

/** Nearest-rank percentile. */
function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]
}
const fmt = (values) =>
  values.length
    ? `median ${Math.round(median(values))} ms, p95 ${Math.round(percentile(values, 95))} ms (n=${values.length}, min ${Math.round(Math.min(...values))}, max ${Math.round(Math.max(...values))})`
    : "no samples"
console.log(`latency inbox POST -> run row visible in the task list: ${fmt(latencies.list)}`)
console.log(`latency inbox POST -> input row visible on the run page: ${fmt(latencies.run)}`)
console.log(`latency form submit click -> run output visible: ${fmt(latencies.form)}`)
console.log(`latency form submit -> next step shown on the run page: ${fmt(latencies.next)}`)
process.exit(failed ? 1 : 0)
