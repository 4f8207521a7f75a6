// Live views of a run and of the run list, on TanStack DB's useLiveQuery.

import { useCallback } from "react"
import { eq, inArray, useLiveQuery } from "@tanstack/react-db"
import {
  cancelRun,
  isTerminal,
  startRun,
  submitInput,
  type CancelArgs,
  type CommandOptions,
  type InputRow,
  type Outcome,
  type PatchRow,
  type RecordRow,
  type RunRow,
  type RunStatus,
  type RunStatusRow,
  type SleepRow,
  type StartArgs,
  type StartOutcome,
  type StepRow,
  type SubmissionRow,
  type SubmitArgs,
} from "@durable-workflows/client"
import { useRunDB, useRunListDB, useWorkflows } from "./provider.js"

export interface RunView {
  /** `loading` until the history exists and has loaded (a just-started run has none
   * yet: the hook waits for it), `error` if it could not be opened. */
  status: "loading" | "ready" | "error"
  error: unknown
  /** The run row: status, waiting_for, output, error. */
  run: RunRow | undefined
  /** Ordered by position (`seq`). */
  steps: StepRow[]
  sleeps: SleepRow[]
  inputs: InputRow[]
  records: RecordRow[]
  patches: PatchRow[]
  /** Rejected submissions (and refused cancels), oldest first. */
  submissions: SubmissionRow[]
}

/**
 * A run's history as live rows: the run row and its steps, sleeps, inputs, records,
 * patches and rejected submissions. Shares one connection with every other hook of
 * the same run under the provider.
 */
export function useRun(runId: string | null | undefined): RunView {
  const opened = useRunDB(runId)
  const db = opened.db
  const id = opened.instance ?? 0
  const run = useLiveQuery({
    queryKey: ["dwf", id, "run"],
    query: (q) => (db ? q.from({ run: db.collections.run }) : undefined),
  })
  const steps = useLiveQuery({
    queryKey: ["dwf", id, "step"],
    query: (q) => (db ? q.from({ step: db.collections.step }).orderBy(({ step }) => step.seq) : undefined),
  })
  const sleeps = useLiveQuery({
    queryKey: ["dwf", id, "sleep"],
    query: (q) => (db ? q.from({ sleep: db.collections.sleep }).orderBy(({ sleep }) => sleep.seq) : undefined),
  })
  const inputs = useLiveQuery({
    queryKey: ["dwf", id, "input"],
    query: (q) => (db ? q.from({ input: db.collections.input }).orderBy(({ input }) => input.seq) : undefined),
  })
  const records = useLiveQuery({
    queryKey: ["dwf", id, "record"],
    query: (q) => (db ? q.from({ record: db.collections.record }).orderBy(({ record }) => record.seq) : undefined),
  })
  const patches = useLiveQuery({
    queryKey: ["dwf", id, "patch"],
    query: (q) => (db ? q.from({ patch: db.collections.patch }).orderBy(({ patch }) => patch.seq) : undefined),
  })
  const submissions = useLiveQuery({
    queryKey: ["dwf", id, "submission"],
    query: (q) =>
      db
        ? q.from({ submission: db.collections.submission }).orderBy(({ submission }) => submission.rejected_at)
        : undefined,
  })
  const runRows = run.data ?? []
  return {
    status: opened.status,
    error: opened.error,
    run: runRows.find((row) => row.key === runId) ?? runRows[0],
    steps: steps.data ?? [],
    sleeps: sleeps.data ?? [],
    inputs: inputs.data ?? [],
    records: records.data ?? [],
    patches: patches.data ?? [],
    submissions: submissions.data ?? [],
  }
}

export interface PendingInputsView {
  status: "loading" | "ready" | "error"
  error: unknown
  /** The input rows with status `pending`, by position; empty once the run has ended
   * (a request of an ended run was abandoned, CANCEL-008). */
  inputs: InputRow[]
}

/**
 * The inputs a run waits for, from its `input` rows (status `pending`), never from the
 * run row's `waiting_for`: StreamDB applies one collection after another, so a run row
 * can name a request whose input row has not arrived yet.
 */
export function usePendingInputs(runId: string | null | undefined): PendingInputsView {
  const opened = useRunDB(runId)
  const db = opened.db
  const id = opened.instance ?? 0
  const pending = useLiveQuery({
    queryKey: ["dwf", id, "pending"],
    query: (q) =>
      db
        ? q
            .from({ input: db.collections.input })
            .where(({ input }) => eq(input.status, "pending"))
            .orderBy(({ input }) => input.seq)
        : undefined,
  })
  const run = useLiveQuery({
    queryKey: ["dwf", id, "run"],
    query: (q) => (db ? q.from({ run: db.collections.run }) : undefined),
  })
  const ended = (run.data ?? []).some((row) => isTerminal(row.status))
  return { status: opened.status, error: opened.error, inputs: ended ? [] : (pending.data ?? []) }
}

export interface RunsFilter {
  /** Only runs with this status (or one of these). */
  status?: RunStatus | readonly RunStatus[]
  /** Only runs of this workflow. */
  workflow?: string
}

export interface RunsView {
  status: "loading" | "ready" | "error"
  error: unknown
  /** Newest first (by `started_at`). */
  runs: RunStatusRow[]
}

/**
 * Runs of the namespace from the run-status stream: one connection for the whole list,
 * however many runs it shows (a history per run would take one connection each, and a
 * browser has six per origin over HTTP/1.1). Needs the `list` right.
 */
export function useRuns(filter: RunsFilter = {}): RunsView {
  const opened = useRunListDB()
  const db = opened.db
  const id = opened.instance ?? 0
  const statuses = filter.status === undefined ? undefined : ([] as RunStatus[]).concat(filter.status)
  const workflow = filter.workflow
  const result = useLiveQuery({
    queryKey: ["dwf", id, "runs", statuses?.join(",") ?? "*", workflow ?? "*"],
    query: (q) => {
      if (!db) return undefined
      let query = q.from({ row: db.collections.runs })
      if (statuses) query = query.where(({ row }) => inArray(row.status, statuses))
      if (workflow !== undefined) query = query.where(({ row }) => eq(row.workflow, workflow))
      return query.orderBy(({ row }) => row.started_at, "desc")
    },
  })
  return { status: opened.status, error: opened.error, runs: result.data ?? [] }
}

/** Submits an answer to a run's input, following the outcome on the run's shared
 * connection when the run is open. */
export function useSubmitInput(runId: string): (args: SubmitArgs, options?: CommandOptions) => Promise<Outcome> {
  const { connection } = useWorkflows()
  const opened = useRunDB(runId)
  const db = opened.db
  return useCallback(
    (args, options) => submitInput(db ?? { ...connection, runId }, args, options),
    [db, connection, runId],
  )
}

/** Cancels a run. */
export function useCancelRun(runId: string): (args?: CancelArgs, options?: CommandOptions) => Promise<Outcome> {
  const { connection } = useWorkflows()
  const opened = useRunDB(runId)
  const db = opened.db
  return useCallback(
    (args, options) => cancelRun(db ?? { ...connection, runId }, args, options),
    [db, connection, runId],
  )
}

/** Starts a run of a workflow. */
export function useStartRun(): (args: StartArgs, options?: CommandOptions) => Promise<StartOutcome> {
  const { connection } = useWorkflows()
  return useCallback((args, options) => startRun(connection, args, options), [connection])
}
