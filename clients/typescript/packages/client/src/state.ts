// StreamDB state schemas: a run's history and the namespace's run-status stream.

import { createStateSchema } from "@durable-streams/state/db"
import type { CollectionDefinition, StreamDB } from "@durable-streams/state/db"
import type {
  InputRow,
  PatchRow,
  RecordRow,
  RunRow,
  RunStatusRow,
  SleepRow,
  StepRow,
  SubmissionRow,
} from "./generated/rows.js"

type RowSchema<T> = CollectionDefinition<T>["schema"]

/** A Standard Schema that takes every object as it is. The engine is the only writer
 * of a history and of the status stream, and it validates what it writes; a collection
 * only needs the row type. (TanStack DB checks a schema on local mutations, which
 * these read-only collections never have.) */
export function rowSchema<T extends object>(entity: string): RowSchema<T> {
  return {
    "~standard": {
      version: 1,
      vendor: "durable-workflows",
      validate: (value: unknown) =>
        typeof value === "object" && value !== null && !Array.isArray(value)
          ? { value: value as T }
          : { issues: [{ message: `a ${entity} row is a JSON object` }] },
    },
  }
}

/** The collections of a run's history (spec/model.md, "Materialising history in a
 * browser"). Every primary key is `key`: StreamDB writes the message key into that
 * field, and no protocol value has a field of that name. */
export const historyState = createStateSchema({
  run: { schema: rowSchema<RunRow>("run"), type: "run", primaryKey: "key" },
  step: { schema: rowSchema<StepRow>("step"), type: "step", primaryKey: "key" },
  sleep: { schema: rowSchema<SleepRow>("sleep"), type: "sleep", primaryKey: "key" },
  input: { schema: rowSchema<InputRow>("input"), type: "input", primaryKey: "key" },
  submission: {
    schema: rowSchema<SubmissionRow>("submission"),
    type: "submission",
    primaryKey: "key",
  },
  record: { schema: rowSchema<RecordRow>("record"), type: "record", primaryKey: "key" },
  patch: { schema: rowSchema<PatchRow>("patch"), type: "patch", primaryKey: "key" },
})

/** The one collection of the run-status stream `{ns}/status`: a row per run, keyed by
 * run id, every message an `update` (MODEL-041). */
export const statusState = createStateSchema({
  runs: { schema: rowSchema<RunStatusRow>("run-status"), type: "run-status", primaryKey: "key" },
})

export type HistoryState = typeof historyState
export type StatusState = typeof statusState

/** A preloaded StreamDB of one run's history. */
export type RunDB = StreamDB<HistoryState>
/** A preloaded StreamDB of the run-status stream. */
export type RunListDB = StreamDB<StatusState>

/** Terminal run statuses: nothing of such a run changes any more. */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set(["completed", "failed", "cancelled"])

export function isTerminal(status: string | undefined | null): boolean {
  return status != null && TERMINAL_STATUSES.has(status)
}
