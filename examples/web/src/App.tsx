import { useEffect, useState } from "react"
import { Inbox } from "./Inbox"
import { RunPage } from "./RunPage"
import type { Session } from "./session"

/** `#/` is the task inbox, `#/runs/ID` a run. */
function parseRoute(hash: string): { page: "inbox" } | { page: "run"; runId: string } {
  const match = /^#\/runs\/([^/?#]+)/.exec(hash)
  if (match?.[1]) return { page: "run", runId: decodeURIComponent(match[1]) }
  return { page: "inbox" }
}

export function runHref(runId: string): string {
  return `#/runs/${encodeURIComponent(runId)}`
}

export function App({ session }: { session: Session }) {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash))
  useEffect(() => {
    const onHash = (): void => setRoute(parseRoute(window.location.hash))
    window.addEventListener("hashchange", onHash)
    return () => window.removeEventListener("hashchange", onHash)
  }, [])
  return (
    <div className="app">
      <header className="top">
        <a href="#/" className="brand">
          Durable Workflows
        </a>
        <span className="namespace">{session.namespace}</span>
      </header>
      <main>{route.page === "run" ? <RunPage key={route.runId} runId={route.runId} /> : <Inbox session={session} />}</main>
    </div>
  )
}
