// Compile-time checks of the row types: `tsc -p typetests --noEmit` passes only if
// every line marked @ts-expect-error is an error (an unused marker is itself an error),
// so a misspelt field, a wrong status or a missing `key` cannot compile.

import type { RJSFSchema } from "@rjsf/utils"
import {
  formSchema,
  type InputRow,
  type Outcome,
  type RunDB,
  type RunListDB,
  type RunRow,
  type RunStatusRow,
  type StepRow,
  type SubmissionRow,
} from "../src/index.js"

declare const run: RunRow
declare const step: StepRow
declare const input: InputRow
declare const status: RunStatusRow
declare const db: RunDB
declare const list: RunListDB
declare const outcome: Outcome

// Known fields read with their types.
const runStatus: "running" | "sleeping" | "waiting" | "completed" | "failed" | "cancelled" = run.status
const key: string = run.key
const attempt: number = step.attempt
const finished: string | null = step.finished_at
const prompt: string | null = input.prompt
const history: number = status.history_length
const pendingKey: string | undefined = status.inputs[0]?.key
const output: unknown = run.output
void [runStatus, key, attempt, finished, prompt, history, pendingKey, output]

// @ts-expect-error a misspelt field of a run row
void run.stauts
// @ts-expect-error a misspelt field of a step row
void step.attempts
// @ts-expect-error a misspelt field of an input row
void input.promt
// @ts-expect-error a misspelt field of a run-status row
void status.waitingFor
// @ts-expect-error a field of another entity
void step.wake_at
// @ts-expect-error a status the protocol does not have
const wrongStatus: RunRow["status"] = "done"
void wrongStatus
// @ts-expect-error any JSON value is unknown, not any
void run.output.total

// Collections of a StreamDB hold the same row types.
const fromDb: RunRow | undefined = db.collections.run.get("exp-1")
const fromList: RunStatusRow | undefined = list.collections.runs.get("exp-1")
void [fromDb, fromList]
// @ts-expect-error a collection the history does not have
void db.collections.steps
// @ts-expect-error a misspelt field read through a collection
void db.collections.sleep.get("s")?.wakeAt

// A rejection row: reason is a closed set.
declare const rejection: SubmissionRow
const reason: "schema-invalid" | "already-answered" | "expired" | "run-finished" | "malformed" | "too-large" =
  rejection.reason
void reason
// @ts-expect-error not a rejection reason
const notAReason: SubmissionRow["reason"] = "late"
void notAReason

// Outcomes narrow on `outcome`.
if (outcome.outcome === "rejected") {
  const why: string = outcome.message
  void why
}
// @ts-expect-error reason exists only on a rejection
void outcome.reason

// An input's schema is a JSON Schema type form libraries take, once formSchema() has
// made it safe (boolean schemas mapped, remote $refs removed).
const forForm: RJSFSchema = formSchema(input.schema)
void forForm
if (typeof input.schema === "object") {
  const required: string[] | undefined = input.schema.required
  void required
  // @ts-expect-error a misspelt JSON Schema keyword
  void input.schema.requird
}

// A complete row literal: every field is required, and no unknown field is allowed.
const literal: RunRow = {
  key: "exp-1",
  run_id: "exp-1",
  workflow: "expense-approval",
  protocol: "1.0",
  input: null,
  status: "running",
  started_at: "2026-11-24T10:00:00.000Z",
  waiting_for: null,
  output: null,
  error: null,
  finished_at: null,
}
void literal
// @ts-expect-error an unknown field in a row literal
const extra: StepRow = { ...step, atempt: 2 }
void extra
