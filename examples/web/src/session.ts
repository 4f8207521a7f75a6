// The session `dwf serve --ui` hands out at /ui/session.json: where the namespace is,
// the workflows it can start and a short-lived client token. A production app gets the
// same from its own backend, after signing the user in (docs/browser.md).

import type { InputSchema } from "@durable-workflows/client"

export interface Workflow {
  name: string
  title: string | null
  input_schema: InputSchema | null
}

export interface Session {
  namespace: string
  status_stream: string
  run_prefix: string
  workflows: Workflow[]
  token: string | null
  /** Seconds since the epoch. */
  expires_at: number | null
}

const SESSION_URL = new URL("ui/session.json", document.baseURI).href
/** Ask for a new token this long before the current one expires. */
const REFRESH_MARGIN_S = 120

let current: Session | null = null
let refreshing: Promise<Session> | null = null

async function fetchSession(): Promise<Session> {
  const response = await fetch(SESSION_URL, { cache: "no-store", credentials: "same-origin" })
  if (!response.ok) throw new Error(`${SESSION_URL}: HTTP ${response.status}`)
  current = (await response.json()) as Session
  return current
}

export async function loadSession(): Promise<Session> {
  return current ?? fetchSession()
}

/** The current token, renewed shortly before it expires; used for every request. */
export async function currentToken(): Promise<string | null> {
  const session = current ?? (await loadSession())
  const expires = session.expires_at
  if (expires !== null && expires - Date.now() / 1000 < REFRESH_MARGIN_S) {
    refreshing ??= fetchSession().finally(() => {
      refreshing = null
    })
    return (await refreshing).token
  }
  return session.token
}
