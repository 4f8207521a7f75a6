// Forms from JSON Schemas (react-jsonschema-form), made safe: no remote $ref is ever
// fetched (SEC-008), every prompt, value and message is a text node (SEC-007), and the
// browser validates as the engine does (JSON Schema 2020-12, `format` an annotation).

import { useMemo, useRef, useState, type ReactNode } from "react"
import Form, { getDefaultRegistry, type IChangeEvent } from "@rjsf/core"
import type { RJSFSchema, RJSFValidationError, UiSchema, WidgetProps } from "@rjsf/utils"
import { customizeValidator } from "@rjsf/validator-ajv8"
import { Ajv2020 } from "ajv/dist/2020.js"
import {
  AccessError,
  DEFAULT_REJECTION_LIMIT,
  formSchema,
  newId,
  TimeoutError,
  type InputRow,
  type InputSchema,
  type Outcome,
  visibleText,
} from "@durable-workflows/client"
import { useSubmitInput } from "./hooks.js"

type AjvClassOption = NonNullable<NonNullable<Parameters<typeof customizeValidator>[0]>["AjvClass"]>

/** The form validator: Ajv for JSON Schema 2020-12 (the draft the engine validates
 * with, INPUT-026), `format` not asserted (INPUT-027), nothing loaded over the network
 * (Ajv compiles synchronously and has no schema loader). */
export const validator = customizeValidator({
  AjvClass: Ajv2020 as unknown as AjvClassOption,
  ajvFormatOptions: false,
  ajvOptionsOverrides: { validateFormats: false },
})

const defaultWidgets = getDefaultRegistry().widgets
function defaultWidget(name: string): NonNullable<(typeof defaultWidgets)[string]> {
  const widget = defaultWidgets[name]
  if (!widget) throw new Error(`react-jsonschema-form has no ${name}`)
  return widget
}
const CheckboxWidget = defaultWidget("CheckboxWidget")
const RadioWidget = defaultWidget("RadioWidget")

/** A yes-or-no field. Without a default it is a Yes / No choice with neither chosen, so
 * that nobody answers "no" by leaving a box unticked; with a default, a checkbox. */
export function BooleanWidget(props: WidgetProps) {
  if (props.schema.default === undefined) {
    return <RadioWidget {...props} options={{ ...props.options, inline: true }} />
  }
  return <CheckboxWidget {...props} />
}

const widgets = { CheckboxWidget: BooleanWidget }

/** How long an answer to a flooded run waits for its record (see `recordedRejections`). */
const FLOODED_WAIT_MS = 5_000

/** Removes what RJSF would otherwise show of a value it cannot place. */
function formDataOf(event: IChangeEvent): unknown {
  return event.formData === undefined ? null : event.formData
}

export interface SchemaFormProps {
  /** A JSON Schema (an input's `schema`, a workflow's input schema). */
  schema: InputSchema
  /** Called with a value that the schema accepts (unless `noValidate`). */
  onSubmit: (value: unknown) => void
  /** Let the engine decide: send without the browser's validation. */
  noValidate?: boolean
  disabled?: boolean
  submitLabel?: string
  uiSchema?: UiSchema
  /** Called with the browser's validation errors (the form shows them too). */
  onError?: (errors: RJSFValidationError[]) => void
  /** An id prefix for the fields, unique on the page. */
  idPrefix?: string
  children?: ReactNode
}

/**
 * A form built from a JSON Schema with react-jsonschema-form. The schema is first made
 * safe by `formSchema()`: remote `$ref`s removed (and said so), boolean schemas mapped,
 * `ui:` keys dropped, so a schema cannot configure how it is rendered.
 */
