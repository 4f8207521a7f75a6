// One run of expense-approval through @durable-workflows/client's published build,
// with nothing but the runtime's own fetch: run by Node, Deno and Bun
// (packages/client/test/runtimes.test.ts) against a real `dwf serve`.
//
//   node|bun client-smoke.mjs BASE_URL
//   deno run --allow-net --allow-env --allow-read client-smoke.mjs BASE_URL
//
// Prints "ok RUNTIME RUN_ID" and exits 0, or prints what went wrong and exits 1.

import { newId, openRun, openRunList, startRun, submitInput } from "@durable-workflows/client"

const runtime = globalThis.Deno ? "deno" : globalThis.Bun ? "bun" : "node"
const base = (globalThis.Deno ? globalThis.Deno.args : globalThis.process.argv.slice(2))[0]
if (!base) throw new Error("usage: client-smoke.mjs BASE_URL")

async function until(probe, what, ms = 20_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`${runtime}: timed out waiting for ${what}`)
    await new Promise((ok) => setTimeout(ok, 20))
  }
}

function expect(actual, expected, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  if (a !== e) throw new Error(`${runtime}: ${what}: expected ${e}, got ${a}`)
}

const session = await (await fetch(`${base}/ui/session.json`)).json()
const ns = `${base}${session.namespace}`
const token = session.token
const id = newId(`${session.run_prefix}${runtime}`)

// openRun first: the history does not exist yet, and openRun waits for it.
const opening = openRun(ns, id, { token, timeoutMs: 20_000 })
const list = await openRunList(ns, { token, timeoutMs: 20_000 })
const started = await startRun(
  ns,
  { workflow: "expense-approval", input: { report_id: `RT-${runtime}`, items: [{ amount: 700 }] }, runId: id },
  { token },
)
expect(started, { outcome: "accepted", id }, "startRun")
const db = await opening
const pending = await until(
  () => [...db.collections.input.values()].find((row) => row.key === "manager" && row.status === "pending"),
  "the manager's input row",
)
expect(pending.schema.required, ["approved"], "the input's schema")

const wrong = await submitInput(db, { request: "manager", value: { approved: "yes" } }, { timeoutMs: 20_000 })
expect([wrong.outcome, wrong.reason], ["rejected", "schema-invalid"], "a schema-invalid answer")
const right = await submitInput(db, { request: "manager", value: { approved: true } }, { timeoutMs: 20_000 })
expect(right.outcome, "accepted", "a valid answer")

const run = await until(() => {
  const row = db.collections.run.get(id)
  return row?.status === "completed" ? row : undefined
}, "the run to complete")
expect(run.output.payment, { paid: true, report_id: `RT-${runtime}`, amount: 700 }, "the run's output")
await until(() => list.collections.runs.get(id)?.status === "completed", "the status row to say completed")

const late = await submitInput(db, { request: "manager", value: { approved: false } }, { timeoutMs: 20_000 })
expect(late.outcome, "run-ended", "an answer after the end")

db.close()
list.close()
console.log(`ok ${runtime} ${id}`)
// Deno and Bun keep the process alive while a fetch body is still referenced.
globalThis.Deno ? globalThis.Deno.exit(0) : globalThis.process.exit(0)
