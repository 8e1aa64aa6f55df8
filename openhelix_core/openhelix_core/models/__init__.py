"""Model definitions: System 2 (LLaVA planner) and System 1 (3D Diffuser Actor)."""