export function SchemaForm(props: SchemaFormProps) {
  const { schema, onSubmit, noValidate = false, disabled = false, submitLabel = "Send", idPrefix } = props
  const safe = useMemo(() => {
    const report = { remoteRefs: [] as string[] }
    return { schema: formSchema(schema, report) as RJSFSchema, removed: report.remoteRefs.length }
  }, [schema])
  const [data, setData] = useState<unknown>(undefined)
  const uiSchema: UiSchema = {
    ...props.uiSchema,
    "ui:submitButtonOptions": { submitText: submitLabel, norender: false, props: { disabled } },
  }
  return (
    <div className="dwf-schema-form">
      {safe.removed > 0 ? (
        <p className="dwf-note" role="note">
          {`${safe.removed} part(s) of this form refer to other documents and are left out; nothing was fetched.`}
        </p>
      ) : null}
      <Form
        schema={safe.schema}
        uiSchema={uiSchema}
        validator={validator}
        formData={data}
        widgets={widgets}
        // A required boolean without a default stays unanswered (RJSF would fill in
        // false), so the schema's `required` asks for an explicit choice.
        experimental_defaultFormStateBehavior={{ requiredBooleanDefault: "skip" }}
        noValidate={noValidate}
        noHtml5Validate
        showErrorList="top"
        disabled={disabled}
        {...(idPrefix ? { idPrefix } : {})}
        onChange={(event) => setData(event.formData)}
        onSubmit={(event) => onSubmit(formDataOf(event))}
        onError={(errors: RJSFValidationError[]) => props.onError?.(errors)}
      >
        {props.children}
      </Form>
    </div>
  )
}

/** What the person is told about their answer. `input` is the row as the page now
 * sees it: an answer refused because the run ended after someone else's answer was
 * accepted (`run-finished`, or a 409 on the closed inbox) is, for the person, "already
 * answered". */
function describeOutcome(outcome: Outcome, input: InputRow): string {
  if (outcome.outcome === "accepted") return "Accepted: the run has your answer."
  if (outcome.outcome === "rejected" && outcome.reason === "already-answered") {
    return `Already answered (${outcome.reason}): ${outcome.message}`
  }
  const ended = outcome.outcome === "run-ended" || outcome.reason === "run-finished"
  if (ended && input.status === "received" && input.submission_id !== outcome.id) {
    const how = outcome.outcome === "rejected" ? outcome.reason : "the inbox is closed"
    return `Already answered: another answer came first, and the run has ended since (${how}).`
  }
  if (outcome.outcome === "run-ended") return "The run has ended: nothing more is accepted."
  return `Rejected (${outcome.reason}): ${outcome.message}`
}

export interface InputFormProps {
  runId: string
  /** The input row to answer (from `useRun` or `usePendingInputs`). */
  input: InputRow
  /** Send without the browser's validation, so the engine's own check answers. */
  noValidate?: boolean
  /** Called with the outcome of each submission. */
  onOutcome?: (outcome: Outcome) => void
  submitLabel?: string
  /** The run has ended (from its run row): a pending input can no longer be answered. */
  runEnded?: boolean
  /** How many rejected submissions the run's history holds (`useRun().submissions`):
   * at the engine's limit (SEC-034) a refused answer leaves no record, and the form
   * says so instead of asking to send it again. */
  recordedRejections?: number
  /** The engine's limit on recorded rejections, when it is not the default. */
  rejectionLimit?: number
}

type Phase =
  | { kind: "idle" }
  | { kind: "sending"; id: string }
  | { kind: "done"; outcome: Outcome }
  | { kind: "failed"; message: string; unrecorded: boolean }

/**
 * A form for one input request: its prompt (as text), a form built from its schema,
 * validation before sending, and the engine's outcome after: accepted, rejected with
 * the engine's reason and message, or the run has ended. A submission id is chosen per
 * answer and reused when the same answer is sent again after a network failure
 * (INPUT-012); a corrected answer gets a new one. Keep it mounted while the input
 * changes from pending to received or expired (another tab answered, the run ended):
 * the outcome of this tab's own answer is shown when it resolves.
 */
