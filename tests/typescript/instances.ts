// One instance of each of the 23 events, typed with the TypeScript types that
// `python tools/codegen.py typescript generated` writes from schemas/v1.
// tests/test_codegen.py generates the types into ./generated beside a copy of this
// file and compiles it with `tsc --noEmit --strict`.

import type { CancelRequested } from "./generated/cancel-requested";
import type { HistoryMessage } from "./generated/history-message";
import type { InboxMessage } from "./generated/inbox-message";
import type { IndexMessage } from "./generated/index-message";
import type { InputExpired } from "./generated/input-expired";
import type { InputReceived } from "./generated/input-received";
import type { InputRejected } from "./generated/input-rejected";
import type { InputRequested } from "./generated/input-requested";
import type { InputSubmitted } from "./generated/input-submitted";
import type { PatchRecorded } from "./generated/patch-recorded";
import type { RunCancelled } from "./generated/run-cancelled";
import type { RunCompleted } from "./generated/run-completed";
import type { RunFailed } from "./generated/run-failed";
import type { RunRequested } from "./generated/run-requested";
import type { RunStatus } from "./generated/run-status";
import type { StatusMessage } from "./generated/status-message";
import type { RunResumed } from "./generated/run-resumed";
import type { RunStarted } from "./generated/run-started";
import type { RunSuspended } from "./generated/run-suspended";
import type { SleepCompleted } from "./generated/sleep-completed";
import type { SleepScheduled } from "./generated/sleep-scheduled";
import type { StepAttemptFailed } from "./generated/step-attempt-failed";
import type { StepAttemptStarted } from "./generated/step-attempt-started";
import type { StepCompleted } from "./generated/step-completed";
import type { StepFailed } from "./generated/step-failed";
import type { StepStarted } from "./generated/step-started";
import type { ValueRecorded } from "./generated/value-recorded";

const runId = "exp-2026-0042";
const started = "2026-11-24T09:12:03.118Z";
const report = { employee: "ana.lima@example.com", items: [{ amount: 74.5 }, { amount: 1180 }] };
const run = {
  run_id: runId,
  workflow: "expense-approval",
  protocol: "1.0",
  input: report,
  started_at: started,
} as const;

// --- run index and inbox (client-written)

export const runRequested: RunRequested = {
  type: "start",
  key: runId,
  value: { run_id: runId, workflow: "expense-approval", input: report },
  headers: { operation: "insert" },
};

export const inputSubmitted: InputSubmitted = {
  type: "submission",
  key: "sub-mgr-5b2e",
  value: { submission_id: "sub-mgr-5b2e", request: "manager", value: { approved: true } },
  headers: { operation: "insert", timestamp: "2026-11-24T11:30:09.000Z" },
};

export const cancelRequested: CancelRequested = {
  type: "cancel",
  key: "cancel-1",
  value: { cancel_id: "cancel-1", reason: null },
  headers: { operation: "insert" },
};

// --- history (engine-written)

export const runStarted: RunStarted = {
  type: "run",
  key: runId,
  value: { ...run, status: "running", waiting_for: null, output: null, error: null, finished_at: null },
  headers: { operation: "insert", txid: runId },
};

export const runSuspendedWaiting: RunSuspended = {
  type: "run",
  key: runId,
  value: {
    ...run,
    status: "waiting",
    waiting_for: { inputs: ["manager"], until: "2026-11-27T09:12:04.200Z" },
    output: null,
    error: null,
    finished_at: null,
  },
  headers: { operation: "update" },
};

export const runSuspendedSleeping: RunSuspended = {
  type: "run",
  key: runId,
  value: {
    ...run,
    status: "sleeping",
    waiting_for: { inputs: [], until: "2026-11-24T11:35:10.000Z" },
    output: null,
    error: null,
    finished_at: null,
  },
  headers: { operation: "update" },
};

export const runResumed: RunResumed = {
  type: "run",
  key: runId,
  value: { ...run, status: "running", waiting_for: null, output: null, error: null, finished_at: null },
  headers: { operation: "update" },
};

