// Runs a program (or a compiled node script) in a child process and collects its output — for tests
// where a crash of the code under test (signal, abort) must show up as a failure instead of killing
// the test runner.
import { spawn } from 'node:child_process';

export interface ChildResult {
  code: number | null;
  signal: string | null;
  out: string;
  err: string;
}

/** Runs `node script ...args`; killed with SIGKILL after timeoutMs. Never rejects. */
export function runNodeChild(script: string, args: string[], timeoutMs: number): Promise<ChildResult> {
  return runChild(process.execPath, [script, ...args], timeoutMs);
}

/** Runs `cmd ...args`; killed with SIGKILL after timeoutMs. Never rejects. */
export function runChild(cmd: string, args: string[], timeoutMs: number): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}
