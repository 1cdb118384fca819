// Crash injection for the crash-safety tests: OBD_TEST_CRASH_AT=<name> makes the process die with
// SIGKILL when it reaches the point of that name (a kill -9 between two steps). Unset in production.
export function crashPoint(name: string): void {
  if (process.env.OBD_TEST_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
}
