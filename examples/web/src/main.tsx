import { StrictMode } from "react"
import { createRoot } from "react-dom/client"
import { DurableWorkflowsProvider } from "@durable-workflows/react"
import { App } from "./App"
import { currentToken, loadSession } from "./session"
import "./styles.css"

const root = createRoot(document.getElementById("root") as HTMLElement)

loadSession().then(
  (session) => {
    root.render(
      <StrictMode>
        <DurableWorkflowsProvider namespace={session.namespace} token={currentToken}>
          <App session={session} />
        </DurableWorkflowsProvider>
      </StrictMode>,
    )
  },
  (error: unknown) => {
    root.render(
      <p className="error" role="alert">
        {`Could not load the session (/ui/session.json): ${String(error)}`}
      </p>,
    )
  },
)
