// @durable-workflows/client: Durable Workflows protocol 1.0 for browsers, Node, Deno
// and Bun. Reading is StreamDB (@durable-streams/state) on TanStack DB; writing is a
// plain fetch POST of one message.

/** The protocol version this package implements; the package's version is 1.0.x. */
export const PROTOCOL_VERSION = "1.0"

/** The default number of `input-rejected` messages an engine records in one run's
 * history (SEC-034). Once a history holds that many, a refused answer leaves no record,
 * so a submitter waiting for its outcome waits in vain; after 1,000 submissions to a run
 * every further one is refused (INPUT-033). Engines may be configured with another limit. */
export const DEFAULT_REJECTION_LIMIT = 1000

export type {
  InputRow,
  InputSchema,
  InputStatus,
  PatchRow,
  PendingInputSummary,
  RecordRow,
  RejectionReason,
  RowTypes,
  RunRow,
  RunStatus,
  RunStatusRow,
  SleepRow,
  SleepStatus,
  StepRow,
  StepStatus,
  SubmissionRow,
  WaitingFor,
  WorkflowError,
} from "./generated/rows.js"
export {
  historyState,
  isTerminal,
  rowSchema,
  statusState,
  TERMINAL_STATUSES,
  type HistoryState,
  type RunDB,
  type RunListDB,
  type StatusState,
} from "./state.js"
export {
  AccessError,
  HttpError,
  namespaceUrl,
  streamUrl,
  TimeoutError,
  type Connection,
  type TokenSource,
} from "./http.js"
export { openRun, openRunList, runContext, waitForStream, type OpenOptions, type RunContext } from "./open.js"
export {
  cancelRun,
  newId,
  startRun,
  submitInput,
  type CancelArgs,
  type CommandOptions,
  type Outcome,
  type RunTarget,
  type StartArgs,
  type StartOutcome,
  type SubmitArgs,
} from "./commands.js"
export { formSchema, type FormSchemaReport } from "./form-schema.js"
export { visibleText } from "./text.js"
