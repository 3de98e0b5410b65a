"""mpmctl's offline tools: log analysis, the capacity planner, the tuning advisor."""
