// <DurableWorkflowsProvider>: where the namespace is, the token, and the open StreamDBs
// shared by every hook under it (one connection per open run, one for the run list).

import { createContext, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react"
import {
  openRun,
  openRunList,
  type Connection,
  type RunDB,
  type RunListDB,
  type TokenSource,
} from "@durable-workflows/client"

/** How long a StreamDB nobody uses stays open (so a re-render or React's StrictMode
 * double mount does not reconnect). */
const CLOSE_AFTER_MS = 250

interface Entry<T> {
  /** A number unique to this StreamDB, for live-query identities. */
  readonly instance: number
  readonly promise: Promise<T>
  db: T | undefined
  error: unknown
  refs: number
  closer: ReturnType<typeof setTimeout> | undefined
  readonly controller: AbortController
}

let instances = 0

/** Opens StreamDBs on demand and closes them when no component uses them any more. */
export class StreamRegistry {
  private readonly runs = new Map<string, Entry<RunDB>>()
  private list: Entry<RunListDB> | undefined

  constructor(readonly connection: Connection) {}

  private entry<T extends { close(): void }>(open: (signal: AbortSignal) => Promise<T>, forget: () => void): Entry<T> {
    const controller = new AbortController()
    const entry: Entry<T> = {
      instance: ++instances,
      promise: open(controller.signal),
      db: undefined,
      error: undefined,
      refs: 0,
      closer: undefined,
      controller,
    }
    entry.promise.then(
      (db) => {
        entry.db = db
      },
      (error: unknown) => {
        entry.error = error
        forget() // a later acquire tries again
      },
    )
    return entry
  }

  acquireRun(runId: string): Entry<RunDB> {
    let entry = this.runs.get(runId)
    if (!entry) {
      const created = this.entry(
        (signal) => openRun(this.connection, runId, { signal }),
        () => {
          if (this.runs.get(runId) === created) this.runs.delete(runId)
        },
      )
      entry = created
      this.runs.set(runId, entry)
    }
    this.hold(entry)
    return entry
  }

  acquireList(): Entry<RunListDB> {
    if (!this.list) {
      const created = this.entry(
        (signal) => openRunList(this.connection, { signal }),
        () => {
          if (this.list === created) this.list = undefined
        },
      )
      this.list = created
    }
    this.hold(this.list)
    return this.list
  }

  private hold(entry: Entry<unknown>): void {
    entry.refs += 1
    if (entry.closer !== undefined) {
      clearTimeout(entry.closer)
      entry.closer = undefined
    }
  }

  release(entry: Entry<RunDB> | Entry<RunListDB>): void {
    entry.refs -= 1
    if (entry.refs > 0) return
    entry.closer = setTimeout(() => {
      if (entry.refs > 0) return
      for (const [runId, candidate] of this.runs) if (candidate === entry) this.runs.delete(runId)
      if (this.list === entry) this.list = undefined
      entry.controller.abort()
      entry.db?.close()
    }, CLOSE_AFTER_MS)
  }

  /** Closes every StreamDB (the provider unmounts). */
  closeAll(): void {
    for (const entry of [...this.runs.values(), ...(this.list ? [this.list] : [])]) {
      if (entry.closer !== undefined) clearTimeout(entry.closer)
      entry.controller.abort()
      entry.db?.close()
    }
    this.runs.clear()
    this.list = undefined
  }
}

interface WorkflowsContextValue {
  connection: Connection
  registry: StreamRegistry
}

const WorkflowsContext = createContext<WorkflowsContextValue | null>(null)

export interface DurableWorkflowsProviderProps {
  /** The namespace URL (absolute, or relative to the page, as `/ui/session.json` gives it). */
  namespace: string | URL
  /** The client token, or a function that returns the current one (called for every
   * request). Mint it in your own backend for the signed-in user. */
  token?: TokenSource
  children?: ReactNode
}

/** Gives the hooks and `<InputForm>` below it their namespace and token. */
export function DurableWorkflowsProvider({ namespace, token, children }: DurableWorkflowsProviderProps) {
  const tokenRef = useRef<TokenSource | undefined>(token)
  tokenRef.current = token
  const namespaceKey = String(namespace)
  const value = useMemo<WorkflowsContextValue>(() => {
    const connection: Connection = {
      namespace: namespaceKey,
      token: async () => {
        const current = tokenRef.current
        if (current === undefined || current === null) return null
        return typeof current === "function" ? await current() : current
      },
    }
    return { connection, registry: new StreamRegistry(connection) }
  }, [namespaceKey])
  useEffect(() => () => value.registry.closeAll(), [value])
  return <WorkflowsContext.Provider value={value}>{children}</WorkflowsContext.Provider>
}

/** The provider's connection and registry. */
export function useWorkflows(): WorkflowsContextValue {
  const value = useContext(WorkflowsContext)
  if (!value) throw new Error("Durable Workflows hooks need a <DurableWorkflowsProvider> above them")
  return value
}

/** Where a shared StreamDB stands. */
export type Opened<T> =
  | { status: "loading"; db: undefined; instance: undefined; error: undefined }
  | { status: "ready"; db: T; instance: number; error: undefined }
  | { status: "error"; db: undefined; instance: undefined; error: unknown }

const LOADING = { status: "loading", db: undefined, instance: undefined, error: undefined } as const

function useShared<T>(acquire: (() => Entry<T>) | null, key: string): Opened<T> {
  const { registry } = useWorkflows()
  const [held, setHeld] = useState<{ key: string; state: Opened<T> }>({ key, state: LOADING })
  const setState = (state: Opened<T>): void => setHeld({ key, state })
  useEffect(() => {
    if (!acquire) {
      setState(LOADING)
      return
    }
    const entry = acquire()
    let live = true
    if (entry.db !== undefined) setState({ status: "ready", db: entry.db, instance: entry.instance, error: undefined })
    else {
      setState(LOADING)
      entry.promise.then(
        (db) => {
          if (live) setState({ status: "ready", db, instance: entry.instance, error: undefined })
        },
        (error: unknown) => {
          if (live) setState({ status: "error", db: undefined, instance: undefined, error })
        },
      )
    }
    return () => {
      live = false
      registry.release(entry as Entry<RunDB>)
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps -- the key names what acquire opens
  }, [registry, key])
  // Until the effect has run for a new key, the state is the previous key's.
  return held.key === key ? held.state : LOADING
}

/** The shared, preloaded StreamDB of a run's history (opened by the first component
 * that asks, closed after the last one unmounts). `runId` null: nothing is opened. */
export function useRunDB(runId: string | null | undefined): Opened<RunDB> {
  const { registry } = useWorkflows()
  return useShared(runId ? () => registry.acquireRun(runId) : null, `run:${runId ?? ""}`)
}

/** The shared, preloaded StreamDB of the run-status stream: one connection for every
 * list on the page. */
export function useRunListDB(): Opened<RunListDB> {
  const { registry } = useWorkflows()
  return useShared(() => registry.acquireList(), "list")
}