export const runCompleted: RunCompleted = {
  type: "run",
  key: runId,
  value: {
    ...run,
    status: "completed",
    waiting_for: null,
    output: { paid: true, total: 1254.5 },
    error: null,
    finished_at: "2026-11-24T11:35:12.640Z",
  },
  headers: { operation: "update" },
};

export const runFailed: RunFailed = {
  type: "run",
  key: runId,
  value: {
    ...run,
    status: "failed",
    waiting_for: null,
    output: null,
    error: {
      type: "NonDeterminism",
      message: "replay expected step 'sum' at position 1, the workflow asked for step 'total'",
      details: { seq: 1, recorded: { kind: "step", name: "sum" }, requested: { kind: "step", name: "total" } },
    },
    finished_at: "2026-11-25T08:00:00.311Z",
  },
  headers: { operation: "update" },
};

export const runCancelled: RunCancelled = {
  type: "run",
  key: runId,
  value: {
    ...run,
    status: "cancelled",
    waiting_for: null,
    output: null,
    error: { type: "Cancelled", message: "employee withdrew the report", details: { cancel_id: "cancel-1" } },
    finished_at: "2026-11-24T10:02:00.000Z",
  },
  headers: { operation: "update", txid: "cancel-1" },
};

const pay = {
  name: "pay",
  seq: 4,
  max_attempts: 3,
  timeout_ms: 30000,
} as const;

export const stepStarted: StepStarted = {
  type: "step",
  key: "pay",
  value: {
    ...pay,
    status: "running",
    attempt: 1,
    started_at: "2026-11-24T11:35:10.020Z",
    result: null,
    error: null,
    retry_at: null,
    finished_at: null,
  },
  headers: { operation: "insert" },
};

export const stepAttemptFailed: StepAttemptFailed = {
  type: "step",
  key: "pay",
  value: {
    ...pay,
    status: "retrying",
    attempt: 1,
    started_at: "2026-11-24T11:35:10.020Z",
    result: null,
    error: { type: "PaymentGatewayError", message: "gateway timed out (HTTP 504)", details: { status: 504 } },
    retry_at: "2026-11-24T11:35:12.100Z",
    finished_at: null,
  },
  headers: { operation: "update" },
};

export const stepAttemptStarted: StepAttemptStarted = {
  type: "step",
  key: "pay",
  value: {
    ...pay,
    status: "running",
    attempt: 2,
    started_at: "2026-11-24T11:35:12.100Z",
    result: null,
    error: null,
    retry_at: null,
    finished_at: null,
  },
  headers: { operation: "update" },
};

export const stepCompleted: StepCompleted = {
  type: "step",
  key: "pay",
  value: {
    ...pay,
    status: "completed",
    attempt: 2,
    started_at: "2026-11-24T11:35:12.100Z",
    result: { payment_id: "pay_3QhX9" },
    error: null,
    retry_at: null,
    finished_at: "2026-11-24T11:35:12.630Z",
  },
  headers: { operation: "update" },
};

export const stepFailed: StepFailed = {
  type: "step",
  key: "fetch-page#2",
  value: {
    name: "fetch-page",
    seq: 3,
    status: "failed",
    attempt: 5,
    max_attempts: 5,
    timeout_ms: null,
    started_at: "2026-11-24T02:03:50.000Z",
    result: null,
    error: { type: "StepTimeout", message: "attempt 5 exceeded 10000 ms", details: null },
    retry_at: null,
    finished_at: "2026-11-24T02:04:01.000Z",
  },
  headers: { operation: "update" },
};

export const sleepScheduled: SleepScheduled = {
  type: "sleep",
  key: "cool-off",
  value: {
    name: "cool-off",
    seq: 3,
    status: "scheduled",
    duration_ms: 300000,
    scheduled_at: "2026-11-24T11:30:10.000Z",
    wake_at: "2026-11-24T11:35:10.000Z",
    fired_at: null,
  },
  headers: { operation: "insert" },
};

export const sleepCompleted: SleepCompleted = {
  type: "sleep",
  key: "cool-off",
  value: {
    name: "cool-off",
    seq: 3,
    status: "completed",
    duration_ms: null,
    scheduled_at: "2026-11-24T11:30:10.000Z",
    wake_at: "2026-11-24T11:35:10.000Z",
    fired_at: "2026-11-24T11:35:10.004Z",
  },
  headers: { operation: "update" },
};

