"""Input connectors: one module per input format. For now plain text materials (`connectors.text`)."""
