// startRun, submitInput, cancelRun: one plain fetch POST each (a JSON array holding
// one message), retried with the same id, and the outcome read from the history.

import {
  AccessError,
  HttpError,
  TimeoutError,
  abortReason,
  authHeaders,
  backoff,
  bodyText,
  deadlineFrom,
  fetcher,
  isStreamClosed,
  remaining,
  retryable,
  sleep,
  streamUrl,
  type Connection,
  type TokenSource,
} from "./http.js"
import { openRun, runContext, type OpenOptions } from "./open.js"
import type { RejectionReason } from "./generated/rows.js"
import type { RunDB } from "./state.js"

/** The outcome of a submission or a cancel, as the history records it. */
export type Outcome =
  /** The engine took it: `input-received` names the submission, or `run-cancelled` the cancel. */
  | { outcome: "accepted"; id: string }
  /** The engine refused it: an `input-rejected` keyed by the id says why. */
  | { outcome: "rejected"; id: string; reason: RejectionReason; message: string }
  /** The inbox was closed (409 with Stream-Closed): the run has ended, and nothing was
   * recorded (INPUT-040). Not to be retried. */
  | { outcome: "run-ended"; id: string }

/** The outcome of a start request. */
export type StartOutcome =
  | { outcome: "accepted"; id: string }
  /** The run id was taken by an earlier request with another workflow or input: the
   * run exists, but it is not the one asked for (MODEL-014). */
  | { outcome: "rejected"; id: string; reason: "run-id-taken"; message: string }

export interface CommandOptions extends OpenOptions {
  /** How long to try the POST and wait for its outcome (default 30 s). On timeout a
   * TimeoutError is thrown: send the same message again, with the same id. */
  timeoutMs?: number
}

/** A run to act on: a StreamDB from `openRun` (its connection is reused to follow the
 * outcome), or where the run is (then the history is opened for the wait and closed). */
export type RunTarget = RunDB | (Connection & { runId: string })

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

function randomId(): string {
  const crypto = globalThis.crypto
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID()
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")
}

/** A fresh id for a submission, a cancel or a run: choose it once per user action and
 * reuse it for every retry of that action (INPUT-012, CANCEL-002). */
export function newId(prefix = "s"): string {
  return `${prefix}-${randomId()}`
}

function checkId(id: string, what: string): string {
  if (!ID_PATTERN.test(id)) throw new TypeError(`${what} ${JSON.stringify(id)} does not match ${ID_PATTERN}`)
  return id
}

interface Posted {
  closed: boolean
}

/**
 * POSTs `[message]` to `url` until the server takes it: a 404 (the run has not started
 * yet, INPUT-041), a 429, a 5xx or a network failure are retried with the same body,
 * which the engine deduplicates by id. A 409 with Stream-Closed is final.
 */
async function post(
  url: string,
  message: object,
  token: TokenSource | undefined,
  fetch: typeof globalThis.fetch,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<Posted> {
  const body = JSON.stringify([message])
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw abortReason(signal)
    let status = 0
    try {
      const init: RequestInit = {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(await authHeaders(token)) },
        body,
      }
      if (signal) init.signal = signal
      const response = await fetch(url, init)
      status = response.status
      if (response.ok) {
        await bodyText(response)
        return { closed: false }
      }
      if (status === 409 && isStreamClosed(response)) {
        await bodyText(response)
        return { closed: true }
      }
      if (status === 401 || status === 403) throw new AccessError(status, url, await bodyText(response))
      if (!retryable(status)) throw new HttpError(status, url, await bodyText(response))
      await bodyText(response)
    } catch (error) {
      if (error instanceof AccessError || error instanceof HttpError) throw error
      if (signal?.aborted) throw abortReason(signal)
    }
    const wait = Math.min(backoff(attempt), remaining(deadline))
    if (wait <= 0) {
      throw new TimeoutError(
        status === 404 ? `${url} does not exist (has the run started?)` : `POST ${url} did not succeed in time`,
      )
    }
    await sleep(wait, signal)
  }
}

