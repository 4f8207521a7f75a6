import { useRef, useState } from "react"
import { newId, visibleText, type StartOutcome } from "@durable-workflows/client"
import { SchemaForm, useRuns, useStartRun } from "@durable-workflows/react"
import { runHref } from "./App"
import { Status, When } from "./bits"
import type { Session, Workflow } from "./session"

/** The task inbox (runs that wait for a person), every run, and a start form per
 * workflow. Both lists read the run-status stream: one connection for all of them. */
export function Inbox({ session }: { session: Session }) {
  return (
    <div className="inbox">
      <Tasks canOpen={opener(session)} />
      <AllRuns canOpen={opener(session)} />
      <section className="panel">
        <h2>Start a run</h2>
        {session.workflows.map((workflow) => (
          <StartForm key={workflow.name} workflow={workflow} prefix={session.run_prefix} />
        ))}
      </section>
    </div>
  )
}

/** Whether this page's token may read a run: `dwf serve --ui`'s token covers the runs
 * whose ids start with its prefix, while the list shows every run of the namespace. */
function opener(session: Session): (runId: string) => boolean {
  return (runId) => session.token === null || runId.startsWith(session.run_prefix)
}

const NOT_YOURS = "Started outside this app: this page's token may not open it."

/** A link to the run's page, or its id as text when the token may not read it. */
function RunLink({ runId, canOpen, className }: { runId: string; canOpen: (id: string) => boolean; className?: string }) {
  if (canOpen(runId)) {
    return (
      <a href={runHref(runId)} className={className}>
        {runId}
      </a>
    )
  }
  return (
    <span className={`${className ?? ""} not-yours`} title={NOT_YOURS} data-not-yours="">
      {runId}
    </span>
  )
}

function Tasks({ canOpen }: { canOpen: (runId: string) => boolean }) {
  const { runs, status, error } = useRuns({ status: "waiting" })
  return (
    <section className="panel" id="tasks">
      <h2>Waiting for you {status === "ready" ? <span className="count">{runs.length}</span> : null}</h2>
      {status === "loading" ? <p className="muted">Loading...</p> : null}
      {status === "error" ? <p className="error">{`Could not read the run list: ${String(error)}`}</p> : null}
      {status === "ready" && runs.length === 0 ? <p className="muted">Nothing waits for an answer.</p> : null}
      <ul className="tasks">
        {runs.map((run) => (
          <li key={run.key} data-run-id={run.key} data-status={run.status}>
            <span className="task-link">
              <RunLink runId={run.key} canOpen={canOpen} className="run-id" />
              <span className="workflow">{run.workflow}</span>
            </span>
            <ul className="prompts">
              {run.inputs.map((input) => (
                <li key={input.key}>
                  <span className="input-name">{input.name}</span>
                  <span className="prompt">{input.prompt === null ? "(no prompt)" : visibleText(input.prompt)}</span>
                  {input.expires_at ? (
                    <span className="deadline">
                      {"until "}
                      <When at={input.expires_at} />
                    </span>
                  ) : null}
                </li>
              ))}
            </ul>
          </li>
        ))}
      </ul>
    </section>
  )
}

function AllRuns({ canOpen }: { canOpen: (runId: string) => boolean }) {
  const { runs, status } = useRuns()
  return (
    <section className="panel" id="runs">
      <h2>All runs {status === "ready" ? <span className="count">{runs.length}</span> : null}</h2>
      {status === "ready" && runs.length === 0 ? <p className="muted">No runs yet. Start one below.</p> : null}
      {runs.length > 0 ? (
        <div className="table-scroll">
          <table className="runs">
            <thead>
              <tr>
                <th>run</th>
                <th>workflow</th>
                <th>status</th>
                <th>started</th>
                <th>finished</th>
              </tr>
            </thead>
            <tbody>
              {runs.map((run) => (
                <tr key={run.key} data-run-id={run.key} data-status={run.status}>
                  <td>
                    <RunLink runId={run.key} canOpen={canOpen} />
                  </td>
                  <td>{run.workflow}</td>
                  <td>
                    <Status status={run.status} />
                    {run.error ? <span className="error-type">{visibleText(run.error.type)}</span> : null}
                  </td>
                  <td>
                    <When at={run.started_at} />
                  </td>
                  <td>{run.finished_at ? <When at={run.finished_at} /> : null}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  )
}

function StartForm({ workflow, prefix }: { workflow: Workflow; prefix: string }) {
  const start = useStartRun()
  const [state, setState] = useState<
    { kind: "idle" } | { kind: "sending" } | { kind: "done"; outcome: StartOutcome } | { kind: "failed"; message: string }
  >({ kind: "idle" })
  const [round, setRound] = useState(0)
  // One run id per start: reused if the same input is sent again after a failure.
  const attempt = useRef<{ id: string; body: string } | null>(null)

  const send = async (input: unknown): Promise<void> => {
    const body = JSON.stringify(input)
    if (attempt.current?.body !== body) {
      attempt.current = { id: `${prefix}${workflow.name}-${newId("r").slice(2, 10)}`, body }
    }
    setState({ kind: "sending" })
    try {
      const outcome = await start({ workflow: workflow.name, input, runId: attempt.current.id })
      attempt.current = null
      setState({ kind: "done", outcome })
      // A fresh form: a second click must not start the same run again by accident.
      if (outcome.outcome === "accepted") setRound((n) => n + 1)
    } catch (error) {
      setState({ kind: "failed", message: error instanceof Error ? error.message : String(error) })
    }
  }

  return (
    <details className="start" data-workflow={workflow.name}>
      <summary>
        <span className="workflow">{workflow.name}</span>
        {workflow.title ? <span className="title">{workflow.title}</span> : null}
      </summary>
      <SchemaForm
        key={round}
        schema={workflow.input_schema ?? true}
        onSubmit={(value) => void send(value)}
        disabled={state.kind === "sending"}
        submitLabel={state.kind === "sending" ? "Starting..." : "Start"}
        idPrefix={`start-${workflow.name}`}
      />
      {state.kind === "done" ? (
        <p className="outcome" role="status" data-outcome={state.outcome.outcome}>
          {state.outcome.outcome === "accepted" ? "Started " : `Not started (${state.outcome.reason}): `}
          <a href={runHref(state.outcome.id)} className="started-run">
            {state.outcome.id}
          </a>
        </p>
      ) : null}
      {state.kind === "failed" ? (
        <p className="error" role="alert">
          {state.message}
        </p>
      ) : null}
    </details>
  )
}
