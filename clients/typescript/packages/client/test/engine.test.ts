// @durable-workflows/client against a real engine (`dwf serve --memory`, started by
// test/dwf-server.ts), with the client token that /ui/session.json hands out.

import { beforeAll, describe, expect, inject, it } from "vitest"
import {
  AccessError,
  cancelRun,
  formSchema,
  visibleText,
  newId,
  openRun,
  openRunList,
  startRun,
  submitInput,
  type RunDB,
} from "../src/index.js"

interface Session {
  namespace: string
  status_stream: string
  run_prefix: string
  token: string
  workflows: { name: string; input_schema: unknown }[]
}

let base = ""
let session: Session
let ns = ""

beforeAll(async () => {
  base = inject("dwfUrl")
  session = (await (await fetch(`${base}/ui/session.json`)).json()) as Session
  ns = `${base}${session.namespace}`
})

const REPORT = { report_id: "R-17", items: [{ amount: 900 }, { amount: 350 }] }

function runId(): string {
  return newId(`${session.run_prefix}t`)
}

async function waitFor<T>(probe: () => T | undefined | null | false, what: string, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((ok) => setTimeout(ok, 20))
  }
}

async function historyClosed(id: string): Promise<void> {
  const url = `${ns}/runs/${id}/history`
  const deadline = Date.now() + 20_000
  for (;;) {
    const head = await fetch(url, { method: "HEAD", headers: { Authorization: `Bearer ${session.token}` } })
    if (head.headers.get("Stream-Closed") === "true") return
    if (Date.now() > deadline) throw new Error(`${url} was not closed`)
    await new Promise((ok) => setTimeout(ok, 50))
  }
}

describe("a run of expense-approval, end to end", () => {
  let id = ""
  let db: RunDB

  it("openRun waits for a history that does not exist yet, startRun is accepted", async () => {
    id = runId()
    const opening = openRun(ns, id, { token: session.token, timeoutMs: 20_000 })
    await new Promise((ok) => setTimeout(ok, 300)) // the history is a 404 for now
    const started = await startRun(ns, { workflow: "expense-approval", input: REPORT, runId: id }, { token: session.token })
    expect(started).toEqual({ outcome: "accepted", id })
    db = await opening
    const run = db.collections.run.get(id)
    expect(run?.workflow).toBe("expense-approval")
    expect(run?.key).toBe(id)
    expect(run?.input).toEqual(REPORT)
  })

  it("shows the pending input as an input row with its schema", async () => {
    const manager = await waitFor(() => {
      const row = db.collections.input.get("manager")
      return row?.status === "pending" ? row : undefined
    }, "the manager input")
    expect(manager.prompt).toBe("Approve expense report R-17 (1250.00 EUR)?")
    const schema = formSchema(manager.schema)
    expect(schema.required).toEqual(["approved"])
    expect(db.collections.step.get("sum")?.result).toBe(1250)
  })

  it("a schema-invalid answer is rejected with the engine's reason and message", async () => {
    const outcome = await submitInput(db, { request: "manager", value: { approved: "yes" } })
    expect(outcome.outcome).toBe("rejected")
    if (outcome.outcome !== "rejected") return
    expect(outcome.reason).toBe("schema-invalid")
    expect(outcome.message).toMatch(/manager/)
    expect(db.collections.submission.get(outcome.id)?.reason).toBe("schema-invalid")
    expect(db.collections.input.get("manager")?.status).toBe("pending")
  })

  let answered = ""

  it("a valid answer is accepted, and sending it again with the same id changes nothing", async () => {
    const submissionId = newId("s")
    answered = submissionId
    const outcome = await submitInput(db, { request: "manager", value: { approved: true, comment: "ok" }, submissionId })
    expect(outcome).toEqual({ outcome: "accepted", id: submissionId })
    const again = await submitInput(db, { request: "manager", value: { approved: true, comment: "ok" }, submissionId })
    expect(again).toEqual({ outcome: "accepted", id: submissionId })
    const input = db.collections.input.get("manager")
    expect(input?.status).toBe("received")
    expect(input?.submission_id).toBe(submissionId)
    const run = await waitFor(() => {
      const row = db.collections.run.get(id)
      return row?.status === "completed" ? row : undefined
    }, "the run to complete")
    expect(run.output).toMatchObject({ report_id: "R-17", total: 1250, decision: { approved: true, by: "manager" } })
  })

  it("a submission to the ended run resolves to run-ended (409 with Stream-Closed)", async () => {
    await historyClosed(id)
    const outcome = await submitInput(db, { request: "manager", value: { approved: false } })
    expect(outcome.outcome).toBe("run-ended")
    // A retry of the answer the run took before it ended is still reported accepted.
    const retried = await submitInput(db, { request: "manager", value: { approved: true, comment: "ok" }, submissionId: answered })
    expect(retried).toEqual({ outcome: "accepted", id: answered })
    const cancel = await cancelRun(db, { reason: "too late" })
    expect(cancel.outcome).toBe("run-ended")
    db.close()
  })
})