interface Resolved {
  namespace: string | URL
  runId: string
  token: TokenSource | undefined
  fetch: typeof globalThis.fetch
  db: RunDB | undefined
}

function resolveTarget(target: RunTarget, options: CommandOptions): Resolved {
  const context = "collections" in target ? runContext(target) : undefined
  if ("collections" in target) {
    if (!context) throw new TypeError("a RunDB passed to a command must come from openRun()")
    return {
      namespace: context.namespace,
      runId: context.runId,
      token: options.token ?? context.token,
      fetch: options.fetch ?? context.fetch ?? fetcher({}),
      db: target,
    }
  }
  return {
    namespace: target.namespace,
    runId: target.runId,
    token: options.token ?? target.token,
    fetch: options.fetch ?? fetcher(target),
    db: undefined,
  }
}

/** Follows the history until the message whose headers.txid is `id`, then reads the
 * outcome from the rows (the txid resolves only after every row of its batch is in). */
async function followOutcome(
  run: Resolved,
  id: string,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<Outcome> {
  const owned = run.db === undefined
  const db =
    run.db ??
    (await openRun(run.namespace, run.runId, {
      token: run.token ?? null,
      fetch: run.fetch,
      timeoutMs: remaining(deadline),
      ...(signal ? { signal } : {}),
    }))
  try {
    try {
      await db.utils.awaitTxId(id, Math.max(1, remaining(deadline)))
    } catch (error) {
      if (signal?.aborted) throw abortReason(signal)
      throw new TimeoutError(
        `no outcome for ${id} yet: a submission for a request the run has not reached stays in the inbox; send it again with the same id to keep waiting (${String(error)})`,
      )
    }
    const rejection = db.collections.submission.get(id)
    if (rejection !== undefined) {
      return { outcome: "rejected", id, reason: rejection.reason, message: rejection.message }
    }
    return { outcome: "accepted", id }
  } finally {
    if (owned) db.close()
  }
}

export interface SubmitArgs {
  /** The request id: the key of the `input` row (INPUT-001). */
  request: string
  /** The answer; the engine checks it against the input's schema. */
  value: unknown
  /** Chosen once per user action and reused on every retry; a new one for a corrected
   * answer. Default: a fresh `s-<uuid>` (read it back from the outcome). */
  submissionId?: string
}

/**
 * Answers an input request: appends `input-submitted` to the run's inbox with a plain
 * fetch POST, then waits for the history to record `input-received` (accepted) or
 * `input-rejected` (rejected, with the engine's reason and message) for it. A 409 with
 * Stream-Closed resolves to `run-ended`, unless the history already holds this id's
 * outcome (a retry of an answer the run took before it ended).
 */
export async function submitInput(
  target: RunTarget,
  args: SubmitArgs,
  options: CommandOptions = {},
): Promise<Outcome> {
  const run = resolveTarget(target, options)
  const id = checkId(args.submissionId ?? newId("s"), "submission id")
  const deadline = deadlineFrom(options.timeoutMs ?? 30_000)
  const message = {
    type: "submission",
    key: id,
    value: { submission_id: id, request: args.request, value: args.value },
    headers: { operation: "insert", txid: id },
  }
  return toInbox(run, id, message, deadline, options.signal)
}

/** Appends one message to the run's inbox and follows the history for its outcome;
 * a 409 with Stream-Closed is the run's end. */
async function toInbox(
  run: Resolved,
  id: string,
  message: object,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<Outcome> {
  const url = streamUrl(run.namespace, "runs", run.runId, "inbox")
  const posted = await post(url, message, run.token, run.fetch, deadline, signal)
  if (posted.closed) {
    // The run has ended, but this may be a retry of a message it took before it ended
    // (the engine records an accepted answer before it closes the inbox): its outcome
    // is then in the history, where it is looked for, briefly.
    const recorded = Math.min(deadline, deadlineFrom(RECORDED_WAIT_MS))
    try {
      return await followOutcome(run, id, recorded, signal)
    } catch (error) {
      if (error instanceof TimeoutError) return { outcome: "run-ended", id }
      throw error
    }
  }
  return followOutcome(run, id, deadline, signal)
}

/** How long a message refused by an ended run's inbox is looked for in its history. */
const RECORDED_WAIT_MS = 1_500

export interface CancelArgs {
  /** Chosen once per user action and reused on every retry. Default: `c-<uuid>`. */
  cancelId?: string
  /** Shown in the run's error message; or null. */
  reason?: string | null
}

/**
 * Cancels a run: appends `cancel-requested` to its inbox and waits for `run-cancelled`
 * (accepted) or an `input-rejected` with `run-finished` (rejected: the run had already
 * ended). A 409 with Stream-Closed resolves to `run-ended`.
 */
export async function cancelRun(
  target: RunTarget,
  args: CancelArgs = {},
  options: CommandOptions = {},
): Promise<Outcome> {
  const run = resolveTarget(target, options)
  const id = checkId(args.cancelId ?? newId("c"), "cancel id")
  const deadline = deadlineFrom(options.timeoutMs ?? 30_000)
  const message = {
    type: "cancel",
    key: id,
    value: { cancel_id: id, reason: args.reason ?? null },
    headers: { operation: "insert", txid: id },
  }
  return toInbox(run, id, message, deadline, options.signal)
}

export interface StartArgs {
  /** The workflow's registered name. */
  workflow: string
  /** The run's input, any JSON value (checked by the workflow's input schema). */
  input: unknown
  /** The run id: chosen once per user action, reused on retry (MODEL-013). With the
   * `dwf serve --ui` session token it must start with the session's `run_prefix`.
   * Default: `run-<uuid>`. */
  runId?: string
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  )
}

/**
 * Starts a run: appends `run-requested` to the run index, then waits for the run's
 * history and its `run-started` (headers.txid = run id). Resolves `accepted` when the
 * run started with this workflow and input, `rejected` (`run-id-taken`) when an earlier
 * request for the same id won. A 409 with Stream-Closed (a closed run index) is a
 * failure of the deployment, thrown as an HttpError (SEC-031).
 */
export async function startRun(
  namespace: string | URL | Connection,
  args: StartArgs,
  options: CommandOptions = {},
): Promise<StartOutcome> {
  const connection: Connection =
    typeof namespace === "string" || namespace instanceof URL ? { namespace } : namespace
  const token = options.token ?? connection.token
  const fetch = options.fetch ?? fetcher(connection)
  const runId = checkId(args.runId ?? newId("run"), "run id")
  const deadline = deadlineFrom(options.timeoutMs ?? 30_000)
  const input = args.input === undefined ? null : args.input
  const message = {
    type: "start",
    key: runId,
    value: { run_id: runId, workflow: args.workflow, input },
    headers: { operation: "insert", txid: runId },
  }
  const url = streamUrl(connection.namespace, "index")
  const posted = await post(url, message, token, fetch, deadline, options.signal)
  if (posted.closed) throw new HttpError(409, url, "the run index is closed")
  const db = await openRun(connection.namespace, runId, {
    token: token ?? null,
    fetch,
    timeoutMs: remaining(deadline),
    ...(options.signal ? { signal: options.signal } : {}),
  })
  try {
    const row = db.collections.run.get(runId)
    if (row && (row.workflow !== args.workflow || canonical(row.input) !== canonical(JSON.parse(JSON.stringify(input))))) {
      return {
        outcome: "rejected",
        id: runId,
        reason: "run-id-taken",
        message: `Run ${runId} was already requested with workflow ${row.workflow} and another input.`,
      }
    }
    return { outcome: "accepted", id: runId }
  } finally {
    db.close()
  }
}
