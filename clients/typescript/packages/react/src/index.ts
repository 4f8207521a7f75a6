// @durable-workflows/react: hooks on TanStack DB live queries, and forms on
// react-jsonschema-form, for Durable Workflows protocol 1.0.

export {
  DurableWorkflowsProvider,
  StreamRegistry,
  useRunDB,
  useRunListDB,
  useWorkflows,
  type DurableWorkflowsProviderProps,
  type Opened,
} from "./provider.js"
export {
  useCancelRun,
  usePendingInputs,
  useRun,
  useRuns,
  useStartRun,
  useSubmitInput,
  type PendingInputsView,
  type RunsFilter,
  type RunsView,
  type RunView,
} from "./hooks.js"
export { InputForm, SchemaForm, validator, type InputFormProps, type SchemaFormProps } from "./forms.js"
