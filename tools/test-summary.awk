# Filters `mvn test` output (ANSI codes already stripped) down to what a person reads on the console:
# each test execution as it starts, its totals, every [ERROR] line (failed tests, compile errors,
# why the build failed), and the build's outcome and time. Everything else (Maven's INFO lines,
# tests' own output and intentional warnings, the JDK's notices) stays in the log file alone.
# Usage: mvn -B test 2>&1 | tee LOG | awk -f tools/test-summary.awk
/--- .*surefire.*:test \(/ {  # "--- maven-surefire-plugin:V:test (EXECUTION) @ MODULE ---"
  rest = $0; sub(/.*:test \(/, "", rest)
  execution = rest; sub(/\).*/, "", execution)
  module = rest; sub(/.*\) @ /, "", module); sub(/ .*/, "", module)
  name = module " " execution
  print "seqk test: " name " ..."; fflush(); next
}
/^\[INFO\] Results:/ { in_results = 1; next }
in_results && /^\[(INFO|WARNING|ERROR)\] Tests run: [0-9]+, Failures: [0-9]+, Errors: [0-9]+, Skipped: [0-9]+ *$/ {
  line = $0; sub(/^\[[A-Z]+\] /, "", line)
  print "seqk test: " name ": " line; fflush(); in_results = 0; next
}
/^\[ERROR\]/ { print; fflush(); next }
/BUILD (SUCCESS|FAILURE)|Total time:/ { line = $0; sub(/^\[[A-Z]+\] /, "", line); print "seqk test: " line; fflush() }
