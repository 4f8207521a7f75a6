import { useRef, useState } from "react"
import { newId, type StartOutcome } from "@durable-workflows/client"
import { SchemaForm, useRuns, useStartRun } from "@durable-workflows/react"
import { runHref } from "./App"
import { Status, When } from "./bits"
import type { Session, Workflow } from "./session"

/** The task inbox (runs that wait for a person), every run, and a start form per
 * workflow. Both lists read the run-status stream: one connection for all of them. */
export function Inbox({ session }: { session: Session }) {
  return (
    <div className="inbox">
      <Tasks />
      <AllRuns />
      <section className="panel">
        <h2>Start a run</h2>
        {session.workflows.map((workflow) => (
          <StartForm key={workflow.name} workflow={workflow} prefix={session.run_prefix} />
        ))}
      </section>
    </div>
  )
}

function Tasks() {
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
            <a href={runHref(run.key)} className="task-link">
              <span className="run-id">{run.key}</span>
              <span className="workflow">{run.workflow}</span>
            </a>
            <ul className="prompts">
              {run.inputs.map((input) => (
                <li key={input.key}>
                  <span className="input-name">{input.name}</span>
                  <span className="prompt">{input.prompt ?? "(no prompt)"}</span>
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

function AllRuns() {
  const { runs, status } = useRuns()
  return (
    <section className="panel" id="runs">
      <h2>All runs {status === "ready" ? <span className="count">{runs.length}</span> : null}</h2>
      {status === "ready" && runs.length === 0 ? <p className="muted">No runs yet. Start one below.</p> : null}
      {runs.length > 0 ? (
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
                  <a href={runHref(run.key)}>{run.key}</a>
                </td>
                <td>{run.workflow}</td>
                <td>
                  <Status status={run.status} />
                  {run.error ? <span className="error-type">{run.error.type}</span> : null}
                </td>
                <td>
                  <When at={run.started_at} />
                </td>
                <td>{run.finished_at ? <When at={run.finished_at} /> : null}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  )
}

function StartForm({ workflow, prefix }: { workflow: Workflow; prefix: string }) {
  const start = useStartRun()
  const [state, setState] = useState<
    { kind: "idle" } | { kind: "sending" } | { kind: "done"; outcome: StartOutcome } | { kind: "failed"; message: string }
  >({ kind: "idle" })
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