export function InputForm(props: InputFormProps) {
  const { runId, input, noValidate = false, onOutcome, submitLabel = "Send answer", runEnded = false } = props
  const flooded = (props.recordedRejections ?? 0) >= (props.rejectionLimit ?? DEFAULT_REJECTION_LIMIT)
  const submit = useSubmitInput(runId)
  const [phase, setPhase] = useState<Phase>({ kind: "idle" })
  const attempt = useRef<{ id: string; body: string } | null>(null)
  const formId = `dwf-${runId}-${input.key}`.replace(/[^A-Za-z0-9_-]/g, "_")

  const send = async (value: unknown): Promise<void> => {
    const body = JSON.stringify(value)
    if (attempt.current?.body !== body) attempt.current = { id: newId("s"), body }
    const id = attempt.current.id
    setPhase({ kind: "sending", id })
    try {
      // A flooded run records an accepted answer as quickly as any other, but a refused
      // one never: waiting the usual 30 s for it would only delay the bad news.
      const options = flooded ? { timeoutMs: FLOODED_WAIT_MS } : undefined
      const outcome = await submit({ request: input.key, value, submissionId: id }, options)
      attempt.current = null
      setPhase({ kind: "done", outcome })
      onOutcome?.(outcome)
    } catch (error) {
      const message =
        error instanceof TimeoutError && flooded
          ? "No record of this answer: the run has recorded as many refused answers as its engine keeps, " +
            "so an answer it refuses now leaves no trace, and after 1,000 answers it refuses every one. " +
            "Ask whoever runs the workflow to cancel and restart it."
          : error instanceof TimeoutError
          ? "No answer from the engine yet. Send again: the same submission is reused."
          : error instanceof AccessError
            ? `Not allowed: ${error.message}`
            : `Could not send: ${error instanceof Error ? error.message : String(error)}`
      setPhase({ kind: "failed", message, unrecorded: error instanceof TimeoutError && flooded })
    }
  }

  const open = input.status === "pending" && !runEnded
  return (
    <section className="dwf-input-form" data-input-key={input.key} data-status={input.status}>
      {input.prompt !== null ? <p className="dwf-prompt">{visibleText(input.prompt)}</p> : null}
      {input.expires_at ? (
        <p className="dwf-deadline">
          {"Answer before "}
          <time dateTime={input.expires_at}>{new Date(input.expires_at).toLocaleString()}</time>
        </p>
      ) : null}
      {open && flooded ? (
        <p className="dwf-note" role="note">
          {`This run has recorded ${props.recordedRejections ?? 0} refused answers, the most its engine keeps: an answer it refuses now leaves no record.`}
        </p>
      ) : null}
      {open ? (
        <SchemaForm
          schema={input.schema}
          onSubmit={(value) => void send(value)}
          noValidate={noValidate}
          disabled={phase.kind === "sending"}
          submitLabel={phase.kind === "sending" ? "Sending..." : submitLabel}
          idPrefix={formId}
        />
      ) : (
        <p className="dwf-closed">
          {input.status === "received"
            ? visibleText(`Answered by ${input.submission_id ?? "?"}: ${JSON.stringify(input.value)}`)
            : input.status === "expired"
              ? `Expired at ${input.expired_at ?? "?"}`
              : "The run has ended: this request can no longer be answered."}
        </p>
      )}
      {phase.kind === "done" ? (
        <p className={`dwf-outcome dwf-outcome-${phase.outcome.outcome}`} role="status" data-outcome={phase.outcome.outcome}>
          {visibleText(describeOutcome(phase.outcome, input))}
        </p>
      ) : null}
      {phase.kind === "failed" ? (
        <p className="dwf-outcome dwf-outcome-failed" role="alert" data-outcome={phase.unrecorded ? "unrecorded" : "failed"}>
          {visibleText(phase.message)}
        </p>
      ) : null}
    </section>
  )
}
