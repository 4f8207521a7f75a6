import { useState, type ReactNode } from "react"
import {
  isTerminal,
  visibleText,
  type InputRow,
  type Outcome,
  type PatchRow,
  type RecordRow,
  type SleepRow,
  type StepRow,
  type SubmissionRow,
} from "@durable-workflows/client"
import { InputForm, useCancelRun, usePendingInputs, useRun } from "@durable-workflows/react"
import { Json, Status, TimeLeft, When } from "./bits"

type Item =
  | { kind: "step"; seq: number; row: StepRow }
  | { kind: "sleep"; seq: number; row: SleepRow }
  | { kind: "input"; seq: number; row: InputRow }
  | { kind: "record"; seq: number; row: RecordRow }
  | { kind: "patch"; seq: number; row: PatchRow }

/** One run, live: its status, a timeline of everything it did (steps, sleeps, inputs
 * with their forms and rejected answers, recorded values, patches) and how it ended. */
export function RunPage({ runId }: { runId: string }) {
  const view = useRun(runId)
  const pending = usePendingInputs(runId)
  const [engineChecks, setEngineChecks] = useState(false)

  if (view.status === "loading") {
    return <p className="muted">{`Waiting for run ${runId}...`}</p>
  }
  if (view.status === "error" || !view.run) {
    return (
      <p className="error" role="alert">
        {visibleText(`Could not open run ${runId}: ${String(view.error)}`)}
      </p>
    )
  }
  const run = view.run
  const ended = isTerminal(run.status)
  const items: Item[] = [
    ...view.steps.map((row) => ({ kind: "step" as const, seq: row.seq, row })),
    ...view.sleeps.map((row) => ({ kind: "sleep" as const, seq: row.seq, row })),
    ...view.inputs.map((row) => ({ kind: "input" as const, seq: row.seq, row })),
    ...view.records.map((row) => ({ kind: "record" as const, seq: row.seq, row })),
    ...view.patches.map((row) => ({ kind: "patch" as const, seq: row.seq, row })),
  ].sort((a, b) => a.seq - b.seq)
  const rejectionsOf = (key: string | null): SubmissionRow[] => view.submissions.filter((s) => s.request === key)
  const orphans = view.submissions.filter((s) => !view.inputs.some((input) => input.key === s.request))

  return (
    <article className="run" data-run-id={run.key} data-run-status={run.status}>
      <header className="run-head">
        <a href="#/" className="back">
          Back to the task inbox
        </a>
        <h1>
          <span className="run-id">{run.key}</span> <Status status={run.status} />
        </h1>
        <p className="muted">
          {run.workflow}
          {" · started "}
          <When at={run.started_at} />
          {run.finished_at ? (
            <>
              {" · finished "}
              <When at={run.finished_at} />
            </>
          ) : null}
        </p>
        {!ended ? <CancelButton runId={runId} /> : null}
      </header>

      <section className="panel">
        <h2>Input</h2>
        <Json value={run.input} />
      </section>

      {pending.inputs.length > 0 ? (
        <label className="engine-checks">
          <input type="checkbox" checked={engineChecks} onChange={(event) => setEngineChecks(event.target.checked)} />
          {" Send answers without checking them in the browser (the engine checks every answer anyway)"}
        </label>
      ) : null}

      <section className="panel">
        <h2>Timeline</h2>
        <ol className="timeline">
          {items.map((item) => (
            <li key={`${item.kind}:${item.row.key}`} className={`item item-${item.kind}`} data-kind={item.kind} data-key={item.row.key} data-status={"status" in item.row ? item.row.status : undefined}>
              <span className="seq">{item.seq}</span>
              <div className="body">
                {item.kind === "step" ? <StepItem step={item.row} /> : null}
                {item.kind === "sleep" ? <SleepItem sleep={item.row} ended={ended} /> : null}
                {item.kind === "input" ? (
                  <InputItem
                    runId={runId}
                    input={item.row}
                    ended={ended}
                    engineChecks={engineChecks}
                    rejections={rejectionsOf(item.row.key)}
                    recordedRejections={view.submissions.length}
                  />
                ) : null}
                {item.kind === "record" ? (
                  <Line title={`${item.row.kind} ${item.row.key}`}>
                    <code>{visibleText(String(item.row.value))}</code>
                  </Line>
                ) : null}
                {item.kind === "patch" ? <Line title={`patch ${item.row.key}`}>taken</Line> : null}
              </div>
            </li>
          ))}
        </ol>
        {items.length === 0 ? <p className="muted">Nothing recorded yet.</p> : null}
      </section>

      {orphans.length > 0 ? (
        <section className="panel">
          <h2>Refused messages</h2>
          <Rejections rows={orphans} />
        </section>
      ) : null}

      {ended ? (
        <section className={`panel result result-${run.status}`} id="run-result">
          <h2>{run.status === "completed" ? "Output" : run.status === "cancelled" ? "Cancelled" : "Failed"}</h2>
          {run.status === "completed" ? (
            <div id="run-output">
              <Json value={run.output} />
            </div>
          ) : null}
          {run.error ? (
            <p className="error" id="run-error">
              <strong>{visibleText(run.error.type)}</strong>
              {visibleText(`: ${run.error.message}`)}
            </p>
          ) : null}
        </section>
      ) : null}
    </article>
  )
}

