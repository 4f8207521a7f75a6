// Wrong instances: each line marked "// wrong" breaks one rule of its event.
// tests/test_codegen.py compiles this file beside the generated types and expects
// `tsc --noEmit --strict` to report an error on exactly the marked lines.

import type { StepStarted } from "./generated/step-started";
import type { RunCompleted } from "./generated/run-completed";
import type { InputReceived } from "./generated/input-received";
import type { RunRequested } from "./generated/run-requested";
import type { RunSuspended } from "./generated/run-suspended";
import type { InboxMessage } from "./generated/inbox-message";

const step = { name: "pay", seq: 4, max_attempts: 3, timeout_ms: null, started_at: "2026-11-24T11:35:10.020Z", result: null, error: null, retry_at: null, finished_at: null } as const;
const run = { run_id: "r1", workflow: "w", protocol: "1.0", input: null, started_at: "2026-11-24T11:35:10.020Z" } as const;
const input = { name: "manager", seq: 2, prompt: null, schema: true, requested_at: "2026-11-24T09:12:04.200Z", expires_at: null, value: 1, submission_id: "s1", received_at: "2026-11-24T11:30:09.870Z", expired_at: null } as const;

export const a: StepStarted = { type: "step", key: "pay", value: { ...step, status: "running", attempt: 2 }, headers: { operation: "insert" } }; // wrong
export const b: StepStarted = { type: "step", key: "pay", value: { ...step, status: "running", attempt: 1 }, headers: { operation: "update" } }; // wrong
export const c: RunCompleted = { type: "run", key: "r1", value: { ...run, status: "completed", waiting_for: null, output: 1, error: null }, headers: { operation: "update" } }; // wrong
export const d: InputReceived = { type: "input", key: "manager", value: { ...input, status: "received" }, headers: { operation: "update" } }; // wrong
export const e: RunRequested = { type: "start", key: "r1", value: { run_id: "r1", workflow: "w", input: null }, headers: { operation: "insert" }, priority: 5 }; // wrong
export const f: RunSuspended = { type: "run", key: "r1", value: { ...run, status: "paused", waiting_for: { inputs: [], until: null }, output: null, error: null, finished_at: null }, headers: { operation: "update" } }; // wrong
export const g: InboxMessage = a; // wrong
export const h: StepStarted = { type: "step", key: "pay", value: { ...step, status: "running", attempt: 1 }, headers: { operation: "insert", txid: "s1" } }; // wrong
export const ok: InputReceived = { type: "input", key: "manager", value: { ...input, status: "received" }, headers: { operation: "update", txid: "s1" } };
