#!/usr/bin/env bash
# expect.sh RC REGEX -- COMMAND...: runs COMMAND, passes if it exits with RC (a crash by a signal
# is never RC) and its combined output matches the extended regular expression REGEX.
set -u
want=$1 regex=$2
shift 2
[ "$1" = "--" ] && shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out" | tail -n 5
if [ "$rc" -ne "$want" ]; then echo "expect.sh: exit code $rc, expected $want"; exit 1; fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then echo "expect.sh: no line matches /$regex/"; exit 1; fi
echo "expect.sh: exit code $rc and /$regex/ as expected"
