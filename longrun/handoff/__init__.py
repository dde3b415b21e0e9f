"""How a run moves on: a new Lambda invocation (and, later, a Fargate task)."""
