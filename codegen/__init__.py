"""Host-side code generation: quantize, analyze, plan and emit."""
