from cma_tool.cli import program

raise SystemExit(program())