describe("the run-status stream", () => {
  it("openRunList sees a run's row go from waiting to completed, on one connection", async () => {
    const list = await openRunList(ns, { token: session.token })
    try {
      const id = runId()
      await startRun(ns, { workflow: "expense-approval", input: { ...REPORT, report_id: "R-18" }, runId: id }, { token: session.token })
      const waiting = await waitFor(() => {
        const row = list.collections.runs.get(id)
        return row?.status === "waiting" ? row : undefined
      }, "the waiting row")
      expect(waiting.key).toBe(id)
      expect(waiting.inputs.map((i) => i.key)).toEqual(["manager"])
      expect(waiting.inputs[0]?.prompt).toBe("Approve expense report R-18 (1250.00 EUR)?")
      // Submit without a RunDB: the command opens the history for the wait and closes it.
      const outcome = await submitInput(
        { namespace: ns, runId: id, token: session.token },
        { request: "manager", value: { approved: true } },
      )
      expect(outcome.outcome).toBe("accepted")
      const done = await waitFor(() => {
        const row = list.collections.runs.get(id)
        return row?.status === "completed" ? row : undefined
      }, "the completed row")
      expect(done.inputs).toEqual([])
      expect(done.finished_at).not.toBeNull()
    } finally {
      list.close()
    }
  })
})

describe("cancel and refusals", () => {
  it("cancelRun is accepted and the run ends cancelled", async () => {
    const id = runId()
    await startRun(ns, { workflow: "onboarding-wizard", input: { tenant: "acme" }, runId: id }, { token: session.token })
    const db = await openRun(ns, id, { token: session.token })
    try {
      const outcome = await cancelRun(db, { reason: "changed my mind" })
      expect(outcome.outcome).toBe("accepted")
      const run = await waitFor(() => {
        const row = db.collections.run.get(id)
        return row?.status === "cancelled" ? row : undefined
      }, "the cancelled run")
      expect(run.error?.type).toBe("Cancelled")
      expect(run.error?.details).toEqual({ cancel_id: outcome.id })
    } finally {
      db.close()
    }
  })

  it("a second start of a run id with another input is rejected as run-id-taken", async () => {
    const id = runId()
    const first = await startRun(ns, { workflow: "agent-confirm", input: { task: "one" }, runId: id }, { token: session.token })
    expect(first.outcome).toBe("accepted")
    const second = await startRun(ns, { workflow: "agent-confirm", input: { task: "two" }, runId: id }, { token: session.token })
    expect(second.outcome).toBe("rejected")
  })

  it("a run outside the token's prefix is refused at once, not retried", async () => {
    await expect(
      startRun(ns, { workflow: "agent-confirm", input: { task: "x" }, runId: "other-1" }, { token: session.token }),
    ).rejects.toBeInstanceOf(AccessError)
    await expect(openRun(ns, "other-1", { token: session.token })).rejects.toBeInstanceOf(AccessError)
  })

  it("openRun gives up after its timeout on a run nobody starts", async () => {
    const started = Date.now()
    await expect(openRun(ns, runId(), { token: session.token, timeoutMs: 600 })).rejects.toThrow(/does not exist/)
    expect(Date.now() - started).toBeLessThan(5_000)
  })
})

describe("formSchema", () => {
  it("never keeps a remote $ref, keeps local ones, maps boolean schemas", () => {
    const report = { remoteRefs: [] as string[] }
    const schema = formSchema(
      {
        $id: "https://evil.example/s.json",
        type: "object",
        properties: {
          a: { $ref: "https://evil.example/a.json" },
          b: { $ref: "#/$defs/b" },
          c: { enum: [{ $ref: "kept: data" }] },
        },
        $defs: { b: { type: "string" } },
      } as never,
      report,
    )
    expect(report.remoteRefs).toEqual(["https://evil.example/a.json"])
    expect(JSON.stringify(schema)).not.toContain("evil.example")
    expect(schema.properties?.b).toEqual({ $ref: "#/$defs/b" })
    expect(formSchema(true)).toEqual({})
    expect(formSchema(false)).toEqual({ not: {} })
  })
})

describe("visibleText", () => {
  it("shows directional controls as markers and leaves other text alone", () => {
    expect(visibleText("pay \u202Eevorppa")).toBe("pay [U+202E]evorppa")
    expect(visibleText("a\u2066b\u2069c\u200Fd\u061C")).toBe("a[U+2066]b[U+2069]c[U+200F]d[U+061C]")
    expect(visibleText("שלום, hello, مرحبا")).toBe("שלום, hello, مرحبا")
  })

  it("is applied to the titles and descriptions a form shows, not to values", () => {
    const schema = formSchema({
      type: "object",
      title: "Approve \u202Eyaw",
      properties: { a: { type: "string", description: "\u202Dx", enum: ["\u202E"] } },
    } as never)
    expect(schema.title).toBe("Approve [U+202E]yaw")
    const a = schema.properties?.a as { description: string; enum: string[] }
    expect(a.description).toBe("[U+202D]x")
    expect(a.enum).toEqual(["\u202E"])
  })
})