function Line({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="line">
      <span className="title">{title}</span> {children}
    </div>
  )
}

function StepItem({ step }: { step: StepRow }) {
  return (
    <>
      <Line title={`step ${step.key}`}>
        <Status status={step.status} />
        <span className="attempts">{`attempt ${step.attempt} of ${step.max_attempts}`}</span>
      </Line>
      {step.status === "retrying" && step.retry_at ? (
        <p className="muted">
          {"next attempt in "}
          <TimeLeft at={step.retry_at} />
        </p>
      ) : null}
      {step.error ? <p className="error">{visibleText(`${step.error.type}: ${step.error.message}`)}</p> : null}
      {step.status === "completed" ? <Json value={step.result} /> : null}
    </>
  )
}

function SleepItem({ sleep, ended }: { sleep: SleepRow; ended: boolean }) {
  return (
    <Line title={`sleep ${sleep.key}`}>
      <Status status={sleep.status} />
      {sleep.status === "scheduled" && !ended ? (
        <span>
          {" wakes "}
          <When at={sleep.wake_at} /> <TimeLeft at={sleep.wake_at} />
        </span>
      ) : null}
      {sleep.status === "scheduled" && ended ? <span className="muted"> abandoned</span> : null}
      {sleep.fired_at ? (
        <span className="muted">
          {" fired "}
          <When at={sleep.fired_at} />
        </span>
      ) : null}
    </Line>
  )
}

function InputItem(props: {
  runId: string
  input: InputRow
  ended: boolean
  engineChecks: boolean
  rejections: SubmissionRow[]
  recordedRejections: number
}) {
  const { runId, input, ended, engineChecks, rejections, recordedRejections } = props
  // The form stays mounted whatever the input's status becomes, so that an answer this
  // tab sent shows its outcome even after another tab's answer closed the request.
  return (
    <>
      <Line title={`input ${input.key}`}>
        <Status status={input.status === "pending" && ended ? "abandoned" : input.status} />
        {input.status === "pending" && input.expires_at && !ended ? <TimeLeft at={input.expires_at} /> : null}
      </Line>
      <InputForm
        runId={runId}
        input={input}
        noValidate={engineChecks}
        runEnded={ended}
        recordedRejections={recordedRejections}
      />
      {rejections.length > 0 ? <Rejections rows={rejections} /> : null}
    </>
  )
}

/** How many rejections a list shows: the latest ones (a flooded run holds 1,000). */
const SHOWN_REJECTIONS = 20

function Rejections({ rows }: { rows: SubmissionRow[] }) {
  // `rows` come oldest first; the latest are shown, newest first.
  const shown = rows.slice(-SHOWN_REJECTIONS).reverse()
  return (
    <ul className="rejections" data-count={rows.length}>
      {rows.length > shown.length ? (
        <li className="muted">{`${rows.length} refused answers; the latest ${shown.length}:`}</li>
      ) : null}
      {shown.map((row) => (
        <li key={row.key} data-rejection={row.key} data-reason={row.reason}>
          <span className="reason">{row.reason}</span> <span className="message">{visibleText(row.message)}</span>{" "}
          <span className="muted">{row.key}</span>
        </li>
      ))}
    </ul>
  )
}

function CancelButton({ runId }: { runId: string }) {
  const cancel = useCancelRun(runId)
  const [outcome, setOutcome] = useState<Outcome | "sending" | null>(null)
  return (
    <span className="cancel">
      <button
        type="button"
        disabled={outcome === "sending"}
        onClick={() => {
          if (!window.confirm(`Cancel run ${runId}?`)) return
          setOutcome("sending")
          cancel({ reason: "Cancelled from the web app" }).then(setOutcome, () => setOutcome(null))
        }}
      >
        Cancel run
      </button>
      {outcome && outcome !== "sending" ? <span className="muted">{` ${outcome.outcome}`}</span> : null}
    </span>
  )
}
