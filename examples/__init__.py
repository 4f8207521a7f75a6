"""Example workflows served by ``dwf serve`` (``make run``).

- :mod:`examples.expense_approval`: approval with a deadline and escalation;
- :mod:`examples.agent_confirm`: an AI-agent step that pauses for a human to confirm;
- :mod:`examples.onboarding`: a multi-step onboarding wizard.
"""
