#!/bin/sh
# cmatool-lava.sh PLAN [CAPTURE]: cma-tool's agent in a LAVA test shell (configs/lava/cma-tool-agent.yaml).
#
# PLAN: the agent's plan; CAPTURE: the capture program, when the board has
# none on PATH. Each may be a path on the board or an http(s) URL. Runs from
# a checkout of cma-tool (LAVA clones the repository of the definition and
# runs its steps at the top of it): the agent is firmware/cmatool-run there.
#
# The agent's output goes to the console as it comes (that is what the job
# log keeps and `cma-tool check` reads); then one lava-test-case per section,
# the number of cma tracepoints, and the agent's own result. A missing
# program or plan is a failed test case, never a stopped test shell.
set -u
plan=${1:-/cmatool/plan}
capture=${2:-}
top=$(cd "$(dirname "$0")/../.." && pwd)
work=${TMPDIR:-/tmp}/cmatool-lava
mkdir -p "$work/bin"

fetch() { # fetch SOURCE DEST
	case "$1" in
	http://* | https://*) wget -q -O "$2" "$1" 2>/dev/null || curl -fsSL -o "$2" "$1" ;;
	*) cp "$1" "$2" ;;
	esac
}

case "$plan" in
http://* | https://*)
	fetch "$plan" "$work/plan" || {
		echo "cmatool-lava: cannot fetch the plan $plan"
		lava-test-case cmatool-agent --result fail
		exit 0
	}
	plan=$work/plan
	;;
esac
if [ -n "$capture" ]; then
	fetch "$capture" "$work/bin/capture" && chmod 755 "$work/bin/capture" || {
		echo "cmatool-lava: cannot fetch the capture program $capture"
		lava-test-case cmatool-agent --result fail
		exit 0
	}
fi
PATH=$work/bin:$PATH
export PATH
if ! command -v capture >/dev/null 2>&1; then
	echo "cmatool-lava: no capture program on the board: give CAPTURE (cma-tool's static ARM capture, a path or URL)"
	lava-test-case cmatool-agent --result fail
	exit 0
fi

out=$work/agent.log
{
	sh "$top/firmware/cmatool-run" "$plan"
	echo $? >"$work/rc"
} 2>&1 | tee "$out"

mark="==== CMA-TOOL"
sed -n "s/^$mark END \([^ ]*\) rc=\(-\{0,1\}[0-9]\{1,\}\)\( .*\)\{0,1\} ====\$/\1 \2/p" "$out" | while read -r name code; do
	if [ "$code" = 0 ]; then result=pass; else result=fail; fi
	lava-test-case "cmatool-$name" --result "$result"
done
events=$(sed -n "/^$mark BEGIN trace ====/,/^$mark END trace /p" "$out" |
	grep -cE ' cma_(alloc_start|alloc_finish|alloc_busy_retry|release): ')
if [ "$events" -gt 0 ]; then result=pass; else result=fail; fi
lava-test-case cmatool-trace-events --result "$result" --measurement "$events" --units events
rc=$(cat "$work/rc" 2>/dev/null)
if [ "${rc:-x}" = 0 ]; then result=pass; else result=fail; fi
lava-test-case cmatool-agent --result "$result" --measurement "${rc:--1}" --units exit-code
exit 0