const manager = {
  name: "manager",
  seq: 2,
  prompt: "Approve EUR 1254.50 for Ana Lima?",
  schema: { type: "object", required: ["approved"], properties: { approved: { type: "boolean" } } },
  requested_at: "2026-11-24T09:12:04.200Z",
  expires_at: "2026-11-27T09:12:04.200Z",
} as const;

export const inputRequested: InputRequested = {
  type: "input",
  key: "manager",
  value: { ...manager, status: "pending", value: null, submission_id: null, received_at: null, expired_at: null },
  headers: { operation: "insert" },
};

export const inputReceived: InputReceived = {
  type: "input",
  key: "manager",
  value: {
    ...manager,
    status: "received",
    value: { approved: true },
    submission_id: "sub-mgr-5b2e",
    received_at: "2026-11-24T11:30:09.870Z",
    expired_at: null,
  },
  headers: { operation: "update", txid: "sub-mgr-5b2e" },
};

export const inputExpired: InputExpired = {
  type: "input",
  key: "manager",
  value: {
    ...manager,
    schema: true,
    status: "expired",
    value: null,
    submission_id: null,
    received_at: null,
    expired_at: "2026-11-27T09:12:04.950Z",
  },
  headers: { operation: "update" },
};

export const inputRejected: InputRejected = {
  type: "submission",
  key: "sub-mgr-77a0",
  value: {
    submission_id: "sub-mgr-77a0",
    request: "manager",
    status: "rejected",
    reason: "schema-invalid",
    message: "/approved: 'yes' is not of type 'boolean'",
    rejected_at: "2026-11-24T10:01:00.000Z",
  },
  headers: { operation: "insert", txid: "sub-mgr-77a0" },
};

export const valueRecorded: ValueRecorded = {
  type: "record",
  key: "idempotency-key",
  value: {
    name: "idempotency-key",
    seq: 5,
    kind: "uuid",
    value: "3f1c8c7e-2b9a-4d5e-9f00-6a7b8c9d0e1f",
    recorded_at: "2026-11-24T11:35:10.010Z",
  },
  headers: { operation: "insert" },
};

export const patchRecorded: PatchRecorded = {
  type: "patch",
  key: "use-new-tax-api",
  value: { name: "use-new-tax-api", seq: 2, recorded_at: "2026-11-24T09:12:03.130Z" },
  headers: { operation: "insert" },
};

// --- every event belongs to the union of its stream

export const history: HistoryMessage[] = [
  runStarted,
  runSuspendedWaiting,
  runSuspendedSleeping,
  runResumed,
  runCompleted,
  runFailed,
  runCancelled,
  stepStarted,
  stepAttemptStarted,
  stepAttemptFailed,
  stepCompleted,
  stepFailed,
  sleepScheduled,
  sleepCompleted,
  inputRequested,
  inputReceived,
  inputExpired,
  inputRejected,
  valueRecorded,
  patchRecorded,
];
export const inbox: InboxMessage[] = [inputSubmitted, cancelRequested];
export const index: IndexMessage[] = [runRequested];

// --- run-status stream (engine-written): one row per run

export const runStatus: RunStatus = {
  type: "run-status",
  key: runId,
  value: {
    run_id: runId,
    workflow: "expense-approval",
    status: "waiting",
    waiting_for: { inputs: ["manager"], until: null },
    inputs: [{ key: "manager", name: "manager", prompt: "Approve?", expires_at: null }],
    error: null,
    started_at: started,
    updated_at: started,
    finished_at: null,
    history_length: 5,
  },
  headers: { operation: "update" },
};
export const status: StatusMessage[] = [runStatus];

// A client narrows a history message by its discriminator.
export function describe(message: HistoryMessage): string {
  if (message.type === "step" && message.value.status === "retrying") {
    return `${message.key} retries at ${message.value.retry_at}`;
  }
  if (message.type === "input" && message.value.status === "pending") {
    return `${message.key} waits for an answer until ${message.value.expires_at ?? "forever"}`;
  }
  return `${message.type} ${message.key}`;
}
