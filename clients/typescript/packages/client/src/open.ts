// openRun / openRunList: a preloaded StreamDB, once the stream exists.

import { createStreamDB } from "@durable-streams/state/db"
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
  remaining,
  sleep,
  streamHeaders,
  streamUrl,
  type Connection,
  type TokenSource,
} from "./http.js"
import { historyState, statusState, type RunDB, type RunListDB } from "./state.js"

export interface OpenOptions {
  /** The client token; overrides the connection's. */
  token?: TokenSource
  /** Stops waiting and closes the StreamDB. */
  signal?: AbortSignal
  /** How long to wait for the stream to exist and load (default 30 s). */
  timeoutMs?: number
  /** A fetch to use instead of `globalThis.fetch`. */
  fetch?: typeof globalThis.fetch
}

/** What a RunDB was opened on, for submitInput and cancelRun. */
export interface RunContext {
  namespace: string | URL
  runId: string
  token: TokenSource | undefined
  fetch: typeof globalThis.fetch | undefined
}

const contexts = new WeakMap<object, RunContext>()

/** The namespace and run a StreamDB returned by `openRun` reads. */
export function runContext(db: RunDB): RunContext | undefined {
  return contexts.get(db)
}

function connectionOf(namespace: string | URL | Connection, options: OpenOptions): Connection {
  const base: Connection =
    typeof namespace === "string" || namespace instanceof URL ? { namespace } : namespace
  const connection: Connection = { namespace: base.namespace }
  const token = options.token ?? base.token
  if (token !== undefined) connection.token = token
  const fetch = options.fetch ?? base.fetch
  if (fetch !== undefined) connection.fetch = fetch
  return connection
}

/**
 * Waits until the stream at `url` exists: a HEAD that answers 200. A run's history
 * does not exist until the engine starts the run, and StreamDB's preload() fails on a
 * 404 without trying again, so a page that opens a run it has just requested waits
 * here, with a bounded backoff (50 ms doubling to 1 s) until `deadline`.
 */
export async function waitForStream(
  url: string,
  connection: Pick<Connection, "token" | "fetch">,
  deadline: number,
  signal?: AbortSignal,
): Promise<void> {
  const fetch = fetcher(connection)
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw abortReason(signal)
    let status = 0
    try {
      const init: RequestInit = { method: "HEAD", headers: await authHeaders(connection.token) }
      if (signal) init.signal = signal
      const response = await fetch(url, init)
      status = response.status
      if (response.ok) return
      if (status === 401 || status === 403) {
        throw new AccessError(status, url, await bodyText(response))
      }
      if (status !== 404 && status < 500 && status !== 429) {
        throw new HttpError(status, url, await bodyText(response))
      }
    } catch (error) {
      if (error instanceof AccessError || error instanceof HttpError) throw error
      if (signal?.aborted) throw abortReason(signal)
      // a network failure: try again within the deadline
    }
    const wait = Math.min(backoff(attempt), remaining(deadline))
    if (wait <= 0) {
      throw new TimeoutError(
        status === 404 ? `${url} does not exist yet (has the run started?)` : `${url} is not reachable`,
      )
    }
    await sleep(wait, signal)
  }
}

async function preloadWithin<T extends { preload(): Promise<void>; close(): void }>(
  db: T,
  deadline: number,
  signal: AbortSignal | undefined,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  let onAbort: (() => void) | undefined
  try {
    await Promise.race([
      db.preload(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`${what} did not load in time`)), remaining(deadline))
        if (signal) {
          onAbort = () => reject(abortReason(signal))
          if (signal.aborted) onAbort()
          else signal.addEventListener("abort", onAbort, { once: true })
        }
      }),
    ])
    return db
  } catch (error) {
    db.close()
    throw error
  } finally {
    if (timer !== undefined) clearTimeout(timer)
    if (onAbort) signal?.removeEventListener("abort", onAbort)
  }
}

function closeOnAbort(db: { close(): void }, signal: AbortSignal | undefined): void {
  signal?.addEventListener("abort", () => db.close(), { once: true })
}

/**
 * Opens a run's history as a live StreamDB (collections run, step, sleep, input,
 * submission, record, patch) and resolves once it has loaded and holds the `run` row.
 * Waits, with a bounded backoff, for a history that does not exist yet. One
 * connection per open run: close the StreamDB (`db.close()`) when the page leaves the
 * run, or abort `signal`.
 */
export async function openRun(
  namespace: string | URL | Connection,
  runId: string,
  options: OpenOptions = {},
): Promise<RunDB> {
  const connection = connectionOf(namespace, options)
  const deadline = deadlineFrom(options.timeoutMs ?? 30_000)
  const url = streamUrl(connection.namespace, "runs", runId, "history")
  await waitForStream(url, connection, deadline, options.signal)
  const db = createStreamDB({ streamOptions: streamOptionsFor(url, connection), state: historyState })
  contexts.set(db, {
    namespace: connection.namespace,
    runId,
    token: connection.token,
    fetch: connection.fetch,
  })
  await preloadWithin(db, deadline, options.signal, url)
  if (db.collections.run.get(runId) === undefined) {
    // The engine creates the history empty and then appends run-started, whose
    // headers.txid is the run id.
    try {
      await db.utils.awaitTxId(runId, Math.max(1, remaining(deadline)))
    } catch (error) {
      db.close()
      throw options.signal?.aborted
        ? abortReason(options.signal)
        : new TimeoutError(`run ${runId} has a history but no run-started: ${String(error)}`)
    }
  }
  closeOnAbort(db, options.signal)
  return db
}

/** What StreamDB needs to read one stream of the namespace with this connection. */
function streamOptionsFor(url: string, connection: Connection) {
  return {
    url,
    contentType: "application/json",
    headers: streamHeaders(connection.token),
    warnOnHttp: false,
    ...(connection.fetch ? { fetch: connection.fetch } : {}),
  }
}

/**
 * Opens the namespace's run-status stream `{ns}/status` as a live StreamDB with one
 * collection, `runs` (a RunStatusRow per run). One connection for a whole task list,
 * however many runs it shows. Needs the `list` right (SEC-037).
 */
export async function openRunList(
  namespace: string | URL | Connection,
  options: OpenOptions = {},
): Promise<RunListDB> {
  const connection = connectionOf(namespace, options)
  const deadline = deadlineFrom(options.timeoutMs ?? 30_000)
  const url = streamUrl(connection.namespace, "status")
  await waitForStream(url, connection, deadline, options.signal)
  const db = createStreamDB({ streamOptions: streamOptionsFor(url, connection), state: statusState })
  await preloadWithin(db, deadline, options.signal, url)
  closeOnAbort(db, options.signal)
  return db
}
